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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::http_server::{idle_error, stalled};

/// Accepted connections, each holding one of `max` slots until it closes.
pub fn capped(
    listener: TcpListener,
    max: usize,
    silence: Duration,
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
                    let capped = Capped {
                        inner,
                        _slot: permit,
                        silence,
                        quiet: None,
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
    silence: Duration,
    quiet: Option<Pin<Box<Sleep>>>,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
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
