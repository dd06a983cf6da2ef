//! [`Document`]: Jina's document as a plain Rust tree.
//!
//! On the wire the tree is flat (see the crate README, "Flattening"); handlers only
//! ever see this tree.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

use serde_json::{Map, Value};

/// One named score (Jina's `NamedScore`): `doc.scores["cosine"].value`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamedScore {
    /// The score itself.
    pub value: f64,
    /// What produced it (`"cosine"`, an executor name).
    pub op_name: Option<String>,
    /// Free text for people.
    pub description: Option<String>,
}

impl NamedScore {
    /// A score with only a value.
    pub fn new(value: f64) -> Self {
        NamedScore {
            value,
            ..Default::default()
        }
    }
}

impl From<f64> for NamedScore {
    fn from(value: f64) -> Self {
        NamedScore::new(value)
    }
}

/// A document with its children: `chunks` (parts of it) and `matches` (results
/// found for it), each a full document again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    /// Unique within a request by convention; never empty when built by
    /// [`Document::from_text`] and friends.
    pub id: String,
    pub text: Option<String>,
    pub blob: Option<Vec<u8>>,
    pub uri: Option<String>,
    pub mime_type: Option<String>,
    pub embedding: Option<Vec<f32>>,
    /// Arbitrary JSON; empty means "no tags" on the wire.
    pub tags: Map<String, Value>,
    /// Scores by name, iterated in name order.
    pub scores: BTreeMap<String, NamedScore>,
    /// Parts of this document (sentences, crops), in order.
    pub chunks: Vec<Document>,
    /// Results found for this document, in order (usually best first).
    pub matches: Vec<Document>,
}

impl Document {
    /// An empty document with `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            ..Default::default()
        }
    }

    /// A text document with a fresh random id ([`new_id`]).
    pub fn from_text(text: impl Into<String>) -> Self {
        Document {
            text: Some(text.into()),
            ..Document::new(new_id())
        }
    }

    /// Set `text` (builder style).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Set `embedding` (builder style).
    pub fn with_embedding(mut self, embedding: impl Into<Vec<f32>>) -> Self {
        self.embedding = Some(embedding.into());
        self
    }

    /// Set `uri` (builder style).
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Set `blob` (builder style).
    pub fn with_blob(mut self, blob: impl Into<Vec<u8>>) -> Self {
        self.blob = Some(blob.into());
        self
    }

    /// Set `mime_type` (builder style).
    pub fn with_mime_type(mut self, mime_type: impl Into<String>) -> Self {
        self.mime_type = Some(mime_type.into());
        self
    }

    /// Insert one tag (builder style).
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Add a chunk (builder style).
    pub fn with_chunk(mut self, chunk: Document) -> Self {
        self.chunks.push(chunk);
        self
    }

    /// Add a match (builder style).
    pub fn with_match(mut self, m: Document) -> Self {
        self.matches.push(m);
        self
    }

    /// Set a score with only a value (builder style).
    pub fn with_score(mut self, name: impl Into<String>, value: f64) -> Self {
        self.set_score(name, value);
        self
    }

    /// The value of score `name`, if set.
    pub fn score(&self, name: &str) -> Option<f64> {
        self.scores.get(name).map(|s| s.value)
    }

    /// Set score `name` to `score` (a value or a full [`NamedScore`]).
    pub fn set_score(&mut self, name: impl Into<String>, score: impl Into<NamedScore>) {
        self.scores.insert(name.into(), score.into());
    }
}

/// A fresh 32-hex-digit id (128 bits, like Jina's uuid hex ids).
///
/// A per-instance xorshift64* generator, seeded once from WASI random (through
/// `std`'s `RandomState`) and mixed with a counter, so ids are unique within an
/// instance and unlikely to collide across instances. Not cryptographic.
pub fn new_id() -> String {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let hi = xorshift(state);
        let lo = xorshift(state);
        format!("{hi:016x}{lo:016x}")
    })
}

fn seed() -> u64 {
    // RandomState draws its keys from the platform's randomness (WASI random on
    // wasm32-wasip2); hashing a constant turns them into one u64.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6a69_6e61); // "jina"
    hasher.finish() | 1 // xorshift must not start at 0
}

fn xorshift(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Which documents of a request an indexer stores or deletes: the request's
/// own (`"roots"`, `"r"`) or their chunks (`"chunks"`, `"c"`: Jina's
/// `traversal_paths: ['c']`, to index the sentences a segmenter made).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Traversal {
    /// The request's top-level documents.
    #[default]
    Roots,
    /// The chunks of the request's top-level documents.
    Chunks,
}

impl Traversal {
    /// Parse a traversal name.
    ///
    /// # Errors
    ///
    /// A name that is neither; the message says what is accepted.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "roots" | "r" => Ok(Traversal::Roots),
            "chunks" | "c" => Ok(Traversal::Chunks),
            other => Err(format!(
                "traversal {other:?} is neither \"roots\" nor \"chunks\""
            )),
        }
    }

    /// The documents of `docs` this traversal selects, in order.
    pub fn select(self, docs: &[Document]) -> Vec<&Document> {
        match self {
            Traversal::Roots => docs.iter().collect(),
            Traversal::Chunks => docs.iter().flat_map(|d| &d.chunks).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn builders_and_scores() {
        let doc = Document::from_text("hello")
            .with_tag("lang", "en")
            .with_score("cosine", 0.5);
        assert_eq!(doc.text.as_deref(), Some("hello"));
        assert_eq!(doc.tags["lang"], "en");
        assert_eq!(doc.score("cosine"), Some(0.5));
        assert_eq!(doc.score("l2"), None);
        assert!(!doc.id.is_empty());
    }

    #[test]
    fn traversal_selects_roots_or_chunks() {
        let docs = vec![
            Document::new("p").with_chunk(Document::new("c1")),
            Document::new("q"),
        ];
        let ids = |t: Traversal| {
            t.select(&docs)
                .iter()
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Traversal::parse("roots").unwrap()), ["p", "q"]);
        assert_eq!(ids(Traversal::parse("c").unwrap()), ["c1"]);
        assert!(Traversal::parse("leaves").unwrap_err().contains("leaves"));
    }
}
