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

use super::run::{Call, call_targeted};
use crate::document::Document;
use crate::wire::{Body, Envelope, ErrorKind, Message, Status};

/// Jina's status code for a failed request (SUCCESS is 0).
const ERROR: u8 = 1;

/// The longest reason an error answer carries (bytes; longer ones are cut at
/// a character boundary, saying how much was cut). An executor's message and a
/// JSON parser's (which may quote the input) are not bounded otherwise, and
/// Jina's client puts the whole body into the exception it raises.
pub const MAX_REASON: usize = 1024;

/// The routes with a fixed method: these answer 405 (with `Allow`) to another
/// method; any other path answers 404 to anything but `POST /<endpoint>`.
const FIXED_ROUTES: [(&str, &str); 4] = [
    ("/post", "POST"),
    ("/dry_run", "GET"),
    ("/status", "GET"),
    ("/openapi.json", "GET"),
];

#[derive(Clone)]
struct Shared {
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
        let shared = Shared {
            calls,
            slots: Arc::new(Semaphore::new(prefetch.max(1))),
            info: Arc::new(info),
            admin: admin.clone(),
            metrics: crate::metrics::GatewayMetrics::new("http"),
        };
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

/// A client's request, read and checked before anything is sent into the Flow.
#[derive(Debug)]
pub struct Request {
    /// `exec_endpoint` (for `POST /post`; default `/`) or the path's endpoint.
    pub endpoint: String,
    pub docs: Vec<Document>,
    /// The `parameters` object (empty when absent or null).
    pub parameters: Map<String, Value>,
    /// The client's own `header.request_id` (or `requestId`): only echoed back
    /// in the answer's header. Inside the Flow a request is known by an id the
    /// gateway mints (the envelope's), so two clients that send the same id
    /// never meet in a router or a tail.
    pub client_id: Option<String>,
    /// Jina's `target_executor`: only the Pods it matches run.
    pub target: Option<super::run::TargetExecutor>,
}

/// Reads a request body (docs/gateway.md, "Request"). `endpoint` is the path's
/// endpoint for `POST /<endpoint>`, `None` for `POST /post`. Never panics;
/// documents nested past [`crate::document::MAX_DEPTH`] are refused by name
/// before they are read further. Fuzzed by `fuzz/fuzz_targets/gateway_request.rs`.
///
/// # Errors
/// A message for the client (the gateway answers it with HTTP 422).
pub fn parse_request(bytes: &[u8], endpoint: Option<String>) -> Result<Request, String> {
    let request: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut request) = request else {
        return Err(
            "the body must be a JSON object with `data`, `exec_endpoint` and `parameters`".into(),
        );
    };
    let endpoint = match (endpoint, request.get("exec_endpoint")) {
        (Some(endpoint), _) => endpoint,
        (None, None | Some(Value::Null)) => "/".to_string(),
        // As over gRPC: an empty endpoint is the default one.
        (None, Some(Value::String(e))) if e.is_empty() => "/".to_string(),
        (None, Some(Value::String(e))) => e.clone(),
        (None, Some(other)) => {
            return Err(format!("`exec_endpoint` must be a string, not {other}"));
        }
    };
    check_endpoint(&endpoint)?;
    let parameters = match request.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(other) => return Err(format!("`parameters` must be an object, not {other}")),
    };
    let client_id = match request.get("header") {
        None | Some(Value::Null) => None,
        Some(Value::Object(header)) => {
            match header.get("request_id").or_else(|| header.get("requestId")) {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) if id.len() <= MAX_NAME_BYTES => Some(id.clone()),
                Some(Value::String(id)) => {
                    return Err(format!(
                        "`header.request_id` is {} bytes, more than {MAX_NAME_BYTES}",
                        id.len()
                    ));
                }
                Some(other) => {
                    return Err(format!("`header.request_id` must be a string, not {other}"));
                }
            }
        }
        Some(other) => return Err(format!("`header` must be an object, not {other}")),
    };
    let target = match request.get("target_executor") {
        None | Some(Value::Null) => None,
        Some(Value::String(pattern)) => super::run::TargetExecutor::parse(pattern)?,
        Some(other) => return Err(format!("`target_executor` must be a string, not {other}")),
    };
    let docs = documents(request.remove("data").unwrap_or(Value::Null))?;
    Ok(Request {
        endpoint,
        docs,
        parameters,
        client_id,
        target,
    })
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

/// Why a request was refused before its body was read as JSON.
struct Refused {
    code: StatusCode,
    message: String,
}

impl Refused {
    fn into_answer(self, endpoint: &str) -> Response {
        error(
            self.code,
            endpoint,
            None,
            "gateway",
            ErrorKind::BadRequest,
            &self.message,
        )
    }
}

