//! What can go wrong in a call into an executor, typed so that callers (the Pea's
//! error strategies, the client) can branch on it and people can read it.

use std::fmt;

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

/// Why a call failed. The first six come from the executor itself (the
/// contract's `error-kind`; `capacity` from 0.2.0 on); the rest are the
/// host's verdict on a guest that trapped or misbehaved. After any of the host's kinds the instance is
/// discarded and the next call gets a fresh, re-initialised one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    BadConfig,
    ReadOnly,
    Io,
    Internal,
    /// The executor is full: taking the request would pass a limit it was
    /// given (its memory limit). Nothing of the request was applied; the
    /// instance stays. Contract 0.2.0's `capacity`.
    Capacity,
    /// The call ran past its time limit.
    Timeout,
    /// The guest asked for more memory than its limit and could not go on.
    MemoryLimit,
    /// The guest recursed past its stack.
    StackOverflow,
    /// The guest panicked (a Rust panic aborts the instance).
    Panic,
    /// Any other trap.
    Trap,
    /// The guest returned a malformed result (bad parent index, tags, dimensions).
    InvalidOutput,
    /// The host could not create or link the instance.
    Host,
    /// The call grew the workspace past its disk quota or file-count cap.
    DiskQuota,
    /// The call returned more documents or bytes than its limits allow.
    ResultTooLarge,
    /// No instance can take the call now: a replacement's `init` failed and
    /// the crash-loop backoff has not run out (`InitBackoff`). Answered at
    /// once, without calling the guest.
    Unavailable,
}

impl ErrorKind {
    /// The stable name used in logs, JSON and the wire protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::BadConfig => "bad-config",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
            ErrorKind::Capacity => "capacity",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::Panic => "panic",
            ErrorKind::Trap => "trap",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::Host => "host",
            ErrorKind::DiskQuota => "disk-quota",
            ErrorKind::ResultTooLarge => "result-too-large",
            ErrorKind::Unavailable => "unavailable",
        }
    }

    /// True when the instance was lost (a trap or a host failure) rather than
    /// the executor reporting an error itself or the host refusing its result
    /// (`disk-quota` found after the call, `result-too-large`: the instance
    /// stays; a `disk-quota` stop in the middle of a call loses it, and the
    /// next call gets a new one like after any trap).
    pub fn is_trap(self) -> bool {
        !matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::BadConfig
                | ErrorKind::ReadOnly
                | ErrorKind::Io
                | ErrorKind::Internal
                | ErrorKind::Capacity
                | ErrorKind::DiskQuota
                | ErrorKind::ResultTooLarge
                | ErrorKind::Unavailable
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
