//! The HTTP gateway: Jina's HTTP interface in front of a running Flow.
//!
//! - `POST /post` with `{"data": [documents], "exec_endpoint": "/index",
//!   "parameters": {...}}`, and `POST /<endpoint>` (the endpoint from the path).
//! - `GET /dry_run`: is the Flow up. `GET /status`: the Flow's Pods.
//! - `GET /metrics`: Prometheus metrics, when on (docs/operations.md).
//! - `GET /openapi.json`: an OpenAPI 3 document listing the endpoints the
//!   Flow's executors declare (what Jina's client reads first).
//! - Anything else: a JSON error answer (404 for a route that does not exist,
//!   405 for a route used with the wrong method, 422 for a body that is not a
//!   JSON request), in the same failure shape as an executor's error.
//!
//! docs/gateway.md gives the shapes. At most `prefetch` requests are in the
//! Flow at once; more wait for a slot (backpressure, not a queue that grows).

mod answer;
mod read;
mod request;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::router::{Call, call_targeted};
use crate::document::Document;
use crate::wire::body::Indexed;
use crate::wire::{Body, Envelope, ErrorKind, Message, Status};
pub use answer::MAX_REASON;
use answer::{Answer, ERROR, Header, RouteJson, RouteStatus, StatusJson, error, failed, rfc3339};
use request::readable;
pub use request::{
    MAX_NAME_BYTES, MAX_REQUEST_DOCS, Request, check_endpoint, check_request_docs, parse_request,
};

/// The routes with a fixed method: these answer 405 (with `Allow`) to another
/// method; any other path answers 404 to anything but `POST /<endpoint>`.
const FIXED_ROUTES: [(&str, &str); 4] = [
    ("/post", "POST"),
    ("/dry_run", "GET"),
    ("/status", "GET"),
    ("/openapi.json", "GET"),
];

/// What every request's handler reads, cloned per request by axum (an
/// `Arc`: one count to change, not one per field).
type Shared = Arc<Parts>;

struct Parts {
    calls: mpsc::Sender<Call>,
    slots: Arc<Semaphore>,
    /// What `GET /status` reports.
    info: Arc<Value>,
    /// The admin route's Pods (rolling updates), when this gateway runs them.
    admin: Option<Arc<super::update::Admin>>,
    /// Prometheus metrics, when on.
    metrics: Option<Arc<crate::metrics::GatewayMetrics>>,
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
    pub async fn start(
        host: &str,
        port: u16,
        calls: mpsc::Sender<Call>,
        prefetch: usize,
        info: Value,
        limits: crate::http_server::HttpLimits,
        admin: Option<Arc<super::update::Admin>>,
    ) -> anyhow::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|e| anyhow::anyhow!("the gateway cannot bind {host}:{port}: {e}"))?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Parts {
            calls,
            slots: Arc::new(Semaphore::new(prefetch.max(1))),
            info: Arc::new(info),
            admin: admin.clone(),
            metrics: crate::metrics::GatewayMetrics::new("http"),
        });
        let mut app = Router::new();
        if shared.metrics.is_some() {
            app = app.route("/metrics", get(|| async { crate::metrics::response() }));
        }
        let app = app
            .route("/post", post(post_body))
            .route("/dry_run", get(dry_run))
            .route("/status", get(status))
            .route("/openapi.json", get(openapi))
            // `any`: another method on an endpoint's path is a 404 of ours,
            // not axum's 405 (which would add `Allow: POST`).
            .route("/{*endpoint}", any(post_endpoint))
            // Keep these two last: the 405 handler applies to the routes
            // registered before it.
            .fallback(no_route)
            .method_not_allowed_fallback(no_route)
            // The access log and the request metrics, for every answer that
            // carries an [`Answered`].
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                observe,
            ))
            .with_state(shared);
        // `POST /admin/update` (src/flow/update.rs).
        let app = match &admin {
            Some(admin) => app.merge(admin.router()),
            None => app,
        };
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = crate::http_server::serve(listener, app, limits, shutdown).await {
                tracing::error!("the gateway stopped: {e}");
            }
        });
        Ok(Gateway {
            address,
            stop,
            task,
        })
    }

    /// Stops accepting, finishes the requests being answered.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn post_body(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match readable(&headers, body) {
        Ok(body) => answer(shared, None, &body, traceparent(&headers)).await,
        Err(refused) => refused.into_answer("/"),
    }
}

async fn post_endpoint(
    State(shared): State<Shared>,
    Path(endpoint): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if method != Method::POST {
        return no_route(method, uri).await;
    }
    let endpoint = format!("/{endpoint}");
    match readable(&headers, body) {
        Ok(body) => answer(shared, Some(endpoint), &body, traceparent(&headers)).await,
        Err(refused) => refused.into_answer(&endpoint),
    }
}