/// The body of a request whose `Content-Type` says JSON (`application/json`,
/// or `application/NAME+json`, with any parameters); else 422, as a body that
/// is not JSON (docs/gateway.md). A body that could not be read (too large,
/// cut off) keeps axum's status, with its reason in the JSON error shape.
fn readable(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Refused> {
    let unprocessable = |message: String| Refused {
        code: StatusCode::UNPROCESSABLE_ENTITY,
        message,
    };
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => {
            return Err(unprocessable(
                "the request has no Content-Type: send the JSON body with `Content-Type: application/json`".into(),
            ));
        }
        Some(Ok(value)) if is_json(value) => {}
        Some(value) => {
            let shown = value.map_or_else(|_| "(not text)".to_string(), |v| format!("`{v}`"));
            return Err(unprocessable(format!(
                "Content-Type {shown} is not JSON: send the JSON body with `Content-Type: application/json`"
            )));
        }
    }
    body.map_err(|rejection| Refused {
        code: rejection.status(),
        message: format!("the body could not be read: {}", rejection.body_text()),
    })
}

/// `application/json` or `application/NAME+json`, parameters (`; charset=utf-8`) aside.
fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json"
        || media
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
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

/// An answer in Jina's shape: only these four keys (the Python `jina` client
/// parses answers strictly into its protobuf request).
#[derive(Serialize)]
struct Answer<'a> {
    header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<RouteJson<'a>>>,
    data: &'a [Document],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    exec_endpoint: &'a str,
    status: StatusJson<'a>,
}

/// Jina's status: `{"code": 0, "description": "success"}`, or a failure with
/// its exception.
#[derive(Serialize)]
struct StatusJson<'a> {
    code: u8,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<Exception<'a>>,
}

#[derive(Serialize)]
struct Exception<'a> {
    name: &'a str,
    args: [&'a str; 1],
    executor: &'a str,
}

/// Jina's RouteProto: RFC 3339 timestamps, a status code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteJson<'a> {
    executor: &'a str,
    start_time: String,
    end_time: String,
    status: RouteStatus,
}

#[derive(Serialize)]
struct RouteStatus {
    code: u8,
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
        docs,
        parameters,
        client_id,
        target,
    } = request;
    *docs_in = docs.len();
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
    let message = Message::data(envelope, &Body::from_documents(&docs));
    drop(docs);
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
    let docs = match reply
        .decode_body()
        .map_err(|e| e.to_string())
        .and_then(Body::into_documents)
    {
        Ok(docs) => docs,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &endpoint,
                Some(&id),
                "gateway",
                ErrorKind::Malformed,
                &e,
            );
        }
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
        data: &docs,
    };
    let response = (StatusCode::OK, Json(answer)).into_response();
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

/// The request's documents (its `data`): a list, or `{"docs": [...]}`.
/// The most top-level documents one request may carry, at either gateway.
/// Every document is work for every Pod (a minted id, a segmenter's pass...),
/// so a request of a million empty documents, a 2 MB message, cost a Flow
/// ~3 GB (found by a hostile test). Jina's clients send `request_size` (100
/// by default) a request.
pub const MAX_REQUEST_DOCS: usize = 100_000;

/// The longest endpoint or client request id a gateway takes (both are
/// echoed in answers and logged on every request).
pub const MAX_NAME_BYTES: usize = 256;

/// Refuses an endpoint no executor could declare: one that does not start
/// with `/`, is longer than [`MAX_NAME_BYTES`], or holds control characters
/// (it is logged and echoed). Both gateways check it before anything is sent.
///
/// # Errors
/// What is wrong with it, for the client.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the endpoint is {} bytes, more than {MAX_NAME_BYTES}",
            endpoint.len()
        ));
    }
    if !endpoint.starts_with('/') || endpoint.chars().any(char::is_control) {
        return Err(format!(
            "the endpoint {:?} is not one: it starts with `/` and has no control characters",
            endpoint
        ));
    }
    Ok(())
}

/// Refuses a request of more than [`MAX_REQUEST_DOCS`] documents.
///
/// # Errors
/// The count and the limit, for the client.
pub fn check_request_docs(n: usize) -> Result<(), String> {
    if n > MAX_REQUEST_DOCS {
        return Err(format!(
            "the request has {n} documents, more than the {MAX_REQUEST_DOCS} a request may carry: send them in smaller requests (`request_size`)"
        ));
    }
    Ok(())
}

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
    check_request_docs(items.len())?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(text) => Ok(Document::from_text(text)),
            other => serde_json::from_value(other)
                .map_err(|e| format!("data[{i}] is not a document: {e}")),
        })
        .collect()
}

