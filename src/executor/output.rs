//! Guest output: stdout, stderr and the `log` import, into the host's tracing
//! output, tagged with the executor's name.
//!
//! Output is untrusted and unbounded, so it is bounded here:
//! - a line longer than [`MAX_LINE_BYTES`] is cut (the rest of it is dropped);
//! - at most `--log-rate` lines per second per instance (default
//!   [`DEFAULT_LINES_PER_SECOND`]) reach the log; the rest are counted and
//!   reported as one "suppressed" line when the next second starts;
//! - the guest is never blocked or failed for writing too much: writes succeed and
//!   excess bytes are discarded, so memory stays bounded whatever the guest prints.
//!
//! The last few stderr lines are kept so that a trap (a Rust panic prints its
//! message to stderr before it aborts) can be explained in the error the caller sees.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::bindings::v2::LogLevel;
use crate::wire::printable;

/// Longest line kept from guest output; longer lines are cut.
pub const MAX_LINE_BYTES: usize = 4096;
/// Default lines per second per instance that reach the host's log (stdout,
/// stderr and the log import together; `--log-rate`). A flood costs the guest
/// its own log lines, nothing else.
pub const DEFAULT_LINES_PER_SECOND: u32 = 200;
/// Stderr lines remembered to explain a trap.
const RECENT_STDERR_LINES: usize = 8;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Shared by the streams and the log import of one instance.
#[derive(Clone)]
pub struct GuestOutput {
    executor: Arc<str>,
    /// Lines per second admitted into the host's log.
    rate: u32,
    state: Arc<Mutex<OutputState>>,
}

struct OutputState {
    partial: [Vec<u8>; 2],
    window_start: Instant,
    lines_in_window: u32,
    suppressed: u64,
    recent_stderr: VecDeque<String>,
}

impl GuestOutput {
    pub fn new(executor: Arc<str>, rate: u32) -> Self {
        GuestOutput {
            executor,
            rate,
            state: Arc::new(Mutex::new(OutputState {
                partial: [Vec::new(), Vec::new()],
                window_start: Instant::now(),
                lines_in_window: 0,
                suppressed: 0,
                recent_stderr: VecDeque::new(),
            })),
        }
    }

    /// A WASI stdout or stderr for the guest that writes into this output.
    pub fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stream,
        }
    }

    /// The last stderr lines, oldest first, including an unterminated last line.
    pub fn recent_stderr(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut lines: Vec<String> = state.recent_stderr.iter().cloned().collect();
        let partial = &state.partial[1];
        if !partial.is_empty() {
            lines.push(String::from_utf8_lossy(partial).into_owned());
        }
        lines
    }

    /// Forgets remembered stderr lines (at the start of each call, so an error
    /// is explained by what that call printed).
    pub fn clear_recent(&self) {
        let mut state = self.state.lock().unwrap();
        state.recent_stderr.clear();
        state.partial[1].clear();
    }

    /// A structured line from the `log` import.
    pub fn log(&self, level: LogLevel, message: &str, fields: &[(&str, &str)]) {
        if !self.state.lock().unwrap().admit(self.rate) {
            return;
        }
        let message = printable(cut(message));
        let fields = join_fields(fields);
        let executor = &*self.executor;
        match level {
            LogLevel::Trace => tracing::trace!(target: "guest", executor, fields, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "guest", executor, fields, "{message}"),
            LogLevel::Info => tracing::info!(target: "guest", executor, fields, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "guest", executor, fields, "{message}"),
            LogLevel::Error => tracing::error!(target: "guest", executor, fields, "{message}"),
        }
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let index = stream as usize;
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(newline);
            append_bounded(&mut state.partial[index], line);
            let line = String::from_utf8_lossy(&state.partial[index]).into_owned();
            state.partial[index].clear();
            self.emit(&mut state, stream, line);
            bytes = &rest[1..];
        }
        append_bounded(&mut state.partial[index], bytes);
    }

    fn emit(&self, state: &mut OutputState, stream: Stream, line: String) {
        let line = match printable(&line) {
            std::borrow::Cow::Borrowed(_) => line,
            std::borrow::Cow::Owned(escaped) => escaped,
        };
        if stream == Stream::Stderr {
            if state.recent_stderr.len() == RECENT_STDERR_LINES {
                state.recent_stderr.pop_front();
            }
            state.recent_stderr.push_back(line.clone());
        }
        if !state.admit(self.rate) {
            return;
        }
        let executor = &*self.executor;
        match stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", executor, stream = "stdout", "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", executor, stream = "stderr", "{line}")
            }
        }
    }
}

