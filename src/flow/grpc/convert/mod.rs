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

mod answer;
mod fast;
mod params;
#[cfg(test)]
mod tests;

pub use answer::{AnswerError, MAX_PROTO_DEPTH, docs_from_body};
pub use fast::{content_from_body, count_docs, fast_body};

#[cfg(test)]
use answer::{node, typed};
pub use params::struct_json;

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
        let id_end = end(body.ids.data.len())?;
        body.ids.ends.push(id_end);
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
                dict_json(dict, &mut text).map_err(|e| format!("{path}.tags{e}"))?;
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
                .map_err(|e| e.naming(&format!("{path}.embedding")))?,
            Some(Content::List(list)) => {
                for (i, node) in list.data.iter().enumerate() {
                    body.embeddings.push(match &node.content {
                        Some(Content::Float(v)) => as_f32(*v).ok_or_else(|| {
                            ArrayError::Value(i, *v).naming(&format!("{path}.embedding"))
                        })?,
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
                    }));
                    // Chunks and matches count against MAX_REQUEST_DOCS as
                    // top-level documents do (lean.rs counts them on the
                    // bytes, before prost reads them; this is the second
                    // look): those read and those known to follow.
                    crate::flow::gateway::check_request_docs(body.len() + stack.len())?;
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

/// Why an ndarray's values cannot be an embedding.
enum ArrayError {
    Text(String),
    /// The value at this index is not a finite number a 32-bit float holds.
    Value(usize, f64),
}

impl ArrayError {
    /// The message for the client, `path` naming the array.
    fn naming(self, path: &str) -> String {
        match self {
            ArrayError::Text(e) => format!("{path}: {e}"),
            ArrayError::Value(i, v) => format!("{path}[{i}] = {}", value_error(v)),
        }
    }
}

/// Why `v` is refused as a 32-bit float: the HTTP gateway's rule (an
/// embedding value beyond `f32`'s range is refused by index,
/// src/document.rs), and NaN and the infinities, which no executor can
/// compare, are refused too.
fn value_error(v: f64) -> String {
    if v.is_finite() {
        format!("{v:e} does not fit a 32-bit float")
    } else {
        format!("{v} is not a finite number")
    }
}

/// `v` as a finite f32, if it is one.
fn as_f32(v: f64) -> Option<f32> {
    (v.is_finite() && v.abs() <= f64::from(f32::MAX)).then_some(v as f32)
}

/// Appends a dense ndarray's values as f32.
fn ndarray_f32(array: &NdArrayProto, out: &mut Vec<f32>) -> Result<(), ArrayError> {
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
        DenseError::Dtype => ArrayError::Text(format!(
            "dtype `{dtype}` is not supported (float32, float64, int32 or int64)"
        )),
        DenseError::Shape(size) => {
            let needs = count
                .and_then(|c| c.checked_mul(size as u64))
                .map_or_else(|| "more than 2^64".to_string(), |n| n.to_string());
            ArrayError::Text(format!(
                "shape {:?} of {dtype} needs {needs} bytes, the buffer has {}",
                dense.shape,
                dense.buffer.len()
            ))
        }
        DenseError::Value(i, v) => ArrayError::Value(i, v),
    })
}

/// Why a dense array's values cannot be read.
enum DenseError {
    Dtype,
    /// The shape's element count (of this many bytes each) is not the buffer's.
    Shape(usize),
    /// The value at this index is not a finite 32-bit float ([`as_f32`]).
    Value(usize, f64),
}

/// Appends `buffer`'s values (`count` of them, by the shape; `None` when the
/// shape's product overflows) of `dtype` as f32. Floats must be finite and
/// within `f32`'s range; on an error `out` may hold some of the values.
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
    let start = out.len();
    match code {
        "f4" | "float32" => read!(f32, 4),
        "f8" | "float64" => {
            for (i, b) in buffer.chunks_exact(8).enumerate() {
                let b: [u8; 8] = b.try_into().expect("chunks_exact");
                let v = if little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                out.push(as_f32(v).ok_or(DenseError::Value(i, v))?);
            }
        }
        "i4" | "int32" => read!(i32, 4),
        // Every i64 is within f32's range.
        _ => read!(i64, 8),
    }
    if matches!(code, "f4" | "float32")
        && let Some(i) = out[start..].iter().position(|v| !v.is_finite())
    {
        return Err(DenseError::Value(i, f64::from(out[start + i])));
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(text: &str, out: &mut String) {
    // Writing a str as JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// A JSON number; NaN and the infinities, which JSON cannot hold, are
/// refused (the HTTP gateway's JSON reader refuses them too), where they
/// used to become `null` unsaid: the error is the rest of a message
/// (` = NaN is not a finite number`).
fn json_f64(value: f64, out: &mut String) -> Result<(), String> {
    let number =
        serde_json::Number::from_f64(value).ok_or_else(|| format!(" = {}", value_error(value)))?;
    let _ = write!(out, "{number}");
    Ok(())
}

/// A dict node as a JSON object. Nesting is bounded by prost's decoding
/// recursion limit (100 levels), so this recursion is too.
///
/// # Errors
/// Where in it a value JSON cannot hold is, and why (`["a"][2] = NaN ...`).
fn dict_json(dict: &DictOfAnyProto, out: &mut String) -> Result<(), String> {
    map_json(&dict.data, out)
}

fn map_json(map: &HashMap<String, NodeProto>, out: &mut String) -> Result<(), String> {
    out.push('{');
    for (i, (key, node)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(key, out);
        out.push(':');
        node_json(node, out).map_err(|e| format!("[{key:?}]{e}"))?;
    }
    out.push('}');
    Ok(())
}

fn list_json(list: &ListOfAnyProto, out: &mut String) -> Result<(), String> {
    out.push('[');
    for (i, node) in list.data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        node_json(node, out).map_err(|e| format!("[{i}]{e}"))?;
    }
    out.push(']');
    Ok(())
}

/// A node as JSON: bytes as base64 text, an ndarray as a list of numbers
/// (float dtypes; others `null`), a document as an object of its fields.
fn node_json(node: &NodeProto, out: &mut String) -> Result<(), String> {
    match &node.content {
        None => out.push_str("null"),
        Some(Content::Text(text)) => json_str(text, out),
        Some(Content::Integer(v)) => {
            let _ = write!(out, "{v}");
        }
        Some(Content::Float(v)) => json_f64(*v, out)?,
        Some(Content::Boolean(v)) => out.push_str(if *v { "true" } else { "false" }),
        Some(Content::Blob(bytes)) => json_str(
            &base64::engine::general_purpose::STANDARD.encode(bytes),
            out,
        ),
        Some(Content::Ndarray(array)) => {
            let mut values = Vec::new();
            match ndarray_f32(array, &mut values) {
                Ok(()) => {
                    out.push('[');
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        json_f64(f64::from(*v), out)?;
                    }
                    out.push(']');
                }
                Err(ArrayError::Value(i, v)) => return Err(format!("[{i}] = {}", value_error(v))),
                Err(ArrayError::Text(_)) => out.push_str("null"),
            }
        }
        Some(Content::Doc(doc)) => map_json(&doc.data, out)?,
        Some(Content::DocArray(list)) => {
            out.push('[');
            for (i, doc) in list.docs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                map_json(&doc.data, out).map_err(|e| format!("[{i}]{e}"))?;
            }
            out.push(']');
        }
        Some(Content::List(list) | Content::Set(list) | Content::Tuple(list)) => {
            list_json(list, out)?
        }
        Some(Content::Dict(dict)) => dict_json(dict, out)?,
    }
    Ok(())
}
