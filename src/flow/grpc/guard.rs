//! What a gRPC call may hold before the Flow takes its requests
//! (docs/limits.md, "gRPC"). A hostile test held 405 MiB with 100 streams of
//! one connection, each sending all but the last KiB of a 4 MB message, and
//! 916 MiB with 200 complete 3.9 MiB requests decoded and waiting for a Flow
//! slot. Every service's request body goes through [`Guarded`]:
//!
//! - **Budget**: a message's bytes past its first frame are read only once
//!   it holds its size (at most `MAX_MESSAGE`) of the gateway-wide
//!   [`MAX_PENDING_BYTES`]; it holds them until the Flow takes the request
//!   (a slot, `mod.rs`), or the call ends. A message waiting for budget is
//!   not read, so HTTP/2 flow control holds its client back (at most the
//!   stream's window, [`STREAM_WINDOW`], waits in the server).
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
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
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
pub const MAX_PENDING_BYTES: usize = 8 * MAX_MESSAGE;

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
pub struct Admissions(Arc<Mutex<VecDeque<Option<OwnedSemaphorePermit>>>>);

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
    pub fn next(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().ok()?.pop_front().flatten()
    }

    fn push(&self, permit: Option<OwnedSemaphorePermit>) {
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
            kill: connection.map(|c| c.kill),
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            held: None,
            acquiring: None,
            progress: None,
        });
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body read message by message (gRPC's 5-byte prefix: a flag
/// and the length).
struct GuardBody {
    inner: Body,
    budget: Arc<Semaphore>,
    idle: Duration,
    admissions: Admissions,
    peer: Option<SocketAddr>,
    /// Closes the connection (listener.rs).
    kill: Option<CancellationToken>,
    prefix: [u8; 5],
    /// Bytes of the current message's prefix seen.
    prefix_len: usize,
    /// Bytes of the current message still to come, once its prefix is in.
    remaining: usize,
    /// The current message's budget.
    held: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquiring>,
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
                    if self.remaining == 0 {
                        self.complete();
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
    fn complete(&mut self) {
        self.admissions.push(self.held.take());
        self.progress = None;
        self.prefix_len = 0;
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
        // Tonic asks for more of a message whose prefix is in: its budget
        // first (a message declared past MAX_MESSAGE is refused by tonic as
        // soon as its prefix is read).
        if this.prefix_len == 5 && this.remaining > 0 && this.held.is_none() {
            let want = (this.remaining + 5).min(MAX_MESSAGE + 5) as u32;
            let budget = &this.budget;
            let acquiring = this
                .acquiring
                .get_or_insert_with(|| Box::pin(budget.clone().acquire_many_owned(want)));
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    this.acquiring = None;
                    // (The semaphore is never closed.)
                    this.held = permit.ok();
                    this.watch();
                }
            }
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.count(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(budget: &Arc<Semaphore>) -> GuardBody {
        GuardBody {
            inner: Body::empty(),
            budget: budget.clone(),
            idle: Duration::from_secs(1),
            admissions: Admissions::default(),
            peer: None,
            kill: None,
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            held: None,
            acquiring: None,
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
        b.held = Some(budget.clone().try_acquire_many_owned(15).unwrap());
        assert_eq!(budget.available_permits(), 85);
        b.count(&[0; 8]);
        assert_eq!(b.prefix_len, 0);
        let a = b.admissions.clone();
        assert!(a.next().is_none());
        assert!(a.next().is_none());
        let third = a.next().expect("the third message's budget");
        assert_eq!(third.num_permits(), 15);
        drop(third);
        assert_eq!(budget.available_permits(), 100);
        assert!(a.next().is_none());
    }
}
