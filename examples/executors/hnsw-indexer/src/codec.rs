//! The snapshot file and the log records, byte by byte (see the crate docs).

use std::io::Read;

use jina_guest_sdk::bytes::{Reader, put_f32s, put_str, put_u32};
use jina_guest_sdk::{Error, Result};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::graph::{Graph, MAX_DIM, Metric, Shape};
use crate::store::{Entry, Store};

pub const MAGIC: &[u8; 4] = b"JHNS";
/// The version written: 2, whose checksum is XXH3-64. Version 1 (the same
/// layout with a CRC-32) is still read.
pub const VERSION: u32 = 2;
/// The first version, with a CRC-32 after the body.
const VERSION_CRC32: u32 = 1;
/// `text_len` of an entry without text; `entry` of an empty graph.
const NONE: u32 = u32::MAX;
const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
/// magic, version, metric, dim, m, count, entry.
const HEADER: usize = 28;
/// What every refusal of a file's content starts with.
const CORRUPT: &str = "snapshot is corrupt: ";

/// A snapshot whose content is inconsistent (see [`CORRUPT`]).
fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::io(format!("{CORRUPT}{what}"))
}

/// One replayable change.
#[derive(Debug, PartialEq)]
pub enum Op {
    Upsert(Entry),
    Delete(String),
}

/// The whole (compacted) index as one buffer, written with one call.
pub fn encode_snapshot(store: &Store) -> Vec<u8> {
    let graph = store.graph();
    let parts = graph.parts();
    let n = graph.slots();
    let meta: usize = (0..n as u32)
        .map(|s| {
            let row = store.row(s);
            12 + row.id.len() + row.text.map_or(0, str::len) + row.tags.map_or(0, str::len)
        })
        .sum();
    let links: usize = parts.upper.iter().map(Vec::len).sum();
    let blocks: usize = graph.pages().map(<[u32]>::len).sum();
    let mut buf = Vec::with_capacity(HEADER + meta + n + (blocks + links) * 4 + 8);
    buf.extend_from_slice(MAGIC);
    put_u32(&mut buf, VERSION);
    let shape = graph.shape();
    put_u32(&mut buf, u32::from(shape.metric.code()));
    put_u32(&mut buf, parts.dim as u32);
    put_u32(&mut buf, shape.m as u32);
    put_u32(&mut buf, n as u32);
    put_u32(&mut buf, parts.entry.unwrap_or(NONE));
    for s in 0..n as u32 {
        let row = store.row(s);
        put_meta(&mut buf, row.id, row.text, row.tags);
    }
    buf.extend_from_slice(parts.levels);
    // Version 2: the node blocks as the graph holds them, page by page, so
    // loading reads each page straight into place.
    for page in graph.pages() {
        put_le(&mut buf, page);
    }
    for upper in parts.upper {
        put_le(&mut buf, upper);
    }
    let sum = xxh3_64(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    buf
}

/// Appends `words` as little-endian u32s: one copy of their bytes on a
/// little-endian machine (wasm32 is one), where `put_u32s` goes word by word
/// (a snapshot is mostly vectors and links: this is most of `dump`).
fn put_le(buf: &mut Vec<u8>, words: &[u32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: the bytes of initialised u32s, which u8 (alignment 1) may
        // view; on a little-endian machine they are in the file's order.
        let bytes =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4) };
        buf.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    jina_guest_sdk::bytes::put_u32s(buf, words);
}

/// Bytes pulled from the file per read: large enough that the calls through
/// WASI cost nothing next to copying the bytes, small enough not to count
/// in the shard's memory high-water mark (the whole file did, before).
const CHUNK: usize = 8 << 20;
/// Reads at least this long go from the file straight into place.
const DIRECT: usize = 64 << 10;

