//! The seam between the generated WIT types and ours: the flat `batch` <-> a
//! `Vec<Document>` tree, and our `Error` -> the WIT `error`.
//!
//! # Flattening
//!
//! A batch lists every document of the request once, in depth-first pre-order:
//! a root, then each of its chunk subtrees in order, then each of its match
//! subtrees in order, then the next root. A child's `parent` is its parent's index
//! in `docs` and its `relation` is `chunk` or `match`; a root has no parent and
//! relation `root`. `embedding-dim` is the length of the document's embedding
//! (0: none); the embeddings are concatenated in `docs` order in `embeddings`.
//! `tags` is a JSON object as text, `none` when there are no tags. `scores` is a
//! list (written in name order).
//!
//! The reader is lenient about order: any list where every parent comes before
//! its children rebuilds the same tree (children keep their relative order). The
//! writer always emits pre-order. Neither recurses, so deep trees cannot
//! overflow the guest's stack.

use std::mem;

use serde_json::{Map, Value};

use crate::__bindings::jina::executor::types as wit;
use crate::{Document, Error, NamedScore, Result};

/// Rebuild the document trees of a batch. Fails with `bad-request` naming the
/// index of the first malformed document.
pub(crate) fn from_batch(batch: wit::Batch) -> Result<Vec<Document>> {
    let wit::Batch {
        docs: flat,
        embeddings,
    } = batch;
    let n = flat.len();
    if u32::try_from(n).is_err() {
        return Err(Error::bad_request(format!(
            "batch has {n} documents, more than u32::MAX"
        )));
    }

    // Pass 1, forwards: validate and convert each document on its own.
    let mut nodes: Vec<Document> = Vec::with_capacity(n);
    let mut links: Vec<Option<(usize, wit::Relation)>> = Vec::with_capacity(n);
    let mut offset = 0usize;
    for (i, doc) in flat.into_iter().enumerate() {
        let bad =
            |what: String| Error::bad_request(format!("batch doc {i} ({:?}): {what}", doc.id));
        let link = match (doc.parent, doc.relation) {
            (None, wit::Relation::Root) => None,
            (None, relation) => {
                return Err(bad(format!("relation {relation:?} needs a parent")));
            }
            (Some(_), wit::Relation::Root) => {
                return Err(bad("relation root must not have a parent".into()));
            }
            (Some(p), relation) if (p as usize) < i => Some((p as usize, relation)),
            (Some(p), _) => {
                return Err(bad(format!(
                    "parent index {p} does not come before the document"
                )));
            }
        };
        let dim = doc.embedding_dim as usize;
        let embedding = if dim == 0 {
            None
        } else {
            match embeddings.get(offset..offset + dim) {
                Some(slice) => Some(slice.to_vec()),
                None => {
                    return Err(bad(format!(
                        "embedding-dim {dim} at offset {offset} runs past the {} embedding values",
                        embeddings.len()
                    )));
                }
            }
        };
        offset += dim;
        let tags = match &doc.tags {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(bad("tags must be a JSON object".into())),
                Err(err) => return Err(bad(format!("tags are not valid JSON: {err}"))),
            },
        };
        let scores = doc
            .scores
            .into_iter()
            .map(|s| {
                let score = NamedScore {
                    value: s.value,
                    op_name: s.op_name,
                    description: s.description,
                };
                (s.name, score)
            })
            .collect();
        nodes.push(Document {
            id: doc.id,
            text: doc.text,
            blob: doc.blob,
            uri: doc.uri,
            mime_type: doc.mime_type,
            embedding,
            tags,
            scores,
            chunks: Vec::new(),
            matches: Vec::new(),
        });
        links.push(link);
    }
    if offset != embeddings.len() {
        return Err(Error::bad_request(format!(
            "batch embedding-dims sum to {offset} but it carries {} embedding values",
            embeddings.len()
        )));
    }

    // Pass 2, backwards: every child is complete before its parent is reached
    // (children come later), so move it into the parent. Children arrive in
    // reverse and are flipped once their parent is complete.
    let mut roots = Vec::new();
    while let Some(mut node) = nodes.pop() {
        node.chunks.reverse();
        node.matches.reverse();
        match links.pop().flatten() {
            None => roots.push(node),
            Some((p, wit::Relation::Chunk)) => nodes[p].chunks.push(node),
            Some((p, _)) => nodes[p].matches.push(node),
        }
    }
    roots.reverse();
    Ok(roots)
}

