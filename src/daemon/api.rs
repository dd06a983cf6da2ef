//! The daemon's HTTP routes (docs/daemon.md has each with its answers).
//!
//! Every route needs `Authorization: Bearer <token>`; the token names the
//! tenant, and every lookup goes through that tenant's own objects and
//! directory, so another tenant's ids answer 404 exactly as unknown ones do.
//! Errors are `{"error": "..."}` with a 4xx naming the thing and the reason.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::objects::{CreateRequest, Files, Kind, Live, Object, State as LiveState, StateRequest};
use super::tenants::Tenant;
use super::workspace::{Receiving, safe_relative};
use super::{Daemon, random_id};
use crate::client_daemon::is_safe_id;
use crate::units::format_size;

type Shared = State<Arc<Daemon>>;

/// A refusal: its status and the message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, message.into())
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type Answer<T = Json<Value>> = Result<T, ApiError>;

/// Every route of the API.
pub fn router(daemon: Arc<Daemon>) -> axum::Router {
    let mut router = axum::Router::new()
        .route("/tenant", get(tenant))
        .route("/metrics", get(metrics))
        .route("/workspaces", get(list_workspaces))
        .route(
            "/workspaces/{ws}",
            get(show_workspace).delete(delete_workspace),
        )
        // The upload counts its own bytes against --max-upload and the disk quota.
        .route(
            "/workspaces/{ws}/files",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/workspaces/{ws}/files/{*name}", get(download));
    for kind in [Kind::Pod, Kind::Pea, Kind::Flow] {
        let base = kind.route();
        router = router
            .route(
                base,
                get(move |d: Shared, h: HeaderMap| list(kind, d, h))
                    .post(move |d: Shared, h: HeaderMap, b: Bytes| create(kind, d, h, b)),
            )
            .route(
                &format!("{base}/{{id}}"),
                get(move |d: Shared, h: HeaderMap, p: Path<String>| show(kind, d, h, p))
                    .delete(move |d: Shared, h: HeaderMap, p: Path<String>| remove(kind, d, h, p)),
            )
            .route(
                &format!("{base}/{{id}}/lease"),
                put(move |d: Shared, h: HeaderMap, p: Path<String>| renew(kind, d, h, p)),
            )
            .route(
                &format!("{base}/{{id}}/logs"),
                get(move |d: Shared, h: HeaderMap, p: Path<String>| logs(kind, d, h, p)),
            )
            .route(
                &format!("{base}/{{id}}/logs/stream"),
                get(move |d: Shared, h: HeaderMap, p: Path<String>| stream(kind, d, h, p)),
            );
    }
    router
        .fallback(|| async { ApiError::not_found("no such route (docs/daemon.md lists them)") })
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            hold_a_call,
        ))
        .with_state(daemon)
}

/// Counts each call against its tenant's `quota.requests`, from its headers
/// to the last byte of its answer (a log stream holds its call until it
/// ends): one tenant's open calls cannot take the whole connection cap from
/// the others. A call without a known token passes: its handler answers 401.
async fn hold_a_call(
    State(d): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(tenant) = caller(&d, request.headers()).ok() else {
        return next.run(request).await;
    };
    let Some(calls) = d.open_calls.get(&tenant.name) else {
        return next.run(request).await;
    };
    let Ok(permit) = calls.clone().try_acquire_owned() else {
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "tenant `{}` has {} calls open, its quota (quota.requests): wait for one to end \
                 (each log stream holds one until it ends)",
                tenant.name, tenant.quota.requests
            ),
        )
        .into_response();
    };
    next.run(request).await.map(|body| {
        axum::body::Body::new(Held {
            body,
            _permit: permit,
        })
    })
}

/// An answer's body with the permit of its call, given back when the body
/// is dropped (sent, or the client went away).
struct Held {
    body: axum::body::Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl axum::body::HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The tenant whose bearer token the request carries.
fn caller(daemon: &Daemon, headers: &HeaderMap) -> Answer<Tenant> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("no `Authorization: Bearer <token>` header"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
    daemon
        .tenant_of(token.trim())
        .cloned()
        .ok_or_else(|| unauthorized("unknown token"))
}

fn check_workspace_id(ws: &str) -> Answer<()> {
    if is_safe_id(ws) {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "workspace id `{}`: 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`",
            ws.escape_debug()
        )))
    }
}