/// Every request no route takes: 405 (with `Allow`) for a fixed route used
/// with another method, else 404; both in the JSON error shape.
async fn no_route(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let (code, message) = match FIXED_ROUTES.iter().find(|(route, _)| *route == path) {
        Some((route, allowed)) => (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} {route} is not served: use {allowed} {route}"),
        ),
        None => (
            StatusCode::NOT_FOUND,
            format!(
                "no route {method} {path}: requests are POST /post or POST /<endpoint>; GET /dry_run, GET /status and GET /openapi.json describe the Flow"
            ),
        ),
    };
    let kind = if code == StatusCode::NOT_FOUND {
        ErrorKind::NotFound
    } else {
        ErrorKind::MethodNotAllowed
    };
    let mut response = error(code, path, None, "gateway", kind, &message);
    if let Some((_, allowed)) = FIXED_ROUTES.iter().find(|(route, _)| *route == path)
        && code == StatusCode::METHOD_NOT_ALLOWED
    {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    }
    response
}

/// `GET /dry_run`'s answer, as Jina's.
#[derive(Serialize)]
struct DryRun {
    code: u8,
    description: &'static str,
    /// Always `null`.
    exception: Option<()>,
}

async fn dry_run(State(shared): State<Shared>) -> Response {
    let up = !shared.calls.is_closed();
    let (code, description) = if up {
        (0, "ready")
    } else {
        (ERROR, "the Flow is stopping")
    };
    Json(DryRun {
        code,
        description,
        exception: None,
    })
    .into_response()
}

async fn status(State(shared): State<Shared>) -> Response {
    let mut info = (*shared.info).clone();
    if let Some(admin) = &shared.admin {
        admin.refresh(&mut info);
    }
    Json(info).into_response()
}

/// `GET /openapi.json`: the Flow's declared endpoints as OpenAPI 3
/// (src/flow/endpoints.rs).
async fn openapi(State(shared): State<Shared>) -> Response {
    let title = format!(
        "jina-wasm gateway: {}",
        shared.info["flow"].as_str().unwrap_or("Flow")
    );
    Json(super::endpoints::FlowEndpoints::from_info(&shared.info).openapi(&title)).into_response()
}

/// What an answer tells [`observe`] about its request (a response extension).
#[derive(Clone)]
struct Answered {
    request_id: Option<String>,
    endpoint: String,
    /// Documents in the request.
    docs: usize,
    /// `success`, or the error kind.
    status: String,
}

fn answered(
    mut response: Response,
    endpoint: &str,
    request_id: Option<&str>,
    status: &str,
) -> Response {
    response.extensions_mut().insert(Answered {
        request_id: request_id.map(str::to_string),
        endpoint: endpoint.to_string(),
        docs: 0,
        status: status.to_string(),
    });
    response
}

/// Around every route: counts the request in flight and, when the answer is
/// a request's (it carries an [`Answered`]), writes the access log line and
/// records the request's metrics.
async fn observe(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let _in_flight = shared.metrics.as_ref().map(|m| m.in_flight());
    let received = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let response = next.run(request).await;
    if let Some(a) = response.extensions().get::<Answered>() {
        let sent = axum::body::HttpBody::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        let served = crate::metrics::Served {
            request_id: a.request_id.as_deref().unwrap_or("-"),
            endpoint: &a.endpoint,
            docs: a.docs,
            status: &a.status,
            elapsed: started.elapsed(),
            received,
            sent,
        };
        crate::metrics::served(shared.metrics.as_deref(), "http", &served);
    }
    response
}

/// The client's W3C `traceparent`, when traces are on (off, the header is
/// not even read).
fn traceparent(headers: &HeaderMap) -> Option<crate::trace::TraceContext> {
    if !crate::trace::enabled() {
        return None;
    }
    crate::trace::from_traceparent(headers.get("traceparent").and_then(|v| v.to_str().ok()))
}

/// Runs one request through the Flow and answers in Jina's shape; with
/// traces on, under a `gateway` span (a child of the client's `parent`).
async fn answer(
    shared: Shared,
    path_endpoint: Option<String>,
    body: &[u8],
    parent: Option<crate::trace::TraceContext>,
) -> Response {
    let mut docs = 0;
    let span = crate::trace::start("gateway", crate::trace::Kind::Server, parent.as_ref(), None);
    // A client's trace that is not sampled travels on unrecorded.
    let trace = span.as_ref().map(crate::trace::Span::context).or(parent);
    let mut response = respond(shared, path_endpoint, body, &mut docs, trace).await;
    if let Some(a) = response.extensions_mut().get_mut::<Answered>() {
        a.docs = docs;
    }
    if let Some(mut span) = span {
        span.set("rpc.system", "http");
        if let Some(a) = response.extensions().get::<Answered>() {
            gateway_span(&mut span, a, response.status().as_u16());
        }
        span.end();
    }
    response
}

