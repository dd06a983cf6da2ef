//! docarray v2 documents (`DocListProto`, as jina 3.34's client sends them)
//! to and from the columnar [`Body`], without building [`Document`] trees or
//! JSON values on the way; and `google.protobuf.Struct` parameters to and from
//! JSON text (the envelope's form).
//!
//! A docarray `DocProto` is a map of field name to `NodeProto`. The fields
//! this host models (docs/grpc.md, "Documents"):
//!
//! | field | NodeProto | column |
//! |---|---|---|
//! | `id` | `text` | ids (a fresh id when absent) |
//! | `text` | `text` | texts |
//! | `blob` (also `bytes_`, `buffer`) | `blob` | blobs |
//! | `uri` (also `url`) | `text` | uris |
//! | `mime_type` | `text` | mime types |
//! | `embedding` | `ndarray` (`<f4`, `<f8`, `<i4`, `<i8`, either byte order) or a `list` of numbers | embeddings (as f32) |
//! | `tags` | `dict` | tags (JSON object text) |
//! | `scores` | `dict` of name to a number or `{value, op_name, description}` | scores |
//! | `chunks`, `matches` | `doc_array` | the tree (parents, relations) |
//!
//! Other fields are ignored, as the HTTP gateway ignores JSON fields it does
//! not model. Answers carry the same names (`blob`, `uri`), the embedding as
//! a `<f4` ndarray, and the scores as `{name: {value, op_name, description}}`.
//!
//! [`Document`]: crate::document::Document

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value as Json;

use prost::Message as _;

use super::pb::docarray::{
    DenseNdArrayProto, DictOfAnyProto, DocListProto, DocProto, ListOfAnyProto, NdArrayProto,
    NodeProto, node_proto,
};
use super::pb::jina::data_request_proto::{DataContentProto, data_content_proto::Documents};
use crate::document::{MAX_DEPTH, new_id, too_deep};
use crate::wire::{Body, Relation, Score};

use node_proto::Content;

/// Flattens `docs` into a body (pre-order, without recursion), checking the
/// depth as it goes.
///
/// # Errors
/// A message naming the document (`docs[3].chunks[0]`) and what is wrong.
pub fn body_from_docs(docs: &DocListProto) -> Result<Body, String> {
    crate::flow::gateway::check_request_docs(docs.docs.len())?;
    let mut body = Body::default();
    // (document, parent index, relation, level, path for messages)
    let mut stack: Vec<(&DocProto, Option<u32>, Relation, usize, String)> = docs
        .docs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, d)| (d, None, Relation::Root, 0, format!("docs[{i}]")))
        .collect();
    while let Some((doc, parent, relation, level, path)) = stack.pop() {
        if level > MAX_DEPTH {
            return Err(format!("{path}: {}", too_deep()));
        }
        let index = u32::try_from(body.len()).map_err(|_| "too many documents".to_string())?;
        let id = text_of(doc, &path, &["id"])?.map_or_else(new_id, str::to_owned);
        body.ids.data.push_str(&id);
        body.ids.ends.push(end(body.ids.data.len())?);
        body.parents.push(parent);
        body.relations.push(relation);
        body.texts.push(text_of(doc, &path, &["text"])?);
        body.uris.push(text_of(doc, &path, &["uri", "url"])?);
        body.mime_types.push(text_of(doc, &path, &["mime_type"])?);
        let mut blob = None;
        for name in ["blob", "bytes_", "buffer"] {
            match field(doc, name) {
                None => {}
                Some(Content::Blob(bytes)) => {
                    blob = Some(bytes.as_slice());
                    break;
                }
                Some(other) => {
                    return Err(format!("{path}.{name} must be bytes, not {}", kind(other)));
                }
            }
        }
        body.blobs.push(blob);
        let tags = match field(doc, "tags") {
            None => None,
            Some(Content::Dict(dict)) if dict.data.is_empty() => None,
            Some(Content::Dict(dict)) => {
                let mut text = String::new();
                dict_json(dict, &mut text);
                Some(text)
            }
            Some(other) => {
                return Err(format!("{path}.tags must be a dict, not {}", kind(other)));
            }
        };
        body.tags.push(tags.as_deref());
        let before = body.embeddings.len();
        match field(doc, "embedding") {
            None => {}
            Some(Content::Ndarray(array)) => ndarray_f32(array, &mut body.embeddings)
                .map_err(|e| format!("{path}.embedding: {e}"))?,
            Some(Content::List(list)) => {
                for (i, node) in list.data.iter().enumerate() {
                    body.embeddings.push(match &node.content {
                        Some(Content::Float(v)) => *v as f32,
                        Some(Content::Integer(v)) => *v as f32,
                        _ => return Err(format!("{path}.embedding[{i}] is not a number")),
                    });
                }
            }
            Some(other) => {
                return Err(format!(
                    "{path}.embedding must be an ndarray, not {}",
                    kind(other)
                ));
            }
        }
        let dim = u32::try_from(body.embeddings.len() - before)
            .map_err(|_| format!("{path}.embedding is too long"))?;
        body.embedding_dims.push(dim);
        match field(doc, "scores") {
            None => {}
            Some(Content::Dict(dict)) => {
                for (name, node) in &dict.data {
                    body.scores.push(
                        score(index, name, node)
                            .map_err(|e| format!("{path}.scores[{name:?}]: {e}"))?,
                    );
                }
            }
            Some(other) => {
                return Err(format!("{path}.scores must be a dict, not {}", kind(other)));
            }
        }
        // Children go on the stack in reverse so that chunks come out first,
        // in order, then matches.
        for (name, relation) in [("matches", Relation::Match), ("chunks", Relation::Chunk)] {
            match field(doc, name) {
                None => {}
                Some(Content::DocArray(list)) => {
                    stack.extend(list.docs.iter().enumerate().rev().map(|(i, d)| {
                        (
                            d,
                            Some(index),
                            relation,
                            level + 1,
                            format!("{path}.{name}[{i}]"),
                        )
                    }))
                }
                Some(other) => {
                    return Err(format!(
                        "{path}.{name} must be a DocList, not {}",
                        kind(other)
                    ));
                }
            }
        }
    }
    for column in [
        &body.texts.data,
        &body.uris.data,
        &body.mime_types.data,
        &body.tags.data,
    ] {
        end(column.len())?;
    }
    end(body.blobs.data.len())?;
    Ok(body)
}

