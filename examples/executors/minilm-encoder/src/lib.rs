//! `minilm-encoder`: sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers,
//! 384 dimensions), run entirely inside the sandbox: the model's own
//! `tokenizer.json`, the forward pass in [`model`], mean pooling over the
//! tokens, L2 normalisation. The output matches sentence-transformers'
//! `SentenceTransformer("all-MiniLM-L6-v2").encode(...)` (tests/all/minilm.rs
//! checks it against an independent NumPy implementation).
//!
//! - `with:`
//!   - `model_dir` (default `"/model"`): the directory with `config.json`,
//!     `model.safetensors` and `tokenizer.json`, as the guest sees it (mount it
//!     with `--volumes target/models/all-MiniLM-L6-v2:/model:ro`).
//!   - `batch_size` (default 32, 1..=256): texts per forward pass.
//!   - `max_length` (default 256, the model's `max_seq_length`; 2..=512):
//!     tokens per text, `[CLS]` and `[SEP]` included; longer texts are cut.
//!   - `normalize` (default `true`): L2-normalise each embedding.
//!   - `kernel` (default `"host"`): the sgemm of the dense layers: `"host"`
//!     the host's native one through `jina:linalg` (several times faster),
//!     `"wasm"` the component's own simd128 one (no host import called).
//!   - `traversal` (default `"r"`): which documents to embed, Jina's
//!     traversal paths: `"r"` the request's documents, `"c"` their chunks,
//!     `"cc"` the chunks' chunks, `"m"` matches; several comma-separated
//!     (`"r,c"`) or as a list. `"root"` and `"chunks"` are `"r"` and `"c"`.
//! - Endpoints: `/encode` and every other endpoint (the default route). A
//!   request's `parameters.traversal` overrides the configured one. Documents
//!   with a text (an empty one too: it embeds as `[CLS] [SEP]`, as in
//!   sentence-transformers) get a 384-dim `embedding`; others are left as they are.

pub mod model;

use std::path::{Path, PathBuf};

use jina_guest_sdk::prelude::*;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use model::{Kernel, Model};

/// Most texts in one forward pass.
const MAX_BATCH: usize = 256;
/// Most tokens in one forward pass, whatever the batch size: the activations
/// take ~17 KiB per token (384 × 7 + 1536 floats), so this bounds them at
/// ~280 MiB (within the default 1 GiB memory limit beside the 87 MiB weights).
const MAX_BATCH_TOKENS: usize = 16384;
/// The deepest traversal path accepted (`"cccc..."`).
const MAX_PATH: usize = 8;

pub struct MinilmEncoder {
    model: Model,
    tokenizer: Tokenizer,
    batch_size: usize,
    normalize: bool,
    traversal: Vec<String>,
    kernel: Kernel,
}

impl Executor for MinilmEncoder {
    fn init(config: Config) -> Result<Self> {
        let model_dir: String = config.get_or("model_dir", "/model".to_string())?;
        let batch_size: usize = config.get_or("batch_size", 32)?;
        if batch_size == 0 || batch_size > MAX_BATCH {
            return Err(Error::bad_config(format!(
                "with.batch_size = {batch_size}: must be in 1..={MAX_BATCH}"
            )));
        }
        let max_length: usize = config.get_or("max_length", 256)?;
        let normalize: bool = config.get_or("normalize", true)?;
        let kernel: String = config.get_or("kernel", "host".to_string())?;
        let kernel = match kernel.as_str() {
            "host" => Kernel::Host,
            "wasm" => Kernel::Wasm,
            other => {
                return Err(Error::bad_config(format!(
                    "with.kernel = {other:?}: must be \"host\" (the host's sgemm, jina:linalg) \
                     or \"wasm\" (the component's own)"
                )));
            }
        };
        let traversal = traversal(config.get("traversal")?.as_ref(), "with.traversal")
            .map_err(Error::bad_config)?;

        let dir = PathBuf::from(&model_dir);
        let model = Model::load(&dir).map_err(|e| {
            Error::bad_config(format!(
                "with.model_dir = {model_dir:?}: {e} (mount the model directory, e.g. \
                 --volumes target/models/all-MiniLM-L6-v2:/model:ro; `make models` installs it)"
            ))
        })?;
        if max_length < 2 || max_length > model.max_tokens() {
            return Err(Error::bad_config(format!(
                "with.max_length = {max_length}: must be in 2..={} (the model's position embeddings)",
                model.max_tokens()
            )));
        }
        let tokenizer = load_tokenizer(
            &dir.join("tokenizer.json"),
            max_length,
            model.config.vocab_size,
        )
        .map_err(|e| Error::bad_config(format!("with.model_dir = {model_dir:?}: {e}")))?;
        Ok(MinilmEncoder {
            model,
            tokenizer,
            batch_size,
            normalize,
            traversal,
            kernel,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .on("/encode", Self::encode)
            .default(Self::encode)
    }
}

impl MinilmEncoder {
    /// Embed the text of every document on the traversal paths.
    pub fn encode(&mut self, mut docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let paths = match params.get::<serde_json::Value>("traversal")? {
            Some(value) => {
                traversal(Some(&value), "parameters.traversal").map_err(Error::bad_request)?
            }
            None => self.traversal.clone(),
        };
        for path in &paths {
            let mut selected = select(&mut docs, path);
            selected.retain(|d| d.text.is_some());
            let texts: Vec<&str> = selected
                .iter()
                .map(|d| d.text.as_deref().unwrap_or_default())
                .collect();
            let embeddings = self.embed(&texts)?;
            for (doc, embedding) in selected.into_iter().zip(embeddings) {
                doc.embedding = Some(embedding);
            }
        }
        Ok(docs)
    }

    /// Embeddings of `texts`, in order.
    ///
    /// # Errors
    ///
    /// A text the tokenizer refuses (`bad-request`, naming its position).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let encoding = self.tokenizer.encode(*text, true).map_err(|e| {
                Error::bad_request(format!("text {i} of the request: tokenizer: {e}"))
            })?;
            ids.push(encoding.get_ids().to_vec());
        }
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < ids.len() {
            // Up to batch_size texts, and never more than MAX_BATCH_TOKENS
            // tokens (one text alone always fits: max_length <= 512).
            let mut end = start;
            let mut tokens = 0;
            while end < ids.len()
                && end - start < self.batch_size
                && (end == start || tokens + ids[end].len() <= MAX_BATCH_TOKENS)
            {
                tokens += ids[end].len();
                end += 1;
            }
            let batch: Vec<&[u32]> = ids[start..end].iter().map(Vec::as_slice).collect();
            let embeddings = self.model.forward(&batch, self.kernel).map_err(|e| {
                // The host refuses a product only for memory (the encoder keeps
                // every other limit): the executor is full, not broken.
                if e.contains("memory") {
                    Error::capacity(e)
                } else {
                    Error::internal(e)
                }
            })?;
            for mut embedding in embeddings {
                if self.normalize {
                    let norm = embedding
                        .iter()
                        .map(|v| v * v)
                        .sum::<f32>()
                        .sqrt()
                        .max(1e-12);
                    embedding.iter_mut().for_each(|v| *v /= norm);
                }
                out.push(embedding);
            }
            start = end;
        }
        Ok(out)
    }
}

