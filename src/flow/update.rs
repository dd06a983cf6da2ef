//! The gateway's admin route: rolling updates of a running Flow's Pods
//! (`jina-wasm flow update`; docs/operations.md, "Rolling updates").
//!
//! `POST /admin/update` with `{"pod": NAME, "uses": PATH, "uses_with": {...},
//! "drain_timeout": "10s"}` (`uses` and/or `uses_with`) replaces the Pod's
//! Peas one at a time ([`crate::pod::update`]) and answers once it is done:
//! 200 with what serves now, or the reason it did not happen.
//!
//! Who may call it: with a token (`flow --admin-token`, or
//! `JINA_WASM_ADMIN_TOKEN`), any client that sends `Authorization: Bearer
//! TOKEN`; without one, only clients on this machine (a loopback peer
//! address). One update at a time per Flow; another one meanwhile is a 409.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;
use serde_json::{Value, json};

use super::run::Running;
use crate::pod::update::{Change, Component, UpdateError, Updater};

/// The admin route's path.
pub const UPDATE_ROUTE: &str = "/admin/update";

/// How long a replica (or a held shard) may take to finish what it holds
/// when `drain_timeout` is not given.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// The largest request body the admin route reads.
const MAX_BODY: usize = 64 * 1024;

/// A running Flow's Pods as the admin route sees them.
pub struct Admin {
    pods: Vec<(String, Updater)>,
    /// `Authorization: Bearer` value required; `None`: loopback clients only.
    token: Option<String>,
    /// The Pod being updated, if any.
    busy: Mutex<Option<String>>,
    /// Why this gateway updates nothing (it does not run its Pods).
    elsewhere: Option<String>,
}

/// `POST /admin/update`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// The Pod's name.
    pub pod: String,
    /// The new component (a path on the Flow's machine).
    #[serde(default)]
    pub uses: Option<PathBuf>,
    /// The new `with:` (replaces the whole map).
    #[serde(default)]
    pub uses_with: Option<Value>,
    /// How long each replica may take to finish what it holds (a duration:
    /// `10s`, `500ms`).
    #[serde(default)]
    pub drain_timeout: Option<String>,
}

impl Admin {
    /// The admin of `running`'s Pods; `token` (if any) guards the route.
    pub fn new(running: &Running, token: Option<String>) -> Arc<Admin> {
        Arc::new(Admin {
            pods: running
                .pods
                .iter()
                .map(|(name, pod)| (name.clone(), pod.updater.clone()))
                .collect(),
            token: token.filter(|t| !t.is_empty()),
            busy: Mutex::new(None),
            elsewhere: None,
        })
    }

    /// The admin of a gateway whose Pods run elsewhere (`jina-wasm
    /// gateway`): every update is refused, saying so.
    pub fn elsewhere() -> Arc<Admin> {
        Arc::new(Admin {
            pods: Vec::new(),
            token: None,
            busy: Mutex::new(None),
            elsewhere: Some(
                "this gateway (`jina-wasm gateway`) routes to Pods that run in other processes: \
                 rolling updates are served by the gateway of `jina-wasm flow`, which runs its Pods"
                    .into(),
            ),
        })
    }

    /// The route, to merge into the HTTP gateway's router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(UPDATE_ROUTE, any(update))
            .with_state(self.clone())
    }

    /// What each Pod serves now.
    pub fn components(&self) -> Vec<(String, Component)> {
        self.pods
            .iter()
            .map(|(name, updater)| (name.clone(), updater.component()))
            .collect()
    }

    /// Puts each Pod's current component into a Flow description (`GET
    /// /status`, the ready line: `pods[].component`).
    pub fn refresh(&self, info: &mut Value) {
        let Some(pods) = info.get_mut("pods").and_then(Value::as_array_mut) else {
            return;
        };
        for (name, component) in self.components() {
            if let Some(pod) = pods.iter_mut().find(|p| p["pod"] == name.as_str()) {
                pod["component"] = json!(component);
            }
        }
    }

    /// Who may call: `None` when allowed, else the refusal.
    fn refuse(&self, request: &Request) -> Option<Response> {
        match &self.token {
            Some(token) => {
                let given = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                use subtle::ConstantTimeEq as _;
                if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                    None
                } else {
                    Some(refusal(
                        StatusCode::UNAUTHORIZED,
                        "the admin route needs `Authorization: Bearer <token>` with the Flow's \
                         --admin-token (`flow update --token`)",
                    ))
                }
            }
            None => {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                if peer.is_some_and(|ip| ip.is_loopback()) {
                    None
                } else {
                    Some(refusal(
                        StatusCode::FORBIDDEN,
                        "the admin route answers only clients on the Flow's machine (loopback) unless the \
                         Flow has an --admin-token",
                    ))
                }
            }
        }
    }
}

