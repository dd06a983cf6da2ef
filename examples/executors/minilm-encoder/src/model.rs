//! The BERT encoder of all-MiniLM-L6-v2 (any BERT of the same shape, read
//! from its `config.json`): weights from `model.safetensors`, a forward pass on
//! `matrixmultiply`'s sgemm, mean pooling over each sequence's tokens.
//!
//! Sequences are packed, not padded: the dense layers run once over the rows of
//! every token of the batch, and attention runs per sequence over its own
//! tokens only. That is exactly BERT with an attention mask (a masked key gets
//! zero weight) and spends no work on padding.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

#[cfg(target_endian = "big")]
compile_error!("model.safetensors holds little-endian f32; this loader reads it in place");

/// A model file that cannot be used, with the file named.
#[derive(Debug)]
pub struct LoadError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

fn fail(file: &Path, reason: impl std::fmt::Display) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The `config.json` fields the forward pass depends on (Hugging Face names).
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

/// Which sgemm the dense layers (Q, K, V, attention output, MLP) run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The host's native sgemm through `jina:linalg` (docs/minilm.md). In a
    /// native build of this crate there is no host: the crate's own sgemm,
    /// which is the same `matrixmultiply` code the host runs.
    Host,
    /// `matrixmultiply`'s sgemm compiled into the component (wasm simd128).
    Wasm,
}

/// Where one tensor's f32 values are: a range of the file's storage, or (for a
/// tensor the file does not align to 4 bytes) a copy of its own.
enum Slot {
    InFile(Range<usize>),
    Copied(Vec<f32>),
}

/// One encoder layer's tensors, PyTorch `Linear` layout (`[out, in]`).
struct Layer {
    query: (Slot, Slot),
    key: (Slot, Slot),
    value: (Slot, Slot),
    attn_out: (Slot, Slot),
    attn_norm: (Slot, Slot),
    inter: (Slot, Slot),
    out: (Slot, Slot),
    out_norm: (Slot, Slot),
}

/// A loaded BERT model. The weights are the file's bytes, read once into f32
/// storage and used in place: one copy of the ~90 MB, no conversion pass.
pub struct Model {
    pub config: BertConfig,
    storage: Vec<f32>,
    word: Slot,
    position: Slot,
    token_type: Slot,
    emb_norm: (Slot, Slot),
    layers: Vec<Layer>,
}

