//! The seam between host documents and the contract's flat `batch`.
//!
//! A document tree is flattened in depth-first pre-order: a document, then each
//! of its chunks (with their subtrees), then each of its matches (with theirs).
//! Every child records its parent's index and its relation; embeddings are packed
//! into one `list<f32>` in the same order. docs/wit-contract.md has the rule and
//! an example.

use serde_json::{Map, Value};

use super::bindings::types::{BatchResult, DocumentParam, NamedScoreParam, Relation};
use crate::document::{Document, NamedScore};

/// A document tree flattened for a call. It borrows the host's documents, so
/// strings and blobs are not copied before wasmtime copies them into the guest.
pub struct Flattened<'a> {
    order: Vec<(&'a Document, Option<u32>, Relation)>,
    /// Serialized tags, one per document in `order`.
    tags: Vec<Option<String>>,
    scores: Vec<Vec<NamedScoreParam<'a>>>,
    /// Every embedding, packed in `order`.
    pub embeddings: Vec<f32>,
}

impl<'a> Flattened<'a> {
    pub fn new(roots: &'a [Document]) -> Self {
        let mut order = Vec::new();
        for root in roots {
            walk(root, None, Relation::Root, &mut order);
        }
        let tags = order
            .iter()
            .map(|(doc, _, _)| (!doc.tags.is_empty()).then(|| Value::Object(doc.tags.clone()).to_string()))
            .collect();
        let scores = order
            .iter()
            .map(|(doc, _, _)| {
                doc.scores
                    .iter()
                    .map(|(name, s)| NamedScoreParam {
                        name,
                        value: s.value,
                        op_name: s.op_name.as_deref(),
                        description: s.description.as_deref(),
                    })
                    .collect()
            })
            .collect();
        let embeddings = order.iter().filter_map(|(doc, _, _)| doc.embedding.as_deref()).flatten().copied().collect();
        Flattened { order, tags, scores, embeddings }
    }

    /// The documents as the generated bindings take them.
    pub fn docs(&self) -> Vec<DocumentParam<'_>> {
        self.order
            .iter()
            .zip(&self.tags)
            .zip(&self.scores)
            .map(|((&(doc, parent, relation), tags), scores)| DocumentParam {
                id: &doc.id,
                parent,
                relation,
                text: doc.text.as_deref(),
                blob: doc.blob.as_deref(),
                uri: doc.uri.as_deref(),
                mime_type: doc.mime_type.as_deref(),
                embedding_dim: doc.embedding.as_ref().map_or(0, |e| e.len() as u32),
                tags: tags.as_deref(),
                scores,
            })
            .collect()
    }
}

fn walk<'a>(doc: &'a Document, parent: Option<u32>, relation: Relation, out: &mut Vec<(&'a Document, Option<u32>, Relation)>) {
    let index = out.len() as u32;
    out.push((doc, parent, relation));
    for chunk in &doc.chunks {
        walk(chunk, Some(index), Relation::Chunk, out);
    }
    for m in &doc.matches {
        walk(m, Some(index), Relation::Match, out);
    }
}

/// Rebuilds the document trees of a batch a guest returned. The guest is not
/// trusted: every index, relation, dimension and tag is checked.
///
/// # Errors
/// A message naming the offending document (by index and id).
pub fn from_batch(batch: BatchResult) -> Result<Vec<Document>, String> {
    let BatchResult { docs, embeddings } = batch;
    let total_dims: u64 = docs.iter().map(|d| u64::from(d.embedding_dim)).sum();
    if total_dims != embeddings.len() as u64 {
        return Err(format!(
            "documents declare {total_dims} embedding values but the batch carries {}",
            embeddings.len()
        ));
    }
    let mut flat: Vec<(Document, Option<u32>, Relation)> = Vec::with_capacity(docs.len());
    let mut offset = 0usize;
    for (index, d) in docs.into_iter().enumerate() {
        let describe = || format!("document {index} (id `{}`)", d.id);
        match (d.parent, d.relation) {
            (None, Relation::Root) => {}
            (Some(p), Relation::Chunk | Relation::Match) if (p as usize) < index => {}
            (Some(p), Relation::Chunk | Relation::Match) => {
                return Err(format!("{}: parent {p} does not come before it", describe()));
            }
            (parent, relation) => {
                return Err(format!("{}: relation {relation:?} does not agree with parent {parent:?}", describe()));
            }
        }
        let tags = match &d.tags {
            None => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(format!("{}: tags are not a JSON object", describe())),
                Err(e) => return Err(format!("{}: tags are not valid JSON: {e}", describe())),
            },
        };
        let dim = d.embedding_dim as usize;
        let embedding = (dim > 0).then(|| embeddings[offset..offset + dim].to_vec());
        offset += dim;
        let doc = Document {
            id: d.id,
            text: d.text,
            blob: d.blob,
            uri: d.uri,
            mime_type: d.mime_type,
            embedding,
            tags,
            scores: d
                .scores
                .into_iter()
                .map(|s| (s.name, NamedScore { value: s.value, op_name: s.op_name, description: s.description }))
                .collect(),
            chunks: Vec::new(),
            matches: Vec::new(),
        };
        flat.push((doc, d.parent, d.relation));
    }
    // Attach children to parents from the back: every child comes after its
    // parent, so when we reach a document all its children are already attached.
    // Children are pushed in reverse, so reverse each list at the end.
    let mut roots = Vec::new();
    while let Some((doc, parent, relation)) = flat.pop() {
        match parent {
            None => roots.push(doc),
            Some(p) => {
                let parent = &mut flat[p as usize].0;
                match relation {
                    Relation::Chunk => parent.chunks.push(doc),
                    _ => parent.matches.push(doc),
                }
            }
        }
    }
    roots.reverse();
    for root in &mut roots {
        reverse_children(root);
    }
    Ok(roots)
}

fn reverse_children(doc: &mut Document) {
    doc.chunks.reverse();
    doc.matches.reverse();
    for child in doc.chunks.iter_mut().chain(doc.matches.iter_mut()) {
        reverse_children(child);
    }
}
