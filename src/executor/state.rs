//! The host state of one instance: everything a guest's imports can reach.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{v1, v2};
use super::clocks::Monotonic;
use super::output::GuestOutput;
use super::quota::{Quota, Snapshot};
use super::sandbox::Limiter;

/// One per `Store`, so one per instance: instances share nothing.
pub struct ExecutorState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) output: GuestOutput,
    /// The guest's monotonic clock (the one its WASI context reads).
    pub(super) clock: Monotonic,
    /// The call in progress.
    pub(super) watch: Watch,
}

/// The call in progress, as the epoch callback and the sleep clamp see it.
pub(super) struct Watch {
    /// When the call must stop.
    pub deadline: Instant,
    /// The writable workspace, its quota and what it held when the call
    /// began (to roll back a call that broke the quota); `None` when no
    /// quota applies.
    pub quota: Option<(PathBuf, Quota, Snapshot)>,
    /// When the epoch callback next measures the workspace.
    pub next_check: Instant,
    /// Why the epoch callback stopped the call for the quota.
    pub over_quota: Option<String>,
    /// A sleep was cut short at the deadline: stop at the next epoch check.
    pub slept_past: bool,
    /// When the call's thread drops to background priority (`None`: never,
    /// or already did); only a thread of its own does (`offload`).
    pub demote_at: Option<Instant>,
}

impl Watch {
    pub fn idle() -> Watch {
        let now = Instant::now();
        Watch {
            deadline: now,
            quota: None,
            next_check: now,
            over_quota: None,
            slept_past: false,
            demote_at: None,
        }
    }

    /// Time until the callback must run next: the deadline, or the next
    /// workspace check.
    pub fn next_wake(&self, now: Instant) -> Duration {
        let mut at = self.deadline;
        if self.quota.is_some() {
            at = at.min(self.next_check);
        }
        if let Some(demote) = self.demote_at {
            at = at.min(demote);
        }
        at.saturating_duration_since(now)
    }
}

impl WasiView for ExecutorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl v2::jina::executor::types::Host for ExecutorState {}
impl v1::jina::executor::types::Host for ExecutorState {}

impl v2::jina::executor::log::Host for ExecutorState {
    fn log(&mut self, level: v2::LogLevel, message: String, fields: Vec<(String, String)>) {
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.output.log(level, &message, &fields);
    }
}

/// A 0.1.0 guest's log: the same levels, so the same output.
impl v1::jina::executor::log::Host for ExecutorState {
    fn log(&mut self, level: v1::LogLevel, message: String, fields: Vec<(String, String)>) {
        use v1::LogLevel as L;
        let level = match level {
            L::Trace => v2::LogLevel::Trace,
            L::Debug => v2::LogLevel::Debug,
            L::Info => v2::LogLevel::Info,
            L::Warn => v2::LogLevel::Warn,
            L::Error => v2::LogLevel::Error,
        };
        v2::jina::executor::log::Host::log(self, level, message, fields);
    }
}