/// `GET /tenant`: who the token is, its quota and what it uses.
async fn tenant(State(d): Shared, headers: HeaderMap) -> Answer {
    let tenant = caller(&d, &headers)?;
    let (peas, memory, disk, rss) = usage(&d, &tenant);
    Ok(Json(json!({
        "tenant": tenant.name,
        "quota": tenant.quota,
        "usage": {"peas": peas, "memory": memory, "disk": disk, "rss_bytes": rss},
    })))
}

/// `GET /metrics`: the caller's tenant's usage beside its quota, as
/// Prometheus text (docs/operations.md). A token sees its own tenant only.
async fn metrics(State(d): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let tenant = caller(&d, &headers)?;
    let (peas, memory, disk, rss) = usage(&d, &tenant);
    let q = &tenant.quota;
    let text = crate::metrics::render_gauges(
        &[("tenant", tenant.name.as_str())],
        &[
            (
                "jina_daemon_tenant_peas",
                "Peas the tenant's Peas, Pods and Flows hold",
                peas as u64,
            ),
            (
                "jina_daemon_tenant_peas_quota",
                "The tenant's quota of Peas (max_peas)",
                q.max_peas as u64,
            ),
            (
                "jina_daemon_tenant_memory_bytes",
                "Memory the tenant's objects reserve (each Pea's memory_hwm)",
                memory,
            ),
            (
                "jina_daemon_tenant_memory_quota_bytes",
                "The tenant's memory quota (total_memory)",
                q.total_memory,
            ),
            (
                "jina_daemon_tenant_rss_bytes",
                "Resident memory of the tenant's running processes",
                rss,
            ),
            (
                "jina_daemon_tenant_disk_bytes",
                "Bytes of the tenant's uploads, logs and state",
                disk,
            ),
            (
                "jina_daemon_tenant_disk_quota_bytes",
                "The tenant's disk quota",
                q.disk,
            ),
        ],
    );
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// A tenant's Peas, reserved memory, disk bytes and resident memory.
fn usage(d: &Daemon, tenant: &Tenant) -> (usize, u64, u64, u64) {
    let dirs = d.dirs(tenant);
    let ((peas, memory), rss) = d.with_objects(tenant, |objects| {
        let rss: u64 = objects
            .values()
            .filter_map(|o| {
                let live = o.live.lock().expect("live");
                live.pid
                    .filter(|_| live.state == LiveState::Running)
                    .and_then(super::objects::rss_bytes)
            })
            .sum();
        (Daemon::usage(objects), rss)
    });
    (peas, memory, dirs.disk_usage(), rss)
}

/// `GET /workspaces`.
async fn list_workspaces(State(d): Shared, headers: HeaderMap) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = d.dirs(&tenant);
    let list: Vec<Value> = dirs
        .workspace_ids()
        .iter()
        .map(|id| json!({"id": id, "files": dirs.manifest(id).len()}))
        .collect();
    Ok(Json(json!(list)))
}

fn existing_workspace(
    d: &Daemon,
    tenant: &Tenant,
    ws: &str,
) -> Answer<super::workspace::TenantDirs> {
    check_workspace_id(ws)?;
    let dirs = d.dirs(tenant);
    if !dirs.workspace(ws).is_dir() {
        return Err(ApiError::not_found(format!("no workspace `{ws}`")));
    }
    Ok(dirs)
}

/// `GET /workspaces/{ws}`: its files with their digests, its state's size.
async fn show_workspace(State(d): Shared, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    let files = dirs.manifest(&ws);
    let state = ["state", "objects"].iter().fold(0u64, |total, part| {
        total.saturating_add(super::workspace::dir_size(&dirs.workspace(&ws).join(part)))
    });
    Ok(Json(
        json!({"id": ws, "files": files, "state_bytes": state, "in_use_by": d.workspace_in_use(&tenant, &ws)}),
    ))
}

