//! The HNSW indexer (docs/hnsw.md) as users run it: `jina-wasm pod` and `pea`
//! processes over ZeroMQ. Recall against exact search through a sharded Pod's
//! merge, durable mode under `kill -9`, updates and deletes across a restart,
//! re-sharding 2 -> 3 with the same answers.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::util::control;
use jina_wasm::Document;
use jina_wasm::client::Client;
use jina_wasm::pod::shard_of;
use jina_wasm::wire::Status;
use serde_json::{Value, json};

use crate::pea::PeaProcess;
use crate::pod::{client, documents, message, pod, try_pod};
use crate::util::{self, kill_9};

const GUEST: &str = "hnsw-indexer";
const POLLING: &str = "/index:any,/search:all,/update:any,/delete:any";

/// `n` deterministic `dim`-dimensional vectors around 25 centres (real
/// embeddings cluster; uniform noise would be a needlessly hard case), ids
/// `{prefix}-{i}` from `first`.
fn clustered(prefix: &str, first: usize, n: usize, dim: usize, seed: u64) -> Vec<Document> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 20_000) as f32 / 10_000.0 - 1.0
    };
    let centres: Vec<Vec<f32>> = (0..25)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    (first..first + n)
        .map(|i| Document {
            id: format!("{prefix}-{i}"),
            embedding: Some(centres[i % 25].iter().map(|c| c + 0.4 * next()).collect()),
            ..Default::default()
        })
        .collect()
}

