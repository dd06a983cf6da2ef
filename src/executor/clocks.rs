//! The guest's clocks, and sleeping that cannot outlast a call.
//!
//! wasmtime-wasi runs a guest's `poll` (what `std::thread::sleep` becomes) on
//! the host without returning to wasm, and an epoch deadline only interrupts
//! wasm code: a guest sleeping for an hour, or forever (a duration too large
//! to represent), would hold its call past any `--timeout-request`.
//! So the host replaces `wasi:clocks/monotonic-clock`'s `subscribe-duration`
//! and `subscribe-instant`: a sleep that ends before the call's deadline is
//! unchanged; one that would end after it stops the guest at once with
//! `timeout` ("asked to sleep past its time limit").

use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

use super::state::ExecutorState;

/// The WASI version wasmtime-wasi 48 defines its interfaces under; the
/// replacements must shadow exactly those names.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The monotonic clock the guest sees: nanoseconds since its instance began.
/// Ours (not wasmtime-wasi's) so `subscribe-instant` can relate the guest's
/// instants to the host's.
#[derive(Clone, Copy)]
pub struct Monotonic {
    origin: Instant,
}

impl Monotonic {
    pub fn new() -> Self {
        Monotonic {
            origin: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.now_ns()
    }
}

/// The wall clock of a deterministic sandbox: always the Unix epoch.
pub struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A sleep that ends at `until`.
struct Wake {
    until: tokio::time::Instant,
}

#[async_trait::async_trait]
impl Pollable for Wake {
    async fn ready(&mut self) {
        // A zero sleep (wasi-libc's non-blocking poll) still yields once, as
        // wasmtime-wasi's own does, so the reactor gets a turn.
        if self.until <= tokio::time::Instant::now() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep_until(self.until).await;
        }
    }
}

/// A pollable ready after `wanted`, when that is before the call's deadline.
/// A sleep that would end past the deadline is not slept at all: the call is
/// marked and the epoch deadline moved to now, so the epoch callback stops
/// the guest with `timeout` as soon as it is back in wasm (before it polls).
/// Waking it at the deadline instead would only waste the time between, and
/// leave a race with the epoch ticker, which runs slightly behind the clock.
fn wake_after(
    mut store: StoreContextMut<'_, ExecutorState>,
    wanted: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let now = Instant::now();
    let until = match now.checked_add(wanted) {
        Some(at) if at < store.data().watch.deadline => at,
        _ => {
            store.data_mut().watch.slept_past = true;
            store.set_epoch_deadline(0);
            now
        }
    };
    let state = store.data_mut();
    let wake = state.table.push(Wake {
        until: tokio::time::Instant::from_std(until),
    })?;
    subscribe(&mut state.table, wake)
}

/// Shadows the two subscribe functions in a linker that already has WASI.
pub(super) fn add_to_linker(linker: &mut Linker<ExecutorState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |store, (nanos,): (u64,)| {
        Ok((wake_after(store, Duration::from_nanos(nanos))?,))
    })?;
    clock.func_wrap("subscribe-instant", |store, (when,): (u64,)| {
        let now = store.data().clock.now_ns();
        Ok((wake_after(
            store,
            Duration::from_nanos(when.saturating_sub(now)),
        )?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}
