//! Documents as columns, the one copy of the rules both sides of the
//! executor boundary follow: the jina-wasm host (its wire body, its reading
//! of an executor's output) and the Rust guest SDK (its reading of a batch,
//! its writing of the result).
//!
//! - [`Columns`]: the documents of one request as columns, one entry per
//!   document in every per-document column, the same shape as the contract's
//!   `batch` (wit/executor.wit) and the wire's body (docs/protocol.md).
//! - [`Column`] (column.rs): packed values with the end offset of each.
//! - [`Columns::validate`] (validate.rs): every column against the document
//!   count, every offset, the tree rule and the depth limit ([`MAX_DEPTH`]);
//!   [`Error`] names the column, the document and the reason.
//! - [`Columns::from_documents`] and [`Columns::into_documents`] (tree.rs):
//!   a tree flattened in depth-first pre-order and rebuilt, for any document
//!   type that implements [`Node`], neither recursing.
//! - [`Columns::is_preorder`] and [`Columns::sort_scores`] (order.rs): the
//!   canonical form that makes each document's subtree a contiguous range.
//!
//! No dependency beyond serde_json (tags are JSON object text): the crate
//! compiles natively and for wasm32-wasip2.

mod column;
mod order;
#[cfg(test)]
mod tests;
mod tree;
mod validate;

pub use column::{BytesColumn, Column, Packed, StrColumn};
pub use tree::{Fields, Node, ScoreRef, drop_tree};
pub use validate::Error;

/// For [`impl_node!`]'s expansion in crates that name serde_json otherwise.
#[doc(hidden)]
pub use serde_json as __serde_json;

/// How many levels of `chunks` and `matches` may hang below a top-level
/// document: a document at level `MAX_DEPTH + 1` is refused (`invalid-output`
/// from an executor, HTTP 422 from the gateway, a `malformed` body on the
/// wire, an error naming the line for JSON input, `bad-request` in a guest).
///
/// Why 32: Jina's documents rarely nest beyond 3 (a document, its chunks,
/// their matches), so 32 is ten times what real data needs; its JSON nests at
/// most 2 × 32 + 1 = 65 levels, well inside serde_json's own recursion limit
/// of 128, so JSON readers stop at this limit with this message; and 32
/// frames of (de)serialisation are a few KiB of stack on any thread.
pub const MAX_DEPTH: usize = 32;

/// The message for a document nested past [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!(
        "documents nest more than {MAX_DEPTH} levels of chunks and matches deep (the limit is MAX_DEPTH, docs/limits.md)"
    )
}

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

/// The documents of one request as columns: entry `i` of every per-document
/// column belongs to document `i`. Build one with [`Columns::from_documents`]
/// (valid by construction); check one built any other way (decoded bytes, a
/// batch from the other side of the boundary) with [`Columns::validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// Ids never absent: `ids.present` is empty.
    pub ids: StrColumn,
    /// Each document's parent, by index; `None` for a top-level document.
    pub parents: Vec<Option<u32>>,
    pub relations: Vec<Relation>,
    pub texts: StrColumn,
    pub blobs: BytesColumn,
    pub uris: StrColumn,
    pub mime_types: StrColumn,
    /// Each document's tags as JSON object text; absent for no tags.
    pub tags: StrColumn,
    /// Each document's embedding length (0: none).
    pub embedding_dims: Vec<u32>,
    /// Every embedding, packed in document order.
    pub embeddings: Vec<f32>,
    /// Sparse: one entry per (document, name).
    pub scores: Vec<Score>,
}

impl Columns {
    /// Number of documents (roots and descendants).
    pub fn len(&self) -> usize {
        self.ids.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of top-level documents.
    pub fn roots(&self) -> usize {
        self.parents.iter().filter(|p| p.is_none()).count()
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
}