/// `DELETE /workspaces/{ws}`: refused while a live Pea or Pod uses it.
async fn delete_workspace(State(d): Shared, headers: HeaderMap, Path(ws): Path<String>) -> Answer {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    if let Some(id) = d.workspace_in_use(&tenant, &ws) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("workspace `{ws}` is used by `{id}`: delete that first"),
        ));
    }
    let _guard = d.upload_lock(&tenant).lock_owned().await;
    dirs.remove(&ws)
        .map_err(|e| ApiError::internal(format!("cannot delete workspace `{ws}`: {e}")))?;
    Ok(Json(json!({"deleted": ws, "disk": dirs.disk_usage()})))
}

/// `POST /workspaces/{ws}/files`: multipart; each part's file name (else its
/// field name) is the name in the workspace. Creates the workspace.
async fn upload(
    State(d): Shared,
    headers: HeaderMap,
    Path(ws): Path<String>,
    mut multipart: Multipart,
) -> Answer {
    let answer = receive(&d, &headers, &ws, &mut multipart).await;
    if answer.is_err() {
        drain(&mut multipart).await;
    }
    answer
}

/// What a refused upload may still send before its answer, read and thrown
/// away (a "lingering close"): a client that is still writing its body when
/// the refusal comes gets the refusal (401, 413 with its reason) instead of
/// a broken connection. Bounded in bytes and time, so a refused client cannot
/// make the daemon read more than this.
const DRAIN_BYTES: u64 = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(multipart: &mut Multipart) {
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                left = left.saturating_sub(chunk.len() as u64);
                if left == 0 {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

async fn receive(d: &Daemon, headers: &HeaderMap, ws: &str, multipart: &mut Multipart) -> Answer {
    let (d, ws) = (d, ws.to_string());
    let tenant = caller(d, headers)?;
    check_workspace_id(&ws)?;
    let dirs = d.dirs(&tenant);
    // One upload per tenant at a time, so two cannot both fit the quota's last bytes.
    let _guard = d.upload_lock(&tenant).lock_owned().await;
    let used = dirs.disk_usage();
    let (limit, quota) = (d.config.max_upload, tenant.quota.disk);
    let mut received = 0u64;
    let mut files = dirs.file_count();
    let mut stored = Vec::new();
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError(
                e.status(),
                format!("the upload is not valid multipart: {}", e.body_text()),
            )
        })?;
        let Some(mut field) = field else { break };
        // A file name given but not read (not UTF-8, or RFC 5987's
        // `filename*=`) must not fall back to the field's name: the client
        // would be told its file is stored under a name it did not give.
        let disposition = field
            .headers()
            .get(axum::http::header::CONTENT_DISPOSITION)
            .map(|v| v.as_bytes().to_ascii_lowercase());
        if field.file_name().is_none()
            && disposition.is_some_and(|d| d.windows(8).any(|w| w == b"filename"))
        {
            return Err(ApiError::bad(
                "a part's file name is not plain UTF-8 text in `filename=\"...\"` (`filename*=` is not read): name the file in UTF-8",
            ));
        }
        let Some(name) = field.file_name().or(field.name()).map(str::to_string) else {
            return Err(ApiError::bad(
                "a part has neither a file name nor a field name",
            ));
        };
        let relative = safe_relative(&name).map_err(ApiError::bad)?;
        let new = !dirs
            .manifest(&ws)
            .contains_key(relative.to_string_lossy().as_ref());
        if new && files >= tenant.quota.files {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "file quota: tenant `{}` has {files} of {} files; `{name}` does not fit",
                    tenant.name, tenant.quota.files
                ),
            ));
        }
        let mut file = Receiving::new(&dirs.tmp())
            .map_err(|e| ApiError::internal(format!("cannot receive `{name}`: {e}")))?;
        let too_large = |why: String| ApiError(StatusCode::PAYLOAD_TOO_LARGE, why);
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    file.discard();
                    return Err(ApiError(e.status(), format!("`{name}`: {}", e.body_text())));
                }
            };
            let size = file.size + chunk.len() as u64;
            if size > limit {
                file.discard();
                return Err(too_large(format!(
                    "file `{name}` is larger than the daemon's limit of {} per file (--max-upload)",
                    format_size(limit)
                )));
            }
            if used.saturating_add(received).saturating_add(size) > quota {
                file.discard();
                return Err(too_large(format!(
                    "disk quota: tenant `{}` uses {} of {}; `{name}` does not fit",
                    tenant.name,
                    format_size(used.saturating_add(received)),
                    format_size(quota)
                )));
            }
            if let Err(e) = file.write(&chunk) {
                file.discard();
                return Err(ApiError::internal(format!("cannot store `{name}`: {e}")));
            }
        }
        received += file.size;
        let (tmp, sha, size) = file
            .finish()
            .map_err(|e| ApiError::internal(format!("cannot store `{name}`: {e}")))?;
        let entry = dirs.commit(&ws, &name, &tmp, &sha, size).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ApiError::bad(e)
        })?;
        files += u64::from(new);
        stored.push(json!({"name": name, "sha256": entry.sha256, "size": entry.size}));
    }
    if stored.is_empty() {
        return Err(ApiError::bad("the upload has no files"));
    }
    tracing::info!(tenant = %tenant.name, workspace = %ws, files = stored.len(), "uploaded");
    Ok(Json(
        json!({"workspace": ws, "files": stored, "disk": dirs.disk_usage()}),
    ))
}

