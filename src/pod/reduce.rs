//! What a Head and a Tail do to documents: split a request across shards by
//! document id, and merge the parts that come back.

use std::collections::HashMap;

use crate::document::Document;
use crate::wire::{Body, Envelope, Message, Status};

/// The envelope of several parts of one request merged: the route they share
/// once, then each part's own entries in order; the first failure of any part
/// as the status; the most severe `after_error`.
///
/// # Panics
/// When `parts` is empty (a Tail and a join merge only what they received,
/// at least one part).
pub fn merge_envelopes(parts: &[Message]) -> Envelope {
    let mut envelope = parts[0].envelope.clone();
    let first = &parts[0].envelope.routes;
    let shared = (0..first.len())
        .take_while(|&k| {
            parts
                .iter()
                .all(|p| p.envelope.routes.get(k) == Some(&first[k]))
        })
        .count();
    envelope.routes.truncate(shared);
    for part in parts {
        envelope
            .routes
            .extend(part.envelope.routes.iter().skip(shared).cloned());
        if let Status::Error {
            executor,
            kind,
            message,
        } = &part.envelope.status
        {
            envelope.fail(executor, *kind, message);
        }
        envelope.after_error = envelope.after_error.max(part.envelope.after_error);
    }
    envelope
}

/// The shard a document id belongs to: FNV-1a (64-bit) of the id's UTF-8 bytes,
/// modulo the number of shards. Stable across runs, machines and versions
/// (docs/pods.md), so an id is always stored, updated and deleted in one shard.
pub fn shard_of(id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// Splits the top-level documents (each with its chunks and matches) by shard.
/// Entry `i` is shard `i`'s part, `None` when no document belongs to it.
///
/// # Errors
/// Tags that are not JSON objects.
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

/// Merges the parts of one request, in the order given (shard order):
/// top-level documents are concatenated, except that a document that comes
/// back from several parts (a query broadcast to every shard) appears once,
/// with what later copies add that the first lacks ([`fill`]), and the
/// `matches` of all parts merged: sorted by their first score, best
/// (highest) first, equal scores in id order, and cut to `top_k` (else to the
/// most matches any one part returned for it).
///
/// # Errors
/// Tags that are not JSON objects.
pub fn merge(parts: Vec<Body>, top_k: Option<usize>) -> Result<Body, String> {
    if parts.len() == 1 {
        return Ok(parts.into_iter().next().expect("one part"));
    }
    let mut merged: Vec<Document> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    // Per merged document, the most matches one part brought.
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
                // No score, or NaN (not a score), ranks last.
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

/// Adds `other` (another part's copy of the same document) to `base`: its
/// matches, and whatever `base` lacks (text, blob, uri, mime type, embedding,
/// chunks, tags and scores by key). So a join of two branches, one that added
/// embeddings and one that added tags, has both.
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

/// Every part's top-level documents, one after another (for a `--uses-after`
/// reducer, which merges them itself).
///
/// # Errors
/// Tags that are not JSON objects.
pub fn concat(parts: Vec<Body>) -> Result<Body, String> {
    let mut docs = Vec::new();
    for part in parts {
        docs.extend(part.into_documents()?);
    }
    Ok(Body::from_documents(&docs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::NamedScore;

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
            .map(|p| p.as_ref().map_or(0, Body::roots))
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
}
