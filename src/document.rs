//! Documents as the host sees them, and their JSON form.
//!
//! A [`Document`] is a tree: `chunks` are its parts, `matches` are results found
//! for it. The JSON form follows Jina's document JSON (`id`, `text`, `blob`, `uri`,
//! `mime_type`, `embedding`, `tags`, `scores`, `chunks`, `matches`), so JSON lines
//! written for Jina read here unchanged. Fields this host does not model (Jina's
//! `granularity`, `adjacency`, `modality`, ...) are ignored on input.
//!
//! Executors receive the same tree flattened into columns, by the
//! jina-doc-columns crate the guest SDK shares (`crate::wire::Body`,
//! docs/wit-contract.md); the wire protocol encodes the columns
//! (docs/protocol.md).
//!
//! A tree's depth is untrusted (a guest or a client chooses it), so nothing
//! here recurses past [`MAX_DEPTH`]: reading JSON refuses a deeper document
//! before it reads further, writing JSON refuses one before it writes further,
//! and dropping a tree of any depth (however it was built) walks it with a
//! stack on the heap ([`Docs`]).

use std::cell::Cell;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// One document and its children.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Unique id; generated (32 hex digits, like Jina's) when the input has none.
    #[serde(default = "new_id")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Raw bytes; base64 in JSON. Jina 2's name for it, `buffer`, is accepted too.
    #[serde(
        default,
        alias = "buffer",
        skip_serializing_if = "Option::is_none",
        serialize_with = "blob_to_base64",
        deserialize_with = "blob_from_base64"
    )]
    pub blob: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Each value must fit an `f32`; `null` reads as NaN (see [`embedding_from_json`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "embedding_from_json"
    )]
    pub embedding: Option<Vec<f32>>,
    #[serde(
        default,
        skip_serializing_if = "Map::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub tags: Map<String, Value>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub scores: BTreeMap<String, NamedScore>,
    #[serde(
        default,
        skip_serializing_if = "Docs::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub chunks: Docs,
    #[serde(
        default,
        skip_serializing_if = "Docs::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub matches: Docs,
}

/// The depth limit and its message are the document columns' (the guest
/// SDK refuses the same trees): see [`jina_doc_columns::MAX_DEPTH`].
pub use jina_doc_columns::{MAX_DEPTH, too_deep};

/// A document's `chunks` or `matches`: a `Vec<Document>` (it derefs to one)
/// whose drop walks the subtree with a stack on the heap, so a tree of any
/// depth, however it was built, is freed without recursion; and whose JSON
/// form refuses to nest past [`MAX_DEPTH`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Docs(pub Vec<Document>);

impl Docs {
    /// Whether there are no documents (for `skip_serializing_if`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Docs {
    fn drop(&mut self) {
        if self
            .0
            .iter()
            .all(|d| d.chunks.is_empty() && d.matches.is_empty())
        {
            return;
        }
        let mut stack = std::mem::take(&mut self.0);
        while let Some(mut doc) = stack.pop() {
            stack.append(&mut doc.chunks.0);
            stack.append(&mut doc.matches.0);
            // `doc` goes here with no children: its own drop does not recurse.
        }
    }
}

impl std::ops::Deref for Docs {
    type Target = Vec<Document>;
    fn deref(&self) -> &Vec<Document> {
        &self.0
    }
}

impl std::ops::DerefMut for Docs {
    fn deref_mut(&mut self) -> &mut Vec<Document> {
        &mut self.0
    }
}

impl From<Vec<Document>> for Docs {
    fn from(docs: Vec<Document>) -> Docs {
        Docs(docs)
    }
}

impl FromIterator<Document> for Docs {
    fn from_iter<I: IntoIterator<Item = Document>>(iter: I) -> Docs {
        Docs(iter.into_iter().collect())
    }
}

impl IntoIterator for Docs {
    type Item = Document;
    type IntoIter = std::vec::IntoIter<Document>;
    fn into_iter(mut self) -> Self::IntoIter {
        std::mem::take(&mut self.0).into_iter()
    }
}

impl<'a> IntoIterator for &'a Docs {
    type Item = &'a Document;
    type IntoIter = std::slice::Iter<'a, Document>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Docs {
    type Item = &'a mut Document;
    type IntoIter = std::slice::IterMut<'a, Document>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl PartialEq<Vec<Document>> for Docs {
    fn eq(&self, other: &Vec<Document>) -> bool {
        self.0 == *other
    }
}

thread_local! {
    /// Levels of `chunks`/`matches` being read or written on this thread.
    static NESTING: Cell<usize> = const { Cell::new(0) };
}

/// One level of `chunks`/`matches` entered while (de)serialising on this
/// thread; left when dropped (also on an error).
struct Level(usize);

impl Level {
    fn enter() -> Level {
        Level(NESTING.with(|n| {
            n.set(n.get() + 1);
            n.get()
        }))
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get() - 1));
    }
}

