//! The gRPC gateway's connections under the limits of the HTTP side
//! (docs/limits.md, "HTTP servers"): tonic's server has no connection cap and
//! no timeout for a connection that never speaks (a hostile test held 20,000
//! half-open connections and the process ran out of file descriptors).
//!
//! - **Connection cap** (`--http-max-connections`): past it no connection is
//!   accepted until one closes; the kernel's backlog holds the rest.
//! - **Silence** (`--http-idle-timeout`): a connection from which no byte has
//!   arrived for this long is closed. A live HTTP/2 client is never silent
//!   that long: the server pings it every third of the timeout (the
//!   keepalive set in `mod.rs`) and its acknowledgement is a read; a client
//!   that sent half a preface, or nothing, gets no ping and is closed.
//! - **Kill switch**: each connection's [`Connection`] (its `ConnectInfo`,
//!   in every request's extensions) closes it when cancelled: guard.rs does
//!   it to a connection whose message comes too slowly.
//! - **Share**: each connection's [`Connection::share`] of the bytes its
//!   requests may hold before the Flow takes them (guard.rs).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use std::future::Future as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::http_server::{idle_error, stalled};

/// Accepted connections, each holding one of `max` slots until it closes,
/// each with a `share` of the pending bytes.
pub fn capped(
    listener: TcpListener,
    max: usize,
    silence: Duration,
    share: usize,
) -> impl Stream<Item = std::io::Result<Capped>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match listener.accept().await {
                Ok((inner, _)) => {
                    let _ = inner.set_nodelay(true);
                    let kill = CancellationToken::new();
                    let capped = Capped {
                        inner,
                        _slot: permit,
                        share: Arc::new(Semaphore::new(share)),
                        silence,
                        quiet: None,
                        killed: Box::pin(kill.clone().cancelled_owned()),
                        kill,
                    };
                    return Some((Ok(capped), (listener, slots)));
                }
                Err(e) => {
                    // EMFILE and the like: wait for descriptors to be freed.
                    tracing::warn!("gRPC: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// A connection that gives its slot back when dropped and fails its reads
/// once nothing has arrived for `silence`.
pub struct Capped {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    share: Arc<Semaphore>,
    silence: Duration,
    quiet: Option<Pin<Box<Sleep>>>,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// What a request knows of its connection.
#[derive(Clone)]
pub struct Connection {
    pub tcp: TcpConnectInfo,
    /// Cancelled: the connection's reads fail, so it closes.
    pub kill: CancellationToken,
    /// Bytes its messages may hold until the Flow takes them (guard.rs).
    pub share: Arc<Semaphore>,
}

impl Connected for Capped {
    type ConnectInfo = Connection;

    fn connect_info(&self) -> Connection {
        Connection {
            tcp: self.inner.connect_info(),
            kill: self.kill.clone(),
            share: self.share.clone(),
        }
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "closed: a request message came too slowly",
            )));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // The HTTP side's stall timer and error (src/http_server.rs).
            Poll::Pending => match stalled(&mut this.quiet, this.silence, cx) {
                Poll::Ready(()) => Poll::Ready(Err(idle_error(this.silence, "arrived"))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                this.quiet = None;
                ready
            }
        }
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
