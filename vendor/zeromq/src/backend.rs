use crate::async_rt;
use crate::codec::{FramedIo, Message, ZmqFramedRead};
use crate::fair_queue::QueueInner;
use crate::util::PeerIdentity;
use crate::write_queue::write_message_queue;
use crate::{
    MultiPeerBackend, SocketBackend, SocketEvent, SocketOptions, SocketType, ZmqError, ZmqResult,
};

use async_trait::async_trait;
use crossbeam_queue::SegQueue;
use futures::channel::mpsc;
use futures::SinkExt;
use parking_lot::Mutex;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Sender for notifying reconnection tasks when a peer disconnects.
pub(crate) type DisconnectNotifier = mpsc::Sender<PeerIdentity>;
// jina-wasm patch (see vendor/README.md): upstream queues up to 100,000
// messages per peer, so a slow reader grows the sender's memory without bound.
// 64 acts as a send high-water mark: once a peer's queue is full, `send` waits
// (the code below already awaits a full queue), which is backpressure.
const PEER_SEND_QUEUE_CAPACITY: usize = 64;

/// jina-wasm patch: what a ROUTER's send returns when the peer's queue is
/// full and the message was dropped.
pub(crate) const PEER_QUEUE_FULL: &str = "the peer's queue is full (it does not read): the message was dropped";

pub(crate) struct Peer {
    pub(crate) send_queue: mpsc::Sender<Message>,
    /// jina-wasm patch: the connection's descriptor (`hung_up`).
    pub(crate) raw_fd: Option<i32>,
}

#[derive(Clone)]
struct SinglePeer {
    peer_id: PeerIdentity,
    send_queue: mpsc::Sender<Message>,
    raw_fd: Option<i32>,
}