/// A snapshot file read front to back in [`CHUNK`]s, every byte of its body
/// checksummed as it comes in. Nothing is sized from the file's counts
/// before they are checked against the bytes left.
struct Stream<R> {
    src: R,
    buf: Vec<u8>,
    /// Next unread byte of `buf`.
    at: usize,
    /// Body bytes (the file less its checksum) not yet in `buf`.
    left: u64,
    /// The file offset of `buf[0]`, for messages.
    base: u64,
    sum: Checksum,
}

/// The checksum after a snapshot's body: a CRC-32 in version 1, XXH3-64
/// since version 2 (the CRC, table-driven in wasm, was most of a load's
/// time: 64% of the guest's profile at 250,000 x 384-d; XXH3 runs on wasm
/// SIMD).
enum Checksum {
    Crc32(crc32fast::Hasher),
    Xxh3(Box<Xxh3>),
}

impl Checksum {
    /// The one a snapshot of `version` ends with; `None` for a version this
    /// build does not read.
    fn of_version(version: u32) -> Option<Self> {
        match version {
            VERSION_CRC32 => Some(Checksum::Crc32(crc32fast::Hasher::new())),
            VERSION => Some(Checksum::Xxh3(Box::default())),
            _ => None,
        }
    }

    /// Its bytes at the end of the file.
    fn len(&self) -> u64 {
        match self {
            Checksum::Crc32(_) => 4,
            Checksum::Xxh3(_) => 8,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksum::Crc32(h) => h.update(bytes),
            Checksum::Xxh3(h) => h.update(bytes),
        }
    }

    /// Whether `stored` (little-endian, [`len`](Self::len) bytes) is the sum.
    fn matches(&self, stored: &[u8]) -> bool {
        match self {
            Checksum::Crc32(h) => h.clone().finalize().to_le_bytes()[..] == *stored,
            Checksum::Xxh3(h) => h.digest().to_le_bytes()[..] == *stored,
        }
    }
}

impl<R: Read> Stream<R> {
    /// A stream of the `body` bytes of `src` after the first `base` of the
    /// file (already read, and already in `sum`).
    fn new(src: R, base: u64, body: u64, sum: Checksum) -> Self {
        Stream {
            src,
            buf: Vec::new(),
            at: 0,
            left: body,
            base,
            sum,
        }
    }

    /// Body bytes not yet read.
    fn remaining(&self) -> u64 {
        self.left + (self.buf.len() - self.at) as u64
    }

    fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    /// The next chunk into `buf` (the unread rest of `buf` must be empty).
    fn refill(&mut self) -> Result<()> {
        let next = self.left.min(CHUNK as u64) as usize;
        self.base += self.buf.len() as u64;
        self.buf.resize(next, 0);
        self.at = 0;
        self.src
            .read_exact(&mut self.buf)
            .map_err(|e| Error::io(format!("cannot read at offset {}: {e}", self.base)))?;
        self.left -= next as u64;
        self.sum.update(&self.buf);
        Ok(())
    }