/// Flatten document trees into a batch (depth-first pre-order).
pub(crate) fn into_batch(docs: Vec<Document>) -> wit::Batch {
    let mut flat = Vec::with_capacity(docs.len());
    let mut embeddings = Vec::new();
    // An explicit stack instead of recursion: (document, parent index, relation).
    let mut stack: Vec<(Document, Option<u32>, wit::Relation)> = docs
        .into_iter()
        .rev()
        .map(|d| (d, None, wit::Relation::Root))
        .collect();
    while let Some((mut doc, parent, relation)) = stack.pop() {
        let index = flat.len() as u32;
        // Pushed in reverse so chunks pop first, each subtree before the next.
        let matches = mem::take(&mut doc.matches);
        let chunks = mem::take(&mut doc.chunks);
        stack.extend(
            matches
                .into_iter()
                .rev()
                .map(|m| (m, Some(index), wit::Relation::Match)),
        );
        stack.extend(
            chunks
                .into_iter()
                .rev()
                .map(|c| (c, Some(index), wit::Relation::Chunk)),
        );

        let embedding_dim = match doc.embedding {
            Some(e) => {
                embeddings.extend_from_slice(&e);
                e.len() as u32
            }
            None => 0,
        };
        let tags = if doc.tags.is_empty() {
            None
        } else {
            Some(Value::Object(doc.tags).to_string())
        };
        let scores = doc
            .scores
            .into_iter()
            .map(|(name, s)| wit::NamedScore {
                name,
                value: s.value,
                op_name: s.op_name,
                description: s.description,
            })
            .collect();
        flat.push(wit::Document {
            id: doc.id,
            parent,
            relation,
            text: doc.text,
            blob: doc.blob,
            uri: doc.uri,
            mime_type: doc.mime_type,
            embedding_dim,
            tags,
            scores,
        });
    }
    wit::Batch {
        docs: flat,
        embeddings,
    }
}

