//! What a client claims and what a guest returns, end to end (issue 15,
//! classes 2, 4, 5, 7 and 8): each test drives the real binary, real guests
//! and real sockets, and shows the hostile case refused by name while the
//! process keeps serving. docs/sandbox.md ("Threat model: clients and guest
//! output") lists each guarantee beside its test here.
//!
//! - depth: a guest (tests/guests/misbehave `/deep`) or a client builds a tree
//!   at `MAX_DEPTH` (served), one level past it and 5,000 levels deep
//!   (refused, no crash) through `run`, a Pea, a Pod with `polling: all`, a
//!   Flow's gateway and `client`;
//! - request ids: clients that send the same id get their own documents,
//!   through a Flow's gateway and straight to a Pod's sockets;
//! - numbers: durations past the cap are clean errors, never a panic;
//! - Flow size: a Flow over `--max-peas` starts nothing;
//! - result size: `--max-result-bytes` is the limit a result meets, not
//!   wasmtime's 128 MiB copy limit.

use std::time::{Duration, Instant};

use jina_wasm::document::MAX_DEPTH;
use jina_wasm::executor::Sandbox;
use jina_wasm::wire::{Body, Envelope, Message, Status};
use jina_wasm::{Document, ExecutorError};
use serde_json::{Value, json};

use crate::cli::jina;
use crate::flow::{FlowProcess, post};
use crate::pea::{PeaProcess, client, documents, error_kind, request};
use crate::util::{text_doc, wasm};

/// A document with a chain of `levels` chunks below it, built without recursion.
fn chain(levels: usize) -> Document {
    let mut doc = text_doc("leaf", "the deepest");
    for i in 0..levels {
        doc = Document {
            id: format!("level-{i}"),
            chunks: vec![doc].into(),
            ..Default::default()
        };
    }
    doc
}

/// The same chain as JSON text.
fn chain_json(levels: usize) -> String {
    format!(
        "{}{{\"id\":\"leaf\"}}{}",
        r#"{"chunks":["#.repeat(levels),
        "]}".repeat(levels)
    )
}

