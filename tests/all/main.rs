//! The integration tests, in one binary (linking wasmtime once, not per file).
//!
//! Every test runs real components built for wasm32-wasip2 by `make guests`
//! (`make test` does it first): the example executors and the misbehaving
//! fixtures in tests/guests/.
//!
//! - `examples`: each example executor does its job (encoder, segmenter,
//!   indexer with state across restarts, merger), through the host API.
//! - `adversarial`: the same misbehaving guests through `jina-wasm pea`
//!   processes: each case the exact error kind, then a good request served.
//! - `sandbox`: misbehaving guests are contained with the right error kind and the
//!   same executor then serves a good request; every limit obeyed and violated.
//! - `load`: each way a file can fail to be an executor has its own message;
//!   the compiled-component cache is used.
//! - `cli`: `jina-wasm run`, `inspect`, `flow check`, `cache` and Jina's flags as
//!   a user runs them; the README's "A Pea by hand" run as printed.
//! - `pea`: `jina-wasm pea` processes over real ZeroMQ sockets: socket pairings,
//!   control requests, error strategies, restarts, backpressure, a pyzmq peer.
//! - `malformed`: truncated frames, wrong frame counts, unknown versions, huge
//!   lengths, control-socket garbage against a running Pea: answered or
//!   dropped with a log line, and the Pea keeps serving; a control flood from
//!   clients that never read stalls no one else, at a Pea or a Pod.
//! - `pod`: `jina-wasm pod` with shards and replicas: partitioned writes, merged
//!   searches, load balancing, failures that name the shard, both backends.
//! - `export`: Kubernetes and Compose export of the demo Flow: golden files,
//!   kubernetes-validate --strict, and every exported unit run as a process.
//! - `daemon`: `jina-wasm daemon` on loopback aliases: a Flow split over two
//!   daemons, a Flow run by a daemon, tenant isolation, quotas, refused names,
//!   leases after `kill -9`.
//! - `stateful`: restarts, durable mode under `kill -9`, interval mode's loss
//!   window, a crash during a dump, read-only replicas, re-sharding.
//! - `hnsw`: the HNSW indexer: recall against exact search through a sharded
//!   Pod, durable mode under `kill -9`, updates and deletes, re-sharding.
//! - `hostile_fs`: what a guest leaves on disk and what a tenant names: links
//!   refused and never followed, quotas walked through handles and rolled
//!   back, shard identities out of reach, volumes bound to one shard, the
//!   daemon's per-object state and bounded logs.
//! - `hostile_daemon`: what a tenant names at the daemon: links on the way
//!   refused, names that collide, look-alike names, the `files` quota, logs
//!   rotated at `--max-log` and streamed.
//! - `hostile_input`: what a client claims and what a guest returns: trees
//!   past the depth limit, shared request ids, huge durations, Flows over
//!   `--max-peas`, results past wasmtime's copy limit.
//! - `faults`: loss is never silent (a trap or a failed dump in interval
//!   mode), a crash-looping `init` backs off, a Pod restarts a killed shard.
//! - `polyglot`: the Python and JavaScript ports of an example give its exact
//!   output, through the host API, in a Pea and in a Flow beside Rust executors;
//!   `jina-wasm new` scaffolds build and run in each language.
//! - `sdk`: what every SDK gives an executor: the host's facts (shard,
//!   replica, read-only, durable) apart from its parameters, so the Python and
//!   JavaScript executors run as shards, replicas, read-only and durable, in a
//!   Pod and in a Flow; Jina's client's `top_k: 3` (a double) taken as 3.
//! - `grpc`: the gateway's gRPC side with the real Jina 3.34 client on its
//!   default protocol: index and search, parameters, callbacks, errors,
//!   10,000 documents streamed, asyncio, deadlines, garbage.
//! - `pinned`: a Pod's checked copy of `uses` keeps the operator's
//!   `--uses-sha256`, and a failed start leaves no copy.
//! - `rolling`: rolling updates of a running Flow's Pod under continuous
//!   load: replicas and shards replaced with no failed request, a broken
//!   replacement rolled back, refusals that say why.
//! - `metrics`: a Flow's `/metrics` parsed strictly as Prometheus text, its
//!   counters moving with traffic and errors by kind; a standalone Pea's
//!   `--port-monitoring`; an export's Prometheus annotations (golden files);
//!   `--log-format json` and the gateway's access line.
//! - `shard_replicas`: shards × replicas in one Pod: documents split by id,
//!   each shard's part to one of its replicas, every replica taking work, a
//!   shard serving on through one replica while a killed one restarts,
//!   read-only replicas of a writer's shards before and after a reshard.
//! - `traces`: OpenTelemetry traces into an in-process OTLP receiver: one
//!   request through a 2-shard Pod is one tree of spans (THREAD and PROCESS
//!   backends), a client's `traceparent` continued, a silent collector
//!   slowing nothing.
//! - `minilm`: the MiniLM sentence encoder with the real model: fidelity against
//!   an independent NumPy reference, traversal, bad models named, in a Pea, a
//!   Pod of two replicas and `jina-wasm run`.
//! - `calls`: where guest calls run: computing, sleeping or writing guests
//!   in one process leave its reactor to control requests.

mod adversarial;
mod calls;
mod cli;
mod daemon;
mod examples;
mod export;
mod faults;
mod flow;
mod grpc;
mod hnsw;
mod hostile_daemon;
mod hostile_fs;
mod hostile_input;
mod load;
mod malformed;
mod metrics;
mod minilm;
mod pea;
mod pinned;
mod pod;
mod polyglot;
mod rolling;
mod sandbox;
mod sdk;
mod shard_replicas;
// The gRPC request the gRPC tests and the bench build (examples/bench.rs).
#[path = "../support/grpc_request.rs"]
mod grpc_request;
mod stateful;
mod traces;
mod util;
