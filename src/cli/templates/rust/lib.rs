//! `{{name}}`: a jina-wasm executor. Endpoint `/upper`: upper-cases each
//! document's text and appends `with: {suffix: ...}` (default empty).

use jina_guest_sdk::prelude::*;

struct {{class}} {
    suffix: String,
}

impl Executor for {{class}} {
    fn init(config: Config) -> Result<Self> {
        Ok({{class}} {
            suffix: config.get_or("suffix", String::new())?,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .on("/upper", Self::upper)
            .doc("Upper-case each document's text and append the suffix")
    }
}

impl {{class}} {
    fn upper(&mut self, mut docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        for doc in &mut docs {
            if let Some(text) = doc.text.take() {
                doc.text = Some(text.to_uppercase() + &self.suffix);
            }
        }
        Ok(docs)
    }
}

export_executor!({{class}});