/// Levels of `chunks`/`matches` below a document written as JSON.
fn json_depth(doc: &Value) -> usize {
    let mut stack = vec![(doc, 0)];
    let mut deepest = 0;
    while let Some((d, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for key in ["chunks", "matches"] {
            stack.extend(
                d[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| (c, depth + 1)),
            );
        }
    }
    deepest
}

fn deep(levels: usize) -> Message {
    Message::data(
        Envelope::request("/deep", json!({"levels": levels}).to_string()),
        &Body::from_documents(&[text_doc("d", "x")]),
    )
}

fn message_of(reply: &Message) -> String {
    match &reply.envelope.status {
        Status::Error { message, .. } => message.clone(),
        Status::Success => String::new(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `run`: at the limit the tree is printed; past it (by one, by 5,000) the
/// executor's output is refused as `invalid-output` and `run` exits 1, not
/// with a stack overflow.
#[test]
fn guest_built_depth_through_run() {
    let uses = wasm("misbehave");
    let run = |levels: usize| {
        let parameters = json!({"levels": levels}).to_string();
        jina(
            &[
                "run",
                "--uses",
                uses.to_str().unwrap(),
                "--endpoint",
                "/deep",
                "--parameters",
                &parameters,
            ],
            "x\n",
        )
    };
    let at = run(MAX_DEPTH);
    assert!(at.status.success(), "{}", text(&at.stderr));
    let doc: Value = serde_json::from_slice(&at.stdout).unwrap();
    assert_eq!(json_depth(&doc), MAX_DEPTH);
    for levels in [MAX_DEPTH + 1, 5000] {
        let past = run(levels);
        assert_eq!(
            past.status.code(),
            Some(1),
            "{levels}: {}",
            text(&past.stderr)
        );
        let stderr = text(&past.stderr);
        assert!(
            stderr.contains("invalid-output") && stderr.contains("more than 32 levels"),
            "{levels}: {stderr}"
        );
    }
    // A client's input past the limit is refused by line, before the executor runs.
    let input = format!("{}\n", chain_json(MAX_DEPTH + 1));
    let out = jina(
        &[
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--endpoint",
            "/echo",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("input line 1 is not a document: documents nest more than 32 levels"),
        "{}",
        text(&out.stderr)
    );
    let input = format!("{}\n", chain_json(MAX_DEPTH));
    let out = jina(
        &[
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--endpoint",
            "/echo",
        ],
        &input,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        json_depth(&serde_json::from_slice(&out.stdout).unwrap()),
        MAX_DEPTH
    );
}

/// A Pea: a deep result is `invalid-output` naming the Pea; a deep body sent
/// to it is `malformed`; at the limit both are served; it serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_built_depth_through_a_pea() {
    let pea = PeaProcess::start("misbehave", &["--name", "deep"]);
    let mut client = client(&pea).await;
    let reply = client.call(deep(MAX_DEPTH)).await.unwrap();
    assert_eq!(reply.envelope.status, Status::Success);
    assert_eq!(documents(&reply)[0].depth(), MAX_DEPTH);
    for levels in [MAX_DEPTH + 1, 5000] {
        let reply = client.call(deep(levels)).await.unwrap();
        assert_eq!(
            error_kind(&reply),
            ("deep".to_string(), "invalid-output".to_string()),
            "{levels}"
        );
        assert!(
            message_of(&reply).contains("more than 32 levels"),
            "{}",
            message_of(&reply)
        );
    }
    let reply = client
        .call(request("/echo", &[chain(MAX_DEPTH + 1)]))
        .await
        .unwrap();
    assert_eq!(error_kind(&reply).1, "malformed");
    let reply = client
        .call(request("/echo", &[chain(MAX_DEPTH)]))
        .await
        .unwrap();
    assert_eq!(documents(&reply)[0].depth(), MAX_DEPTH);
    client.close().await;
}

/// A Pod with `polling: all`: both shards' trees at the limit are merged by
/// the Tail; past it each shard's output is refused and the Pod process lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_built_depth_through_a_pod_polling_all() {
    let pod = crate::pod::pod(
        "misbehave",
        &["--name", "deep", "--shards", "2", "--polling", "all"],
    );
    let mut client = crate::pod::client(&pod).await;
    let reply = client.call(deep(MAX_DEPTH)).await.unwrap();
    assert_eq!(reply.envelope.status, Status::Success, "{}", pod.log());
    let docs = documents(&reply);
    assert_eq!(
        (docs.len(), docs[0].depth()),
        (1, MAX_DEPTH),
        "one merged copy of `deep`"
    );
    for levels in [MAX_DEPTH + 1, 5000] {
        let reply = client.call(deep(levels)).await.unwrap();
        assert_eq!(error_kind(&reply).1, "invalid-output", "{levels}");
        assert!(message_of(&reply).contains("more than 32 levels"));
    }
    let reply = client.call(deep(3)).await.unwrap();
    assert_eq!(documents(&reply)[0].depth(), 3, "the Pod serves on");
    client.close().await;
}

/// A Flow (a `polling: all` Pod of two shards behind the gateway) and the
/// `client` command: trees at the limit come back, deeper ones from the guest
/// are an executor error (HTTP 500), deeper ones from the client HTTP 422.
#[test]
fn depth_through_a_flow_and_client() {
    let flow = FlowProcess::start(
        "pods:\n  - name: deep\n    uses: {W}/misbehave.wasm\n    shards: 2\n    polling: all\n",
    );
    let port = flow.port();
    let ask = |levels: usize| {
        post(
            port,
            "/deep",
            &json!({"data": ["x"], "parameters": {"levels": levels}}),
        )
    };
    let (code, answer) = ask(MAX_DEPTH);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(json_depth(&answer["data"][0]), MAX_DEPTH);
    for levels in [MAX_DEPTH + 1, 5000] {
        let (code, answer) = ask(levels);
        assert_eq!(code, 500, "{answer}");
        assert_eq!(
            answer["header"]["status"]["exception"]["name"], "invalid-output",
            "{answer}"
        );
    }
    // From the client: at the limit echoed, past it refused before the Flow.
    let doc = |levels: usize| serde_json::from_str::<Value>(&chain_json(levels)).unwrap();
    let (code, answer) = post(port, "/echo", &json!({"data": [doc(MAX_DEPTH)]}));
    assert_eq!(
        (code, json_depth(&answer["data"][0])),
        (200, MAX_DEPTH),
        "{answer}"
    );
    let (code, answer) = post(port, "/echo", &json!({"data": [doc(MAX_DEPTH + 1)]}));
    assert_eq!(code, 422, "{answer}");
    let description = answer["header"]["status"]["description"].as_str().unwrap();
    assert!(
        description.contains("data[0] is not a document: documents nest more than 32 levels"),
        "{description}"
    );
    // The `client` command, through the same gateway.
    let port = port.to_string();
    let client = |levels: usize| {
        let parameters = json!({"levels": levels}).to_string();
        jina(
            &[
                "client",
                "--port",
                &port,
                "--endpoint",
                "/deep",
                "--parameters",
                &parameters,
            ],
            "x\n",
        )
    };
    let out = client(MAX_DEPTH);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        json_depth(&serde_json::from_slice(&out.stdout).unwrap()),
        MAX_DEPTH
    );
    let out = client(5000);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("invalid-output"),
        "{}",
        text(&out.stderr)
    );
    let (code, _) = post(flow.port(), "/echo", &json!({"data": ["still here"]}));
    assert_eq!(code, 200, "the Flow serves on");
}

/// Clients that send the same `header.request_id` at the same time each get
/// their own documents and their own id back: inside the Flow requests are
/// known by ids the gateway mints.
#[test]
fn clients_with_the_same_request_id_get_their_own_documents() {
    let flow = FlowProcess::start(
        "with:\n  prefetch: 8\npods:\n  - name: slow\n    uses: {W}/misbehave.wasm\n",
    );
    let port = flow.port();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"data": [{"id": format!("c{i}"), "text": format!("secret of client {i}")}],
                    "exec_endpoint": "/sleep", "parameters": {"ms": 150}, "header": {"request_id": "same"}});
                (i, post(port, "/post", &body))
            })
        })
        .collect();
    for handle in clients {
        let (i, (code, answer)) = handle.join().unwrap();
        assert_eq!(code, 200, "client {i}: {answer}");
        assert_eq!(
            answer["header"]["requestId"], "same",
            "client {i}: its own id is echoed"
        );
        let texts: Vec<&str> = answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            [format!("secret of client {i}")],
            "client {i} got another client's documents"
        );
    }
}

