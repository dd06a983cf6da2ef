//! `inproc://NAME` sockets: ZeroMQ's in-process transport, for the links
//! between a Pod's Head, its Peas and its Tail when they are threads of one
//! process, and between a Flow's router and its in-process Pods.
//!
//! A message moves as a `Vec<Bytes>` from the sender's task straight into the
//! receiving socket's bounded queue, and the receiver's task reads it from
//! there: one task hand-off per hop, no socket task in between, no framing, no
//! system call (docs/benchmarks.md, "The floor").
//!
//! The socket types keep their ZeroMQ meaning, as far as jina-wasm uses them:
//! PUSH and DEALER send round-robin to their peers, ROUTER addresses a peer by
//! the identity frame it put in front of that peer's messages, PUB sends to
//! every peer and drops what a full peer cannot take, PULL, SUB, ROUTER and
//! DEALER receive. A full queue makes its senders wait (back-pressure). A
//! socket that goes away (closed, or dropped) tells each peer: a bound ROUTER
//! reports the peer's identity, a connecting socket connects again when its
//! binder comes back. A connect to a name nobody has bound fails, and is
//! retried, as over TCP. What a PUSH or DEALER sends while it has no peer
//! waits at the socket (up to [`QUEUE`] messages, as libzmq queues at a
//! connecting socket) and goes, in order, to the first peer that connects.
//!
//! The only task a socket has is its [`Keeper`]: it connects again and
//! delivers what waited for a peer. It sleeps while messages flow.
//!
//! Names are process-wide; [`address`] makes a fresh one. Nothing outside the
//! process can reach an `inproc://` socket, so only sockets whose peers are
//! all in the process use it (a Pod's internal links with the THREAD backend).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{QUEUE, SocketType};

/// The scheme of in-process endpoints.
pub const SCHEME: &str = "inproc://";

/// Capacity of an in-process socket's queue, in messages: it stands for
/// both the sender's outbound and the receiver's inbound queue of a socket
/// with a task (each [`QUEUE`]), so a Pod holds as much in flight either way.
pub const CAPACITY: usize = 2 * QUEUE;

/// A message in a socket's queue, with the identity of the peer that sent it.
type Item = (Bytes, Vec<Bytes>);

/// What peers hold of a socket.
struct Endpoint {
    /// How peers name this socket (a ROUTER's identity frame).
    id: Bytes,
    data: mpsc::Sender<Item>,
    /// Identities of peers that went away, for a socket that acts on it (a
    /// bound ROUTER reports them, a connecting socket connects again).
    gone: Option<mpsc::UnboundedSender<Bytes>>,
    peers: Mutex<Vec<Arc<Endpoint>>>,
    /// Woken when a peer connects (a message waiting for one goes).
    joined: Notify,
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

fn name_of(endpoint: &str) -> Result<&str, String> {
    match endpoint.strip_prefix(SCHEME) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(format!(
            "`{endpoint}` is not an in-process endpoint ({SCHEME}NAME)"
        )),
    }
}

/// An in-process socket: its sending side ([`Core`], shared by every handle
/// that sends), its receiving side ([`Inbox`]) and, when it needs one, its
/// [`Keeper`].
pub(super) struct Socket {
    pub core: Arc<Core>,
    pub inbox: Inbox,
    pub keeper: Option<Keeper>,
}

