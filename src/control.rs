//! The control plane (docs/protocol.md, "Control requests"): the commands a
//! Pea, a Pod and the gateway take on their control sockets, reading one
//! request off such a socket, the frames of its reply, and the one client that
//! sends a command and reads the answer.
//!
//! Each server keeps its own answers (a Pea dumps its executor, a Pod asks
//! its Peas, the gateway only reports); what they share is here, so an
//! unknown command, a malformed message or one of another protocol version
//! gets the same reply from all three.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::transport::{Link, SocketSpec};
use crate::wire::{Envelope, ErrorKind, Kind, Message, Status, WireError};

mod idle;
pub(crate) use idle::{MAX_CREDIT, Says};

/// A command on a control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Health and counters, as JSON.
    Status,
    /// Stop: answer, then shut down.
    Terminate,
    /// Write the executor's state to its workspace now.
    Dump,
    /// Dump, then replace the instance with one made from the workspace.
    Reload,
    /// Clear a Pea's `state_lost`, so it takes writes again (docs/stateful.md).
    AcceptLoss,
}

impl Command {
    /// Every command, in the order `--help` lists them.
    pub const ALL: [Command; 5] = [
        Command::Status,
        Command::Terminate,
        Command::Dump,
        Command::Reload,
        Command::AcceptLoss,
    ];

