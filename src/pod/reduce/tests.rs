//! The columnar split and merge against the document-tree ones they
//! replaced (kept here as the reference), on random bodies.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::document::{Document, NamedScore};

fn hit(id: &str, score: f64) -> Document {
    let mut d = Document {
        id: id.into(),
        ..Default::default()
    };
    d.scores.insert(
        "cosine".into(),
        NamedScore {
            value: score,
            op_name: None,
            description: None,
        },
    );
    d
}

#[test]
fn ids_land_in_a_stable_shard() {
    // Pinned values: changing the hash would move every stored document.
    assert_eq!(shard_of("", 2), 1);
    assert_eq!(
        [
            shard_of("doc-1", 3),
            shard_of("doc-2", 3),
            shard_of("doc-3", 3)
        ],
        [2, 0, 1]
    );
    let docs: Vec<Document> = (0..1000)
        .map(|i| Document {
            id: format!("doc-{i}"),
            ..Default::default()
        })
        .collect();
    let parts = partition(Body::from_documents(&docs), 2).unwrap();
    let sizes: Vec<usize> = parts
        .iter()
        .map(|p| p.as_ref().map_or(0, |b| b.roots()))
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1000);
    assert!(sizes.iter().all(|&s| s > 400), "{sizes:?}");
}

#[test]
fn broadcast_answers_merge_their_matches() {
    let q = |matches: Vec<Document>| Document {
        id: "q".into(),
        matches: matches.into(),
        ..Default::default()
    };
    let a = Body::from_documents(&[q(vec![hit("a1", 0.9), hit("a2", 0.5)])]);
    let b = Body::from_documents(&[q(vec![hit("b1", 0.7), hit("b2", 0.5)])]);
    let merged = merge(vec![a.clone(), b.clone()], None)
        .unwrap()
        .into_documents()
        .unwrap();
    let ids: Vec<&str> = merged[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((merged.len(), ids), (1, vec!["a1", "b1"]));
    let merged = merge(vec![a, b], Some(3))
        .unwrap()
        .into_documents()
        .unwrap();
    let ids: Vec<&str> = merged[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["a1", "b1", "a2"]);
    // A NaN is not a score: it ranks last, not first (a hostile test
    // pushed a NaN vector to the top of every search).
    let a = Body::from_documents(&[q(vec![hit("nan", f64::NAN), hit("a2", 0.5)])]);
    let b = Body::from_documents(&[q(vec![hit("b1", 0.7)])]);
    let merged = merge(vec![a, b], None).unwrap().into_documents().unwrap();
    let ids: Vec<&str> = merged[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec!["b1", "a2"]);
}

#[test]
fn distinct_documents_are_concatenated() {
    let one = Body::from_documents(&[Document {
        id: "x".into(),
        ..Default::default()
    }]);
    let two = Body::from_documents(&[Document {
        id: "y".into(),
        ..Default::default()
    }]);
    let merged = merge(vec![one, two], None)
        .unwrap()
        .into_documents()
        .unwrap();
    assert_eq!(
        merged.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        vec!["x", "y"]
    );
}

/// Bodies not in the order this host writes (a child after the next root,
/// a chunk after a match, scores out of order and repeated) split and
/// merge as their document trees do.
#[test]
fn bodies_in_another_order_split_and_merge_as_trees() {
    let mut body = Body::from_documents(&[hit("a", 0.1), hit("b", 0.2)]);
    // A match of `a` after `b`, then a chunk of `a` after that match.
    body.ids.push_required("a-m");
    body.ids.push_required("a-c");
    body.parents.extend([Some(0), Some(0)]);
    body.relations.extend([Relation::Match, Relation::Chunk]);
    for column in [&mut body.0.texts, &mut body.0.uris, &mut body.0.mime_types] {
        column.push(None);
        column.push(Some("x"));
    }
    body.tags.push(Some("{\"k\": 1}"));
    body.tags.push(None);
    body.blobs.push(None);
    body.blobs.push(Some(b"\0"));
    body.embedding_dims.extend([0, 0]);
    body.scores.push(Score {
        doc: 0,
        name: "cosine".into(),
        value: 0.9,
        op_name: None,
        description: None,
    });
    body.scores.reverse();
    body.validate().unwrap();
    assert!(!body.is_preorder());
    let other = Body::from_documents(&[hit("b", 0.3)]);
    same(
        &merge(vec![body.clone(), other.clone()], Some(2)).unwrap(),
        &reference::merge(vec![body.clone(), other.clone()], Some(2)).unwrap(),
    );
    same(
        &concat(vec![body.clone(), other.clone()]).unwrap(),
        &reference::concat(vec![body.clone(), other]).unwrap(),
    );
    let (ours, theirs) = (
        partition(body.clone(), 3).unwrap(),
        reference::partition(body, 3).unwrap(),
    );
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        match (a, b) {
            (Some(a), Some(b)) => same(a, b),
            (a, b) => assert_eq!(a.is_none(), b.is_none()),
        }
    }
}

