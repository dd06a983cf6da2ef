//! `inproc://NAME` sockets: ZeroMQ's in-process transport, for the links
//! between a Pod's Head, its Peas and its Tail when they are threads of one
//! process. A message moves as a `Vec<Bytes>` through a Tokio queue: no
//! loopback TCP, no framing, no system call (over TCP each hop cost a send,
//! a receive and an epoll wake-up, the largest part of a one-document round
//! trip's CPU time; docs/benchmarks.md, "The floor").
//!
//! The socket types keep their ZeroMQ meaning, as far as jina-wasm uses them:
//! PUSH and DEALER send round-robin to their peers, ROUTER addresses a peer by
//! the identity frame it put in front of that peer's messages, PUB sends to
//! every peer and drops what a full peer cannot take, PULL, SUB, ROUTER and
//! DEALER receive. A socket that goes away (closed, or dropped with its
//! task) tells each peer: a bound ROUTER reports the peer's identity, a
//! connecting socket connects again when its binder comes back. A connect to a
//! name nobody has bound fails, and the Link retries, as over TCP.
//!
//! Names are process-wide; [`address`] makes a fresh one. Nothing outside the
//! process can reach an `inproc://` socket, so only sockets whose peers are
//! all in the process use it (a Pod's internal links with the THREAD backend).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Inbound, QUEUE, SendFailure, SocketType, Transport};

/// The scheme of in-process endpoints.
pub const SCHEME: &str = "inproc://";

/// Messages waiting for a socket, with the identity of the peer that sent each.
type Queue = mpsc::Sender<(Bytes, Vec<Bytes>)>;

/// What peers hold of a socket.
struct Endpoint {
    /// How peers name this socket (a ROUTER's identity frame).
    id: Bytes,
    data: Queue,
    /// Identities of peers that went away.
    gone: mpsc::UnboundedSender<Bytes>,
    peers: Mutex<Vec<Arc<Endpoint>>>,
}

