//! A body's bytes (docs/protocol.md, "Body"): written, and read back with
//! every length checked against the bytes present.

use super::*;
use crate::wire::{Reader, WireError, put_bytes, put_opt_str, put_u32};

impl Body {
    /// Appends the body's bytes (docs/protocol.md, "Body").
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.len();
        out.reserve(
            64 + n * 40
                + self.ids.data.len()
                + self.texts.data.len()
                + self.blobs.data.len()
                + self.uris.data.len()
                + self.mime_types.data.len()
                + self.tags.data.len()
                + self.embeddings.len() * 4,
        );
        put_u32(out, n as u32);
        put_ends(out, &self.ids.ends);
        out.extend_from_slice(self.ids.data.as_bytes());
        for parent in &self.parents {
            put_u32(out, parent.unwrap_or(NO_PARENT));
        }
        out.extend(self.relations.iter().map(|&r| r as u8));
        put_optional(
            out,
            &self.texts.present,
            &self.texts.ends,
            self.texts.data.as_bytes(),
        );
        put_optional(out, &self.blobs.present, &self.blobs.ends, &self.blobs.data);
        put_optional(
            out,
            &self.uris.present,
            &self.uris.ends,
            self.uris.data.as_bytes(),
        );
        put_optional(
            out,
            &self.mime_types.present,
            &self.mime_types.ends,
            self.mime_types.data.as_bytes(),
        );
        put_optional(
            out,
            &self.tags.present,
            &self.tags.ends,
            self.tags.data.as_bytes(),
        );
        put_ends(out, &self.embedding_dims);
        put_f32s(out, &self.embeddings);
        put_u32(out, self.scores.len() as u32);
        for s in &self.scores {
            put_u32(out, s.doc);
            out.extend_from_slice(&s.value.to_le_bytes());
            put_bytes(out, s.name.as_bytes());
            put_opt_str(out, s.op_name.as_deref());
            put_opt_str(out, s.description.as_deref());
        }
    }

    /// Parses and validates a body. Never panics, and never allocates more
    /// than the input's own size justifies.
    ///
    /// # Errors
    /// [`WireError`] naming what is wrong and where.
    pub fn decode(bytes: &[u8]) -> Result<Body, WireError> {
        let mut r = Reader::new(bytes, "body");
        let n = r.u32("document count")? as usize;
        // Each document takes at least 4 (id end) + 4 (parent) + 1 (relation)
        // + 5 × 5 (optional columns) + 4 (dims) bytes: refuse counts the input
        // cannot hold before allocating for them.
        r.need(n.saturating_mul(38), "document columns")?;
        let id_ends = r.u32s(n, "ids")?;
        let ids = StrColumn {
            present: Vec::new(),
            data: r.string(last(&id_ends), "ids")?,
            ends: id_ends,
        };
        let parents = r
            .u32s(n, "parents")?
            .into_iter()
            .map(|p| (p != NO_PARENT).then_some(p))
            .collect();
        let relations = r
            .take(n, "relations")?
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(Relation::Root),
                1 => Ok(Relation::Chunk),
                2 => Ok(Relation::Match),
                other => Err(r.error(format!("relations[{i}]: unknown relation {other}"))),
            })
            .collect::<Result<_, _>>()?;
        let texts = r.str_column(n, "texts")?;
        let blobs = {
            let (present, ends) = r.presence_and_ends(n, "blobs")?;
            Column {
                data: r.take(last(&ends), "blobs")?.to_vec(),
                present,
                ends,
            }
        };
        let uris = r.str_column(n, "uris")?;
        let mime_types = r.str_column(n, "mime_types")?;
        let tags = r.str_column(n, "tags")?;
        let embedding_dims = r.u32s(n, "embedding_dims")?;
        let floats: u64 = embedding_dims.iter().map(|&d| u64::from(d)).sum();
        let floats = usize::try_from(floats)
            .map_err(|_| r.error("embedding_dims: too many values".into()))?;
        let embeddings = f32s_from_le(r.take(floats.saturating_mul(4), "embeddings")?);
        let count = r.u32("score count")? as usize;
        // A score takes at least 4 + 8 + 4 + 1 + 1 bytes.
        r.need(count.saturating_mul(18), "scores")?;
        let mut scores = Vec::with_capacity(count);
        for _ in 0..count {
            scores.push(Score {
                doc: r.u32("score document")?,
                value: r.f64("score value")?,
                name: r.str("score name")?,
                op_name: r.opt_str("score op_name")?,
                description: r.opt_str("score description")?,
            });
        }
        r.finish()?;
        let body = Body(Columns {
            ids,
            parents,
            relations,
            texts,
            blobs,
            uris,
            mime_types,
            tags,
            embedding_dims,
            embeddings,
            scores,
        });
        body.validate().map_err(|e| WireError::Invalid {
            frame: "body",
            message: e.to_string(),
        })?;
        Ok(body)
    }
}

fn last(ends: &[u32]) -> usize {
    ends.last().map_or(0, |&e| e as usize)
}

// Packed numbers are copied as one block on little-endian machines (their
// memory is already the wire's byte order): the embeddings are most of a body.
// bytemuck checks the casts (u32 and f32 are `Pod`: no padding, every bit
// pattern valid), so no `unsafe` is needed here.

fn put_ends(out: &mut Vec<u8>, values: &[u32]) {
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    for &v in values {
        put_u32(out, v);
    }
}

fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    out.extend_from_slice(bytemuck::cast_slice(values));
    #[cfg(not(target_endian = "little"))]
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `bytes` (a multiple of 4 long) as little-endian f32s.
fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    let mut values = vec![0f32; bytes.len() / 4];
    #[cfg(target_endian = "little")]
    // `bytes` may be unaligned for f32, so it is copied into the f32s' bytes.
    bytemuck::cast_slice_mut::<f32, u8>(&mut values).copy_from_slice(bytes);
    #[cfg(not(target_endian = "little"))]
    for (value, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    values
}

fn put_optional(out: &mut Vec<u8>, present: &[bool], ends: &[u32], data: &[u8]) {
    out.extend(present.iter().map(|&p| u8::from(p)));
    put_ends(out, ends);
    out.extend_from_slice(data);
}

impl Reader<'_> {
    fn presence_and_ends(
        &mut self,
        n: usize,
        column: &'static str,
    ) -> Result<(Vec<bool>, Vec<u32>), WireError> {
        let present = self
            .take(n, column)?
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(self.error(format!(
                    "{column}[{i}]: presence flag {other} is neither 0 nor 1"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ends = self.u32s(n, column)?;
        Ok((present, ends))
    }

    fn str_column(&mut self, n: usize, column: &'static str) -> Result<StrColumn, WireError> {
        let (present, ends) = self.presence_and_ends(n, column)?;
        let data = self.string(last(&ends), column)?;
        Ok(Column {
            present,
            data,
            ends,
        })
    }
}