/// `GET /workspaces/{ws}/files/{name}`: the file's bytes.
async fn download(
    State(d): Shared,
    headers: HeaderMap,
    Path((ws, name)): Path<(String, String)>,
) -> Answer<Vec<u8>> {
    let tenant = caller(&d, &headers)?;
    let dirs = existing_workspace(&d, &tenant, &ws)?;
    let mut file = dirs.open_file(&ws, &name).map_err(ApiError::not_found)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| ApiError::internal(format!("cannot read `{name}`: {e}")))?;
    Ok(bytes)
}

fn unknown(kind: Kind, id: &str) -> ApiError {
    ApiError::not_found(format!("no {} `{id}`", kind.command()))
}

/// Runs `f` on the tenant's object `id` of kind `kind`.
fn with_object<R>(
    d: &Daemon,
    tenant: &Tenant,
    kind: Kind,
    id: &str,
    f: impl FnOnce(&mut Object) -> R,
) -> Answer<R> {
    d.with_objects(tenant, |objects| match objects.get_mut(id) {
        Some(object) if object.kind == kind => Ok(f(object)),
        _ => Err(unknown(kind, id)),
    })
}

/// `GET /pods`, `GET /peas`.
async fn list(kind: Kind, State(d): Shared, headers: HeaderMap) -> Answer {
    let tenant = caller(&d, &headers)?;
    let list: Vec<Value> = d.with_objects(&tenant, |objects| {
        objects
            .values()
            .filter(|o| o.kind == kind)
            .map(Object::describe)
            .collect()
    });
    Ok(Json(json!(list)))
}

