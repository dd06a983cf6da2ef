//! The documents of a message: one columnar [`Body`], the same shape as the
//! contract's `batch` (wit/executor.wit), so a Pea hands a decoded body to its
//! executor without building document trees, and a Head or Tail forwards it
//! without decoding it at all.
//!
//! A document tree is flattened in depth-first pre-order (a document, then its
//! chunks with their subtrees, then its matches with theirs); every column has one
//! entry per document in that order. docs/protocol.md gives the byte layout.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Reader, WireError, put_bytes, put_opt_str, put_u32};
use crate::document::{Document, MAX_DEPTH, NamedScore, too_deep};

/// How a document hangs off its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Relation {
    Root = 0,
    Chunk = 1,
    Match = 2,
}

/// Packed values with the end offset of each; `present` is empty for a column
/// whose values are never absent (ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Column<T> {
    pub present: Vec<bool>,
    pub data: T,
    pub ends: Vec<u32>,
}

pub type StrColumn = Column<String>;
pub type BytesColumn = Column<Vec<u8>>;

impl<T: AsRef<[u8]>> Column<T> {
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    fn is_present(&self, i: usize) -> bool {
        self.present.is_empty() || self.present[i]
    }

    /// Checks `n` entries, non-decreasing offsets that end at the data's length,
    /// and that absent entries are empty.
    fn check(&self, name: &str, n: usize, optional: bool) -> Result<(), String> {
        if self.ends.len() != n {
            return Err(format!(
                "column {name} has {} entries for {n} documents",
                self.ends.len()
            ));
        }
        if optional && self.present.len() != n {
            return Err(format!(
                "column {name} has {} presence flags for {n} documents",
                self.present.len()
            ));
        }
        let mut previous = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            if end < previous {
                return Err(format!("{name}[{i}]: offsets go backwards"));
            }
            if optional && !self.present[i] && end != previous {
                return Err(format!("{name}[{i}]: absent but has data"));
            }
            previous = end;
        }
        let len = self.data.as_ref().len();
        if previous as usize != len {
            return Err(format!(
                "column {name}: offsets end at {previous}, data is {len} bytes"
            ));
        }
        Ok(())
    }
}

impl StrColumn {
    pub(crate) fn push(&mut self, value: Option<&str>) {
        self.present.push(value.is_some());
        self.data.push_str(value.unwrap_or(""));
        self.ends.push(self.data.len() as u32);
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        self.is_present(i).then(|| &self.data[self.range(i)])
    }

    fn check_str(&self, name: &str, n: usize, optional: bool) -> Result<(), String> {
        self.check(name, n, optional)?;
        match self
            .ends
            .iter()
            .position(|&end| !self.data.is_char_boundary(end as usize))
        {
            Some(i) => Err(format!(
                "{name}[{i}]: span does not fall on a UTF-8 boundary"
            )),
            None => Ok(()),
        }
    }
}

impl BytesColumn {
    pub(crate) fn push(&mut self, value: Option<&[u8]>) {
        self.present.push(value.is_some());
        self.data.extend_from_slice(value.unwrap_or(&[]));
        self.ends.push(self.data.len() as u32);
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.is_present(i).then(|| &self.data[self.range(i)])
    }
}

/// A score, naming the document (by index) it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub doc: u32,
    pub name: String,
    pub value: f64,
    pub op_name: Option<String>,
    pub description: Option<String>,
}

/// The documents of one request as columns. Build one with
/// [`Body::from_documents`] or [`Body::decode`]; both leave it valid, and
/// [`Body::validate`] checks one built any other way (an executor's output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    /// Ids never absent: `ids.present` is empty.
    pub ids: StrColumn,
    pub parents: Vec<Option<u32>>,
    pub relations: Vec<Relation>,
    pub texts: StrColumn,
    pub blobs: BytesColumn,
    pub uris: StrColumn,
    pub mime_types: StrColumn,
    /// Each document's tags as JSON object text.
    pub tags: StrColumn,
    pub embedding_dims: Vec<u32>,
    /// Every embedding, packed in document order.
    pub embeddings: Vec<f32>,
    pub scores: Vec<Score>,
}

