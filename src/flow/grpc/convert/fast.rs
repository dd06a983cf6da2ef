//! The fast paths: a request's `DataContentProto` bytes read straight into a
//! body, and a body written straight into `DataContentProto` bytes, without
//! the `DocProto` maps and `NodeProto`s in between (most of the gRPC side's
//! cost when measured: docs/benchmarks.md, "The gRPC gateway against HTTP").
//! They take flat documents of the modelled scalar fields (id, text, blob,
//! uri, mime type, an ndarray embedding), which is what clients send to index
//! or encode. Anything else (chunks, matches, tags, scores, list embeddings,
//! other fields, a field twice, malformed bytes) goes the general way through
//! prost's messages, so both ways give the same body, answer and error.

use super::*;
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

    /// Skips a field's value of `wire_type`, as prost does: groups (wire
    /// types 3 and 4) up to their end, nested as deep as they come.
    fn skip(&mut self, wire_type: u8) -> Option<()> {
        let mut groups = 0usize;
        let mut wire_type = wire_type;
        loop {
            match wire_type {
                VARINT => {
                    self.varint()?;
                }
                1 => self.0 = self.0.get(8..)?,
                LEN => {
                    self.bytes()?;
                }
                3 => groups += 1,
                4 => groups = groups.checked_sub(1)?,
                5 => self.0 = self.0.get(4..)?,
                _ => return None,
            }
            if groups == 0 {
                return Some(());
            }
            wire_type = self.key()?.1;
        }
    }
}

/// How many documents a `DataContentProto`'s bytes hold, at every level:
/// those of `docs` (or `docs_bytes`) and, within each, those of its `chunks`
/// and `matches`, to `MAX_DEPTH + 1` levels (a deeper request is refused
/// anyway). Read on the bytes, before prost decodes a message (a million
/// empty chunks are 2 MB here and took a Flow to 1.7 GiB once decoded and
/// flattened: found by a hostile test); a field counted more than once
/// where prost would merge or replace it only counts more. Stops at bytes
/// that are not protobuf (prost then refuses them).
pub fn count_docs(content: &[u8]) -> usize {
    let mut wire = Wire(content);
    let mut n = 0;
    while let Some((tag, wire_type)) = wire.key() {
        let counted = match (tag, wire_type) {
            (1 | 2, LEN) => wire.bytes().map(|list| n += count_list(list, 0)),
            _ => wire.skip(wire_type),
        };
        if counted.is_none() {
            break;
        }
    }
    n
}

/// The documents of a `DocListProto` at `level`, and theirs.
fn count_list(bytes: &[u8], level: usize) -> usize {
    let mut wire = Wire(bytes);
    let mut n = 0;
    while let Some((tag, wire_type)) = wire.key() {
        let counted = match (tag, wire_type) {
            (1, LEN) => wire.bytes().map(|doc| n += 1 + count_children(doc, level)),
            _ => wire.skip(wire_type),
        };
        if counted.is_none() {
            break;
        }
    }
    n
}

/// The documents below a `DocProto` at `level`: in the DocLists of its map
/// entries `chunks` and `matches` (an entry's last key is its key, and every
/// value field of it merges into its value, as in prost).
fn count_children(doc: &[u8], level: usize) -> usize {
    if level > MAX_DEPTH {
        return 0;
    }
    let mut wire = Wire(doc);
    let mut n = 0;
    while let Some((tag, wire_type)) = wire.key() {
        if (tag, wire_type) != (1, LEN) {
            if wire.skip(wire_type).is_none() {
                break;
            }
            continue;
        }
        let Some(entry) = wire.bytes() else { break };
        let mut entry = Wire(entry);
        let (mut key, mut below) = (None, 0);
        while let Some((tag, wire_type)) = entry.key() {
            let read = match (tag, wire_type) {
                (1, LEN) => entry.bytes().map(|k| key = Some(k)),
                (2, LEN) => entry.bytes().map(|node| below += count_node(node, level)),
                _ => entry.skip(wire_type),
            };
            if read.is_none() {
                break;
            }
        }
        if matches!(key, Some(b"chunks" | b"matches")) {
            n += below;
        }
    }
    n
}

/// The documents of a `NodeProto`'s `doc_array` (field 8) at `level + 1`.
fn count_node(node: &[u8], level: usize) -> usize {
    let mut wire = Wire(node);
    let mut n = 0;
    while let Some((tag, wire_type)) = wire.key() {
        let counted = match (tag, wire_type) {
            (8, LEN) => wire.bytes().map(|list| n += count_list(list, level + 1)),
            _ => wire.skip(wire_type),
        };
        if counted.is_none() {
            break;
        }
    }
    n
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
    let id_end = end(body.ids.data.len()).ok()?;
    body.ids.ends.push(id_end);
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
    let dim = u32::try_from(body.embeddings.len() - before).ok()?;
    body.embedding_dims.push(dim);
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
/// As [`docs_from_body`].
pub fn content_from_body(body: &Body) -> Result<Vec<u8>, AnswerError> {
    if let Some(bytes) = fast_content(body) {
        return Ok(bytes);
    }
    let docs = docs_from_body(body)?;
    Ok(DataContentProto {
        documents: Some(Documents::Docs(docs)),
    }
    .encode_to_vec())
}