/// The model's tokenizer with truncation at `max_length` tokens and no padding
/// (the forward pass packs sequences); its ids must fit the model's vocabulary.
fn load_tokenizer(
    path: &Path,
    max_length: usize,
    vocab: usize,
) -> std::result::Result<Tokenizer, String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let mut tokenizer =
        Tokenizer::from_bytes(&bytes).map_err(|e| format!("{name}: not a tokenizer: {e}"))?;
    if tokenizer.get_vocab_size(true) > vocab {
        return Err(format!(
            "{name}: {} tokens, the model has {vocab} embeddings",
            tokenizer.get_vocab_size(true)
        ));
    }
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| format!("{name}: truncation at {max_length}: {e}"))?;
    tokenizer.with_padding(None::<PaddingParams>);
    Ok(tokenizer)
}

/// Parse traversal paths: a string (comma-separated) or a list of strings.
fn traversal(
    value: Option<&serde_json::Value>,
    what: &str,
) -> std::result::Result<Vec<String>, String> {
    use serde_json::Value;
    let parts: Vec<String> = match value {
        None | Some(Value::Null) => vec!["r".into()],
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{what} = {value:?}: expected strings"))
            })
            .collect::<std::result::Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{what} = {other}: expected a path like \"r\", \"c\" or \"r,c\""
            ));
        }
    };
    parts
        .into_iter()
        .map(|p| {
            let p = match p.as_str() {
                "root" => "r".to_string(),
                "chunks" => "c".to_string(),
                _ => p,
            };
            let valid = p == "r" || (!p.is_empty() && p.len() <= MAX_PATH && p.chars().all(|c| c == 'c' || c == 'm'));
            if valid {
                Ok(p)
            } else {
                Err(format!("{what}: path {p:?}: expected \"r\" or up to {MAX_PATH} of 'c' (chunks) and 'm' (matches)"))
            }
        })
        .collect()
}

/// The documents at `path` ("r", or letters 'c'/'m' from the roots down).
fn select<'a>(docs: &'a mut [Document], path: &str) -> Vec<&'a mut Document> {
    let mut level: Vec<&mut Document> = docs.iter_mut().collect();
    if path == "r" {
        return level;
    }
    for step in path.chars() {
        level = level
            .into_iter()
            .flat_map(|d| {
                if step == 'c' {
                    d.chunks.iter_mut()
                } else {
                    d.matches.iter_mut()
                }
            })
            .collect();
    }
    level
}

export_executor!(MinilmEncoder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_paths() {
        let parse = |v: serde_json::Value| traversal(Some(&v), "with.traversal");
        assert_eq!(traversal(None, "x").unwrap(), ["r"]);
        assert_eq!(parse(json!("r,c")).unwrap(), ["r", "c"]);
        assert_eq!(parse(json!(["chunks", "cm"])).unwrap(), ["c", "cm"]);
        assert!(parse(json!("x")).unwrap_err().contains("\"x\""));
        assert!(parse(json!("")).is_err());
        assert!(parse(json!(3)).is_err());
        assert!(parse(json!("ccccccccc")).is_err());
    }

    #[test]
    fn select_walks_chunks_and_matches() {
        let mut chunk = Document::new("c");
        chunk.matches.push(Document::new("cm"));
        let mut root = Document::new("r");
        root.chunks.push(chunk);
        let mut docs = vec![root];
        let ids = |path: &str, docs: &mut Vec<Document>| {
            select(docs, path)
                .iter()
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("r", &mut docs), ["r"]);
        assert_eq!(ids("c", &mut docs), ["c"]);
        assert_eq!(ids("cm", &mut docs), ["cm"]);
        assert!(ids("m", &mut docs).is_empty());
    }
}
