//! The HTTP gateway: Jina's HTTP interface in front of a running Flow.
//!
//! - `POST /post` with `{"data": [documents], "exec_endpoint": "/index",
//!   "parameters": {...}}`, and `POST /<endpoint>` (the endpoint from the path).
//! - `GET /dry_run`: is the Flow up. `GET /status`: the Flow's Pods.
//!
//! docs/gateway.md gives the shapes. At most `prefetch` requests are in the
//! Flow at once; more wait for a slot (backpressure, not a queue that grows).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::run::{Call, call};
use crate::document::Document;
use crate::wire::{Body, Envelope, Message, Status};

/// Jina's status code for a failed request (SUCCESS is 0).
const ERROR: u8 = 1;

#[derive(Clone)]
struct Shared {
    calls: mpsc::Sender<Call>,
    slots: Arc<Semaphore>,
    /// What `GET /status` reports.
    info: Arc<Value>,
}

/// A gateway serving on its address until stopped.
pub struct Gateway {
    pub address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds `host:port` (0: the OS picks) and serves.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(host: &str, port: u16, calls: mpsc::Sender<Call>, prefetch: usize, info: Value) -> anyhow::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|e| anyhow::anyhow!("the gateway cannot bind {host}:{port}: {e}"))?;
        let address = listener.local_addr()?;
        let shared = Shared { calls, slots: Arc::new(Semaphore::new(prefetch.max(1))), info: Arc::new(info) };
        let app = Router::new()
            .route("/post", post(post_body))
            .route("/dry_run", get(dry_run))
            .route("/status", get(status))
            .route("/{*endpoint}", post(post_endpoint))
            .with_state(shared);
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!("the gateway stopped: {e}");
            }
        });
        Ok(Gateway { address, stop, task })
    }

    /// Stops accepting, finishes the requests being answered.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn post_body(State(shared): State<Shared>, Json(request): Json<Value>) -> Response {
    let endpoint = request.get("exec_endpoint").and_then(Value::as_str).unwrap_or("/").to_string();
    answer(shared, endpoint, request).await
}

async fn post_endpoint(State(shared): State<Shared>, Path(endpoint): Path<String>, Json(request): Json<Value>) -> Response {
    answer(shared, format!("/{endpoint}"), request).await
}

async fn dry_run(State(shared): State<Shared>) -> Response {
    let up = !shared.calls.is_closed();
    let code = if up { 0 } else { ERROR };
    Json(json!({"code": code, "description": if up { "ready" } else { "the Flow is stopping" }, "exception": null})).into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    Json((*shared.info).clone()).into_response()
}

/// Runs one request through the Flow and answers in Jina's shape.
async fn answer(shared: Shared, endpoint: String, mut request: Value) -> Response {
    let data = request.get_mut("data").map_or(Value::Null, Value::take);
    let docs = match documents(data) {
        Ok(docs) => docs,
        Err(message) => return error(StatusCode::UNPROCESSABLE_ENTITY, &endpoint, "gateway", "bad-request", &message),
    };
    let parameters = match request.get("parameters") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => return error(StatusCode::UNPROCESSABLE_ENTITY, &endpoint, "gateway", "bad-request", &format!("`parameters` must be an object, not {other}")),
    };
    let Ok(_slot) = shared.slots.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, &endpoint, "gateway", "unavailable", "the gateway is stopping");
    };
    let mut message = Message::data(Envelope::request(endpoint.clone(), parameters.to_string()), &Body::from_documents(&docs));
    // The client's own request id, when it sent one (Jina's client does).
    let header = request.get("header");
    if let Some(id) = header.and_then(|h| h.get("request_id").or_else(|| h.get("requestId"))).and_then(Value::as_str) {
        message.envelope.request_id = id.to_string();
    }
    let id = message.envelope.request_id.clone();
    let reply = match call(&shared.calls, message).await {
        Ok(reply) => reply,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &endpoint, "gateway", "unavailable", &format!("{e:#}")),
    };
    let docs = match reply.decode_body().map_err(|e| e.to_string()).and_then(Body::into_documents) {
        Ok(docs) => docs,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &endpoint, "gateway", "malformed", &e),
    };
    // Jina's RouteProto: the Python client parses the answer strictly, so
    // timestamps are RFC 3339 strings and there is no field of our own.
    let routes: Vec<Value> = reply
        .envelope
        .routes
        .iter()
        .map(|r| {
            let code = u8::from(r.outcome == crate::wire::Outcome::Failed);
            json!({"executor": r.pea, "startTime": rfc3339(r.start_us), "endTime": rfc3339(r.end_us), "status": {"code": code}})
        })
        .collect();
    let (code, status) = match &reply.envelope.status {
        Status::Success => (StatusCode::OK, json!({"code": 0, "description": "success"})),
        Status::Error { executor, kind, message } => (StatusCode::INTERNAL_SERVER_ERROR, failure(executor, kind, message)),
    };
    let body = json!({
        "header": {"requestId": id, "execEndpoint": endpoint, "status": status},
        "parameters": parameters,
        "routes": routes,
        "data": docs,
    });
    (code, Json(body)).into_response()
}

/// The request's documents (its `data`, taken out of it): a list, or
/// `{"docs": [...]}`.
fn documents(data: Value) -> Result<Vec<Document>, String> {
    let items = match data {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("docs") {
            Some(Value::Array(items)) => items,
            _ => return Err("`data` must be a list of documents (or {\"docs\": [...]})".into()),
        },
        _ => return Err("`data` must be a list of documents".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(text) => Ok(Document::from_text(text)),
            other => serde_json::from_value(other).map_err(|e| format!("data[{i}] is not a document: {e}")),
        })
        .collect()
}

/// Jina's status of a failed request: which executor, what kind, why.
fn failure(executor: &str, kind: &str, message: &str) -> Value {
    json!({
        "code": ERROR,
        "description": format!("executor `{executor}` failed ({kind}): {message}"),
        "exception": {"name": kind, "args": [message], "executor": executor},
    })
}

fn error(code: StatusCode, endpoint: &str, executor: &str, kind: &str, message: &str) -> Response {
    let body = json!({
        "header": {"execEndpoint": endpoint, "status": failure(executor, kind, message)},
        "data": [],
    });
    (code, Json(body)).into_response()
}

/// Microseconds since the Unix epoch as RFC 3339 UTC (`2026-11-24T21:00:00.000100Z`).
fn rfc3339(us: u64) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    // A route's times come off the wire; humantime refuses years past 9999.
    if write!(text, "{}", humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us))).is_err() {
        text = "9999-12-31T23:59:59.999999Z".into();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(super::rfc3339(1_700_000_000_000_250), "2023-11-14T22:13:20.000250Z");
        assert_eq!(super::rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(super::rfc3339(u64::MAX), "9999-12-31T23:59:59.999999Z");
    }
}
