//! Where a guest call runs. A call is a future (the engine is async), and
//! the task that wants its answer polls it: a short call, which most are,
//! costs no hand-off to another thread and back (two thread wake-ups per
//! request when every call ran on the executor's own thread: docs/
//! benchmarks.md, "The floor").
//!
//! A call that is still running after [`OFFLOAD_AFTER`] moves, as it is, to a
//! thread of its own for the rest of it: the guest may compute for as long as
//! its time limit, and a tokio worker must not be held that long. The epoch
//! callback makes the guest yield at every tick (10 ms) while it is not on its
//! own thread, which is the moment it can move; so a call holds a worker for
//! at most about one tick. On its own thread it runs on without yielding and
//! may drop to background priority (`Sandbox::background_after`), which
//! cannot be undone; the thread ends with the call.
//!
//! A call moves only when it yielded at an epoch tick (it was computing),
//! never while it waits on a host future (a sleep): such a future belongs to
//! the process's runtime, whose shutdown (TERMINATE during the call) would
//! make it panic on the call's thread. The call's thread runs a runtime of
//! its own, so what the call waits on after it moved lives as long as the
//! call does.

use std::cell::Cell;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// How long a call runs on the task that polls it before it moves to a
/// thread of its own, at the first moment it yields after that. A thread's
/// start (~50 µs) is small beside a call this long.
pub const OFFLOAD_AFTER: Duration = Duration::from_millis(1);

thread_local! {
    /// Set on a thread started for one call.
    static CALL_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set when the call polled on this thread yielded at an epoch tick.
    static YIELDED: Cell<bool> = const { Cell::new(false) };
    /// Set when the call polled on this thread asked to move now
    /// ([`move_now`]).
    static MOVE: Cell<bool> = const { Cell::new(false) };
}

/// Called by the epoch callback as it makes the call yield.
pub(super) fn yielded() {
    YIELDED.set(true);
}

/// Asks the [`run`] polling this call to move it to a thread of its own at
/// once: what follows would hold up the task that polls it (the walks of a
/// workspace too large to walk inline, `quota::INLINE_WALK`). Elsewhere (on
/// the call's own thread, or under a plain `block_on`) it yields once.
pub(super) async fn move_now() {
    if on_call_thread() {
        return;
    }
    let mut asked = false;
    std::future::poll_fn(|cx| {
        if asked {
            return std::task::Poll::Ready(());
        }
        asked = true;
        MOVE.set(true);
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// Whether the calling thread is a call's own (started by [`run`]).
pub(super) fn on_call_thread() -> bool {
    CALL_THREAD.get()
}

/// Polls `call` here until it finishes, or moves it to a thread of its own
/// (named after the executor, `name`) once it has run for [`OFFLOAD_AFTER`]
/// and yields at an epoch tick, and waits for it there. Must run inside a
/// tokio runtime. When no thread can be started, the call goes on here.
///
/// `call` comes boxed, as it would be moved: a guest call's future is
/// several KiB, and a request path that boxed it twice (or boxed and then
/// copied it) paid for that on every request.
///
/// # Panics
/// When the call panics on its own thread (as it would have here).
pub async fn run<F>(name: &str, mut call: Pin<Box<F>>) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let started = Instant::now();
    let finished = std::future::poll_fn(|cx| {
        YIELDED.set(false);
        MOVE.set(false);
        match call.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
            // `replace`: a call nested in this one (a reload's start) that
            // asked and moved does not move this one too.
            std::task::Poll::Pending
                if MOVE.replace(false) || (YIELDED.get() && started.elapsed() >= OFFLOAD_AFTER) =>
            {
                std::task::Poll::Ready(None)
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await;
    if let Some(output) = finished {
        return output;
    }
    let tokio = tokio::runtime::Handle::current();
    let (done, answer) = tokio::sync::oneshot::channel();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(call)));
    let moved = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("call {name}"))
        .spawn(move || {
            CALL_THREAD.set(true);
            let call = moved.lock().expect("call lock").take().expect("moved once");
            let output = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(own) => own.block_on(call),
                Err(e) => {
                    tracing::warn!(
                        "cannot start a runtime for a long guest call, it uses the process's: {e}"
                    );
                    tokio.block_on(call)
                }
            };
            let _ = done.send(output);
        });
    match spawned {
        Ok(_) => answer
            .await
            .unwrap_or_else(|_| panic!("a guest call panicked on its own thread")),
        Err(e) => {
            tracing::warn!("cannot start a thread for a long guest call, it goes on here: {e}");
            let call = slot.lock().expect("call lock").take().expect("not moved");
            call.await
        }
    }
}

/// Runs a call to the end on this thread, for the blocking methods
/// (`Executor::start`, `handle`, ...): on a current-thread runtime of the
/// thread's own, made on first use. (wasmtime-wasi's `in_tokio` goes through
/// a multi-thread runtime and yields once per call, which made a 1-doc
/// `handle` 3.5 µs slower.)
///
/// # Panics
/// Inside async code, as any `block_on` does.
pub(super) fn block_on<F: Future>(call: F) -> F::Output {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok();
    }
    RUNTIME.with(|runtime| match runtime {
        Some(runtime) => runtime.block_on(call),
        // None could be made (out of file descriptors): the shared one.
        None => wasmtime_wasi::runtime::in_tokio(call),
    })
}