/// What a document's field `name` holds (`None`: absent or empty).
fn field<'a>(doc: &'a DocProto, name: &str) -> Option<&'a Content> {
    doc.data.get(name).and_then(|n| n.content.as_ref())
}

/// The first of `names` the document has, which must be text.
fn text_of<'a>(doc: &'a DocProto, path: &str, names: &[&str]) -> Result<Option<&'a str>, String> {
    for name in names {
        match field(doc, name) {
            None => {}
            Some(Content::Text(text)) => return Ok(Some(text)),
            Some(other) => return Err(format!("{path}.{name} must be text, not {}", kind(other))),
        }
    }
    Ok(None)
}

/// An offset into a column: columns are addressed with 32 bits.
fn end(len: usize) -> Result<u32, String> {
    u32::try_from(len).map_err(|_| "the request's documents are over 4 GiB".to_string())
}

/// What a node holds, for messages.
fn kind(content: &Content) -> &'static str {
    match content {
        Content::Text(_) => "text",
        Content::Integer(_) => "an integer",
        Content::Float(_) => "a float",
        Content::Boolean(_) => "a boolean",
        Content::Blob(_) => "bytes",
        Content::Ndarray(_) => "an ndarray",
        Content::Doc(_) => "a document",
        Content::DocArray(_) => "a DocList",
        Content::List(_) => "a list",
        Content::Set(_) => "a set",
        Content::Tuple(_) => "a tuple",
        Content::Dict(_) => "a dict",
    }
}

/// A score: a number, or a dict with `value` (and `op_name`, `description`).
fn score(doc: u32, name: &str, node: &NodeProto) -> Result<Score, String> {
    let number = |node: Option<&NodeProto>| match node.and_then(|n| n.content.as_ref()) {
        Some(Content::Float(v)) => Ok(*v),
        Some(Content::Integer(v)) => Ok(f64::from(*v)),
        None => Ok(f64::NAN),
        Some(other) => Err(format!("the value must be a number, not {}", kind(other))),
    };
    let text = |node: Option<&NodeProto>| match node.and_then(|n| n.content.as_ref()) {
        Some(Content::Text(t)) => Some(t.clone()),
        _ => None,
    };
    match &node.content {
        Some(Content::Dict(dict)) => Ok(Score {
            doc,
            name: name.to_owned(),
            value: number(dict.data.get("value"))?,
            op_name: text(dict.data.get("op_name")),
            description: text(dict.data.get("description")),
        }),
        _ => Ok(Score {
            doc,
            name: name.to_owned(),
            value: number(Some(node))?,
            op_name: None,
            description: None,
        }),
    }
}

/// Appends a dense ndarray's values as f32.
fn ndarray_f32(array: &NdArrayProto, out: &mut Vec<f32>) -> Result<(), String> {
    let Some(dense) = &array.dense else {
        return Ok(());
    };
    let dtype = dense.dtype.as_str();
    // A client's shape: its product may not fit in 64 bits (no buffer is
    // that large, so such a shape never matches one).
    let count = dense
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)));
    dense_f32(&dense.buffer, count, dtype, out).map_err(|e| match e {
        DenseError::Dtype => {
            format!("dtype `{dtype}` is not supported (float32, float64, int32 or int64)")
        }
        DenseError::Shape(size) => {
            let needs = count
                .and_then(|c| c.checked_mul(size as u64))
                .map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            format!(
                "shape {:?} of {dtype} needs {needs} bytes, the buffer has {}",
                dense.shape,
                dense.buffer.len()
            )
        }
    })
}