/// The attributes of an HTTP gateway span.
fn gateway_span(span: &mut crate::trace::Span, a: &Answered, code: u16) {
    span.set("endpoint", a.endpoint.clone());
    span.set("documents", a.docs as i64);
    if let Some(id) = &a.request_id {
        span.set("request.id", id.clone());
    }
    span.set("status", a.status.clone());
    if code != 0 {
        span.set("http.response.status_code", i64::from(code));
    }
    if a.status != "success" {
        span.fail(&a.status, &format!("the request failed: {}", a.status));
    }
}

/// [`answer`]'s work; `docs_in`: the request's documents, once read.
async fn respond(
    shared: Shared,
    path_endpoint: Option<String>,
    body: &[u8],
    docs_in: &mut usize,
    trace: Option<crate::trace::TraceContext>,
) -> Response {
    let fallback = path_endpoint.clone().unwrap_or_else(|| "/".into());
    let request = match parse_request(body, path_endpoint) {
        Ok(request) => request,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &fallback,
                None,
                "gateway",
                ErrorKind::BadRequest,
                &message,
            );
        }
    };
    let Request {
        endpoint,
        body,
        docs,
        parameters,
        client_id,
        target,
    } = request;
    *docs_in = docs;
    let Ok(_slot) = shared.slots.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &endpoint,
            client_id.as_deref(),
            "gateway",
            ErrorKind::Unavailable,
            "the gateway is stopping",
        );
    };
    let parameter_text = Value::Object(parameters.clone()).to_string();
    // The envelope keeps the id it was minted with: the Flow's own.
    let mut envelope = Envelope::request(endpoint.clone(), parameter_text);
    envelope.trace = trace;
    let message = Message::data(envelope, &body);
    drop(body);
    let id = client_id.unwrap_or_else(|| message.envelope.request_id.clone());
    let reply = match call_targeted(&shared.calls, message, target).await {
        Ok(reply) => reply,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &endpoint,
                Some(&id),
                "gateway",
                ErrorKind::Unavailable,
                &format!("{e:#}"),
            );
        }
    };
    let malformed = |e: &str| {
        error(
            StatusCode::BAD_GATEWAY,
            &endpoint,
            Some(&id),
            "gateway",
            ErrorKind::Malformed,
            e,
        )
    };
    // Tags are checked before the status, as for an answer written: a
    // reply whose documents could not be written is the gateway's error.
    let docs = match reply
        .decode_body()
        .map_err(|e| e.to_string())
        .and_then(|body| {
            if reply.envelope.is_error() {
                body.check_tags()?;
            }
            Indexed::trusting_tags(body)
        }) {
        Ok(docs) => docs,
        Err(e) => return malformed(&e),
    };
    let routes = reply
        .envelope
        .routes
        .iter()
        .map(|r| RouteJson {
            executor: &r.pea,
            start_time: rfc3339(r.start_us),
            end_time: rfc3339(r.end_us),
            status: RouteStatus {
                code: u8::from(r.outcome == crate::wire::Outcome::Failed),
            },
        })
        .collect();
    let status = match &reply.envelope.status {
        Status::Success => StatusJson {
            code: 0,
            description: "success".into(),
            exception: None,
        },
        // A failure answers with its reason and routes, not the documents:
        // clients print the body of an error (Jina's raises it whole).
        Status::Error {
            executor,
            kind,
            message,
        } => {
            return failed(
                executor_error_status(*kind),
                &endpoint,
                Some(&id),
                (executor, *kind, message),
                Some(routes),
            );
        }
    };
    let answer = Answer {
        header: Header {
            request_id: Some(&id),
            exec_endpoint: &endpoint,
            status,
        },
        parameters: Some(&parameters),
        routes: Some(routes),
        data: write::Docs(&docs),
    };
    let bytes = match serde_json::to_vec(&answer) {
        Ok(bytes) => bytes,
        Err(e) => return malformed(&e.to_string()),
    };
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response();
    answered(response, &endpoint, Some(&id), "success")
}

/// The HTTP status of a request an executor failed: 507 Insufficient Storage
/// for `capacity` (the executor is full: the same request fails until
/// capacity is added; 503 would invite a retry), 500 for every other kind.
fn executor_error_status(kind: ErrorKind) -> StatusCode {
    if kind == ErrorKind::Capacity {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

#[cfg(test)]
mod tests;