impl Body {
    /// Number of documents (roots and descendants).
    pub fn len(&self) -> usize {
        self.ids.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of content: ids, texts, blobs, uris, mime types, tags, embeddings
    /// (4 per float) and scores. What `--max-result-bytes` counts; the encoded
    /// body adds a few bytes of framing per document.
    pub fn byte_size(&self) -> u64 {
        let strings = [
            &self.ids,
            &self.texts,
            &self.uris,
            &self.mime_types,
            &self.tags,
        ];
        let text: usize = strings.iter().map(|c| c.data.len()).sum();
        let scores: usize = self
            .scores
            .iter()
            .map(|s| {
                12 + s.name.len()
                    + s.op_name.as_ref().map_or(0, String::len)
                    + s.description.as_ref().map_or(0, String::len)
            })
            .sum();
        (text + self.blobs.data.len() + self.embeddings.len() * 4 + scores) as u64
    }

    /// Number of top-level documents.
    pub fn roots(&self) -> usize {
        self.parents.iter().filter(|p| p.is_none()).count()
    }

    /// Flattens document trees (pre-order, without recursion).
    pub fn from_documents(roots: &[Document]) -> Body {
        // Size every buffer once: count documents, id and text bytes, floats.
        let (mut n, mut ids, mut texts, mut floats) = (0, 0, 0, 0);
        let mut stack: Vec<&Document> = roots.iter().collect();
        while let Some(doc) = stack.pop() {
            n += 1;
            ids += doc.id.len();
            texts += doc.text.as_ref().map_or(0, String::len);
            floats += doc.embedding.as_ref().map_or(0, Vec::len);
            stack.extend(doc.chunks.iter().chain(&doc.matches));
        }
        let column = |bytes: usize| StrColumn {
            present: Vec::with_capacity(n),
            data: String::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        };
        let mut body = Body {
            ids: StrColumn {
                present: Vec::new(),
                data: String::with_capacity(ids),
                ends: Vec::with_capacity(n),
            },
            parents: Vec::with_capacity(n),
            relations: Vec::with_capacity(n),
            texts: column(texts),
            blobs: BytesColumn {
                present: Vec::with_capacity(n),
                data: Vec::new(),
                ends: Vec::with_capacity(n),
            },
            uris: column(0),
            mime_types: column(0),
            tags: column(0),
            embedding_dims: Vec::with_capacity(n),
            embeddings: Vec::with_capacity(floats),
            scores: Vec::new(),
        };
        let mut stack: Vec<(&Document, Option<u32>, Relation)> = roots
            .iter()
            .rev()
            .map(|d| (d, None, Relation::Root))
            .collect();
        while let Some((doc, parent, relation)) = stack.pop() {
            let index = body.parents.len() as u32;
            body.ids.data.push_str(&doc.id);
            body.ids.ends.push(body.ids.data.len() as u32);
            body.parents.push(parent);
            body.relations.push(relation);
            body.texts.push(doc.text.as_deref());
            body.blobs.push(doc.blob.as_deref());
            body.uris.push(doc.uri.as_deref());
            body.mime_types.push(doc.mime_type.as_deref());
            let tags = (!doc.tags.is_empty())
                .then(|| serde_json::to_string(&doc.tags).expect("a JSON map serialises"));
            body.tags.push(tags.as_deref());
            let embedding = doc.embedding.as_deref().unwrap_or(&[]);
            body.embedding_dims.push(embedding.len() as u32);
            body.embeddings.extend_from_slice(embedding);
            body.scores.extend(doc.scores.iter().map(|(name, s)| Score {
                doc: index,
                name: name.clone(),
                value: s.value,
                op_name: s.op_name.clone(),
                description: s.description.clone(),
            }));
            stack.extend(
                doc.matches
                    .iter()
                    .rev()
                    .map(|m| (m, Some(index), Relation::Match)),
            );
            stack.extend(
                doc.chunks
                    .iter()
                    .rev()
                    .map(|c| (c, Some(index), Relation::Chunk)),
            );
        }
        body
    }

    /// Checks every column against the document count and the tree rule (each
    /// parent comes before its children; `root` exactly when there is no parent;
    /// no document more than [`MAX_DEPTH`] levels below its root).
    /// Tags are not parsed here (that costs a JSON parse per document on every
    /// hop); [`Body::check_tags`] and [`Body::into_documents`] do.
    ///
    /// # Errors
    /// A message naming the column and the document index.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.len();
        if !self.ids.present.is_empty() {
            return Err("column ids: ids are never absent".into());
        }
        self.ids.check_str("ids", n, false)?;
        self.texts.check_str("texts", n, true)?;
        self.blobs.check("blobs", n, true)?;
        self.uris.check_str("uris", n, true)?;
        self.mime_types.check_str("mime_types", n, true)?;
        self.tags.check_str("tags", n, true)?;
        if self.parents.len() != n || self.relations.len() != n || self.embedding_dims.len() != n {
            return Err(format!(
                "the columns parents, relations and embedding_dims do not all have {n} entries"
            ));
        }
        // Each document's level below its root; a parent comes first, so one
        // pass finds them all (MAX_DEPTH fits a byte).
        let mut levels = vec![0u8; n];
        for (i, (&parent, &relation)) in self.parents.iter().zip(&self.relations).enumerate() {
            match (parent, relation) {
                (None, Relation::Root) => {}
                (Some(p), Relation::Chunk | Relation::Match) if (p as usize) < i => {
                    let level = levels[p as usize] + 1;
                    if usize::from(level) > MAX_DEPTH {
                        return Err(format!("document {i}: {}", too_deep()));
                    }
                    levels[i] = level;
                }
                (Some(p), Relation::Chunk | Relation::Match) => {
                    return Err(format!("parents[{i}]: {p} does not come before it"));
                }
                (parent, relation) => {
                    return Err(format!(
                        "relations[{i}]: {relation:?} does not agree with parent {parent:?}"
                    ));
                }
            }
        }
        let dims: u64 = self.embedding_dims.iter().map(|&d| u64::from(d)).sum();
        if dims != self.embeddings.len() as u64 {
            return Err(format!(
                "documents declare {dims} embedding values but the body carries {}",
                self.embeddings.len()
            ));
        }
        if let Some(score) = self.scores.iter().find(|s| s.doc as usize >= n) {
            return Err(format!(
                "scores: document {} does not exist ({n} documents)",
                score.doc
            ));
        }
        Ok(())
    }