/// jina-wasm patch (see vendor/README.md): whether the peer on `fd` has
/// closed its end (or the connection failed), so that what is written to it
/// now is lost. Asked of the kernel, not of the task that reads the
/// connection, which may not have run yet: a PUSH then sends to another
/// peer. On Linux `poll` reports the peer's end (`POLLRDHUP`) even when it
/// sent bytes first that nobody has read; elsewhere a peek for a byte does,
/// and takes a byte waiting for a peer still there. A peer that shut down
/// only its writing side counts as gone, as the read watch counts its EOF:
/// ZeroMQ peers never half-close.
fn hung_up(fd: Option<i32>) -> bool {
    // SAFETY (both calls): callers ask while they hold the peer's entry in
    // the peers map or the single-peer cache, and the descriptor is open
    // (and so never another connection's) while it is there: each half of
    // the connection is dropped only at the end of its task, after the
    // entry is gone. The writer's task ends once the entry's queue sender
    // is dropped, or after a failed write and its `peer_disconnected`; the
    // read watch's after its own `peer_disconnected`, or after the writer's
    // end. `peer_disconnected` removing the entry waits for its holder. `poll` reads and writes the one `pollfd` given and waits
    // for nothing (timeout 0); `recv` writes at most one byte into `byte`,
    // and `MSG_PEEK` takes nothing from the connection.
    #[cfg(target_os = "linux")]
    if let Some(fd) = fd {
        let mut ask = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        let ready = unsafe { libc::poll(&mut ask, 1, 0) };
        return ready > 0 && ask.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    if let Some(fd) = fd {
        let mut byte = 0u8;
        let read = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        return read == 0;
    }
    let _ = fd;
    false
}

enum CachedSend {
    Sent,
    Full {
        peer_id: PeerIdentity,
        send_queue: mpsc::Sender<Message>,
        message: Message,
    },
    Disconnected {
        peer_id: PeerIdentity,
        error: mpsc::SendError,
    },
    Miss(Message),
}

enum SendResolution {
    Sent,
    Miss(Message),
}

pub(crate) struct GenericSocketBackend {
    pub(crate) peers: scc::HashMap<PeerIdentity, Peer>,
    fair_queue_inner: Option<Arc<Mutex<QueueInner<ZmqFramedRead, PeerIdentity>>>>,
    pub(crate) round_robin: SegQueue<PeerIdentity>,
    socket_type: SocketType,
    socket_options: Arc<SocketOptions>,
    pub(crate) socket_monitor: Mutex<Option<mpsc::Sender<SocketEvent>>>,
    single_peer: Mutex<Option<SinglePeer>>,
    peer_count: AtomicUsize,
    /// Notifiers for reconnection tasks - keyed by `peer_id`
    disconnect_notifiers: Mutex<HashMap<PeerIdentity, DisconnectNotifier>>,
    /// jina-wasm patch: per connection, what resolves once its tasks have
    /// dropped it (`take_open_connections`).
    open_connections: Mutex<Vec<futures::channel::oneshot::Receiver<()>>>,
}

impl GenericSocketBackend {
    pub(crate) fn with_options(
        fair_queue_inner: Option<Arc<Mutex<QueueInner<ZmqFramedRead, PeerIdentity>>>>,
        socket_type: SocketType,
        options: SocketOptions,
    ) -> Self {
        Self {
            peers: scc::HashMap::new(),
            fair_queue_inner,
            round_robin: SegQueue::new(),
            socket_type,
            socket_options: Arc::new(options),
            socket_monitor: Mutex::new(None),
            single_peer: Mutex::new(None),
            peer_count: AtomicUsize::new(0),
            disconnect_notifiers: Mutex::new(HashMap::new()),
            open_connections: Mutex::new(Vec::new()),
        }
    }

    /// Register a notifier to be called when a peer disconnects.
    ///
    /// Used by reconnection tasks to be notified when they should attempt reconnection.
    #[allow(dead_code)] // Will be used when reconnection is added to more socket types
    pub(crate) fn register_disconnect_notifier(
        &self,
        peer_id: PeerIdentity,
        notifier: DisconnectNotifier,
    ) {
        self.disconnect_notifiers.lock().insert(peer_id, notifier);
    }

    /// Unregister a disconnect notifier for a peer.
    #[allow(dead_code)] // Will be used when reconnection is added to more socket types
    pub(crate) fn unregister_disconnect_notifier(&self, peer_id: &PeerIdentity) {
        self.disconnect_notifiers.lock().remove(peer_id);
    }

    pub(crate) async fn send_round_robin(&self, message: Message) -> ZmqResult<()> {
        let message = match self
            .finish_cached_send(self.try_send_cached_single_peer(message, None))
            .await?
        {
            SendResolution::Sent => return Ok(()),
            SendResolution::Miss(message) => message,
        };

        // In normal scenario this will always be only 1 iteration
        // There can be special case when peer has disconnected and his id is still in
        // RR queue This happens because SegQueue don't have an api to delete
        // items from queue. So in such case we'll just pop item and skip it if
        // we don't have a matching peer in peers map
        loop {
            let next_peer_id = match self.round_robin.pop() {
                Some(peer) => peer,
                None => match message {
                    Message::Greeting(_) => {
                        return Err(ZmqError::Socket("Sending greeting is not supported"))
                    }
                    Message::Command(_) => {
                        return Err(ZmqError::Socket("Sending commands is not supported"))
                    }
                    Message::Message(m) => {
                        return Err(ZmqError::ReturnToSender {
                            reason: "Not connected to peers. Unable to send messages",
                            message: m,
                        })
                    }
                },
            };
            // jina-wasm patch: the peer's queue is taken out of the map before
            // the send waits on it. Upstream held the map's bucket lock across
            // that wait, and `peer_disconnected` (synchronous, on a runtime
            // worker) blocked on it: a worker thread stuck until the peer read.
            // Asked while the entry is held, so its descriptor is open.
            let Some((mut send_queue, gone)) = self.peers.get_sync(&next_peer_id).map(|peer| {
                let gone = self.socket_type == SocketType::PUSH && hung_up(peer.raw_fd);
                (peer.send_queue.clone(), gone)
            }) else {
                continue;
            };
            if gone {
                self.peer_disconnected(&next_peer_id);
                continue;
            }
            let send_result = send_to_peer_queue(&mut send_queue, message).await;
            return match send_result {
                Ok(()) => {
                    self.round_robin.push(next_peer_id);
                    Ok(())
                }
                Err(e) => {
                    self.peer_disconnected(&next_peer_id);
                    Err(e.into())
                }
            };
        }
    }

    pub(crate) async fn send_to_peer(
        &self,
        peer_id: &PeerIdentity,
        message: Message,
    ) -> ZmqResult<()> {
        // jina-wasm patch: with `drop_when_full`, a ROUTER drops a message for
        // a peer whose queue is full (libzmq's ROUTER at its high-water mark)
        // instead of waiting for it: one peer that does not read must not stop
        // the socket, and so every other peer's answers, behind it.
        let drop_when_full = self.socket_options.drop_when_full;
        let message = match self.try_send_cached_single_peer(message, Some(peer_id)) {
            CachedSend::Full { .. } if drop_when_full => {
                return Err(ZmqError::Other(PEER_QUEUE_FULL))
            }
            cached => match self.finish_cached_send(cached).await? {
                SendResolution::Sent => return Ok(()),
                SendResolution::Miss(message) => message,
            },
        };

        let Some(mut send_queue) = self.peer_queue(peer_id) else {
            return Err(ZmqError::Other("Destination client not found by identity"));
        };
        let send_result = if drop_when_full {
            match send_queue.try_send(message) {
                Ok(()) => Ok(()),
                Err(error) if error.is_full() => return Err(ZmqError::Other(PEER_QUEUE_FULL)),
                Err(error) => Err(error.into_send_error()),
            }
        } else {
            send_to_peer_queue(&mut send_queue, message).await
        };
        match send_result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.peer_disconnected(peer_id);
                Err(e.into())
            }
        }
    }

    /// jina-wasm patch: a peer's send queue, with the map's lock held only
    /// while it is cloned (never across an await: see `send_round_robin`).
    /// Synchronous, so no task is ever granted the lock and then left
    /// unpolled behind a worker that waits for it in `peer_disconnected`.
    fn peer_queue(&self, peer_id: &PeerIdentity) -> Option<mpsc::Sender<Message>> {
        self.peers
            .get_sync(peer_id)
            .map(|peer| peer.send_queue.clone())
    }

    fn try_send_cached_single_peer(
        &self,
        message: Message,
        expected_peer_id: Option<&PeerIdentity>,
    ) -> CachedSend {
        if self.peer_count.load(Ordering::Acquire) != 1 {
            return CachedSend::Miss(message);
        }

        let mut single_peer = self.single_peer.lock();
        let Some(single_peer) = single_peer.as_mut() else {
            return CachedSend::Miss(message);
        };
        if self.socket_type == SocketType::PUSH && hung_up(single_peer.raw_fd) {
            // Disconnected by the round-robin path, which asks again.
            return CachedSend::Miss(message);
        }

        if let Some(expected_peer_id) = expected_peer_id {
            if single_peer.peer_id != *expected_peer_id {
                return CachedSend::Miss(message);
            }
        }

        match single_peer.send_queue.try_send(message) {
            Ok(()) => CachedSend::Sent,
            Err(error) if error.is_full() => CachedSend::Full {
                peer_id: single_peer.peer_id.clone(),
                send_queue: single_peer.send_queue.clone(),
                message: error.into_inner(),
            },
            Err(error) => CachedSend::Disconnected {
                peer_id: single_peer.peer_id.clone(),
                error: error.into_send_error(),
            },
        }
    }

    async fn finish_cached_send(&self, cached_send: CachedSend) -> ZmqResult<SendResolution> {
        match cached_send {
            CachedSend::Sent => Ok(SendResolution::Sent),
            CachedSend::Full {
                peer_id,
                mut send_queue,
                message,
            } => match send_queue.send(message).await {
                Ok(()) => Ok(SendResolution::Sent),
                Err(e) => {
                    self.peer_disconnected(&peer_id);
                    Err(e.into())
                }
            },
            CachedSend::Disconnected { peer_id, error } => {
                self.peer_disconnected(&peer_id);
                Err(error.into())
            }
            CachedSend::Miss(message) => Ok(SendResolution::Miss(message)),
        }
    }

    fn refresh_single_peer_cache(&self) {
        let peer_count = self.peers.len();
        self.peer_count.store(peer_count, Ordering::Release);

        let mut single_peer = self.single_peer.lock();
        if peer_count == 1 {
            *single_peer = self.peers.begin_sync().map(|peer| SinglePeer {
                peer_id: peer.key().clone(),
                send_queue: peer.send_queue.clone(),
                raw_fd: peer.raw_fd,
            });
        } else {
            *single_peer = None;
        }
    }
}

