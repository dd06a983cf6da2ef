//! Stateful executors (docs/stateful.md): restarts that keep an index, durable
//! mode under `kill -9`, interval mode's loss window, a crash in the middle of
//! a dump, read-only replicas, re-sharding.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::control;
use jina_wasm::Document;
use jina_wasm::client::Client;
use jina_wasm::pod::shard_of;
use jina_wasm::wire::Status;
use serde_json::{Value, json};

use crate::pea::{PeaProcess, status_until};
use crate::pod::{client, corpus, documents, index, message, pod, search, try_pod};
use crate::util::{self, kill_9};

/// Every id stored in the vector-indexer workspace `dir`, read through a
/// read-only instance's `/export`: what a restart would serve.
fn stored_ids(dir: &Path) -> BTreeSet<String> {
    util::stored_ids("vector-indexer", json!({}), dir)
}

fn shard_ids(workspace: &Path, pod: &str, shards: usize) -> Vec<BTreeSet<String>> {
    (0..shards)
        .map(|i| stored_ids(&workspace.join(format!("{pod}/shard-{i}"))))
        .collect()
}

/// `n` documents with `dim`-dimensional embeddings, ids from `first`.
fn vectors(first: usize, n: usize, dim: usize) -> Vec<Document> {
    (first..first + n)
        .map(|i| Document {
            id: format!("v-{i}"),
            embedding: Some(
                (0..dim)
                    .map(|j| ((i * 31 + j * 7) % 101) as f32 / 101.0 - 0.5)
                    .collect(),
            ),
            ..Default::default()
        })
        .collect()
}

/// Indexes `docs` into a Pod, searches `queries`, then stops it with
/// TERMINATE (so its shards dump); returns the matches' ids.
async fn index_search_and_stop(
    mut pod: PeaProcess,
    docs: &[Document],
    queries: &[Document],
) -> Vec<Vec<String>> {
    let mut c = client(&pod).await;
    index(&mut c, docs).await;
    let found = search(&mut c, queries).await;
    c.close().await;
    control(&pod.addr("ctrl"), "TERMINATE").await.unwrap();
    assert!(
        pod.wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        pod.log()
    );
    found
}