/// Senders talking ZeroMQ to a Pod directly (no gateway to mint ids) reuse
/// one request id for requests in flight at once, in a sharded Pod and one
/// with `polling: all`: each request gets its own answer with its own
/// documents and the id it was sent with; the Head keys its bookkeeping by
/// ids it mints, never the sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_reusing_a_request_id_at_a_pod_get_their_own_answers() {
    use jina_wasm::transport::Link;
    for polling in ["any", "all"] {
        let pod = crate::pod::pod(
            "misbehave",
            &["--name", "same", "--shards", "2", "--polling", polling],
        );
        // Raw sockets: a `Client` matches answers by id, which is the point here.
        let target = jina_wasm::client::Target::pea(&pod.addr("in"), &pod.addr("out"));
        let mut output = Link::open(target.socket_out, &target.output, "receiver")
            .await
            .unwrap();
        let input = Link::open(target.socket_in, &target.input, "sender")
            .await
            .unwrap();
        let senders = ["a", "b", "c"];
        for who in senders {
            let docs: Vec<Document> = (0..4)
                .map(|i| text_doc(&format!("{who}{i}"), &format!("secret of {who}")))
                .collect();
            let mut envelope = Envelope::request("/sleep", json!({"ms": 150}).to_string());
            envelope.request_id = "same".into();
            let message = Message::data(envelope, &Body::from_documents(&docs));
            input.send(message.frames().to_vec()).await.unwrap();
        }
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.len() < senders.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(frames)) = tokio::time::timeout(left, output.recv()).await else {
                panic!(
                    "{polling}: {} of {} answers: {answers:?}\n{}",
                    answers.len(),
                    senders.len(),
                    pod.log()
                );
            };
            let reply = Message::from_frames(&frames).unwrap();
            assert_eq!(reply.envelope.status, Status::Success, "{polling}");
            assert_eq!(
                reply.envelope.request_id, "same",
                "{polling}: the sender's id"
            );
            let mut texts: Vec<String> = documents(&reply)
                .into_iter()
                .map(|d| d.text.unwrap_or_default())
                .collect();
            texts.dedup();
            answers.push(texts);
        }
        answers.sort();
        let expected: Vec<Vec<String>> = senders
            .iter()
            .map(|who| vec![format!("secret of {who}")])
            .collect();
        assert_eq!(
            answers, expected,
            "{polling}: each answer holds one sender's documents"
        );
        input.close(Duration::from_millis(100)).await;
        output.close(Duration::from_millis(100)).await;
    }
}

