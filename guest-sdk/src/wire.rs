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
//! # Flattening
//!
//! The documents are listed in depth-first pre-order: a root, then each of its
//! chunk subtrees in order, then each of its match subtrees in order, then the
//! next root. A child's `parents` entry is its parent's index and its `relations`
//! entry is `chunk` or `match`; a root has no parent and relation `root`.
//!
//! The reader is lenient about order: any list where every parent comes before
//! its children rebuilds the same tree (children keep their relative order). The
//! writer always emits pre-order. Neither recurses, so deep trees cannot
//! overflow the guest's stack.
//!
//! The reader trusts nothing: a column of the wrong length, decreasing ends, a
//! span off a UTF-8 boundary, an absent entry with a non-empty span, a score of a
//! document that does not exist... each fails with `bad-request` naming the column
//! and the document (`batch texts[3]: ...`). It never panics.

use std::fmt::{Display, Write as _};
use std::mem;
use std::ops::Range;

use serde_json::{Map, Value};

use crate::__bindings::jina::executor::types as wit;
use crate::{Document, Error, NamedScore, Result};

/// `bad-request`: `batch <column>[<index>]: <what>`.
#[cold]
#[inline(never)]
fn bad(column: impl Display, index: usize, what: impl Display) -> Error {
    Error::bad_request(format!("batch {column}[{index}]: {what}"))
}

/// Check that a per-document column has exactly `n` entries.
fn check_len(column: &str, len: usize, n: usize) -> Result<()> {
    check_part_len(column, "", len, n)
}

/// [`check_len`] for `<column><part>` (`texts.ends`), named only on failure.
fn check_part_len(column: &str, part: &str, len: usize, n: usize) -> Result<()> {
    if len == n {
        return Ok(());
    }
    let (index, what) = if len < n {
        (len, "missing")
    } else {
        (n, "extra entry")
    };
    Err(bad(
        format_args!("{column}{part}"),
        index,
        format_args!("{what}: the column has {len} entries for {n} documents"),
    ))
}

/// Check a packed column's shape: `n` ends (and `present` flags), the last end
/// at the end of the data. Spans are checked one by one in [`span`].
fn check_packed(
    column: &str,
    present: Option<usize>,
    ends: &[u32],
    data_len: usize,
    n: usize,
) -> Result<()> {
    if let Some(len) = present {
        check_part_len(column, ".present", len, n)?;
    }
    check_part_len(column, ".ends", ends.len(), n)?;
    let last = ends.last().map_or(0, |&e| e as usize);
    if last != data_len {
        return Err(bad(
            column,
            n.saturating_sub(1),
            format_args!("the last end is {last} but the data has {data_len} bytes"),
        ));
    }
    Ok(())
}

/// The byte range of entry `i` of a packed column.
#[inline]
fn span(column: &str, ends: &[u32], i: usize, data_len: usize) -> Result<Range<usize>> {
    let start = match i.checked_sub(1) {
        None => 0,
        Some(prev) => match ends.get(prev) {
            Some(&e) => e as usize,
            None => return Err(bad(column, i, "missing end")),
        },
    };
    let end = match ends.get(i) {
        Some(&e) => e as usize,
        None => return Err(bad(column, i, "missing end")),
    };
    if end < start {
        return Err(bad(
            column,
            i,
            format_args!("ends decrease ({end} after {start})"),
        ));
    }
    if end > data_len {
        return Err(bad(
            column,
            i,
            format_args!("span {start}..{end} runs past the {data_len} bytes of data"),
        ));
    }
    Ok(start..end)
}

/// Entry `i` of a packed string column.
#[inline]
fn str_at<'a>(column: &str, data: &'a str, ends: &[u32], i: usize) -> Result<&'a str> {
    let range = span(column, ends, i, data.len())?;
    data.get(range)
        .ok_or_else(|| bad(column, i, "span does not fall on a UTF-8 boundary"))
}

/// Whether entry `i` of an optional column is present, given whether its span
/// is empty (an absent entry must have an empty span).
#[inline]
fn is_present(column: &str, present: &[bool], i: usize, span_is_empty: bool) -> Result<bool> {
    match present.get(i) {
        Some(&true) => Ok(true),
        Some(&false) if span_is_empty => Ok(false),
        Some(&false) => Err(bad(column, i, "absent entry has a non-empty span")),
        None => Err(bad(column, i, "missing present flag")),
    }
}