/// `POST /pods`, `POST /peas`, `POST /flows`: checks the request and the quota, starts the
/// process, answers once it is ready (201) or why it did not start (422).
async fn create(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = caller(&d, &headers)?;
    let what = kind.command();
    let request: CreateRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a {what} request: {e}")))?;
    check_workspace_id(&request.workspace)?;
    let ws = &request.workspace;
    let dirs = existing_workspace(&d, &tenant, ws)?;
    let id = format!("{what}-{}", &random_id()[..12]);
    let log = dirs.logs().join(format!("{id}.log"));
    // The object's own state, unless the tenant names one: never another's.
    let state: Option<(std::path::PathBuf, bool)> = match &request.state {
        None | Some(StateRequest::Own(false)) => None,
        Some(StateRequest::Own(true)) => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("objects")
                .join(&id),
            true,
        )),
        Some(StateRequest::Named(name)) => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("state")
                .join(name),
            false,
        )),
    };
    std::fs::create_dir_all(dirs.logs())
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dirs.logs().display())))?;
    // The named states there are before this request: a refused request
    // removes the state directory it made, never one that was there.
    let states = std::path::Path::new("workspaces").join(ws).join("state");
    let states_before: std::collections::HashSet<std::ffi::OsString> =
        std::fs::read_dir(dirs.root.join(&states))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
    let (plan, args) = match kind {
        Kind::Flow => {
            let file = dirs.root.join("flows").join(format!("{id}.yml"));
            let plan = super::flows::prepare(&request, &dirs, &tenant, &d.config.host, &file)
                .map_err(ApiError::bad)?;
            let mut args: Vec<String> =
                vec!["flow".into(), "--uses".into(), file.display().to_string()];
            args.extend([
                "--host".into(),
                d.config.host.clone(),
                "--port".into(),
                "0".into(),
            ]);
            args.extend([
                "--cache-dir".into(),
                d.config.cache_dir.display().to_string(),
            ]);
            (plan, args)
        }
        Kind::Pea | Kind::Pod => {
            let plan = request
                .plan(kind, tenant.quota.memory_per_pea)
                .map_err(ApiError::bad)?;
            let file = |name: &str| dirs.file(ws, name).map_err(ApiError::bad);
            let files = Files {
                uses: file(&request.uses)?,
                uses_before: request.uses_before.as_deref().map(file).transpose()?,
                uses_after: request.uses_after.as_deref().map(file).transpose()?,
            };
            // Checked beneath the tenant's root now, just before the process gets it.
            let state_dir = match &state {
                Some((relative, _)) => Some(
                    dirs.beneath(relative)
                        .map_err(|e| ApiError::bad(format!("state: {e}")))?,
                ),
                None => None,
            };
            let args = request.args(
                kind,
                &plan,
                &d.config.host,
                &files,
                state_dir.as_deref(),
                &d.config.cache_dir,
            );
            (plan, args)
        }
    };
    // A Flow's Pods keep their state under `state/<flow name>/` (flows.rs): a
    // named state like any other, so it too has one live user at a time (not
    // a second Flow of that name, nor a Pea or Pod given that state).
    let state = match kind {
        Kind::Flow => Some((
            std::path::Path::new("workspaces")
                .join(ws)
                .join("state")
                .join(&plan.name),
            false,
        )),
        Kind::Pea | Kind::Pod => state,
    };
    // What a request refused from here on made (found by a hostile test: a
    // Flow refused by the quota left its Flow file and an empty state tree).
    let undo = || {
        if kind == Kind::Flow {
            let _ = std::fs::remove_file(dirs.root.join("flows").join(format!("{id}.yml")));
        }
        if let Some((relative, _)) = &state {
            let made = match relative.strip_prefix(&states) {
                Ok(rest) => rest
                    .components()
                    .next()
                    .is_some_and(|c| !states_before.contains(c.as_os_str())),
                // `objects/<id>`: this request's own.
                Err(_) => true,
            };
            if made {
                remove_empty_dirs(&dirs.root.join(relative));
            }
        }
    };
    let quota = &tenant.quota;
    let refuse = |m: String| {
        undo();
        ApiError(
            StatusCode::FORBIDDEN,
            format!("quota: tenant `{}`: {m}", tenant.name),
        )
    };
    if plan.memory_per_pea > quota.memory_per_pea {
        return Err(refuse(format!(
            "memory_hwm {} is more than memory_per_pea {}",
            format_size(plan.memory_per_pea),
            format_size(quota.memory_per_pea)
        )));
    }
    let live = Arc::new(Mutex::new(Live {
        state: LiveState::Starting,
        pid: None,
        ready: Value::Null,
        exit: None,
    }));
    let stop = CancellationToken::new();
    // Admission: the Peas and memory of every live object, this one reserved
    // before it starts so that concurrent creations cannot overrun the quota.
    d.with_objects(&tenant, |objects| {
        if let Some((dir, false)) = &state
            && let Some(other) = objects
                .values()
                .find(|o| o.holds_resources() && o.state.as_ref().is_some_and(|(d, _)| d == dir))
        {
            undo();
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "state `{}` is used by {} `{}`: a named state has one live user at a time",
                    dir.display(),
                    other.kind.command(),
                    other.id
                ),
            ));
        }
        let (peas, memory) = Daemon::usage(objects);
        if peas.saturating_add(plan.peas) > quota.max_peas {
            return Err(refuse(format!(
                "{what} `{}` needs {} Peas; {peas} of max_peas {} are running",
                plan.name, plan.peas, quota.max_peas
            )));
        }
        if memory.saturating_add(plan.memory) > quota.total_memory {
            return Err(refuse(format!(
                "{what} `{}` needs {} for {} Peas; {} of total_memory {} is taken",
                plan.name,
                format_size(plan.memory),
                plan.peas,
                format_size(memory),
                format_size(quota.total_memory)
            )));
        }
        let object = Object {
            id: id.clone(),
            kind,
            name: plan.name.clone(),
            workspace: ws.clone(),
            plan: plan.clone(),
            created: std::time::SystemTime::now(),
            expires: None,
            log: log.clone(),
            state: state.clone(),
            live: live.clone(),
            stop: stop.clone(),
            supervisor: None,
        };
        objects.insert(id.clone(), object);
        Ok(())
    })?;
    tracing::info!(tenant = %tenant.name, %id, name = %plan.name, "starting");
    match super::objects::spawn(
        &d.config.exe,
        &args,
        &log,
        plan.timeout_ready,
        live,
        stop.clone(),
        d.config.max_log,
    )
    .await
    {
        Ok(task) => {
            let described = d.with_objects(&tenant, |objects| {
                objects.get_mut(&id).map(|object| {
                    object.supervisor = Some(task);
                    object.renew();
                    object.describe()
                })
            });
            match described {
                Some(described) => Ok((StatusCode::CREATED, Json(described))),
                None => {
                    // Deleted while it started: the delete could not stop it yet.
                    stop.cancel();
                    Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("{what} `{id}` was deleted while it started"),
                    ))
                }
            }
        }
        Err(e) => {
            if let Some(object) = d.with_objects(&tenant, |objects| objects.remove(&id)) {
                d.forget(&tenant.name, &object);
            }
            Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{what} `{}` did not start: {e:#}", plan.name),
            ))
        }
    }
}