/// Why a dense array's values cannot be read.
enum DenseError {
    Dtype,
    /// The shape's element count (of this many bytes each) is not the buffer's.
    Shape(usize),
}

/// Appends `buffer`'s values (`count` of them, by the shape; `None` when the
/// shape's product overflows) of `dtype` as f32.
fn dense_f32(
    buffer: &[u8],
    count: Option<u64>,
    dtype: &str,
    out: &mut Vec<f32>,
) -> Result<(), DenseError> {
    let (little, code) = match dtype.as_bytes().first() {
        Some(b'<') => (true, &dtype[1..]),
        Some(b'>') => (false, &dtype[1..]),
        Some(b'=' | b'|') => (cfg!(target_endian = "little"), &dtype[1..]),
        _ => (cfg!(target_endian = "little"), dtype),
    };
    let size = match code {
        "f4" | "float32" | "i4" | "int32" => 4,
        "f8" | "float64" | "i8" | "int64" => 8,
        _ => return Err(DenseError::Dtype),
    };
    if !buffer.len().is_multiple_of(size) || count != Some((buffer.len() / size) as u64) {
        return Err(DenseError::Shape(size));
    }
    out.reserve(buffer.len() / size);
    macro_rules! read {
        ($t:ty, $n:literal) => {
            out.extend(buffer.chunks_exact($n).map(|b| {
                let b: [u8; $n] = b.try_into().expect("chunks_exact");
                (if little {
                    <$t>::from_le_bytes(b)
                } else {
                    <$t>::from_be_bytes(b)
                }) as f32
            }))
        };
    }
    match code {
        "f4" | "float32" => read!(f32, 4),
        "f8" | "float64" => read!(f64, 8),
        "i4" | "int32" => read!(i32, 4),
        _ => read!(i64, 8),
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(text: &str, out: &mut String) {
    // Writing a str as JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// A JSON number, or `null` for NaN and the infinities (as serde_json writes them).
fn json_f64(value: f64, out: &mut String) {
    if value.is_finite() {
        let _ = write!(
            out,
            "{}",
            serde_json::Number::from_f64(value).expect("finite")
        );
    } else {
        out.push_str("null");
    }
}

/// A dict node as a JSON object. Nesting is bounded by prost's decoding
/// recursion limit (100 levels), so this recursion is too.
fn dict_json(dict: &DictOfAnyProto, out: &mut String) {
    map_json(&dict.data, out);
}

fn map_json(map: &HashMap<String, NodeProto>, out: &mut String) {
    out.push('{');
    for (i, (key, node)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(key, out);
        out.push(':');
        node_json(node, out);
    }
    out.push('}');
}

fn list_json(list: &ListOfAnyProto, out: &mut String) {
    out.push('[');
    for (i, node) in list.data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        node_json(node, out);
    }
    out.push(']');
}

/// A node as JSON: bytes as base64 text, an ndarray as a list of numbers
/// (float dtypes; others `null`), a document as an object of its fields.
fn node_json(node: &NodeProto, out: &mut String) {
    match &node.content {
        None => out.push_str("null"),
        Some(Content::Text(text)) => json_str(text, out),
        Some(Content::Integer(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Content::Float(v)) => json_f64(*v, out),
        Some(Content::Boolean(v)) => out.push_str(if *v { "true" } else { "false" }),
        Some(Content::Blob(bytes)) => json_str(
            &base64::engine::general_purpose::STANDARD.encode(bytes),
            out,
        ),
        Some(Content::Ndarray(array)) => {
            let mut values = Vec::new();
            if ndarray_f32(array, &mut values).is_ok() {
                out.push('[');
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_f64(f64::from(*v), out);
                }
                out.push(']');
            } else {
                out.push_str("null");
            }
        }
        Some(Content::Doc(doc)) => map_json(&doc.data, out),
        Some(Content::DocArray(list)) => {
            out.push('[');
            for (i, doc) in list.docs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                map_json(&doc.data, out);
            }
            out.push(']');
        }
        Some(Content::List(list) | Content::Set(list) | Content::Tuple(list)) => {
            list_json(list, out)
        }
        Some(Content::Dict(dict)) => dict_json(dict, out),
    }
}

fn node(content: Content) -> NodeProto {
    NodeProto {
        content: Some(content),
        docarray_type: None,
    }
}

fn typed(content: Content, type_name: &str) -> NodeProto {
    NodeProto {
        content: Some(content),
        docarray_type: Some(node_proto::DocarrayType::Type(type_name.to_owned())),
    }
}

/// A JSON value as a node: integers that fit 32 bits as `integer`, other
/// numbers as `float`, `null` as an empty node.
fn json_node(value: &Json) -> NodeProto {
    match value {
        Json::Null => NodeProto::default(),
        Json::Bool(b) => node(Content::Boolean(*b)),
        Json::Number(n) => match n.as_i64().and_then(|v| i32::try_from(v).ok()) {
            Some(v) => node(Content::Integer(v)),
            None => node(Content::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => node(Content::Text(s.clone())),
        Json::Array(items) => node(Content::List(ListOfAnyProto {
            data: items.iter().map(json_node).collect(),
        })),
        Json::Object(map) => node(Content::Dict(DictOfAnyProto {
            data: map.iter().map(|(k, v)| (k.clone(), json_node(v))).collect(),
        })),
    }
}

/// Rebuilds the documents of a (valid) body as docarray documents, without
/// recursion: children are attached from the back, as
/// [`Body::into_documents`] does.
///
/// # Errors
/// Tags that are not a JSON object.
pub fn docs_from_body(body: &Body) -> Result<DocListProto, String> {
    let n = body.len();
    let mut scores: Vec<HashMap<String, NodeProto>> = vec![HashMap::new(); n];
    for s in &body.scores {
        let mut fields = HashMap::from([("value".to_owned(), node(Content::Float(s.value)))]);
        if let Some(op) = &s.op_name {
            fields.insert("op_name".into(), node(Content::Text(op.clone())));
        }
        if let Some(d) = &s.description {
            fields.insert("description".into(), node(Content::Text(d.clone())));
        }
        if let Some(map) = scores.get_mut(s.doc as usize) {
            map.insert(
                s.name.clone(),
                node(Content::Dict(DictOfAnyProto { data: fields })),
            );
        }
    }
    let mut flat: Vec<DocProto> = Vec::with_capacity(n);
    let mut offset = 0;
    for (i, scores) in scores.into_iter().enumerate() {
        let mut data = HashMap::with_capacity(4);
        let id = body.ids.get(i).unwrap_or_default();
        data.insert("id".to_owned(), typed(Content::Text(id.to_owned()), "id"));
        if let Some(text) = body.texts.get(i) {
            data.insert("text".into(), node(Content::Text(text.to_owned())));
        }
        if let Some(blob) = body.blobs.get(i) {
            data.insert("blob".into(), node(Content::Blob(blob.to_vec())));
        }
        if let Some(uri) = body.uris.get(i) {
            data.insert("uri".into(), node(Content::Text(uri.to_owned())));
        }
        if let Some(mime) = body.mime_types.get(i) {
            data.insert("mime_type".into(), node(Content::Text(mime.to_owned())));
        }
        let dim = body.embedding_dims[i] as usize;
        if dim > 0 {
            let values = &body.embeddings[offset..offset + dim];
            let mut buffer = Vec::with_capacity(dim * 4);
            for v in values {
                buffer.extend_from_slice(&v.to_le_bytes());
            }
            let array = NdArrayProto {
                dense: Some(DenseNdArrayProto {
                    buffer,
                    shape: vec![dim as u32],
                    dtype: "<f4".into(),
                }),
                parameters: None,
            };
            data.insert(
                "embedding".into(),
                typed(Content::Ndarray(array), "ndarray"),
            );
        }
        offset += dim;
        let tags = body.tags_of(i)?;
        if !tags.is_empty() {
            data.insert(
                "tags".into(),
                node(Content::Dict(DictOfAnyProto {
                    data: tags
                        .iter()
                        .map(|(k, v)| (k.clone(), json_node(v)))
                        .collect(),
                })),
            );
        }
        if !scores.is_empty() {
            data.insert(
                "scores".into(),
                node(Content::Dict(DictOfAnyProto { data: scores })),
            );
        }
        flat.push(DocProto { data });
    }
    // Children come after their parent: from the back, every document's
    // children are complete (in reverse) when it is reached.
    let mut children: Vec<(Vec<DocProto>, Vec<DocProto>)> = Vec::new();
    children.resize_with(n, Default::default);
    let mut roots = Vec::new();
    while let Some(mut doc) = flat.pop() {
        let i = flat.len();
        let (mut chunks, mut matches) = std::mem::take(&mut children[i]);
        for (name, list) in [("chunks", &mut chunks), ("matches", &mut matches)] {
            if !list.is_empty() {
                list.reverse();
                let docs = std::mem::take(list);
                doc.data
                    .insert(name.into(), node(Content::DocArray(DocListProto { docs })));
            }
        }
        match body.parents[i] {
            None => roots.push(doc),
            Some(p) if body.relations[i] == Relation::Chunk => children[p as usize].0.push(doc),
            Some(p) => children[p as usize].1.push(doc),
        }
    }
    roots.reverse();
    Ok(DocListProto { docs: roots })
}

/// `google.protobuf.Struct` parameters as JSON object text. Numbers are
/// doubles in a Struct (`3` arrives as `3.0`): integral ones below 2^53 are
/// written as integers (`3`), others as they are (`0.5`). Nesting is bounded
/// by prost's decoding recursion limit.
pub fn struct_json(parameters: Option<&prost_types::Struct>) -> String {
    let mut out = String::new();
    match parameters {
        None => out.push_str("{}"),
        Some(s) => struct_fields_json(s, &mut out),
    }
    out
}

fn struct_fields_json(s: &prost_types::Struct, out: &mut String) {
    out.push('{');
    // Sorted, so the same parameters give the same text.
    let mut fields: Vec<_> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (key, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(key, out);
        out.push(':');
        value_json(value, out);
    }
    out.push('}');
}

fn value_json(value: &prost_types::Value, out: &mut String) {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => out.push_str("null"),
        // A Struct carries every number as a double; integral ones are
        // written as integers, so `top_k: 3` reads as an integer in an
        // executor, as it does over HTTP (docs/grpc.md, "Parameters").
        Some(Kind::NumberValue(v)) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
            let _ = write!(out, "{}", *v as i64);
        }
        Some(Kind::NumberValue(v)) => json_f64(*v, out),
        Some(Kind::StringValue(s)) => json_str(s, out),
        Some(Kind::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Kind::StructValue(s)) => struct_fields_json(s, out),
        Some(Kind::ListValue(list)) => {
            out.push('[');
            for (i, v) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value_json(v, out);
            }
            out.push(']');
        }
    }
}