async fn send_to_peer_queue(
    send_queue: &mut mpsc::Sender<Message>,
    message: Message,
) -> Result<(), mpsc::SendError> {
    match send_queue.try_send(message) {
        Ok(()) => Ok(()),
        Err(error) if error.is_full() => send_queue.send(error.into_inner()).await,
        Err(error) => Err(error.into_send_error()),
    }
}

impl SocketBackend for GenericSocketBackend {
    fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    fn socket_options(&self) -> &Arc<SocketOptions> {
        &self.socket_options
    }

    fn shutdown(&self) {
        self.peers.clear_sync();
        self.single_peer.lock().take();
        self.peer_count.store(0, Ordering::Release);
        // Clear fair_queue streams to ensure TCP connections are closed
        // even when reconnect tasks still hold Arc references to the backend
        if let Some(inner) = &self.fair_queue_inner {
            inner.lock().clear();
        }
    }

    fn monitor(&self) -> &Mutex<Option<mpsc::Sender<SocketEvent>>> {
        &self.socket_monitor
    }

    fn take_open_connections(&self) -> Vec<futures::channel::oneshot::Receiver<()>> {
        std::mem::take(&mut *self.open_connections.lock())
    }
}

#[async_trait]
impl MultiPeerBackend for GenericSocketBackend {
    async fn peer_connected(self: Arc<Self>, peer_id: &PeerIdentity, io: FramedIo) {
        let raw_fd = io.raw_fd;
        let (recv_queue, send_queue) = io.into_parts();
        let (queue_sender, queue_receiver) = mpsc::channel(PEER_SEND_QUEUE_CAPACITY);
        // jina-wasm patch: synchronous, as every other access of the map
        // (see `peer_queue`).
        self.peers.upsert_sync(
            peer_id.clone(),
            Peer {
                send_queue: queue_sender,
                raw_fd,
            },
        );
        self.refresh_single_peer_cache();
        let writer_backend = self.clone();
        let writer_peer_id = peer_id.clone();
        // jina-wasm patch: dropped when the writer ends (see below).
        let (writer_done, writer_done_rx) = futures::channel::oneshot::channel::<()>();
        // jina-wasm patch: held by every task that holds a half of the
        // connection; its receiver resolves once the last of them ended.
        let (open, open_rx) = futures::channel::oneshot::channel::<()>();
        let open = Arc::new(open);
        {
            let mut connections = self.open_connections.lock();
            // Those of connections already closed go (still open: `Ok(None)`).
            connections.retain_mut(|rx| matches!(rx.try_recv(), Ok(None)));
            connections.push(open_rx);
        }
        let writer_open = open.clone();
        async_rt::task::spawn(async move {
            let _writer_done = writer_done;
            let _open = writer_open;
            // jina-wasm patch: the write half outlives `peer_disconnected`
            // (dropped at the end of this task), so the descriptor a PUSH
            // asks `hung_up` about is never closed, and its number never
            // another connection's, while the peer is still in the map.
            let mut send_queue = send_queue;
            if let Err(error) = write_message_queue(queue_receiver, &mut send_queue).await {
                log::debug!(
                    "Error sending message to peer {:?}: {:?}",
                    writer_peer_id,
                    error
                );
                writer_backend.peer_disconnected(&writer_peer_id);
            }
        });
        self.round_robin.push(peer_id.clone());
        match &self.fair_queue_inner {
            None => {
                // jina-wasm patch (see vendor/README.md): a send-only socket
                // (PUSH) never reads, so upstream noticed a peer that went away
                // only when a later write failed, and the messages written
                // meanwhile were lost. Watch the read half: EOF or an error
                // means the peer is gone, and the Disconnected event lets the
                // owner reconnect at once.
                // The watch ends with the writer too (our side closed the
                // connection), so the read half never outlives it.
                let backend = Arc::downgrade(&self);
                let watched_peer_id = peer_id.clone();
                async_rt::task::spawn(async move {
                    use futures::StreamExt;
                    let _open = open;
                    let mut recv_queue = recv_queue;
                    // Borrowed, not moved: the read half is dropped at the
                    // end of this task, after `peer_disconnected` (see the
                    // writer's task above).
                    let reader = async { while let Some(Ok(_)) = recv_queue.next().await {} };
                    futures::pin_mut!(reader);
                    if let futures::future::Either::Left(_) = futures::future::select(reader, writer_done_rx).await {
                        if let Some(backend) = backend.upgrade() {
                            backend.peer_disconnected(&watched_peer_id);
                        }
                    }
                });
            }
            Some(inner) => {
                inner.lock().insert(peer_id.clone(), recv_queue);
            }
        };
    }

