//! Sockets behind a small interface: [`Link`] is one socket, reached through
//! bounded queues of frames. Nothing here knows about executors or the
//! message format.
//!
//! Two kinds of socket sit behind a Link. Between processes (`tcp://`,
//! `ipc://`), a ZeroMQ socket owned by its own task ([`zmq`]), which the
//! Link's queues reach. Between threads of one process (`inproc://`), an
//! in-process socket ([`inproc`]) with no task on the way: a send puts the
//! frames straight into the receiving socket's queue, and a receive reads the
//! Link's own.
//!
//! The `zeromq` crate (0.7) is pure Rust and speaks ZMTP 3 with libzmq peers,
//! but has gaps this module works around (docs/protocol.md, "Flow control"):
//!
//! - **No high-water mark**: a socket queues up to 100,000 messages per peer.
//!   Every queue here is bounded ([`QUEUE`]) and a Link reads from its socket
//!   only when its consumer has room, so a slow consumer slows the socket's
//!   reading instead of growing memory; end-to-end credit (`IDLE`, the
//!   client's window) keeps senders from filling the crate's queues.
//! - **A PUSH send with no peer fails at once**: the Link keeps the message and
//!   retries with backoff until a peer connects or the Link is closed.
//! - **Only SUB sockets reconnect** after their peer restarts: a connecting Link
//!   watches the socket's disconnect events and connects again.
//! - **A port stays bound until `close().await`**: [`Link::close`] closes the
//!   socket and waits for it.
//! - **No PAIR socket**: refused with an explanation when parsed.
//!
//! [`Transport`] is the seam: another ZeroMQ implementation (libzmq bindings)
//! fits behind it without touching the Pea. Behind it today: the `zeromq`
//! crate for `tcp://` and `ipc://`.

pub mod inproc;
mod zmq;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use zmq::ZmqTransport;

/// Capacity of each Link's inbound and outbound queue, in messages.
pub const QUEUE: usize = 16;

/// The ZeroMQ socket types jina-wasm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    Pull,
    Push,
    Sub,
    Pub,
    Router,
    Dealer,
}

impl SocketType {
    pub fn can_recv(self) -> bool {
        !matches!(self, SocketType::Push | SocketType::Pub)
    }

    pub fn can_send(self) -> bool {
        !matches!(self, SocketType::Pull | SocketType::Sub)
    }
}

/// A socket type and whether it binds or connects: Jina's `PULL_BIND` style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSpec {
    pub kind: SocketType,
    pub bind: bool,
}

impl SocketSpec {
    pub const PULL_BIND: SocketSpec = SocketSpec {
        kind: SocketType::Pull,
        bind: true,
    };
    pub const PUSH_BIND: SocketSpec = SocketSpec {
        kind: SocketType::Push,
        bind: true,
    };
    pub const PULL_CONNECT: SocketSpec = SocketSpec {
        kind: SocketType::Pull,
        bind: false,
    };
    pub const PUSH_CONNECT: SocketSpec = SocketSpec {
        kind: SocketType::Push,
        bind: false,
    };
    pub const ROUTER_BIND: SocketSpec = SocketSpec {
        kind: SocketType::Router,
        bind: true,
    };
    pub const DEALER_CONNECT: SocketSpec = SocketSpec {
        kind: SocketType::Dealer,
        bind: false,
    };
}

