//! What a gRPC call may hold before the Flow takes its requests
//! (docs/limits.md, "gRPC"). A hostile test held 405 MiB with 100 streams of
//! one connection, each sending all but the last KiB of a 4 MB message, and
//! 916 MiB with 200 complete 3.9 MiB requests decoded and waiting for a Flow
//! slot. Every service's request body goes through [`Guarded`]:
//!
//! - **Budget**: every message of at least one byte holds its size (and its
//!   5-byte prefix, at most `MAX_MESSAGE` + 5) of the gateway-wide
//!   [`MAX_PENDING_BYTES`] from when it is read until the Flow takes the
//!   request (a slot, `mod.rs`), or the call ends. A message past its first
//!   frame takes it before its next frame is read; one that came whole in a
//!   frame, before tonic sees the frame. A message waiting for budget is not
//!   read, so HTTP/2 flow control holds its client back (at most the
//!   stream's window, [`STREAM_WINDOW`], and one frame wait in the server).
//!   Empty messages (`dry_run`, `endpoint_discovery`) hold nothing, so a
//!   health check is answered while the budget is taken.
//! - **A connection's share**: a connection's messages hold at most
//!   [`CONNECTION_SHARE`] of the budget, two messages of the largest size;
//!   past it, its streams wait as above. Without it, 8 streams of one
//!   connection declaring 4 MB and trickling at the rate floor below held
//!   the whole budget for 4 minutes, and every other client waited.
//! - **Message deadline**: a message being read that receives no byte for
//!   `--http-idle-timeout`, or that has come slower than `MIN_BODY_RATE` on
//!   average once it has taken longer than that (the HTTP side's rules for a
//!   body), closes its connection, as the HTTP side closes one. A timer of
//!   its own watches it: the stream may not be polled meanwhile (a client
//!   that stops reading its answers stops its stream being read).
//! - **Streams per connection**: [`MAX_STREAMS`], with the windows below
//!   (set in `mod.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use super::MAX_MESSAGE;
use super::listener::Connection;
use crate::http_server::MIN_BODY_RATE;

/// Bytes of request messages the gateway reads before the Flow takes them,
/// all calls together: 8 messages of the largest size (`MAX_MESSAGE`), as
/// many as the Flow's default `prefetch` has in it at once. Decoded, a
/// message costs up to ~6 times its bytes (a dict of many small tags), so
/// this bounds what waiting requests hold to about 200 MiB at worst.
pub const MAX_PENDING_BYTES: usize = 8 * (MAX_MESSAGE + 5);

/// What one connection's messages may hold of [`MAX_PENDING_BYTES`]: a
/// quarter, two messages of the largest size. A connection over it waits
/// (flow control) rather than failing: a client that sends many calls on one
/// channel, as Jina's does, is served at the Flow's pace, and 4 connections
/// are needed to take the budget, each closed at the message deadline.
pub const CONNECTION_SHARE: usize = MAX_PENDING_BYTES / 4;
// A connection's share holds two messages of the largest size.
const _: () = assert!(CONNECTION_SHARE >= 2 * (MAX_MESSAGE + 5));

/// Concurrent streams per HTTP/2 connection (tonic leaves it unlimited).
/// Jina's client uses one stream per `post` call; a connection's streams
/// that wait for budget hold at most their window each (below).
pub const MAX_STREAMS: u32 = 64;

/// HTTP/2 receive window of a stream: what a stream whose message waits for
/// budget can hold in the server (hyper's default is 1 MiB).
pub const STREAM_WINDOW: u32 = 32 << 10;

/// HTTP/2 receive window of a connection: room for every stream's window
/// and 1 MiB more, so streams waiting for budget never fill it and the
/// connection's other streams keep flowing (with hyper's 1 MiB, 92 waiting
/// streams stopped the 8 being read, and those then failed the message
/// deadline). 3 MiB a connection at most, as an HTTP/1 connection's 2 MiB body.
pub const CONNECTION_WINDOW: u32 = MAX_STREAMS * STREAM_WINDOW + (1 << 20);

/// A call's messages' budget, one entry per message in the order they
/// arrived, taken in the same order by the handler as tonic decodes them.
#[derive(Clone, Default)]
pub struct Admissions(Arc<Mutex<VecDeque<Option<Admission>>>>);

