//! The seam between the generated WIT types and ours: the columnar `batch` <-> a
//! `Vec<Document>` tree, and our `Error` -> the WIT `error`.
//!
//! # The columnar batch
//!
//! A batch holds `n` documents as columns: every per-document column (`ids`,
//! `parents`, `relations`, `texts`, `blobs`, `uris`, `mime-types`, `tags`,
//! `embedding-dims`) has exactly `n` entries, entry `i` belonging to document
//! `i`, with `n` = the number of `ids.ends`. So a batch costs a constant number
//! of allocations, however many documents it carries.
//!
//! - Strings are packed: document `i`'s string is `data[ends[i-1]..ends[i]]`
//!   (`ends[-1]` = 0), the ends never decrease and the last one is `data`'s
//!   length. Optional columns add `present[i]`; an absent entry has an empty span.
//! - `tags` is a JSON object as text, absent when the document has no tags.
//! - `embedding-dims[i]` is the length of document `i`'s embedding (0: none); the
//!   embeddings are concatenated in document order in `embeddings`.
//! - `scores` is sparse: one `named-score` per (document, name), naming its
//!   document by index. The writer emits documents in order, names in name order.
//!
//! # Flattening and checking: shared with the host
//!
//! A batch has the columns of the host's wire body, so the flattening (depth-first
//! pre-order), the checks and the rebuilding are the jina-doc-columns crate's, the
//! same code the host runs on an executor's output: this module only moves the
//! generated types' buffers into its [`Columns`] and back. Neither direction
//! recurses, so deep trees cannot overflow the guest's stack.
//!
//! The reader trusts nothing: a column of the wrong length, decreasing ends, a
//! span off a UTF-8 boundary, an absent entry with a non-empty span, a parent not
//! before its child, a tree deeper than the host's `MAX_DEPTH`, a score of a
//! document that does not exist... each fails with `bad-request` naming the column
//! and the document (`batch texts[3]: ...`). It never panics.

use jina_doc_columns::{Column, Columns, Relation, Score, drop_tree};

use crate::__bindings::jina::executor::types as wit;
use crate::{Document, Error, NamedScore, Result};

/// `bad-request`: `batch <column>[<index>]: <what>`.
#[cold]
#[inline(never)]
fn bad(err: jina_doc_columns::Error) -> Error {
    Error::bad_request(format!("batch {err}"))
}

/// Rebuild the document trees of a batch. Fails with `bad-request` naming the
/// column and the index of the first malformed document.
pub(crate) fn from_batch(batch: wit::Batch) -> Result<Vec<Document>> {
    let columns = columns_of(batch);
    columns.validate().map_err(bad)?;
    columns.into_documents().map_err(bad)
}

/// Flatten document trees into a batch (depth-first pre-order).
pub(crate) fn into_batch(docs: Vec<Document>) -> wit::Batch {
    let columns = Columns::from_documents(&docs);
    // A handler may return a tree of any depth; its derived drop would recurse.
    drop_tree(docs);
    batch_of(columns)
}

/// The batch's buffers moved into columns (relations and scores converted).
fn columns_of(batch: wit::Batch) -> Columns {
    let optional = |c: wit::OptionalStringColumn| Column {
        present: c.present,
        data: c.data,
        ends: c.ends,
    };
    Columns {
        ids: Column {
            present: Vec::new(),
            data: batch.ids.data,
            ends: batch.ids.ends,
        },
        parents: batch.parents,
        relations: batch
            .relations
            .into_iter()
            .map(|r| match r {
                wit::Relation::Root => Relation::Root,
                wit::Relation::Chunk => Relation::Chunk,
                wit::Relation::Match => Relation::Match,
            })
            .collect(),
        texts: optional(batch.texts),
        blobs: Column {
            present: batch.blobs.present,
            data: batch.blobs.data,
            ends: batch.blobs.ends,
        },
        uris: optional(batch.uris),
        mime_types: optional(batch.mime_types),
        tags: optional(batch.tags),
        embedding_dims: batch.embedding_dims,
        embeddings: batch.embeddings,
        scores: batch
            .scores
            .into_iter()
            .map(|s| Score {
                doc: s.doc,
                name: s.name,
                value: s.value,
                op_name: s.op_name,
                description: s.description,
            })
            .collect(),
    }
}

