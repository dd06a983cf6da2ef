//! `jina-wasm pod` processes: shards that partition writes and merge searches,
//! replicas balanced by credit, failures that name the shard, workspaces that
//! refuse another shard's data, both runtime backends.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::control;
use jina_wasm::Document;
use jina_wasm::client::{Client, Target};
use jina_wasm::pod::shard_of;
use jina_wasm::wire::{Body, Envelope, Message, Status};
use serde_json::{Value, json};

use crate::pea::{PeaProcess, status_until};
use crate::util::wasm;

/// A pod process: the same harness as a Pea, with `pod` as the command.
pub(crate) fn pod(guest: &str, args: &[&str]) -> PeaProcess {
    let mut all = vec!["--pod"];
    all.extend_from_slice(args);
    PeaProcess::start(guest, &all)
}

pub(crate) fn try_pod(guest: &str, args: &[&str]) -> Result<PeaProcess, String> {
    let mut all = vec!["--pod"];
    all.extend_from_slice(args);
    PeaProcess::try_start(guest, &all)
}

pub(crate) async fn client(p: &PeaProcess) -> Client {
    let mut client = Client::open(&Target::pea(&p.addr("in"), &p.addr("out")))
        .await
        .unwrap();
    client.timeout = Duration::from_secs(60);
    client
}

pub(crate) fn message(endpoint: &str, parameters: Value, docs: &[Document]) -> Message {
    Message::data(
        Envelope::request(endpoint, parameters.to_string()),
        &Body::from_documents(docs),
    )
}

pub(crate) fn documents(reply: &Message) -> Vec<Document> {
    reply.decode_body().unwrap().into_documents().unwrap()
}

/// `n` documents with deterministic 8-dim embeddings.
pub(crate) fn corpus(n: usize) -> Vec<Document> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f32 / 10_000.0 - 0.5
    };
    (0..n)
        .map(|i| Document {
            id: format!("doc-{i}"),
            embedding: Some((0..8).map(|_| next()).collect()),
            ..Default::default()
        })
        .collect()
}

pub(crate) async fn index(client: &mut Client, docs: &[Document]) {
    let requests: Vec<Message> = docs
        .chunks(100)
        .map(|c| message("/index", json!({}), c))
        .collect();
    client
        .stream(requests, |reply| {
            assert_eq!(
                reply.envelope.status,
                Status::Success,
                "{:?}",
                reply.envelope.status
            );
            Ok(())
        })
        .await
        .unwrap();
}

