//! The wire protocol between Peas, Heads, Tails, gateways and clients: version 1.
//!
//! A message is two ZeroMQ frames (after any ROUTER identity frames and an
//! optional empty delimiter frame): an [`Envelope`] and a body. The envelope is
//! small and read on every hop; the body ([`Body`], the documents) is read only
//! by a Pea that runs an executor on it, so Heads and Tails route without
//! touching documents. Both are a documented little-endian layout, specified
//! byte by byte in docs/protocol.md, whose test vectors `tests` below check.
//!
//! Decoding never panics and never trusts a length it has not checked against
//! the bytes actually present (property tests in `tests`).

pub mod body;
mod reader;
mod status;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use body::{Body, Relation, Score};
pub(crate) use reader::{Reader, put_bytes, put_opt_str, put_u32};
pub use status::{
    ErrorKind, UnknownKind, check_name, cut_reason, escape_where, fits_a_name, printable,
};

/// The two bytes every envelope starts with: `JW`.
pub const MAGIC: [u8; 2] = *b"JW";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Largest envelope a receiver accepts; anything bigger is malformed.
pub const MAX_ENVELOPE: usize = 1 << 20;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Documents on their way through a Flow; the body is a [`Body`].
    Data = 0,
    /// A control request (`STATUS`, `TERMINATE`, `IDLE`...); the command is the
    /// endpoint and the body is empty or a JSON object.
    Control = 1,
    /// The answer to a control request; the body is a JSON object.
    ControlReply = 2,
}

/// What downstream Peas do with a request whose status is an error. Set by the
/// `--on-error-strategy` of the Pea whose executor failed.
/// Ordered by severity: the most severe of a request's parts wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum AfterError {
    /// No error yet, or `IGNORE`: every Pea runs its executor as usual.
    #[default]
    Continue = 0,
    /// `SKIP_EXECUTOR`: later Peas do not run their executors but still record
    /// themselves on the route (outcome `skipped`) and count parts.
    SkipExecutor = 1,
    /// `SKIP_HANDLE`: later Peas forward the message as it is, without running
    /// their executor or adding to the route.
    SkipHandle = 2,
    /// `THROW_EARLY`: the request is over. The failing Pea sends the envelope with
    /// an empty body, and everything downstream forwards it at once (a Tail does
    /// not wait for the other parts).
    Abort = 3,
}

/// The outcome of a request so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Success,
    /// The first failure on the route: which executor, the kind of failure
    /// (`timeout`, `panic`, `bad-request`...; see docs/protocol.md) and why.
    Error {
        executor: String,
        kind: ErrorKind,
        message: String,
    },
}

/// What a Pea on the route did with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// The executor handled it.
    Handled = 0,
    /// The executor failed (see the status for the first failure).
    Failed = 1,
    /// An earlier failure made this Pea skip its executor.
    Skipped = 2,
    /// Routed without an executor (a Head, a Tail, a gateway).
    Routed = 3,
}

/// One Pea the request went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pea: String,
    /// Microseconds since the Unix epoch when the Pea received it.
    pub start_us: u64,
    /// Microseconds since the Unix epoch when the Pea sent it on.
    pub end_us: u64,
    pub outcome: Outcome,
}

/// The routing half of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub after_error: AfterError,
    /// Unique per request; replies and parts carry the request's id.
    pub request_id: String,
    /// The executor endpoint (`/index`), or the command of a control message.
    pub endpoint: String,
    /// The request's parameters: JSON object text, or empty for none.
    pub parameters: String,
    /// Milliseconds since the Unix epoch after which the request is not worth
    /// running; 0 for none.
    pub deadline_ms: u64,
    pub status: Status,
    /// Fan-out stack: each Head that splits the request pushes how many parts it
    /// sent; the matching Tail pops it once it has them all.
    pub parts: Vec<u32>,
    pub routes: Vec<Route>,
    /// The trace this request belongs to and the span to hang the next one
    /// under (src/trace.rs), when tracing is on; `None` costs nothing and
    /// encodes as nothing, so a message without one is byte for byte what
    /// this version always sent.
    pub trace: Option<TraceContext>,
}

/// A W3C trace context (`traceparent`): the request's trace, the span that
/// the next hop's span is a child of, and whether the trace is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub parent_id: [u8; 8],
    /// Bit 0 of the W3C trace flags: a trace that is not sampled travels
    /// on (so downstream does not start one of its own) but records nothing.
    pub sampled: bool,
}