/// Entry `i` of an optional packed string column, copied out.
#[inline]
fn opt_string(column: &str, col: &wit::OptionalStringColumn, i: usize) -> Result<Option<String>> {
    Ok(opt_str(column, col, i)?.map(str::to_owned))
}

/// Entry `i` of an optional packed string column, borrowed.
#[inline]
fn opt_str<'a>(
    column: &str,
    col: &'a wit::OptionalStringColumn,
    i: usize,
) -> Result<Option<&'a str>> {
    let s = str_at(column, &col.data, &col.ends, i)?;
    Ok(is_present(column, &col.present, i, s.is_empty())?.then_some(s))
}

/// Entry `i` of an optional packed byte column, copied out.
#[inline]
fn opt_bytes(column: &str, col: &wit::OptionalBytesColumn, i: usize) -> Result<Option<Vec<u8>>> {
    let range = span(column, &col.ends, i, col.data.len())?;
    let bytes = col.data.get(range).unwrap_or_default();
    Ok(is_present(column, &col.present, i, bytes.is_empty())?.then(|| bytes.to_vec()))
}

/// Rebuild the document trees of a batch. Fails with `bad-request` naming the
/// column and the index of the first malformed document.
pub(crate) fn from_batch(batch: wit::Batch) -> Result<Vec<Document>> {
    let wit::Batch {
        ids,
        parents,
        relations,
        texts,
        blobs,
        uris,
        mime_types,
        tags,
        embedding_dims,
        embeddings,
        scores,
    } = batch;
    let n = ids.ends.len();
    if u32::try_from(n).is_err() {
        return Err(Error::bad_request(format!(
            "batch has {n} documents, more than u32::MAX"
        )));
    }

    // The shape of every column first, so the pass below only checks spans.
    check_packed("ids", None, &ids.ends, ids.data.len(), n)?;
    check_len("parents", parents.len(), n)?;
    check_len("relations", relations.len(), n)?;
    check_packed(
        "texts",
        Some(texts.present.len()),
        &texts.ends,
        texts.data.len(),
        n,
    )?;
    check_packed(
        "blobs",
        Some(blobs.present.len()),
        &blobs.ends,
        blobs.data.len(),
        n,
    )?;
    check_packed(
        "uris",
        Some(uris.present.len()),
        &uris.ends,
        uris.data.len(),
        n,
    )?;
    check_packed(
        "mime-types",
        Some(mime_types.present.len()),
        &mime_types.ends,
        mime_types.data.len(),
        n,
    )?;
    check_packed(
        "tags",
        Some(tags.present.len()),
        &tags.ends,
        tags.data.len(),
        n,
    )?;
    check_len("embedding-dims", embedding_dims.len(), n)?;

    // Pass 1, forwards: validate and convert each document on its own.
    let mut nodes: Vec<Document> = Vec::with_capacity(n);
    let mut links: Vec<Option<(usize, wit::Relation)>> = Vec::with_capacity(n);
    let mut offset = 0usize;
    let columns = parents.iter().zip(&relations).zip(&embedding_dims);
    for (i, ((&parent, &relation), &dim)) in columns.enumerate() {
        let link = match (parent, relation) {
            (None, wit::Relation::Root) => None,
            (None, relation) => {
                return Err(bad(
                    "relations",
                    i,
                    format_args!(
                        "relation {} needs a parent",
                        match relation {
                            wit::Relation::Match => "match",
                            _ => "chunk",
                        }
                    ),
                ));
            }
            (Some(_), wit::Relation::Root) => {
                return Err(bad("relations", i, "relation root must not have a parent"));
            }
            (Some(p), relation) if (p as usize) < i => Some((p as usize, relation)),
            (Some(p), _) => {
                return Err(bad(
                    "parents",
                    i,
                    format_args!("parent index {p} does not come before the document"),
                ));
            }
        };
        let id = str_at("ids", &ids.data, &ids.ends, i)?.to_owned();
        let text = opt_string("texts", &texts, i)?;
        let blob = opt_bytes("blobs", &blobs, i)?;
        let uri = opt_string("uris", &uris, i)?;
        let mime_type = opt_string("mime-types", &mime_types, i)?;
        let tags = match opt_str("tags", &tags, i)? {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(bad("tags", i, "tags must be a JSON object")),
                Err(err) => {
                    return Err(bad(
                        "tags",
                        i,
                        format_args!("tags are not valid JSON: {err}"),
                    ));
                }
            },
        };
        let dim = dim as usize;
        let embedding = if dim == 0 {
            None
        } else {
            match offset
                .checked_add(dim)
                .and_then(|end| embeddings.get(offset..end))
            {
                Some(slice) => Some(slice.to_vec()),
                None => {
                    return Err(bad(
                        "embedding-dims",
                        i,
                        format_args!(
                            "dim {dim} at offset {offset} runs past the {} embedding values",
                            embeddings.len()
                        ),
                    ));
                }
            }
        };
        offset += dim;
        nodes.push(Document {
            id,
            text,
            blob,
            uri,
            mime_type,
            embedding,
            tags,
            scores: Default::default(),
            chunks: Vec::new(),
            matches: Vec::new(),
        });
        links.push(link);
    }
    if offset != embeddings.len() {
        return Err(Error::bad_request(format!(
            "batch embedding-dims sum to {offset} but embeddings has {} values",
            embeddings.len()
        )));
    }

    // Scores are sparse: each names its document (a later duplicate name wins).
    for (k, s) in scores.into_iter().enumerate() {
        let Some(node) = nodes.get_mut(s.doc as usize) else {
            return Err(bad(
                "scores",
                k,
                format_args!("doc {} is out of range for {n} documents", s.doc),
            ));
        };
        node.scores.insert(
            s.name,
            NamedScore {
                value: s.value,
                op_name: s.op_name,
                description: s.description,
            },
        );
    }

    // A batch of roots only (the common case) is already the answer.
    let root_count = links.iter().filter(|l| l.is_none()).count();
    if root_count == n {
        return Ok(nodes);
    }

    // Pass 2, backwards: every child is complete before its parent is reached
    // (children come later), so move it into the parent. Children arrive in
    // reverse and are flipped once their parent is complete.
    let mut roots = Vec::with_capacity(root_count);
    while let Some(mut node) = nodes.pop() {
        node.chunks.reverse();
        node.matches.reverse();
        match links.pop().flatten() {
            None => roots.push(node),
            Some((p, wit::Relation::Chunk)) => match nodes.get_mut(p) {
                Some(parent) => parent.chunks.push(node),
                None => return Err(bad("parents", nodes.len(), "parent index out of range")),
            },
            Some((p, _)) => match nodes.get_mut(p) {
                Some(parent) => parent.matches.push(node),
                None => return Err(bad("parents", nodes.len(), "parent index out of range")),
            },
        }
    }
    roots.reverse();
    Ok(roots)
}