impl Serialize for Docs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let level = Level::enter();
        if level.0 > MAX_DEPTH && !self.is_empty() {
            return Err(serde::ser::Error::custom(too_deep()));
        }
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Docs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Docs, D::Error> {
        let _level = Level::enter();
        let nested = Vec::<Nested>::deserialize(d)?;
        Ok(nested.into_iter().map(|n| n.0).collect())
    }
}

/// A document inside a `chunks` or `matches` list: refused before it is read
/// when it would sit past [`MAX_DEPTH`] (an empty list at the limit is fine).
struct Nested(Document);

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Nested, D::Error> {
        if NESTING.with(Cell::get) > MAX_DEPTH {
            return Err(serde::de::Error::custom(too_deep()));
        }
        Document::deserialize(d).map(Nested)
    }
}

/// A score with its provenance, as Jina's `NamedScore`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedScore {
    /// `null` reads as NaN, which is how a NaN score is written.
    #[serde(default, deserialize_with = "null_as_nan")]
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Document {
    /// A document with a fresh id and nothing else.
    pub fn new() -> Self {
        Document {
            id: new_id(),
            ..Default::default()
        }
    }

    /// A text document with a fresh id.
    pub fn from_text(text: impl Into<String>) -> Self {
        Document {
            text: Some(text.into()),
            ..Document::new()
        }
    }

    /// This document and all its descendants, counted (without recursion).
    pub fn tree_size(&self) -> usize {
        let mut stack = vec![self];
        let mut n = 0;
        while let Some(doc) = stack.pop() {
            n += 1;
            stack.extend(doc.chunks.iter().chain(doc.matches.iter()));
        }
        n
    }

    /// Levels of `chunks` and `matches` below this document (0 for a leaf),
    /// without recursion.
    pub fn depth(&self) -> usize {
        let mut stack = vec![(self, 0)];
        let mut deepest = 0;
        while let Some((doc, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            stack.extend(
                doc.chunks
                    .iter()
                    .chain(doc.matches.iter())
                    .map(|d| (d, depth + 1)),
            );
        }
        deepest
    }

    /// Parses one line of JSON-lines input: a JSON document object, or (when the
    /// line is not a JSON object) a plain text line that becomes a text document.
    ///
    /// # Errors
    /// A line that starts with `{` but is not a valid document.
    pub fn from_json_line(line: &str) -> Result<Document, serde_json::Error> {
        if line.trim_start().starts_with('{') {
            serde_json::from_str(line)
        } else {
            Ok(Document::from_text(line))
        }
    }
}

/// A fresh document id: a random (version 4) UUID as 32 lowercase hex digits,
/// the shape of Jina's ids (`uuid.uuid4().hex`).
pub fn new_id() -> String {
    // Encoded into a buffer: `to_string` would go through `fmt`.
    let mut id = [0; uuid::fmt::Simple::LENGTH];
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut id)
        .to_owned()
}

fn blob_to_base64<S: Serializer>(blob: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match blob {
        Some(bytes) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes)),
        None => s.serialize_none(),
    }
}

fn blob_from_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("`blob` is not valid base64: {e}")))
    })
    .transpose()
}

/// An embedding from JSON. A number beyond `f32`'s range would become an
/// infinity, which JSON cannot carry (serde_json writes NaN and infinities as
/// `null`): it is refused, naming the index. `null` reads as NaN, so what this
/// host writes for a guest's NaN or infinite value reads back. Found by the
/// `document_json` fuzz target.
fn embedding_from_json<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f32>>, D::Error> {
    let values: Option<Vec<Option<f64>>> = Option::deserialize(d)?;
    let Some(values) = values else {
        return Ok(None);
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| match value {
            None => Ok(f32::NAN),
            Some(v) if v.abs() <= f64::from(f32::MAX) => Ok(v as f32),
            Some(v) => Err(serde::de::Error::custom(format!(
                "embedding[{i}] = {v} does not fit a 32-bit float"
            ))),
        })
        .collect::<Result<Vec<f32>, D::Error>>()
        .map(Some)
}