impl FromStr for SocketSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.to_ascii_uppercase();
        let (kind, mode) = upper.rsplit_once('_').ok_or_else(|| {
            format!("`{text}` is not a socket type: write it like PULL_BIND or PUSH_CONNECT")
        })?;
        let kind = match kind {
            "PULL" => SocketType::Pull,
            "PUSH" => SocketType::Push,
            "SUB" => SocketType::Sub,
            "PUB" => SocketType::Pub,
            "ROUTER" => SocketType::Router,
            "DEALER" => SocketType::Dealer,
            "PAIR" => {
                return Err("PAIR sockets are not supported (the zeromq crate has none); use PUSH_BIND/PULL_CONNECT \
                            for a one-way link to one peer"
                    .into());
            }
            other => {
                return Err(format!(
                    "unknown socket type {other}: use PULL, PUSH, SUB, PUB, ROUTER or DEALER"
                ));
            }
        };
        let bind = match mode {
            "BIND" => true,
            "CONNECT" => false,
            other => {
                return Err(format!(
                    "unknown socket mode {other}: use _BIND or _CONNECT"
                ));
            }
        };
        Ok(SocketSpec { kind, bind })
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = format!("{:?}", self.kind).to_ascii_uppercase();
        write!(f, "{kind}_{}", if self.bind { "BIND" } else { "CONNECT" })
    }
}

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {socket} on {endpoint}: {reason}")]
    Bind {
        socket: String,
        endpoint: String,
        reason: String,
    },
    #[error("bad address for {socket}: {reason}")]
    Address { socket: String, reason: String },
}

/// A failed send.
#[derive(Debug)]
pub enum SendFailure {
    /// No peer to send to: the frames come back to retry later.
    NoPeer(Vec<Bytes>),
    /// The peer went away; the frames are lost.
    Lost(String),
}

/// What a socket has for its Link.
pub enum Inbound {
    Message(Vec<Bytes>),
    /// A peer went away (its identity, when the socket knows it).
    Disconnected(Option<Bytes>),
    Failed(String),
}

/// The seam between Links and a ZeroMQ implementation.
#[async_trait]
pub trait Transport: Send + 'static {
    /// Binds and returns the endpoint actually bound (the real port for port 0).
    async fn bind(&mut self, endpoint: &str) -> Result<String, String>;
    /// Connects, waiting until the peer answers.
    async fn connect(&mut self, endpoint: &str) -> Result<(), String>;
    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), SendFailure>;
    /// The next thing that happens: a message (when `read`; a ROUTER's frames
    /// start with the sender's identity), or a connected peer going away.
    async fn next(&mut self, read: bool) -> Inbound;
    /// Closes the socket and releases its port.
    async fn close(self: Box<Self>);
}

/// One socket. Inbound messages wait in a bounded queue (the socket is read
/// only when it has room); outbound ones wait for room in the next queue on
/// their way (senders wait when it is full).
pub struct Link {
    /// What the socket is bound or connected to (with the real port).
    pub endpoint: String,
    pub spec: SocketSpec,
    /// How many times a connecting socket has connected again after its peer
    /// went away (a restarted peer knows nothing of this one).
    reconnects: watch::Receiver<u64>,
    inbox: Inbox,
    sender: Sender,
    stop: CancellationToken,
    /// The socket's task: a ZeroMQ socket's, or an in-process socket's keeper
    /// (none for one that only binds and receives).
    task: Option<JoinHandle<()>>,
}

enum Inbox {
    /// What the socket's task read.
    Queue(mpsc::Receiver<Vec<Bytes>>),
    Inproc(inproc::Inbox, Arc<inproc::Core>),
}

/// A handle that sends on a [`Link`] from elsewhere (a clone of its sending side).
#[derive(Clone)]
pub struct Sender {
    endpoint: Arc<str>,
    router: bool,
    to: SenderTo,
}

#[derive(Clone)]
enum SenderTo {
    /// The socket's task's outbound queue.
    Queue(mpsc::Sender<Vec<Bytes>>),
    /// An in-process socket: its peers' queues.
    Inproc(Arc<inproc::Core>),
}

/// Room for one message on a [`Sender`], taken before the message is made.
pub enum Permit<'a> {
    Queue(mpsc::Permit<'a, Vec<Bytes>>),
    Inproc(inproc::Permit),
}

impl Permit<'_> {
    /// Sends `frames` (a ROUTER's start with the peer's identity).
    pub fn send(self, frames: Vec<Bytes>) {
        match self {
            Permit::Queue(permit) => permit.send(frames),
            Permit::Inproc(permit) => permit.send(frames),
        }
    }
}

