//! A request's JSON read straight into a columnar [`Body`]: one row per
//! document, in the order the documents' objects open (a document before its
//! chunks and matches), each field's value appended to that field's buffer as
//! it is read. When the fields come in row order (the usual case: a document's
//! own fields before its children) the buffers are the columns; otherwise they
//! are gathered in row order once.
//!
//! This reader is strict: anything it does not take as Jina's HTTP client
//! sends it (a field given twice, `data` as `{"docs": [...]}`, a document
//! as a list, any error) makes [`super::request::parse_request`] read the
//! request again through `serde_json::Value` and [`Document`]s, the reference
//! reader, which then answers or gives the error. So every error message is
//! the reference reader's, and a request this reader takes reads the same
//! there (tests compare the two on random requests). Containers count toward
//! serde_json's recursion limit one level each, as a `Value` does.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::document::{MAX_DEPTH, NamedScore, new_id};
use crate::flow::gateway::request::MAX_REQUEST_DOCS;
use crate::wire::body::{Column, Columns, Packed};
use crate::wire::{Body, Relation, Score};

/// What the reader took: the request's other fields (`exec_endpoint`,
/// `parameters`, `header`, `target_executor`, as JSON), its documents, and
/// how many top-level ones.
pub(super) struct Read {
    pub(super) fields: Map<String, Value>,
    pub(super) body: Body,
    pub(super) roots: usize,
}

/// Reads `bytes`, or `None` for anything the reference reader must handle.
pub(super) fn read(bytes: &[u8]) -> Option<Read> {
    let mut rows = Rows::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = Top(&mut rows).deserialize(&mut de).ok()?;
    de.end().ok()?;
    let roots = rows.roots;
    let mut body = rows.into_body();
    if !body.is_preorder() {
        // Matches before chunks in some document's JSON.
        body = Body::from_documents(&body.into_documents().ok()?);
    }
    body.sort_scores();
    Some(Read {
        fields,
        body,
        roots,
    })
}

/// One field's buffer and each row's span of it (`None`: absent).
#[derive(Default)]
struct Field<T> {
    data: T,
    spans: Vec<Option<(u32, u32)>>,
}

impl<T: Packed + Default> Field<T> {
    fn len(&self) -> u32 {
        self.data.as_ref().len() as u32
    }

    fn into_column(self) -> Column<T> {
        let mut at = 0;
        let in_order = self.spans.iter().all(|span| match *span {
            Some((start, end)) if start == at => {
                at = end;
                true
            }
            Some(_) => false,
            None => true,
        }) && at as usize == self.data.as_ref().len();
        let present = self.spans.iter().map(Option::is_some).collect();
        if in_order {
            let mut at = 0;
            let ends = self
                .spans
                .iter()
                .map(|span| {
                    if let Some((_, end)) = span {
                        at = *end;
                    }
                    at
                })
                .collect();
            return Column {
                present,
                data: self.data,
                ends,
            };
        }
        let mut data = T::default();
        let mut ends = Vec::with_capacity(self.spans.len());
        for span in &self.spans {
            if let Some((start, end)) = *span {
                data.append_range(&self.data, start as usize..end as usize);
            }
            ends.push(data.as_ref().len() as u32);
        }
        Column {
            present,
            data,
            ends,
        }
    }
}

/// The documents read so far, a row each.
#[derive(Default)]
struct Rows {
    parents: Vec<Option<u32>>,
    relations: Vec<Relation>,
    ids: Field<String>,
    texts: Field<String>,
    blobs: Field<Vec<u8>>,
    uris: Field<String>,
    mime_types: Field<String>,
    tags: Field<String>,
    floats: Vec<f32>,
    embeddings: Vec<(u32, u32)>,
    scores: Vec<Score>,
    roots: usize,
}

impl Rows {
    fn open(&mut self, parent: Option<u32>, relation: Relation) -> usize {
        self.parents.push(parent);
        self.relations.push(relation);
        for field in [
            &mut self.ids.spans,
            &mut self.texts.spans,
            &mut self.blobs.spans,
            &mut self.uris.spans,
            &mut self.mime_types.spans,
            &mut self.tags.spans,
        ] {
            field.push(None);
        }
        let at = self.floats.len() as u32;
        self.embeddings.push((at, at));
        self.parents.len() - 1
    }

    fn into_body(self) -> Body {
        let mut ids = self.ids.into_column();
        ids.present = Vec::new();
        let contiguous = self.embeddings.windows(2).all(|w| w[0].1 == w[1].0)
            && self.embeddings.first().is_none_or(|e| e.0 == 0)
            && self
                .embeddings
                .last()
                .is_none_or(|e| e.1 as usize == self.floats.len());
        let embedding_dims = self.embeddings.iter().map(|(s, e)| e - s).collect();
        let embeddings = if contiguous {
            self.floats
        } else {
            let mut floats = Vec::with_capacity(self.floats.len());
            for &(s, e) in &self.embeddings {
                floats.extend_from_slice(&self.floats[s as usize..e as usize]);
            }
            floats
        };
        Body(Columns {
            ids,
            parents: self.parents,
            relations: self.relations,
            texts: self.texts.into_column(),
            blobs: self.blobs.into_column(),
            uris: self.uris.into_column(),
            mime_types: self.mime_types.into_column(),
            tags: self.tags.into_column(),
            embedding_dims,
            embeddings,
            scores: self.scores,
        })
    }
}

/// The top-level object.
struct Top<'r>(&'r mut Rows);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Map::new();
        let mut data = false;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                "data" if !data => {
                    data = true;
                    map.next_value_seed(Data(&mut *self.0))?;
                }
                "exec_endpoint" | "parameters" | "header" | "target_executor" => {
                    fields.insert(key.0.into_owned(), map.next_value()?);
                }
                "data" => return Err(A::Error::custom("`data` twice")),
                _ => map.next_value::<Skip>().map(drop)?,
            }
        }
        Ok(fields)
    }
}