    /// Checks that every present tag is a JSON object.
    ///
    /// # Errors
    /// Names the first document whose tags are not.
    pub fn check_tags(&self) -> Result<(), String> {
        (0..self.len()).try_for_each(|i| self.tags_of(i).map(drop))
    }

    pub(crate) fn tags_of(&self, i: usize) -> Result<Map<String, Value>, String> {
        match self.tags.get(i) {
            None => Ok(Map::new()),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(format!("tags[{i}]: not a JSON object")),
                Err(e) => Err(format!("tags[{i}]: not valid JSON: {e}")),
            },
        }
    }

    /// Rebuilds the document trees. The body must be valid ([`Body::validate`]).
    ///
    /// # Errors
    /// Tags that are not a JSON object.
    pub fn into_documents(self) -> Result<Vec<Document>, String> {
        let n = self.len();
        let mut scores: Vec<BTreeMap<String, NamedScore>> = vec![BTreeMap::new(); n];
        for s in &self.scores {
            scores[s.doc as usize].insert(
                s.name.clone(),
                NamedScore {
                    value: s.value,
                    op_name: s.op_name.clone(),
                    description: s.description.clone(),
                },
            );
        }
        let mut flat = Vec::with_capacity(n);
        let mut offset = 0;
        for (i, scores) in scores.into_iter().enumerate() {
            let dim = self.embedding_dims[i] as usize;
            flat.push(Document {
                id: self.ids.data[self.ids.range(i)].to_owned(),
                text: self.texts.get(i).map(str::to_owned),
                blob: self.blobs.get(i).map(<[u8]>::to_vec),
                uri: self.uris.get(i).map(str::to_owned),
                mime_type: self.mime_types.get(i).map(str::to_owned),
                embedding: (dim > 0).then(|| self.embeddings[offset..offset + dim].to_vec()),
                tags: self.tags_of(i)?,
                scores,
                ..Default::default()
            });
            offset += dim;
        }
        if self.parents.iter().all(Option::is_none) {
            return Ok(flat);
        }
        // Attach children from the back: every child comes after its parent, so
        // when a document is reached all its children are attached. They arrive
        // in reverse; each list is reversed at the end.
        let mut roots = Vec::new();
        while let Some(doc) = flat.pop() {
            let i = flat.len();
            match self.parents[i] {
                None => roots.push(doc),
                Some(p) if self.relations[i] == Relation::Chunk => {
                    flat[p as usize].chunks.push(doc)
                }
                Some(p) => flat[p as usize].matches.push(doc),
            }
        }
        roots.reverse();
        let mut stack: Vec<&mut Document> = roots.iter_mut().collect();
        while let Some(doc) = stack.pop() {
            doc.chunks.reverse();
            doc.matches.reverse();
            stack.extend(doc.chunks.iter_mut().chain(doc.matches.iter_mut()));
        }
        Ok(roots)
    }

    /// Appends the body's bytes (docs/protocol.md, "Body").
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.len();
        out.reserve(
            64 + n * 40
                + self.ids.data.len()
                + self.texts.data.len()
                + self.blobs.data.len()
                + self.uris.data.len()
                + self.mime_types.data.len()
                + self.tags.data.len()
                + self.embeddings.len() * 4,
        );
        put_u32(out, n as u32);
        put_ends(out, &self.ids.ends);
        out.extend_from_slice(self.ids.data.as_bytes());
        for parent in &self.parents {
            put_u32(out, parent.unwrap_or(NO_PARENT));
        }
        out.extend(self.relations.iter().map(|&r| r as u8));
        put_optional(
            out,
            &self.texts.present,
            &self.texts.ends,
            self.texts.data.as_bytes(),
        );
        put_optional(out, &self.blobs.present, &self.blobs.ends, &self.blobs.data);
        put_optional(
            out,
            &self.uris.present,
            &self.uris.ends,
            self.uris.data.as_bytes(),
        );
        put_optional(
            out,
            &self.mime_types.present,
            &self.mime_types.ends,
            self.mime_types.data.as_bytes(),
        );
        put_optional(
            out,
            &self.tags.present,
            &self.tags.ends,
            self.tags.data.as_bytes(),
        );
        put_ends(out, &self.embedding_dims);
        put_f32s(out, &self.embeddings);
        put_u32(out, self.scores.len() as u32);
        for s in &self.scores {
            put_u32(out, s.doc);
            out.extend_from_slice(&s.value.to_le_bytes());
            put_bytes(out, s.name.as_bytes());
            put_opt_str(out, s.op_name.as_deref());
            put_opt_str(out, s.description.as_deref());
        }
    }

    /// Parses and validates a body. Never panics, and never allocates more
    /// than the input's own size justifies.
    ///
    /// # Errors
    /// [`WireError`] naming what is wrong and where.
    pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
        let mut r = Reader::new(bytes, "body");
        let n = r.u32("document count")? as usize;
        // Each document takes at least 4 (id end) + 4 (parent) + 1 (relation)
        // + 5 × 5 (optional columns) + 4 (dims) bytes: refuse counts the input
        // cannot hold before allocating for them.
        r.need(n.saturating_mul(38), "document columns")?;
        let id_ends = r.u32s(n, "ids")?;
        let ids = StrColumn {
            present: Vec::new(),
            data: r.string(last(&id_ends), "ids")?,
            ends: id_ends,
        };
        let parents = r
            .u32s(n, "parents")?
            .into_iter()
            .map(|p| (p != NO_PARENT).then_some(p))
            .collect();
        let relations = r
            .take(n, "relations")?
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(Relation::Root),
                1 => Ok(Relation::Chunk),
                2 => Ok(Relation::Match),
                other => Err(r.error(format!("relations[{i}]: unknown relation {other}"))),
            })
            .collect::<Result<_, _>>()?;
        let texts = r.str_column(n, "texts")?;
        let blobs = {
            let (present, ends) = r.presence_and_ends(n, "blobs")?;
            Column {
                data: r.take(last(&ends), "blobs")?.to_vec(),
                present,
                ends,
            }
        };
        let uris = r.str_column(n, "uris")?;
        let mime_types = r.str_column(n, "mime_types")?;
        let tags = r.str_column(n, "tags")?;
        let embedding_dims = r.u32s(n, "embedding_dims")?;
        let floats: u64 = embedding_dims.iter().map(|&d| u64::from(d)).sum();
        let floats = usize::try_from(floats)
            .map_err(|_| r.error("embedding_dims: too many values".into()))?;
        let embeddings = f32s_from_le(r.take(floats.saturating_mul(4), "embeddings")?);
        let count = r.u32("score count")? as usize;
        // A score takes at least 4 + 8 + 4 + 1 + 1 bytes.
        r.need(count.saturating_mul(18), "scores")?;
        let mut scores = Vec::with_capacity(count);
        for _ in 0..count {
            scores.push(Score {
                doc: r.u32("score document")?,
                value: r.f64("score value")?,
                name: r.str("score name")?,
                op_name: r.opt_str("score op_name")?,
                description: r.opt_str("score description")?,
            });
        }
        r.finish()?;
        let body = Body {
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
        };
        body.validate().map_err(|message| WireError::Invalid {
            frame: "body",
            message,
        })?;
        Ok(body)
    }
}