/// What a batch will hold, counted before writing so every column is allocated
/// once.
#[derive(Default)]
struct Sizes {
    docs: usize,
    ids: usize,
    texts: usize,
    blobs: usize,
    uris: usize,
    mime_types: usize,
    embeddings: usize,
    scores: usize,
}

impl Sizes {
    fn of(docs: &[Document]) -> Sizes {
        let mut s = Sizes::default();
        // Only allocated when some document has children.
        let mut stack: Vec<&Document> = Vec::new();
        for root in docs {
            let mut next = Some(root);
            while let Some(d) = next {
                s.docs += 1;
                s.ids += d.id.len();
                s.texts += d.text.as_ref().map_or(0, String::len);
                s.blobs += d.blob.as_ref().map_or(0, Vec::len);
                s.uris += d.uri.as_ref().map_or(0, String::len);
                s.mime_types += d.mime_type.as_ref().map_or(0, String::len);
                s.embeddings += d.embedding.as_ref().map_or(0, Vec::len);
                s.scores += d.scores.len();
                stack.extend(&d.chunks);
                stack.extend(&d.matches);
                next = stack.pop();
            }
        }
        s
    }
}

// Offsets are u32 on the wire; a wasm32 guest cannot hold 4 GiB of strings.
fn end_of(len: usize) -> u32 {
    len as u32
}

struct OptStrCol {
    present: Vec<bool>,
    data: String,
    ends: Vec<u32>,
}

