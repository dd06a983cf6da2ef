//! What can go wrong in a call into an executor, typed so that callers (the Pea's
//! error strategies, the client) can branch on it and people can read it.

use std::fmt;

pub use crate::wire::ErrorKind;

/// Which part of the lifecycle failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Load,
    Init,
    Handle,
    Dump,
    Close,
    /// `endpoints` (contract 0.2.0): what the component declares it handles.
    Endpoints,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Init => "init",
            Phase::Handle => "handle",
            Phase::Dump => "dump",
            Phase::Close => "close",
            Phase::Endpoints => "endpoints",
        })
    }
}

/// A failed call, naming the executor, the phase and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("executor `{executor}` failed in {phase} ({kind}): {message}")]
pub struct ExecutorError {
    pub executor: String,
    pub phase: Phase,
    pub kind: ErrorKind,
    pub message: String,
}