/// `parents` entry of a root document.
pub const NO_PARENT: u32 = u32::MAX;

fn last(ends: &[u32]) -> usize {
    ends.last().map_or(0, |&e| e as usize)
}

// Packed numbers are copied as one block on little-endian machines (their
// memory is already the wire's byte order): the embeddings are most of a body.
// bytemuck checks the casts (u32 and f32 are `Pod`: no padding, every bit
// pattern valid), so no `unsafe` is needed here.

fn put_ends(out: &mut Vec<u8>, values: &[u32]) {
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    for &v in values {
        put_u32(out, v);
    }
}

fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `bytes` (a multiple of 4 long) as little-endian f32s.
fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    let mut values = vec![0f32; bytes.len() / 4];
    #[cfg(target_endian = "little")]
    // `bytes` may be unaligned for f32, so it is copied into the f32s' bytes.
    bytemuck::cast_slice_mut::<f32, u8>(&mut values).copy_from_slice(bytes);
    #[cfg(not(target_endian = "little"))]
    for (value, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    values
}

fn put_optional(out: &mut Vec<u8>, present: &[bool], ends: &[u32], data: &[u8]) {
    out.extend(present.iter().map(|&p| u8::from(p)));
    put_ends(out, ends);
    out.extend_from_slice(data);
}

