//! OpenTelemetry traces (docs/operations.md, "Traces"): a real OTLP/HTTP
//! receiver in this process (axum, decoding the protobuf the exporter sends
//! with opentelemetry-proto's messages) and real `jina-wasm flow` processes
//! exporting to it. One request through a 2-shard Pod and a singleton Pod is
//! one trace whose spans form the expected tree (gateway; head; one Pea call
//! per shard; tail; the singleton's Pea call), with the THREAD backend and
//! with the PROCESS one (the context crosses ZeroMQ into child processes,
//! which export their own spans); a client's `traceparent` (HTTP header or
//! gRPC metadata) is continued; a
//! collector that never answers neither fails nor stalls requests, nor the
//! Flow's stop.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use serde_json::{Value, json};

use crate::util::{http, wasm};

/// A span as the receiver got it: ids in hex, string and int attributes,
/// the exporting process's service name.
#[derive(Debug, Clone)]
struct Got {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
    service: String,
    error: bool,
}

/// An OTLP/HTTP trace receiver on 127.0.0.1, in this process.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Got>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let store = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let store = store.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body.as_ref())
                        .expect("the exporter sends an ExportTraceServiceRequest");
                    store.lock().unwrap().extend(received(request));
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Collector {
            port,
            spans,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of `trace` once there are `n` of them (waits, up to 30 s).
    fn trace(&self, trace: &str, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Got> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace == trace)
                .cloned()
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gateway span of request `id` (waits, up to 30 s).
    fn gateway(&self, id: &str) -> Got {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| {
                    s.name == "gateway"
                        && s.attributes.get("request.id").map(String::as_str) == Some(id)
                })
                .cloned();
            if let Some(span) = found {
                return span;
            }
            assert!(
                Instant::now() < deadline,
                "no gateway span for request {id}; got {:#?}",
                self.spans.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn received(request: ExportTraceServiceRequest) -> Vec<Got> {
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    };
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Got {
                    trace: hex::encode(&span.trace_id),
                    id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                    service: service.clone(),
                    // STATUS_CODE_ERROR
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                });
            }
        }
    }
    out
}

/// A `jina-wasm flow` process, killed on drop.
struct Flow {
    child: Child,
    port: u16,
    ready: Value,
    _dir: tempfile::TempDir,
}