/// `GET /pods/{id}`: the object, and its live STATUS while it runs.
async fn show(kind: Kind, State(d): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let tenant = caller(&d, &headers)?;
    let (mut described, ctrl) = with_object(&d, &tenant, kind, &id, |o| {
        let live = o.live.lock().expect("live");
        let ctrl = live.ready["ctrl"]
            .as_str()
            .filter(|c| live.state == LiveState::Running && !c.is_empty())
            .map(str::to_string);
        drop(live);
        (o.describe(), ctrl)
    })?;
    if let Some(ctrl) = ctrl {
        described["status"] = match tokio::time::timeout(
            Duration::from_secs(2),
            crate::control::ask(&ctrl, crate::control::Command::Status),
        )
        .await
        {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => json!({"healthy": false, "error": format!("{e:#}")}),
            Err(_) => json!({"healthy": false, "error": "no STATUS answer within 2s"}),
        };
    }
    Ok(Json(described))
}

/// `DELETE /pods/{id}`: stops it (TERMINATE: it finishes, dumps, closes) and forgets it.
async fn remove(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let tenant = caller(&d, &headers)?;
    with_object(&d, &tenant, kind, &id, |_| ())?;
    if !d.delete(&tenant.name, &id).await {
        return Err(unknown(kind, &id));
    }
    Ok(Json(json!({"deleted": id})))
}

/// `PUT /pods/{id}/lease`: the lease starts again.
async fn renew(kind: Kind, State(d): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let tenant = caller(&d, &headers)?;
    let expires = with_object(&d, &tenant, kind, &id, |o| {
        o.renew();
        o.expires.map(|e| {
            e.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        })
    })?;
    match expires {
        Some(ms) => Ok(Json(json!({"id": id, "expires_in_ms": ms}))),
        None => Err(ApiError::bad(format!(
            "{} `{id}` has no lease (create it with `lease`)",
            kind.command()
        ))),
    }
}