/// Jina's status of a failed request: which executor, what kind, why.
fn failure<'a>(executor: &'a str, kind: ErrorKind, message: &'a str) -> StatusJson<'a> {
    StatusJson {
        code: ERROR,
        description: format!("executor `{executor}` failed ({kind}): {message}"),
        exception: Some(Exception {
            name: kind.as_str(),
            args: [message],
            executor,
        }),
    }
}

fn error(
    code: StatusCode,
    endpoint: &str,
    request_id: Option<&str>,
    executor: &str,
    kind: ErrorKind,
    message: &str,
) -> Response {
    failed(code, endpoint, request_id, (executor, kind, message), None)
}

/// A failed request's answer (docs/gateway.md, "Errors"): Jina's status
/// (`code`, `description`) first, then the header with the full status and
/// the routes; never the documents, and a reason of at most [`MAX_REASON`]
/// bytes, so any client that prints the body prints the reason first.
#[derive(Serialize)]
struct FailureAnswer<'a> {
    code: u8,
    description: &'a str,
    header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<RouteJson<'a>>>,
}

/// Answers `code` with a [`FailureAnswer`] for `(executor, kind, message)`.
fn failed(
    code: StatusCode,
    endpoint: &str,
    request_id: Option<&str>,
    (executor, kind, message): (&str, ErrorKind, &str),
    routes: Option<Vec<RouteJson<'_>>>,
) -> Response {
    let message = cap(message);
    let status = failure(executor, kind, &message);
    let description = status.description.clone();
    let answer = FailureAnswer {
        code: ERROR,
        description: &description,
        header: Header {
            request_id,
            exec_endpoint: endpoint,
            status,
        },
        routes,
    };
    answered(
        (code, Json(answer)).into_response(),
        endpoint,
        request_id,
        kind.as_str(),
    )
}

/// `text` cut to at most [`MAX_REASON`] bytes at a character boundary, saying
/// how many bytes were cut.
fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_REASON {
        return text.into();
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end).into()
}