impl OptStrCol {
    fn with_capacity(n: usize, bytes: usize) -> Self {
        OptStrCol {
            present: Vec::with_capacity(n),
            data: String::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, s: Option<&str>) {
        self.present.push(s.is_some());
        if let Some(s) = s {
            self.data.push_str(s);
        }
        self.ends.push(end_of(self.data.len()));
    }

    fn finish(self) -> wit::OptionalStringColumn {
        wit::OptionalStringColumn {
            present: self.present,
            data: self.data,
            ends: self.ends,
        }
    }
}

/// The columns being written, one entry per document pushed.
struct Writer {
    ids: String,
    id_ends: Vec<u32>,
    parents: Vec<Option<u32>>,
    relations: Vec<wit::Relation>,
    texts: OptStrCol,
    blob_present: Vec<bool>,
    blob_data: Vec<u8>,
    blob_ends: Vec<u32>,
    uris: OptStrCol,
    mime_types: OptStrCol,
    tags: OptStrCol,
    embedding_dims: Vec<u32>,
    embeddings: Vec<f32>,
    scores: Vec<wit::NamedScore>,
}

impl Writer {
    fn new(s: &Sizes) -> Self {
        let n = s.docs;
        Writer {
            ids: String::with_capacity(s.ids),
            id_ends: Vec::with_capacity(n),
            parents: Vec::with_capacity(n),
            relations: Vec::with_capacity(n),
            texts: OptStrCol::with_capacity(n, s.texts),
            blob_present: Vec::with_capacity(n),
            blob_data: Vec::with_capacity(s.blobs),
            blob_ends: Vec::with_capacity(n),
            uris: OptStrCol::with_capacity(n, s.uris),
            mime_types: OptStrCol::with_capacity(n, s.mime_types),
            // Tag text is only known once serialized.
            tags: OptStrCol::with_capacity(n, 0),
            embedding_dims: Vec::with_capacity(n),
            embeddings: Vec::with_capacity(s.embeddings),
            scores: Vec::with_capacity(s.scores),
        }
    }

    /// Write `doc` as the next document and push its children onto `stack`
    /// (in reverse, so chunks pop first, each subtree before the next).
    fn push(
        &mut self,
        mut doc: Document,
        parent: Option<u32>,
        relation: wit::Relation,
        stack: &mut Vec<(Document, u32, wit::Relation)>,
    ) {
        let index = end_of(self.parents.len());
        if !doc.matches.is_empty() || !doc.chunks.is_empty() {
            let matches = mem::take(&mut doc.matches);
            let chunks = mem::take(&mut doc.chunks);
            stack.extend(
                matches
                    .into_iter()
                    .rev()
                    .map(|m| (m, index, wit::Relation::Match)),
            );
            stack.extend(
                chunks
                    .into_iter()
                    .rev()
                    .map(|c| (c, index, wit::Relation::Chunk)),
            );
        }

        self.ids.push_str(&doc.id);
        self.id_ends.push(end_of(self.ids.len()));
        self.parents.push(parent);
        self.relations.push(relation);
        self.texts.push(doc.text.as_deref());
        self.blob_present.push(doc.blob.is_some());
        if let Some(blob) = &doc.blob {
            self.blob_data.extend_from_slice(blob);
        }
        self.blob_ends.push(end_of(self.blob_data.len()));
        self.uris.push(doc.uri.as_deref());
        self.mime_types.push(doc.mime_type.as_deref());
        if doc.tags.is_empty() {
            self.tags.push(None);
        } else {
            // Serialized straight into the column: no string per document.
            let tags = Value::Object(mem::take(&mut doc.tags));
            // Writing into a `String` cannot fail.
            let _ = write!(self.tags.data, "{tags}");
            self.tags.present.push(true);
            self.tags.ends.push(end_of(self.tags.data.len()));
        }
        match &doc.embedding {
            Some(e) => {
                self.embeddings.extend_from_slice(e);
                self.embedding_dims.push(end_of(e.len()));
            }
            None => self.embedding_dims.push(0),
        }
        self.scores
            .extend(doc.scores.into_iter().map(|(name, s)| wit::NamedScore {
                doc: index,
                name,
                value: s.value,
                op_name: s.op_name,
                description: s.description,
            }));
    }