    /// Fills `out` from the stream.
    fn read_into(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 > self.remaining() {
            return Err(corrupt(format_args!(
                "truncated: wanted {} bytes at offset {}",
                out.len(),
                self.offset()
            )));
        }
        let mut done = 0;
        let buffered = self.buf.len() - self.at;
        if out.len() >= DIRECT && out.len() > buffered {
            // A large run (a page of node blocks): what is buffered, then
            // the rest straight from the file into `out`, with no copy
            // through `buf`.
            done = buffered;
            out[..done].copy_from_slice(&self.buf[self.at..]);
            self.base += self.buf.len() as u64;
            self.buf.clear();
            self.at = 0;
            let rest = &mut out[done..];
            self.src
                .read_exact(rest)
                .map_err(|e| Error::io(format!("cannot read at offset {}: {e}", self.base)))?;
            self.sum.update(rest);
            self.left -= rest.len() as u64;
            self.base += rest.len() as u64;
            return Ok(());
        }
        while done < out.len() {
            if self.at == self.buf.len() {
                self.refill()?;
            }
            let n = (out.len() - done).min(self.buf.len() - self.at);
            out[done..done + n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            done += n;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        self.read_into(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// `len` bytes of UTF-8.
    fn str_of(&mut self, len: usize) -> Result<String> {
        if len as u64 > self.remaining() {
            return Err(corrupt(format_args!(
                "truncated: wanted {len} bytes at offset {}",
                self.offset()
            )));
        }
        let mut bytes = vec![0; len];
        self.read_into(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| {
            corrupt(format_args!(
                "invalid UTF-8 before offset {}",
                self.offset()
            ))
        })
    }

    /// `len: u32`, then [`str_of`](Self::str_of).
    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        self.str_of(len)
    }

    /// Every byte of the body was read and the checksum after it matches.
    fn finish(mut self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(corrupt(format_args!("{} trailing bytes", self.remaining())));
        }
        self.checksum_matches()?
            .then_some(())
            .ok_or_else(|| corrupt("checksum mismatch"))
    }

    /// Hashes whatever of the body is left unread, then compares with the
    /// checksum stored after it.
    fn checksum_matches(&mut self) -> Result<bool> {
        self.at = self.buf.len();
        while self.left > 0 {
            self.refill()?;
        }
        let mut stored = vec![0; self.sum.len() as usize];
        self.src
            .read_exact(&mut stored)
            .map_err(|e| Error::io(format!("cannot read the checksum: {e}")))?;
        Ok(self.sum.matches(&stored))
    }
}

/// `words` seen as their bytes, to be read into; the caller turns them from
/// little-endian after ([`from_le`]).
fn bytes_of(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: any bytes are a valid u32, u8 has alignment 1, and the view
    // covers exactly `words`, which it borrows mutably.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

/// Little-endian words as read from a file, to native ones in place (nothing
/// to do on a little-endian machine, where the loop compiles away).
fn from_le(words: &mut [u32]) {
    for w in words {
        *w = u32::from_le(*w);
    }
}

/// Rebuild a store from [`encode_snapshot`]'s bytes (see [`read_snapshot`]).
#[cfg(test)]
pub fn decode_snapshot(bytes: &[u8], shape: Shape) -> Result<Store> {
    read_snapshot(bytes, bytes.len() as u64, shape)
}

/// Rebuild a store from a snapshot file of `len` bytes, read once front to
/// back: the node blocks go straight from each chunk into the graph's pages
/// (no copy of the whole file in memory), checksummed on the way. `shape`
/// is the configured one: its metric and `m` must be the snapshot's (its
/// `ef_construction` applies to later inserts).
///
/// # Errors
///
/// A damaged file: a checksum mismatch when the bytes differ from those
/// written (checked over the whole file whatever else is wrong), else what
/// is inconsistent (`snapshot is corrupt: ...`: every count, index and value
/// read from the file is checked before it sizes, indexes or is served);
/// another metric or `m` (`bad-config`); a version this build does not read.
pub fn read_snapshot(mut src: impl Read, len: u64, shape: Shape) -> Result<Store> {
    let mut head = [0; 8];
    if len < HEADER as u64 {
        return Err(corrupt("shorter than its header"));
    }
    src.read_exact(&mut head)
        .map_err(|e| Error::io(format!("cannot read: {e}")))?;
    if &head[..4] != MAGIC {
        return Err(corrupt("bad magic (not an hnsw-indexer snapshot)"));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let Some(mut sum) = Checksum::of_version(version) else {
        return Err(Error::io(format!(
            "snapshot version {version} is not supported (this build reads versions \
             {VERSION_CRC32} and {VERSION}): it was written by a newer hnsw-indexer"
        )));
    };
    if len < HEADER as u64 + sum.len() {
        return Err(corrupt("shorter than its header"));
    }
    sum.update(&head);
    let body = len - head.len() as u64 - sum.len();
    let mut s = Stream::new(src, head.len() as u64, body, sum);
    match read_body(&mut s, version, shape) {
        Ok(store) => {
            s.finish()?;
            Ok(store)
        }
        // Damage shows as whatever it breaks first: say it is damage when
        // the checksum says so.
        Err(e) if !s.checksum_matches().unwrap_or(false) => Err(corrupt(format_args!(
            "checksum mismatch (the file is damaged: {})",
            e.message.strip_prefix(CORRUPT).unwrap_or(&e.message)
        ))),
        Err(e) => Err(e),
    }
}

/// Everything between the version and the checksum.
fn read_body(s: &mut Stream<impl Read>, version: u32, shape: Shape) -> Result<Store> {
    let metric = u8::try_from(s.u32()?)
        .ok()
        .and_then(Metric::from_code)
        .ok_or_else(|| corrupt("unknown metric"))?;
    let dim = s.u32()? as usize;
    let m = s.u32()? as usize;
    if (metric, m) != (shape.metric, shape.m) {
        return Err(Error::bad_config(format!(
            "the index in the workspace was built with metric {} and m {m}; with: says metric {} and m {}: \
             a built index keeps both (index into a fresh workspace to change them)",
            metric.name(),
            shape.metric.name(),
            shape.m
        )));
    }
    let n = s.u32()? as usize;
    let entry = Some(s.u32()?).filter(|&e| e != NONE);
    // `dim` sizes every node: bounded before any arithmetic with it (which
    // is 32-bit in wasm32).
    if dim > MAX_DIM || (n > 0 && dim == 0) {
        return Err(corrupt(format_args!(
            "dimension {dim} is not between 1 and {MAX_DIM}"
        )));
    }
    // Each node takes at least 12 bytes of lengths, its level and its words
    // (version 2: its block; version 1: its vector and level-0 list): a
    // count larger than the file holds is corruption, not an allocation.
    let words = if version == VERSION_CRC32 {
        dim + 1
    } else {
        dim + 3
    } + 2 * m;
    let need = (n as u64).checked_mul(13 + 4 * words as u64);
    if need.is_none_or(|need| need > s.remaining()) {
        return Err(corrupt(format_args!(
            "{n} nodes of {dim} dimensions need {} bytes or more, and {} are left",
            need.map_or("2^64".to_string(), |b| b.to_string()),
            s.remaining()
        )));
    }
    let mut metas = Vec::with_capacity(n);
    for _ in 0..n {
        let id = s.string()?;
        let text = match s.u32()? {
            NONE => None,
            len => Some(s.str_of(len as usize)?),
        };
        let tags = Some(s.string()?).filter(|t| !t.is_empty());
        metas.push((id, text, tags));
    }
    let mut levels = vec![0; n];
    s.read_into(&mut levels)?;
    // A read's own error is returned as it is; the graph's are corruption.
    let mut failed = None;
    let mut read = |words: &mut [u32]| {
        s.read_into(bytes_of(words)).map_err(|e| {
            let message = e.message.clone();
            failed = Some(e);
            message
        })?;
        from_le(words);
        Ok(())
    };
    let graph = if version == VERSION_CRC32 {
        Graph::read_v1(shape, dim, entry, levels, &mut read)
    } else {
        Graph::read(shape, dim, entry, levels, &mut read)
    };
    let graph = graph.map_err(|e| failed.take().unwrap_or_else(|| corrupt(e)))?;
    Store::from_parts(graph, metas).map_err(corrupt)
}

/// One log record's payload (the same records as vector-indexer's log).
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
            put_str(&mut buf, id);
        }
    }
    buf
}

pub fn decode_op(bytes: &[u8]) -> Result<Op> {
    let mut r = Reader::new(bytes);
    let op = match r.u8().map_err(|_| Error::io("empty log record"))? {
        OP_UPSERT => {
            let (id, text, tags) = r_meta(&mut r)?;
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

/// `id_len id | text_len text (NONE: no text) | tags_len tags (0: none)`.
fn put_meta(buf: &mut Vec<u8>, id: &str, text: Option<&str>, tags: Option<&str>) {
    put_str(buf, id);
    match text {
        Some(text) => put_str(buf, text),
        None => put_u32(buf, NONE),
    }
    put_str(buf, tags.unwrap_or(""));
}

fn r_meta(r: &mut Reader<'_>) -> Result<(String, Option<String>, Option<String>)> {
    let id = r.string()?;
    let text = match r.u32()? {
        NONE => None,
        len => Some(r.str_of(len as usize)?),
    };
    let tags = Some(r.string()?).filter(|t| !t.is_empty());
    Ok((id, text, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(metric: Metric) -> Shape {
        Shape {
            metric,
            m: 4,
            ef_construction: 20,
        }
    }

    fn entry(id: &str, text: Option<&str>, tags: Option<&str>, v: &[f32]) -> Entry {
        Entry {
            id: id.into(),
            text: text.map(Into::into),
            tags: tags.map(Into::into),
            embedding: v.to_vec(),
        }
    }

    fn store() -> Store {
        let mut store = Store::new(shape(Metric::L2));
        for i in 0..50 {
            let v = [i as f32, (i % 7) as f32, 1.0];
            store.upsert(entry(&format!("d{i}"), Some("t"), Some(r#"{"k":1}"#), &v));
        }
        store.upsert(entry("plain", None, None, &[0.5, 0.5, 0.5]));
        store
    }

    #[test]
    fn snapshot_round_trip() {
        let s = store();
        let bytes = encode_snapshot(&s);
        let back = decode_snapshot(&bytes, shape(Metric::L2)).unwrap();
        assert_eq!(back.len(), 51);
        for slot in 0..51 {
            let (a, b) = (s.row(slot), back.row(slot));
            assert_eq!(
                (a.id, a.text, a.tags, a.embedding),
                (b.id, b.text, b.tags, b.embedding)
            );
        }
        assert_eq!(
            back.search(&[3.0, 3.0, 1.0], 3, 20),
            s.search(&[3.0, 3.0, 1.0], 3, 20)
        );
        let empty = Store::new(shape(Metric::Cosine));
        assert_eq!(
            decode_snapshot(&encode_snapshot(&empty), shape(Metric::Cosine))
                .unwrap()
                .len(),
            0
        );
    }

    /// What version 1's `encode_snapshot` wrote (main at 1395938): the
    /// vectors, then the level-0 lists, then a CRC-32.
    fn encode_v1(store: &Store) -> Vec<u8> {
        let graph = store.graph();
        let parts = graph.parts();
        let n = graph.slots();
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        put_u32(&mut buf, 1);
        put_u32(&mut buf, u32::from(graph.shape().metric.code()));
        put_u32(&mut buf, parts.dim as u32);
        put_u32(&mut buf, graph.shape().m as u32);
        put_u32(&mut buf, n as u32);
        put_u32(&mut buf, parts.entry.unwrap_or(NONE));
        for s in 0..n as u32 {
            let row = store.row(s);
            put_meta(&mut buf, row.id, row.text, row.tags);
        }
        buf.extend_from_slice(parts.levels);
        for s in 0..n as u32 {
            put_le(&mut buf, graph.vector_bits(s));
        }
        for s in 0..n as u32 {
            put_le(&mut buf, graph.links0_block(s));
        }
        for upper in parts.upper {
            put_le(&mut buf, upper);
        }
        let crc = jina_guest_sdk::state::crc32(&buf);
        put_u32(&mut buf, crc);
        buf
    }

    #[test]
    fn version_1_with_its_crc32_is_still_read() {
        let s = store();
        let v1 = encode_v1(&s);
        let v2 = encode_snapshot(&s);
        assert_ne!(v1.len(), v2.len());
        let back = decode_snapshot(&v1, shape(Metric::L2)).unwrap();
        assert_eq!(back.len(), 51);
        assert_eq!(
            back.search(&[3.0, 3.0, 1.0], 3, 20),
            s.search(&[3.0, 3.0, 1.0], 3, 20)
        );
        let mut flipped = v1.clone();
        flipped[200] ^= 1;
        let err = decode_snapshot(&flipped, shape(Metric::L2)).unwrap_err();
        assert!(err.message.contains("checksum"), "{}", err.message);
        // A version from the future is refused, by number.
        let mut v3 = v2.clone();
        v3[4..8].copy_from_slice(&3u32.to_le_bytes());
        let err = decode_snapshot(&v3, shape(Metric::L2)).unwrap_err();
        assert!(
            err.message.contains("version 3 is not supported"),
            "{}",
            err.message
        );
    }

    #[test]
    fn damage_and_another_shape_are_refused() {
        let bytes = encode_snapshot(&store());
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        let err = decode_snapshot(&flipped, shape(Metric::L2)).unwrap_err();
        assert!(err.message.contains("checksum"), "{}", err.message);
        assert!(decode_snapshot(&bytes[..bytes.len() - 1], shape(Metric::L2)).is_err());
        assert!(decode_snapshot(b"nope", shape(Metric::L2)).is_err());
        let err = decode_snapshot(&bytes, shape(Metric::Cosine)).unwrap_err();
        assert!(err.message.contains("metric l2"), "{}", err.message);
    }

    #[test]
    fn the_stream_gives_every_byte_once_buffered_or_direct() {
        let body: Vec<u8> = (0..3 * CHUNK + 1000).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = body.clone();
        file.extend_from_slice(&xxh3_64(&body).to_le_bytes());
        let mut s = Stream::new(
            &file[..],
            0,
            body.len() as u64,
            Checksum::of_version(VERSION).unwrap(),
        );
        let mut at = 0;
        // Small reads, a large one served from the buffer, large ones
        // across it (direct), and what is left.
        for len in [10, 3, DIRECT + 5, 1, 2 * CHUNK, 70, DIRECT, 5] {
            let mut out = vec![0; len];
            s.read_into(&mut out).unwrap();
            assert_eq!(out, body[at..at + len], "at {at}, {len} bytes");
            at += len;
        }
        let mut rest = vec![0; body.len() - at];
        s.read_into(&mut rest).unwrap();
        assert_eq!(rest, body[at..]);
        assert!(s.read_into(&mut [0]).is_err());
        s.finish().unwrap();
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
        assert!(decode_op(&[]).is_err());
        assert!(decode_op(&[9]).is_err());
    }

    /// Where the parts of a snapshot of `store()`'s shape (`m` 4) start:
    /// the levels, the node blocks (version 1: the vectors), and the upper
    /// lists; and `n`, `dim`.
    struct Layout {
        n: usize,
        dim: usize,
        levels: usize,
        blocks: usize,
        upper: usize,
    }

    fn layout(bytes: &[u8]) -> Layout {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let (version, dim, m, n) = (
            word(4),
            word(12) as usize,
            word(16) as usize,
            word(20) as usize,
        );
        let mut at = HEADER;
        for _ in 0..n {
            for _ in 0..3 {
                let len = word(at);
                at += 4 + if len == NONE { 0 } else { len as usize };
            }
        }
        let (levels, blocks) = (at, at + n);
        let words = if version == 1 {
            dim + 1 + 2 * m
        } else {
            dim + 3 + 2 * m
        };
        Layout {
            n,
            dim,
            levels,
            blocks,
            upper: blocks + n * words * 4,
        }
    }

    fn set(bytes: &mut [u8], at: usize, word: u32) {
        bytes[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }

    /// `bytes` with the checksum its version ends with made valid again: a
    /// crafted file, not a damaged one.
    fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes[4] == 1 {
            let body = bytes.len() - 4;
            let crc = jina_guest_sdk::state::crc32(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
        } else {
            let body = bytes.len() - 8;
            let sum = xxh3_64(&bytes[..body]);
            bytes[body..].copy_from_slice(&sum.to_le_bytes());
        }
        bytes
    }

    fn refused(bytes: Vec<u8>) -> String {
        let err = decode_snapshot(&reseal(bytes), shape(Metric::L2)).unwrap_err();
        assert!(
            err.message.starts_with(CORRUPT),
            "not said to be corrupt: {}",
            err.message
        );
        err.message
    }

    /// Both versions of `store()`'s snapshot.
    fn both() -> [Vec<u8>; 2] {
        let s = store();
        [encode_snapshot(&s), encode_v1(&s)]
    }

    #[test]
    fn an_upper_link_to_a_node_without_that_level_is_refused() {
        // H3-6: every search and insert through such a link indexed past
        // the lower node's lists.
        let s = store();
        let levels = s.graph().parts().levels.to_vec();
        let high = levels.iter().position(|&l| l >= 1).unwrap();
        let low = levels.iter().position(|&l| l == 0).unwrap();
        let upper_of_high: usize = levels[..high].iter().map(|&l| usize::from(l) * 5 * 4).sum();
        for bytes in both() {
            let at = layout(&bytes).upper + upper_of_high;
            let mut bad = bytes.clone();
            set(&mut bad, at, 1);
            set(&mut bad, at + 4, low as u32);
            assert_eq!(
                refused(bad),
                format!(
                    "snapshot is corrupt: node {high} links at level 1 to node {low}, whose level is 0"
                )
            );
            // A link to a node that has the level is fine.
            let other = (0..levels.len())
                .find(|&o| o != high && levels[o] >= 1)
                .unwrap();
            let mut fine = bytes.clone();
            set(&mut fine, at, 1);
            set(&mut fine, at + 4, other as u32);
            decode_snapshot(&reseal(fine), shape(Metric::L2)).unwrap();
        }
    }

    #[test]
    fn a_non_finite_vector_is_refused() {
        // H3-7: a NaN distance was served as a perfect match.
        for bytes in both() {
            let l = layout(&bytes);
            let version_1 = bytes[4] == 1;
            for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut bad = bytes.clone();
                // Node 7's second float.
                let node = if version_1 {
                    l.dim * 4
                } else {
                    (l.dim + 3 + 8) * 4
                };
                set(&mut bad, l.blocks + 7 * node + 4, value.to_bits());
                assert_eq!(
                    refused(bad),
                    "snapshot is corrupt: node 7 has a non-finite value"
                );
            }
            // The largest finite values load.
            let mut big = bytes.clone();
            set(&mut big, l.blocks + 4, f32::MAX.to_bits());
            set(&mut big, l.blocks + 8, f32::MIN.to_bits());
            decode_snapshot(&reseal(big), shape(Metric::L2)).unwrap();
        }
    }

    #[test]
    fn a_non_finite_vector_is_refused_under_cosine_too() {
        // Cosine checks through the squared norm it computes anyway.
        let mut s = Store::new(shape(Metric::Cosine));
        for i in 0..20 {
            s.upsert(entry(&format!("c{i}"), None, None, &[1.0, i as f32, 2.0]));
        }
        let bytes = encode_snapshot(&s);
        let l = layout(&bytes);
        let node = (l.dim + 3 + 8) * 4;
        for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut bad = bytes.clone();
            set(&mut bad, l.blocks + 5 * node + 8, value.to_bits());
            let err = decode_snapshot(&reseal(bad), shape(Metric::Cosine)).unwrap_err();
            assert_eq!(
                err.message,
                "snapshot is corrupt: node 5 has a non-finite value"
            );
        }
        // A square that overflows is no reason to refuse a finite vector.
        let mut big = bytes.clone();
        set(&mut big, l.blocks + 5 * node, f32::MAX.to_bits());
        let back = decode_snapshot(&reseal(big), shape(Metric::Cosine)).unwrap();
        assert_eq!(back.len(), 20);
    }

    #[test]
    fn a_dimension_or_count_the_file_cannot_hold_is_refused_before_allocating() {
        // H3-8: 1.2 GB pages, a capacity overflow, a 32-bit wrap, and a
        // dimension past MAX_DIM, all from the header.
        for bytes in both() {
            for dim in [0, 70_000, 300_000, 1 << 20, u32::MAX] {
                let mut bad = bytes.clone();
                set(&mut bad, 12, dim);
                assert_eq!(
                    refused(bad),
                    format!("snapshot is corrupt: dimension {dim} is not between 1 and 65536")
                );
            }
            // In range, but more than the file holds.
            let mut bad = bytes.clone();
            set(&mut bad, 12, 65_536);
            let err = refused(bad);
            assert!(
                err.contains("51 nodes of 65536 dimensions need ") && err.contains("are left"),
                "{err}"
            );
            let mut bad = bytes.clone();
            set(&mut bad, 20, u32::MAX);
            let err = refused(bad);
            assert!(err.contains("4294967295 nodes of 3 dimensions"), "{err}");
            // An id's text length past the file: said to be corrupt too.
            let mut bad = bytes.clone();
            let id_len = u32::from_le_bytes(bad[28..32].try_into().unwrap()) as usize;
            set(&mut bad, 32 + id_len, 0x7fff_fff0);
            let err = refused(bad);
            assert!(err.contains("truncated: wanted 2147483632 bytes"), "{err}");
        }
        // An empty index keeps its dimension (a graph emptied by deletes).
        let mut empty = encode_snapshot(&Store::new(shape(Metric::L2)));
        set(&mut empty, 12, 384);
        let back = decode_snapshot(&reseal(empty.clone()), shape(Metric::L2)).unwrap();
        assert_eq!(back.dim(), Some(384));
        set(&mut empty, 12, 65_537);
        assert!(refused(empty).contains("dimension 65537"));
    }

    #[test]
    fn a_loaded_index_takes_inserts_past_its_last_page() {
        // The last page is read at its nodes' size and grows once.
        let mut back = decode_snapshot(&encode_snapshot(&store()), shape(Metric::L2)).unwrap();
        for i in 0..1100 {
            let v = [i as f32 / 10.0, 5.0, 2.0];
            back.upsert(entry(&format!("n{i}"), None, None, &v));
        }
        assert_eq!(back.len(), 1151);
        let hits = back.search(&[50.0, 5.0, 2.0], 1, 20);
        assert_eq!(back.row(hits[0].0).id, "n500");
        assert_eq!(back.search(&[3.0, 3.0, 1.0], 1, 20)[0].1, -0.0);
    }

    /// Every byte of both versions' snapshot set to a few values, and
    /// words to edge values, each resealed: never a panic, neither while
    /// loading nor in a search, an insert and a snapshot of what loaded.
    #[test]
    fn no_crafted_snapshot_panics_in_the_load_or_after() {
        let mut loaded = 0;
        for bytes in both() {
            let l = layout(&bytes);
            let body = bytes.len() - if bytes[4] == 1 { 4 } else { 8 };
            let mut cases = Vec::new();
            for at in 8..body {
                for value in [0, 1, 0x7f, 0x80, 0xff] {
                    let mut b = bytes.clone();
                    b[at] = value;
                    cases.push(b);
                }
            }
            for at in (8..body - 3).step_by(4) {
                for word in [u32::MAX, 0x7fc0_0000, l.n as u32, l.n as u32 - 1, 1 << 16] {
                    let mut b = bytes.clone();
                    set(&mut b, at, word);
                    cases.push(b);
                }
            }
            assert!(l.levels < l.upper);
            for case in cases {
                let Ok(mut store) = decode_snapshot(&reseal(case), shape(Metric::L2)) else {
                    continue;
                };
                loaded += 1;
                let dim = store.dim().unwrap_or(3);
                let q: Vec<f32> = (0..dim).map(|i| i as f32).collect();
                store.search(&q, 5, 20);
                store.upsert(entry("d1", None, None, &q));
                store.upsert(entry("new", None, None, &q));
                store.search(&q, 5, 20);
                store.compact();
                decode_snapshot(&encode_snapshot(&store), shape(Metric::L2)).unwrap();
            }
        }
        assert!(loaded > 100, "{loaded}");
    }
}