/// The tag of the optional trace field after the routes.
const TRACE_TAG: u8 = 1;

impl Envelope {
    /// A data request with a fresh id, no deadline and no route.
    pub fn request(endpoint: impl Into<String>, parameters: impl Into<String>) -> Envelope {
        Envelope::new(
            Kind::Data,
            crate::document::new_id(),
            endpoint.into(),
            parameters.into(),
        )
    }

    /// A control request for `command` (`STATUS`, `TERMINATE`...).
    pub fn control(command: &str) -> Envelope {
        Envelope::new(
            Kind::Control,
            crate::document::new_id(),
            command.into(),
            String::new(),
        )
    }

    fn new(kind: Kind, request_id: String, endpoint: String, parameters: String) -> Envelope {
        Envelope {
            kind,
            after_error: AfterError::Continue,
            request_id,
            endpoint,
            parameters,
            deadline_ms: 0,
            status: Status::Success,
            parts: Vec::new(),
            routes: Vec::new(),
            trace: None,
        }
    }

    /// The reply to this control request.
    pub fn reply(&self, status: Status) -> Envelope {
        Envelope {
            status,
            ..Envelope::new(
                Kind::ControlReply,
                self.request_id.clone(),
                self.endpoint.clone(),
                String::new(),
            )
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self.status, Status::Error { .. })
    }

    /// Records the first failure; later ones only show on the route.
    pub fn fail(&mut self, executor: &str, kind: ErrorKind, message: &str) {
        if !self.is_error() {
            self.status = Status::Error {
                executor: executor.into(),
                kind,
                message: message.into(),
            };
        }
    }

    /// Whether the deadline, if any, has passed.
    pub fn expired(&self) -> bool {
        self.deadline_ms != 0 && now_us() / 1000 > self.deadline_ms
    }

    /// The envelope's bytes (docs/protocol.md, "Envelope").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.request_id.len()
                + self.endpoint.len()
                + self.parameters.len()
                + self.routes.len() * 40,
        );
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind as u8);
        out.push(self.after_error as u8);
        put_bytes(&mut out, self.request_id.as_bytes());
        put_bytes(&mut out, self.endpoint.as_bytes());
        put_bytes(&mut out, self.parameters.as_bytes());
        out.extend_from_slice(&self.deadline_ms.to_le_bytes());
        match &self.status {
            Status::Success => out.push(0),
            Status::Error {
                executor,
                kind,
                message,
            } => {
                out.push(1);
                put_bytes(&mut out, executor.as_bytes());
                put_bytes(&mut out, kind.as_str().as_bytes());
                put_bytes(&mut out, message.as_bytes());
            }
        }
        out.push(self.parts.len().min(255) as u8);
        for &p in self.parts.iter().take(255) {
            put_u32(&mut out, p);
        }
        put_u32(&mut out, self.routes.len() as u32);
        for route in &self.routes {
            put_bytes(&mut out, route.pea.as_bytes());
            out.extend_from_slice(&route.start_us.to_le_bytes());
            out.extend_from_slice(&route.end_us.to_le_bytes());
            out.push(route.outcome as u8);
        }
        if let Some(trace) = &self.trace {
            out.push(TRACE_TAG);
            out.extend_from_slice(&trace.trace_id);
            out.extend_from_slice(&trace.parent_id);
            out.push(u8::from(trace.sampled));
        }
        out
    }

    /// Parses an envelope. Never panics.
    ///
    /// # Errors
    /// [`WireError::Version`] for another protocol version (the only case where
    /// the rest is not read), otherwise [`WireError::Malformed`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(WireError::Malformed {
                frame: "envelope",
                offset: 0,
                message: format!(
                    "{} bytes is over the {MAX_ENVELOPE}-byte limit",
                    bytes.len()
                ),
            });
        }
        let mut r = Reader::new(bytes, "envelope");
        if r.take(2, "magic")? != MAGIC {
            return Err(r.error("does not start with the magic bytes `JW`".into()));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = match r.u8("kind")? {
            0 => Kind::Data,
            1 => Kind::Control,
            2 => Kind::ControlReply,
            other => return Err(r.error(format!("unknown kind {other}"))),
        };
        let after_error = match r.u8("after_error")? {
            0 => AfterError::Continue,
            1 => AfterError::SkipExecutor,
            2 => AfterError::SkipHandle,
            3 => AfterError::Abort,
            other => return Err(r.error(format!("unknown after_error {other}"))),
        };
        let request_id = r.name("request_id")?;
        let endpoint = r.name("endpoint")?;
        let parameters = r.str("parameters")?;
        let deadline_ms = r.u64("deadline")?;
        let status = match r.u8("status code")? {
            0 => Status::Success,
            1 => Status::Error {
                executor: r.name("status executor")?,
                kind: {
                    let kind = r.str("status kind")?;
                    kind.parse()
                        .map_err(|e: UnknownKind| r.error(e.to_string()))?
                },
                message: r.str("status message")?,
            },
            other => return Err(r.error(format!("unknown status code {other}"))),
        };
        let count = usize::from(r.u8("part count")?);
        let parts = r.u32s(count, "parts")?;
        let count = r.u32("route count")? as usize;
        // A route takes at least 4 + 8 + 8 + 1 bytes.
        r.need(count.saturating_mul(21), "routes")?;
        let mut routes = Vec::with_capacity(count);
        for _ in 0..count {
            let pea = r.name("route pea")?;
            let start_us = r.u64("route start")?;
            let end_us = r.u64("route end")?;
            let outcome = match r.u8("route outcome")? {
                0 => Outcome::Handled,
                1 => Outcome::Failed,
                2 => Outcome::Skipped,
                3 => Outcome::Routed,
                other => return Err(r.error(format!("unknown route outcome {other}"))),
            };
            routes.push(Route {
                pea,
                start_us,
                end_us,
                outcome,
            });
        }
        // Optional, and last: a message of a build without traces ends here.
        let trace = match r.remaining() {
            0 => None,
            extra => match r.u8("trace tag")? {
                TRACE_TAG => Some(r.trace()?),
                _ => return Err(r.error(format!("{extra} bytes left over after the last field"))),
            },
        };
        r.finish()?;
        Ok(Envelope {
            kind,
            after_error,
            request_id,
            endpoint,
            parameters,
            deadline_ms,
            status,
            parts,
            routes,
            trace,
        })
    }
}