pub(crate) async fn search(client: &mut Client, queries: &[Document]) -> Vec<Vec<String>> {
    let reply = client
        .call(message("/search", json!({"top_k": 5}), queries))
        .await
        .unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );
    documents(&reply)
        .iter()
        .map(|q| q.matches.iter().map(|m| m.id.clone()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_partition_writes_and_merged_searches_equal_one_index() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let docs = corpus(3000);
    let queries: Vec<Document> = docs
        .iter()
        .step_by(97)
        .take(20)
        .map(|d| Document {
            id: format!("q-{}", d.id),
            ..d.clone()
        })
        .collect();

    let mut sharded = pod(
        "vector-indexer",
        &[
            "--name",
            "idx",
            "--shards",
            "2",
            "--workspace",
            ws,
            "--polling",
            "/index:any,/search:all",
        ],
    );
    let mut c = client(&sharded).await;
    index(&mut c, &docs).await;
    let merged = search(&mut c, &queries).await;
    let status = control(&sharded.addr("ctrl"), "STATUS").await.unwrap();
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["peas"].as_array().unwrap().len(), 2);
    c.close().await;
    control(&sharded.addr("ctrl"), "TERMINATE").await.unwrap();
    assert!(
        sharded
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{}",
        sharded.log()
    );

    // The same documents in one index.
    let single_ws = tempfile::tempdir().unwrap();
    let single = PeaProcess::start(
        "vector-indexer",
        &["--workspace", single_ws.path().to_str().unwrap()],
    );
    let mut c = client(&single).await;
    index(&mut c, &docs).await;
    assert_eq!(
        merged,
        search(&mut c, &queries).await,
        "the merged top-k differs from one index's"
    );
    c.close().await;

    // Each id is stored in exactly the shard its hash names: open each shard's
    // workspace read-only and look every document up.
    for shard in 0..2 {
        let dir = workspace.path().join(format!("idx/shard-{shard}"));
        // The identity is beside the shard's directory, out of its guest's reach.
        assert!(
            workspace
                .path()
                .join(format!("idx/shard-{shard}.json"))
                .is_file()
                && !dir.join(".jina-wasm-shard.json").exists()
        );
        let reader = PeaProcess::start(
            "vector-indexer",
            &["--workspace", dir.to_str().unwrap(), "--read-only"],
        );
        let mut c = client(&reader).await;
        for chunk in docs.chunks(250) {
            let reply = c
                .call(message("/search", json!({"top_k": 1}), chunk))
                .await
                .unwrap();
            for (doc, hit) in chunk.iter().zip(documents(&reply)) {
                let here = hit.matches.first().is_some_and(|m| m.id == doc.id);
                assert_eq!(
                    here,
                    shard_of(&doc.id, 2) == shard,
                    "{} in shard {shard}",
                    doc.id
                );
            }
        }
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_less_work() {
    let p = pod("misbehave", &["--name", "rep", "--parallel", "2"]);
    let mut c = client(&p).await;
    c.window = 4;
    let requests: Vec<Message> = (0..40)
        .map(|i| {
            message(
                "/only",
                json!({"who": "replica-0", "ms": 200}),
                &[Document {
                    id: i.to_string(),
                    ..Default::default()
                }],
            )
        })
        .collect();
    let mut handled = std::collections::HashMap::<String, usize>::new();
    c.stream(requests, |reply| {
        let doc = &documents(&reply)[0];
        *handled
            .entry(doc.tags["place"].as_str().unwrap().to_string())
            .or_default() += 1;
        Ok(())
    })
    .await
    .unwrap();
    let (slow, fast) = (
        handled.get("replica-0").copied().unwrap_or(0),
        handled.get("replica-1").copied().unwrap_or(0),
    );
    assert_eq!(slow + fast, 40);
    assert!(
        fast >= 3 * slow,
        "the slow replica took {slow} requests, the fast one {fast}"
    );
    c.close().await;

    // Round-robin takes turns whatever the load.
    let p = pod(
        "misbehave",
        &[
            "--name",
            "rr",
            "--parallel",
            "2",
            "--load-balancing",
            "round-robin",
        ],
    );
    let mut c = client(&p).await;
    let requests: Vec<Message> = (0..10)
        .map(|i| {
            message(
                "/only",
                json!({"who": "replica-0", "ms": 20}),
                &[Document {
                    id: i.to_string(),
                    ..Default::default()
                }],
            )
        })
        .collect();
    let mut slow = 0;
    c.stream(requests, |reply| {
        slow += usize::from(documents(&reply)[0].tags["place"] == "replica-0");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(slow, 5);
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shard_is_named_and_the_pod_keeps_serving() {
    for backend in ["THREAD", "PROCESS"] {
        let p = pod(
            "misbehave",
            &[
                "--name",
                "sh",
                "--shards",
                "2",
                "--polling",
                "all",
                "--timeout-request",
                "1s",
                "--runtime-backend",
                backend,
            ],
        );
        let mut c = client(&p).await;
        let doc = [Document {
            id: "x".into(),
            ..Default::default()
        }];
        let failed = |reply: &Message| match &reply.envelope.status {
            Status::Error { executor, kind, .. } => (executor.clone(), kind.to_string()),
            Status::Success => panic!(
                "{backend}: expected a failure, got success: {:?}\n{}",
                reply.envelope,
                p.log()
            ),
        };
        // A trap in one shard.
        let reply = c
            .call(message(
                "/only",
                json!({"who": "shard-1", "panic": true}),
                &doc,
            ))
            .await
            .unwrap();
        assert_eq!(
            failed(&reply),
            ("sh/shard-1".into(), "panic".into()),
            "{backend}"
        );
        // The part that succeeded is named: whoever sent a write knows it is
        // partly applied (docs/stateful.md).
        let why = |reply: &Message| match &reply.envelope.status {
            Status::Error { message, .. } => message.clone(),
            Status::Success => String::new(),
        };
        assert!(
            why(&reply).contains("(1 of 2 parts of this request succeeded, on sh/shard-0:"),
            "{backend}: {}",
            why(&reply)
        );
        // A shard slower than its time limit.
        let reply = c
            .call(message(
                "/only",
                json!({"who": "shard-0", "ms": 5000}),
                &doc,
            ))
            .await
            .unwrap();
        assert_eq!(
            failed(&reply),
            ("sh/shard-0".into(), "timeout".into()),
            "{backend}"
        );
        assert!(
            why(&reply).contains("(1 of 2 parts of this request succeeded, on sh/shard-1:"),
            "{backend}: {}",
            why(&reply)
        );
        // Still serving, both shards answering.
        let reply = c
            .call(message("/only", json!({"who": "nobody"}), &doc))
            .await
            .unwrap();
        assert_eq!(reply.envelope.status, Status::Success, "{backend}");
        // A shard that is killed.
        let status = control(&p.addr("ctrl"), "STATUS").await.unwrap();
        let victim = status["peas"][1]["pid"].as_u64().unwrap();
        if backend == "PROCESS" {
            // A shard that is alive but does not answer (stopped): the Tail's own
            // time limit (here the request's deadline) ends the request, naming it.
            let frozen = status["peas"][0]["pid"].as_u64().unwrap().to_string();
            Command::new("kill")
                .args(["-STOP", &frozen])
                .status()
                .unwrap();
            // Wait until the kernel has actually stopped it (state T) on a busy machine.
            let stat = format!("/proc/{frozen}/stat");
            let until = Instant::now() + Duration::from_secs(5);
            while !std::fs::read_to_string(&stat)
                .unwrap_or_default()
                .contains(") T ")
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut request = message("/only", json!({"who": "nobody"}), &doc);
            request.envelope.deadline_ms = jina_wasm::wire::now_us() / 1000 + 1500;
            let reply = c.call(request).await.unwrap();
            Command::new("kill")
                .args(["-CONT", &frozen])
                .status()
                .unwrap();
            assert_eq!(failed(&reply), ("sh/shard-0".into(), "timeout".into()));
            let Status::Error { message: why, .. } = &reply.envelope.status else {
                unreachable!()
            };
            assert!(why.contains("`sh/shard-0`"), "{why}");
            // A shard that is killed.
            assert!(
                status["connected"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("sh/shard-1")),
                "{status}"
            );
            Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status()
                .unwrap();
            // Once the head has seen the disconnect, or the Pod has already
            // restarted the shard (at once here; later on a busy machine). (A
            // part in flight at the death: shard_replicas.rs.)
            status_until(
                &p.addr("ctrl"),
                "the head dropped or the Pod restarted the killed shard",
                |s| {
                    !s["connected"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("sh/shard-1"))
                        || s["process_restarts"] == json!(1)
                },
            )
            .await;
            // While it is down a request fails at once, naming it; once the Pod
            // has restarted it, it is served.
            let asked = Instant::now();
            let reply = c
                .call(message("/only", json!({"who": "nobody"}), &doc))
                .await
                .unwrap();
            if reply.envelope.status != Status::Success {
                let (who, kind) = failed(&reply);
                assert!(
                    who == "sh/shard-1" && (kind == "unavailable" || kind == "timeout"),
                    "{:?}\n{status}\n{}",
                    reply.envelope.status,
                    p.log()
                );
            }
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "the Pod waited for a dead shard: {:?} after {:?}\n{}",
                reply.envelope.status,
                asked.elapsed(),
                p.log()
            );
            // The Pod restarts it on its own (faults.rs tests the data side).
            status_until(&p.addr("ctrl"), "the killed shard restarted", |s| {
                s["process_restarts"] == json!(1) && s["healthy"] == json!(true)
            })
            .await;
            let reply = c
                .call(message("/only", json!({"who": "nobody"}), &doc))
                .await
                .unwrap();
            assert_eq!(
                reply.envelope.status,
                Status::Success,
                "{:?}",
                reply.envelope.status
            );
        }
        c.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refuses_another_shards_workspace_and_a_failed_start_leaves_nothing() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    // Claim the workspace with three shards, then try two.
    let mut three = pod(
        "passthrough",
        &["--name", "p", "--shards", "3", "--workspace", ws],
    );
    control(&three.addr("ctrl"), "TERMINATE").await.unwrap();
    assert!(three.wait_exit(Duration::from_secs(20)).is_some());
    let log = try_pod(
        "passthrough",
        &[
            "--name",
            "p",
            "--shards",
            "2",
            "--workspace",
            ws,
            "--runtime-backend",
            "PROCESS",
        ],
    )
    .err()
    .expect("must refuse");
    assert!(
        log.contains("pod `p` did not start") && log.contains("jina-wasm reshard"),
        "{log}"
    );
    // Nothing of the failed Pod is left running.
    let leftovers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmd| String::from_utf8_lossy(cmd).contains(&format!("{ws}/p/shard-")))
        .count();
    assert_eq!(leftovers, 0, "a Pea of the failed Pod is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_pea_pod_is_a_singleton_and_uses_after_replaces_the_merge() {
    let single = pod("passthrough", &["--name", "solo"]);
    assert_eq!(single.ready["peas"][0]["role"], "singleton");
    let mut c = client(&single).await;
    let reply = c.call(message("/", json!({}), &corpus(3))).await.unwrap();
    assert_eq!(
        reply.envelope.routes.len(),
        1,
        "a singleton has no head or tail"
    );
    c.close().await;

    // Two replicas polled `all`, then match-merger in the tail (instead of the
    // default merge) sees both answers.
    let merger = wasm("match-merger");
    let p = pod(
        "passthrough",
        &[
            "--name",
            "dup",
            "--parallel",
            "2",
            "--polling",
            "all",
            "--uses-after",
            merger.to_str().unwrap(),
        ],
    );
    let mut c = client(&p).await;
    let reply = c
        .call(message("/roundtrip", json!({}), &corpus(2)))
        .await
        .unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );
    let peas: Vec<&str> = reply
        .envelope
        .routes
        .iter()
        .map(|r| r.pea.as_str())
        .collect();
    assert_eq!(
        peas,
        ["dup/head", "dup/replica-0", "dup/replica-1", "dup/tail"]
    );
    // Each id once: match-merger merged the two replicas' copies.
    assert_eq!(documents(&reply).len(), 2);
    c.close().await;

    // --uses-before: the head encodes, the replicas see embeddings.
    let encoder = wasm("text-encoder");
    let p = pod(
        "passthrough",
        &[
            "--name",
            "enc",
            "--parallel",
            "2",
            "--uses-before",
            encoder.to_str().unwrap(),
        ],
    );
    let mut c = client(&p).await;
    let text = Document {
        id: "t".into(),
        text: Some("hello world".into()),
        ..Default::default()
    };
    let reply = c
        .call(message("/roundtrip", json!({}), &[text]))
        .await
        .unwrap();
    assert!(
        documents(&reply)[0]
            .embedding
            .as_ref()
            .is_some_and(|e| !e.is_empty()),
        "{:?}",
        reply.envelope.status
    );
    c.close().await;
}

#[test]
fn a_pod_that_is_not_ready_in_time_names_the_peas_it_waited_for() {
    let log = try_pod(
        "misbehave",
        &[
            "--name",
            "late",
            "--shards",
            "2",
            "--uses-with",
            r#"{"slow_init_ms": 3000}"#,
            "--timeout-ready",
            "1s",
        ],
    )
    .err()
    .expect("must time out");
    assert!(
        log.contains("pod `late` was not ready within 1s") && log.contains("`late/shard-0`"),
        "{log}"
    );
}

#[test]
fn pod_flags_are_checked() {
    let out = crate::util::jina_command()
        .args([
            "pod",
            "--uses",
            wasm("passthrough").to_str().unwrap(),
            "--polling",
            "/a:some",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither `any` nor `all`"));
    let out = crate::util::jina_command()
        .args([
            "pod",
            "--uses",
            wasm("passthrough").to_str().unwrap(),
            "--shards",
            "2",
            "--replicas",
            "257",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("257 is not in 1..=256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hundreds of requests in flight at a Pod of in-process shards (THREAD
/// backend): the Head, waiting for room in a busy shard's queue, keeps
/// reading what its Peas send (their IDLE credit). Before, a shard waiting to
/// send its IDLE into the Head's full queue while the Head waited for room in
/// that shard's queue held both for ever (in-process links have no socket
/// buffers between; found by review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_in_process_shards_takes_hundreds_of_requests_in_flight() {
    let pod = pod(
        "passthrough",
        &["--name", "p", "--shards", "3", "--polling", "all"],
    );
    let mut c = client(&pod).await;
    c.window = 400;
    c.timeout = Duration::from_secs(30);
    let requests: Vec<Message> = (0..1200)
        .map(|k| {
            let doc = crate::util::text_doc(&format!("d{k}"), "x");
            message("/echo", json!({}), &[doc])
        })
        .collect();
    let mut answered = 0;
    c.stream(requests, |reply| {
        assert_eq!(
            reply.envelope.status,
            Status::Success,
            "{:?}",
            reply.envelope.status
        );
        answered += 1;
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(answered, 1200);
    c.close().await;
}