// The fast paths: a request's `DataContentProto` bytes read straight into a
// body, and a body written straight into `DataContentProto` bytes, without
// the `DocProto` maps and `NodeProto`s in between (most of the gRPC side's
// cost when measured: docs/benchmarks.md, "The gRPC gateway against HTTP").
// They take flat documents of the modelled scalar fields (id, text, blob,
// uri, mime type, an ndarray embedding), which is what clients send to index
// or encode. Anything else (chunks, matches, tags, scores, list embeddings,
// other fields, a field twice, malformed bytes) goes the general way through
// prost's messages, so both ways give the same body, answer and error.

/// Wire type of varints.
const VARINT: u8 = 0;
/// Wire type of strings, bytes and embedded messages.
const LEN: u8 = 2;

/// A cursor over protobuf bytes for the fast path. `None` from any method
/// means "not for the fast path" (malformed, or not modelled): the caller
/// falls back to prost, which says what is wrong.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            // The tenth byte may only hold the 64th bit (prost's rule).
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// A field's key: (tag, wire type).
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).ok().filter(|&t| t > 0)?;
        Some((tag, (key & 7) as u8))
    }

    /// A length-delimited field's bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.0.len() {
            return None;
        }
        let (field, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(field)
    }
}

/// A `NodeProto`'s content, as far as the fast path reads it.
enum Node<'a> {
    Empty,
    Text(&'a str),
    Blob(&'a [u8]),
    /// An ndarray: `None` without its `dense` part.
    Ndarray(Option<Dense<'a>>),
}

/// A `DenseNdArrayProto`.
struct Dense<'a> {
    buffer: &'a [u8],
    /// The shape's element count (`None`: it overflows 64 bits).
    count: Option<u64>,
    dtype: &'a str,
}

fn read_node(bytes: &[u8]) -> Option<Node<'_>> {
    let mut wire = Wire(bytes);
    let mut content = Node::Empty;
    while !wire.done() {
        let (tag, wire_type) = wire.key()?;
        if wire_type != LEN {
            return None;
        }
        let field = wire.bytes()?;
        let value = match tag {
            1 => Node::Text(std::str::from_utf8(field).ok()?),
            5 => Node::Blob(field),
            6 => Node::Ndarray(ndarray(field)?),
            // docarray's type name: checked as text, not used.
            13 => {
                std::str::from_utf8(field).ok()?;
                continue;
            }
            _ => return None,
        };
        // A second content field replaces or merges into the first in prost.
        if !matches!(content, Node::Empty) {
            return None;
        }
        content = value;
    }
    Some(content)
}

