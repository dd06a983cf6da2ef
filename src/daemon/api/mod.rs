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

mod logs;
mod objects;
mod workspaces;

use logs::{logs, stream};
use objects::{create, list, remove, renew, show, with_object};
use workspaces::{
    delete_workspace, download, existing_workspace, list_workspaces, show_workspace, upload,
};

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
                    .and_then(super::child::rss_bytes)
            })
            .sum();
        (Daemon::usage(objects), rss)
    });
    (peas, memory, dirs.disk_usage(), rss)
}