    fn peer_disconnected(&self, peer_id: &PeerIdentity) {
        let peer_removed = self.peers.remove_sync(peer_id).is_some();
        self.refresh_single_peer_cache();
        match &self.fair_queue_inner {
            None => {}
            Some(inner) => {
                inner.lock().remove(peer_id);
            }
        };

        if peer_removed {
            if let Some(monitor) = self.monitor().lock().as_mut() {
                let _ = monitor.try_send(SocketEvent::Disconnected(peer_id.clone()));
            }
        }

        // Notify reconnection task if registered
        if let Some(mut notifier) = self.disconnect_notifiers.lock().remove(peer_id) {
            // Use try_send to avoid blocking - if channel is full, the reconnect task
            // will eventually notice the peer is gone
            let _ = notifier.try_send(peer_id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ZmqMessage;

    use bytes::Bytes;
    use futures::StreamExt;

    fn message_with_frame(frame: &'static [u8]) -> Message {
        Message::Message(ZmqMessage::from(Bytes::from_static(frame)))
    }

    fn first_frame(message: Message) -> Bytes {
        let Message::Message(message) = message else {
            panic!("unexpected queued message type");
        };
        message.get(0).expect("message frame").clone()
    }

    async fn insert_peer(
        backend: &GenericSocketBackend,
        peer_id: PeerIdentity,
    ) -> (PeerIdentity, mpsc::Receiver<Message>) {
        let (send_queue, recv_queue) = mpsc::channel(8);
        backend
            .peers
            .upsert_async(peer_id.clone(), Peer { send_queue, raw_fd: None })
            .await;
        backend.refresh_single_peer_cache();
        backend.round_robin.push(peer_id.clone());
        (peer_id, recv_queue)
    }

    #[crate::async_rt::test]
    async fn test_send_round_robin_uses_single_peer_cache() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        let (_peer_id, mut recv_queue) =
            insert_peer(&backend, "peer-a".parse().expect("peer id")).await;

        assert_eq!(1, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_some());

        backend
            .send_round_robin(message_with_frame(b"payload"))
            .await
            .expect("send through single peer cache");

        let queued = recv_queue.next().await.expect("queued message");
        assert_eq!(Bytes::from_static(b"payload"), first_frame(queued));
    }

    #[crate::async_rt::test]
    async fn test_send_to_peer_uses_single_peer_cache_for_matching_identity() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (peer_id, mut recv_queue) =
            insert_peer(&backend, "router-peer".parse().expect("peer id")).await;

        assert_eq!(
            Some(peer_id.clone()),
            backend
                .single_peer
                .lock()
                .as_ref()
                .map(|peer| peer.peer_id.clone())
        );

        backend
            .send_to_peer(&peer_id, message_with_frame(b"routed"))
            .await
            .expect("send to cached peer");

        let queued = recv_queue.next().await.expect("queued message");
        assert_eq!(Bytes::from_static(b"routed"), first_frame(queued));
    }

    #[crate::async_rt::test]
    async fn test_send_to_peer_routes_by_identity_with_multiple_peers() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (_first_peer_id, mut first_recv_queue) =
            insert_peer(&backend, "router-peer-a".parse().expect("peer id")).await;
        let (second_peer_id, mut second_recv_queue) =
            insert_peer(&backend, "router-peer-b".parse().expect("peer id")).await;

        assert_eq!(2, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_none());

        backend
            .send_to_peer(&second_peer_id, message_with_frame(b"routed-b"))
            .await
            .expect("send to selected peer");

        assert!(first_recv_queue.try_recv().is_err());
        let queued = second_recv_queue.next().await.expect("queued message");
        assert_eq!(Bytes::from_static(b"routed-b"), first_frame(queued));
    }

