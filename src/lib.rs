//! jina-wasm: Jina's Pea / Pod / Flow executor system, with every executor a
//! sandboxed WebAssembly component.
//!
//! The crate is layered; each module owns one thing:
//!
//! - [`executor`]: the sandboxed executor host. A wasmtime `Engine` and `Linker`
//!   per process ([`executor::Runtime`]), checked and cached components
//!   ([`executor::LoadedComponent`]), and one live instance per executor
//!   ([`executor::Executor`]) with memory and time limits and trap recovery.
//! - [`document`]: documents as the host sees them and their Jina-compatible JSON.
//! - [`wire`]: the message format between Peas (envelope and columnar body),
//!   specified in docs/protocol.md.
//! - [`units`]: sizes (`64MiB`) and durations (`500ms`) as users type them.
//! - [`export`]: a Flow as Kubernetes manifests or a Docker Compose file, each
//!   unit one `jina-wasm` command line (docs/kubernetes.md).
//! - [`daemon`]: `jina-wasm daemon`, remote and multi-tenant hosting of Peas
//!   and Pods over an HTTP API, and its client (for a Flow's remote Pods).
//! - [`metrics`]: Prometheus metrics of the gateway, the Peas and the Pods'
//!   heads and tails, and the gateway's access log (docs/operations.md).
//! - [`trace`]: OpenTelemetry traces, one per request across Pods and processes,
//!   exported over OTLP when configured (docs/operations.md).
//! - [`cli`]: the `jina-wasm` commands, one file each; no logic of its own beyond
//!   turning flags into the types above.
//!
//! The executor contract lives in `wit/executor.wit`; the guest side of it in the
//! `jina-guest-sdk` crate (`guest-sdk/`). docs/ explains both.

pub mod cli;
pub mod client;
pub mod client_http;
pub mod daemon;
pub mod document;
pub mod executor;
pub mod export;
pub mod flow;
pub mod http_server;
pub mod metrics;
pub mod pea;
pub mod pod;
pub mod trace;
pub mod transport;
pub mod units;
pub mod wire;

pub use document::{Document, NamedScore};
pub use executor::{Executor, ExecutorError, Runtime};
