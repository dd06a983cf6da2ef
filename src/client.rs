//! A client that talks to a Pea (or, later, a Pod) directly: requests into its
//! input socket, replies from its output socket.
//!
//! The client is the entry of the credit scheme (docs/protocol.md, "Flow
//! control"): it keeps at most `window` requests outstanding, so no queue
//! between it and the Pea's output holds more than that.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;

use crate::transport::{Link, SocketSpec};
use crate::wire::{Kind, Message, now_us};

/// Where a client sends and receives.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Pea's input address, and how the client's socket reaches it.
    pub input: String,
    pub socket_in: SocketSpec,
    /// The Pea's output address.
    pub output: String,
    pub socket_out: SocketSpec,
}

impl Target {
    /// A Pea with the default sockets (PULL_BIND in, PUSH_BIND out).
    pub fn pea(input: &str, output: &str) -> Target {
        Target {
            input: input.to_string(),
            socket_in: SocketSpec::PUSH_CONNECT,
            output: output.to_string(),
            socket_out: SocketSpec::PULL_CONNECT,
        }
    }
}

pub struct Client {
    input: Link,
    output: Link,
    /// Requests in flight at most.
    pub window: usize,
    /// How long to wait for any reply before giving up.
    pub timeout: Duration,
}

impl Client {
    /// Opens the two sockets (connecting happens in the background).
    ///
    /// # Errors
    /// A socket that cannot be opened.
    pub async fn open(target: &Target) -> anyhow::Result<Client> {
        let input = Link::open(target.socket_in, &target.input, "client to input").await?;
        let output = Link::open(target.socket_out, &target.output, "client from output").await?;
        Ok(Client {
            input,
            output,
            window: 8,
            timeout: Duration::from_secs(60),
        })
    }

    /// Sends one message and waits for the reply with its request id.
    ///
    /// # Errors
    /// No reply within the timeout.
    pub async fn call(&mut self, message: Message) -> anyhow::Result<Message> {
        let mut reply = None;
        self.stream(std::iter::once(message), |m| {
            reply = Some(m);
            Ok(())
        })
        .await?;
        reply.context("no reply")
    }

    /// Sends every message, at most `window` in flight, and hands each reply to
    /// `on_reply` in the order the requests were sent. Replies to requests this
    /// client did not send (or no longer waits for) are ignored.
    ///
    /// # Errors
    /// A socket failure, no reply for `timeout`, an error from `on_reply`, or
    /// two messages in flight with the same request id.
    pub async fn stream(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
        mut on_reply: impl FnMut(Message) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut messages = messages.into_iter().peekable();
        // Request id -> its position; replies wait in `ready` for their turn.
        let mut pending: HashMap<String, u64> = HashMap::new();
        let mut ready: BTreeMap<u64, Message> = BTreeMap::new();
        let (mut sent, mut next_out) = (0u64, 0u64);
        loop {
            while pending.len() + ready.len() < self.window.max(1)
                && let Some(mut message) = messages.next()
            {
                if message.envelope.deadline_ms == 0 {
                    message.envelope.deadline_ms =
                        now_us() / 1000 + self.timeout.as_millis() as u64;
                }
                // Replies are matched by request id: two in flight under one
                // id would each take the other's reply.
                if pending.contains_key(&message.envelope.request_id) {
                    anyhow::bail!(
                        "two requests in flight with the same id `{}`",
                        message.envelope.request_id
                    );
                }
                pending.insert(message.envelope.request_id.clone(), sent);
                sent += 1;
                self.input
                    .send(message.frames().to_vec())
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            while let Some(message) = ready.remove(&next_out) {
                next_out += 1;
                on_reply(message)?;
            }
            if pending.is_empty() && messages.peek().is_none() {
                return Ok(());
            }
            if pending.is_empty() {
                continue;
            }
            let frames = tokio::time::timeout(self.timeout, self.output.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no reply within {:?} ({} requests outstanding): is the Pea running, and are its addresses \
                         {} and {}?",
                        self.timeout,
                        pending.len(),
                        self.input.endpoint,
                        self.output.endpoint
                    )
                })?
                .context("the output socket closed")?;
            let message = match Message::from_frames(&frames) {
                Ok(m) if m.envelope.kind == Kind::Data => m,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("ignored a malformed reply: {e}");
                    continue;
                }
            };
            match pending.remove(&message.envelope.request_id) {
                Some(position) => {
                    ready.insert(position, message);
                }
                None => {
                    tracing::debug!(request = %message.envelope.request_id, "ignored a reply to no request of ours")
                }
            }
        }
    }

    /// Closes both sockets.
    pub async fn close(self) {
        let grace = Duration::from_secs(1);
        tokio::join!(self.input.close(grace), self.output.close(grace));
    }
}
