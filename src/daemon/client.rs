//! A client of the daemon's API: what a Flow uses to run a remote Pod, and what
//! the tests and the benchmark drive the daemon with.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One daemon (`host:port`) and the bearer token of a tenant.
#[derive(Debug, Clone)]
pub struct DaemonClient {
    pub address: String,
    token: String,
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

impl DaemonClient {
    pub fn new(address: &str, token: &str) -> DaemonClient {
        let address = address.trim_start_matches("http://").trim_end_matches('/').to_string();
        DaemonClient { address, token: token.to_string() }
    }

    async fn send(&self, method: Method, path: &str, content_type: &str, body: Bytes) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))?;
        let stream = tokio::net::TcpStream::connect(&self.address).await.with_context(|| format!("cannot reach the daemon at {}", self.address))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender.send_request(request).await?)
    }

    /// One call; the answer's JSON, or [`Refused`] with the daemon's message.
    ///
    /// # Errors
    /// The daemon cannot be reached, or refuses.
    pub async fn call(&self, method: Method, path: &str, content_type: &str, body: Bytes) -> anyhow::Result<Value> {
        let response = self.send(method.clone(), path, content_type, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let message = answer["error"].as_str().map_or_else(|| answer.to_string(), str::to_string);
            return Err(Refused { address: self.address.clone(), method, path: path.to_string(), status, message }.into());
        }
        Ok(answer)
    }

    /// A JSON call (`body` may be `Value::Null` for none).
    ///
    /// # Errors
    /// As [`DaemonClient::call`].
    pub async fn json(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let bytes = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        self.call(method, path, "application/json", bytes).await
    }

    /// Uploads files into a workspace as one multipart request: each is
    /// (name in the workspace, local path).
    ///
    /// # Errors
    /// A file that cannot be read; as [`DaemonClient::call`].
    pub async fn upload(&self, workspace: &str, files: &[(String, &Path)]) -> anyhow::Result<Value> {
        let mut parts = Vec::new();
        for (name, path) in files {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            parts.push((name.clone(), bytes));
        }
        let (content_type, body) = multipart(&parts);
        self.call(Method::POST, &format!("/workspaces/{workspace}/files"), &content_type, body.into()).await
    }

    /// Follows an object's log stream (`/pods/{id}/logs/stream`), calling
    /// `on_line` for each line; returns how the process ended once the daemon
    /// sends `end`, or `None` if the stream broke first.
    ///
    /// # Errors
    /// As [`DaemonClient::call`], for the opening request.
    pub async fn follow(&self, path: &str, mut on_line: impl FnMut(&str)) -> anyhow::Result<Option<String>> {
        let response = self.send(Method::GET, path, "text/plain", Bytes::new()).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.into_body().collect().await?.to_bytes();
            let message = String::from_utf8_lossy(&bytes).into_owned();
            return Err(Refused { address: self.address.clone(), method: Method::GET, path: path.to_string(), status, message }.into());
        }
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        let mut event = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Ok(None) };
            let Some(data) = frame.data_ref() else { continue };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = data.strip_prefix(' ').unwrap_or(data);
                    if event == "end" {
                        return Ok(Some(data.to_string()));
                    }
                    on_line(data);
                } else if line.is_empty() {
                    event.clear();
                }
            }
        }
        Ok(None)
    }
}

/// A `multipart/form-data` body: its content type (with the boundary) and bytes.
pub fn multipart(parts: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = format!("jina-wasm-{}", super::random_id());
    let mut body = Vec::new();
    for (name, bytes) in parts {
        let quoted = name.replace('"', "%22");
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{quoted}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