impl Reader<'_> {
    fn presence_and_ends(
        &mut self,
        n: usize,
        column: &'static str,
    ) -> Result<(Vec<bool>, Vec<u32>), WireError> {
        let present = self
            .take(n, column)?
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(self.error(format!(
                    "{column}[{i}]: presence flag {other} is neither 0 nor 1"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ends = self.u32s(n, column)?;
        Ok((present, ends))
    }

    fn str_column(&mut self, n: usize, column: &'static str) -> Result<StrColumn, WireError> {
        let (present, ends) = self.presence_and_ends(n, column)?;
        let data = self.string(last(&ends), column)?;
        Ok(Column {
            present,
            data,
            ends,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tree() -> Vec<Document> {
        let leaf = |id: &str| Document {
            id: id.into(),
            text: Some(format!("text of {id} ✓")),
            ..Default::default()
        };
        let mut q = leaf("q");
        q.embedding = Some(vec![1.0, 2.0]);
        q.blob = Some(vec![0, 255]);
        q.tags = serde_json::json!({"k": [1, "two"]})
            .as_object()
            .unwrap()
            .clone();
        q.scores.insert(
            "cosine".into(),
            NamedScore {
                value: 0.5,
                op_name: Some("op".into()),
                description: None,
            },
        );
        let mut q1 = leaf("q-1");
        q1.matches = vec![Document {
            embedding: Some(vec![3.0]),
            ..leaf("m")
        }]
        .into();
        q.chunks = vec![leaf("q-0"), q1].into();
        q.matches = vec![leaf("q-m")].into();
        vec![
            q,
            Document {
                id: "r".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn trees_round_trip_through_columns_and_bytes() {
        let docs = tree();
        let body = Body::from_documents(&docs);
        assert_eq!(
            body.parents,
            vec![None, Some(0), Some(0), Some(2), Some(0), None]
        );
        body.validate().unwrap();
        let mut bytes = Vec::new();
        body.encode(&mut bytes);
        let back = Body::decode(&bytes).unwrap();
        assert_eq!(back, body);
        assert_eq!(back.into_documents().unwrap(), docs);
    }

    /// Flattening and rebuilding never recurse, and dropping what they
    /// build does not either: a tree far past MAX_DEPTH (as only the host API
    /// can build one) goes through both.
    #[test]
    fn deep_trees_do_not_recurse() {
        let docs = vec![crate::document::tests::chain(100_000)];
        let back = Body::from_documents(&docs).into_documents().unwrap();
        assert_eq!((back[0].id.as_str(), back[0].depth()), ("99999", 100_000));
    }

    /// A body whose tree is deeper than MAX_DEPTH is refused by `validate`
    /// (so by `decode` and by an executor's output), naming the document;
    /// one at the limit is valid.
    #[test]
    fn bodies_past_the_depth_limit_are_refused() {
        let at = Body::from_documents(&[crate::document::tests::chain(MAX_DEPTH)]);
        at.validate().unwrap();
        let mut bytes = Vec::new();
        at.encode(&mut bytes);
        assert_eq!(Body::decode(&bytes).unwrap().len(), MAX_DEPTH + 1);
        let past = Body::from_documents(&[crate::document::tests::chain(MAX_DEPTH + 1)]);
        let error = past.validate().unwrap_err();
        assert!(
            error.starts_with("document 33: documents nest more than 32 levels"),
            "{error}"
        );
        let mut bytes = Vec::new();
        past.encode(&mut bytes);
        assert!(
            Body::decode(&bytes)
                .unwrap_err()
                .to_string()
                .contains("more than 32 levels")
        );
    }

    fn rejected(mutate: impl FnOnce(&mut Body)) -> String {
        let mut body = Body::from_documents(&tree());
        mutate(&mut body);
        body.validate()
            .and_then(|()| body.check_tags())
            .expect_err("a malformed body must be rejected")
    }

    #[test]
    fn malformed_bodies_are_rejected_not_trusted() {
        assert!(
            rejected(|b| {
                b.parents.pop();
            })
            .contains("parents")
        );
        assert!(rejected(|b| b.ids.ends[1] = 0).contains("backwards"));
        assert!(rejected(|b| b.ids.data.push('x')).contains("ids"));
        assert!(
            rejected(|b| {
                let at = b.texts.data.find('✓').unwrap() + 1;
                b.texts.ends[0] = at as u32;
            })
            .contains("UTF-8")
        );
        assert!(rejected(|b| b.texts.present[0] = false).contains("absent"));
        assert!(rejected(|b| b.parents[1] = Some(4)).contains("come before"));
        assert!(rejected(|b| b.relations[0] = Relation::Chunk).contains("agree"));
        assert!(rejected(|b| b.embedding_dims[0] = 5).contains("embedding"));
        assert!(rejected(|b| b.scores[0].doc = 99).contains("does not exist"));
        assert!(
            rejected(|b| {
                b.tags.data = "[1]".into();
                b.tags.ends = vec![3; 6];
            })
            .contains("not a JSON object")
        );
        assert!(rejected(|b| b.blobs.present[0] = false).contains("blobs[0]"));
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut bytes = Vec::new();
        put_u32(&mut bytes, u32::MAX);
        let error = Body::decode(&bytes).unwrap_err().to_string();
        assert!(error.contains("document columns"), "{error}");
    }
}
