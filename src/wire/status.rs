//! The kinds of failure a status names (docs/protocol.md, "Status kinds"):
//! one closed list from the executor to the client, so every layer branches on
//! a variant and only the wire and the client-facing answers spell it.

use std::fmt;
use std::str::FromStr;

/// Why a request (or a control request) failed.
///
/// The first six come from the executor itself (the contract's `error-kind`;
/// `capacity` from 0.2.0 on); then the host's verdict on a guest that trapped
/// or misbehaved (after any of those the instance is discarded and the next
/// call gets a fresh, re-initialised one, see [`ErrorKind::is_trap`]); then the
/// Pea's durable state; then the protocol's own; last the gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The call ran past its time limit (or a Pod's tail gave up waiting).
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
    /// The host could not create or link the instance, or could not carry out
    /// a request it took (a Pea's thread ended, a Pod's Pea did not answer).
    Host,
    /// The call grew the workspace past its disk quota or file-count cap.
    DiskQuota,
    /// The call returned more documents or bytes than its limits allow.
    ResultTooLarge,
    /// No instance can take the call now: a replacement's `init` failed and
    /// the crash-loop backoff has not run out; or, from a Pod's head or tail or
    /// the gateway, no Pea or Pod is there to take it.
    Unavailable,
    /// Durable mode: the request was handled but its dump failed, so it is not
    /// acknowledged; interval mode: a write refused while dumps fail.
    Dump,
    /// A write refused after acknowledged writes were lost with a discarded
    /// instance, until `ACCEPT-LOSS` or `RELOAD` (docs/stateful.md).
    StateLost,
    /// A body (or a control message) that does not decode.
    Malformed,
    /// The deadline passed before the executor could run.
    Deadline,
    /// An unknown control command, or a message of the wrong kind for the socket.
    Unsupported,
    /// A control request of another protocol version.
    Version,
    /// The gateway's: no route takes the request's path.
    NotFound,
    /// The gateway's: a fixed route asked with another method.
    MethodNotAllowed,
}

impl ErrorKind {
    /// Every kind, in the order of docs/protocol.md.
    pub const ALL: [ErrorKind; 24] = [
        ErrorKind::BadRequest,
        ErrorKind::BadConfig,
        ErrorKind::ReadOnly,
        ErrorKind::Io,
        ErrorKind::Internal,
        ErrorKind::Capacity,
        ErrorKind::Timeout,
        ErrorKind::MemoryLimit,
        ErrorKind::StackOverflow,
        ErrorKind::Panic,
        ErrorKind::Trap,
        ErrorKind::InvalidOutput,
        ErrorKind::Host,
        ErrorKind::DiskQuota,
        ErrorKind::ResultTooLarge,
        ErrorKind::Unavailable,
        ErrorKind::Dump,
        ErrorKind::StateLost,
        ErrorKind::Malformed,
        ErrorKind::Deadline,
        ErrorKind::Unsupported,
        ErrorKind::Version,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
    ];

    /// The stable name used in logs, JSON, the wire protocol and the answers
    /// to Jina's client.
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
            ErrorKind::Dump => "dump",
            ErrorKind::StateLost => "state-lost",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Version => "version",
            ErrorKind::NotFound => "not-found",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
        }
    }

    /// True when the instance was lost (a trap or a host failure) rather than
    /// the executor reporting an error itself, the host refusing its result
    /// (`disk-quota` found after the call, `result-too-large`: the instance
    /// stays; a `disk-quota` stop in the middle of a call loses it, and the
    /// next call gets a new one like after any trap) or the request being
    /// refused before the executor saw it.
    pub fn is_trap(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::MemoryLimit
                | ErrorKind::StackOverflow
                | ErrorKind::Panic
                | ErrorKind::Trap
                | ErrorKind::InvalidOutput
                | ErrorKind::Host
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status kind outside the list: the message does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown status kind `{}`", self.0.escape_debug())
    }
}

impl FromStr for ErrorKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<ErrorKind, UnknownKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `text` cut to at most `max` bytes at a character boundary, saying how
/// many bytes were cut: how a reason someone else wrote (a guest, a child
/// process) goes into an answer.
pub fn cut_reason(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let end = text.floor_char_boundary(max);
    format!("{}… ({} more bytes cut)", &text[..end], text.len() - end).into()
}

/// Whether `c` may be in what names something on the wire (a request id,
/// an endpoint, a Pea in a route or a status): not a control character, a
/// Unicode line or paragraph separator, nor a bidirectional-text control.
/// Names go into logs, listings and answers as they are: a line end would
/// start a line of its own, a terminal control rewrite one, and a bidi
/// control make one read as something else (U+202E turns `/ind\u{202e}xe`
/// into what reads as `/index`). The gateway refuses an endpoint with one
/// before it is sent, and a Pea a message that holds one.
pub fn fits_a_name(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        ))
}

/// Refuses `name` (what `what` says it is) when it holds a character that
/// does not [`fits_a_name`]: where names are given (a Pea's `--name`, a
/// client's `--endpoint`), so that what the host makes, its own receivers
/// take.
///
/// # Errors
/// The name, the character and why.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    match name.chars().find(|&c| !fits_a_name(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{what} {name:?}: {} is a character no name may hold (a control character, a line separator or a bidirectional-text control)",
            c.escape_unicode()
        )),
    }
}

/// `text` with its control characters but tabs escaped (`\r` as `\\r`,
/// ESC as `\\u{1b}`), and the Unicode line and paragraph separators too:
/// how text someone else wrote (a guest's output, an error it returned, a
/// peer's name) goes into one line of the host's log or of what a command
/// prints. A line end in it would let its author start a line that reads as
/// the host's; a terminal's controls would let it rewrite one.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_where(text, |c| {
        (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}')
    })
}

/// `text` with the characters `escaped` picks escaped as Rust writes them
/// (`\\n`, `\\u{1b}`); borrowed when there are none.
pub fn escape_where(text: &str, escaped: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(&escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn printable_escapes_what_could_start_or_rewrite_a_line() {
        use super::printable;
        assert!(matches!(
            printable("plain\ttext é"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\nb\rc\u{1b}[2Kd\u{85}e\u{2028}f\u{7f}"),
            r"a\nb\rc\u{1b}[2Kd\u{85}e\u{2028}f\u{7f}"
        );
    }

    #[test]
    fn every_kind_reads_back_from_its_name_and_nothing_else_does() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
        let err = "Timeout".parse::<ErrorKind>().unwrap_err();
        assert_eq!(err.to_string(), "unknown status kind `Timeout`");
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }
}
