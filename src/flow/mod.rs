//! Flows: a DAG of Pods behind a gateway, described in YAML.
//!
//! - [`spec`] reads and checks the YAML (docs/flow-yaml.md) and builds the
//!   `needs` graph;
//! - [`resolve`] turns it into the typed settings of every Pod before anything
//!   starts (what `flow`, `flow check` and `export` share);
//! - [`run`] starts the Pods in dependency order;
//! - [`router`] carries each request along the graph, joining branches;
//! - [`gateway`] is the HTTP front (Jina's HTTP interface);
//! - [`grpc`] is the gRPC front (Jina's gRPC services, its client's default);
//! - [`front`] reads which protocols (ports) a gateway serves and runs them;
//! - [`endpoints`] collects the endpoints the executors declare (for
//!   `/openapi.json` and gRPC endpoint discovery);
//! - [`remote`] runs a Pod with `host:` on a `jina-wasm daemon`;
//! - [`update`] is the gateway's admin route: rolling updates of its Pods.

pub mod endpoints;
pub mod front;
pub mod gateway;
pub mod grpc;
pub mod remote;
pub mod resolve;
pub mod router;
pub mod run;
pub mod spec;
pub mod update;

pub use spec::{Flow, FlowError, GATEWAY};