#[test]
fn bad_tags_are_named_as_before() {
    let mut body = Body::from_documents(&[hit("a", 0.1)]);
    body.tags = crate::wire::body::StrColumn::default();
    body.tags.push(Some("[1]"));
    let ours = merge(vec![body.clone(), body.clone()], None).unwrap_err();
    let theirs = reference::merge(vec![body.clone(), body.clone()], None).unwrap_err();
    assert_eq!(ours, theirs);
    assert_eq!(partition(body.clone(), 2).unwrap_err(), theirs);
    assert_eq!(concat(vec![body]).unwrap_err(), theirs);
}

/// Equal but for the tags' text: compared as JSON objects (a tree writes
/// them again, and an empty object as none).
fn same(ours: &Body, theirs: &Body) {
    let normal = |body: &Body| {
        let mut body = body.clone();
        let mut tags = crate::wire::body::StrColumn::default();
        for i in 0..body.len() {
            let map = body.tags_of(i).unwrap();
            let text = (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string());
            tags.push(text.as_deref());
        }
        body.tags = tags;
        body
    };
    assert_eq!(normal(ours), normal(theirs));
}

fn doc(depth: u32) -> BoxedStrategy<Document> {
    let scores = proptest::collection::vec(
        (
            prop_oneof![Just("a"), Just("b")],
            prop_oneof![Just(0.5), Just(-0.25), -1.0f64..1.0],
        ),
        0..3,
    );
    let leaf = (
        prop_oneof![
            Just("x".to_string()),
            Just("y".to_string()),
            Just("z".to_string()),
            "[a-z]{1,3}"
        ],
        proptest::option::of("[a-z]{0,3}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
        proptest::option::of(Just("u")),
        proptest::option::of(proptest::collection::vec(-1.0f32..1.0, 1..3)),
        scores,
        proptest::option::of(prop_oneof![Just("k"), Just("t")]),
    )
        .prop_map(|(id, text, blob, uri, embedding, scores, tag)| Document {
            id,
            text,
            blob,
            uri: uri.map(str::to_string),
            embedding,
            tags: tag
                .map(|t| {
                    serde_json::json!({ t: t.len(), "n": 1 })
                        .as_object()
                        .unwrap()
                        .clone()
                })
                .unwrap_or_default(),
            scores: scores
                .into_iter()
                .map(|(name, value)| {
                    let score = NamedScore {
                        value,
                        op_name: Some("op".into()),
                        description: None,
                    };
                    (name.to_string(), score)
                })
                .collect(),
            ..Default::default()
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (
        leaf,
        proptest::collection::vec(doc(depth - 1), 0..3),
        proptest::collection::vec(doc(depth - 1), 0..4),
    )
        .prop_map(|(mut d, chunks, matches)| {
            d.chunks = chunks.into();
            d.matches = matches.into();
            d
        })
        .boxed()
}

fn parts() -> impl Strategy<Value = Vec<Body>> {
    proptest::collection::vec(
        proptest::collection::vec(doc(2), 0..4).prop_map(|docs| Body::from_documents(&docs)),
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn columnar_merge_is_the_tree_merge(parts in parts(), top_k in proptest::option::of(0usize..4)) {
        same(&merge(parts.clone(), top_k).unwrap(), &reference::merge(parts, top_k).unwrap());
    }

    #[test]
    fn columnar_concat_is_the_tree_concat(parts in parts()) {
        same(&concat(parts.clone()).unwrap(), &reference::concat(parts).unwrap());
    }

    #[test]
    fn columnar_partition_is_the_tree_partition(parts in parts(), shards in 1usize..4) {
        let body = concat(parts).unwrap();
        let ours = partition(body.clone(), shards).unwrap();
        let theirs = reference::partition(body, shards).unwrap();
        prop_assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            match (a, b) {
                (Some(a), Some(b)) => same(a, b),
                (a, b) => prop_assert_eq!(a.is_none(), b.is_none()),
            }
        }
    }
}

/// The split and merge on document trees, as they were before columns
/// (issue 17): the semantics the columnar ones keep.
mod reference {
    use super::*;

    pub fn partition(body: Body, shards: usize) -> Result<Vec<Option<Body>>, String> {
        let mut groups: Vec<Vec<Document>> = vec![Vec::new(); shards];
        for doc in body.into_documents()? {
            groups[shard_of(&doc.id, shards)].push(doc);
        }
        Ok(groups
            .into_iter()
            .map(|docs| (!docs.is_empty()).then(|| Body::from_documents(&docs)))
            .collect())
    }

    pub fn merge(parts: Vec<Body>, top_k: Option<usize>) -> Result<Body, String> {
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let mut merged: Vec<Document> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut widest: Vec<usize> = Vec::new();
        let mut repeated = false;
        for part in parts {
            for doc in part.into_documents()? {
                match position.get(&doc.id) {
                    Some(&at) => {
                        repeated = true;
                        widest[at] = widest[at].max(doc.matches.len());
                        fill(&mut merged[at], doc);
                    }
                    None => {
                        position.insert(doc.id.clone(), merged.len());
                        widest.push(doc.matches.len());
                        merged.push(doc);
                    }
                }
            }
        }
        if repeated {
            for (doc, widest) in merged.iter_mut().zip(widest) {
                doc.matches.sort_by(|a, b| {
                    let score = |d: &Document| {
                        d.scores
                            .values()
                            .next()
                            .map(|s| s.value)
                            .filter(|v| !v.is_nan())
                            .unwrap_or(f64::NEG_INFINITY)
                    };
                    score(b).total_cmp(&score(a)).then_with(|| a.id.cmp(&b.id))
                });
                doc.matches.truncate(top_k.unwrap_or(widest));
            }
        }
        Ok(Body::from_documents(&merged))
    }

    fn fill(base: &mut Document, other: Document) {
        let Document {
            text,
            blob,
            uri,
            mime_type,
            embedding,
            tags,
            scores,
            chunks,
            matches,
            ..
        } = other;
        base.matches.extend(matches);
        base.text = base.text.take().or(text);
        base.blob = base.blob.take().or(blob);
        base.uri = base.uri.take().or(uri);
        base.mime_type = base.mime_type.take().or(mime_type);
        base.embedding = base.embedding.take().or(embedding);
        if base.chunks.is_empty() {
            base.chunks = chunks;
        }
        for (k, v) in tags {
            base.tags.entry(k).or_insert(v);
        }
        for (k, v) in scores {
            base.scores.entry(k).or_insert(v);
        }
    }

    pub fn concat(parts: Vec<Body>) -> Result<Body, String> {
        let mut docs = Vec::new();
        for part in parts {
            docs.extend(part.into_documents()?);
        }
        Ok(Body::from_documents(&docs))
    }
}