    /// The name on the wire (the envelope's endpoint).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Status => "STATUS",
            Command::Terminate => "TERMINATE",
            Command::Dump => "DUMP",
            Command::Reload => "RELOAD",
            Command::AcceptLoss => "ACCEPT-LOSS",
        }
    }

    /// The command named `name` (as sent: upper case).
    pub fn parse(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message read off a control socket (a ROUTER).
pub enum Incoming {
    /// Only an identity: the client went away. Nothing to answer.
    Gone,
    /// A command this server takes. `prefix`: the identity (and a REQ peer's
    /// empty delimiter), for the reply.
    Command {
        prefix: Vec<Bytes>,
        request: Envelope,
        command: Command,
    },
    /// Anything else: answer it with [`Refusal::answer`].
    Refused(Refusal),
}

/// A control message a server does not take, and why.
pub struct Refusal {
    /// The identity (and a REQ peer's empty delimiter), for the reply.
    pub prefix: Vec<Bytes>,
    /// What the reply answers (an empty request id when it did not decode).
    pub reply_to: Envelope,
    pub kind: ErrorKind,
    pub message: String,
}

impl Refusal {
    /// The reply's frames: an error status from `server` (a Pea's, Pod's or
    /// the gateway's name) with the kind and reason, and an empty body.
    pub fn answer(mut self, server: &str) -> Vec<Bytes> {
        // The reply echoes the request's endpoint: not a client's megabyte.
        if self.reply_to.endpoint.len() > SHOWN {
            let end = self.reply_to.endpoint.floor_char_boundary(SHOWN);
            self.reply_to.endpoint.truncate(end);
        }
        let status = Status::Error {
            executor: server.to_string(),
            kind: self.kind,
            message: self.message,
        };
        reply(self.prefix, &self.reply_to, status, &serde_json::json!({}))
    }
}

/// How much of a name a client sent a refusal quotes.
const SHOWN: usize = 64;

/// A client's name for a message: escaped, and its first [`SHOWN`]
/// characters only, with its length when it is longer.
fn shown(name: &str) -> String {
    let mut quoted: String = name.chars().take(SHOWN).collect::<String>();
    let cut = quoted.len() < name.len();
    quoted = quoted.escape_debug().to_string();
    if cut {
        quoted.push_str(&format!("… ({} bytes)", name.len()));
    }
    quoted
}

/// Reads one message of a control socket whose server takes `takes`: a data
/// message, a malformed one, one of another protocol version and a command
/// outside `takes` become [`Incoming::Refused`] with the reason.
pub fn read(mut frames: Vec<Bytes>, takes: &[Command]) -> Incoming {
    if frames.len() < 2 {
        return Incoming::Gone;
    }
    let split = if frames[1].is_empty() { 2 } else { 1 };
    let rest = frames.split_off(split.min(frames.len()));
    let prefix = frames;
    let request = match Message::from_frames(&rest) {
        Ok(message) => message.envelope,
        Err(e) => {
            let kind = if matches!(e, WireError::Version(_)) {
                ErrorKind::Version
            } else {
                ErrorKind::Malformed
            };
            let mut reply_to = Envelope::control("");
            reply_to.request_id.clear();
            return Incoming::Refused(Refusal {
                prefix,
                reply_to,
                kind,
                message: e.to_string(),
            });
        }
    };
    if request.kind != Kind::Control {
        return Incoming::Refused(Refusal {
            prefix,
            reply_to: request,
            kind: ErrorKind::Unsupported,
            message: "the control socket takes control requests only".into(),
        });
    }
    let command = Command::parse(&request.endpoint);
    match command.filter(|c| takes.contains(c)) {
        Some(command) => Incoming::Command {
            prefix,
            request,
            command,
        },
        None => {
            let other = request.endpoint.as_str();
            let names: Vec<&str> = takes.iter().map(|c| c.as_str()).collect();
            let message = match (other, command) {
                ("IDLE" | "CANCEL", _) => {
                    format!("{other} is sent on a data link to a ROUTER, not to a control socket")
                }
                (_, Some(_)) => format!(
                    "this socket does not take {other}: it takes {}",
                    names.join(", ")
                ),
                (_, None) => format!(
                    "unknown command `{}`: this socket takes {}",
                    shown(other),
                    names.join(", ")
                ),
            };
            Incoming::Refused(Refusal {
                prefix,
                reply_to: request,
                kind: ErrorKind::Unsupported,
                message,
            })
        }
    }
}

/// The frames answering a control request.
pub fn reply(prefix: Vec<Bytes>, request: &Envelope, status: Status, body: &Value) -> Vec<Bytes> {
    let mut frames = prefix;
    frames.push(request.reply(status).encode().into());
    frames.push(body.to_string().into());
    frames
}

/// The frames of a control message `command` with a JSON body: a command for
/// a control socket, or `IDLE` / `CANCEL` on a data link.
pub fn frames(command: &str, body: Value) -> Vec<Bytes> {
    vec![
        Envelope::control(command).encode().into(),
        body.to_string().into(),
    ]
}

/// Sends `command` to the control socket at `address` and returns the
/// answer's JSON body.
///
/// # Errors
/// The socket cannot be opened, it closes first, the reply is malformed, or
/// it carries an error status (named in the error).
pub async fn ask(address: &str, command: Command) -> anyhow::Result<Value> {
    ask_named(address, command.as_str()).await
}

/// [`ask`], the answer read as `T`: a Pea's STATUS as
/// [`crate::pea::PeaStatus`], so a field a reader needs is there and typed.
///
/// # Errors
/// As [`ask`], and an answer that is not a `T` (what is missing or wrong).
pub async fn ask_as<T: serde::de::DeserializeOwned>(
    address: &str,
    command: Command,
) -> anyhow::Result<T> {
    let body = ask_body(address, command.as_str()).await?;
    serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("its {command} answer is not one this version reads: {e}"))
}

/// [`ask_as`], waiting at most `wait` for the answer.
///
/// # Errors
/// As [`ask_as`], and no answer within `wait` (named with the command).
pub async fn ask_within<T: serde::de::DeserializeOwned>(
    address: &str,
    command: Command,
    wait: Duration,
) -> anyhow::Result<T> {
    tokio::time::timeout(wait, ask_as(address, command))
        .await
        .map_err(|_| anyhow::anyhow!("no answer to {command} within {wait:?}"))?
}

/// [`ask`] with any name, as a client of another build might send it: a
/// server answers a name it does not take with `unsupported` (the tests and
/// probes of that answer use this).
///
/// # Errors
/// As [`ask`].
pub async fn ask_named(address: &str, command: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&ask_body(address, command).await?)?)
}