fn refusal(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({"error": message}))).into_response()
}

/// Marks the Flow busy until dropped.
struct Busy(Arc<Admin>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.busy.lock().expect("busy") = None;
    }
}

async fn update(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    if request.method() != Method::POST {
        let mut response = refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} {UPDATE_ROUTE} is not served: use POST {UPDATE_ROUTE}",
                request.method()
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    if let Some(refused) = admin.refuse(&request) {
        return refused;
    }
    if let Some(why) = &admin.elsewhere {
        return refusal(StatusCode::NOT_IMPLEMENTED, why);
    }
    let bytes = match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read (at most {MAX_BODY} bytes): {e}"),
            );
        }
    };
    let body: UpdateBody = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body is not {{\"pod\": NAME, \"uses\": PATH, \"uses_with\": {{...}}, \"drain_timeout\": DURATION}}: {e}"
                ),
            );
        }
    };
    // One update at a time per Flow (checked first: a request for an
    // unknown Pod meanwhile is also told to wait).
    let busy = {
        let mut busy = admin.busy.lock().expect("busy");
        if let Some(other) = busy.as_ref() {
            return refusal(
                StatusCode::CONFLICT,
                &format!(
                    "an update of pod `{other}` is in progress: try again once it has finished"
                ),
            );
        }
        *busy = Some(body.pod.clone());
        Busy(admin.clone())
    };
    let (change, drain) = match check(&body) {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let Some(updater) = admin
        .pods
        .iter()
        .find(|(name, _)| *name == body.pod)
        .map(|(_, u)| u.clone())
    else {
        let names: Vec<&str> = admin.pods.iter().map(|(n, _)| n.as_str()).collect();
        return refusal(
            StatusCode::NOT_FOUND,
            &format!(
                "no pod `{}` in this Flow (its Pods: {})",
                body.pod,
                names.join(", ")
            ),
        );
    };
    // On its own task: a client that goes away does not cut an update short,
    // and the Flow stays busy until it has finished.
    let task = tokio::spawn(async move {
        let _busy = busy;
        updater.update(change, drain).await
    });
    match task.await {
        Ok(Ok(report)) => (StatusCode::OK, axum::Json(json!(report))).into_response(),
        Ok(Err(e)) => {
            let code = match &e {
                UpdateError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
                UpdateError::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
                UpdateError::Degraded(_) => StatusCode::INTERNAL_SERVER_ERROR,
                UpdateError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            };
            refusal(code, &e.to_string())
        }
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the update's task failed: {e}"),
        ),
    }
}

/// The change a body asks for, checked before anything starts.
#[allow(clippy::result_large_err)]
fn check(body: &UpdateBody) -> Result<(Change, Duration), Response> {
    let bad = |message: String| refusal(StatusCode::BAD_REQUEST, &message);
    if body.uses.is_none() && body.uses_with.is_none() {
        return Err(bad(format!(
            "nothing to update for pod `{}`: give `uses` (a component) and/or `uses_with` (its settings)",
            body.pod
        )));
    }
    if let Some(with) = &body.uses_with
        && !with.is_object()
    {
        return Err(bad(format!(
            "`uses_with` must be an object (the Pod's `with:`), not {with}"
        )));
    }
    if let Some(uses) = &body.uses {
        super::resolve::component_file(uses).map_err(|e| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("`uses`: {e}; nothing was changed"),
            )
        })?;
    }
    let drain = match &body.drain_timeout {
        None => DEFAULT_DRAIN,
        Some(text) => {
            crate::units::parse_duration(text).map_err(|e| bad(format!("`drain_timeout`: {e}")))?
        }
    };
    Ok((
        Change {
            // Absolute, as STATUS shows it (relative: to the Flow's directory of start).
            uses: body
                .uses
                .as_ref()
                .map(|u| std::fs::canonicalize(u).unwrap_or_else(|_| u.clone())),
            with: body.uses_with.clone(),
        },
        drain,
    ))
}