impl Socket {
    /// A socket of `kind` that binds (now) or connects (now if the name is
    /// bound, else its keeper keeps trying). Returns the socket and its
    /// endpoint.
    ///
    /// # Errors
    /// A bind to a name already bound, or an address that is not `inproc://`.
    pub fn open(
        kind: SocketType,
        bind: bool,
        endpoint: &str,
        owner: &str,
        reconnected: watch::Sender<u64>,
    ) -> Result<Socket, String> {
        name_of(endpoint)?;
        let (data_tx, data) = mpsc::channel(CAPACITY);
        // Only a bound ROUTER (which reports departures) and a connecting
        // socket (which connects again) care who went away.
        let router = kind == SocketType::Router;
        let (gone_tx, gone) = if !bind || router {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // libzmq's generated identities: a zero byte, then a number.
        let mut identity = vec![0u8];
        identity.extend_from_slice(&id.to_be_bytes());
        let (park, parked) = mpsc::channel(QUEUE);
        let core = Arc::new(Core {
            kind,
            me: Arc::new(Endpoint {
                id: identity.into(),
                data: data_tx,
                gone: gone_tx,
                peers: Mutex::new(Vec::new()),
                joined: Notify::new(),
            }),
            turn: AtomicUsize::new(0),
            park,
            waiting: AtomicUsize::new(0),
            name: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let connected = if bind {
            core.bind(endpoint)?;
            true
        } else {
            core.connect(endpoint).is_ok()
        };
        let (inbox_gone, keeper_gone) = if bind { (gone, None) } else { (None, gone) };
        let keeper =
            (!bind || matches!(kind, SocketType::Push | SocketType::Dealer)).then(|| Keeper {
                core: core.clone(),
                endpoint: endpoint.to_string(),
                owner: owner.to_string(),
                connected,
                parked,
                gone: keeper_gone,
                reconnected,
            });
        Ok(Socket {
            core,
            inbox: Inbox {
                data,
                gone: inbox_gone,
                router,
            },
            keeper,
        })
    }
}

/// The sending side of a socket, shared by its Link, its senders and its keeper.
pub(super) struct Core {
    kind: SocketType,
    me: Arc<Endpoint>,
    /// Round-robin position for PUSH and DEALER.
    turn: AtomicUsize,
    /// Messages sent while no peer was there, for the keeper to deliver.
    park: mpsc::Sender<Vec<Bytes>>,
    /// Parked messages not yet delivered: while there are any, new messages
    /// park behind them, so that none overtakes another.
    waiting: AtomicUsize,
    /// The name this socket bound, freed when it goes.
    name: Mutex<Option<String>>,
    closed: AtomicBool,
}

/// Room for one message, taken before it is made (so a full peer holds the
/// message back at its sender, not in flight).
pub struct Permit(Room);

enum Room {
    /// In a peer's queue; `strip`: the first frame is the identity that chose
    /// the peer (a ROUTER's), not part of the message.
    Peer {
        permit: mpsc::OwnedPermit<Item>,
        from: Bytes,
        strip: bool,
    },
    /// At the socket, until a peer connects.
    Park {
        permit: mpsc::OwnedPermit<Vec<Bytes>>,
        core: Arc<Core>,
    },
    /// In every peer's queue that has room (PUB).
    Every(Arc<Core>),
    /// Nowhere: a ROUTER's message for a peer that is not connected.
    Nowhere,
}

impl Permit {
    pub fn send(self, mut frames: Vec<Bytes>) {
        match self.0 {
            Room::Peer {
                permit,
                from,
                strip,
            } => {
                if strip && !frames.is_empty() {
                    frames.remove(0);
                }
                permit.send((from, frames));
            }
            Room::Park { permit, core } => {
                core.waiting.fetch_add(1, Ordering::AcqRel);
                permit.send(frames);
            }
            Room::Every(core) => {
                let peers = core.me.peers().clone();
                for peer in peers {
                    // A subscriber whose queue is full misses the message, as
                    // ZeroMQ's PUB drops at the high-water mark.
                    let _ = peer.data.try_send((core.me.id.clone(), frames.clone()));
                }
            }
            Room::Nowhere => {
                // A ROUTER's peer that left before its answer (a control client
                // that timed out) is routine.
                tracing::debug!("a message for a peer that is not connected was dropped");
            }
        }
    }
}

impl Core {
    fn bind(&self, endpoint: &str) -> Result<(), String> {
        let name = name_of(endpoint)?;
        let mut bound = bound();
        if bound.contains_key(name) {
            return Err(format!("`{endpoint}` is already bound in this process"));
        }
        bound.insert(name.to_string(), self.me.clone());
        *self
            .name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(name.to_string());
        Ok(())
    }

    fn connect(&self, endpoint: &str) -> Result<(), String> {
        let name = name_of(endpoint)?;
        let binder = bound()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("nothing is bound at `{endpoint}` in this process"))?;
        binder.peers().push(self.me.clone());
        self.me.peers().push(binder.clone());
        binder.joined.notify_waiters();
        self.me.joined.notify_waiters();
        Ok(())
    }

    /// Leaves every peer, telling each, and frees the bound name. Sends fail
    /// from now on.
    pub fn leave(&self) {
        self.closed.store(true, Ordering::Release);
        let name = self
            .name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(name) = name {
            let mut bound = bound();
            if bound.get(&name).is_some_and(|e| Arc::ptr_eq(e, &self.me)) {
                bound.remove(&name);
            }
        }
        // Never two locks at once: take the list, then visit each peer's.
        let peers = std::mem::take(&mut *self.me.peers());
        for peer in peers {
            peer.peers().retain(|p| !Arc::ptr_eq(p, &self.me));
            if let Some(gone) = &peer.gone {
                let _ = gone.send(self.me.id.clone());
            }
        }
    }

    /// The next peer in turn, if any.
    fn next_peer(&self) -> Option<Arc<Endpoint>> {
        let peers = self.me.peers();
        if peers.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(peers[turn % peers.len()].clone())
    }

    /// Room for one message: in the next peer's queue (PUSH, DEALER), in the
    /// queue of the peer `to` names (ROUTER), at the socket while no peer is
    /// connected. Waits while that queue is full.
    ///
    /// # Errors
    /// Why not, to follow "the socket ENDPOINT": it is closed, or cannot send.
    pub async fn reserve(self: &Arc<Self>, to: Option<&Bytes>) -> Result<Permit, &'static str> {
        if self.closed.load(Ordering::Acquire) {
            return Err("is closed");
        }
        match self.kind {
            SocketType::Push | SocketType::Dealer => loop {
                if self.waiting.load(Ordering::Acquire) == 0
                    && let Some(peer) = self.next_peer()
                {
                    match peer.data.clone().reserve_owned().await {
                        Ok(permit) => {
                            return Ok(Permit(Room::Peer {
                                permit,
                                from: self.me.id.clone(),
                                strip: false,
                            }));
                        }
                        // It went away meanwhile: the next one.
                        Err(_) => {
                            self.me.peers().retain(|p| !Arc::ptr_eq(p, &peer));
                            continue;
                        }
                    }
                }
                let permit = self
                    .park
                    .clone()
                    .reserve_owned()
                    .await
                    .map_err(|_| "is closed")?;
                return Ok(Permit(Room::Park {
                    permit,
                    core: self.clone(),
                }));
            },
            SocketType::Router => {
                let Some(to) = to else {
                    return Err("needs a peer's identity before a ROUTER's message");
                };
                let peer = self.me.peers().iter().find(|p| p.id == to).cloned();
                let Some(peer) = peer else {
                    return Ok(Permit(Room::Nowhere));
                };
                Ok(Permit(match peer.data.clone().reserve_owned().await {
                    Ok(permit) => Room::Peer {
                        permit,
                        from: self.me.id.clone(),
                        strip: true,
                    },
                    Err(_) => Room::Nowhere,
                }))
            }
            SocketType::Pub => Ok(Permit(Room::Every(self.clone()))),
            SocketType::Pull | SocketType::Sub => Err("cannot send (a PULL or SUB socket)"),
        }
    }

    /// A peer to deliver a parked message to, once there is one.
    async fn wait_peer(&self) -> Arc<Endpoint> {
        loop {
            let joined = self.me.joined.notified();
            tokio::pin!(joined);
            joined.as_mut().enable();
            if let Some(peer) = self.next_peer() {
                return peer;
            }
            joined.await;
        }
    }
}

/// The receiving side of a socket: its own queue, which peers write into.
pub(super) struct Inbox {
    data: mpsc::Receiver<Item>,
    /// A bound ROUTER's departed peers, reported as one-frame messages.
    gone: Option<mpsc::UnboundedReceiver<Bytes>>,
    router: bool,
}

impl Inbox {
    fn message(&self, (from, mut frames): Item) -> Vec<Bytes> {
        if self.router {
            frames.insert(0, from);
        }
        frames
    }