/// Columns' buffers moved into a batch.
fn batch_of(c: Columns) -> wit::Batch {
    let optional = |c: Column<String>| wit::OptionalStringColumn {
        present: c.present,
        data: c.data,
        ends: c.ends,
    };
    wit::Batch {
        ids: wit::StringColumn {
            data: c.ids.data,
            ends: c.ids.ends,
        },
        parents: c.parents,
        relations: c
            .relations
            .into_iter()
            .map(|r| match r {
                Relation::Root => wit::Relation::Root,
                Relation::Chunk => wit::Relation::Chunk,
                Relation::Match => wit::Relation::Match,
            })
            .collect(),
        texts: optional(c.texts),
        blobs: wit::OptionalBytesColumn {
            present: c.blobs.present,
            data: c.blobs.data,
            ends: c.blobs.ends,
        },
        uris: optional(c.uris),
        mime_types: optional(c.mime_types),
        tags: optional(c.tags),
        embedding_dims: c.embedding_dims,
        embeddings: c.embeddings,
        scores: c
            .scores
            .into_iter()
            .map(|s| wit::NamedScore {
                doc: s.doc,
                name: s.name,
                value: s.value,
                op_name: s.op_name,
                description: s.description,
            })
            .collect(),
    }
}

// Our document tree, as the shared flattening reads and builds it.
jina_doc_columns::impl_node!(Document, NamedScore);

impl From<Error> for wit::Error {
    fn from(err: Error) -> Self {
        use crate::ErrorKind as K;
        let kind = match err.kind {
            K::BadRequest => wit::ErrorKind::BadRequest,
            K::BadConfig => wit::ErrorKind::BadConfig,
            K::ReadOnly => wit::ErrorKind::ReadOnly,
            K::Io => wit::ErrorKind::Io,
            K::Internal => wit::ErrorKind::Internal,
            K::Capacity => wit::ErrorKind::Capacity,
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
                    .with_score("l2", 1.5)
                    .with_match(Document::new("m0m0").with_embedding(vec![4.0, 5.0, 6.0])),
            );
        let plain = Document::new("plain")
            .with_uri("file:///x")
            .with_mime_type("text/plain")
            .with_text("");
        vec![q, plain, Document::default()]
    }