/// Microseconds since the Unix epoch as RFC 3339 UTC (`2026-11-24T21:00:00.000100Z`).
fn rfc3339(us: u64) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    // A route's times come off the wire; humantime refuses years past 9999.
    if write!(
        text,
        "{}",
        humantime::format_rfc3339_micros(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(us)
        )
    )
    .is_err()
    {
        text = "9999-12-31T23:59:59.999999Z".into();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::MAX_DEPTH;

    fn nested(levels: usize) -> String {
        format!(
            "{}{}",
            r#"{"chunks":["#.repeat(levels + 1),
            "]}".repeat(levels + 1)
        )
    }

    #[test]
    fn requests_are_read_with_the_client_id_kept_apart() {
        let body = br#"{"data": [{"id": "a", "text": "x"}, "plain"], "exec_endpoint": "/index",
            "parameters": {"top_k": 3}, "header": {"request_id": "mine"}}"#;
        let request = parse_request(body, None).unwrap();
        assert_eq!(
            (
                request.endpoint.as_str(),
                request.docs.len(),
                request.client_id.as_deref()
            ),
            ("/index", 2, Some("mine"))
        );
        assert_eq!(request.parameters["top_k"], 3);
        assert_eq!(request.docs[1].text.as_deref(), Some("plain"));
        // The path's endpoint wins; `{"docs": [...]}` and `requestId` too.
        let request = parse_request(
            br#"{"data": {"docs": []}, "exec_endpoint": "/x", "header": {"requestId": "j"}}"#,
            Some("/y".into()),
        )
        .unwrap();
        assert_eq!(
            (request.endpoint.as_str(), request.client_id.as_deref()),
            ("/y", Some("j"))
        );
        assert_eq!(parse_request(b"{}", None).unwrap().endpoint, "/");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let error = |body: &[u8]| parse_request(body, None).unwrap_err();
        assert!(error(b"{").starts_with("the body is not JSON"));
        assert!(error(b"[1]").contains("must be a JSON object"));
        assert!(error(br#"{"parameters": 1}"#).contains("`parameters` must be an object"));
        assert!(error(br#"{"exec_endpoint": 1}"#).contains("`exec_endpoint` must be a string"));
        assert_eq!(
            parse_request(br#"{"exec_endpoint": ""}"#, None)
                .unwrap()
                .endpoint,
            "/"
        );
        assert!(error(br#"{"exec_endpoint": "index"}"#).contains("starts with `/`"));
        assert!(error(br#"{"exec_endpoint": "/a\u0000b"}"#).contains("no control characters"));
        let long = format!(r#"{{"exec_endpoint": "/{}"}}"#, "x".repeat(300));
        assert!(error(long.as_bytes()).contains("301 bytes, more than 256"));
        assert!(error(br#"{"header": "x"}"#).contains("`header` must be an object"));
        assert!(error(br#"{"header": {"request_id": 7}}"#).contains("must be a string, not 7"));
        assert!(error(br#"{"data": 1}"#).contains("`data` must be a list"));
        assert!(
            error(br#"{"data": [{"embedding": "x"}]}"#).starts_with("data[0] is not a document")
        );
    }

    /// At the depth limit a request reads and becomes a valid body; one level
    /// past it is refused by name, as is a nesting far past serde's own limit.
    #[test]
    fn documents_past_the_depth_limit_are_refused() {
        let at = format!(r#"{{"data": [{}]}}"#, nested(MAX_DEPTH));
        let request = parse_request(at.as_bytes(), None).unwrap();
        assert_eq!(request.docs[0].depth(), MAX_DEPTH);
        Body::from_documents(&request.docs).validate().unwrap();
        let past = format!(r#"{{"data": [{}]}}"#, nested(MAX_DEPTH + 1));
        let error = parse_request(past.as_bytes(), None).unwrap_err();
        assert!(
            error.starts_with("data[0] is not a document: documents nest more than 32 levels"),
            "{error}"
        );
        let far = format!(r#"{{"data": [{}]}}"#, nested(5000));
        assert!(parse_request(far.as_bytes(), None).is_err());
    }

    #[test]
    fn answers_have_jinas_shape() {
        let status = failure("enc", ErrorKind::Panic, "boom");
        let answer = Answer {
            header: Header {
                request_id: Some("r"),
                exec_endpoint: "/",
                status,
            },
            parameters: None,
            routes: Some(vec![RouteJson {
                executor: "gateway",
                start_time: rfc3339(0),
                end_time: rfc3339(0),
                status: RouteStatus { code: 0 },
            }]),
            data: &[],
        };
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "header": {"requestId": "r", "execEndpoint": "/", "status": {"code": 1, "description": "executor `enc` failed (panic): boom",
                    "exception": {"name": "panic", "args": ["boom"], "executor": "enc"}}},
                "routes": [{"executor": "gateway", "startTime": "1970-01-01T00:00:00.000000Z", "endTime": "1970-01-01T00:00:00.000000Z", "status": {"code": 0}}],
                "data": []
            })
        );
        let dry = serde_json::to_value(DryRun {
            code: 0,
            description: "ready",
            exception: None,
        })
        .unwrap();
        assert_eq!(
            dry,
            serde_json::json!({"code": 0, "description": "ready", "exception": null})
        );
    }

    /// Status and reason come first, the header keeps Jina's full status,
    /// and a long reason is cut.
    #[test]
    fn failures_lead_with_the_reason_and_stay_short() {
        let long = "é".repeat(MAX_REASON);
        let reason = cap(&long);
        assert!(reason.len() < MAX_REASON + 40, "{}", reason.len());
        assert!(reason.ends_with(&format!(
            "… ({} more bytes cut)",
            2 * MAX_REASON - MAX_REASON
        )));
        assert_eq!(cap("short"), "short");
        let status = failure("enc", ErrorKind::Panic, "boom");
        let answer = FailureAnswer {
            code: ERROR,
            description: &status.description.clone(),
            header: Header {
                request_id: Some("r"),
                exec_endpoint: "/x",
                status,
            },
            routes: None,
        };
        let text = serde_json::to_string(&answer).unwrap();
        assert!(
            text.starts_with(
                r#"{"code":1,"description":"executor `enc` failed (panic): boom","header":{"#
            ),
            "{text}"
        );
        assert!(!text.contains("\"data\""), "{text}");
    }

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "",
            "text/plain",
            "application/jsonl",
            "multipart/form-data; boundary=x",
            "json",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_000_250),
            "2023-11-14T22:13:20.000250Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(super::rfc3339(u64::MAX), "9999-12-31T23:59:59.999999Z");
    }
}

/// The request reader never panics, whatever the bytes.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_reads_or_fails(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = super::parse_request(&bytes, None);
        }

        #[test]
        fn any_json_ish_body_reads_or_fails(body in r#"\{("data"|"parameters"|"exec_endpoint"|"header"|"docs"|"chunks"|"id"|"request_id"|[\[\]{}:,"0-9a-z ])*\}"#) {
            if let Ok(request) = super::parse_request(body.as_bytes(), None) {
                prop_assert!(crate::wire::Body::from_documents(&request.docs).validate().is_ok());
            }
        }
    }
}