fn ndarray(bytes: &[u8]) -> Option<Option<Dense<'_>>> {
    let mut wire = Wire(bytes);
    let mut dense = None;
    while !wire.done() {
        match wire.key()? {
            (1, LEN) if dense.is_none() => dense = Some(dense_array(wire.bytes()?)?),
            _ => return None,
        }
    }
    Some(dense)
}

fn dense_array(bytes: &[u8]) -> Option<Dense<'_>> {
    let mut wire = Wire(bytes);
    let (mut buffer, mut dtype, mut count) = (None, None, Some(1u64));
    let dim = |d: u64, count: &mut Option<u64>| -> Option<()> {
        let d = u32::try_from(d).ok()?;
        *count = count.and_then(|c| c.checked_mul(u64::from(d)));
        Some(())
    };
    while !wire.done() {
        match wire.key()? {
            (1, LEN) if buffer.is_none() => buffer = Some(wire.bytes()?),
            // Packed (as written) or one by one (as also read).
            (2, LEN) => {
                let mut packed = Wire(wire.bytes()?);
                while !packed.done() {
                    dim(packed.varint()?, &mut count)?;
                }
            }
            (2, VARINT) => dim(wire.varint()?, &mut count)?,
            (3, LEN) if dtype.is_none() => dtype = Some(std::str::from_utf8(wire.bytes()?).ok()?),
            _ => return None,
        }
    }
    Some(Dense {
        buffer: buffer.unwrap_or_default(),
        count,
        dtype: dtype.unwrap_or_default(),
    })
}

