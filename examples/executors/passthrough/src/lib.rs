//! `passthrough`: returns every request's documents unchanged.
//!
//! - `with:` none.
//! - Endpoints: every endpoint (the default route) decodes the documents and
//!   encodes them back, so it measures the boundary and SDK cost of a request and
//!   nothing else. The benchmark baseline.

use jina_guest_sdk::prelude::*;

struct Passthrough;

impl Executor for Passthrough {
    fn init(_config: Config) -> Result<Self> {
        Ok(Passthrough)
    }

    fn routes() -> Routes<Self> {
        Routes::new().default(Self::pass)
    }
}

impl Passthrough {
    fn pass(&mut self, docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        Ok(docs)
    }
}

export_executor!(Passthrough);
