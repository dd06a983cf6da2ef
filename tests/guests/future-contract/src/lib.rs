//! `future-contract`: an executor for `jina:executor@0.3.0`, a contract version
//! this host does not know (its WIT is a copy of 0.1.0 under a version no host has published).
//! The host must refuse it with an "unsupported contract version" error.
//!
//! Built with wit-bindgen directly: the SDK speaks only the current contract.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "executor-world",
    });
}

use bindings::exports::jina::executor::executor::Guest;
use bindings::jina::executor::types::{Batch, Error};

struct FutureContract;

impl Guest for FutureContract {
    fn init(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn handle(_endpoint: String, docs: Batch, _parameters: String) -> Result<Batch, Error> {
        Ok(docs)
    }

    fn dump() -> Result<(), Error> {
        Ok(())
    }

    fn close() {}
}

bindings::export!(FutureContract with_types_in bindings);
