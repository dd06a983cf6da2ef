//! An answer's documents written straight from the reply's columns: the same
//! JSON, byte for byte, as writing the body's [`crate::document::Document`]
//! trees (Jina's field names and order, absent and empty fields left out,
//! scores by name, blobs in base64, non-finite numbers as `null`), without
//! building them. Tags are parsed once, here, to be checked and written
//! as a tree writes them.

use base64::Engine as _;
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::wire::body::Indexed;

/// The top-level documents of a body, as a JSON list.
pub(super) struct Docs<'a>(pub(super) &'a Indexed);

impl Serialize for Docs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for root in self.0.roots() {
            seq.serialize_element(&Doc(self.0, root))?;
        }
        seq.end()
    }
}

/// Document `.1` of a body, with its chunks and matches (a valid body nests
/// at most MAX_DEPTH levels, so the recursion is bounded).
struct Doc<'a>(&'a Indexed, usize);

/// Its chunks or its matches.
struct List<'a>(&'a Indexed, Vec<usize>);

impl Serialize for List<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for &i in &self.1 {
            seq.serialize_element(&Doc(self.0, i))?;
        }
        seq.end()
    }
}

/// A score as [`crate::document::NamedScore`] writes itself.
#[derive(Serialize)]
struct ScoreJson<'a> {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    op_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Doc(indexed, i) = *self;
        let body = &indexed.body;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", body.ids.get(i).unwrap_or_default())?;
        if let Some(text) = body.texts.get(i) {
            map.serialize_entry("text", text)?;
        }
        if let Some(blob) = body.blobs.get(i) {
            map.serialize_entry(
                "blob",
                &base64::engine::general_purpose::STANDARD.encode(blob),
            )?;
        }
        if let Some(uri) = body.uris.get(i) {
            map.serialize_entry("uri", uri)?;
        }
        if let Some(mime_type) = body.mime_types.get(i) {
            map.serialize_entry("mime_type", mime_type)?;
        }
        let embedding = indexed.embedding_of(i);
        if !embedding.is_empty() {
            map.serialize_entry("embedding", embedding)?;
        }
        if body.tags.get(i).is_some() {
            let tags = body.tags_of(i).map_err(S::Error::custom)?;
            if !tags.is_empty() {
                map.serialize_entry("tags", &tags)?;
            }
        }
        let scores = indexed.scores_of(i);
        if !scores.is_empty() {
            map.serialize_entry("scores", &Scores(scores))?;
        }
        let (chunks, matches) = indexed.children(i);
        let matches: Vec<usize> = matches.collect();
        let mut chunk_list = Vec::new();
        let mut c = chunks.start;
        while c < chunks.end {
            chunk_list.push(c);
            c = indexed.subtree(c).end;
        }
        if !chunk_list.is_empty() {
            map.serialize_entry("chunks", &List(indexed, chunk_list))?;
        }
        if !matches.is_empty() {
            map.serialize_entry("matches", &List(indexed, matches))?;
        }
        map.end()
    }
}

/// A document's scores (sorted by name, one per name), as a map.
struct Scores<'a>(&'a [crate::wire::Score]);

impl Serialize for Scores<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for score in self.0 {
            map.serialize_entry(
                &score.name,
                &ScoreJson {
                    value: score.value,
                    op_name: score.op_name.as_deref(),
                    description: score.description.as_deref(),
                },
            )?;
        }
        map.end()
    }
}
