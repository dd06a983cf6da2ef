//! A client for a Flow's HTTP gateway (Jina's HTTP interface, docs/gateway.md).

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::document::Document;

/// The gateway's answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub documents: Vec<Document>,
    /// `executor `x` failed (kind): message` when the request failed.
    pub error: Option<String>,
}

/// How long the client waits for a TCP connection to the gateway (or to a
/// Pea, `client --in/--out`) before it says that nothing answers there.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One pool of keep-alive connections for the process: requests in flight
/// (`--prefetch`) reuse idle connections instead of opening one each. A
/// connect deadline, so a dead address is reported in seconds, not after the
/// request's whole `timeout`.
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        // Building fails only on TLS or proxy settings, and this client has neither.
        .expect("a plain-HTTP client builds")
});

/// The body of `POST /post` (Jina's request shape).
#[derive(Serialize)]
struct Request<'a> {
    data: &'a [Document],
    exec_endpoint: &'a str,
    parameters: &'a Value,
}

/// POSTs one request to `http://host:port/post`.
///
/// # Errors
/// The gateway cannot be reached, or answers something that is not Jina's shape.
pub async fn post(
    host: &str,
    port: u16,
    endpoint: &str,
    parameters: &Value,
    docs: &[Document],
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let body = Request {
        data: docs,
        exec_endpoint: endpoint,
        parameters,
    };
    let exchange = async {
        let response = CLIENT
            .post(format!("http://{host}:{port}/post"))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    };
    let (status, bytes) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => anyhow::bail!("no answer from the gateway within {timeout:?}"),
        Ok(Err(e)) if e.is_connect() || e.is_timeout() => {
            return Err(anyhow::Error::new(e).context(format!(
                "nothing answers at http://{host}:{port}: is the Flow running there? (its ready line's `gateway` is the URL to give --host)"
            )));
        }
        // Connected, but what came back is not HTTP: a ZeroMQ socket answers
        // a connection with its own greeting.
        Ok(Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "http://{host}:{port} did not answer HTTP: if it is a Pea's or Pod's ZeroMQ port (`in`/`out` of its ready line), use --in/--out; the Flow's gateway is the `gateway` of the Flow's ready line"
            )));
        }
        Ok(Ok(answer)) => answer,
    };
    let mut answer: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!("http://{host}:{port} answered {status} with something that is not JSON: is it a jina-wasm gateway?")
    })?;
    let documents = match answer.get_mut("data").map(Value::take) {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let header_status = &answer["header"]["status"];
    let failed = !status.is_success() || header_status["code"].as_u64().is_some_and(|c| c != 0);
    let error = failed.then(|| {
        let mut error = header_status["description"]
            .as_str()
            .map_or_else(|| format!("the gateway answered {status}"), str::to_string);
        if header_status["exception"]["name"] == "capacity" {
            error.push_str(
                " [the executor is full (HTTP 507): the same request fails until capacity is added, \
                 e.g. more shards or a larger memory_hwm]",
            );
        }
        error
    });
    Ok(Answer { documents, error })
}
