//! `text-encoder`: embeds text with [`feature_hash`](jina_guest_sdk::embedding::feature_hash),
//! a deterministic hashing embedding (no model, no state).
//!
//! - `with:`
//!   - `dim` (default 256, 1..=65536): embedding length.
//!   - `field` (default `"text"`): what to embed: `"text"`, or `"tags.<key>"` for a
//!     string tag.
//! - Endpoints: every endpoint (the default route). Each document with the field
//!   set, and each of its chunks recursively, gets `embedding = feature_hash(field,
//!   dim)`; documents without it are left unchanged.

use jina_guest_sdk::embedding::feature_hash;
use jina_guest_sdk::prelude::*;

/// The largest `dim` accepted: beyond this a typo, not a choice.
const MAX_DIM: usize = 65536;

pub struct TextEncoder {
    dim: usize,
    field: Field,
}

/// Where the text to embed is read from.
enum Field {
    Text,
    Tag(String),
}

impl Executor for TextEncoder {
    fn init(config: Config) -> Result<Self> {
        let dim: usize = config.get_or("dim", 256)?;
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::bad_config(format!(
                "with.dim = {dim}: must be in 1..={MAX_DIM}"
            )));
        }
        let field: String = config.get_or("field", "text".to_string())?;
        let field = match field.strip_prefix("tags.") {
            _ if field == "text" => Field::Text,
            Some(key) if !key.is_empty() => Field::Tag(key.to_string()),
            _ => {
                return Err(Error::bad_config(format!(
                    "with.field = {field:?}: expected \"text\" or \"tags.<key>\""
                )));
            }
        };
        Ok(TextEncoder { dim, field })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .default(Self::encode)
            .doc("Embed the text of every document and chunk (feature hashing)")
    }
}

impl TextEncoder {
    fn encode(&mut self, mut docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        // An explicit stack over the documents and their chunks, at any depth.
        let mut stack: Vec<&mut Document> = docs.iter_mut().collect();
        while let Some(doc) = stack.pop() {
            let text = match &self.field {
                Field::Text => doc.text.as_deref(),
                Field::Tag(key) => doc.tags.get(key).and_then(|v| v.as_str()),
            };
            if let Some(text) = text {
                doc.embedding = Some(feature_hash(text, self.dim));
            }
            stack.extend(doc.chunks.iter_mut());
        }
        Ok(docs)
    }
}

export_executor!(TextEncoder);
