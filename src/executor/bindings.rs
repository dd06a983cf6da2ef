//! The only `bindgen!` in the host: generated types for `wit/executor.wit`.
//!
//! Everything outside `executor/` uses our own types ([`crate::Document`],
//! [`super::ExecutorError`]); `convert.rs` is the seam.

wasmtime::component::bindgen!({
    path: "wit",
    world: "executor-world",
    // Parameters borrow from the host's documents (no clone on the way in);
    // results are owned.
    ownership: Borrowing { duplicate_if_necessary: true },
    // Guest calls are synchronous: the Pea runs them on a blocking thread, so
    // the async reactor never waits on a guest.
    imports: { default: tracing },
});

pub use jina::executor::log::Level as LogLevel;
pub use jina::executor::types;