    /// Messages first: what a peer sent before it left is read before its
    /// departure is reported.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<Bytes>>> {
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(item)) => return Poll::Ready(Some(self.message(item))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match &mut self.gone {
            Some(gone) => match gone.poll_recv(cx) {
                Poll::Ready(Some(peer)) => Poll::Ready(Some(vec![peer])),
                _ => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }

    pub fn try_recv(&mut self) -> Option<Vec<Bytes>> {
        if let Ok(item) = self.data.try_recv() {
            return Some(self.message(item));
        }
        let peer = self.gone.as_mut()?.try_recv().ok()?;
        Some(vec![peer])
    }
}

/// A socket's only task: connects (again, after its binder went away), and
/// delivers what was sent while no peer was connected. Idle while messages
/// flow.
pub(super) struct Keeper {
    core: Arc<Core>,
    endpoint: String,
    /// Names the socket in logs (`pea-1 in (PUSH_CONNECT)`).
    owner: String,
    connected: bool,
    parked: mpsc::Receiver<Vec<Bytes>>,
    /// A connecting socket's binder went away.
    gone: Option<mpsc::UnboundedReceiver<Bytes>>,
    reconnected: watch::Sender<u64>,
}

impl Keeper {
    pub async fn run(mut self, stop: CancellationToken) {
        if !self.connected && !self.connect(&stop).await {
            return;
        }
        let mut holding: Option<Vec<Bytes>> = None;
        let mut draining = false;
        loop {
            if draining && holding.is_none() {
                match self.parked.try_recv() {
                    Ok(frames) => holding = Some(frames),
                    Err(_) => return,
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled(), if !draining => draining = true,
                Some(_) = recv_gone(&mut self.gone) => {
                    tracing::info!(socket = %self.owner, endpoint = %self.endpoint, "peer went away; reconnecting");
                    if !self.connect(&stop).await {
                        return;
                    }
                    self.reconnected.send_modify(|n| *n += 1);
                }
                frames = self.parked.recv(), if holding.is_none() && !draining => match frames {
                    Some(frames) => holding = Some(frames),
                    None => return,
                },
                peer = self.core.wait_peer(), if holding.is_some() => {
                    let frames = holding.take().expect("guarded");
                    match peer.data.send((self.core.me.id.clone(), frames)).await {
                        Ok(()) => {
                            self.core.waiting.fetch_sub(1, Ordering::AcqRel);
                        }
                        // It went away meanwhile: the next one.
                        Err(back) => {
                            self.core.me.peers().retain(|p| !Arc::ptr_eq(p, &peer));
                            holding = Some(back.0.1);
                        }
                    }
                }
                () = stop.cancelled(), if draining => {
                    tracing::warn!(socket = %self.owner, "closed with a message no peer ever took");
                    holding = None;
                }
            }
        }
    }

    /// Connects, retrying until it works or the socket is closed. Returns
    /// false when closed first.
    async fn connect(&mut self, stop: &CancellationToken) -> bool {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.core.connect(&self.endpoint) {
                Ok(()) => {
                    tracing::debug!(socket = %self.owner, endpoint = %self.endpoint, "connected");
                    return true;
                }
                Err(e) => {
                    tracing::debug!(socket = %self.owner, endpoint = %self.endpoint, "connect failed: {e}; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

async fn recv_gone(gone: &mut Option<mpsc::UnboundedReceiver<Bytes>>) -> Option<Bytes> {
    match gone {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