/// One flat document's fields.
#[derive(Default)]
struct Flat<'a> {
    id: Option<&'a str>,
    text: Option<&'a str>,
    uri: Option<&'a str>,
    url: Option<&'a str>,
    mime_type: Option<&'a str>,
    blobs: [Option<&'a [u8]>; 3],
    embedding: Option<Dense<'a>>,
}

/// Reads one `DocProto` into `body`, as [`body_from_docs`] does a flat one.
fn flat_doc(bytes: &[u8], body: &mut Body) -> Option<()> {
    let mut wire = Wire(bytes);
    let mut doc = Flat::default();
    let mut seen = 0u16;
    while !wire.done() {
        if wire.key()? != (1, LEN) {
            return None;
        }
        // A map entry: key = 1, value = 2.
        let mut entry = Wire(wire.bytes()?);
        let (mut key, mut value) = (None, None);
        while !entry.done() {
            match entry.key()? {
                (1, LEN) if key.is_none() => key = Some(std::str::from_utf8(entry.bytes()?).ok()?),
                (2, LEN) if value.is_none() => value = Some(read_node(entry.bytes()?)?),
                _ => return None,
            }
        }
        let value = value.unwrap_or(Node::Empty);
        let (bit, slot) = match key? {
            "id" => (0, &mut doc.id),
            "text" => (1, &mut doc.text),
            "uri" => (2, &mut doc.uri),
            "url" => (3, &mut doc.url),
            "mime_type" => (4, &mut doc.mime_type),
            name => {
                let bit = match name {
                    "blob" => 5,
                    "bytes_" => 6,
                    "buffer" => 7,
                    "embedding" => 8,
                    _ => return None,
                };
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
                match (bit, value) {
                    (_, Node::Empty) => {}
                    (5..=7, Node::Blob(b)) => doc.blobs[bit - 5] = Some(b),
                    (8, Node::Ndarray(dense)) => doc.embedding = dense,
                    _ => return None,
                }
                continue;
            }
        };
        if seen & (1 << bit) != 0 {
            return None;
        }
        seen |= 1 << bit;
        match value {
            Node::Empty => {}
            Node::Text(text) => *slot = Some(text),
            _ => return None,
        }
    }
    let id = doc.id.map_or_else(new_id, str::to_owned);
    body.ids.data.push_str(&id);
    body.ids.ends.push(end(body.ids.data.len()).ok()?);
    body.parents.push(None);
    body.relations.push(Relation::Root);
    body.texts.push(doc.text);
    body.uris.push(doc.uri.or(doc.url));
    body.mime_types.push(doc.mime_type);
    body.blobs.push(doc.blobs.into_iter().flatten().next());
    body.tags.push(None);
    let before = body.embeddings.len();
    if let Some(dense) = doc.embedding {
        dense_f32(dense.buffer, dense.count, dense.dtype, &mut body.embeddings).ok()?;
    }
    body.embedding_dims
        .push(u32::try_from(body.embeddings.len() - before).ok()?);
    Some(())
}

/// A `DataContentProto`'s bytes as a body, when its documents are flat ones
/// of the modelled fields; `None` otherwise (then prost reads them).
pub fn fast_body(content: &[u8]) -> Option<Body> {
    let mut wire = Wire(content);
    let mut list = None;
    while !wire.done() {
        match wire.key()? {
            (1, LEN) if list.is_none() => list = Some(wire.bytes()?),
            _ => return None,
        }
    }
    let mut body = Body::default();
    let mut wire = Wire(list.unwrap_or_default());
    let mut n = 0;
    while !wire.done() {
        if wire.key()? != (1, LEN) {
            return None;
        }
        n += 1;
        crate::flow::gateway::check_request_docs(n).ok()?;
        flat_doc(wire.bytes()?, &mut body)?;
    }
    for column in [
        &body.texts.data,
        &body.uris.data,
        &body.mime_types.data,
        &body.tags.data,
    ] {
        end(column.len()).ok()?;
    }
    end(body.blobs.data.len()).ok()?;
    Some(body)
}

fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field of `n` bytes (tags below 16 take a
/// one-byte key).
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field's key and length.
fn put_head(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag << 3 | LEN);
    put_varint(out, n as u64);
}

fn put_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    put_head(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

/// A scalar `NodeProto`: its content field and docarray type name.
struct Scalar<'a> {
    key: &'static str,
    tag: u8,
    bytes: &'a [u8],
    type_name: Option<&'static str>,
}

