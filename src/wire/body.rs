//! The documents of a message: one columnar [`Body`], the same shape as the
//! contract's `batch` (wit/executor.wit), so a Pea hands a decoded body to its
//! executor without building document trees. A Head or Tail that only routes
//! (replicas, a `polling: all` broadcast, one part back) forwards its bytes
//! without decoding them; one that splits a request over shards or merges
//! parts decodes the columns and copies ranges of them ([`Indexed`]), never
//! building document trees.
//!
//! A document tree is flattened in depth-first pre-order (a document, then its
//! chunks with their subtrees, then its matches with theirs); every column has one
//! entry per document in that order. docs/protocol.md gives the byte layout.

mod codec;
mod column;
mod ranges;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::document::{Document, MAX_DEPTH, NamedScore, too_deep};
pub use column::{BytesColumn, Column, Packed, StrColumn};
pub use ranges::Indexed;

/// How a document hangs off its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Relation {
    Root = 0,
    Chunk = 1,
    Match = 2,
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
            body.ids.push_required(&doc.id);
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
}

/// `parents` entry of a root document.
pub const NO_PARENT: u32 = u32::MAX;
