//! `old-contract`: an executor for `jina:executor@0.1.0` (the published WIT in
//! `wit/v0.1.0`), as every executor was built before 0.2.0. The host must
//! still run it: it declares no endpoints (so it may take any), and its
//! errors and logs arrive through 0.1.0's types.
//!
//! - `/upper`: ASCII-uppercases every text (same byte length, so the
//!   batch's offsets stay valid without decoding it).
//! - `/fail`: answers `bad-request` "refused by a 0.1.0 executor".
//! - anything else: the batch unchanged.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.0",
        world: "executor-world",
    });
}

use bindings::exports::jina::executor::executor::Guest;
use bindings::jina::executor::log::{Level, log};
use bindings::jina::executor::types::{Batch, Error, ErrorKind};

struct OldContract;

impl Guest for OldContract {
    fn init(_config: String) -> Result<(), Error> {
        log(Level::Info, "a 0.1.0 executor started", &[]);
        Ok(())
    }

    fn handle(endpoint: String, mut docs: Batch, _parameters: String) -> Result<Batch, Error> {
        match endpoint.as_str() {
            "/upper" => {
                docs.texts.data = docs.texts.data.to_ascii_uppercase();
                Ok(docs)
            }
            "/fail" => Err(Error {
                kind: ErrorKind::BadRequest,
                message: "refused by a 0.1.0 executor".into(),
            }),
            _ => Ok(docs),
        }
    }

    fn dump() -> Result<(), Error> {
        Ok(())
    }

    fn close() {}
}

bindings::export!(OldContract with_types_in bindings);