    /// Entry `i` of a packed string column.
    fn entry<'a>(data: &'a str, ends: &[u32], i: usize) -> &'a str {
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        &data[start..ends[i] as usize]
    }

    /// Replace entry `i` of an optional string column, repacking it.
    fn set(col: &mut wit::OptionalStringColumn, i: usize, value: Option<&str>) {
        let mut out = Column::<String>::default();
        for j in 0..col.ends.len() {
            let old = col.present[j].then(|| entry(&col.data, &col.ends, j));
            out.push(if j == i { value } else { old });
        }
        *col = wit::OptionalStringColumn {
            present: out.present,
            data: out.data,
            ends: out.ends,
        };
    }

    #[test]
    fn round_trip_preserves_the_tree() {
        let docs = tree();
        let batch = into_batch(docs.clone());
        assert_eq!(from_batch(batch).unwrap(), docs);
    }

    #[test]
    fn batch_is_columnar_pre_order_with_parent_indices() {
        let batch = into_batch(tree());
        let n = batch.ids.ends.len();
        let order: Vec<(&str, Option<u32>, wit::Relation, u32)> = (0..n)
            .map(|i| {
                (
                    entry(&batch.ids.data, &batch.ids.ends, i),
                    batch.parents[i],
                    batch.relations[i],
                    batch.embedding_dims[i],
                )
            })
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
        assert_eq!(batch.ids.data, "qc0c0c0c1m0m0m0plain");
        assert_eq!(batch.ids.ends, vec![1, 3, 7, 9, 11, 15, 20, 20]);
        assert_eq!(batch.embeddings, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        // Optional columns: one slot per document, empty span when absent; an
        // empty text is present.
        assert_eq!(batch.texts.data, "querypart");
        assert_eq!(
            batch.texts.present,
            vec![true, true, false, false, false, false, true, false]
        );
        assert_eq!(batch.texts.ends, vec![5, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(batch.blobs.data, vec![0, 1, 2]);
        assert_eq!(batch.blobs.ends, vec![0, 0, 0, 3, 3, 3, 3, 3]);
        assert_eq!(batch.uris.data, "file:///x");
        assert_eq!(batch.mime_types.data, "text/plain");
        assert_eq!(batch.tags.data, r#"{"k":{"nested":[1,2]}}"#);
        assert_eq!(
            batch.tags.present,
            vec![true, false, false, false, false, false, false, false]
        );

        // Scores: sparse, documents in order, names in name order.
        let scores: Vec<(u32, &str, f64, Option<&str>)> = batch
            .scores
            .iter()
            .map(|s| (s.doc, s.name.as_str(), s.value, s.op_name.as_deref()))
            .collect();
        assert_eq!(
            scores,
            vec![
                (0, "cosine", 0.25, Some("op")),
                (4, "cosine", 0.9, None),
                (4, "l2", 1.5, None),
            ]
        );
    }

    #[test]
    fn empty_batch_round_trips() {
        let batch = into_batch(Vec::new());
        assert!(batch.ids.ends.is_empty() && batch.embeddings.is_empty());
        assert!(from_batch(batch).unwrap().is_empty());
    }

    #[test]
    fn multibyte_strings_round_trip() {
        let docs = vec![
            Document::new("é")
                .with_text("日本語")
                .with_tag("ключ", json!("значение")),
            Document::new("🦀").with_text("").with_uri("ü"),
        ];
        assert_eq!(from_batch(into_batch(docs.clone())).unwrap(), docs);
    }

    /// Flattening never recurses, whatever a handler returns; reading refuses
    /// a tree past the host's depth limit, naming the document.
    #[test]
    fn deep_trees_do_not_recurse_and_are_refused() {
        let depth = 100_000;
        let mut doc = Document::new("leaf");
        for i in 0..depth {
            doc = Document::new(i.to_string()).with_chunk(doc);
        }
        let batch = into_batch(vec![doc]);
        assert_eq!(batch.ids.ends.len(), depth + 1);
        expect_bad(
            batch,
            "batch document 33: documents nest more than 32 levels",
        );
    }

    #[test]
    fn reader_accepts_any_parent_first_order() {
        // Root, then its match, then its chunk: not pre-order, still a valid tree.
        let mut batch = into_batch(vec![
            Document::new("r"),
            Document::new("m").with_score("s", 1.0),
            Document::new("c"),
        ]);
        batch.parents = vec![None, Some(0), Some(0)];
        batch.relations = vec![
            wit::Relation::Root,
            wit::Relation::Match,
            wit::Relation::Chunk,
        ];
        let docs = from_batch(batch).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].chunks[0].id, "c");
        assert_eq!(docs[0].matches[0].id, "m");
        assert_eq!(docs[0].matches[0].scores["s"].value, 1.0);
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
    fn rejects_a_malformed_tree_naming_the_doc() {
        let base = || into_batch(tree());

        let mut b = base();
        b.parents[2] = Some(2);
        expect_bad(b, "batch parents[2]: 2 does not come before it");

        let mut b = base();
        b.parents[1] = Some(5);
        expect_bad(b, "batch parents[1]");

        let mut b = base();
        b.relations[1] = wit::Relation::Root;
        expect_bad(
            b,
            "batch relations[1]: Root does not agree with parent Some(0)",
        );

        let mut b = base();
        b.relations[6] = wit::Relation::Chunk;
        expect_bad(
            b,
            "batch relations[6]: Chunk does not agree with parent None",
        );

        let mut b = base();
        set(&mut b.tags, 0, Some("[1]"));
        expect_bad(b, "batch tags[0]: not a JSON object");

        let mut b = base();
        set(&mut b.tags, 2, Some("{"));
        expect_bad(b, "batch tags[2]: not valid JSON");

        let mut b = base();
        b.embedding_dims[5] = 4;
        expect_bad(b, "batch documents declare 7 embedding values");

        let mut b = base();
        b.embedding_dims[5] = u32::MAX;
        expect_bad(b, "batch documents declare 4294967298 embedding values");

        let mut b = base();
        b.embeddings.push(7.0);
        expect_bad(b, "but the body carries 7");
    }

    #[test]
    fn rejects_malformed_columns_naming_column_and_doc() {
        let base = || into_batch(tree());

        // Short and long columns.
        let mut b = base();
        b.relations.pop();
        expect_bad(b, "batch column relations: 7 entries for 8 documents");
        let mut b = base();
        b.parents.push(None);
        expect_bad(b, "batch column parents: 9 entries for 8 documents");
        let mut b = base();
        b.texts.present.pop();
        expect_bad(b, "batch column texts: 7 presence flags for 8 documents");
        let mut b = base();
        b.blobs.ends.pop();
        expect_bad(b, "batch column blobs: 7 entries for 8 documents");
        let mut b = base();
        b.embedding_dims.truncate(3);
        expect_bad(b, "batch column embedding_dims: 3 entries for 8 documents");
        let mut b = base();
        b.mime_types.ends.push(10);
        expect_bad(b, "batch column mime_types: 9 entries for 8 documents");

        // Ends that decrease, or do not end at the data's end.
        let mut b = base();
        b.ids.ends[2] = 2;
        expect_bad(b, "batch ids[2]: offsets go backwards");
        let mut b = base();
        b.ids.ends[0] = 19;
        expect_bad(b, "batch ids[1]: offsets go backwards");
        let mut b = base();
        b.ids.data.push('x');
        expect_bad(b, "batch column ids: offsets end at 20, data is 21 bytes");
        let mut b = base();
        b.blobs.ends[3] = 40;
        expect_bad(b, "batch blobs[4]: offsets go backwards");
        let mut b = into_batch(Vec::new());
        b.uris.data.push('x');
        expect_bad(b, "batch column uris: offsets end at 0, data is 1 bytes");

        // A span off a UTF-8 boundary.
        let mut b = into_batch(vec![
            Document::new("a").with_text("é"),
            Document::new("b").with_text("x"),
        ]);
        b.texts.ends[0] = 1;
        expect_bad(b, "batch texts[0]: span does not fall on a UTF-8 boundary");
        let mut b = into_batch(vec![Document::new("é"), Document::new("b")]);
        b.ids.ends[0] = 1;
        expect_bad(b, "batch ids[0]: span does not fall on a UTF-8 boundary");

        // An absent entry with a non-empty span.
        let mut b = base();
        b.texts.present[0] = false;
        expect_bad(b, "batch texts[0]: absent but has data");
        let mut b = base();
        b.blobs.present[3] = false;
        expect_bad(b, "batch blobs[3]: absent but has data");

        // A score of a document that does not exist.
        let mut b = base();
        b.scores[1].doc = 8;
        expect_bad(
            b,
            "batch scores[1]: document 8 does not exist (8 documents)",
        );
        let mut b = into_batch(Vec::new());
        b.scores.push(wit::NamedScore {
            doc: 0,
            name: "s".into(),
            value: 1.0,
            op_name: None,
            description: None,
        });
        expect_bad(
            b,
            "batch scores[0]: document 0 does not exist (0 documents)",
        );
    }

    #[test]
    fn never_panics_on_arbitrary_ends() {
        let values = [0, 1, 2, 3, 5, 9, 19, 20, 21, u32::MAX];
        let base = into_batch(tree());
        for i in 0..base.ids.ends.len() {
            for &v in &values {
                for column in 0..6 {
                    let mut b = into_batch(tree());
                    let ends = match column {
                        0 => &mut b.ids.ends,
                        1 => &mut b.texts.ends,
                        2 => &mut b.blobs.ends,
                        3 => &mut b.uris.ends,
                        4 => &mut b.mime_types.ends,
                        _ => &mut b.tags.ends,
                    };
                    ends[i] = v;
                    let _ = from_batch(b);
                }
            }
        }
    }
}
