//! A body's documents as docarray documents (the answer's direction), and
//! the one limit that direction has: how deep protobuf clients read.

use super::*;
use crate::wire::ErrorKind;

/// The deepest protobuf message nesting an answer may have, counting the
/// `DataRequestProto` as 0: protobuf's usual recursion limit (upb, which
/// Python's protobuf and so Jina's client use, C++, Java and prost all stop
/// at 100). Each level of `chunks`/`matches` is 4 (`DocProto`, map entry,
/// `NodeProto`, `DocListProto`), so plain documents may nest 23 levels,
/// fewer with scores (a document's score is 8 below it) or nested tags (3 a
/// dict, 2 a list). An answer past it is refused rather than sent: a client
/// cannot decode it (found by a hostile test: Python's protobuf raised
/// `Exceeded upb_DecodeOptions_MaxDepth`, Jina's client `INTERNAL`).
pub const MAX_PROTO_DEPTH: usize = 100;

/// Why an answer's documents cannot be written.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerError {
    /// Tags that are not a JSON object (a body that passed validation has
    /// none).
    Tags(String),
    /// Documents nested deeper than protobuf clients read.
    TooDeep(String),
}

impl AnswerError {
    /// The error kind the client sees, and the message.
    pub fn kind_and_message(self) -> (ErrorKind, String) {
        match self {
            AnswerError::Tags(m) => (ErrorKind::Malformed, m),
            AnswerError::TooDeep(m) => (ErrorKind::InvalidOutput, m),
        }
    }
}

/// How far below a `NodeProto` holding `value` its deepest message is.
fn json_depth(value: &Json) -> usize {
    match value {
        Json::Object(map) if map.is_empty() => 1,
        // DictOfAnyProto, map entry, NodeProto.
        Json::Object(map) => 3 + map.values().map(json_depth).max().unwrap_or(0),
        Json::Array(items) if items.is_empty() => 1,
        // ListOfAnyProto, NodeProto.
        Json::Array(items) => 2 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn node(content: Content) -> NodeProto {
    NodeProto {
        content: Some(content),
        docarray_type: None,
    }
}

pub(super) fn typed(content: Content, type_name: &str) -> NodeProto {
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
/// Tags that are not a JSON object; documents nested deeper than protobuf
/// clients read ([`MAX_PROTO_DEPTH`]).
pub fn docs_from_body(body: &Body) -> Result<DocListProto, AnswerError> {
    let n = body.len();
    // Each document's level below its root (a parent comes before its
    // children in a valid body).
    let mut levels: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        let level = match body.parents.get(i).copied().flatten() {
            Some(p) => levels.get(p as usize).map_or(0, |l| l + 1),
            None => 0,
        };
        levels.push(level);
    }
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
        let tags = body
            .tags_of(i)
            .map_err(|e| AnswerError::Tags(e.to_string()))?;
        // How deep this document's messages go: its `DocProto` is 4 below
        // the request and 4 below its parent's; a field's `NodeProto` 2
        // below it, the embedding's `DenseNdArrayProto` 4, a score's value
        // 8, the tags as deep as they nest.
        let at = 4 + 4 * levels[i];
        let deepest = [
            Some(at + 2),
            (dim > 0).then_some(at + 4),
            (!scores.is_empty()).then_some(at + 8),
            (!tags.is_empty())
                .then(|| at + 2 + 3 + tags.values().map(json_depth).max().unwrap_or(0)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        if deepest > MAX_PROTO_DEPTH {
            return Err(AnswerError::TooDeep(format!(
                "the answer cannot be sent over gRPC: document `{id}`, {} levels of chunks and matches below its root, nests protobuf messages {deepest} deep, more than the {MAX_PROTO_DEPTH} a protobuf client reads (each level of documents takes 4, so plain documents may nest 23 levels; scores and nested tags take more); ask over HTTP, which takes {MAX_DEPTH} levels",
                levels[i]
            )));
        }
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
