//! A client for a Flow's HTTP gateway (Jina's HTTP interface, docs/gateway.md).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::document::Document;

/// The gateway's answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub documents: Vec<Document>,
    /// `executor `x` failed (kind): message` when the request failed.
    pub error: Option<String>,
}

/// POSTs one request to `http://host:port/post` on its own connection.
///
/// # Errors
/// The gateway cannot be reached, or answers something that is not Jina's shape.
pub async fn post(host: &str, port: u16, endpoint: &str, parameters: &Value, docs: &[Document], timeout: Duration) -> anyhow::Result<Answer> {
    let body = json!({"data": docs, "exec_endpoint": endpoint, "parameters": parameters});
    let request = hyper::Request::post("/post")
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await.with_context(|| format!("cannot reach the gateway at {host}:{port}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange).await.map_err(|_| anyhow::anyhow!("no answer from the gateway within {timeout:?}"))??;
    let mut answer: Value = serde_json::from_slice(&bytes).with_context(|| format!("the gateway answered {status} with something that is not JSON"))?;
    let documents = match answer.get_mut("data").map(Value::take) {
        Some(Value::Array(items)) => items.into_iter().map(serde_json::from_value).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let header_status = &answer["header"]["status"];
    let failed = !status.is_success() || header_status["code"].as_u64().is_some_and(|c| c != 0);
    let error = failed.then(|| header_status["description"].as_str().map_or_else(|| format!("the gateway answered {status}"), str::to_string));
    Ok(Answer { documents, error })
}