/// The exact top `k` of `query` among `docs` by `metric` ("cosine" or "l2"),
/// best first, ties in id order: what the index approximates.
fn exact(docs: &[Document], query: &[f32], k: usize, metric: &str) -> Vec<String> {
    let score = |v: &[f32]| -> f64 {
        let dot: f64 = v
            .iter()
            .zip(query)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm = |x: &[f32]| x.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        match metric {
            "cosine" => dot / (norm(v) * norm(query)),
            _ => -v
                .iter()
                .zip(query)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt(),
        }
    };
    let mut scored: Vec<(f64, &str)> = docs
        .iter()
        .map(|d| (score(d.embedding.as_deref().unwrap()), d.id.as_str()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_string())
        .collect()
}

async fn index_all(c: &mut Client, docs: &[Document]) {
    let requests: Vec<_> = docs
        .chunks(200)
        .map(|chunk| message("/index", json!({}), chunk))
        .collect();
    c.stream(requests, |reply| {
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

/// Each query's matches: `(id, score)`, as the client receives them.
async fn search(
    c: &mut Client,
    queries: &[Document],
    parameters: Value,
) -> Vec<Vec<(String, f64)>> {
    let reply = c
        .call(message("/search", parameters, queries))
        .await
        .unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );
    documents(&reply)
        .into_iter()
        .map(|q| {
            q.matches
                .into_iter()
                .map(|m| (m.id, m.scores.values().next().map_or(f64::NAN, |s| s.value)))
                .collect()
        })
        .collect()
}

fn ids(hits: &[Vec<(String, f64)>]) -> Vec<Vec<String>> {
    hits.iter()
        .map(|q| q.iter().map(|h| h.0.clone()).collect())
        .collect()
}

/// Every id in an hnsw-indexer workspace, read through a read-only
/// instance's `/export`: what a restart would serve.
fn stored_ids(dir: &Path, with: Value) -> BTreeSet<String> {
    util::stored_ids(GUEST, with, dir)
}

async fn stop(mut p: PeaProcess) {
    control(&p.addr("ctrl"), "TERMINATE").await.unwrap();
    assert!(
        p.wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_through_a_two_shard_pod_matches_exact_search() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    // l2: the scores are negative distances, so the Pod's merge (highest
    // first) must still put the nearest first.
    let with = r#"{"metric": "l2", "m": 12, "ef_construction": 100}"#;
    let p = pod(
        GUEST,
        &[
            "--name",
            "ann",
            "--shards",
            "2",
            "--workspace",
            ws,
            "--polling",
            POLLING,
            "--uses-with",
            with,
        ],
    );
    let docs = clustered("doc", 0, 4000, 24, 7);
    let queries: Vec<Document> = clustered("q", 0, 100, 24, 1234);
    let mut c = client(&p).await;
    index_all(&mut c, &docs).await;

    // `top_k` as Jina's Python client sends it: a double.
    let found = search(&mut c, &queries, json!({"top_k": 10.0})).await;
    let mut hits = 0;
    let mut shards = BTreeSet::new();
    for (q, matches) in queries.iter().zip(&found) {
        assert_eq!(matches.len(), 10, "the merge keeps top_k");
        assert!(
            matches.windows(2).all(|w| w[0].1 >= w[1].1),
            "not best first: {matches:?}"
        );
        let truth = exact(&docs, q.embedding.as_deref().unwrap(), 10, "l2");
        hits += matches.iter().filter(|(id, _)| truth.contains(id)).count();
        shards.extend(matches.iter().map(|(id, _)| shard_of(id, 2)));
    }
    assert_eq!(shards.len(), 2, "the merged matches come from both shards");
    let recall = hits as f64 / 1000.0;
    eprintln!("hnsw recall@10 through a 2-shard Pod, default ef: {recall}");
    assert!(recall >= 0.95, "recall@10 {recall}");

    // A wider beam per request finds at least as much.
    let wide = search(&mut c, &queries[..10], json!({"top_k": 10, "ef": 400})).await;
    for (q, matches) in queries.iter().zip(&wide) {
        let truth = exact(&docs, q.embedding.as_deref().unwrap(), 10, "l2");
        assert_eq!(
            ids(std::slice::from_ref(matches))[0],
            truth,
            "ef 400 over 2,000 vectors per shard is exact"
        );
    }
    let reply = c
        .call(message("/search", json!({"ef": -3}), &queries[..1]))
        .await
        .unwrap();
    match reply.envelope.status {
        Status::Error { kind, message, .. } => assert!(
            kind.as_str() == "bad-request" && message.contains("parameters.ef"),
            "{message}"
        ),
        other => panic!("a negative ef was accepted: {other:?}"),
    }
    c.close().await;
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_loses_no_acknowledged_write_to_kill_9() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let args = [
        "--name",
        "ann",
        "--shards",
        "2",
        "--workspace",
        ws,
        "--dump-interval",
        "0",
        "--polling",
        POLLING,
    ];
    let p = pod(GUEST, &args);
    let pid = p.pid();
    let mut c = client(&p).await;
    c.timeout = Duration::from_secs(3);
    // Indexing goes on until the Pod is killed, at a moment unrelated to it.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        kill_9(pid);
    });
    let mut acknowledged = BTreeSet::new();
    let requests = (0..).map(|k: usize| {
        message(
            "/index",
            json!({}),
            &clustered("v", k * 100, 100, 16, 3 + k as u64),
        )
    });
    let ended = c
        .stream(requests, |reply| {
            if reply.envelope.status == Status::Success {
                acknowledged.extend(documents(&reply).into_iter().map(|d| d.id));
            }
            Ok(())
        })
        .await;
    assert!(ended.is_err(), "an endless stream ended without an error");
    killer.join().unwrap();
    drop(p);
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill"
    );

    let stored: BTreeSet<String> = (0..2)
        .flat_map(|i| stored_ids(&workspace.path().join(format!("ann/shard-{i}")), json!({})))
        .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    eprintln!(
        "hnsw durable mode: {} acknowledged, {} stored, {} lost",
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

    // The restarted Pod serves them: every document finds itself.
    let again = pod(GUEST, &args);
    let mut c = client(&again).await;
    let probe: Vec<Document> = clustered("v", 0, 100, 16, 3)
        .into_iter()
        .filter(|d| acknowledged.contains(&d.id))
        .take(5)
        .collect();
    for (q, matches) in probe
        .iter()
        .zip(search(&mut c, &probe, json!({"top_k": 1})).await)
    {
        assert_eq!(matches[0].0, q.id);
    }
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_deletes_are_served_and_survive_a_restart() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let args = [
        "--name",
        "ann",
        "--workspace",
        ws,
        "--dump-interval",
        "never",
    ];
    let docs = clustered("doc", 0, 1000, 16, 11);
    let p = PeaProcess::start(GUEST, &args);
    let mut c = client(&p).await;
    index_all(&mut c, &docs).await;

    // doc-1 takes doc-500's place; doc-2 and doc-3 go; an unknown id is
    // not created by /update.
    let moved = Document {
        id: "doc-1".into(),
        text: Some("moved".into()),
        embedding: docs[500].embedding.clone(),
        ..Default::default()
    };
    let ghost = Document {
        id: "ghost".into(),
        ..docs[700].clone()
    };
    let reply = c
        .call(message("/update", json!({}), &[moved, ghost]))
        .await
        .unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );
    let gone = ["doc-2", "doc-3"].map(|id| Document {
        id: id.into(),
        ..Default::default()
    });
    let reply = c.call(message("/delete", json!({}), &gone)).await.unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );

    let probes = [
        docs[1].clone(),
        docs[2].clone(),
        docs[3].clone(),
        docs[500].clone(),
        docs[700].clone(),
    ];
    let check = |found: Vec<Vec<(String, f64)>>| {
        let found = ids(&found);
        assert!(
            !found[0].contains(&"doc-1".to_string()),
            "doc-1 is still at its old place: {:?}",
            found[0]
        );
        assert!(
            found
                .iter()
                .flatten()
                .all(|id| id != "doc-2" && id != "doc-3" && id != "ghost"),
            "{found:?}"
        );
        let mut top2 = found[3][..2].to_vec();
        top2.sort();
        assert_eq!(top2, ["doc-1", "doc-500"], "doc-1 moved beside doc-500");
        assert_eq!(found[4][0], "doc-700");
    };
    check(search(&mut c, &probes, json!({"top_k": 5})).await);
    c.close().await;
    stop(p).await;

    // The stop dumped a compacted snapshot: the same answers after a restart.
    let p = PeaProcess::start(GUEST, &args);
    let mut c = client(&p).await;
    check(search(&mut c, &probes, json!({"top_k": 5})).await);
    c.close().await;
    let ids = stored_ids(workspace.path(), json!({}));
    assert_eq!(ids.len(), 998);
    assert!(!ids.contains("doc-2") && !ids.contains("ghost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_two_to_three_gives_identical_answers() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let docs = clustered("doc", 0, 3000, 16, 5);
    let queries: Vec<Document> = clustered("q", 0, 30, 16, 77);
    // A beam as wide as a shard: answers are exact, so identical answers
    // test the move itself, not the luck of two graphs.
    let params = json!({"top_k": 5, "ef": 1500});
    let two = pod(
        GUEST,
        &[
            "--name",
            "ann",
            "--shards",
            "2",
            "--workspace",
            ws,
            "--polling",
            POLLING,
        ],
    );
    let mut c = client(&two).await;
    index_all(&mut c, &docs).await;
    let before = ids(&search(&mut c, &queries, params.clone()).await);
    c.close().await;
    stop(two).await;
    for (q, found) in queries.iter().zip(&before) {
        assert_eq!(
            found,
            &exact(&docs, q.embedding.as_deref().unwrap(), 5, "cosine")
        );
    }

    let uses = util::wasm(GUEST);
    let out = crate::cli::jina(
        &[
            "reshard",
            "--uses",
            uses.to_str().unwrap(),
            "--name",
            "ann",
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
    assert_eq!(report["documents"], json!(3000));
    for i in 0..3 {
        let ids = stored_ids(&workspace.path().join(format!("ann/shard-{i}")), json!({}));
        assert!(
            !ids.is_empty() && ids.iter().all(|id| shard_of(id, 3) == i),
            "shard {i}"
        );
    }

    let three = [
        "--name",
        "ann",
        "--shards",
        "3",
        "--workspace",
        ws,
        "--polling",
        POLLING,
    ];
    assert!(
        try_pod(
            GUEST,
            &["--name", "ann", "--shards", "2", "--workspace", ws]
        )
        .is_err(),
        "the old count still starts"
    );
    let three = pod(GUEST, &three);
    let mut c = client(&three).await;
    assert_eq!(
        ids(&search(&mut c, &queries, params).await),
        before,
        "re-sharding changed the answers"
    );
    c.close().await;
}