impl Sender {
    /// Room for one message, waiting while there is none; `to` is the peer's
    /// identity on a ROUTER (the first frame of what will be sent).
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn reserve(&self, to: Option<&Bytes>) -> Result<Permit<'_>, String> {
        let result = match &self.to {
            SenderTo::Queue(tx) => tx
                .reserve()
                .await
                .map(Permit::Queue)
                .map_err(|_| "is closed"),
            SenderTo::Inproc(core) => core.reserve(to).await.map(Permit::Inproc),
        };
        result.map_err(|why| format!("the socket {} {why}", self.endpoint))
    }

    /// Sends a message, waiting while there is no room for it.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send(&self, frames: Vec<Bytes>) -> Result<(), String> {
        if let SenderTo::Queue(tx) = &self.to {
            return tx
                .send(frames)
                .await
                .map_err(|_| format!("the socket {} is closed", self.endpoint));
        }
        let to = if self.router {
            frames.first().cloned()
        } else {
            None
        };
        self.reserve(to.as_ref()).await?.send(frames);
        Ok(())
    }
}

impl Link {
    /// Opens a socket: binds now (so a taken port is an error here, and port 0
    /// becomes a real one), or connects in the background, retrying until the
    /// peer is there. `owner` names the socket in errors and logs (`pea-1 in`).
    ///
    /// # Errors
    /// A bind that fails, or a connect to port 0.
    pub async fn open(
        spec: SocketSpec,
        endpoint: &str,
        owner: &str,
    ) -> Result<Link, TransportError> {
        if endpoint.starts_with(inproc::SCHEME) {
            return Link::open_inproc(spec, endpoint, owner);
        }
        Link::open_with(
            Box::new(ZmqTransport::new(spec.kind)),
            spec,
            endpoint,
            owner,
        )
        .await
    }

    /// A control socket (`ROUTER_BIND`): as [`Link::open`], except that a
    /// reply to a client that does not read its replies is dropped once its
    /// queue is full, instead of waited for ([`ZmqTransport::control`]).
    ///
    /// # Errors
    /// As [`Link::open`].
    pub async fn open_control(endpoint: &str, owner: &str) -> Result<Link, TransportError> {
        if endpoint.starts_with(inproc::SCHEME) {
            return Link::open_inproc(SocketSpec::ROUTER_BIND, endpoint, owner);
        }
        Link::open_with(
            Box::new(ZmqTransport::control()),
            SocketSpec::ROUTER_BIND,
            endpoint,
            owner,
        )
        .await
    }

    fn open_inproc(spec: SocketSpec, endpoint: &str, owner: &str) -> Result<Link, TransportError> {
        let socket = format!("{owner} ({spec})");
        let (reconnected, reconnects) = watch::channel(0);
        let opened = inproc::Socket::open(spec.kind, spec.bind, endpoint, &socket, reconnected)
            .map_err(|reason| {
                if spec.bind {
                    TransportError::Bind {
                        socket: socket.clone(),
                        endpoint: endpoint.to_string(),
                        reason,
                    }
                } else {
                    TransportError::Address {
                        socket: socket.clone(),
                        reason,
                    }
                }
            })?;
        let stop = CancellationToken::new();
        let task = opened
            .keeper
            .map(|keeper| tokio::spawn(keeper.run(stop.clone())));
        Ok(Link {
            endpoint: endpoint.to_string(),
            spec,
            reconnects,
            inbox: Inbox::Inproc(opened.inbox, opened.core.clone()),
            sender: Sender {
                endpoint: endpoint.into(),
                router: spec.kind == SocketType::Router,
                to: SenderTo::Inproc(opened.core),
            },
            stop,
            task,
        })
    }

