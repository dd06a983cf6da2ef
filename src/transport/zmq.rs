//! The `zeromq` crate behind [`Transport`], and the task that runs a
//! [`Link`](super::Link)'s socket: it owns the socket and moves frames between
//! it and the Link's two bounded queues (reading only when the inbound one has
//! room), keeps a message while no peer is connected, and connects again after
//! the peer went away (module doc of [`super`]).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketEvent, SocketRecv, SocketSend, ZmqError, ZmqMessage};

use super::{Inbound, SendFailure, SocketSpec, SocketType, Transport};

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

    /// A ROUTER that drops a reply to a peer whose queue is full (it does not
    /// read) instead of waiting for room, as libzmq's ROUTER does: for a
    /// control socket, where one such client must not stop the answers to
    /// every other. A ROUTER that routes work ([`ZmqTransport::new`]) waits.
    pub fn control() -> ZmqTransport {
        let mut options = zeromq::SocketOptions::default();
        options.drop_when_full(true);
        let mut socket = Zmq::Router(zeromq::RouterSocket::with_options(options));
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

pub(super) struct SocketTask {
    pub transport: Box<dyn Transport>,
    pub spec: SocketSpec,
    pub endpoint: String,
    pub owner: String,
    pub in_tx: mpsc::Sender<Vec<Bytes>>,
    pub out_rx: mpsc::Receiver<Vec<Bytes>>,
    pub stop: CancellationToken,
    pub reconnected: tokio::sync::watch::Sender<u64>,
}

impl SocketTask {
    pub async fn run(mut self) {
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
