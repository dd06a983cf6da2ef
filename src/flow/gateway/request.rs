//! A request as the HTTP gateway reads it: the body's `Content-Type`, Jina's
//! JSON shape (`data`, `parameters`, `exec_endpoint`, `header`...), and the
//! limits on its documents, endpoint and names, which the gRPC gateway shares.

use super::*;

/// A client's request, read and checked before anything is sent into the Flow.
#[derive(Debug)]
pub struct Request {
    /// `exec_endpoint` (for `POST /post`; default `/`) or the path's endpoint.
    pub endpoint: String,
    /// The documents, as columns.
    pub body: Body,
    /// How many top-level documents.
    pub docs: usize,
    /// The `parameters` object (empty when absent or null).
    pub parameters: Map<String, Value>,
    /// The client's own `header.request_id` (or `requestId`): only echoed back
    /// in the answer's header. Inside the Flow a request is known by an id the
    /// gateway mints (the envelope's), so two clients that send the same id
    /// never meet in a router or a tail.
    pub client_id: Option<String>,
    /// Jina's `target_executor`: only the Pods it matches run.
    pub target: Option<crate::flow::router::TargetExecutor>,
}

/// Reads a request body (docs/gateway.md, "Request"). `endpoint` is the path's
/// endpoint for `POST /<endpoint>`, `None` for `POST /post`. Never panics;
/// documents nested past [`crate::document::MAX_DEPTH`] are refused by name
/// before they are read further. Fuzzed by `fuzz/fuzz_targets/gateway_request.rs`.
///
/// # Errors
/// A message for the client (the gateway answers it with HTTP 422).
pub fn parse_request(bytes: &[u8], endpoint: Option<String>) -> Result<Request, String> {
    let Some(read) = super::read::read(bytes) else {
        return reference(bytes, endpoint);
    };
    let mut fields = read.fields;
    let (endpoint, parameters, client_id, target) = fields_of(&mut fields, endpoint)?;
    Ok(Request {
        endpoint,
        body: read.body,
        docs: read.roots,
        parameters,
        client_id,
        target,
    })
}

/// The reference reader: the body as a `serde_json::Value`, its documents as
/// [`Document`] trees. [`parse_request`] falls back on it for anything its
/// columnar reader does not take, so its errors are the gateway's.
pub(super) fn reference(bytes: &[u8], endpoint: Option<String>) -> Result<Request, String> {
    let request: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut request) = request else {
        return Err(
            "the body must be a JSON object with `data`, `exec_endpoint` and `parameters`".into(),
        );
    };
    let (endpoint, parameters, client_id, target) = fields_of(&mut request, endpoint)?;
    let docs = documents(request.remove("data").unwrap_or(Value::Null))?;
    Ok(Request {
        endpoint,
        body: Body::from_documents(&docs),
        docs: docs.len(),
        parameters,
        client_id,
        target,
    })
}

/// The endpoint, parameters, client id and target of a request object, in
/// that order checked.
type Fields = (
    String,
    Map<String, Value>,
    Option<String>,
    Option<crate::flow::router::TargetExecutor>,
);

fn fields_of(request: &mut Map<String, Value>, endpoint: Option<String>) -> Result<Fields, String> {
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
        Some(Value::String(pattern)) => crate::flow::router::TargetExecutor::parse(pattern)?,
        Some(other) => return Err(format!("`target_executor` must be a string, not {other}")),
    };
    Ok((endpoint, parameters, client_id, target))
}

/// Why a request was refused before its body was read as JSON.
pub(super) struct Refused {
    pub(super) code: StatusCode,
    pub(super) message: String,
}

impl Refused {
    pub(super) fn into_answer(self, endpoint: &str) -> Response {
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
pub(super) fn readable(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Refused> {
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
pub(super) fn is_json(content_type: &str) -> bool {
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

/// The request's documents (its `data`): a list, or `{"docs": [...]}`.
/// The most documents one request may carry (at every level: chunks and
/// matches count), at either gateway.
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
    if !endpoint.starts_with('/') || !endpoint.chars().all(crate::wire::fits_a_name) {
        return Err(format!(
            "the endpoint {:?} is not one: it starts with `/` and has no control characters (nor line separators or bidirectional-text controls)",
            endpoint
        ));
    }
    Ok(())
}

/// Refuses a request of more than [`MAX_REQUEST_DOCS`] documents (at every
/// level: chunks and matches count).
///
/// # Errors
/// The count and the limit, for the client.
pub fn check_request_docs(n: usize) -> Result<(), String> {
    if n > MAX_REQUEST_DOCS {
        return Err(format!(
            "the request has {n} documents, more than the {MAX_REQUEST_DOCS} a request may carry (chunks and matches count): send them in smaller requests (`request_size`)"
        ));
    }
    Ok(())
}

/// Every document of `items`, at every level (their `chunks` and `matches`
/// too), counted before any is read: the limit is on the work a request
/// carries, and a request of one document with a million empty chunks is as
/// much work as a million documents (found by a hostile test).
fn count_documents(items: &[Value]) -> usize {
    let mut count = 0usize;
    let mut stack: Vec<&Value> = items.iter().collect();
    while let Some(item) = stack.pop() {
        count += 1;
        if let Value::Object(doc) = item {
            for key in ["chunks", "matches"] {
                if let Some(Value::Array(children)) = doc.get(key) {
                    stack.extend(children);
                }
            }
        }
    }
    count
}

pub(super) fn documents(data: Value) -> Result<Vec<Document>, String> {
    let items = match data {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("docs") {
            Some(Value::Array(items)) => items,
            _ => return Err("`data` must be a list of documents (or {\"docs\": [...]})".into()),
        },
        _ => return Err("`data` must be a list of documents".into()),
    };
    check_request_docs(count_documents(&items))?;
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