impl From<Error> for wit::Error {
    fn from(err: Error) -> Self {
        use crate::ErrorKind as K;
        let kind = match err.kind {
            K::BadRequest => wit::ErrorKind::BadRequest,
            K::BadConfig => wit::ErrorKind::BadConfig,
            K::ReadOnly => wit::ErrorKind::ReadOnly,
            K::Io => wit::ErrorKind::Io,
            K::Internal => wit::ErrorKind::Internal,
        };
        wit::Error {
            kind,
            message: err.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn tree() -> Vec<Document> {
        let mut q = Document::new("q")
            .with_text("query")
            .with_embedding(vec![1.0, 2.0])
            .with_tag("k", json!({"nested": [1, 2]}));
        q.set_score(
            "cosine",
            NamedScore {
                value: 0.25,
                op_name: Some("op".into()),
                description: None,
            },
        );
        let q = q
            .with_chunk(
                Document::new("c0")
                    .with_text("part")
                    .with_chunk(Document::new("c0c0").with_embedding(vec![3.0])),
            )
            .with_chunk(Document::new("c1").with_blob(vec![0u8, 1, 2]))
            .with_match(
                Document::new("m0")
                    .with_score("cosine", 0.9)
                    .with_match(Document::new("m0m0").with_embedding(vec![4.0, 5.0, 6.0])),
            );
        let plain = Document::new("plain")
            .with_uri("file:///x")
            .with_mime_type("text/plain");
        vec![q, plain, Document::default()]
    }

    #[test]
    fn round_trip_preserves_the_tree() {
        let docs = tree();
        let batch = into_batch(docs.clone());
        assert_eq!(from_batch(batch).unwrap(), docs);
    }

    #[test]
    fn batch_is_pre_order_with_parent_indices() {
        let batch = into_batch(tree());
        let order: Vec<(&str, Option<u32>, wit::Relation, u32)> = batch
            .docs
            .iter()
            .map(|d| (d.id.as_str(), d.parent, d.relation, d.embedding_dim))
            .collect();
        use wit::Relation::*;
        assert_eq!(
            order,
            vec![
                ("q", None, Root, 2),
                ("c0", Some(0), Chunk, 0),
                ("c0c0", Some(1), Chunk, 1),
                ("c1", Some(0), Chunk, 0),
                ("m0", Some(0), Match, 0),
                ("m0m0", Some(4), Match, 3),
                ("plain", None, Root, 0),
                ("", None, Root, 0),
            ]
        );
        assert_eq!(batch.embeddings, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            batch.docs[0].tags.as_deref(),
            Some(r#"{"k":{"nested":[1,2]}}"#)
        );
        assert_eq!(batch.docs[1].tags, None);
    }

    #[test]
    fn empty_batch_round_trips() {
        let batch = into_batch(Vec::new());
        assert!(batch.docs.is_empty() && batch.embeddings.is_empty());
        assert!(from_batch(batch).unwrap().is_empty());
    }

    #[test]
    fn deep_trees_do_not_recurse() {
        let depth = 100_000;
        let mut doc = Document::new("leaf");
        for i in 0..depth {
            doc = Document::new(i.to_string()).with_chunk(doc);
        }
        let batch = into_batch(vec![doc]);
        assert_eq!(batch.docs.len(), depth + 1);
        let mut docs = from_batch(batch).unwrap();
        // Unlink iteratively: the derived Drop would recurse 100k deep.
        let mut next = docs.pop();
        while let Some(mut d) = next {
            next = d.chunks.pop();
        }
    }

    #[test]
    fn reader_accepts_any_parent_first_order() {
        // Root, then its match, then its chunk: not pre-order, still a valid tree.
        let mut batch = into_batch(vec![
            Document::new("r")
                .with_chunk(Document::new("c"))
                .with_match(Document::new("m")),
        ]);
        batch.docs.swap(1, 2);
        let docs = from_batch(batch).unwrap();
        assert_eq!(docs[0].chunks[0].id, "c");
        assert_eq!(docs[0].matches[0].id, "m");
    }

    fn expect_bad(batch: wit::Batch, needle: &str) {
        let err = from_batch(batch).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message.contains(needle),
            "{:?} does not contain {needle:?}",
            err.message
        );
    }

    #[test]
    fn rejects_malformed_batches_naming_the_doc() {
        let base = || into_batch(tree());

        let mut b = base();
        b.docs[2].parent = Some(2);
        expect_bad(b, "batch doc 2");

        let mut b = base();
        b.docs[1].parent = Some(5);
        expect_bad(b, "batch doc 1");

        let mut b = base();
        b.docs[1].relation = wit::Relation::Root;
        expect_bad(b, "batch doc 1");

        let mut b = base();
        b.docs[6].relation = wit::Relation::Chunk;
        expect_bad(b, "batch doc 6");

        let mut b = base();
        b.docs[0].tags = Some("[1]".into());
        expect_bad(b, "batch doc 0");

        let mut b = base();
        b.docs[0].tags = Some("{".into());
        expect_bad(b, "batch doc 0");

        let mut b = base();
        b.docs[5].embedding_dim = 4;
        expect_bad(b, "batch doc 5");

        let mut b = base();
        b.embeddings.push(7.0);
        expect_bad(b, "sum to 6");
    }
}
