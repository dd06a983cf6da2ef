//! ZeroMQ sockets behind a small interface: [`Link`] is one socket, owned by
//! its own task, reached through bounded queues of frames. Nothing here knows
//! about executors or the message format.
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
//! crate for `tcp://` and `ipc://`, and [`inproc`] for `inproc://` (sockets
//! whose peers are threads of the same process).

pub mod inproc;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketEvent, SocketRecv, SocketSend, ZmqError, ZmqMessage};

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

enum Zmq {
    Pull(zeromq::PullSocket),
    Push(zeromq::PushSocket),
    Sub(zeromq::SubSocket),
    Pub(zeromq::PubSocket),
    Router(zeromq::RouterSocket),
    Dealer(zeromq::DealerSocket),
}

/// [`Transport`] over the `zeromq` crate.
pub struct ZmqTransport {
    socket: Zmq,
    events: futures::channel::mpsc::Receiver<SocketEvent>,
}

macro_rules! each {
    ($socket:expr, $s:ident => $body:expr) => {
        match $socket {
            Zmq::Pull($s) => $body,
            Zmq::Push($s) => $body,
            Zmq::Sub($s) => $body,
            Zmq::Pub($s) => $body,
            Zmq::Router($s) => $body,
            Zmq::Dealer($s) => $body,
        }
    };
}

impl ZmqTransport {
    pub fn new(kind: SocketType) -> ZmqTransport {
        let mut socket = match kind {
            SocketType::Pull => Zmq::Pull(zeromq::PullSocket::new()),
            SocketType::Push => Zmq::Push(zeromq::PushSocket::new()),
            SocketType::Sub => Zmq::Sub(zeromq::SubSocket::new()),
            SocketType::Pub => Zmq::Pub(zeromq::PubSocket::new()),
            SocketType::Router => Zmq::Router(zeromq::RouterSocket::new()),
            SocketType::Dealer => Zmq::Dealer(zeromq::DealerSocket::new()),
        };
        let events = each!(&mut socket, s => s.monitor());
        ZmqTransport { socket, events }
    }
}

#[async_trait]
impl Transport for ZmqTransport {
    async fn bind(&mut self, endpoint: &str) -> Result<String, String> {
        let bound =
            each!(&mut self.socket, s => s.bind(endpoint).await).map_err(|e| describe(&e))?;
        if let Zmq::Sub(s) = &mut self.socket {
            s.subscribe("").await.map_err(|e| describe(&e))?;
        }
        Ok(bound.to_string())
    }