/// `GET /pods/{id}/logs`: the stored log (the process's stderr: its rotated
/// part, then the current one), as text, streamed from the files: the
/// daemon never holds a whole log in memory.
async fn logs(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Response> {
    use futures::StreamExt as _;
    use tokio::io::AsyncReadExt as _;
    let tenant = caller(&d, &headers)?;
    let log = with_object(&d, &tenant, kind, &id, |o| o.log.clone())?;
    let parts = [super::objects::rotated(&log), log];
    let chunks = futures::stream::iter(parts)
        .filter_map(|path| async move { tokio::fs::File::open(path).await.ok() })
        .flat_map(|file| {
            futures::stream::unfold(Some(file), |file| async move {
                let mut file = file?;
                let mut buffer = vec![0u8; 64 << 10];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        Some((Ok::<Bytes, std::io::Error>(Bytes::from(buffer)), Some(file)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            })
        });
    let body = axum::body::Body::from_stream(chunks);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// `GET /pods/{id}/logs/stream`: server-sent events, one `data:` per log line
/// from the start of the log, then live; an `end` event once the process has
/// exited or the object is deleted.
async fn stream(
    kind: Kind,
    State(d): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    let tenant = caller(&d, &headers)?;
    let (log, live) = with_object(&d, &tenant, kind, &id, |o| (o.log.clone(), o.live.clone()))?;
    let follow = Follow {
        daemon: d,
        tenant,
        id,
        log,
        live,
        offset: 0,
        partial: Vec::new(),
        queue: VecDeque::new(),
        done: false,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(event) = f.queue.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            // Whether it still runs is asked before reading, so every line it
            // wrote before exiting is read before the `end`.
            let alive = f.alive();
            if !f.read_more() {
                if alive {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    if !f.partial.is_empty() {
                        let line = std::mem::take(&mut f.partial);
                        f.queue.push_back(line_event(&line));
                    }
                    let exit = f
                        .live
                        .lock()
                        .expect("live")
                        .exit
                        .clone()
                        .unwrap_or_else(|| "deleted".into());
                    f.queue.push_back(Event::default().event("end").data(exit));
                    f.done = true;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The longest `data:` a log stream sends; a longer line goes in pieces.
const STREAM_LINE_BYTES: usize = 64 << 10;

/// A log file being followed.
struct Follow {
    daemon: Arc<Daemon>,
    tenant: Tenant,
    id: String,
    log: std::path::PathBuf,
    live: Arc<Mutex<Live>>,
    offset: u64,
    partial: Vec<u8>,
    queue: VecDeque<Event>,
    done: bool,
}

impl Follow {
    fn alive(&self) -> bool {
        let present = self
            .daemon
            .with_objects(&self.tenant, |objects| objects.contains_key(&self.id));
        present && self.live.lock().expect("live").state != LiveState::Exited
    }

    /// Reads what the log gained; true when it gained anything.
    fn read_more(&mut self) -> bool {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return false;
        };
        // Rotated since the last read: the new part starts from its beginning.
        if file.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
        }
        if file.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.take(1 << 20).read_to_end(&mut bytes) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        self.offset += n as u64;
        self.partial.extend_from_slice(&bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.queue.push_back(line_event(&line[..end]));
        }
        // A log without line ends is sent in pieces, never held whole.
        while self.partial.len() >= STREAM_LINE_BYTES {
            let piece: Vec<u8> = self.partial.drain(..STREAM_LINE_BYTES).collect();
            self.queue.push_back(line_event(&piece));
        }
        true
    }
}

fn line_event(line: &[u8]) -> Event {
    let text = String::from_utf8_lossy(line).replace('\r', "");
    Event::default().data(text)
}

/// Removes `dir` and the directories under it when none of them holds
/// anything else (a file, a link, which stay, and so do the directories above
/// them): what a refused request made, and nothing of anyone's data.
fn remove_empty_dirs(dir: &std::path::Path) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        _ => return false,
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for entry in entries.flatten() {
        empty &= remove_empty_dirs(&entry.path());
    }
    empty && std::fs::remove_dir(dir).is_ok()
}
