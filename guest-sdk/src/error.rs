//! The error an executor returns: a [`ErrorKind`] the host branches on and a
//! message people read. It crosses the boundary as the WIT `error` record.

use std::fmt;

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed. Mirrors the WIT `error-kind` one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request or its documents are not what the executor accepts.
    BadRequest,
    /// The `with:` configuration is invalid (from `init`).
    BadConfig,
    /// A write was asked of an executor whose workspace is read-only.
    ReadOnly,
    /// Reading or writing the workspace failed.
    Io,
    /// Anything else: a bug or an unexpected state inside the executor.
    Internal,
    /// The executor is full: taking the request would pass a limit it was
    /// given (its memory limit). Refuse before applying any of the request.
    Capacity,
}

impl ErrorKind {
    /// The WIT name of the kind (`bad-request`, `read-only`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::BadConfig => "bad-config",
            ErrorKind::ReadOnly => "read-only",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
            ErrorKind::Capacity => "capacity",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed `init`, `handle` or `dump`.
///
/// Put the offending value in the message (`doc "q1": embedding has 3 dims, the
/// index has 128`): the host shows it as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What callers branch on.
    pub kind: ErrorKind,
    /// What people read.
    pub message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The request or its documents are invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// The `with:` configuration is invalid.
    pub fn bad_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadConfig, message)
    }

    /// A write was refused because the workspace is read-only.
    pub fn read_only(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ReadOnly, message)
    }

    /// Reading or writing the workspace failed.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// A bug or an unexpected state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The executor is full: the request would pass a limit it was given.
    /// Name the limit and what would pass it (`2 GiB memory limit: 300000
    /// documents of 512 dims would need 2.3 GiB`); apply none of the request.
    pub fn capacity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Capacity, message)
    }

    /// Prefix the message with context: `"loading snapshot: " + message`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// Always [`ErrorKind::Io`]. A refused write (read-only filesystem, permission
/// denied) says so in the message; the [`state`](crate::state) helpers, which know
/// they were writing, report those as [`ErrorKind::ReadOnly`] instead.
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        let message = match err.kind() {
            Io::ReadOnlyFilesystem => format!("{err} (the workspace is mounted read-only)"),
            Io::PermissionDenied => format!("{err} (the sandbox did not grant this access)"),
            _ => err.to_string(),
        };
        Error::io(message)
    }
}

/// Always [`ErrorKind::BadRequest`]: JSON comes from requests.
impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::bad_request(format!("invalid JSON: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_kind_and_message() {
        let err = Error::bad_request("doc 3 has no embedding");
        assert_eq!(err.to_string(), "bad-request: doc 3 has no embedding");
    }

    #[test]
    fn io_errors_stay_io_with_a_clear_message() {
        let err: Error = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem).into();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.contains("read-only"), "{}", err.message);
    }
}