    fn finish(self) -> wit::Batch {
        wit::Batch {
            ids: wit::StringColumn {
                data: self.ids,
                ends: self.id_ends,
            },
            parents: self.parents,
            relations: self.relations,
            texts: self.texts.finish(),
            blobs: wit::OptionalBytesColumn {
                present: self.blob_present,
                data: self.blob_data,
                ends: self.blob_ends,
            },
            uris: self.uris.finish(),
            mime_types: self.mime_types.finish(),
            tags: self.tags.finish(),
            embedding_dims: self.embedding_dims,
            embeddings: self.embeddings,
            scores: self.scores,
        }
    }
}

/// Flatten document trees into a batch (depth-first pre-order).
pub(crate) fn into_batch(docs: Vec<Document>) -> wit::Batch {
    let mut writer = Writer::new(&Sizes::of(&docs));
    // An explicit stack instead of recursion: (document, parent index, relation).
    // Stays unallocated for a batch without children.
    let mut stack = Vec::new();
    for root in docs {
        writer.push(root, None, wit::Relation::Root, &mut stack);
        while let Some((doc, parent, relation)) = stack.pop() {
            writer.push(doc, Some(parent), relation, &mut stack);
        }
    }
    writer.finish()
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
        let mut out = OptStrCol::with_capacity(col.ends.len(), 0);
        for j in 0..col.ends.len() {
            let old = col.present[j].then(|| entry(&col.data, &col.ends, j));
            out.push(if j == i { value } else { old });
        }
        *col = out.finish();
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

    #[test]
    fn deep_trees_do_not_recurse() {
        let depth = 100_000;
        let mut doc = Document::new("leaf");
        for i in 0..depth {
            doc = Document::new(i.to_string()).with_chunk(doc);
        }
        let batch = into_batch(vec![doc]);
        assert_eq!(batch.ids.ends.len(), depth + 1);
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
        expect_bad(b, "batch parents[2]: parent index 2 does not come before");

        let mut b = base();
        b.parents[1] = Some(5);
        expect_bad(b, "batch parents[1]");

        let mut b = base();
        b.relations[1] = wit::Relation::Root;
        expect_bad(
            b,
            "batch relations[1]: relation root must not have a parent",
        );

        let mut b = base();
        b.relations[6] = wit::Relation::Chunk;
        expect_bad(b, "batch relations[6]: relation chunk needs a parent");

        let mut b = base();
        set(&mut b.tags, 0, Some("[1]"));
        expect_bad(b, "batch tags[0]: tags must be a JSON object");

        let mut b = base();
        set(&mut b.tags, 2, Some("{"));
        expect_bad(b, "batch tags[2]: tags are not valid JSON");

        let mut b = base();
        b.embedding_dims[5] = 4;
        expect_bad(b, "batch embedding-dims[5]");

        let mut b = base();
        b.embedding_dims[5] = u32::MAX;
        expect_bad(b, "batch embedding-dims[5]");

        let mut b = base();
        b.embeddings.push(7.0);
        expect_bad(b, "sum to 6");
    }

    #[test]
    fn rejects_malformed_columns_naming_column_and_doc() {
        let base = || into_batch(tree());

        // Short and long columns.
        let mut b = base();
        b.relations.pop();
        expect_bad(b, "batch relations[7]: missing");
        let mut b = base();
        b.parents.push(None);
        expect_bad(b, "batch parents[8]: extra entry");
        let mut b = base();
        b.texts.present.pop();
        expect_bad(b, "batch texts.present[7]: missing");
        let mut b = base();
        b.blobs.ends.pop();
        expect_bad(b, "batch blobs.ends[7]: missing");
        let mut b = base();
        b.embedding_dims.truncate(3);
        expect_bad(b, "batch embedding-dims[3]: missing");
        let mut b = base();
        b.mime_types.ends.push(10);
        expect_bad(b, "batch mime-types.ends[8]: extra entry");

        // Ends that decrease, or do not end at the data's end.
        let mut b = base();
        b.ids.ends[2] = 2;
        expect_bad(b, "batch ids[2]: ends decrease (2 after 3)");
        let mut b = base();
        b.ids.ends[0] = 19;
        expect_bad(b, "batch ids[1]: ends decrease");
        let mut b = base();
        b.ids.data.push('x');
        expect_bad(
            b,
            "batch ids[7]: the last end is 20 but the data has 21 bytes",
        );
        let mut b = base();
        b.blobs.ends[3] = 40;
        expect_bad(b, "batch blobs[3]: span 0..40 runs past the 3 bytes");
        let mut b = into_batch(Vec::new());
        b.uris.data.push('x');
        expect_bad(
            b,
            "batch uris[0]: the last end is 0 but the data has 1 bytes",
        );

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
        expect_bad(b, "batch texts[0]: absent entry has a non-empty span");
        let mut b = base();
        b.blobs.present[3] = false;
        expect_bad(b, "batch blobs[3]: absent entry has a non-empty span");

        // A score of a document that does not exist.
        let mut b = base();
        b.scores[1].doc = 8;
        expect_bad(b, "batch scores[1]: doc 8 is out of range for 8 documents");
        let mut b = into_batch(Vec::new());
        b.scores.push(wit::NamedScore {
            doc: 0,
            name: "s".into(),
            value: 1.0,
            op_name: None,
            description: None,
        });
        expect_bad(b, "batch scores[0]: doc 0 is out of range for 0 documents");
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