impl Scalar<'_> {
    fn node_len(&self) -> usize {
        field_len(self.bytes.len()) + self.type_name.map_or(0, |t| field_len(t.len()))
    }

    /// The map entry's bytes (key and value).
    fn entry_len(&self) -> usize {
        field_len(self.key.len()) + field_len(self.node_len())
    }

    fn put(&self, out: &mut Vec<u8>) {
        put_head(out, 1, self.entry_len());
        put_field(out, 1, self.key.as_bytes());
        put_head(out, 2, self.node_len());
        put_field(out, self.tag, self.bytes);
        if let Some(t) = self.type_name {
            put_field(out, 13, t.as_bytes());
        }
    }
}

/// Sizes of an embedding's nested messages: (dense, ndarray, node, entry).
fn embedding_lens(dim: usize) -> (usize, usize, usize, usize) {
    let dense = field_len(dim * 4) + field_len(varint_len(dim as u64)) + field_len(3);
    let ndarray = field_len(dense);
    let node = field_len(ndarray) + field_len("ndarray".len());
    (
        dense,
        ndarray,
        node,
        field_len("embedding".len()) + field_len(node),
    )
}

/// A flat document's scalar fields, as [`docs_from_body`] writes them.
fn scalars(body: &Body, i: usize) -> impl Iterator<Item = Scalar<'_>> {
    fn text<'a>(key: &'static str, value: Option<&'a str>) -> Option<Scalar<'a>> {
        value.map(|v| Scalar {
            key,
            tag: 1,
            bytes: v.as_bytes(),
            type_name: None,
        })
    }
    [
        Some(Scalar {
            key: "id",
            tag: 1,
            bytes: body.ids.get(i).unwrap_or_default().as_bytes(),
            type_name: Some("id"),
        }),
        text("text", body.texts.get(i)),
        body.blobs.get(i).map(|b| Scalar {
            key: "blob",
            tag: 5,
            bytes: b,
            type_name: None,
        }),
        text("uri", body.uris.get(i)),
        text("mime_type", body.mime_types.get(i)),
    ]
    .into_iter()
    .flatten()
}

/// A body of flat documents without tags or scores as `DataContentProto`
/// bytes; `None` for any other (then [`docs_from_body`] and prost write it).
fn fast_content(body: &Body) -> Option<Vec<u8>> {
    let n = body.len();
    if !body.scores.is_empty()
        || body.parents.iter().any(Option::is_some)
        || (0..n).any(|i| body.tags.get(i).is_some())
        || body.embedding_dims.len() != n
    {
        return None;
    }
    let mut doc_lens = Vec::with_capacity(n);
    let mut list = 0;
    for i in 0..n {
        let dim = body.embedding_dims[i] as usize;
        let mut len: usize = scalars(body, i).map(|s| field_len(s.entry_len())).sum();
        if dim > 0 {
            len += field_len(embedding_lens(dim).3);
        }
        doc_lens.push(len);
        list += field_len(len);
    }
    let mut out = Vec::with_capacity(field_len(list));
    put_head(&mut out, 1, list);
    let mut offset = 0usize;
    for (i, &len) in doc_lens.iter().enumerate() {
        put_head(&mut out, 1, len);
        for scalar in scalars(body, i) {
            scalar.put(&mut out);
        }
        let dim = body.embedding_dims[i] as usize;
        if dim > 0 {
            let values = body.embeddings.get(offset..offset + dim)?;
            offset += dim;
            let (dense, ndarray, node, entry) = embedding_lens(dim);
            put_head(&mut out, 1, entry);
            put_field(&mut out, 1, b"embedding");
            put_head(&mut out, 2, node);
            put_head(&mut out, 6, ndarray);
            put_head(&mut out, 1, dense);
            put_head(&mut out, 1, dim * 4);
            #[cfg(target_endian = "little")]
            out.extend_from_slice(bytemuck::cast_slice(values));
            #[cfg(not(target_endian = "little"))]
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_head(&mut out, 2, varint_len(dim as u64));
            put_varint(&mut out, dim as u64);
            put_field(&mut out, 3, b"<f4");
            put_field(&mut out, 13, b"ndarray");
        }
    }
    (offset == body.embeddings.len()).then_some(out)
}

