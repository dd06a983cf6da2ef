//! Flows: a DAG of Pods behind a gateway, described in YAML.
//!
//! [`spec`] reads and checks the YAML (docs/flow-yaml.md) and builds the
//! `needs` graph; the runtime that starts the Pods and the HTTP gateway is
//! the next step of this module (issue 5, in progress).

pub mod spec;

pub use spec::{Flow, FlowError, GATEWAY};
