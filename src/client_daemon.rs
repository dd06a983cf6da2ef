//! A client of the daemon's API: what a Flow uses to run a remote Pod, and what
//! the tests and the benchmark drive the daemon with; and what both sides of
//! that API agree on (the names the daemon takes, a file's listing entry).

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use hyper::{Method, StatusCode};
use serde_json::Value;
use sha2::Digest as _;

/// One daemon (`host:port`) and the bearer token of a tenant.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    pub address: String,
    token: String,
    /// Keep-alive connections to the daemon, shared by the clones.
    http: reqwest::Client,
}

/// An answer that is not a success, with the daemon's `error` message.
#[derive(Debug, thiserror::Error)]
#[error("daemon {address}: {method} {path}: {status}: {message}")]
pub struct Refused {
    pub address: String,
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub message: String,
}

/// A plain-HTTP client: no TLS (not built in), and no proxy, so that an
/// `HTTP_PROXY` in the environment never reroutes a loopback or cluster address.
pub fn plain_http_client() -> reqwest::Client {
    // Building fails only on TLS or proxy settings, and this client has neither.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain-HTTP client builds")
}

impl DaemonClient {
    pub fn new(address: &str, token: &str) -> DaemonClient {
        let address = address
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        DaemonClient {
            address,
            token: token.to_string(),
            http: plain_http_client(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<reqwest::Response> {
        let request = self
            .request(method, path)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body);
        request
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", self.address))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.address))
            .bearer_auth(&self.token)
    }

    /// One call; the answer's JSON, or [`Refused`] with the daemon's message.
    ///
    /// # Errors
    /// The daemon cannot be reached, or refuses.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Value> {
        let response = self.send(method.clone(), path, content_type, body).await?;
        self.answer(method, path, response).await
    }

    /// The answer's JSON (else its text), or [`Refused`] if it is not a success.
    async fn answer(
        &self,
        method: Method,
        path: &str,
        response: reqwest::Response,
    ) -> anyhow::Result<Value> {
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| {
            format!(
                "daemon {}: {method} {path}: the answer broke off",
                self.address
            )
        })?;
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let message = answer["error"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_string);
            return Err(Refused {
                address: self.address.clone(),
                method,
                path: path.to_string(),
                status,
                message,
            }
            .into());
        }
        Ok(answer)
    }

    /// A JSON call (`body` may be `Value::Null` for none).
    ///
    /// # Errors
    /// As [`DaemonClient::call`].
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let bytes = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        self.call(method, path, "application/json", bytes).await
    }

    /// Uploads files into a workspace as one multipart request: each is
    /// (name in the workspace, local path).
    ///
    /// # Errors
    /// A file that cannot be read; as [`DaemonClient::call`].
    pub async fn upload(
        &self,
        workspace: &str,
        files: &[(String, &Path)],
    ) -> anyhow::Result<Value> {
        let mut form = reqwest::multipart::Form::new();
        for (name, path) in files {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(name.clone())
                    .mime_str("application/octet-stream")?,
            );
        }
        let path = format!("/workspaces/{workspace}/files");
        let response = self
            .request(Method::POST, &path)
            .multipart(form)
            .send()
            .await
            .with_context(|| format!("cannot reach the daemon at {}", self.address))?;
        self.answer(Method::POST, &path, response).await
    }

    /// Follows an object's log stream (`/pods/{id}/logs/stream`, server-sent
    /// events), calling `on_line` for each line; returns how the process ended
    /// once the daemon sends `end`, or `None` if the stream broke first.
    ///
    /// # Errors
    /// As [`DaemonClient::call`], for the opening request.
    pub async fn follow(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str),
    ) -> anyhow::Result<Option<String>> {
        let response = self
            .send(Method::GET, path, "text/plain", Bytes::new())
            .await?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(Refused {
                address: self.address.clone(),
                method: Method::GET,
                path: path.to_string(),
                status,
                message,
            }
            .into());
        }
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.event == "end" {
                return Ok(Some(event.data));
            }
            on_line(&event.data);
        }
        Ok(None)
    }
}

/// A workspace id, tenant name or object name: 1-64 of `A-Za-z0-9._-`, not starting with `.`.
pub fn is_safe_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One file of a workspace, as listed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

/// The sha256 of a file, in hex (the Flow checks what a daemon already has).
///
/// # Errors
/// The file cannot be read.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}