/// A (valid) body as the bytes of a `DataContentProto` holding its
/// documents, as [`docs_from_body`] builds them.
///
/// # Errors
/// Tags that are not a JSON object.
pub fn content_from_body(body: &Body) -> Result<Vec<u8>, String> {
    if let Some(bytes) = fast_content(body) {
        return Ok(bytes);
    }
    let docs = docs_from_body(body)?;
    Ok(DataContentProto {
        documents: Some(Documents::Docs(docs)),
    }
    .encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Document;

    fn text(t: &str) -> NodeProto {
        node(Content::Text(t.into()))
    }

    #[test]
    fn documents_round_trip_through_the_body() {
        let mut docs = crate::wire::body::tests::tree();
        docs[0].blob = Some(vec![0, 1, 2]);
        docs[0].uri = Some("file://x".into());
        let body = Body::from_documents(&docs);
        let list = docs_from_body(&body).unwrap();
        let again = body_from_docs(&list).unwrap();
        again.validate().unwrap();
        assert_eq!(again.into_documents().unwrap(), docs);
    }

    #[test]
    fn client_documents_read_as_the_client_sends_them() {
        // As docarray 0.41 writes DocList[Doc] (see the probe in docs/grpc.md).
        let embedding = NdArrayProto {
            dense: Some(DenseNdArrayProto {
                buffer: [1.5f32, -2.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
                shape: vec![2],
                dtype: "<f4".into(),
            }),
            parameters: None,
        };
        let tags = DictOfAnyProto {
            data: HashMap::from([
                ("n".to_owned(), node(Content::Integer(1))),
                ("f".to_owned(), node(Content::Float(1.5))),
                (
                    "l".to_owned(),
                    node(Content::List(ListOfAnyProto {
                        data: vec![text("x"), NodeProto::default()],
                    })),
                ),
            ]),
        };
        let doc = DocProto {
            data: HashMap::from([
                ("id".to_owned(), typed(Content::Text("a".into()), "id")),
                ("text".to_owned(), text("hi")),
                ("tags".to_owned(), node(Content::Dict(tags))),
                (
                    "embedding".to_owned(),
                    typed(Content::Ndarray(embedding), "ndarray"),
                ),
                ("url".to_owned(), NodeProto::default()),
                ("unknown".to_owned(), text("ignored")),
            ]),
        };
        let body = body_from_docs(&DocListProto {
            docs: vec![doc, DocProto::default()],
        })
        .unwrap();
        body.validate().unwrap();
        body.check_tags().unwrap();
        let docs: Vec<Document> = body.into_documents().unwrap();
        assert_eq!(docs[0].id, "a");
        assert_eq!(docs[0].text.as_deref(), Some("hi"));
        assert_eq!(docs[0].embedding.as_deref(), Some(&[1.5f32, -2.0][..]));
        assert_eq!(docs[0].tags["f"], 1.5);
        assert_eq!(docs[0].tags["l"], serde_json::json!(["x", null]));
        assert_eq!(docs[1].id.len(), 32);
    }

    #[test]
    fn bad_documents_are_named() {
        let doc = |k: &str, v: NodeProto| DocListProto {
            docs: vec![DocProto {
                data: HashMap::from([(k.to_owned(), v)]),
            }],
        };
        let error = |list: DocListProto| body_from_docs(&list).unwrap_err();
        let many = DocListProto {
            docs: vec![DocProto::default(); 100_001],
        };
        assert!(error(many).starts_with("the request has 100001 documents, more than the 100000"));
        assert_eq!(
            error(doc("text", node(Content::Integer(1)))),
            "docs[0].text must be text, not an integer"
        );
        let bad = NdArrayProto {
            dense: Some(DenseNdArrayProto {
                buffer: vec![0; 6],
                shape: vec![2],
                dtype: "<f4".into(),
            }),
            parameters: None,
        };
        assert_eq!(
            error(doc("embedding", node(Content::Ndarray(bad)))),
            "docs[0].embedding: shape [2] of <f4 needs 8 bytes, the buffer has 6"
        );
        let f2 = NdArrayProto {
            dense: Some(DenseNdArrayProto {
                buffer: vec![0; 2],
                shape: vec![1],
                dtype: "<f2".into(),
            }),
            parameters: None,
        };
        assert!(
            error(doc("embedding", node(Content::Ndarray(f2))))
                .contains("dtype `<f2` is not supported")
        );
        // Past MAX_DEPTH, by chunks.
        let mut deep = DocProto::default();
        for _ in 0..MAX_DEPTH {
            deep = DocProto {
                data: HashMap::from([(
                    "chunks".to_owned(),
                    node(Content::DocArray(DocListProto { docs: vec![deep] })),
                )]),
            };
        }
        let at = body_from_docs(&DocListProto {
            docs: vec![deep.clone()],
        })
        .unwrap();
        assert_eq!(at.len(), MAX_DEPTH + 1);
        let past = DocProto {
            data: HashMap::from([(
                "matches".to_owned(),
                node(Content::DocArray(DocListProto { docs: vec![deep] })),
            )]),
        };
        assert!(error(DocListProto { docs: vec![past] }).contains("more than 32 levels"));
    }

    #[test]
    fn parameters_become_json_text() {
        use prost_types::{Struct, Value, value::Kind};
        let s = Struct {
            fields: [
                (
                    "top_k".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(3.0)),
                    },
                ),
                (
                    "p".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(0.5)),
                    },
                ),
                (
                    "name".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue("q\"".into())),
                    },
                ),
                ("none".to_owned(), Value { kind: None }),
            ]
            .into(),
        };
        assert_eq!(
            struct_json(Some(&s)),
            r#"{"name":"q\"","none":null,"p":0.5,"top_k":3}"#
        );
        assert_eq!(struct_json(None), "{}");
    }
}