/// A score value; `null` (a NaN or infinity written as JSON) reads as NaN.
fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Jina writes `null` for empty maps and lists; treat it as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn jina_json_round_trip() {
        let line = r#"{"id":"a","text":"hello","embedding":[0.5,1.0],"tags":{"k":1},
            "scores":{"cosine":{"value":0.9,"op_name":"cosine"}},
            "chunks":[{"id":"a-0","text":"he"}],"matches":[{"id":"m","scores":{"cosine":{"value":0.5}}}],
            "granularity":0,"blob":"AAEC"}"#;
        let doc = Document::from_json_line(line).unwrap();
        assert_eq!(doc.blob.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(doc.chunks[0].id, "a-0");
        assert_eq!(doc.scores["cosine"].op_name.as_deref(), Some("cosine"));
        assert_eq!(doc.tree_size(), 3);
        let back: Document = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn plain_text_lines_become_documents() {
        let doc = Document::from_json_line("just words").unwrap();
        assert_eq!(doc.text.as_deref(), Some("just words"));
        assert_eq!(doc.id.len(), 32);
        assert!(Document::from_json_line("{not json").is_err());
    }

    #[test]
    fn nulls_and_missing_ids() {
        let doc =
            Document::from_json_line(r#"{"text":"x","tags":null,"chunks":null,"buffer":null}"#)
                .unwrap();
        assert!(doc.tags.is_empty() && doc.chunks.is_empty() && doc.blob.is_none());
        assert_ne!(new_id(), new_id());
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
        assert_eq!(&id[12..13], "4", "a version 4 UUID: {id}");
    }

    /// What this host writes for non-finite numbers reads back; numbers
    /// beyond an embedding's f32 range are refused by name.
    #[test]
    fn non_finite_numbers_round_trip_and_out_of_range_ones_are_refused() {
        let mut doc = Document::from_text("x");
        doc.embedding = Some(vec![f32::NAN, f32::INFINITY, 1.5]);
        doc.scores.insert(
            "s".into(),
            NamedScore {
                value: f64::NAN,
                ..Default::default()
            },
        );
        let line = serde_json::to_string(&doc).unwrap();
        let back = Document::from_json_line(&line).unwrap();
        let embedding = back.embedding.unwrap();
        assert!(embedding[0].is_nan() && embedding[1].is_nan() && embedding[2] == 1.5);
        assert!(back.scores["s"].value.is_nan());
        let error = Document::from_json_line(r#"{"embedding": [0.5, 1e39]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("embedding[1] = 1000000000000000000000000000000000000000 does not fit"),
            "{error}"
        );
    }

    /// A chain of `levels` documents below a root, built without recursion.
    pub(crate) fn chain(levels: usize) -> Document {
        let mut doc = Document {
            id: "leaf".into(),
            ..Default::default()
        };
        for i in 0..levels {
            doc = Document {
                id: i.to_string(),
                chunks: vec![doc].into(),
                ..Default::default()
            };
        }
        doc
    }

    /// Documents nested past MAX_DEPTH are refused by name when read, at
    /// the limit they read; far deeper input is an error, not a stack overflow.
    #[test]
    fn deep_nesting_is_refused_at_the_limit() {
        let line =
            |depth: usize| format!("{}{}", r#"{"chunks":["#.repeat(depth), "]}".repeat(depth));
        assert_eq!(
            Document::from_json_line(&line(MAX_DEPTH + 1))
                .unwrap()
                .depth(),
            MAX_DEPTH
        );
        let error = Document::from_json_line(&line(MAX_DEPTH + 2))
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than 32 levels"), "{error}");
        assert!(Document::from_json_line(&line(100_000)).is_err());
        // A matches level counts as a chunks level does.
        let mixed = format!(
            "{}{}",
            r#"{"matches":[{"chunks":["#.repeat(17),
            "]}]}".repeat(17)
        );
        assert!(
            Document::from_json_line(&mixed)
                .unwrap_err()
                .to_string()
                .contains("more than 32 levels")
        );
    }

    /// Writing refuses a tree past the limit (one built in memory, not read);
    /// at the limit it writes and reads back.
    #[test]
    fn deep_trees_are_refused_when_written() {
        let at = chain(MAX_DEPTH);
        assert_eq!((at.depth(), at.tree_size()), (MAX_DEPTH, MAX_DEPTH + 1));
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(Document::from_json_line(&json).unwrap(), at);
        let error = serde_json::to_string(&chain(MAX_DEPTH + 1))
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than 32 levels"), "{error}");
        // The nesting count is back to zero after an error.
        assert!(serde_json::to_string(&chain(3)).is_ok());
    }

    /// A tree of any depth drops without recursion (this would overflow the
    /// test thread's stack with a derived drop).
    #[test]
    fn deep_trees_drop_without_recursion() {
        let deep = chain(1_000_000);
        assert_eq!(deep.depth(), 1_000_000);
        drop(deep);
    }
}

/// The document JSON reader never panics, and what it reads round-trips.
#[cfg(test)]
pub(crate) mod proptests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// JSON values whose object keys are mostly document fields, so the
    /// reader's own paths are taken, not only serde's "unknown field" one
    /// (wire's tests use it too).
    pub(crate) fn json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("id"),
            Just("text"),
            Just("blob"),
            Just("uri"),
            Just("mime_type"),
            Just("embedding"),
            Just("tags"),
            Just("scores"),
            Just("chunks"),
            Just("matches"),
            Just("value"),
            Just("op_name"),
            Just("granularity"),
            Just("buffer"),
            Just("x"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            Just(Value::from(1e39)),
            ".{0,12}".prop_map(Value::from),
            "[A-Za-z0-9+/]{0,12}={0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_line_reads_or_fails(line in ".{0,200}") {
            let _ = Document::from_json_line(&line);
        }

        #[test]
        fn any_json_reads_or_fails_and_round_trips(value in json()) {
            let line = value.to_string();
            if let Ok(doc) = Document::from_json_line(&line) {
                // Compared as JSON: a NaN (from `null`) is not `==` itself.
                let json = serde_json::to_string(&doc).unwrap();
                let again: Document = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(serde_json::to_string(&again).unwrap(), json);
            }
        }
    }
}