/// Durations past the cap are refused with a message (exit 2, clap's), not a
/// panic (exit 101): on the command line and in a Flow file.
#[test]
fn durations_past_the_cap_are_clean_errors() {
    let uses = wasm("misbehave");
    let huge = "10000000000000000000s";
    for args in [
        vec![
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--timeout-init",
            huge,
        ],
        vec![
            "pea",
            "--uses",
            uses.to_str().unwrap(),
            "--dump-interval",
            huge,
        ],
        vec![
            "pea",
            "--uses",
            uses.to_str().unwrap(),
            "--timeout-request",
            "9999999999h",
        ],
        vec![
            "pod",
            "--uses",
            uses.to_str().unwrap(),
            "--memory-hwm",
            "99999999999999999999",
        ],
    ] {
        let out = jina(&args, "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("over the longest this host accepts, 365 days")
                || stderr.contains("over the largest this host accepts"),
            "{args:?}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    std::fs::write(&file, format!("with:\n  timeout: {huge}\npods:\n  - name: a\n    uses: {}\n    timeout_init: {huge}\n", uses.display())).unwrap();
    let out = jina(&["flow", "--uses", file.to_str().unwrap()], "");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("over the longest this host accepts, 365 days"),
        "{stderr}"
    );
}

/// A Flow with more Peas than `--max-peas` (default 64) is refused before
/// anything starts, naming the count and the flag; at the limit it runs.
#[test]
fn a_flow_over_its_pea_cap_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let uses = wasm("passthrough").display().to_string();
    let pods = |n: usize, key: &str, count: usize, uses: &str| -> String {
        (0..n)
            .map(|i| format!("  - name: p{i}\n    uses: {uses}\n    {key}: {count}\n"))
            .collect()
    };
    let big = dir.path().join("big.yml");
    std::fs::write(&big, format!("pods:\n{}", pods(10_000, "shards", 1, &uses))).unwrap();
    let started = Instant::now();
    let out = jina(&["flow", "--uses", big.to_str().unwrap()], "");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the Flow would start 10000 Peas, over its limit of 64 (raise it with --max-peas"
        ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "refused before anything started"
    );
    let sharded = dir.path().join("sharded.yml");
    std::fs::write(&sharded, format!("pods:\n{}", pods(2, "shards", 3, &uses))).unwrap();
    let out = jina(
        &[
            "flow",
            "--uses",
            sharded.to_str().unwrap(),
            "--max-peas",
            "5",
        ],
        "",
    );
    assert!(
        text(&out.stderr).contains("would start 6 Peas, over its limit of 5"),
        "{}",
        text(&out.stderr)
    );
    let out = jina(&["flow", "check", sharded.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "6 is under the default: {}",
        text(&out.stderr)
    );
    // `with.max_peas` at exactly the count: the Flow starts and serves.
    let flow = FlowProcess::start(&format!(
        "with:\n  max_peas: 6\npods:\n{}",
        pods(2, "parallel", 3, "{W}/passthrough.wasm")
    ));
    let (code, answer) = post(flow.port(), "/post", &json!({"data": ["x"]}));
    assert_eq!(code, 200, "{answer}");
}

fn big_result(sandbox: Sandbox, floats: usize) -> Result<Body, ExecutorError> {
    let mut executor = crate::util::start("misbehave", Value::Null, sandbox);
    let body = Body::from_documents(&[text_doc("d", "x")]);
    executor.handle_body(
        "/big-embedding",
        &body,
        &json!({"n": floats}).to_string(),
        None,
    )
}

/// `--max-result-bytes` is the limit a result meets: 144 MB of embedding,
/// past wasmtime's default 128 MiB copy limit, comes back under the default
/// 256 MiB cap; under a cap the copy limit follows from it and the error names
/// both flags; a result just over a small cap is `result-too-large` by it.
#[test]
fn max_result_bytes_is_the_real_limit() {
    const FLOATS: usize = 36_000_000;
    let body = big_result(Sandbox::default(), FLOATS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body.embeddings.len(), FLOATS);
    drop(body);
    let small = Sandbox {
        max_result_bytes: 1 << 20,
        max_result_docs: 1000,
        ..Sandbox::default()
    };
    let error = big_result(small.clone(), FLOATS).unwrap_err();
    assert_eq!(error.kind.as_str(), "result-too-large", "{error}");
    assert!(
        error
            .message
            .contains("--max-result-bytes 1 MiB and --max-result-docs 1000"),
        "{error}"
    );
    let error = big_result(small, 300_000).unwrap_err();
    assert_eq!(error.kind.as_str(), "result-too-large", "{error}");
    assert!(
        error
            .message
            .contains("over its limit of 1 MiB (--max-result-bytes)"),
        "{error}"
    );
}

/// Found by a hostile test: a NaN in an embedding (JSON `null` reads as NaN)
/// was stored by vector-indexer and then ranked first for every query. Now
/// `/index` and `/search` refuse a non-finite vector, naming the document.
#[test]
fn non_finite_embeddings_are_refused_by_the_indexer() {
    let ws = tempfile::tempdir().unwrap();
    let indexer = crate::util::wasm("vector-indexer");
    let run = |endpoint: &str, input: &str| {
        crate::cli::jina(
            &[
                "run",
                "--uses",
                indexer.to_str().unwrap(),
                "--workspace",
                ws.path().to_str().unwrap(),
                "--endpoint",
                endpoint,
            ],
            input,
        )
    };
    let out = run(
        "/index",
        "{\"id\": \"a1\", \"embedding\": [1, 2, 3, 4]}\n{\"id\": \"c3\", \"embedding\": [null, 1, 2, 3]}\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("doc \"c3\" has a non-finite value at position 0 of its embedding"),
        "{stderr}"
    );
    let out = run(
        "/search",
        "{\"id\": \"q\", \"embedding\": [1, null, 3, 4]}\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("query \"q\" has a non-finite value at position 1"),
        "{stderr}"
    );
}
