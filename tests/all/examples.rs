//! The example executors do their jobs, through the host API.

use std::collections::BTreeMap;

use jina_wasm::executor::{ErrorKind, Executor, Sandbox};
use jina_wasm::{Document, NamedScore};
use serde_json::{Value, json};

use crate::util::{start, text_doc, try_start};

const CORPUS: [&str; 6] = [
    "WebAssembly components run in a sandbox.",
    "ZeroMQ sockets carry messages between peas.",
    "A pod groups shards of one executor.",
    "Cosine similarity ranks the nearest vectors.",
    "The flow is a graph of pods behind a gateway.",
    "Shards persist their index in a workspace directory.",
];

fn encode(docs: &[Document]) -> Vec<Document> {
    let mut encoder = start("text-encoder", Value::Null, Sandbox::default());
    encoder.handle("/index", docs, &Value::Null).unwrap()
}

fn corpus() -> Vec<Document> {
    CORPUS
        .iter()
        .enumerate()
        .map(|(i, t)| text_doc(&format!("doc-{i}"), t))
        .collect()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn passthrough_preserves_a_whole_document_tree() {
    let mut scores = BTreeMap::new();
    scores.insert(
        "cosine".to_string(),
        NamedScore {
            value: 0.75,
            op_name: Some("cosine".into()),
            description: None,
        },
    );
    let tagged = |id: &str| Document {
        id: id.into(),
        tags: json!({"n": 1, "nested": {"list": [1, "two", null]}})
            .as_object()
            .unwrap()
            .clone(),
        ..Default::default()
    };
    let doc = Document {
        id: "root".into(),
        text: Some("héllo ✓".into()),
        blob: Some(vec![0, 1, 2, 255]),
        uri: Some("file:///x".into()),
        mime_type: Some("text/plain".into()),
        embedding: Some(vec![0.5, -1.0, 3.25]),
        scores: scores.clone(),
        chunks: vec![
            Document {
                matches: vec![Document {
                    embedding: Some(vec![1.0; 4]),
                    ..tagged("c0-m0")
                }]
                .into(),
                ..tagged("c0")
            },
            tagged("c1"),
        ]
        .into(),
        matches: vec![Document {
            scores,
            chunks: vec![tagged("m0-c0")].into(),
            ..tagged("m0")
        }]
        .into(),
        ..tagged("root")
    };
    let input = vec![
        doc,
        text_doc("second", ""),
        Document {
            id: "empty".into(),
            ..Default::default()
        },
    ];
    let mut executor = start("passthrough", Value::Null, Sandbox::default());
    // No handler: the guest hands the batch back as received.
    assert_eq!(
        executor
            .handle("/anything", &input, &json!({"p": 1}))
            .unwrap(),
        input
    );
    // A handler: the SDK decodes the batch into trees and encodes them back.
    assert_eq!(
        executor
            .handle("/roundtrip", &input, &json!({"p": 1}))
            .unwrap(),
        input
    );
}

#[test]
fn text_encoder_embeds_deterministically() {
    let docs = encode(&[
        text_doc("a", "Hello world"),
        text_doc("b", "Hello world"),
        text_doc("c", "something else"),
    ]);
    let a = docs[0].embedding.as_ref().expect("embedded");
    assert_eq!(a.len(), 256);
    assert!((norm(a) - 1.0).abs() < 1e-4);
    assert_eq!(docs[0].embedding, docs[1].embedding);
    assert_ne!(docs[0].embedding, docs[2].embedding);
    // A configured dimension, and chunks are encoded too.
    let mut small = start("text-encoder", json!({"dim": 32}), Sandbox::default());
    let with_chunk = Document {
        chunks: vec![text_doc("a-0", "chunk text")].into(),
        ..text_doc("a", "parent")
    };
    let out = small.handle("/", &[with_chunk], &Value::Null).unwrap();
    assert_eq!(out[0].embedding.as_ref().unwrap().len(), 32);
    assert_eq!(out[0].chunks[0].embedding.as_ref().unwrap().len(), 32);
}

#[test]
fn text_encoder_rejects_a_bad_dimension_at_init() {
    let error = try_start("text-encoder", json!({"dim": 0}), Sandbox::default())
        .err()
        .unwrap();
    assert_eq!(error.kind, ErrorKind::BadConfig, "{error}");
}

#[test]
fn sentence_segmenter_makes_chunks() {
    let mut segmenter = start("sentence-segmenter", Value::Null, Sandbox::default());
    let out = segmenter
        .handle(
            "/",
            &[text_doc("p", "Hello world. How are you? Fine!\nNext line")],
            &Value::Null,
        )
        .unwrap();
    let chunks: Vec<_> = out[0]
        .chunks
        .iter()
        .map(|c| (c.id.as_str(), c.text.as_deref().unwrap()))
        .collect();
    assert_eq!(
        chunks,
        vec![
            ("p-0", "Hello world."),
            ("p-1", "How are you?"),
            ("p-2", "Fine!"),
            ("p-3", "Next line")
        ]
    );
}

fn indexer(workspace: &std::path::Path) -> Executor {
    let sandbox = Sandbox {
        workspace: Some(workspace.to_path_buf()),
        ..Sandbox::default()
    };
    start("vector-indexer", Value::Null, sandbox)
}

fn search(executor: &mut Executor, text: &str, top_k: u64) -> Vec<(String, f64)> {
    let query = encode(&[text_doc("q", text)]);
    let out = executor
        .handle("/search", &query, &json!({ "top_k": top_k }))
        .unwrap();
    out[0]
        .matches
        .iter()
        .map(|m| (m.id.clone(), m.scores["cosine"].value))
        .collect()
}

#[test]
fn vector_indexer_indexes_searches_deletes_and_reloads() {
    let workspace = tempfile::tempdir().unwrap();
    let mut executor = indexer(workspace.path());
    executor
        .handle("/index", &encode(&corpus()), &Value::Null)
        .unwrap();

    let hits = search(&mut executor, CORPUS[3], 3);
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].0, "doc-3");
    assert!((hits[0].1 - 1.0).abs() < 1e-4, "{hits:?}");
    assert!(
        hits.windows(2).all(|w| w[0].1 >= w[1].1),
        "sorted by score: {hits:?}"
    );

    executor
        .handle("/delete", &[text_doc("doc-3", "")], &Value::Null)
        .unwrap();
    assert_ne!(search(&mut executor, CORPUS[3], 1)[0].0, "doc-3");

    // Documents without embeddings cannot be indexed.
    let error = executor
        .handle("/index", &[text_doc("raw", "no embedding")], &Value::Null)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadRequest, "{error}");

    let before = search(&mut executor, CORPUS[0], 5);
    executor.dump().unwrap();
    executor.close().unwrap();
    let mut reloaded = indexer(workspace.path());
    assert_eq!(search(&mut reloaded, CORPUS[0], 5), before);
}

#[test]
fn match_merger_merges_partial_results_by_score() {
    let m = |id: &str, score: f64| {
        let mut scores = BTreeMap::new();
        scores.insert(
            "cosine".to_string(),
            NamedScore {
                value: score,
                ..Default::default()
            },
        );
        Document {
            id: id.into(),
            scores,
            ..Default::default()
        }
    };
    let shard0 = Document {
        matches: vec![m("a", 0.9), m("b", 0.5)].into(),
        ..text_doc("q", "query")
    };
    let shard1 = Document {
        matches: vec![m("c", 0.7), m("d", 0.1)].into(),
        ..text_doc("q", "query")
    };
    let mut merger = start("match-merger", Value::Null, Sandbox::default());
    let out = merger
        .handle("/search", &[shard0, shard1], &json!({"top_k": 3}))
        .unwrap();
    assert_eq!(out.len(), 1);
    let ids: Vec<_> = out[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "c", "b"]);
}