/// `data`: null or a list of documents (a document, or a text).
struct Data<'r>(&'r mut Rows);

impl<'de> DeserializeSeed<'de> for Data<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Data<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of documents")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let doc = Doc {
                rows: &mut *self.0,
                parent: None,
                relation: Relation::Root,
                level: 0,
            };
            if seq.next_element_seed(doc)?.is_none() {
                break;
            }
            self.0.roots += 1;
            if self.0.roots > MAX_REQUEST_DOCS {
                return Err(A::Error::custom("too many documents"));
            }
        }
        Ok(())
    }
}

/// One document (a top-level one may be a text), at `level` below its root.
struct Doc<'r> {
    rows: &'r mut Rows,
    parent: Option<u32>,
    relation: Relation,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for Doc<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // Past the limit (chunks and matches count), the reference reader
        // says so by name.
        if self.rows.parents.len() >= MAX_REQUEST_DOCS {
            return Err(D::Error::custom("too many documents"));
        }
        if self.level > MAX_DEPTH {
            return Err(D::Error::custom("too deep"));
        }
        d.deserialize_any(self)
    }
}

/// Fields a document may have once each, as bits.
const SEEN: [&str; 10] = [
    "id",
    "text",
    "blob",
    "uri",
    "mime_type",
    "embedding",
    "tags",
    "scores",
    "chunks",
    "matches",
];

impl<'de> Visitor<'de> for Doc<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a document")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        if self.level > 0 {
            return Err(E::custom("a text as a chunk or match"));
        }
        let rows = self.rows;
        let row = rows.open(None, Relation::Root);
        put(&mut rows.texts, row, text);
        put(&mut rows.ids, row, &new_id());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Doc {
            rows,
            parent,
            relation,
            level,
        } = self;
        let row = rows.open(parent, relation);
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let name = match key.0.as_ref() {
                "buffer" => "blob",
                other => other,
            };
            let Some(bit) = SEEN.iter().position(|&f| f == name) else {
                map.next_value::<Skip>()?;
                continue;
            };
            if seen & (1 << bit) != 0 {
                return Err(A::Error::custom("a field twice"));
            }
            seen |= 1 << bit;
            match name {
                "id" => {
                    let id = map.next_value::<Key<'de>>()?;
                    put(&mut rows.ids, row, &id.0);
                }
                "text" | "uri" | "mime_type" => {
                    if let Some(text) = map.next_value::<Option<Key<'de>>>()? {
                        let field = match name {
                            "text" => &mut rows.texts,
                            "uri" => &mut rows.uris,
                            _ => &mut rows.mime_types,
                        };
                        put(field, row, &text.0);
                    }
                }
                "blob" => {
                    if let Some(text) = map.next_value::<Option<Key<'de>>>()? {
                        let start = rows.blobs.len();
                        base64::engine::general_purpose::STANDARD
                            .decode_vec(text.0.as_bytes(), &mut rows.blobs.data)
                            .map_err(A::Error::custom)?;
                        rows.blobs.spans[row] = Some((start, rows.blobs.len()));
                    }
                }
                "embedding" => {
                    let start = rows.floats.len() as u32;
                    map.next_value_seed(Floats(&mut rows.floats))?;
                    rows.embeddings[row] = (start, rows.floats.len() as u32);
                }
                "tags" => {
                    if let Some(tags) = map.next_value::<Option<Map<String, Value>>>()?
                        && !tags.is_empty()
                    {
                        put(&mut rows.tags, row, &Value::Object(tags).to_string());
                    }
                }
                "scores" => {
                    let scores = map.next_value::<Option<BTreeMap<String, NamedScore>>>()?;
                    rows.scores
                        .extend(scores.into_iter().flatten().map(|(name, s)| Score {
                            doc: row as u32,
                            name,
                            value: s.value,
                            op_name: s.op_name,
                            description: s.description,
                        }));
                }
                _ => {
                    let relation = if name == "chunks" {
                        Relation::Chunk
                    } else {
                        Relation::Match
                    };
                    map.next_value_seed(Children(Doc {
                        rows: &mut *rows,
                        parent: Some(row as u32),
                        relation,
                        level: level + 1,
                    }))?;
                }
            }
        }
        if rows.ids.spans[row].is_none() {
            put(&mut rows.ids, row, &new_id());
        }
        Ok(())
    }
}

fn put(field: &mut Field<String>, row: usize, text: &str) {
    let start = field.len();
    field.data.push_str(text);
    field.spans[row] = Some((start, field.len()));
}

/// `chunks` or `matches`: null or a list of documents.
struct Children<'r>(Doc<'r>);

impl<'de> DeserializeSeed<'de> for Children<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Children<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of documents")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Doc {
            rows,
            parent,
            relation,
            level,
        } = self.0;
        while seq
            .next_element_seed(Doc {
                rows: &mut *rows,
                parent,
                relation,
                level,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// An embedding: null, or numbers (null for NaN) that fit an f32.
struct Floats<'r>(&'r mut Vec<f32>);

impl<'de> DeserializeSeed<'de> for Floats<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Floats<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Option<f64>>()? {
            self.0.push(match value {
                None => f32::NAN,
                Some(v) if v.abs() <= f64::from(f32::MAX) => v as f32,
                Some(_) => return Err(A::Error::custom("beyond f32")),
            });
        }
        Ok(())
    }
}

/// A string, borrowed from the request when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(s.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(s.to_owned().into()))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(s.into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any value, read and dropped; each list or object one level toward the
/// recursion limit, as a `Value` (serde's `IgnoredAny` counts none).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}
