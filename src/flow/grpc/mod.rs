//! The gateway's gRPC side: Jina 3's services for Jina's own client, whose
//! default protocol this is (docs/grpc.md).
//!
//! - `jina.JinaRPC/Call`: a bidirectional stream of `DataRequestProto`; each
//!   request runs through the Flow and its answer comes back on the stream,
//!   in completion order (in request order when the client asks with
//!   `results_in_order`). At most `prefetch` requests of one stream are in
//!   the Flow at once (the client's `prefetch`, capped at the Flow's); the
//!   stream is not read further meanwhile, so HTTP/2 flow control holds the
//!   client back.
//! - `jina.JinaSingleDataRequestRPC/process_single_data`: one request, one answer.
//! - `jina.JinaDiscoverEndpointsRPC/endpoint_discovery`,
//!   `jina.JinaGatewayDryRunRPC/dry_run` (what `is_flow_ready` calls),
//!   `jina.JinaInfoRPC/_status`.
//!
//! Documents are docarray v2's `DocListProto` ([`convert`]). A failed request
//! is answered as Jina's gateway answers it: a `DataRequestProto` whose
//! `header.status` is `ERROR` with the executor, the kind and the reason (the
//! client raises `BadServer` or calls `on_error`). A client deadline
//! (`grpc-timeout`) becomes the request's deadline inside the Flow.

pub mod convert;
mod guard;
pub mod lean;
mod listener;

/// The messages and services generated from proto/ by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types)]
pub mod pb {
    pub mod docarray {
        tonic::include_proto!("docarray");
    }
    pub mod jina {
        tonic::include_proto!("jina");
    }
}

/// Jina's services again, over [`lean::DataRequest`] in place of
/// `DataRequestProto` (build.rs): the gateway serves the data services from
/// here, and a client may call them with pre-encoded documents.
#[allow(clippy::all, clippy::pedantic, missing_docs, non_camel_case_types)]
pub mod lean_pb {
    include!(concat!(env!("OUT_DIR"), "/lean/jina.rs"));
}

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use prost::Message as _;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

use lean::DataRequest;
use lean_pb::{
    jina_rpc_server::{JinaRpc, JinaRpcServer},
    jina_single_data_request_rpc_server::{
        JinaSingleDataRequestRpc, JinaSingleDataRequestRpcServer,
    },
};
use pb::jina::{
    EndpointsProto, HeaderProto, JinaInfoProto, RouteProto, StatusProto,
    jina_discover_endpoints_rpc_server::{
        JinaDiscoverEndpointsRpc, JinaDiscoverEndpointsRpcServer,
    },
    jina_gateway_dry_run_rpc_server::{JinaGatewayDryRunRpc, JinaGatewayDryRunRpcServer},
    jina_info_rpc_server::{JinaInfoRpc, JinaInfoRpcServer},
    status_proto::{ExceptionProto, StatusCode},
};

use super::router::{Call, TargetExecutor, call_targeted};
use crate::wire::{Body, Envelope, ErrorKind, Message, Outcome, Status};

/// The largest request message the server reads: gRPC's customary default
/// (grpc-core's and tonic's receive limit). Past it the call ends with
/// `OUT_OF_RANGE` naming both sizes, and the gateway serves on.
pub const MAX_MESSAGE: usize = 4 << 20;

/// What every service shares.
#[derive(Clone)]
struct Shared {
    calls: mpsc::Sender<Call>,
    /// Requests in the Flow from this gateway at once (the Flow's `prefetch`).
    slots: Arc<Semaphore>,
    prefetch: usize,
    /// What `_status` reports (the Flow's Pods).
    info: Arc<Value>,
    /// Prometheus metrics, when on.
    metrics: Option<Arc<crate::metrics::GatewayMetrics>>,
}

