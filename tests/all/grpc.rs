//! The gateway's gRPC side (docs/grpc.md) with the real Jina 3.34 client on
//! its default protocol: one Python process runs every check against two
//! Flows that serve HTTP and gRPC side by side (see
//! tests/interop/jina_client/jina_grpc_client.py for what each check does).

use crate::flow::{FlowProcess, post};

/// The hashing demo Flow with `protocol: [http, grpc]`, its workspace in the
/// Flow's temporary directory.
fn demo_flow() -> FlowProcess {
    let yaml = std::fs::read_to_string("examples/flows/text-search-hashing.yml")
        .unwrap()
        .replace("../../target/wasm32-wasip2/release", "{W}")
        .replace("../../target/demo-workspace", "workspace")
        .replace(
            "with:\n  timeout: 60s\n",
            "with:\n  timeout: 60s\n  protocol: [http, grpc]\n  port: [0, 0]\n",
        );
    assert!(yaml.contains("protocol: [http, grpc]"), "{yaml}");
    FlowProcess::start(&yaml)
}

fn grpc_port(flow: &FlowProcess) -> u16 {
    flow.ready["ports"]["grpc"].as_u64().unwrap() as u16
}

#[test]
fn the_jina_client_speaks_grpc_to_the_gateway() {
    let python = crate::util::python_venv(
        "jina-client-venv",
        "tests/interop/jina_client/requirements.txt",
    );
    let demo = demo_flow();
    let echo = FlowProcess::start(
        "with:\n  protocol: [grpc, http]\npods:\n  - name: bad\n    uses: {W}/misbehave.wasm\n",
    );
    // The ready line names both protocols; the first listed is `gateway`.
    for flow in [&demo, &echo] {
        let gateways = &flow.ready["gateways"];
        assert!(
            gateways["http"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:")
                && gateways["grpc"]
                    .as_str()
                    .unwrap()
                    .starts_with("grpc://127.0.0.1:"),
            "{}",
            flow.ready
        );
    }
    assert_eq!(echo.ready["gateway"], echo.ready["gateways"]["grpc"]);
    assert_eq!(demo.ready["gateway"], demo.ready["gateways"]["http"]);
    let out = std::process::Command::new(python)
        .arg("tests/interop/jina_client/jina_grpc_client.py")
        .args(["--demo-port", &grpc_port(&demo).to_string()])
        .args(["--echo-port", &grpc_port(&echo).to_string()])
        .env("JINA_OPTOUT_TELEMETRY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("jina grpc client ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "ready",
        "index",
        "search",
        "callbacks",
        "error",
        "stream",
        "async",
        "deadline",
        "garbage",
        "still",
    ] {
        assert!(
            stdout.contains(&format!("ok: {check}:")),
            "{check}: {stdout}"
        );
    }
    // HTTP on the same Flow sees what gRPC indexed.
    let (code, answer) = post(
        demo.ready["ports"]["http"].as_u64().unwrap() as u16,
        "/search",
        &serde_json::json!({"data": [{"text": "what makes writes survive a crash"}], "parameters": {"top_k": 1}}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["data"][0]["matches"][0]["id"], "databases-2",
        "{answer}"
    );
}

#[test]
fn protocols_and_ports_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    for (with, error) in [
        (
            "protocol: [http, grpc]\n  port: 8080",
            "1 ports ([8080]) for 2 protocols (http, grpc): give one port per protocol",
        ),
        ("protocol: [grpc, grpc]", "protocol `grpc` is listed twice"),
        ("protocol: websocket", "unknown variant `websocket`"),
    ] {
        std::fs::write(
            &file,
            format!(
                "with:\n  {with}\npods:\n  - name: p\n    uses: {}\n",
                crate::util::wasm("passthrough").display()
            ),
        )
        .unwrap();
        let out = crate::util::jina_command()
            .args(["flow", "check"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(1) && stderr.contains(error),
            "{with}: {stderr}"
        );
    }
}

use crate::grpc_request::grpc_request;

/// Found by a hostile test: three `Call` streams whose clients never read
/// their (large) answers held every one of the gateway's slots into the
/// Flow, so every other gRPC client timed out. Each request now runs in a task
/// of its own and gives its slot back when the Flow answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_do_not_starve_the_others() {
    use jina_wasm::flow::grpc::pb::jina::jina_rpc_client::JinaRpcClient;
    use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    let flow = FlowProcess::start(
        "with:\n  protocol: grpc\npods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n",
    );
    let port = grpc_port(&flow);
    let channel = || async move {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    // About 1 MB an answer: a few fill the client's HTTP/2 window.
    let big = grpc_request(
        "r",
        &[jina_wasm::Document {
            id: "big".into(),
            embedding: Some(vec![0.5; 250_000]),
            ..Default::default()
        }],
    );
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut client = JinaRpcClient::new(channel().await).max_decoding_message_size(64 << 20);
        let requests = futures::stream::iter(std::iter::repeat_n(big.clone(), 40));
        // The answers' stream is kept, and never read.
        stalled.push(client.call(requests).await.unwrap().into_inner());
    }
    let mut good = JinaSingleDataRequestRpcClient::new(channel().await);
    let small = grpc_request(
        "r",
        &[jina_wasm::Document {
            id: "small".into(),
            text: Some("hello".into()),
            ..Default::default()
        }],
    );
    for _ in 0..3 {
        let mut request = tonic::Request::new(small.clone());
        request.set_timeout(std::time::Duration::from_secs(10));
        let answer = good
            .process_single_data(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.header.unwrap().status.unwrap().code,
            0,
            "a well-behaved client beside three that do not read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    drop(stalled);
}

/// The real Jina client discovers the Flow's endpoints both ways: gRPC
/// `endpoint_discovery` answers the union of what the executors declare
/// (with `__default__`: the segmenter and encoder take any endpoint), and the
/// HTTP client reads `/openapi.json` and posts `/index` and `/search` on
/// their own paths.
#[test]
fn endpoint_discovery_lists_the_declared_endpoints() {
    let python = crate::util::python_venv(
        "jina-client-venv",
        "tests/interop/jina_client/requirements.txt",
    );
    let flow = demo_flow();
    let out = std::process::Command::new(python)
        .arg("tests/interop/jina_client/jina_endpoints.py")
        .args([
            "--http-port",
            &flow.ready["ports"]["http"].to_string(),
            "--grpc-port",
            &grpc_port(&flow).to_string(),
        ])
        .env("JINA_OPTOUT_TELEMETRY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        result["grpc"],
        serde_json::json!([
            "/index",
            "/search",
            "/delete",
            "/export",
            "/import",
            "__default__"
        ]),
        "{result}"
    );
    assert_eq!(
        result["http"],
        serde_json::json!(["delete", "export", "import", "index", "post", "search"]),
        "{result}"
    );
    assert_eq!(result["searched"], 1, "{result}");
}

/// Found by a hostile test: the gRPC port kept every connection that never
/// spoke (20,000 of them ran the process out of descriptors). It now closes a
/// connection silent for `--http-idle-timeout` and serves live clients on.
#[test]
fn silent_connections_to_the_grpc_port_are_closed() {
    use std::io::{BufRead, Read, Write};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    std::fs::write(
        &file,
        format!(
            "with:\n  protocol: grpc\npods:\n  - name: echo\n    uses: {}\n",
            crate::util::wasm("passthrough").display()
        ),
    )
    .unwrap();
    let mut child = crate::util::jina_command()
        .args(["flow", "--http-idle-timeout", "1s", "--uses"])
        .arg(&file)
        .env("JINA_WASM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    /// Kills the Flow however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let flow = Killed(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = ready["ports"]["grpc"].as_u64().unwrap() as u16;
    // Half a preface, and nothing at all: both closed after about a second.
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    for mut stream in [half, silent] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "still open after {took:?}");
    // A live client is served, also after more than the timeout of its own silence.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = JinaSingleDataRequestRpcClient::new(channel);
        let small = grpc_request("r", &[jina_wasm::Document {
            id: "small".into(),
            text: Some("hello".into()),
            ..Default::default()
        }]);
        for pause in [0, 2500] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let answer = client
                .process_single_data(small.clone())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answer.header.unwrap().status.unwrap().code, 0);
        }
    });
    drop(flow);
}