    async fn connect(&mut self, endpoint: &str) -> Result<(), String> {
        each!(&mut self.socket, s => s.connect(endpoint).await).map_err(|e| describe(&e))?;
        if let Zmq::Sub(s) = &mut self.socket {
            s.subscribe("").await.map_err(|e| describe(&e))?;
        }
        Ok(())
    }

    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), SendFailure> {
        let message = ZmqMessage::try_from(frames)
            .map_err(|_| SendFailure::Lost("an empty message".into()))?;
        let result = match &mut self.socket {
            Zmq::Push(s) => s.send(message).await,
            Zmq::Pub(s) => s.send(message).await,
            Zmq::Router(s) => s.send(message).await,
            Zmq::Dealer(s) => s.send(message).await,
            Zmq::Pull(_) | Zmq::Sub(_) => {
                return Err(SendFailure::Lost("this socket type cannot send".into()));
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(ZmqError::ReturnToSender { message, .. }) => {
                Err(SendFailure::NoPeer(message.into_vec()))
            }
            Err(e) => Err(SendFailure::Lost(describe(&e))),
        }
    }

    async fn next(&mut self, read: bool) -> Inbound {
        let events = &mut self.events;
        let disconnected = async {
            while let Some(event) = events.next().await {
                if let SocketEvent::Disconnected(peer) = event {
                    return Bytes::from(peer);
                }
            }
            std::future::pending::<Bytes>().await
        };
        let socket = &mut self.socket;
        let recv = async {
            if !read {
                return std::future::pending().await;
            }
            match socket {
                Zmq::Pull(s) => s.recv().await,
                Zmq::Sub(s) => s.recv().await,
                Zmq::Router(s) => s.recv().await,
                Zmq::Dealer(s) => s.recv().await,
                Zmq::Push(_) | Zmq::Pub(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            peer = disconnected => Inbound::Disconnected(Some(peer)),
            result = recv => match result {
                Ok(message) => Inbound::Message(message.into_vec()),
                Err(e) => Inbound::Failed(describe(&e)),
            },
        }
    }

    async fn close(self: Box<Self>) {
        let errors = each!(self.socket, s => s.close().await);
        for error in errors {
            tracing::debug!("closing a socket: {error}");
        }
    }
}

fn describe(error: &ZmqError) -> String {
    match error {
        ZmqError::Network(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            "the port is taken (address in use)".into()
        }
        other => other.to_string(),
    }
}

/// One socket, run by its own task. Inbound messages wait in a bounded queue
/// (the socket is read only when it has room); outbound ones too (senders wait
/// when it is full).
pub struct Link {
    /// What the socket is bound or connected to (with the real port).
    pub endpoint: String,
    pub spec: SocketSpec,
    /// How many times a connecting socket has connected again after its peer
    /// went away (a restarted peer knows nothing of this one).
    reconnects: tokio::sync::watch::Receiver<u64>,
    incoming: mpsc::Receiver<Vec<Bytes>>,
    outgoing: mpsc::Sender<Vec<Bytes>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
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
        let transport: Box<dyn Transport> = if endpoint.starts_with(inproc::SCHEME) {
            Box::new(inproc::InprocTransport::new(spec.kind))
        } else {
            Box::new(ZmqTransport::new(spec.kind))
        };
        Link::open_with(transport, spec, endpoint, owner).await
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
        let (reconnected, reconnects) = tokio::sync::watch::channel(0);
        let task = SocketTask {
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
            endpoint,
            spec,
            reconnects,
            incoming,
            outgoing,
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
        self.incoming.recv().await
    }

    /// The next inbound message if one is already waiting.
    pub fn try_recv(&mut self) -> Option<Vec<Bytes>> {
        self.incoming.try_recv().ok()
    }

    /// Queues a message, waiting while the queue is full.
    ///
    /// # Errors
    /// When the socket's task has ended.
    pub async fn send(&self, frames: Vec<Bytes>) -> Result<(), String> {
        self.outgoing
            .send(frames)
            .await
            .map_err(|_| format!("the socket {} is closed", self.endpoint))
    }

    /// Changes each time a connecting socket has connected again after its
    /// peer went away: a DEALER announces itself again to a restarted ROUTER.
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.clone()
    }

    /// A handle that queues messages on this Link from elsewhere.
    pub fn sender(&self) -> mpsc::Sender<Vec<Bytes>> {
        self.outgoing.clone()
    }

    /// Sends what is queued (for up to `grace`), then closes the socket and
    /// waits until its port is released.
    pub async fn close(mut self, grace: Duration) {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::debug!(endpoint = %self.endpoint, "a socket did not close within {grace:?}");
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct SocketTask {
    transport: Box<dyn Transport>,
    spec: SocketSpec,
    endpoint: String,
    owner: String,
    in_tx: mpsc::Sender<Vec<Bytes>>,
    out_rx: mpsc::Receiver<Vec<Bytes>>,
    stop: CancellationToken,
    reconnected: tokio::sync::watch::Sender<u64>,
}

impl SocketTask {
    async fn run(mut self) {
        if !self.spec.bind && !self.connect().await {
            self.transport.close().await;
            return;
        }
        let can_recv = self.spec.kind.can_recv();
        // A connecting socket other than SUB does not reconnect by itself.
        let reconnect = !self.spec.bind && self.spec.kind != SocketType::Sub;
        // A bound ROUTER tells its owner which peer left: one frame, the identity.
        let report = self.spec.bind && self.spec.kind == SocketType::Router;
        let watch = reconnect || report;
        let mut permit = None;
        let mut draining = false;
        loop {
            tokio::select! {
                frames = self.out_rx.recv() => match frames {
                    Some(frames) => self.send(frames).await,
                    None => break,
                },
                p = self.in_tx.clone().reserve_owned(), if can_recv && permit.is_none() && !draining => match p {
                    Ok(p) => permit = Some(p),
                    // Nobody reads any more: only send until closed.
                    Err(_) => draining = true,
                },
                event = self.transport.next(permit.is_some()), if permit.is_some() || watch => match event {
                    Inbound::Message(frames) => {
                        permit.take().expect("read only with a permit").send(frames);
                    }
                    Inbound::Disconnected(_) if reconnect => {
                        tracing::info!(socket = %self.owner, endpoint = %self.endpoint, "peer went away; reconnecting");
                        if !self.connect().await {
                            break;
                        }
                        self.reconnected.send_modify(|n| *n += 1);
                    }
                    Inbound::Disconnected(Some(peer)) if report => {
                        let _ = self.in_tx.send(vec![peer]).await;
                    }
                    Inbound::Disconnected(_) => {}
                    Inbound::Failed(e) => tracing::debug!(socket = %self.owner, "receive failed: {e}"),
                },
                () = self.stop.cancelled(), if !draining => draining = true,
            }
            // Closing: whatever was queued before the close has been sent.
            if draining && self.out_rx.is_empty() {
                break;
            }
        }
        self.transport.close().await;
    }

    /// Connects, retrying until it works or the Link is closed. Returns false
    /// when closed first.
    async fn connect(&mut self) -> bool {
        let mut delay = Duration::from_millis(50);
        loop {
            tokio::select! {
                result = self.transport.connect(&self.endpoint) => match result {
                    Ok(()) => {
                        tracing::debug!(socket = %self.owner, endpoint = %self.endpoint, "connected");
                        return true;
                    }
                    Err(e) => tracing::debug!(socket = %self.owner, endpoint = %self.endpoint, "connect failed: {e}; retrying"),
                },
                () = self.stop.cancelled() => return false,
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Sends, keeping the message while no peer is connected (the crate fails
    /// such sends at once instead of queueing them).
    async fn send(&mut self, mut frames: Vec<Bytes>) {
        let mut delay = Duration::from_millis(5);
        loop {
            match self.transport.send(frames).await {
                Ok(()) => return,
                // A ROUTER's peer that left before its answer (a control client
                // that timed out), or whose queue is full because it does not
                // read (dropped, as libzmq's ROUTER does), is routine; anything
                // else is worth a warning.
                Err(SendFailure::Lost(reason)) if self.spec.kind == SocketType::Router => {
                    tracing::debug!(socket = %self.owner, "a message for a peer that left or does not read was dropped: {reason}");
                    return;
                }
                Err(SendFailure::Lost(reason)) => {
                    tracing::warn!(socket = %self.owner, "a message was lost: {reason}");
                    return;
                }
                Err(SendFailure::NoPeer(back)) => frames = back,
            }
            if self.spec.kind == SocketType::Pub {
                // PUB drops what nobody subscribed to, as ZeroMQ does.
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => {
                    tracing::warn!(socket = %self.owner, "closed with a message no peer ever took");
                    return;
                }
            }
            delay = (delay * 2).min(Duration::from_millis(500));
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