/// A gRPC gateway serving on its address until stopped.
pub struct GrpcGateway {
    pub address: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcGateway {
    /// Binds `host:port` (0: the OS picks) and serves Jina's services.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(
        host: &str,
        port: u16,
        calls: mpsc::Sender<Call>,
        prefetch: usize,
        info: Value,
        limits: &crate::http_server::HttpLimits,
    ) -> anyhow::Result<GrpcGateway> {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|e| anyhow::anyhow!("the gRPC gateway cannot bind {host}:{port}: {e}"))?;
        let address = listener.local_addr()?;
        let shared = Shared {
            calls,
            slots: Arc::new(Semaphore::new(prefetch.max(1))),
            prefetch: prefetch.max(1),
            info: Arc::new(info),
            metrics: crate::metrics::GatewayMetrics::new("grpc"),
        };
        let service = Service(shared);
        // What requests not yet in the Flow may hold, all calls together
        // (guard.rs): every service's bodies are read under it.
        let budget = Arc::new(Semaphore::new(guard::MAX_PENDING_BYTES));
        let idle = limits.http_idle_timeout;
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(guard::MAX_STREAMS)
            .initial_stream_window_size(guard::STREAM_WINDOW)
            .initial_connection_window_size(guard::CONNECTION_WINDOW)
            // A peer that stops answering pings is dropped; a live one is
            // pinged often enough never to look silent (listener.rs).
            .http2_keepalive_interval(Some(
                (limits.http_idle_timeout / 3).max(Duration::from_millis(100)),
            ))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(guard::Guarded::new(
                JinaRpcServer::new(service.clone()).max_decoding_message_size(MAX_MESSAGE),
                &budget,
                idle,
            ))
            .add_service(guard::Guarded::new(
                JinaSingleDataRequestRpcServer::new(service.clone())
                    .max_decoding_message_size(MAX_MESSAGE),
                &budget,
                idle,
            ))
            .add_service(guard::Guarded::new(
                JinaDiscoverEndpointsRpcServer::new(service.clone()),
                &budget,
                idle,
            ))
            .add_service(guard::Guarded::new(
                JinaGatewayDryRunRpcServer::new(service.clone()),
                &budget,
                idle,
            ))
            .add_service(guard::Guarded::new(
                JinaInfoRpcServer::new(service),
                &budget,
                idle,
            ));
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let incoming = listener::capped(
            listener,
            limits.http_max_connections as usize,
            limits.http_idle_timeout,
            guard::CONNECTION_SHARE,
        );
        let task = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!("the gRPC gateway stopped: {e}");
            }
        });
        Ok(GrpcGateway {
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

#[derive(Clone)]
struct Service(Shared);

/// The client's deadline from `grpc-timeout` (`30S`, `100m`...): how long
/// from now.
fn client_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A failed request's status, as Jina's gateway writes it.
/// The client's W3C `traceparent` metadata, when traces are on (off, it is
/// not even read).
fn traceparent(metadata: &tonic::metadata::MetadataMap) -> Option<crate::trace::TraceContext> {
    if !crate::trace::enabled() {
        return None;
    }
    crate::trace::from_traceparent(metadata.get("traceparent").and_then(|v| v.to_str().ok()))
}

fn failure(executor: &str, kind: ErrorKind, message: &str) -> StatusProto {
    StatusProto {
        code: StatusCode::Error as i32,
        description: format!("executor `{executor}` failed ({kind}): {message}"),
        exception: Some(ExceptionProto {
            name: kind.as_str().to_owned(),
            args: vec![message.to_owned()],
            stacks: Vec::new(),
            executor: executor.to_owned(),
        }),
    }
}

fn timestamp(us: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    }
}

impl Shared {
    /// Runs one request through the Flow ([`Shared::answer`]), with its
    /// access log line and metrics.
    /// `admission`: the request's share of the gateway's pending bytes
    /// (guard.rs), given back once the Flow takes it.
    async fn process(
        &self,
        mut request: DataRequest,
        timeout: Option<Duration>,
        parent: Option<crate::trace::TraceContext>,
        admission: Option<guard::Admission>,
    ) -> DataRequest {
        let span =
            crate::trace::start("gateway", crate::trace::Kind::Server, parent.as_ref(), None);
        // A client's trace that is not sampled travels on unrecorded.
        let trace = span.as_ref().map(crate::trace::Span::context).or(parent);
        let started = std::time::Instant::now();
        let _in_flight = self.metrics.as_ref().map(|m| m.in_flight());
        let received = self.metrics.as_ref().map_or(0, |_| request.encoded_len());
        // Read while the request was decoded (lean.rs).
        let (body, docs) = request.take_docs();
        let reply = self.answer(request, body, timeout, trace, admission).await;
        let header = reply.header.as_ref();
        let status = header
            .and_then(|h| h.status.as_ref())
            .and_then(|s| s.exception.as_ref())
            .map_or("success", |e| e.name.as_str());
        if let Some(mut span) = span {
            span.set("rpc.system", "grpc");
            span.set(
                "endpoint",
                header
                    .and_then(|h| h.exec_endpoint.clone())
                    .unwrap_or_else(|| "/".into()),
            );
            span.set("documents", docs as i64);
            if let Some(h) = header {
                span.set("request.id", h.request_id.clone());
            }
            span.set("status", status.to_string());
            if status != "success" {
                span.fail(status, &format!("the request failed: {status}"));
            }
            span.end();
        }
        let served = crate::metrics::Served {
            request_id: header.map_or("-", |h| h.request_id.as_str()),
            endpoint: header
                .and_then(|h| h.exec_endpoint.as_deref())
                .unwrap_or("/"),
            docs,
            status,
            elapsed: started.elapsed(),
            received: received as u64,
            sent: self.metrics.as_ref().map_or(0, |_| reply.encoded_len()) as u64,
        };
        crate::metrics::served(self.metrics.as_deref(), "grpc", &served);
        reply
    }

    /// Runs one request through the Flow; every failure is an answer with an
    /// error status, never a dropped call.
    async fn answer(
        &self,
        request: DataRequest,
        body: Result<Body, String>,
        timeout: Option<Duration>,
        trace: Option<crate::trace::TraceContext>,
        admission: Option<guard::Admission>,
    ) -> DataRequest {
        let DataRequest {
            header, parameters, ..
        } = request;
        let mut header = header.unwrap_or_default();
        // As the HTTP gateway: an id is echoed and logged, so a long one is
        // refused, and neither echoed nor logged.
        let long_id = (header.request_id.len() > crate::flow::gateway::MAX_NAME_BYTES).then(|| {
            format!(
                "`header.request_id` is {} bytes, more than {}",
                header.request_id.len(),
                crate::flow::gateway::MAX_NAME_BYTES
            )
        });
        if long_id.is_some() {
            header.request_id.clear();
        }
        let endpoint = header
            .exec_endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "/".into());
        // `docs`: the answer's documents, as an encoded `DataContentProto`.
        let answer = |status: StatusProto,
                      parameters: Option<prost_types::Struct>,
                      routes: Vec<RouteProto>,
                      docs: Bytes| {
            DataRequest::new(
                Some(HeaderProto {
                    request_id: header.request_id.clone(),
                    status: Some(status),
                    exec_endpoint: Some(endpoint.clone()),
                    target_executor: header.target_executor.clone(),
                    timeout: header.timeout,
                }),
                parameters,
                routes,
                Some(docs),
            )
        };
        let no_docs = || Bytes::from_static(lean::NO_DOCS);
        let target = crate::flow::gateway::check_endpoint(&endpoint)
            .and_then(|()| long_id.map_or(Ok(()), Err))
            .and_then(|()| {
                TargetExecutor::parse(header.target_executor.as_deref().unwrap_or_default())
            });
        let (body, target) = match (body, target) {
            (Ok(body), Ok(target)) => (body, target),
            (Err(message), _) | (_, Err(message)) => {
                let status = failure("gateway", ErrorKind::BadRequest, &message);
                return answer(status, parameters, Vec::new(), no_docs());
            }
        };
        let mut envelope =
            Envelope::request(endpoint.clone(), convert::struct_json(parameters.as_ref()));
        envelope.trace = trace;
        // The client's deadline (and Jina's per-request `header.timeout`, in
        // milliseconds), whichever ends first.
        let timeout = [
            timeout,
            header.timeout.map(|ms| Duration::from_millis(ms.into())),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(timeout) = timeout {
            let now_ms = crate::wire::now_us() / 1000;
            envelope.deadline_ms = now_ms.saturating_add(timeout.as_millis() as u64).max(1);
        }
        let message = Message::data(envelope, &body);
        drop(body);
        let Ok(_slot) = self.slots.acquire().await else {
            let status = failure("gateway", ErrorKind::Unavailable, "the gateway is stopping");
            return answer(status, parameters, Vec::new(), no_docs());
        };
        // In the Flow now: bounded by its slots.
        drop(admission);
        let reply = match call_targeted(&self.calls, message, target).await {
            Ok(reply) => reply,
            Err(e) => {
                let status = failure("gateway", ErrorKind::Unavailable, &format!("{e:#}"));
                return answer(status, parameters, Vec::new(), no_docs());
            }
        };
        let routes = reply
            .envelope
            .routes
            .iter()
            .map(|r| RouteProto {
                executor: r.pea.clone(),
                start_time: Some(timestamp(r.start_us)),
                end_time: Some(timestamp(r.end_us)),
                status: Some(StatusProto {
                    code: if r.outcome == Outcome::Failed {
                        StatusCode::Error as i32
                    } else {
                        StatusCode::Success as i32
                    },
                    ..Default::default()
                }),
            })
            .collect();
        let docs = reply
            .decode_body()
            .map_err(|e| (ErrorKind::Malformed, e.to_string()))
            .and_then(|body| {
                convert::content_from_body(&body).map_err(convert::AnswerError::kind_and_message)
            });
        let docs = match docs {
            Ok(docs) => Bytes::from(docs),
            Err((kind, e)) => {
                let status = failure("gateway", kind, &e);
                return answer(status, parameters, routes, no_docs());
            }
        };
        let status = match &reply.envelope.status {
            Status::Success => StatusProto {
                code: StatusCode::Success as i32,
                description: String::new(),
                exception: None,
            },
            Status::Error {
                executor,
                kind,
                message,
            } => failure(executor, *kind, message),
        };
        answer(status, parameters, routes, docs)
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<DataRequest, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl JinaRpc for Service {
    type CallStream = ReplyStream;

    async fn call(
        &self,
        request: Request<Streaming<DataRequest>>,
    ) -> Result<Response<ReplyStream>, GrpcStatus> {
        let metadata = request.metadata();
        let timeout = client_timeout(metadata);
        // Every request of the stream continues the client's trace.
        let parent = traceparent(metadata);
        // Jina's client sends its `prefetch` and `results_in_order` as metadata.
        let window = metadata
            .get("__prefetch__")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .map_or(self.0.prefetch, |n| n.min(self.0.prefetch));
        let in_order = metadata
            .get("__results_in_order__")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let shared = self.0.clone();
        let admissions = guard::Admissions::of(&request);
        let requests = request.into_inner().map(move |item| {
            let shared = shared.clone();
            // Taken as tonic decodes the messages: in order.
            let admission = admissions.next();
            async move {
                match item {
                    // A task of its own, so that the request goes through the
                    // Flow, and gives its slot back, whether or not the client
                    // reads its answers: one that stops reading holds at most
                    // `window` answers of its own, never a slot the gateway's
                    // other clients need.
                    Ok(request) => tokio::spawn(async move {
                        shared.process(request, timeout, parent, admission).await
                    })
                    .await
                    .map_err(|e| GrpcStatus::internal(format!("the request failed: {e}"))),
                    // The stream broke (a message over MAX_MESSAGE, bytes that
                    // are not a DataRequestProto): the call ends with its status.
                    Err(status) => Err(status),
                }
            }
        });
        // `buffered`/`buffer_unordered` read the next request only while fewer
        // than `window` are being answered: the stream's backpressure.
        let replies: ReplyStream = if in_order {
            Box::pin(requests.buffered(window))
        } else {
            Box::pin(requests.buffer_unordered(window))
        };
        Ok(Response::new(replies))
    }
}

#[tonic::async_trait]
impl JinaSingleDataRequestRpc for Service {
    async fn process_single_data(
        &self,
        request: Request<DataRequest>,
    ) -> Result<Response<DataRequest>, GrpcStatus> {
        let timeout = client_timeout(request.metadata());
        let parent = traceparent(request.metadata());
        let admission = guard::Admissions::of(&request).next();
        Ok(Response::new(
            self.0
                .process(request.into_inner(), timeout, parent, admission)
                .await,
        ))
    }
}

#[tonic::async_trait]
impl JinaGatewayDryRunRpc for Service {
    async fn dry_run(&self, _: Request<()>) -> Result<Response<StatusProto>, GrpcStatus> {
        Ok(Response::new(if self.0.calls.is_closed() {
            failure("gateway", ErrorKind::Unavailable, "the Flow is stopping")
        } else {
            StatusProto {
                code: StatusCode::Success as i32,
                description: "ready".into(),
                exception: None,
            }
        }))
    }
}

#[tonic::async_trait]
impl JinaDiscoverEndpointsRpc for Service {
    /// The union of the endpoints the Flow's executors declare, and
    /// `__default__` when one of them takes every endpoint (or cannot say:
    /// src/flow/endpoints.rs). Which ones change state is each Pea's
    /// `--read-endpoints`.
    async fn endpoint_discovery(
        &self,
        _: Request<()>,
    ) -> Result<Response<EndpointsProto>, GrpcStatus> {
        Ok(Response::new(EndpointsProto {
            endpoints: super::endpoints::FlowEndpoints::from_info(&self.0.info).discovery(),
            write_endpoints: Vec::new(),
            schemas: None,
        }))
    }
}

#[tonic::async_trait]
impl JinaInfoRpc for Service {
    async fn status(&self, _: Request<()>) -> Result<Response<JinaInfoProto>, GrpcStatus> {
        let mut jina = std::collections::HashMap::from([
            ("jina-wasm".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ("protocol".to_owned(), "grpc".to_owned()),
        ]);
        if let Value::Object(info) = &*self.0.info {
            for (key, value) in info {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                jina.insert(key.clone(), text);
            }
        }
        Ok(Response::new(JinaInfoProto {
            jina,
            envs: Default::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_read() {
        let mut m = tonic::metadata::MetadataMap::new();
        for (text, want) in [
            ("30S", Some(Duration::from_secs(30))),
            ("100m", Some(Duration::from_millis(100))),
            ("2H", Some(Duration::from_secs(7200))),
            ("5x", None),
            ("S", None),
        ] {
            m.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(client_timeout(&m), want, "{text}");
        }
    }
}
