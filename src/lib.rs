//! jina-wasm: Jina's Pea / Pod / Flow executor system, with every executor a
//! sandboxed WebAssembly component.
//!
//! The crate is layered, bottom to top; each module owns one thing and is
//! meant to use only those above it in this list:
//!
//! - [`units`]: sizes (`64MiB`) and durations (`500ms`) as users type them.
//! - [`host_file`]: small files the host keeps where a guest could interfere
//!   (identities, records of unsaved writes): no links, capped, atomic.
//! - [`document`]: documents as the host sees them and their Jina-compatible JSON.
//! - [`wire`]: the message format between Peas (envelope and columnar body),
//!   specified in docs/protocol.md. The body's columns, their validation and
//!   the flattening of document trees are the `jina_doc_columns` crate's
//!   (crates/doc-columns), which the Rust guest SDK shares.
//! - [`executor`]: the sandboxed executor host. A wasmtime `Engine` and `Linker`
//!   per process ([`executor::Runtime`]), checked and cached components
//!   ([`executor::LoadedComponent`]), and one live instance per executor
//!   ([`executor::Executor`]) with memory and time limits and trap recovery.
//! - [`transport`]: sockets as bounded queues of frames ([`transport::Link`]):
//!   ZeroMQ over TCP and IPC between processes, `inproc://` between threads.
//! - [`http_server`]: the HTTP server loop, with its limits, of the gateway,
//!   the daemon and the metrics endpoint.
//! - [`control`]: the control plane: the commands on a Pea's, Pod's or
//!   gateway's control socket, reading one, the reply's frames, the client.
//! - [`child`]: child processes (a Pod's Peas, the daemon's objects): started
//!   to die with their parent, their ready line, stopped as TERMINATE asks.
//! - [`metrics`], [`trace`]: Prometheus metrics and OpenTelemetry traces of the
//!   gateway, the Peas and the Pods' heads and tails (docs/operations.md).
//! - [`pea`]: one executor behind an input, an output and a control socket:
//!   its run loop, the executor's task, durable and interval dumps.
//! - [`pod`]: Peas that share one executor behind a head (split, credit) and a
//!   tail (merge): shards, replicas, their workspaces, rolling updates.
//! - [`client`]: requests into a Pea's or Pod's input, answers from its output.
//! - [`client_daemon`]: the daemon API's client (a Flow's remote Pods, the
//!   tests) and what both sides accept (names, a file's listing entry).
//! - [`flow`]: a DAG of Pods from YAML, its router, and the gateway (Jina's HTTP
//!   and gRPC interfaces) in front; [`client_http`] is the gateway's client.
//! - [`daemon`]: `jina-wasm daemon`, remote and multi-tenant hosting of Peas
//!   and Pods over an HTTP API.
//! - [`export`]: a Flow as Kubernetes manifests or a Docker Compose file, each
//!   unit one `jina-wasm` command line (docs/kubernetes.md).
//! - [`cli`]: the `jina-wasm` commands, one file each.
//!
//! No module imports one listed after it, and none imports [`cli`]; a test may
//! (tests/all/daemon.rs checks the daemon's argv with the CLI's parser).
//!
//! The executor contract lives in `wit/executor.wit`; the guest side of it in the
//! `jina-guest-sdk` crate (`guest-sdk/`). docs/ explains both.

pub mod child;
pub mod cli;
pub mod client;
pub mod client_daemon;
pub mod client_http;
pub mod control;
pub mod daemon;
pub mod document;
pub mod executor;
pub mod export;
pub mod flow;
pub mod host_file;
pub mod http_server;
pub mod metrics;
pub mod pea;
pub mod pod;
pub mod trace;
pub mod transport;
pub mod units;
pub mod wire;

#[cfg(test)]
mod test_support;

// Links mimalloc's C library into every binary of the crate:
// `executor::release_free_memory` calls into it.
use mimalloc as _;

pub use document::{Document, NamedScore};
pub use executor::{Executor, ExecutorError, Runtime};