/// The gRPC gateway checks what the HTTP one checks, before anything enters
/// the Flow: an endpoint no executor could declare, and a request id too long
/// to echo or log (it is neither), each answered `bad-request` naming it; a
/// good request on the same connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_endpoints_are_checked_as_over_http() {
    use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    let flow = FlowProcess::start(
        "with:\n  protocol: grpc\npods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n",
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", grpc_port(&flow)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = JinaSingleDataRequestRpcClient::new(channel);
    let docs = [jina_wasm::Document {
        id: "a".into(),
        text: Some("hello".into()),
        ..Default::default()
    }];
    let long_id = grpc_request(&"x".repeat(3000), &docs);
    let mut bad_endpoint = grpc_request("r", &docs);
    bad_endpoint.header.as_mut().unwrap().exec_endpoint = Some("index\n".into());
    for (request, says) in [
        (long_id, "`header.request_id` is 3000 bytes, more than 256"),
        (
            bad_endpoint,
            "it starts with `/` and has no control characters",
        ),
    ] {
        let answer = client
            .process_single_data(request)
            .await
            .unwrap()
            .into_inner();
        let header = answer.header.unwrap();
        let status = header.status.unwrap();
        let exception = status.exception.clone().unwrap();
        assert_eq!(exception.name, "bad-request", "{exception:?}");
        assert!(
            status.description.contains(says) || exception.args.iter().any(|a| a.contains(says)),
            "{status:?}"
        );
        assert!(header.request_id.len() <= 256, "not echoed");
    }
    let answer = client
        .process_single_data(grpc_request("r", &docs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.header.unwrap().status.unwrap().code, 0);
}

/// Hostile pass 3: an answer nested past what protobuf clients decode (H3-9)
/// comes back as an error status the client reads, and a root with 100,000
/// chunks (H3-2) and a float64 embedding past f32 (H3-10) are refused by
/// name, with a real (prost) client.
#[tokio::test(flavor = "multi_thread")]
async fn answers_and_requests_past_the_grpc_limits_are_refused_by_name() {
    use jina_wasm::flow::grpc::pb::docarray::{
        DenseNdArrayProto, DocListProto, DocProto, NdArrayProto, NodeProto, node_proto::Content,
    };
    use jina_wasm::flow::grpc::pb::jina::data_request_proto::{
        DataContentProto, data_content_proto::Documents,
    };
    use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    let flow = FlowProcess::start(
        "with:\n  protocol: grpc\npods:\n  - name: deep\n    uses: {W}/misbehave.wasm\n",
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", grpc_port(&flow)))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut client = JinaSingleDataRequestRpcClient::new(channel);
    let node = |content| NodeProto {
        content: Some(content),
        docarray_type: None,
    };
    let with_docs = |endpoint: &str, docs: Vec<DocProto>, levels: Option<f64>| {
        let mut request = grpc_request("r", &[]);
        request.header.as_mut().unwrap().exec_endpoint = Some(endpoint.into());
        request.data = Some(DataContentProto {
            documents: Some(Documents::Docs(DocListProto { docs })),
        });
        request.parameters = levels.map(|n| prost_types::Struct {
            fields: [(
                "levels".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(n)),
                },
            )]
            .into(),
        });
        request
    };
    let root = DocProto {
        data: [(
            "chunks".to_owned(),
            node(Content::DocArray(DocListProto {
                docs: vec![DocProto::default(); 100_000],
            })),
        )]
        .into(),
    };
    let embedding = DocProto {
        data: [(
            "embedding".to_owned(),
            node(Content::Ndarray(NdArrayProto {
                dense: Some(DenseNdArrayProto {
                    buffer: 1e300f64.to_le_bytes().to_vec(),
                    shape: vec![1],
                    dtype: "<f8".into(),
                }),
                parameters: None,
            })),
        )]
        .into(),
    };
    for (request, kind, says) in [
        (
            with_docs("/deep", Vec::new(), Some(24.0)),
            "invalid-output",
            "nests protobuf messages 102 deep, more than the 100 a protobuf client reads",
        ),
        (
            with_docs("/", vec![root], None),
            "bad-request",
            "the request has 100001 documents",
        ),
        (
            with_docs("/", vec![embedding], None),
            "bad-request",
            "docs[0].embedding[0] = 1e300 does not fit a 32-bit float",
        ),
    ] {
        let answer = client
            .process_single_data(request)
            .await
            .expect("a readable answer")
            .into_inner();
        let status = answer.header.unwrap().status.unwrap();
        let exception = status.exception.clone().unwrap();
        assert_eq!(exception.name, kind, "{exception:?}");
        assert!(
            exception.args.iter().any(|a| a.contains(says)),
            "{status:?}"
        );
    }
    // 23 levels still come back.
    let answer = client
        .process_single_data(with_docs("/deep", Vec::new(), Some(23.0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.header.unwrap().status.unwrap().code, 0);
}

/// Found by the last review: 8 streams of one connection that each declared
/// a 4 MB message and sent a KiB of it held the gateway's whole 32 MiB of
/// pending bytes (and, trickling at the 16 KiB/s floor, would for 4
/// minutes): every other client's large request waited. A connection now
/// holds at most a quarter (`guard::CONNECTION_SHARE`); its other streams wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_hold_every_clients_pending_bytes() {
    use jina_wasm::flow::grpc::pb::jina::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient;
    use tonic::codegen::http;
    let flow = FlowProcess::start(
        "with:\n  protocol: grpc\npods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n",
    );
    let port = grpc_port(&flow);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut hostile, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut held = Vec::new();
    for _ in 0..8 {
        let request = http::Request::post(format!(
            "http://127.0.0.1:{port}/jina.JinaSingleDataRequestRPC/process_single_data"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        hostile = hostile.ready().await.unwrap();
        let (answer, mut stream) = hostile.send_request(request, false).unwrap();
        let mut first = vec![0];
        first.extend_from_slice(&4_000_000u32.to_be_bytes());
        first.extend_from_slice(&[0; 1024]);
        stream.send_data(first.into(), false).unwrap();
        held.push((answer, stream));
    }
    // The gateway reads the 8 prefixes (and, before, took 8 × 4 MB).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut good = JinaSingleDataRequestRpcClient::new(channel);
    // 3.5 MB: more than the 1.5 MiB the 8 streams used to leave.
    let big = grpc_request(
        "r",
        &[jina_wasm::Document {
            id: "big".into(),
            embedding: Some(vec![0.5; 875_000]),
            ..Default::default()
        }],
    );
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        good.process_single_data(big),
    )
    .await
    .expect("a client beside a connection holding its share is answered")
    .unwrap()
    .into_inner();
    assert_eq!(answer.header.unwrap().status.unwrap().code, 0);
    drop(held);
    driver.abort();
}