impl Model {
    /// Load `config.json` and `model.safetensors` from `dir`.
    ///
    /// # Errors
    ///
    /// A missing, unreadable or inconsistent file, named in the error.
    pub fn load(dir: &Path) -> Result<Model, LoadError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| fail(&config_path, e))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| fail(&config_path, format!("not a BERT config: {e}")))?;
        let c = &config;
        if c.hidden_size == 0
            || c.num_attention_heads == 0
            || !c.hidden_size.is_multiple_of(c.num_attention_heads)
            || c.num_hidden_layers == 0
            || c.num_hidden_layers > 64
            || c.hidden_size > 8192
            || c.intermediate_size == 0
            || c.intermediate_size > 65536
            || c.type_vocab_size == 0
            || c.max_position_embeddings == 0
        {
            return Err(fail(&config_path, format!("unsupported shape: {c:?}")));
        }
        if c.hidden_act != "gelu" {
            return Err(fail(
                &config_path,
                format!(
                    "hidden_act {:?}: only \"gelu\" (erf) is implemented",
                    c.hidden_act
                ),
            ));
        }

        let path = dir.join("model.safetensors");
        let (storage, pad, len) = read_aligned(&path)?;
        let bytes: &[u8] = bytemuck::cast_slice(&storage);
        let tensors = SafeTensors::deserialize(&bytes[pad..pad + len])
            .map_err(|e| fail(&path, format!("not a safetensors file: {e}")))?;
        let base = storage.as_ptr() as usize;
        let get = |name: &str, shape: &[usize]| -> Result<Slot, LoadError> {
            // Checkpoints saved from `BertModel` name tensors `embeddings...`;
            // from a task model, `bert.embeddings...`.
            let view = tensors
                .tensor(name)
                .or_else(|_| tensors.tensor(&format!("bert.{name}")))
                .map_err(|_| fail(&path, format!("tensor {name:?} is missing")))?;
            if view.dtype() != Dtype::F32 {
                return Err(fail(
                    &path,
                    format!("tensor {name:?} is {:?}, expected F32", view.dtype()),
                ));
            }
            if view.shape() != shape {
                return Err(fail(
                    &path,
                    format!(
                        "tensor {name:?} has shape {:?}, expected {shape:?}",
                        view.shape()
                    ),
                ));
            }
            let data = view.data();
            let offset = data.as_ptr() as usize - base;
            Ok(if offset.is_multiple_of(4) {
                Slot::InFile(offset / 4..offset / 4 + data.len() / 4)
            } else {
                Slot::Copied(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            })
        };
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let linear = |name: &str, out: usize, inp: usize| -> Result<(Slot, Slot), LoadError> {
            Ok((
                get(&format!("{name}.weight"), &[out, inp])?,
                get(&format!("{name}.bias"), &[out])?,
            ))
        };
        let norm = |name: &str| -> Result<(Slot, Slot), LoadError> {
            Ok((
                get(&format!("{name}.weight"), &[h])?,
                get(&format!("{name}.bias"), &[h])?,
            ))
        };
        let word = get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?;
        let position = get(
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, h],
        )?;
        let token_type = get(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )?;
        let emb_norm = norm("embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                query: linear(&format!("{p}.attention.self.query"), h, h)?,
                key: linear(&format!("{p}.attention.self.key"), h, h)?,
                value: linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                inter: linear(&format!("{p}.intermediate.dense"), i, h)?,
                out: linear(&format!("{p}.output.dense"), h, i)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        drop(tensors);
        Ok(Model {
            config,
            storage,
            word,
            position,
            token_type,
            emb_norm,
            layers,
        })
    }

    fn t<'a>(&'a self, slot: &'a Slot) -> &'a [f32] {
        match slot {
            Slot::InFile(range) => &self.storage[range.clone()],
            Slot::Copied(values) => values,
        }
    }

    /// The largest sequence the position embeddings cover.
    pub fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Mean-pooled (not normalised) embeddings of `sequences` (token ids with
    /// the special tokens, each 1..=`max_tokens()` long), in order.
    ///
    /// # Errors
    ///
    /// The host's refusal of a matrix product (with [`Kernel::Host`]): its
    /// message, e.g. the call's memory over the executor's limit.
    ///
    /// # Panics
    ///
    /// An empty or too long sequence, or an id outside the vocabulary: the
    /// caller (the tokenizer path) rules those out.
    pub fn forward(&self, sequences: &[&[u32]], kernel: Kernel) -> Result<Vec<Vec<f32>>, String> {
        let c = &self.config;
        let (h, inter, heads) = (c.hidden_size, c.intermediate_size, c.num_attention_heads);
        let dh = h / heads;
        let eps = c.layer_norm_eps as f32;
        let rows: usize = sequences.iter().map(|s| s.len()).sum();
        let mut spans = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for s in sequences {
            assert!(
                !s.is_empty() && s.len() <= c.max_position_embeddings,
                "sequence length {}",
                s.len()
            );
            spans.push(start..start + s.len());
            start += s.len();
        }

        // Embeddings: word + position + token type 0, then LayerNorm.
        let (word, position, token_type) = (
            self.t(&self.word),
            self.t(&self.position),
            self.t(&self.token_type),
        );
        let mut x = vec![0f32; rows * h];
        for (s, span) in sequences.iter().zip(&spans) {
            for (t, &id) in s.iter().enumerate() {
                let id = id as usize;
                assert!(id < c.vocab_size, "token id {id}");
                let row = &mut x[(span.start + t) * h..][..h];
                let (w, p, ty) = (
                    &word[id * h..][..h],
                    &position[t * h..][..h],
                    &token_type[..h],
                );
                for j in 0..h {
                    row[j] = w[j] + p[j] + ty[j];
                }
            }
        }
        layer_norm(
            &mut x,
            h,
            self.t(&self.emb_norm.0),
            self.t(&self.emb_norm.1),
            eps,
        );

        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut mid = vec![0f32; rows * inter];
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut scores = vec![0f32; longest * longest];
        let scale = 1.0 / (dh as f32).sqrt();
        for layer in &self.layers {
            // Q, K and V side by side in one [rows, 3h] matrix.
            for (k, (w, b)) in [&layer.query, &layer.key, &layer.value]
                .into_iter()
                .enumerate()
            {
                linear(
                    kernel,
                    &x,
                    rows,
                    h,
                    self.t(w),
                    self.t(b),
                    &mut qkv[k * h..],
                    3 * h,
                    h,
                    false,
                )?;
            }
            // Attention per sequence and head: softmax(Q Kᵀ / √d) V.
            for span in &spans {
                let len = span.len();
                for head in 0..heads {
                    let q = span.start * 3 * h + head * dh;
                    let (k, v) = (q + h, q + 2 * h);
                    // scores[len, len] = Q[len, dh] · K[len, dh]ᵀ
                    gemm(
                        len,
                        dh,
                        len,
                        scale,
                        &qkv[q..],
                        (3 * h, 1),
                        &qkv[k..],
                        (1, 3 * h),
                        0.0,
                        &mut scores,
                        (len, 1),
                    );
                    for row in scores[..len * len].chunks_exact_mut(len) {
                        softmax(row);
                    }
                    // ctx[len, dh] = P[len, len] · V[len, dh]
                    let out = span.start * h + head * dh;
                    gemm(
                        len,
                        len,
                        dh,
                        1.0,
                        &scores,
                        (len, 1),
                        &qkv[v..],
                        (3 * h, 1),
                        0.0,
                        &mut ctx[out..],
                        (h, 1),
                    );
                }
            }
            // x = LayerNorm(x + ctx Woᵀ + bo)
            let (w, b) = &layer.attn_out;
            linear(
                kernel,
                &ctx,
                rows,
                h,
                self.t(w),
                self.t(b),
                &mut x,
                h,
                h,
                true,
            )?;
            layer_norm(
                &mut x,
                h,
                self.t(&layer.attn_norm.0),
                self.t(&layer.attn_norm.1),
                eps,
            );
            // x = LayerNorm(x + GELU(x Wiᵀ + bi) Woᵀ + bo)
            let (w, b) = &layer.inter;
            linear(
                kernel,
                &x,
                rows,
                h,
                self.t(w),
                self.t(b),
                &mut mid,
                inter,
                inter,
                false,
            )?;
            for v in &mut mid {
                *v = gelu(*v);
            }
            let (w, b) = &layer.out;
            linear(
                kernel,
                &mid,
                rows,
                inter,
                self.t(w),
                self.t(b),
                &mut x,
                h,
                h,
                true,
            )?;
            layer_norm(
                &mut x,
                h,
                self.t(&layer.out_norm.0),
                self.t(&layer.out_norm.1),
                eps,
            );
        }

        // Mean over each sequence's tokens (all of them are attended: the
        // attention mask of an unpadded sequence is all ones).
        Ok(spans
            .iter()
            .map(|span| {
                let mut sum = vec![0f32; h];
                for row in x[span.start * h..span.end * h].chunks_exact(h) {
                    for (s, v) in sum.iter_mut().zip(row) {
                        *s += v;
                    }
                }
                let n = span.len() as f32;
                sum.iter_mut().for_each(|s| *s /= n);
                sum
            })
            .collect())
    }
}