/// A message's budget: of the gateway's and of its connection's share,
/// given back when dropped.
pub struct Admission {
    _pending: OwnedSemaphorePermit,
    _share: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
impl Admission {
    /// Bytes held (of the gateway's budget).
    fn bytes(&self) -> usize {
        self._pending.num_permits()
    }
}

/// Takes `bytes` of the connection's `share` (if any), then of `budget`.
async fn admit(
    budget: Arc<Semaphore>,
    share: Option<Arc<Semaphore>>,
    bytes: usize,
) -> Option<Admission> {
    let bytes = u32::try_from(bytes).ok()?;
    let share = match share {
        Some(share) => Some(share.acquire_many_owned(bytes).await.ok()?),
        None => None,
    };
    Some(Admission {
        _pending: budget.acquire_many_owned(bytes).await.ok()?,
        _share: share,
    })
}

impl Admissions {
    /// A call's (from its request's extensions).
    pub fn of<T>(request: &tonic::Request<T>) -> Admissions {
        request
            .extensions()
            .get::<Admissions>()
            .cloned()
            .unwrap_or_default()
    }

    /// The next decoded message's budget (`None`: it fit in one frame).
    pub fn next(&self) -> Option<Admission> {
        self.0.lock().ok()?.pop_front().flatten()
    }

    fn push(&self, permit: Option<Admission>) {
        if let Ok(mut queue) = self.0.lock() {
            queue.push_back(permit);
        }
    }
}

/// A service whose request bodies are read under the budget and deadline.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    budget: Arc<Semaphore>,
    idle: Duration,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, budget: &Arc<Semaphore>, idle: Duration) -> Guarded<S> {
        Guarded {
            inner,
            budget: budget.clone(),
            idle,
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> S::Future {
        let (mut parts, body) = request.into_parts();
        let admissions = Admissions::default();
        parts.extensions.insert(admissions.clone());
        let connection = parts.extensions.get::<Connection>().cloned();
        if let Some(c) = &connection {
            // What tonic's `remote_addr` reads.
            parts.extensions.insert(c.tcp.clone());
        }
        let body = Body::new(GuardBody {
            inner: body,
            budget: self.budget.clone(),
            idle: self.idle,
            admissions,
            peer: connection.as_ref().and_then(|c| c.tcp.remote_addr),
            share: connection.as_ref().map(|c| c.share.clone()),
            kill: connection.map(|c| c.kill),
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            held: None,
            acquiring: None,
            whole: Vec::new(),
            waiting: None,
            progress: None,
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Vec<Option<Admission>>> + Send>>;

/// A request body read message by message (gRPC's 5-byte prefix: a flag
/// and the length).
struct GuardBody {
    inner: Body,
    budget: Arc<Semaphore>,
    idle: Duration,
    admissions: Admissions,
    peer: Option<SocketAddr>,
    /// The connection's [`CONNECTION_SHARE`] (listener.rs).
    share: Option<Arc<Semaphore>>,
    /// Closes the connection (listener.rs).
    kill: Option<CancellationToken>,
    prefix: [u8; 5],
    /// Bytes of the current message's prefix seen.
    prefix_len: usize,
    /// Bytes of the current message still to come, once its prefix is in.
    remaining: usize,
    /// The current message's budget.
    held: Option<Admission>,
    /// Budget being taken: for the current message, or for `whole`.
    acquiring: Option<Acquiring>,
    /// Sizes of the messages that came whole in the frame just read, which
    /// take their budget before tonic sees it (`waiting`).
    whole: Vec<usize>,
    waiting: Option<Frame<Bytes>>,
    /// Bytes of the current message since it got its budget, for its watch.
    progress: Option<Arc<AtomicU64>>,
}

impl GuardBody {
    /// Follows the messages through `data`.
    fn count(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.prefix_len < 5 {
                let k = (5 - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + k].copy_from_slice(&data[..k]);
                self.prefix_len += k;
                data = &data[k..];
                if self.prefix_len == 5 {
                    let [_, a, b, c, d] = self.prefix;
                    self.remaining = u32::from_be_bytes([a, b, c, d]) as usize;
                    if self.remaining == 0 && self.whole.is_empty() {
                        // Empty: nothing to hold.
                        self.complete();
                    } else if self.remaining == 0 {
                        // Empty, after whole ones: in their order.
                        self.whole.push(0);
                        self.prefix_len = 0;
                    } else if self.remaining <= data.len() && self.held.is_none() {
                        // Whole in this frame: its budget is taken before
                        // tonic sees the frame (poll_frame).
                        self.whole.push(self.remaining + 5);
                        data = &data[self.remaining..];
                        self.remaining = 0;
                        self.prefix_len = 0;
                    }
                }
            } else {
                let k = self.remaining.min(data.len());
                self.remaining -= k;
                data = &data[k..];
                if let Some(progress) = &self.progress {
                    progress.fetch_add(k as u64, Ordering::Relaxed);
                }
                if self.remaining == 0 {
                    self.complete();
                }
            }
        }
    }

    /// The current message is in: its budget goes to the handler with it.
    /// (A message whole in a frame (`whole`) always comes after the one
    /// completed in that frame, whose budget was taken before the frame.)
    fn complete(&mut self) {
        self.admissions.push(self.held.take());
        self.progress = None;
        self.prefix_len = 0;
    }

    /// Takes the budget of messages of these sizes, one after the other.
    fn admit(&self, sizes: Vec<usize>) -> Acquiring {
        let (budget, share) = (self.budget.clone(), self.share.clone());
        Box::pin(async move {
            let mut admitted = Vec::with_capacity(sizes.len());
            for size in sizes {
                admitted.push(match size {
                    0 => None,
                    _ => admit(budget.clone(), share.clone(), size).await,
                });
            }
            admitted
        })
    }

    /// Watches the current message until it is in (or the body is dropped):
    /// past the deadline, its connection is closed.
    fn watch(&mut self) {
        let Some(kill) = self.kill.clone() else {
            return;
        };
        let progress = Arc::new(AtomicU64::new(0));
        let weak = Arc::downgrade(&progress);
        self.progress = Some(progress);
        let [_, a, b, c, d] = self.prefix;
        let (idle, size) = (self.idle, u32::from_be_bytes([a, b, c, d]));
        let peer = self
            .peer
            .map_or_else(|| "a client".to_owned(), |p| p.to_string());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let (mut seen, mut moved) = (0, started);
            let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    () = kill.cancelled() => return,
                }
                let Some(received) = weak.upgrade().map(|p| p.load(Ordering::Relaxed)) else {
                    return;
                };
                let now = tokio::time::Instant::now();
                if received != seen {
                    (seen, moved) = (received, now);
                }
                let elapsed = now - started;
                let why = if now - moved >= idle {
                    format!("no byte of it arrived for {idle:?}")
                } else if elapsed > idle
                    && (received as f64) < MIN_BODY_RATE as f64 * elapsed.as_secs_f64()
                {
                    format!(
                        "it came at {:.0} bytes/s over {elapsed:.0?}, under the {MIN_BODY_RATE} bytes/s every message must average",
                        received as f64 / elapsed.as_secs_f64()
                    )
                } else {
                    continue;
                };
                tracing::warn!(
                    "gRPC: closing the connection from {peer}: a {size}-byte request message is incomplete and {why}"
                );
                kill.cancel();
                return;
            }
        });
    }
}