impl OutputState {
    /// Counts one line against the rate limit; `false` when it must be dropped.
    fn admit(&mut self, rate: u32) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start).as_secs() >= 1 {
            if self.suppressed > 0 {
                tracing::warn!(target: "guest", suppressed = self.suppressed, "guest output over {rate} lines/s: lines dropped");
            }
            self.window_start = now;
            self.lines_in_window = 0;
            self.suppressed = 0;
        }
        if self.lines_in_window >= rate {
            self.suppressed += 1;
            return false;
        }
        self.lines_in_window += 1;
        true
    }
}

fn append_bounded(buffer: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_LINE_BYTES.saturating_sub(buffer.len());
    buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `k=v k=v ...`, at most [`MAX_LINE_BYTES`] in all: fields are untrusted
/// like the message, and are cut like it (whatever their number or sizes,
/// nothing longer is ever built).
fn join_fields(fields: &[(&str, &str)]) -> String {
    let mut joined = String::new();
    for (i, (key, value)) in fields.iter().enumerate() {
        for part in [if i == 0 { "" } else { " " }, key, "=", value] {
            let room = MAX_LINE_BYTES - joined.len();
            if part.len() > room {
                joined.push_str(&part[..part.floor_char_boundary(room)]);
                return joined;
            }
            joined.push_str(part);
        }
    }
    joined
}

fn cut(message: &str) -> &str {
    &message[..message.floor_char_boundary(MAX_LINE_BYTES)]
}

/// One of the guest's output streams.
#[derive(Clone)]
pub struct GuestStream {
    output: GuestOutput,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_remembered() {
        let out = GuestOutput::new("t".into(), DEFAULT_LINES_PER_SECOND);
        let mut err = out.stream(Stream::Stderr);
        err.write(Bytes::from_static(b"first\nsec")).unwrap();
        err.write(Bytes::from_static(b"ond\nthird")).unwrap();
        assert_eq!(out.recent_stderr(), vec!["first", "second", "third"]);
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        out.clear_recent();
        err.write(Bytes::from(long)).unwrap();
        err.write(Bytes::from_static(b"\n")).unwrap();
        assert_eq!(out.recent_stderr()[0].len(), MAX_LINE_BYTES);
    }

    #[test]
    fn log_fields_are_cut_like_messages() {
        let big = "é".repeat(MAX_LINE_BYTES);
        let fields: Vec<(&str, &str)> = (0..1000).map(|_| ("key", big.as_str())).collect();
        let joined = join_fields(&fields);
        assert!(
            joined.len() <= MAX_LINE_BYTES && joined.len() > MAX_LINE_BYTES - 4,
            "{}",
            joined.len()
        );
        assert!(joined.starts_with("key=éé"));
        assert_eq!(join_fields(&[("a", "1"), ("b", "2")]), "a=1 b=2");
    }

    /// What the host's log (text format, as a Pea writes it) shows of
    /// `play`'s guest output: its lines.
    fn logged(play: impl FnOnce(&GuestOutput)) -> Vec<String> {
        let sink = crate::test_support::LogSink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let out = GuestOutput::new("t".into(), DEFAULT_LINES_PER_SECOND);
        tracing::subscriber::with_default(subscriber, || play(&out));
        sink.text().lines().map(str::to_owned).collect()
    }

    /// A guest's line ends and terminal controls are escaped, so none of
    /// its text starts a line of the host's log: not through the `log`
    /// import, not through stdout or stderr.
    #[test]
    fn a_guest_cannot_start_a_line_of_the_hosts_log() {
        let forged = "2026-12-07T00:00:00.000000Z ERROR pod: forged";
        let lines = logged(|out| {
            out.log(LogLevel::Info, &format!("ok\n{forged}\r{forged}"), &[]);
            let mut stdout = out.stream(Stream::Stdout);
            stdout
                .write(Bytes::from(format!("a\r{forged}\u{1b}[2K\tb\n")))
                .unwrap();
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines.iter().all(|l| !l.starts_with("2026-12-07T00")),
            "{lines:#?}"
        );
        assert!(lines[0].contains(r"ok\n2026-12-07T00:00:00.000000Z ERROR pod: forged\r"));
        assert!(lines[1].contains(r"a\r2026") && lines[1].contains("\\u{1b}[2K\tb"));
        assert_eq!(printable("plain\ttext"), "plain\ttext");
    }

    #[test]
    fn floods_are_rate_limited() {
        let out = GuestOutput::new("t".into(), DEFAULT_LINES_PER_SECOND);
        let mut stdout = out.stream(Stream::Stdout);
        for _ in 0..(DEFAULT_LINES_PER_SECOND * 3) {
            stdout.write(Bytes::from_static(b"spam\n")).unwrap();
        }
        let state = out.state.lock().unwrap();
        assert_eq!(state.lines_in_window, DEFAULT_LINES_PER_SECOND);
        assert!(state.suppressed >= u64::from(DEFAULT_LINES_PER_SECOND) * 2 - 1);
    }
}