/// Read `path` into f32 storage so that the tensor data (after the 8-byte
/// length and the JSON header) starts on a 4-byte boundary. Returns the
/// storage, the byte offset of the file in it, and the file's length.
fn read_aligned(path: &Path) -> Result<(Vec<f32>, usize, usize), LoadError> {
    let mut file = File::open(path).map_err(|e| fail(path, e))?;
    let len = file.metadata().map_err(|e| fail(path, e))?.len();
    let mut head = [0u8; 8];
    file.read_exact(&mut head)
        .map_err(|e| fail(path, format!("cannot read the header length: {e}")))?;
    let header = u64::from_le_bytes(head);
    if header > len.saturating_sub(8) {
        return Err(fail(
            path,
            format!("header of {header} bytes in a file of {len}: truncated or not safetensors"),
        ));
    }
    // On wasm32 a file past 4 GiB does not fit the address space at all.
    let len = usize::try_from(len).map_err(|_| fail(path, format!("{len} bytes is too large")))?;
    let pad = (4 - (8 + header as usize) % 4) % 4;
    let mut storage = vec![0f32; (pad + len).div_ceil(4)];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut storage);
    bytes[pad..pad + 8].copy_from_slice(&head);
    file.read_exact(&mut bytes[pad + 8..pad + len])
        .map_err(|e| fail(path, format!("cannot read {len} bytes: {e}")))?;
    Ok((storage, pad, len))
}