impl http_body::Body for GuardBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(acquiring) = &mut this.acquiring {
                let admitted = std::task::ready!(acquiring.as_mut().poll(cx));
                this.acquiring = None;
                if let Some(frame) = this.waiting.take() {
                    // The frame's whole messages, in order.
                    for admission in admitted {
                        this.admissions.push(admission);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                // (The semaphores are never closed.)
                this.held = admitted.into_iter().next().flatten();
                this.watch();
            } else if this.prefix_len == 5 && this.remaining > 0 && this.held.is_none() {
                // Tonic asks for more of a message whose prefix is in: its
                // budget first (a message declared past MAX_MESSAGE is
                // refused by tonic as soon as its prefix is read).
                let [_, a, b, c, d] = this.prefix;
                let size = u32::from_be_bytes([a, b, c, d]) as usize;
                let want = vec![size.min(MAX_MESSAGE) + 5];
                this.acquiring = Some(this.admit(want));
                continue;
            }
            let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
            if let Some(Ok(read)) = &frame
                && let Some(data) = read.data_ref()
            {
                this.count(data);
                if !this.whole.is_empty() {
                    let whole = std::mem::take(&mut this.whole);
                    this.acquiring = Some(this.admit(whole));
                    this.waiting = frame.and_then(Result::ok);
                    continue;
                }
            }
            return Poll::Ready(frame);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn body(budget: &Arc<Semaphore>) -> GuardBody {
        GuardBody {
            inner: Body::empty(),
            budget: budget.clone(),
            idle: Duration::from_secs(1),
            admissions: Admissions::default(),
            peer: None,
            share: None,
            kill: None,
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            held: None,
            acquiring: None,
            whole: Vec::new(),
            waiting: None,
            progress: None,
        }
    }

    #[test]
    fn messages_are_followed_across_frames_with_their_budget() {
        let budget = Arc::new(Semaphore::new(100));
        let mut b = body(&budget);
        // A 3-byte message whose prefix is split, an empty one, then 10
        // bytes that take budget (as poll_frame takes it) before their rest.
        b.count(&[0, 0, 0]);
        b.count(&[0, 3, 7, 7]);
        assert_eq!((b.prefix_len, b.remaining), (5, 1));
        b.count(&[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2]);
        assert_eq!((b.prefix_len, b.remaining), (5, 8));
        b.held = Some(Admission {
            _pending: budget.clone().try_acquire_many_owned(15).unwrap(),
            _share: None,
        });
        assert_eq!(budget.available_permits(), 85);
        b.count(&[0; 8]);
        assert_eq!(b.prefix_len, 0);
        let a = b.admissions.clone();
        assert!(a.next().is_none());
        assert!(a.next().is_none());
        let third = a.next().expect("the third message's budget");
        assert_eq!(third.bytes(), 15);
        drop(third);
        assert_eq!(budget.available_permits(), 100);
        assert!(a.next().is_none());
    }

    /// A body of these DATA frames.
    struct Frames(VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn reading(
        budget: &Arc<Semaphore>,
        share: Option<&Arc<Semaphore>>,
        frames: &[&[u8]],
    ) -> GuardBody {
        let mut b = body(budget);
        b.inner = Body::new(Frames(
            frames.iter().map(|f| Bytes::copy_from_slice(f)).collect(),
        ));
        b.share = share.cloned();
        b
    }

    /// Polls once: `Some(true)`, a frame; `Some(false)`, the end; `None`, waiting.
    fn poll(b: &mut GuardBody) -> Option<bool> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(b).poll_frame(&mut cx) {
            Poll::Ready(frame) => Some(frame.is_some()),
            Poll::Pending => None,
        }
    }

    /// Found by the last review: a message that came whole in one DATA
    /// frame held no budget, so small ones were bounded only by streams.
    #[test]
    fn messages_whole_in_a_frame_take_their_budget_before_tonic_sees_them() {
        let budget = Arc::new(Semaphore::new(30));
        // 10 bytes, an empty message (a dry_run's), 3 bytes; then 10 more.
        let mut one = vec![0, 0, 0, 0, 10];
        one.extend_from_slice(&[1; 10]);
        one.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]);
        let mut two = vec![0, 0, 0, 0, 10];
        two.extend_from_slice(&[1; 10]);
        let mut b = reading(&budget, None, &[&one, &two]);
        assert_eq!(poll(&mut b), Some(true));
        assert_eq!(budget.available_permits(), 30 - 15 - 8);
        let a = b.admissions.clone();
        let first = a.next().expect("the 10-byte message's budget");
        assert_eq!(first.bytes(), 15);
        assert!(a.next().is_none(), "an empty message holds nothing");
        let third = a.next().expect("the 3-byte message's budget");
        assert_eq!(third.bytes(), 8);
        // 7 are free: the next frame's message wants 15 and waits until
        // the first is given back.
        assert_eq!(poll(&mut b), None, "no budget: the frame waits");
        assert_eq!(poll(&mut b), None);
        drop(first);
        assert_eq!(poll(&mut b), Some(true));
        assert_eq!(budget.available_permits(), 7);
        assert_eq!(a.next().map(|p| p.bytes()), Some(15));
        assert_eq!(poll(&mut b), Some(false));
    }

    /// Found by the last review: 8 streams of one connection, each declaring
    /// a 4 MB message, held the whole budget while trickling at the rate
    /// floor. A connection now holds at most its share; its other streams
    /// wait, another connection's do not.
    #[test]
    fn a_connection_holds_at_most_its_share_of_the_budget() {
        let budget = Arc::new(Semaphore::new(100));
        let (hostile, other) = (Arc::new(Semaphore::new(40)), Arc::new(Semaphore::new(40)));
        // A 19-byte message (24 with its prefix) whose first frame has 1 byte.
        let start: &[u8] = &[0, 0, 0, 0, 19, 1];
        let mut streams: Vec<GuardBody> = (0..3)
            .map(|_| reading(&budget, Some(&hostile), &[start, &[1; 18]]))
            .collect();
        for s in &mut streams {
            assert_eq!(poll(s), Some(true));
        }
        assert_eq!(poll(&mut streams[0]), Some(true), "the share has room");
        assert_eq!(poll(&mut streams[1]), None, "past the connection's share");
        assert_eq!(budget.available_permits(), 100 - 24);
        let mut fair = reading(&budget, Some(&other), &[start, &[1; 18]]);
        assert_eq!(poll(&mut fair), Some(true));
        assert_eq!(poll(&mut fair), Some(true), "another connection is read");
        // The first message goes to the Flow: the connection's next is read.
        drop(streams[0].admissions.next());
        assert_eq!(poll(&mut streams[1]), Some(true));
        assert_eq!(hostile.available_permits(), 40 - 24);
    }
}
