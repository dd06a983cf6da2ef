//! The only `bindgen!`s in the host: generated types for each contract version
//! it runs, `wit/executor.wit` (0.2.0, [`v2`]) and `wit/v0.1.0/executor.wit`
//! ([`v1`]).
//!
//! Everything outside `executor/` uses our own types ([`crate::Document`],
//! [`super::ExecutorError`]); `convert.rs` is the seam for documents, this
//! file's [`GuestError`] for errors.

/// `jina:executor@0.2.0`, the current contract.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "executor-world",
        // Parameters borrow from the host's documents (no clone on the way in);
        // results are owned.
        ownership: Borrowing { duplicate_if_necessary: true },
        // Calls into the guest are futures (the engine is async: see
        // `Executor`); the imports stay plain functions, none waits.
        imports: { default: tracing },
        exports: { default: async },
    });

    pub use jina::executor::log::Level as LogLevel;
    pub use jina::executor::types;
}

/// `jina:executor@0.1.0`: components built before 0.2.0 keep running. It
/// declares no endpoints and has no `capacity` kind.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "wit/v0.1.0",
        world: "executor-world",
        ownership: Borrowing { duplicate_if_necessary: true },
        imports: { default: tracing },
        exports: { default: async },
    });

    pub use jina::executor::log::Level as LogLevel;
    pub use jina::executor::types;
}

use super::ErrorKind;

/// An error an executor returned, whichever contract version it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<v2::types::Error> for GuestError {
    fn from(e: v2::types::Error) -> Self {
        use v2::types::ErrorKind as K;
        let kind = match e.kind {
            K::BadRequest => ErrorKind::BadRequest,
            K::BadConfig => ErrorKind::BadConfig,
            K::ReadOnly => ErrorKind::ReadOnly,
            K::Io => ErrorKind::Io,
            K::Internal => ErrorKind::Internal,
            K::Capacity => ErrorKind::Capacity,
        };
        GuestError {
            kind,
            message: e.message,
        }
    }
}

impl From<v1::types::Error> for GuestError {
    fn from(e: v1::types::Error) -> Self {
        use v1::types::ErrorKind as K;
        let kind = match e.kind {
            K::BadRequest => ErrorKind::BadRequest,
            K::BadConfig => ErrorKind::BadConfig,
            K::ReadOnly => ErrorKind::ReadOnly,
            K::Io => ErrorKind::Io,
            K::Internal => ErrorKind::Internal,
        };
        GuestError {
            kind,
            message: e.message,
        }
    }
}