/// A whole message: the envelope decoded, the body still bytes (decoded only by
/// whoever needs the documents).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub envelope: Envelope,
    pub body: Bytes,
}

impl Message {
    pub fn new(envelope: Envelope, body: Bytes) -> Message {
        Message { envelope, body }
    }

    /// A data message carrying `body`.
    pub fn data(envelope: Envelope, body: &Body) -> Message {
        let mut bytes = Vec::new();
        body.encode(&mut bytes);
        Message {
            envelope,
            body: bytes.into(),
        }
    }

    /// The two frames to send.
    pub fn frames(&self) -> [Bytes; 2] {
        [Bytes::from(self.envelope.encode()), self.body.clone()]
    }

    /// Reads a message from its frames (identity frames already removed). An
    /// empty leading frame (the REQ/DEALER delimiter) is skipped.
    ///
    /// # Errors
    /// The wrong number of frames, or an envelope that does not decode.
    pub fn from_frames(frames: &[Bytes]) -> Result<Message, WireError> {
        let frames = match frames.first() {
            Some(first) if first.is_empty() => &frames[1..],
            _ => frames,
        };
        match frames {
            [envelope, body] => Ok(Message {
                envelope: Envelope::decode(envelope)?,
                body: body.clone(),
            }),
            [envelope] => Ok(Message {
                envelope: Envelope::decode(envelope)?,
                body: Bytes::new(),
            }),
            _ => Err(WireError::Frames(frames.len())),
        }
    }

    /// The documents, decoded and checked. An empty body is no documents.
    ///
    /// # Errors
    /// A body that does not decode.
    pub fn decode_body(&self) -> Result<Body, WireError> {
        if self.body.is_empty() {
            Ok(Body::default())
        } else {
            Body::decode(&self.body)
        }
    }
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("protocol version {0} is not spoken here (this build speaks version {VERSION})")]
    Version(u8),
    #[error("a message has an envelope and a body, but this one has {0} frames")]
    Frames(usize),
    #[error("malformed {frame} at byte {offset}: {message}")]
    Malformed {
        frame: &'static str,
        offset: usize,
        message: String,
    },
    #[error("invalid {frame}: {message}")]
    Invalid {
        frame: &'static str,
        message: String,
    },
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Success => f.write_str("success"),
            Status::Error {
                executor,
                kind,
                message,
            } => write!(f, "executor `{executor}` failed ({kind}): {message}"),
        }
    }
}