impl Flow {
    fn start(yaml: &str, args: &[&str]) -> Flow {
        let dir = tempfile::tempdir().unwrap();
        let guests = wasm("passthrough").parent().unwrap().to_path_buf();
        let file = dir.path().join("flow.yml");
        std::fs::write(&file, yaml.replace("{W}", guests.to_str().unwrap())).unwrap();
        let mut child = crate::util::jina_command()
            .args(["flow", "--uses"])
            .arg(&file)
            .args(args)
            .env("JINA_WASM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready line ({e}): {line}"));
        Flow {
            child,
            port: ready["port"].as_u64().unwrap() as u16,
            ready,
            _dir: dir,
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Pod of two shards, then a singleton Pod.
fn flow_yaml(endpoint: &str) -> String {
    format!(
        "with:\n  tracing: true\n  traces_endpoint: {endpoint}\npods:\n  - name: shards\n    uses: {{W}}/passthrough.wasm\n    shards: 2\n  - name: one\n    uses: {{W}}/passthrough.wasm\n"
    )
}

/// Eight documents: both shards get some.
fn docs() -> Value {
    json!({"data": (0..8).map(|i| json!({"id": format!("d{i}"), "text": "x"})).collect::<Vec<_>>()})
}

/// POSTs `docs()` to /index, with `traceparent` if given; the request id.
fn request(port: u16, traceparent: Option<&str>) -> String {
    let mut post = http()
        .post(format!("http://127.0.0.1:{port}/index"))
        .timeout(Duration::from_secs(30))
        .json(&docs());
    if let Some(value) = traceparent {
        post = post.header("traceparent", value);
    }
    let response = post.send().unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().unwrap();
    answer["header"]["requestId"].as_str().unwrap().to_string()
}

/// The spans of one request: gateway → head → (a Pea call per shard, tail),
/// and gateway → the singleton's Pea call; one trace id, every parent right.
fn check_tree(collector: &Collector, id: &str) -> Got {
    let gateway = collector.gateway(id);
    let spans = collector.trace(&gateway.trace, 6);
    let names = |parent: &str| {
        let mut names: Vec<String> = spans
            .iter()
            .filter(|s| s.parent == parent)
            .map(|s| format!("{} {}", s.name, s.attributes["pea"]))
            .collect();
        names.sort();
        names
    };
    assert_eq!(spans.len(), 6, "{spans:#?}");
    assert_eq!(
        names(&gateway.id),
        ["head shards/head", "pea one"],
        "{spans:#?}"
    );
    let head = spans.iter().find(|s| s.name == "head").unwrap();
    assert_eq!(head.attributes["parts"], "2");
    assert_eq!(
        names(&head.id),
        [
            "pea shards/shard-0",
            "pea shards/shard-1",
            "tail shards/tail"
        ],
        "{spans:#?}"
    );
    let mut docs = 0;
    for pea in spans.iter().filter(|s| s.name == "pea") {
        assert_eq!(pea.attributes["endpoint"], "/index");
        assert_eq!(pea.attributes["outcome"], "handled");
        assert!(!pea.error);
        if pea.attributes["pea"] != "one" {
            docs += pea.attributes["documents"].parse::<u32>().unwrap();
        } else {
            assert_eq!(pea.attributes["documents"], "8");
        }
    }
    assert_eq!(docs, 8, "the shards' calls share the documents");
    assert_eq!(gateway.attributes["status"], "success");
    assert_eq!(gateway.attributes["documents"], "8");
    gateway
}

#[test]
fn one_request_through_a_sharded_pod_is_one_tree() {
    let collector = Collector::start();
    let flow = Flow::start(&flow_yaml(&collector.endpoint()), &[]);
    let id = request(flow.port, None);
    let gateway = check_tree(&collector, &id);
    assert_eq!(
        gateway.parent, "",
        "without a traceparent, the gateway is the root"
    );

    // A client's trace is continued: same trace id, the gateway under its span.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = request(flow.port, Some(traceparent));
    let gateway = check_tree(&collector, &id);
    assert_eq!(gateway.trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(gateway.parent, "00f067aa0ba902b7");

    // Not sampled by the client: nothing recorded, the request still served.
    let unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    request(flow.port, Some(unsampled));
    let id = request(flow.port, None);
    collector.gateway(&id);
    assert!(
        collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.trace != "5bf92f3577b34da6a3ce929d0e0e4736"),
        "an unsampled trace records nothing"
    );
}

#[test]
fn the_trace_crosses_into_pea_processes() {
    let collector = Collector::start();
    let flow = Flow::start(
        &flow_yaml(&collector.endpoint()),
        &["--runtime-backend", "PROCESS"],
    );
    let id = request(flow.port, None);
    let gateway = check_tree(&collector, &id);
    let spans = collector.trace(&gateway.trace, 6);
    // Each shard's Pea process exported its own spans, as its own service
    // (a one-Pea Pod runs in the Flow's process).
    let shards: Vec<&Got> = spans
        .iter()
        .filter(|s| s.name == "pea" && s.attributes["pea"] != "one")
        .collect();
    assert_eq!(shards.len(), 2);
    for pea in shards {
        assert_eq!(pea.service, pea.attributes["pea"], "{pea:#?}");
    }
    assert_eq!(gateway.service, "jina-wasm");
}

/// The gRPC gateway continues a client's `traceparent` metadata too.
#[test]
fn a_grpc_clients_traceparent_is_continued() {
    use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    let collector = Collector::start();
    let yaml = flow_yaml(&collector.endpoint()).replace(
        "with:\n",
        "with:\n  protocol: [http, grpc]\n  port: [0, 0]\n",
    );
    let flow = Flow::start(&yaml, &[]);
    let port = flow.ready["ports"]["grpc"].as_u64().unwrap();
    let docs: Vec<jina_wasm::Document> = (0..8)
        .map(|i| jina_wasm::Document {
            id: format!("d{i}"),
            text: Some("x".into()),
            ..Default::default()
        })
        .collect();
    let mut request = crate::grpc_request::grpc_request("grpc-1", &docs);
    request.header.as_mut().unwrap().exec_endpoint = Some("/index".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert(
            "traceparent",
            "00-6bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        JinaSingleDataRequestRpcClient::new(channel)
            .process_single_data(request)
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(answer.header.unwrap().status.unwrap().code, 0);
    let gateway = check_tree(&collector, "grpc-1");
    assert_eq!(gateway.trace, "6bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(gateway.parent, "10f067aa0ba902b7");
    assert_eq!(gateway.attributes["rpc.system"], "grpc");
}

/// A collector that takes connections and never answers: every request is
/// still answered at once (the client gives each 3 s, under the exporter's
/// 5 s timeout), and the Flow stops on SIGTERM within its flush limit.
#[test]
fn a_collector_that_never_answers_slows_nothing() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut flow = Flow::start(&flow_yaml(&endpoint), &[]);
    for i in 0..300 {
        let response = http()
            .post(format!("http://127.0.0.1:{}/index", flow.port))
            .timeout(Duration::from_secs(3))
            .json(&json!({"data": [{"id": format!("x{i}"), "text": "x"}]}))
            .send()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status(), 200, "request {i}");
    }
    assert!(crate::util::signal(
        flow.child.id(),
        rustix::process::Signal::TERM
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = flow.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Flow did not stop with its collector silent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
}
