//! Little-endian encoding for executors' own state files: `put_*` writers and
//! a [`Reader`] that reports truncation as an error instead of panicking (a
//! state file is input like any other: it may be damaged or foreign).

use crate::{Error, Result};

/// Append `v` as 4 little-endian bytes.
pub fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Append every value as 4 little-endian bytes.
pub fn put_f32s(buf: &mut Vec<u8>, values: &[f32]) {
    buf.reserve(values.len() * 4);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Append every value as 4 little-endian bytes.
pub fn put_u32s(buf: &mut Vec<u8>, values: &[u32]) {
    buf.reserve(values.len() * 4);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Append `s` as `len: u32` then its UTF-8 bytes.
///
/// # Panics
///
/// When `s` is longer than `u32::MAX` bytes (a document field cannot be: the
/// wire limits it far below).
pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u32(buf, u32::try_from(s.len()).expect("a string under 4 GiB"));
    buf.extend_from_slice(s.as_bytes());
}

/// A cursor over bytes that fails with an [`ErrorKind::Io`](crate::ErrorKind::Io)
/// error, naming the offset, on anything short or malformed.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// The offset of the next byte.
    pub fn position(&self) -> usize {
        self.at
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    ///
    /// Fewer than `n` left.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
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

    /// One byte.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `len: u32` then that many bytes of UTF-8 (see [`put_str`]).
    ///
    /// # Errors
    ///
    /// Truncated, or not UTF-8.
    pub fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        self.str_of(len)
    }

    /// `len` bytes of UTF-8.
    ///
    /// # Errors
    ///
    /// Truncated, or not UTF-8.
    pub fn str_of(&mut self, len: usize) -> Result<String> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| Error::io(format!("invalid UTF-8 before offset {}", self.at)))
    }

    /// `n` little-endian `f32`s.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(Self::words(n)?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// `n` little-endian `u32`s.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let bytes = self.take(Self::words(n)?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn words(n: usize) -> Result<usize> {
        n.checked_mul(4)
            .ok_or_else(|| Error::io(format!("length overflow: {n} words")))
    }

    /// Succeeds only when every byte was read.
    ///
    /// # Errors
    ///
    /// Trailing bytes, counted.
    pub fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(Error::io(format!("{n} trailing bytes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut buf = Vec::new();
        put_u32(&mut buf, 7);
        put_str(&mut buf, "héllo");
        put_f32s(&mut buf, &[1.5, -2.0]);
        put_u32s(&mut buf, &[3, u32::MAX]);
        buf.push(9);
        let mut r = Reader::new(&buf);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "héllo");
        assert_eq!(r.f32s(2).unwrap(), [1.5, -2.0]);
        assert_eq!(r.u32s(2).unwrap(), [3, u32::MAX]);
        assert!(r.finish().unwrap_err().message.contains("1 trailing"));
        assert_eq!(r.u8().unwrap(), 9);
        r.finish().unwrap();
        assert!(r.u8().unwrap_err().message.contains("truncated"));
        assert!(Reader::new(&buf).f32s(usize::MAX).is_err());
        assert!(Reader::new(&[1, 0, 0, 0, 0xff]).string().is_err());
    }
}