/// The body of the answer to `command`, unread.
async fn ask_body(address: &str, command: &str) -> anyhow::Result<Bytes> {
    let mut link = Link::open(SocketSpec::DEALER_CONNECT, address, "control client").await?;
    link.send(frames(command, serde_json::json!({})))
        .await
        .map_err(anyhow::Error::msg)?;
    let answer = link
        .recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("the socket closed"));
    link.close(Duration::from_millis(100)).await;
    let reply = Message::from_frames(&answer?)?;
    if let Status::Error { kind, message, .. } = &reply.envelope.status {
        anyhow::bail!("{command} failed ({kind}): {message}");
    }
    Ok(reply.body)
}

#[cfg(test)]
mod tests {
    use super::{Command, Incoming, Refusal, frames, read};
    use crate::wire::ErrorKind;
    use bytes::Bytes;

    /// A Pea's name in its IDLE is one only when it could name something.
    #[test]
    fn an_idle_names_no_pea_with_a_control_character() {
        use super::Says;
        assert_eq!(Says::read(br#"{"pea": "pod/0"}"#).pea_name(), Some("pod/0"));
        for hostile in [
            r#"{"pea": "a\u001b[2Kb"}"#,
            r#"{"pea": "a\nb"}"#,
            r#"{"pea": "a\u202eb"}"#,
        ] {
            assert_eq!(Says::read(hostile.as_bytes()).pea_name(), None, "{hostile}");
        }
    }

    fn from(identity: &str, message: Vec<Bytes>) -> Vec<Bytes> {
        let mut all = vec![Bytes::from(identity.to_string())];
        all.extend(message);
        all
    }

    #[test]
    fn a_command_is_taken_only_where_it_is_served() {
        let takes = [Command::Status, Command::Terminate];
        let status = read(from("a", frames("STATUS", serde_json::json!({}))), &takes);
        assert!(matches!(
            status,
            Incoming::Command { command: Command::Status, ref prefix, .. } if prefix.len() == 1
        ));
        let unsupported = ErrorKind::Unsupported;
        for (name, kind, says) in [
            (
                "DUMP",
                unsupported,
                "this socket does not take DUMP: it takes STATUS, TERMINATE",
            ),
            ("IDLE", unsupported, "IDLE is sent on a data link"),
            ("status", unsupported, "unknown command `status`"),
            (&"x".repeat(100_000), unsupported, "unknown command `xxx"),
            // No name on the wire holds a control character (wire::fits_a_name).
            (
                &"\u{1}".repeat(100_000),
                ErrorKind::Malformed,
                "endpoint: a character no name may hold",
            ),
        ] {
            match read(from("a", frames(name, serde_json::json!({}))), &takes) {
                Incoming::Refused(refusal) => {
                    assert_eq!(refusal.kind, kind);
                    assert!(refusal.message.contains(says), "{}", refusal.message);
                    // A hostile name is quoted short, and not echoed whole.
                    assert!(refusal.message.len() < 600, "{}", refusal.message.len());
                    let answer = refusal.answer("pea");
                    assert!(answer.iter().map(Bytes::len).sum::<usize>() < 2000);
                }
                _ => panic!("{name} was taken"),
            }
        }
    }

    #[test]
    fn what_does_not_decode_is_refused_with_its_reason() {
        let takes = Command::ALL;
        assert!(matches!(
            read(vec![Bytes::from("a")], &takes),
            Incoming::Gone
        ));
        let garbage = from("a", vec![Bytes::from_static(b"\x01junk"), Bytes::new()]);
        assert!(matches!(
            read(garbage, &takes),
            Incoming::Refused(Refusal {
                kind: ErrorKind::Malformed,
                ..
            })
        ));
        let mut data = crate::wire::Envelope::request("/index", "");
        data.request_id = "r".into();
        let message = vec![Bytes::from(data.encode()), Bytes::from_static(b"")];
        assert!(matches!(
            read(from("a", message), &takes),
            Incoming::Refused(Refusal { kind: ErrorKind::Unsupported, ref reply_to, .. }) if reply_to.request_id == "r"
        ));
        for command in Command::ALL {
            assert_eq!(Command::parse(command.as_str()), Some(command));
        }
    }
}
