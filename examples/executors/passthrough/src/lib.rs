//! `passthrough`: returns every request's documents unchanged. The benchmark
//! baseline.
//!
//! - `with:` none.
//! - Endpoints:
//!   - `/roundtrip`: decodes the documents into SDK `Document` trees and encodes
//!     them back: the cost of the SDK's conversion for any real handler.
//!   - every other endpoint has no handler, so (as in Jina) the documents pass
//!     through untouched; the SDK returns the batch without decoding it. This
//!     measures the host and the component boundary and nothing else.

use jina_guest_sdk::prelude::*;

struct Passthrough;

impl Executor for Passthrough {
    fn init(_config: Config) -> Result<Self> {
        Ok(Passthrough)
    }

    fn routes() -> Routes<Self> {
        Routes::new().on("/roundtrip", Self::roundtrip)
    }
}

impl Passthrough {
    fn roundtrip(&mut self, docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        Ok(docs)
    }
}

export_executor!(Passthrough);
