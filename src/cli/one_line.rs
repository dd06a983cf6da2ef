//! The log's writer: every event is one line of the log, whatever text it
//! carries. Much of what the log quotes comes from outside: a guest's
//! output and error messages, a peer's command or name, a client's ids. The
//! text format writes a message as it is and a `%` field's value unescaped,
//! so a line end in quoted text would let its author start a line of the log
//! that reads as the host's, and a terminal control rewrite one. Here, in
//! everything but the line end the formatter puts after each event, line
//! breaks are escaped (`\n` as `\\n`: also `\r`, VT, FF, NEL and the Unicode
//! line and paragraph separators), and when the log is not a terminal, every
//! control character but tabs ([`crate::wire::printable`]). On a terminal
//! the formatter colours with escape sequences of its own, so those pass
//! there. JSON lines escape all of it already and pass through unchanged.

use std::borrow::Cow;
use std::io::{self, Write};

/// Wraps the writer each event is written to.
pub(super) struct OneLine<W> {
    pub(super) to: W,
    /// The log is a terminal, coloured by the formatter.
    pub(super) terminal: bool,
}

/// What ends a line, or starts another, somewhere.
fn breaks_a_line(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

impl<W: Write> Write for OneLine<W> {
    /// `tracing-subscriber` formats an event whole, then writes it with one
    /// `write_all`; the one write below keeps it whole on the way out too
    /// (std's stderr holds its lock for it).
    fn write(&mut self, event: &[u8]) -> io::Result<usize> {
        let body = event.strip_suffix(b"\n").unwrap_or(event);
        // The formatter writes UTF-8 (a `String`); bytes that are not would
        // pass as they are when nothing else needs escaping.
        let text = String::from_utf8_lossy(body);
        let shown = if self.terminal {
            crate::wire::escape_where(&text, breaks_a_line)
        } else {
            crate::wire::printable(&text)
        };
        if let Cow::Borrowed(_) = shown {
            self.to.write_all(event)?;
        } else {
            let mut line = shown.into_owned().into_bytes();
            if body.len() < event.len() {
                line.push(b'\n');
            }
            self.to.write_all(&line)?;
        }
        Ok(event.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.to.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::LogSink;

    /// What the log shows of `play`'s events, as the host logs them in text
    /// format, to a file (`terminal` false) or a terminal.
    fn logged(terminal: bool, play: impl FnOnce()) -> String {
        let sink = LogSink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(terminal)
            .with_target(false)
            .with_writer(move || OneLine {
                to: writer.clone(),
                terminal,
            })
            .finish();
        tracing::subscriber::with_default(subscriber, play);
        sink.text()
    }

    /// Text quoted in a message or a `%` field, with line ends and terminal
    /// controls in it, stays in its event's one line.
    #[test]
    fn quoted_line_ends_do_not_start_lines_of_the_log() {
        let forged = "2026-12-07T00:00:00.000000Z ERROR pod: forged";
        let play = || {
            let reason = format!("bad\n{forged}\r{forged}\u{2028}{forged}");
            tracing::warn!(pea = "p", "request failed: {reason}");
            tracing::warn!(pea = %format!("x\u{1b}[2K\u{0b}{forged}"), "ignored");
            tracing::info!("plain");
        };
        let text = logged(false, play);
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
        assert!(lines[0].contains(r"forged\u{2028}2026"), "{text}");
        assert!(lines[1].contains(r"pea=x\u{1b}[2K\u{b}2026"), "{text}");
        assert!(text.ends_with("plain\n"));
        // On a terminal the formatter's colours pass, line breaks do not.
        let text = logged(true, play);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains('\u{1b}') && text.contains(r"\u{2028}"),
            "{text}"
        );
        assert!(!text.contains('\u{b}') && !text.contains('\r'), "{text}");
    }
}
