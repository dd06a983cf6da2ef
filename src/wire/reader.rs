//! Writing and reading the fields of a frame: little-endian numbers,
//! length-prefixed strings, and a bounds-checked cursor that never reads past
//! what is present (docs/protocol.md).

use super::{TraceContext, WireError};

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// A `str`/`bytes` field: u32 length, then the bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// An `opt-str` field: 0, or 1 then a `str`.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_bytes(out, text.as_bytes());
        }
    }
}

/// A bounds-checked cursor over one frame.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    frame: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], frame: &'static str) -> Self {
        Reader {
            bytes,
            at: 0,
            frame,
        }
    }

    pub(crate) fn error(&self, message: String) -> WireError {
        WireError::Malformed {
            frame: self.frame,
            offset: self.at,
            message,
        }
    }

    /// Fails unless at least `n` more bytes are present.
    pub(crate) fn need(&self, n: usize, what: &str) -> Result<(), WireError> {
        if self.bytes.len() - self.at < n {
            return Err(self.error(format!(
                "{what}: needs {n} bytes, {} left",
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        self.need(n, what)?;
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, WireError> {
        Ok(f64::from_bits(self.u64(what)?))
    }

    pub(crate) fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>, WireError> {
        let bytes = self.take(n.saturating_mul(4), what)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// `n` bytes that must be UTF-8.
    pub(crate) fn string(&mut self, n: usize, what: &str) -> Result<String, WireError> {
        let start = self.at;
        let bytes = self.take(n, what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(e) => Err(WireError::Malformed {
                frame: self.frame,
                offset: start + e.valid_up_to(),
                message: format!("{what}: not UTF-8"),
            }),
        }
    }

    /// A `str` field.
    pub(crate) fn str(&mut self, what: &str) -> Result<String, WireError> {
        let n = self.u32(what)? as usize;
        self.string(n, what)
    }

    /// A `str` field that names something (a request, an endpoint, a Pea):
    /// only characters that [`super::fits_a_name`]. Nothing the host makes
    /// holds another (such names are refused where they are given: a
    /// client's endpoint, a Pod's or Pea's name, [`super::check_name`]), so
    /// only a hostile peer could send one.
    pub(crate) fn name(&mut self, what: &str) -> Result<String, WireError> {
        let start = self.at + 4;
        let text = self.str(what)?;
        match text.char_indices().find(|&(_, c)| !super::fits_a_name(c)) {
            None => Ok(text),
            Some((at, c)) => Err(WireError::Malformed {
                frame: self.frame,
                offset: start + at,
                message: format!(
                    "{what}: a character no name may hold ({})",
                    c.escape_unicode()
                ),
            }),
        }
    }

    pub(crate) fn opt_str(&mut self, what: &str) -> Result<Option<String>, WireError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.str(what).map(Some),
            other => Err(self.error(format!("{what}: option flag {other} is neither 0 nor 1"))),
        }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// A trace context: 16 bytes of trace id, 8 of parent span id, the flags.
    pub(crate) fn trace(&mut self) -> Result<TraceContext, WireError> {
        let mut trace_id = [0; 16];
        trace_id.copy_from_slice(self.take(16, "trace id")?);
        let mut parent_id = [0; 8];
        parent_id.copy_from_slice(self.take(8, "trace parent id")?);
        let flags = self.u8("trace flags")?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(self.error("trace: an all-zero trace or parent id is invalid".into()));
        }
        Ok(TraceContext {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(self.error(format!("{extra} bytes left over after the last field"))),
        }
    }
}
