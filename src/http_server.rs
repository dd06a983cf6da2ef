//! The HTTP server loop of the gateway and the daemon API: an axum router on
//! hyper's HTTP/1 connections, with the limits `axum::serve` leaves out
//! (docs/limits.md, "HTTP servers"):
//!
//! - **Header-read timeout** (hyper's own; it needs a timer, which
//!   `axum::serve` does not give it, so it never ran): from when the server
//!   waits for a request (a new connection, or a kept-alive one after its
//!   last answer) until the request's headers are in. A slow-loris client, or
//!   a connection that sends nothing, is closed.
//! - **Idle timeout**: while a request's body is read or an answer written,
//!   no byte moving for this long closes the connection. The time a request
//!   spends being answered (a Flow call) is not idle.
//! - **Body rate floor**: a body still arriving after the idle timeout must
//!   have come at [`MIN_BODY_RATE`] on average, so a client that dribbles a
//!   byte now and then (never idle for long) cannot hold its connection for
//!   the days a whole body would take.
//! - **Connection cap**: past it the server stops accepting until a
//!   connection closes; the kernel's listen backlog holds the rest.
//!
//! Written here rather than taken from a crate: `axum::serve` has no knobs
//! for these, and tower-http's body timeout would be one more dependency for
//! twenty lines; hyper does the HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use hyper::body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// The slowest average a request body may arrive at, once it has taken
/// longer than the idle timeout: 16 KiB/s (a 2 MiB gateway request in two
/// minutes; a 256 MiB upload in four and a half hours).
pub const MIN_BODY_RATE: u64 = 16 << 10;

/// The limits of an HTTP server (`--http-*` on `flow`, `gateway` and `daemon`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HttpLimits {
    /// HTTP: how long a client may take to send a request's headers, counted
    /// from when the server waits for them (a new connection, or a kept-alive
    /// one after its last answer); then the connection is closed. So also how
    /// long a connection may sit idle between requests.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration, default_value = "10s")]
    pub http_header_timeout: Duration,

    /// HTTP: while a request's body is read or its answer written, how long
    /// no byte may move before the connection is closed (the time spent
    /// answering is not idle). gRPC: how long a connection may send nothing
    /// (live clients are pinged every third of it).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration, default_value = "30s")]
    pub http_idle_timeout: Duration,

    /// HTTP and gRPC: connections served at once (each port its own count);
    /// past it, new ones wait to be accepted until one closes.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(30),
            http_max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes;
/// then stops accepting, lets every connection finish the request it is
/// answering, and returns once all have closed.
///
/// # Errors
/// None today: a failed accept (out of file descriptors) is logged and
/// retried; a connection's error ends only that connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.http_max_connections as usize));
    let stop = CancellationToken::new();
    // Every connection task holds a clone; `recv` returns `None` once all ended.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let idle = limits.http_idle_timeout;
    let app = app.layer(axum::middleware::map_request(
        move |request: Request| async move {
            request.map(|body| {
                Body::new(IdleBody {
                    inner: body,
                    idle,
                    stall: None,
                    started: tokio::time::Instant::now(),
                    received: 0,
                })
            })
        },
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait for descriptors to be freed.
                    tracing::warn!("HTTP: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, stop, done, header_timeout) = (
            app.clone(),
            stop.clone(),
            done_tx.clone(),
            limits.http_header_timeout,
        );
        tokio::spawn(async move {
            let _slot = permit;
            let _done = done;
            let io = TokioIo::new(IdleIo {
                inner: stream,
                idle,
                stall: None,
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            // Handlers can see who connected (the gateway's admin route
            // answers loopback peers only, unless it has a token).
            let service = TowerToHyperService::new(app);
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    hyper::service::Service::call(&service, request)
                },
            );
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!("HTTP connection closed: {e}");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    stop.cancel();
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

/// `Some(deadline)` while an operation is stalled; `Ready(())` once it has
/// stalled for `idle` (armed at the first `Pending`, cleared by progress).
pub(crate) fn stalled(
    stall: &mut Option<Pin<Box<Sleep>>>,
    idle: Duration,
    cx: &mut Context<'_>,
) -> Poll<()> {
    stall
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)))
        .as_mut()
        .poll(cx)
}

pub(crate) fn idle_error(idle: Duration, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no byte {what} for {idle:?} (--http-idle-timeout)"),
    )
}

/// A connection's socket whose writes fail once they have been blocked for
/// `idle` (a client that stopped reading its answer).
struct IdleIo {
    inner: TcpStream,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => match stalled(&mut this.stall, this.idle, cx) {
                Poll::Ready(()) => Poll::Ready(Err(idle_error(this.idle, "could be written"))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                this.stall = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match stalled(&mut this.stall, this.idle, cx) {
                Poll::Ready(()) => Poll::Ready(Err(idle_error(this.idle, "could be written"))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                this.stall = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails once no byte of it has arrived for `idle`, or
/// when, past `idle`, it has come slower than [`MIN_BODY_RATE`].
struct IdleBody {
    inner: Body,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    started: tokio::time::Instant,
    received: u64,
}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => match stalled(&mut this.stall, this.idle, cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(idle_error(
                    this.idle,
                    "of the request body arrived",
                ))))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                this.stall = None;
                if let Poll::Ready(Some(Ok(frame))) = &ready
                    && let Some(data) = frame.data_ref()
                {
                    this.received += data.len() as u64;
                    let elapsed = this.started.elapsed();
                    if elapsed > this.idle
                        && (this.received as f64) < MIN_BODY_RATE as f64 * elapsed.as_secs_f64()
                    {
                        return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the request body came at {:.0} bytes/s over {elapsed:.0?}, under the {MIN_BODY_RATE} bytes/s every body must average",
                                this.received as f64 / elapsed.as_secs_f64()
                            ),
                        )))));
                    }
                }
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