    #[crate::async_rt::test]
    async fn test_send_round_robin_waits_when_cached_sender_is_full() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        let peer_id: PeerIdentity = "full-peer".parse().expect("peer id");
        let (mut send_queue, mut recv_queue) = mpsc::channel(1);
        send_queue
            .try_send(message_with_frame(b"prefilled"))
            .expect("prefill peer queue");
        backend
            .peers
            .upsert_async(peer_id.clone(), Peer { send_queue, raw_fd: None })
            .await;
        backend.refresh_single_peer_cache();
        backend.round_robin.push(peer_id.clone());

        let send_future = backend.send_round_robin(message_with_frame(b"after-full"));
        let recv_future = async {
            let first = recv_queue.next().await.expect("prefilled message");
            let second = recv_queue
                .next()
                .await
                .expect("message sent after capacity frees");
            (first, second)
        };

        let (send_result, (first, second)) = futures::join!(send_future, recv_future);

        send_result.expect("send waits for cached sender capacity");
        assert_eq!(Bytes::from_static(b"prefilled"), first_frame(first));
        assert_eq!(Bytes::from_static(b"after-full"), first_frame(second));
    }

    #[crate::async_rt::test]
    async fn test_single_peer_cache_is_cleared_when_cached_sender_is_disconnected() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::PUSH, SocketOptions::default());
        let peer_id: PeerIdentity = "closed-peer".parse().expect("peer id");
        let (send_queue, recv_queue) = mpsc::channel(1);
        drop(recv_queue);
        backend
            .peers
            .upsert_async(peer_id.clone(), Peer { send_queue, raw_fd: None })
            .await;
        backend.refresh_single_peer_cache();
        backend.round_robin.push(peer_id.clone());

        let error = backend
            .send_round_robin(message_with_frame(b"lost"))
            .await
            .expect_err("closed cached sender should fail");

        assert!(matches!(error, ZmqError::BufferFull(_)));
        assert_eq!(0, backend.peer_count.load(Ordering::Acquire));
        assert!(backend.single_peer.lock().is_none());
        assert!(backend.peers.get_async(&peer_id).await.is_none());
    }

    #[crate::async_rt::test]
    async fn test_peer_disconnected_emits_one_monitor_event() {
        let backend =
            GenericSocketBackend::with_options(None, SocketType::ROUTER, SocketOptions::default());
        let (monitor_sender, mut monitor_receiver) = mpsc::channel(8);
        backend.socket_monitor.lock().replace(monitor_sender);
        let (peer_id, _recv_queue) =
            insert_peer(&backend, "monitor-peer".parse().expect("peer id")).await;

        backend.peer_disconnected(&peer_id);

        let event = monitor_receiver.next().await.expect("disconnect event");
        assert!(matches!(
            event,
            SocketEvent::Disconnected(disconnected_peer) if disconnected_peer == peer_id
        ));

        backend.peer_disconnected(&peer_id);
        assert!(monitor_receiver.try_recv().is_err());
    }
}