/// Indexes `docs` in 100-document requests until the target stops answering;
/// returns the ids whose requests were answered with success.
async fn index_until_killed(client: &mut Client, dim: usize) -> BTreeSet<String> {
    let mut acknowledged = BTreeSet::new();
    // Unbounded: however fast this machine's disk syncs, the requests
    // outlast the Pod, so the kill always lands mid-stream.
    let requests = (0..).map(|k| message("/index", json!({}), &vectors(k * 100, 100, dim)));
    let ended = client
        .stream(requests, |reply| {
            if reply.envelope.status == Status::Success {
                acknowledged.extend(documents(&reply).into_iter().map(|d| d.id));
            }
            Ok(())
        })
        .await;
    assert!(ended.is_err(), "an endless stream ended without an error");
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_documents_survive_a_pod_restart() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let args = [
        "--name",
        "idx",
        "--shards",
        "2",
        "--workspace",
        ws,
        "--polling",
        "/index:any,/search:all",
    ];
    let docs = corpus(10_000);
    let queries: Vec<Document> = docs
        .iter()
        .step_by(251)
        .map(|d| Document {
            id: format!("q-{}", d.id),
            ..d.clone()
        })
        .collect();

    let before = index_search_and_stop(pod("vector-indexer", &args), &docs, &queries).await;

    let second = pod("vector-indexer", &args);
    let mut c = client(&second).await;
    assert_eq!(
        search(&mut c, &queries).await,
        before,
        "the restarted Pod answers differently"
    );
    c.close().await;
    drop(second);
    let shards = shard_ids(workspace.path(), "idx", 2);
    assert_eq!(shards.iter().map(BTreeSet::len).sum::<usize>(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_loses_no_acknowledged_write_to_kill_9() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let args = [
        "--name",
        "idx",
        "--shards",
        "2",
        "--workspace",
        ws,
        "--dump-interval",
        "0",
        "--polling",
        "/index:any,/search:all",
    ];
    let pod = pod("vector-indexer", &args);
    let pid = pod.pid();
    let mut c = client(&pod).await;
    c.timeout = Duration::from_secs(3);
    // Indexing goes on until the Pod is killed, at a moment unrelated to it.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        kill_9(pid);
    });
    let acknowledged = index_until_killed(&mut c, 16).await;
    killer.join().unwrap();
    drop(pod);
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill"
    );

    // What a restart serves: the shards' workspaces as they are on disk.
    let stored: BTreeSet<String> = shard_ids(workspace.path(), "idx", 2)
        .into_iter()
        .flatten()
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    eprintln!(
        "durable mode: {} acknowledged, {} stored, {} lost",
        acknowledged.len(),
        stored.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged documents are gone, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // And the restarted Pod serves them.
    let again = crate::pod::pod("vector-indexer", &args);
    let mut c = client(&again).await;
    let probe = vectors(0, 1, 16);
    let reply = c
        .call(message("/search", json!({"top_k": 1}), &probe))
        .await
        .unwrap();
    assert_eq!(documents(&reply)[0].matches[0].id, "v-0");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_loses_only_what_came_after_the_last_dump() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let pea = PeaProcess::start(
        "vector-indexer",
        &["--name", "idx", "--workspace", ws, "--dump-interval", "1s"],
    );
    let ctrl = pea.addr("ctrl");
    let mut c = client(&pea).await;
    // One document per request: request k holds v-(k-1).
    let batch = |from: usize| -> Vec<_> {
        vectors(from, 50, 8)
            .chunks(1)
            .map(|d| message("/index", json!({}), d))
            .collect()
    };
    c.stream(batch(0), |_| Ok(())).await.unwrap();
    status_until(&ctrl, "a periodic dump of the first 50 requests", |s| {
        s["dumped_through"] == json!(50)
    })
    .await;
    c.stream(batch(50), |_| Ok(())).await.unwrap();
    let status = control(&ctrl, "STATUS").await.unwrap();
    kill_9(pea.pid());
    drop(pea);
    let through = status["dumped_through"].as_u64().unwrap() as usize;
    assert!((50..=100).contains(&through), "{status}");

    // The documented window: what the last dump holds is there, nothing
    // acknowledged after it is. (A dump may have been under way at STATUS and
    // finished before the kill: then it holds a few more requests.)
    let stored = stored_ids(workspace.path());
    let expected: BTreeSet<String> = (0..stored.len()).map(|i| format!("v-{i}")).collect();
    assert_eq!(stored, expected, "not the state after some request");
    assert!(
        stored.len() >= through,
        "{} stored, but STATUS said {through} were dumped",
        stored.len()
    );
    eprintln!(
        "interval mode: 100 acknowledged, {} lost (after the last dump)",
        100 - stored.len()
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_dump_leaves_the_previous_state() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let args = [
        "--name",
        "idx",
        "--workspace",
        ws,
        "--dump-interval",
        "never",
    ];
    // A large index, so a dump takes long enough to be interrupted.
    let mut pea = PeaProcess::start("vector-indexer", &args);
    let mut c = client(&pea).await;
    index(&mut c, &vectors(0, 60_000, 128)).await;
    let started = Instant::now();
    control(&pea.addr("ctrl"), "DUMP").await.unwrap();
    let dump_time = started.elapsed();
    c.close().await;
    let mut count = 60_000;
    let mut interrupted = 0;
    for (round, fraction) in [0.4, 0.55, 0.7, 0.85, 1.0].into_iter().enumerate() {
        // One more document, so the next dump rewrites the snapshot.
        let mut c = client(&pea).await;
        index(&mut c, &vectors(count, 1, 128)).await;
        c.close().await;
        let ctrl = pea.addr("ctrl");
        // The answer never comes: the Pea dies first (or just after).
        let dump = tokio::spawn(async move { control(&ctrl, "DUMP").await });
        tokio::time::sleep(dump_time.mul_f64(fraction)).await;
        kill_9(pea.pid());
        dump.abort();
        drop(pea);
        let torn = std::fs::read_dir(workspace.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"));
        interrupted += usize::from(torn);

        let found = stored_ids(workspace.path()).len();
        assert!(
            found == count || found == count + 1,
            "round {round}: {found} documents after the crash, expected {count} or {}",
            count + 1
        );
        pea = PeaProcess::start("vector-indexer", &args);
        // An acknowledged write the crash lost is reported by the next
        // process (docs/stateful.md, "A process that dies"); one killed
        // after its dump but before it removed its record reports a loss
        // that did not happen (it errs on the side of telling). Either way
        // writes wait for ACCEPT-LOSS.
        let status = control(&pea.addr("ctrl"), "STATUS").await.unwrap();
        if found == count {
            assert_eq!(
                status["state_lost"]["writes"],
                json!(1),
                "round {round}: {status}"
            );
        }
        if status["state_lost"].is_object() {
            control(&pea.addr("ctrl"), "ACCEPT-LOSS").await.unwrap();
        }
        count = found;
    }
    eprintln!("dump of 60k x 128 took {dump_time:?}; {interrupted} of 5 kills landed mid-dump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_replica_refuses_writes() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let reader = PeaProcess::start("vector-indexer", &["--workspace", ws, "--read-only"]);
    let mut c = client(&reader).await;
    let reply = c
        .call(message("/index", json!({}), &vectors(0, 1, 8)))
        .await
        .unwrap();
    match &reply.envelope.status {
        Status::Error { kind, message, .. } => {
            assert_eq!(kind.as_str(), "read-only");
            assert!(message.contains("--read-only"), "{message}");
        }
        other => panic!("a read-only replica indexed: {other:?}"),
    }
    c.close().await;
    assert!(
        std::fs::read_dir(workspace.path())
            .unwrap()
            .next()
            .is_none(),
        "the read-only replica wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_moves_two_shards_to_three_with_the_same_answers() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let polling = "/index:any,/search:all";
    let docs = corpus(3000);
    let queries: Vec<Document> = docs
        .iter()
        .step_by(149)
        .map(|d| Document {
            id: format!("q-{}", d.id),
            ..d.clone()
        })
        .collect();
    let two = pod(
        "vector-indexer",
        &[
            "--name",
            "idx",
            "--shards",
            "2",
            "--workspace",
            ws,
            "--polling",
            polling,
        ],
    );
    let before = index_search_and_stop(two, &docs, &queries).await;

    let three = [
        "--name",
        "idx",
        "--shards",
        "3",
        "--workspace",
        ws,
        "--polling",
        polling,
    ];
    let refused = try_pod("vector-indexer", &three)
        .err()
        .expect("a Pod started on another shard count's data");
    assert!(refused.contains("jina-wasm reshard"), "{refused}");

    let uses = util::wasm("vector-indexer");
    let out = crate::cli::jina(
        &[
            "reshard",
            "--uses",
            uses.to_str().unwrap(),
            "--name",
            "idx",
            "--workspace",
            ws,
            "--shards",
            "3",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["from"].clone(),
            report["to"].clone(),
            report["documents"].clone()
        ),
        (json!(2), json!(3), json!(3000))
    );
    assert!(
        workspace.path().join("idx.2-shards/shard-1").is_dir(),
        "the old shards are kept"
    );

    for (shard, ids) in shard_ids(workspace.path(), "idx", 3)
        .into_iter()
        .enumerate()
    {
        assert!(!ids.is_empty());
        assert!(
            ids.iter().all(|id| shard_of(id, 3) == shard),
            "shard {shard} holds another shard's ids"
        );
    }
    let three = pod("vector-indexer", &three);
    let mut c = client(&three).await;
    assert_eq!(
        search(&mut c, &queries).await,
        before,
        "re-sharding changed the answers"
    );
    c.close().await;

    // Nothing to move to: the same count again is refused, and the workspace stays.
    let out = crate::cli::jina(
        &[
            "reshard",
            "--uses",
            uses.to_str().unwrap(),
            "--name",
            "idx",
            "--workspace",
            ws,
            "--shards",
            "3",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has 3 shards"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_durable_mode_a_failed_dump_is_not_acknowledged_and_not_served() {
    let workspace = tempfile::tempdir().unwrap();
    // The executor keeps changes in memory (`durable: false`) and its dump
    // writes where nothing can be written: every dump fails.
    let with = r#"{"workspace": "/nowhere", "durable": false}"#;
    let pea = PeaProcess::start(
        "vector-indexer",
        &[
            "--workspace",
            workspace.path().to_str().unwrap(),
            "--dump-interval",
            "0",
            "--uses-with",
            with,
        ],
    );
    let mut c = client(&pea).await;
    let doc = vectors(0, 1, 8);
    let reply = c.call(message("/index", json!({}), &doc)).await.unwrap();
    match &reply.envelope.status {
        Status::Error { kind, message, .. } => {
            assert_eq!(kind.as_str(), "dump");
            assert!(
                message.contains("not acknowledged") && message.contains("vector-index.snapshot"),
                "{message}"
            );
        }
        other => panic!("an unsaved write was acknowledged: {other:?}"),
    }
    // The instance that held the unsaved document is gone: it is not served.
    let reply = c.call(message("/search", json!({}), &doc)).await.unwrap();
    assert_eq!(reply.envelope.status, Status::Success);
    assert!(
        documents(&reply)[0].matches.is_empty(),
        "an unsaved document is served"
    );
    let status = control(&pea.addr("ctrl"), "STATUS").await.unwrap();
    assert_eq!(
        (status["healthy"].clone(), status["restarts"].clone()),
        (json!(true), json!(1)),
        "{status}"
    );
    c.close().await;
}