impl Endpoint {
    fn peers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Endpoint>>> {
        // A panic while holding this lock cannot leave the list half-changed
        // (push, retain and take are each whole), so a poisoned lock is used as is.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Bound names and their sockets.
static BOUND: LazyLock<Mutex<HashMap<String, Arc<Endpoint>>>> = LazyLock::new(Default::default);

fn bound() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Endpoint>>> {
    BOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh endpoint name, `inproc://<what>-<n>`, unique in the process.
pub fn address(what: &str) -> String {
    let what: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{SCHEME}{what}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A [`Transport`] within the process.
pub struct InprocTransport {
    kind: SocketType,
    me: Arc<Endpoint>,
    data: mpsc::Receiver<(Bytes, Vec<Bytes>)>,
    gone: mpsc::UnboundedReceiver<Bytes>,
    /// The name this socket bound, freed when it goes.
    name: Option<String>,
    /// Round-robin position for PUSH and DEALER.
    turn: usize,
}

impl InprocTransport {
    pub fn new(kind: SocketType) -> InprocTransport {
        let (data_tx, data) = mpsc::channel(QUEUE);
        let (gone_tx, gone) = mpsc::unbounded_channel();
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // libzmq's generated identities: a zero byte, then a number.
        let mut identity = vec![0u8];
        identity.extend_from_slice(&id.to_be_bytes());
        InprocTransport {
            kind,
            me: Arc::new(Endpoint {
                id: identity.into(),
                data: data_tx,
                gone: gone_tx,
                peers: Mutex::new(Vec::new()),
            }),
            data,
            gone,
            name: None,
            turn: 0,
        }
    }

    /// Leaves every peer, telling each, and frees the bound name.
    fn leave(&mut self) {
        if let Some(name) = self.name.take() {
            let mut bound = bound();
            if bound.get(&name).is_some_and(|e| Arc::ptr_eq(e, &self.me)) {
                bound.remove(&name);
            }
        }
        // Never two locks at once: take the list, then visit each peer's.
        let peers = std::mem::take(&mut *self.me.peers());
        for peer in peers {
            peer.peers().retain(|p| !Arc::ptr_eq(p, &self.me));
            let _ = peer.gone.send(self.me.id.clone());
        }
    }

    /// The next peer in turn, if any.
    fn next_peer(&mut self) -> Option<Arc<Endpoint>> {
        let peers = self.me.peers();
        if peers.is_empty() {
            return None;
        }
        self.turn = (self.turn + 1) % peers.len();
        Some(peers[self.turn].clone())
    }
}

impl Drop for InprocTransport {
    fn drop(&mut self) {
        self.leave();
    }
}

fn name_of(endpoint: &str) -> Result<&str, String> {
    match endpoint.strip_prefix(SCHEME) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(format!(
            "`{endpoint}` is not an in-process endpoint ({SCHEME}NAME)"
        )),
    }
}

#[async_trait]
impl Transport for InprocTransport {
    async fn bind(&mut self, endpoint: &str) -> Result<String, String> {
        let name = name_of(endpoint)?;
        let mut bound = bound();
        if bound.contains_key(name) {
            return Err(format!("`{endpoint}` is already bound in this process"));
        }
        bound.insert(name.to_string(), self.me.clone());
        self.name = Some(name.to_string());
        Ok(endpoint.to_string())
    }

    async fn connect(&mut self, endpoint: &str) -> Result<(), String> {
        let name = name_of(endpoint)?;
        let binder = bound()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("nothing is bound at `{endpoint}` in this process"))?;
        binder.peers().push(self.me.clone());
        self.me.peers().push(binder);
        Ok(())
    }

    async fn send(&mut self, mut frames: Vec<Bytes>) -> Result<(), SendFailure> {
        match self.kind {
            SocketType::Push | SocketType::Dealer => {
                let Some(peer) = self.next_peer() else {
                    return Err(SendFailure::NoPeer(frames));
                };
                peer.data
                    .send((self.me.id.clone(), frames))
                    .await
                    // The peer went away meanwhile: keep the frames for the next.
                    .map_err(|e| SendFailure::NoPeer(e.0.1))
            }
            SocketType::Router => {
                if frames.is_empty() {
                    return Err(SendFailure::Lost("a message without an identity".into()));
                }
                let identity = frames.remove(0);
                let peer = self.me.peers().iter().find(|p| p.id == identity).cloned();
                let Some(peer) = peer else {
                    return Err(SendFailure::Lost("its peer is not connected".into()));
                };
                peer.data
                    .send((self.me.id.clone(), frames))
                    .await
                    .map_err(|_| SendFailure::Lost("its peer went away".into()))
            }
            SocketType::Pub => {
                let peers = self.me.peers().clone();
                for peer in peers {
                    // A subscriber whose queue is full misses the message, as
                    // ZeroMQ's PUB drops at the high-water mark.
                    let _ = peer.data.try_send((self.me.id.clone(), frames.clone()));
                }
                Ok(())
            }
            SocketType::Pull | SocketType::Sub => {
                Err(SendFailure::Lost("this socket type cannot send".into()))
            }
        }
    }

    async fn next(&mut self, read: bool) -> Inbound {
        let receives = self.kind.can_recv();
        tokio::select! {
            biased;
            // Messages first: what a peer sent before it left is read before
            // its departure is reported.
            Some((from, mut frames)) = self.data.recv(), if read && receives => {
                if self.kind == SocketType::Router {
                    frames.insert(0, from);
                }
                Inbound::Message(frames)
            }
            Some(peer) = self.gone.recv() => Inbound::Disconnected(Some(peer)),
            else => std::future::pending().await,
        }
    }

    async fn close(mut self: Box<Self>) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(s: &str) -> Vec<Bytes> {
        vec![Bytes::from(s.to_string())]
    }

    async fn message(t: &mut InprocTransport) -> Vec<Bytes> {
        match t.next(true).await {
            Inbound::Message(m) => m,
            _ => panic!("expected a message"),
        }
    }

    #[tokio::test]
    async fn push_pull_round_robin_and_no_peer() {
        let name = address("push-pull");
        let mut push = InprocTransport::new(SocketType::Push);
        assert!(matches!(
            push.send(frames("early")).await,
            Err(SendFailure::NoPeer(_))
        ));
        push.bind(&name).await.unwrap();
        let mut a = InprocTransport::new(SocketType::Pull);
        let mut b = InprocTransport::new(SocketType::Pull);
        a.connect(&name).await.unwrap();
        b.connect(&name).await.unwrap();
        for i in 0..4 {
            push.send(frames(&i.to_string())).await.unwrap();
        }
        let (ma, mb) = (message(&mut a).await, message(&mut b).await);
        assert_ne!(ma, mb, "one message to each in turn");
        assert_eq!(a.data.len() + b.data.len(), 2);
    }

    #[tokio::test]
    async fn router_addresses_by_identity_and_reports_departures() {
        let name = address("router");
        let mut router = InprocTransport::new(SocketType::Router);
        router.bind(&name).await.unwrap();
        let mut dealer = InprocTransport::new(SocketType::Dealer);
        dealer.connect(&name).await.unwrap();
        dealer.send(frames("hello")).await.unwrap();
        let got = message(&mut router).await;
        assert_eq!(got[1], "hello");
        let identity = got[0].clone();
        router
            .send(vec![identity.clone(), Bytes::from("answer")])
            .await
            .unwrap();
        assert_eq!(message(&mut dealer).await, frames("answer"));
        assert!(matches!(
            router
                .send(vec![Bytes::from("nobody"), Bytes::from("x")])
                .await,
            Err(SendFailure::Lost(_))
        ));
        drop(dealer);
        assert!(matches!(
            router.next(true).await,
            Inbound::Disconnected(Some(id)) if id == identity
        ));
    }

    #[tokio::test]
    async fn a_name_is_bound_once_and_freed_by_its_socket() {
        let name = address("bound");
        let mut first = InprocTransport::new(SocketType::Pull);
        first.bind(&name).await.unwrap();
        let mut second = InprocTransport::new(SocketType::Pull);
        assert!(
            second
                .bind(&name)
                .await
                .unwrap_err()
                .contains("already bound")
        );
        let mut pusher = InprocTransport::new(SocketType::Push);
        pusher.connect(&name).await.unwrap();
        drop(first);
        // The connecting side hears that its binder left, and cannot connect
        // again until someone binds the name.
        assert!(matches!(pusher.next(false).await, Inbound::Disconnected(_)));
        assert!(pusher.connect(&name).await.is_err());
        second.bind(&name).await.unwrap();
        pusher.connect(&name).await.unwrap();
        pusher.send(frames("again")).await.unwrap();
        assert_eq!(message(&mut second).await, frames("again"));
        assert!(
            InprocTransport::new(SocketType::Pull)
                .bind("inproc://")
                .await
                .is_err()
        );
    }
}