    /// [`Link::open`] over any [`Transport`].
    ///
    /// # Errors
    /// As [`Link::open`].
    pub async fn open_with(
        mut transport: Box<dyn Transport>,
        spec: SocketSpec,
        endpoint: &str,
        owner: &str,
    ) -> Result<Link, TransportError> {
        let socket = format!("{owner} ({spec})");
        let endpoint = if spec.bind {
            transport
                .bind(endpoint)
                .await
                .map_err(|reason| TransportError::Bind {
                    socket: socket.clone(),
                    endpoint: endpoint.to_string(),
                    reason,
                })?
        } else {
            if endpoint.starts_with("tcp://") && endpoint.ends_with(":0") {
                return Err(TransportError::Address {
                    socket,
                    reason: format!("{endpoint}: a connecting socket needs a port"),
                });
            }
            endpoint.to_string()
        };
        let (in_tx, incoming) = mpsc::channel(QUEUE);
        let (outgoing, out_rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let (reconnected, reconnects) = watch::channel(0);
        let task = zmq::SocketTask {
            transport,
            spec,
            endpoint: endpoint.clone(),
            owner: socket,
            in_tx,
            out_rx,
            stop: stop.clone(),
            reconnected,
        };
        let task = tokio::spawn(task.run());
        Ok(Link {
            sender: Sender {
                endpoint: endpoint.as_str().into(),
                router: spec.kind == SocketType::Router,
                to: SenderTo::Queue(outgoing),
            },
            endpoint,
            spec,
            reconnects,
            inbox: Inbox::Queue(incoming),
            stop,
            task: Some(task),
        })
    }

    /// The port the socket is bound or connected to (0 for IPC).
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The next inbound message; `None` once the Link is closed. On a bound
    /// ROUTER, a message of one frame (an identity) means that peer went away.
    pub async fn recv(&mut self) -> Option<Vec<Bytes>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Link::recv`] as a poll, for a reader of several Links.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<Bytes>>> {
        match &mut self.inbox {
            Inbox::Queue(rx) => rx.poll_recv(cx),
            Inbox::Inproc(inbox, _) => inbox.poll_recv(cx),
        }
    }

    /// The next inbound message if one is already waiting.
    pub fn try_recv(&mut self) -> Option<Vec<Bytes>> {
        match &mut self.inbox {
            Inbox::Queue(rx) => rx.try_recv().ok(),
            Inbox::Inproc(inbox, _) => inbox.try_recv(),
        }
    }

    /// Sends a message, waiting while there is no room for it.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send(&self, frames: Vec<Bytes>) -> Result<(), String> {
        self.sender.send(frames).await
    }

    /// Changes each time a connecting socket has connected again after its
    /// peer went away: a DEALER announces itself again to a restarted ROUTER.
    pub fn reconnects(&self) -> watch::Receiver<u64> {
        self.reconnects.clone()
    }

    /// A handle that sends on this Link from elsewhere.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Sends what is queued (for up to `grace`), then closes the socket and
    /// waits until its port is released.
    pub async fn close(mut self, grace: Duration) {
        self.stop.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            tracing::debug!(endpoint = %self.endpoint, "a socket did not close within {grace:?}");
            if matches!(self.inbox, Inbox::Inproc(..)) {
                task.abort();
            }
        }
        if let Inbox::Inproc(_, core) = &self.inbox {
            core.leave();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Inbox::Inproc(_, core) = &self.inbox {
            core.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_specs_parse_like_jina() {
        assert_eq!(
            "pull_bind".parse::<SocketSpec>().unwrap(),
            SocketSpec::PULL_BIND
        );
        assert_eq!(
            "DEALER_CONNECT".parse::<SocketSpec>().unwrap().to_string(),
            "DEALER_CONNECT"
        );
        assert!(
            "PAIR_BIND"
                .parse::<SocketSpec>()
                .unwrap_err()
                .contains("not supported")
        );
        assert!("PULL".parse::<SocketSpec>().is_err());
        assert!(
            "PULL_LISTEN"
                .parse::<SocketSpec>()
                .unwrap_err()
                .contains("_BIND")
        );
    }
}
