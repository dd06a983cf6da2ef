//! The log's writer: every event is one line of the log, whatever text it
//! carries. Much of what the log quotes comes from outside: a guest's
//! output and error messages, a peer's command, a tenant's names. The text
//! format writes a message as it is (it escapes terminal controls, not line
//! ends), so a `\n` or `\r` in quoted text would let its author start a line
//! of the log that reads as the host's. Here both are escaped (`\\n`, `\\r`)
//! in everything but the line end the formatter puts after each event. JSON
//! lines escape them already and pass through unchanged.

use std::io::{self, Write};

/// Wraps the writer each event is written to.
pub(super) struct OneLine<W>(pub(super) W);

impl<W: Write> Write for OneLine<W> {
    /// `tracing-subscriber` formats an event whole, then writes it with one
    /// `write_all`; the one write below keeps it whole on the way out too
    /// (std's stderr holds its lock for it).
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        let text = event.strip_suffix(b"\n").unwrap_or(event);
        if !text.iter().any(|&b| b == b'\n' || b == b'\r') {
            self.0.write_all(event)?;
            return Ok(event.len());
        }
        let mut line = Vec::with_capacity(event.len() + 16);
        for &b in text {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(b),
            }
        }
        if text.len() < event.len() {
            line.push(b'\n');
        }
        self.0.write_all(&line)?;
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Text quoted in a message or a field, with line ends in it, stays in
    /// its event's one line, in the text format the host logs in.
    #[test]
    fn quoted_line_ends_do_not_start_lines_of_the_log() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_writer(move || OneLine(writer.clone()))
            .finish();
        let forged = "2026-12-07T00:00:00.000000Z ERROR pod: forged";
        tracing::subscriber::with_default(subscriber, || {
            let reason = format!("bad\n{forged}\r{forged}");
            tracing::warn!(pea = "p", "request failed: {reason}");
            tracing::warn!(pea = %reason, "ignored");
            tracing::info!("plain");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines.iter().all(|l| !l.starts_with("2026-12-07T00")),
            "{text}"
        );
        assert!(
            lines[0].contains(
                r"request failed: bad\n2026-12-07T00:00:00.000000Z ERROR pod: forged\r2026"
            )
        );
        assert!(lines[1].contains(r"pea=bad\n2026"));
        assert!(text.ends_with("plain\n"));
    }
}
