//! The snapshot file and the log records, byte by byte (see the crate docs).

use jina_guest_sdk::state::crc32;
use jina_guest_sdk::{Error, Result};

use crate::index::{Entry, Index};

pub const MAGIC: &[u8; 4] = b"JVIX";
pub const VERSION: u32 = 1;
/// `text_len` of an entry without text.
const NO_TEXT: u32 = u32::MAX;
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One replayable change.
#[derive(Debug, PartialEq)]
pub enum Op {
    Upsert(Entry),
    Delete(String),
}

/// The whole index as one buffer, written with one call.
pub fn encode_snapshot(index: &Index) -> Vec<u8> {
    let n = index.len();
    let dim = index.dim().unwrap_or(0);
    let meta: usize = (0..n)
        .map(|r| {
            let row = index.row(r);
            12 + row.id.len() + row.text.map_or(0, str::len) + row.tags.map_or(0, str::len)
        })
        .sum();
    let mut buf = Vec::with_capacity(16 + meta + n * dim * 4 + 4);
    buf.extend_from_slice(MAGIC);
    put_u32(&mut buf, VERSION);
    put_u32(&mut buf, n as u32);
    put_u32(&mut buf, dim as u32);
    for r in 0..n {
        let row = index.row(r);
        put_meta(&mut buf, row.id, row.text, row.tags);
    }
    for r in 0..n {
        put_f32s(&mut buf, index.row(r).embedding);
    }
    let crc = crc32(&buf);
    put_u32(&mut buf, crc);
    buf
}

/// Rebuild an index from [`encode_snapshot`]'s bytes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Index> {
    let corrupt = |what: &str| Error::io(format!("snapshot is corrupt: {what}"));
    let (body, crc) = match bytes.len().checked_sub(4) {
        Some(at) if at >= 16 => (
            &bytes[..at],
            u32::from_le_bytes(bytes[at..].try_into().unwrap()),
        ),
        _ => return Err(corrupt("shorter than its header")),
    };
    if &body[..4] != MAGIC {
        return Err(corrupt("bad magic (not a vector-indexer snapshot)"));
    }
    let mut r = Reader::new(&body[4..]);
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::io(format!(
            "snapshot version {version} is not supported (this build reads version {VERSION})"
        )));
    }
    if crc32(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let n = r.u32()? as usize;
    let dim = r.u32()? as usize;
    if dim == 0 && n > 0 {
        return Err(corrupt("dimension 0 with documents"));
    }
    let mut metas = Vec::with_capacity(n.min(body.len() / 12));
    for _ in 0..n {
        metas.push(r.meta()?);
    }
    let mut index = Index::default();
    for (id, text, tags) in metas {
        let embedding = r.f32s(dim)?;
        index.upsert(Entry {
            id,
            text,
            tags,
            embedding,
        });
    }
    r.finish()?;
    Ok(index)
}

/// One log record's payload.
pub fn encode_op(op: &Op) -> Vec<u8> {
    let mut buf = Vec::new();
    match op {
        Op::Upsert(e) => {
            buf.push(OP_UPSERT);
            put_meta(&mut buf, &e.id, e.text.as_deref(), e.tags.as_deref());
            put_u32(&mut buf, e.embedding.len() as u32);
            put_f32s(&mut buf, &e.embedding);
        }
        Op::Delete(id) => {
            buf.push(OP_DELETE);
            put_u32(&mut buf, id.len() as u32);
            buf.extend_from_slice(id.as_bytes());
        }
    }
    buf
}

pub fn decode_op(bytes: &[u8]) -> Result<Op> {
    let (&op, rest) = bytes
        .split_first()
        .ok_or_else(|| Error::io("empty log record"))?;
    let mut r = Reader::new(rest);
    let op = match op {
        OP_UPSERT => {
            let (id, text, tags) = r.meta()?;
            let dim = r.u32()? as usize;
            Op::Upsert(Entry {
                id,
                text,
                tags,
                embedding: r.f32s(dim)?,
            })
        }
        OP_DELETE => Op::Delete(r.string()?),
        other => return Err(Error::io(format!("unknown log op {other}"))),
    };
    r.finish()?;
    Ok(op)
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_f32s(buf: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// `id_len id | text_len text (NO_TEXT: none) | tags_len tags (0: none)`.
fn put_meta(buf: &mut Vec<u8>, id: &str, text: Option<&str>, tags: Option<&str>) {
    put_u32(buf, id.len() as u32);
    buf.extend_from_slice(id.as_bytes());
    match text {
        Some(text) => {
            put_u32(buf, text.len() as u32);
            buf.extend_from_slice(text.as_bytes());
        }
        None => put_u32(buf, NO_TEXT),
    }
    let tags = tags.unwrap_or("");
    put_u32(buf, tags.len() as u32);
    buf.extend_from_slice(tags.as_bytes());
}

/// A cursor that reports truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let slice = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| {
                Error::io(format!("truncated: wanted {n} bytes at offset {}", self.at))
            })?;
        self.at += n;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn str_of(&mut self, len: usize) -> Result<String> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| Error::io(format!("invalid UTF-8 before offset {}", self.at)))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        self.str_of(len)
    }

    fn meta(&mut self) -> Result<(String, Option<String>, Option<String>)> {
        let id = self.string()?;
        let text = match self.u32()? {
            NO_TEXT => None,
            len => Some(self.str_of(len as usize)?),
        };
        let tags = Some(self.string()?).filter(|t| !t.is_empty());
        Ok((id, text, tags))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| Error::io("dimension overflow"))?,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect())
    }

    fn finish(&self) -> Result<()> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(Error::io(format!(
                "{} trailing bytes",
                self.bytes.len() - self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, text: Option<&str>, tags: Option<&str>, v: &[f32]) -> Entry {
        Entry {
            id: id.into(),
            text: text.map(Into::into),
            tags: tags.map(Into::into),
            embedding: v.to_vec(),
        }
    }

    #[test]
    fn snapshot_round_trip() {
        let mut index = Index::default();
        index.upsert(entry(
            "a",
            Some("alpha"),
            Some(r#"{"k":1}"#),
            &[1.0, -2.5, 3.0],
        ));
        index.upsert(entry("b", None, None, &[0.0, 0.5, 0.25]));
        index.upsert(entry("c", Some(""), None, &[9.0, 9.0, 9.0]));
        let bytes = encode_snapshot(&index);
        let back = decode_snapshot(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        for r in 0..3 {
            let (x, y) = (index.row(r), back.row(r));
            assert_eq!(
                (x.id, x.text, x.tags, x.embedding),
                (y.id, y.text, y.tags, y.embedding)
            );
        }
        assert_eq!(
            decode_snapshot(&encode_snapshot(&Index::default()))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn snapshot_damage_is_detected() {
        let mut index = Index::default();
        index.upsert(entry("a", None, None, &[1.0]));
        let bytes = encode_snapshot(&index);
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(
            decode_snapshot(&flipped)
                .unwrap_err()
                .message
                .contains("checksum")
        );
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_snapshot(b"nope").is_err());
    }

    #[test]
    fn op_round_trip() {
        for op in [
            Op::Upsert(entry("x", Some("t"), Some("{}"), &[1.0, 2.0])),
            Op::Upsert(entry("y", None, None, &[])),
            Op::Delete("x".into()),
        ] {
            assert_eq!(decode_op(&encode_op(&op)).unwrap(), op);
        }
    }
}
