//! Write jina-wasm executors in Rust.
//!
//! An executor is a type that implements [`Executor`]: it is built once from its
//! `with:` configuration, names a handler per endpoint, and may persist its state in
//! `dump`. [`export_executor!`] turns it into a WebAssembly component for the
//! `jina:executor/executor-world@0.2.0` world (`wit/executor.wit`), which
//! declares the routes' endpoints to the host (see [`Routes::doc`]).
//!
//! ```no_run
//! use jina_guest_sdk::prelude::*;
//!
//! struct Upper;
//!
//! impl Executor for Upper {
//!     fn init(_config: Config) -> Result<Self> { Ok(Upper) }
//!     fn routes() -> Routes<Self> { Routes::new().on("/upper", Self::upper) }
//! }
//!
//! impl Upper {
//!     fn upper(&mut self, mut docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
//!         for doc in &mut docs { doc.text = doc.text.take().map(|t| t.to_uppercase()); }
//!         Ok(docs)
//!     }
//! }
//!
//! export_executor!(Upper);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` from a crate with
//! `crate-type = ["cdylib"]`.
//!
//! # Modules
//!
//! - [`document`]: [`Document`] and [`NamedScore`], the tree a handler sees.
//! - [`executor`]: the [`Executor`] trait, [`Routes`], the JSON objects
//!   [`Config`] (`with:`) and [`Params`] (request parameters), and
//!   [`RuntimeArgs`], the host's facts (shard, replica, read-only, durable,
//!   memory limit; `config.runtime_args()`).
//! - [`error`]: [`Error`] and [`ErrorKind`], the failure the host receives.
//! - [`log`]: structured logs into the host's tracing output.
//! - [`embedding`]: vector helpers and the `feature_hash` text embedding contract.
//! - [`state`]: crash-safe files for stateful executors (atomic writes, append log,
//!   and [`state::Journal`], the snapshot-plus-log policy of an indexer).
//! - [`bytes`]: little-endian writers and a checked [`bytes::Reader`] for state files.
//!
//! Everything generated from WIT lives in the hidden `__bindings` module and is
//! converted at one seam (`wire`); none of it appears in this API.

// Lets the generated bindings and `export_executor!` name this crate
// `jina_guest_sdk` from inside it as well as from executor crates.
extern crate self as jina_guest_sdk;

pub mod bytes;
pub mod document;
pub mod embedding;
pub mod error;
pub mod executor;
pub mod linalg;
pub mod log;
pub mod state;
mod wire;

#[doc(hidden)]
pub mod __rt;

pub use document::{Document, NamedScore, Traversal};
pub use error::{Error, ErrorKind, Result};
pub use executor::{Config, Executor, Handler, Params, Routes, RuntimeArgs};

/// The common imports for writing an executor: `use jina_guest_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::export_executor;
    pub use crate::{
        Config, Document, Error, ErrorKind, Executor, NamedScore, Params, Result, Routes,
        RuntimeArgs,
    };
    pub use serde_json::{Map, Value, json};
}

// The serde_json this crate speaks (`Document::tags`, `Config::as_map`), so
// executors need not pin a matching version.
pub use serde_json;

/// The executor contract's `generate!` (the SDK has one more, for `jina:linalg`):
/// every option spelled out.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    // Executors depend on this crate only, never on wit-bindgen: generated code
    // and the export macro reach wit-bindgen's runtime through this path.
    pub use wit_bindgen::rt as wit_bindgen_rt;

    wit_bindgen::generate!({
        path: "../wit",
        world: "executor-world",
        // `export_executor!` expands in the executor's crate and calls this macro.
        pub_export_macro: true,
        export_macro_name: "__export_executor_world",
        default_bindings_module: "jina_guest_sdk::__bindings",
        runtime_path: "jina_guest_sdk::__bindings::wit_bindgen_rt",
        ownership: Owning,
        generate_unused_types: false,
    });
}

/// The bindings of `jina:linalg` (`wit/linalg`), a package of its own beside
/// the executor contract: the SDK's second and last `generate!`. A component
/// imports it only if it calls [`linalg::matmul`].
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __linalg_bindings {
    wit_bindgen::generate!({
        path: "../wit/linalg",
        world: "linalg-user",
        runtime_path: "jina_guest_sdk::__bindings::wit_bindgen_rt",
        generate_unused_types: false,
    });
}

/// Export `$ty` (an [`Executor`]) as the component's `jina:executor/executor`.
///
/// Use it once, at the root of a `cdylib` crate:
///
/// ```ignore
/// jina_guest_sdk::export_executor!(MyExecutor);
/// ```
///
/// The instance is created by the host's `init` call and kept until `close`; the
/// routes from [`Executor::routes`] are built once, right after `init`.
#[macro_export]
macro_rules! export_executor {
    ($ty:ty) => {
        // Component exports exist only on wasm32: a native build of the same
        // crate (unit tests, benchmarks) has the executor type and no exports.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[doc(hidden)]
            struct __JinaExecutorExport;

            impl $crate::__bindings::exports::jina::executor::executor::Guest
                for __JinaExecutorExport
            {
                fn endpoints() -> ::std::vec::Vec<$crate::__rt::EndpointInfo> {
                    $crate::__rt::endpoints::<$ty>()
                }

                fn init(config: ::std::string::String) -> $crate::__rt::WireResult<()> {
                    $crate::__rt::init::<$ty>(config)
                }

                fn handle(
                    endpoint: ::std::string::String,
                    docs: $crate::__rt::Batch,
                    parameters: ::std::string::String,
                ) -> $crate::__rt::WireResult<$crate::__rt::Batch> {
                    $crate::__rt::handle::<$ty>(endpoint, docs, parameters)
                }

                fn dump() -> $crate::__rt::WireResult<()> {
                    $crate::__rt::dump::<$ty>()
                }

                fn close() {
                    $crate::__rt::close::<$ty>()
                }
            }

            $crate::__bindings::__export_executor_world!(__JinaExecutorExport);
        };
    };
}