/// `c[m, n] = alpha · a[m, k] · b[k, n] + beta · c`, each matrix given by its
/// (row, column) strides in elements, bounds-checked before the unsafe call.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows - 1) * rs + cols.saturating_sub(1) * cs
    };
    if k > 0 {
        assert!(last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len());
    }
    assert!(last(m, n, rsc, csc) < c.len());
    // SAFETY: every element the strides address is inside its slice (checked
    // above), and `c` is a unique borrow that does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// A PyTorch `Linear` over `rows` rows: `out[r, ..n] = x[r, ..k] · wᵀ + b`
/// (`w` is `[n, k]`), or with `residual`, `out += x · wᵀ + b` (the residual is
/// what `out` held). `out` rows are `ldo` apart.
///
/// With [`Kernel::Host`] inside a component, `x · wᵀ` is the host's, in
/// blocks of rows that keep each call within `jina:linalg`'s limits.
#[allow(clippy::too_many_arguments)]
fn linear(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    b: &[f32],
    out: &mut [f32],
    ldo: usize,
    n: usize,
    residual: bool,
) -> Result<(), String> {
    if kernel == Kernel::Host && cfg!(target_arch = "wasm32") {
        use jina_guest_sdk::linalg::{MAX_BYTES, MAX_MULTIPLY_ADDS, matmul};
        let (k64, n64) = (k as u64, n as u64);
        let block = (MAX_MULTIPLY_ADDS / (k64 * n64))
            .min(MAX_BYTES / 4 / k64)
            .min(MAX_BYTES / 4 / n64)
            .max(1) as usize;
        let mut start = 0;
        while start < rows {
            let len = block.min(rows - start);
            let c = matmul(
                len as u32,
                k as u32,
                n as u32,
                &x[start * k..(start + len) * k],
                &w[..n * k],
                true,
            )?;
            for (r, c) in c.chunks_exact(n).enumerate() {
                let row = &mut out[(start + r) * ldo..][..n];
                if residual {
                    for ((o, c), b) in row.iter_mut().zip(c).zip(b) {
                        *o += c + b;
                    }
                } else {
                    for ((o, c), b) in row.iter_mut().zip(c).zip(b) {
                        *o = c + b;
                    }
                }
            }
            start += len;
        }
        return Ok(());
    }
    for r in 0..rows {
        let row = &mut out[r * ldo..][..n];
        if residual {
            row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        } else {
            row.copy_from_slice(&b[..n]);
        }
    }
    // Wᵀ as a [k, n] matrix: element (p, j) is w[j * k + p].
    gemm(rows, k, n, 1.0, x, (k, 1), w, (1, k), 1.0, out, (ldo, 1));
    Ok(())
}

fn layer_norm(x: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// BERT's exact GELU: `x · Φ(x)`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}
