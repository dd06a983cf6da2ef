//! One live instance of an executor: making it (instantiate, `init`), calling
//! its exports through either contract version, and reading a failed call
//! (a trap, a limit, the guest's own error) as an [`ExecutorError`] of the
//! right kind; and the backoff between replacements whose `init` keeps failing.

use super::*;

/// The first wait after a replacement instance's `init` failed; it doubles
/// with every further failure, up to [`INIT_BACKOFF_MAX`].
pub const INIT_BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two attempts at a failing `init`.
pub const INIT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Crash-loop backoff: a trap discarded the instance and the replacement's
/// `init` failed `failures` times in a row. Until `until`, calls are answered
/// at once with `unavailable` (naming the last init error) instead of paying
/// for another `init` that would likely fail the same way (each can run for
/// `--timeout-init`). Cleared by the first `init` that succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitBackoff {
    pub failures: u32,
    pub until: Instant,
    pub last_error: ExecutorError,
}

impl InitBackoff {
    /// The wait after `failures` failed attempts: 1 s, 2 s, 4 s, ... 60 s.
    pub fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        INIT_BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(INIT_BACKOFF_MAX)
    }
}

/// One live instance.
pub(super) struct Live {
    pub(super) store: Store<ExecutorState>,
    pub(super) bindings: Bindings,
}

/// An instance's exports, of the contract version it implements.
pub(super) enum Bindings {
    V2(v2::ExecutorWorld),
    V1(v1::ExecutorWorld),
}

/// What one guest call returns: a trap (outer), or the guest's own answer.
pub(super) type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

impl Live {
    pub(super) async fn init(&mut self, config: &str) -> GuestResult<()> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_init(&mut self.store, config)
                .await
                .map(|r| r.map_err(Into::into)),
            Bindings::V1(b) => b
                .jina_executor_executor()
                .call_init(&mut self.store, config)
                .await
                .map(|r| r.map_err(Into::into)),
        }
    }

    /// `handle`, with the returned batch taken as a body (`Err(message)`: the
    /// guest's output is malformed).
    pub(super) async fn handle(
        &mut self,
        endpoint: &str,
        body: &Body,
        parameters: &str,
    ) -> GuestResult<Result<Body, String>> {
        match &self.bindings {
            Bindings::V2(b) => {
                let view = convert::v2::BatchView::new(body);
                b.jina_executor_executor()
                    .call_handle(&mut self.store, endpoint, view.param(), parameters)
                    .await
                    .map(|r| r.map(convert::v2::from_batch).map_err(Into::into))
            }
            Bindings::V1(b) => {
                let view = convert::v1::BatchView::new(body);
                b.jina_executor_executor()
                    .call_handle(&mut self.store, endpoint, view.param(), parameters)
                    .await
                    .map(|r| r.map(convert::v1::from_batch).map_err(Into::into))
            }
        }
    }

    pub(super) async fn dump(&mut self) -> GuestResult<()> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_dump(&mut self.store)
                .await
                .map(|r| r.map_err(Into::into)),
            Bindings::V1(b) => b
                .jina_executor_executor()
                .call_dump(&mut self.store)
                .await
                .map(|r| r.map_err(Into::into)),
        }
    }

    pub(super) async fn close(&mut self) -> wasmtime::Result<()> {
        match &self.bindings {
            Bindings::V2(b) => b.jina_executor_executor().call_close(&mut self.store).await,
            Bindings::V1(b) => b.jina_executor_executor().call_close(&mut self.store).await,
        }
    }

    /// The endpoints the component declares; `None` for a 0.1.0 component,
    /// which cannot say.
    pub(super) async fn endpoints(&mut self) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_endpoints(&mut self.store)
                .await
                .map(|list| Some(list.into_iter().map(|e| (e.name, e.doc)).collect())),
            Bindings::V1(_) => Ok(None),
        }
    }
}

/// The epoch deadline, in ticks from now, that a call (or an instantiation)
/// starts with when the callback has nothing to do for `wake`. Off a call's
/// own thread it is the next tick whatever `wake` is: the guest must yield
/// then, so that `offload::run` can move it, and the callback's own reasons
/// to run (the quota check, the demotion) may be far off or absent
/// (`--background-after 0` and no quota: only the deadline).
pub(super) fn first_deadline(wake: Duration) -> u64 {
    if offload::on_call_thread() {
        ticks(wake)
    } else {
        1
    }
}

/// The epoch callback: stops the call at its deadline (`Trap::Interrupt`, as
/// a plain epoch deadline would) or when its workspace has grown past its
/// quota. On a thread of its own (`offload`) the call then runs on until the
/// next of the two, and drops to background priority once it has run for
/// `Sandbox::background_after`; elsewhere it yields at every tick, so that
/// the task polling it can move it to a thread of its own.
pub(super) fn on_epoch(state: &mut ExecutorState) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let now = Instant::now();
    if now >= state.watch.deadline || state.watch.slept_past {
        return Err(Trap::Interrupt.into());
    }
    if now >= state.watch.next_check
        && let Some((dir, quota, before)) = &state.watch.quota
    {
        let usage = aside(before.usage.files, || Usage::of(dir)).unwrap_or(before.usage);
        if let Some(message) = usage.exceeds(&before.usage, quota) {
            state.watch.over_quota = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        state.watch.next_check = Instant::now() + QUOTA_CHECK.max(now.elapsed() * 10);
    }
    if !offload::on_call_thread() {
        offload::yielded();
        return Ok(wasmtime::UpdateDeadline::Yield(1));
    }
    if state.watch.demote_at.is_some_and(|at| now >= at) {
        state.watch.demote_at = None;
        tenant::demote_current_thread();
    }
    Ok(wasmtime::UpdateDeadline::Continue(ticks(
        state.watch.next_wake(Instant::now()),
    )))
}

pub(super) fn last_words(output: &GuestOutput) -> String {
    let lines = output.recent_stderr();
    match lines.last() {
        Some(line) if !line.trim().is_empty() => format!(" (last stderr: {})", line.trim()),
        _ => String::new(),
    }
}

impl Executor {
    /// Makes sure an instance is live: creates and `init`s one if the last was
    /// lost, unless the crash-loop backoff says to wait (then `unavailable`).
    pub(super) async fn ensure_live(&mut self) -> Result<(), ExecutorError> {
        if self.live.is_some() {
            return Ok(());
        }
        if let Some(backoff) = &self.backoff
            && let Some(left) = backoff.until.checked_duration_since(Instant::now())
        {
            let message = format!(
                "executor `{}` is unavailable: its instance was lost and a new one failed to start {} time{} in a row \
                 (crash-loop backoff, next attempt in {:.1}s); last init error ({}): {}",
                self.name,
                backoff.failures,
                if backoff.failures == 1 { "" } else { "s" },
                left.as_secs_f64(),
                backoff.last_error.kind,
                backoff.last_error.message
            );
            return Err(self.error(Phase::Init, ErrorKind::Unavailable, message));
        }
        match self.start_instance().await {
            Ok(live) => {
                self.backoff = None;
                self.live = Some(live);
                Ok(())
            }
            // The first start fails the Pea's start: nothing to back off from.
            Err(e) if self.stats.calls == 0 && self.stats.traps == 0 => Err(e),
            Err(e) => {
                let failures = self.backoff.as_ref().map_or(0, |b| b.failures) + 1;
                let delay = InitBackoff::delay(failures);
                tracing::warn!(executor = %self.name, failures, "init failed; the next attempt waits {delay:?} (crash-loop backoff)");
                self.backoff = Some(InitBackoff {
                    failures,
                    until: Instant::now() + delay,
                    last_error: e.clone(),
                });
                Err(e)
            }
        }
    }

    /// Creates and `init`s a new instance.
    pub(super) async fn start_instance(&mut self) -> Result<Live, ExecutorError> {
        // No instance means either the start (no call yet) or a trap or a
        // failed durable dump that discarded the last one.
        let restart = self.stats.traps > 0 || self.stats.calls > 0;
        let started = Instant::now();
        let mut live = self
            .instantiate()
            .await
            .map_err(|e| self.error(Phase::Init, ErrorKind::Host, format!("{e:#}")))?;
        self.arm(&mut live, self.sandbox.init_timeout).await;
        let outcome = tenant::metered(self.tenant.as_deref(), live.init(&self.config)).await;
        if outcome.is_ok()
            && let Some(message) = self.check_quota(&live)
        {
            self.roll_back(&live);
            return Err(self.error(Phase::Init, ErrorKind::DiskQuota, message));
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(guest)) => {
                return Err(self.error(Phase::Init, guest.kind, guest.message));
            }
            Err(trap) => return Err(self.classify(Phase::Init, trap, &live)),
        }
        if restart {
            self.stats.restarts += 1;
        }
        tracing::debug!(executor = %self.name, elapsed = ?started.elapsed(), "instance ready");
        Ok(live)
    }

    /// A new instance. The future holds no borrow of `self`: an `Executor`
    /// moves between threads with its call (`offload.rs`) but is not `Sync`.
    pub(super) fn instantiate(
        &self,
    ) -> impl Future<Output = anyhow::Result<Live>> + Send + 'static {
        let store = self.new_store();
        let component = self.component.clone();
        let slots = self.runtime.pool_slots().unwrap_or(0);
        async move {
            let mut store = store?;
            let instantiated = match &component.pre {
                Pre::V2(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V2),
                Pre::V1(pre) => pre.instantiate_async(&mut store).await.map(Bindings::V1),
            };
            let bindings = instantiated.map_err(|e| {
                let pool_full = e
                    .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some();
                let e = anyhow::Error::from(e);
                if pool_full {
                    e.context(format!(
                        "every instance slot of this process is taken (--pool-slots {slots})"
                    ))
                } else {
                    e
                }
            })?;
            Ok(Live { store, bindings })
        }
    }

    /// A store for a new instance, its limits and watch set.
    fn new_store(&self) -> anyhow::Result<Store<ExecutorState>> {
        let output = GuestOutput::new(self.name.clone(), self.sandbox.log_rate);
        let clock = clocks::Monotonic::new();
        let wasi = self.sandbox.wasi_ctx(&output, clock)?;
        let limiter = Limiter {
            memory_limit: usize::try_from(self.sandbox.memory_limit).unwrap_or(usize::MAX),
            memory_refused: None,
            tenant: self.tenant.clone(),
            reserved: 0,
            memory: 0,
        };
        let state = ExecutorState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            output,
            clock,
            watch: Watch::idle(),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // So results up to --max-result-bytes / --max-result-docs lift whole.
        store.set_hostcall_fuel(self.sandbox.hostcall_fuel());
        store.epoch_deadline_callback(|mut store| on_epoch(store.data_mut()));
        // Instantiation runs start functions: the init limit covers them.
        store.data_mut().watch.deadline = Instant::now() + self.sandbox.init_timeout;
        store.set_epoch_deadline(first_deadline(self.sandbox.init_timeout));
        Ok(store)
    }

    /// Explains a trap: which limit was hit, or what the guest printed before it
    /// died (a Rust panic prints its message to stderr, then aborts).
    pub(super) fn classify(
        &self,
        phase: Phase,
        error: wasmtime::Error,
        live: &Live,
    ) -> ExecutorError {
        let state = live.store.data();
        let (kind, message) = match error.downcast_ref::<Trap>() {
            _ if state.watch.over_quota.is_some() => {
                self.roll_back(live);
                (
                    ErrorKind::DiskQuota,
                    format!(
                        "{} and was stopped",
                        state.watch.over_quota.as_deref().unwrap_or_default()
                    ),
                )
            }
            Some(Trap::Interrupt) => {
                let limit = if phase == Phase::Init {
                    self.sandbox.init_timeout
                } else {
                    self.limit
                };
                if state.watch.slept_past {
                    (
                        ErrorKind::Timeout,
                        format!("asked to sleep past its time limit of {limit:?} and was stopped"),
                    )
                } else {
                    (
                        ErrorKind::Timeout,
                        format!("ran past its time limit of {limit:?} and was stopped"),
                    )
                }
            }
            Some(Trap::StackOverflow) => {
                (ErrorKind::StackOverflow, "overflowed its stack".to_string())
            }
            Some(_) if state.limiter.memory_refused == Some(Refused::Instance) => (
                ErrorKind::MemoryLimit,
                format!(
                    "ran out of memory: its limit is {} (--memory-hwm){}",
                    crate::units::format_size(self.sandbox.memory_limit),
                    last_words(&state.output)
                ),
            ),
            Some(_) if state.limiter.memory_refused == Some(Refused::Tenant) => {
                let tenant = self.tenant.as_ref().expect("a tenant refused");
                (
                    ErrorKind::MemoryLimit,
                    format!(
                        "ran out of memory: its tenant `{}` has used its budget of {} (--tenant-memory) across its executors{}",
                        tenant.name(),
                        crate::units::format_size(tenant.budget()),
                        last_words(&state.output)
                    ),
                )
            }
            Some(Trap::UnreachableCodeReached) => {
                let printed = state.output.recent_stderr();
                match printed.iter().position(|line| line.contains("panicked at")) {
                    Some(at) => (ErrorKind::Panic, printed[at..].join(" ").trim().to_string()),
                    None => (
                        ErrorKind::Trap,
                        format!("trapped: unreachable code{}", last_words(&state.output)),
                    ),
                }
            }
            Some(Trap::MemoryOutOfBounds) => (
                ErrorKind::Trap,
                format!(
                    "trapped: out of bounds memory access (a Rust guest keeps part of its stack in linear memory: \
                     deep recursion can end this way){}",
                    last_words(&state.output)
                ),
            ),
            Some(trap) => (
                ErrorKind::Trap,
                format!("trapped: {trap}{}", last_words(&state.output)),
            ),
            None if format!("{error:#}").contains(sandbox::HOSTCALL_FUEL_EXHAUSTED) => (
                ErrorKind::ResultTooLarge,
                format!(
                    "passed the host more than {} in one call (the copy limit that follows from --max-result-bytes {} \
                     and --max-result-docs {})",
                    crate::units::format_size(self.sandbox.hostcall_fuel() as u64),
                    crate::units::format_size(self.sandbox.max_result_bytes),
                    self.sandbox.max_result_docs
                ),
            ),
            None => (ErrorKind::Trap, format!("{error:#}")),
        };
        tracing::warn!(executor = %self.name, %phase, kind = kind.as_str(), "{message}; the instance is discarded and the next call gets a new one");
        self.error(phase, kind, message)
    }
}

/// The watch over a call's workspace: measured before and after (and during:
/// [`on_epoch`]) when a disk quota applies.
impl Executor {
    /// Starts the watch over a call: its deadline, and the workspace's usage
    /// now when a quota applies. A call on a workspace too large to walk
    /// inline (its quota's measurements before, during and after it) first
    /// moves to a thread of its own, so the walks hold up neither the Pea's
    /// loop (its control socket) nor a tokio worker.
    pub(super) async fn arm(&mut self, live: &mut Live, timeout: Duration) {
        if self.sandbox.quota_dir().is_some() && self.walked > quota::INLINE_WALK {
            offload::move_now().await;
        }
        let quota = self.sandbox.quota_dir().and_then(|dir| {
            let before = aside(self.walked, || Snapshot::take(dir)).ok()?;
            self.walked = before.usage.files;
            Some((dir.to_path_buf(), self.sandbox.quota, before))
        });
        let now = Instant::now();
        let watch = Watch {
            deadline: now + timeout,
            quota,
            next_check: now + QUOTA_CHECK,
            over_quota: None,
            slept_past: false,
            demote_at: self.sandbox.background_after.map(|after| now + after),
        };
        let wake = watch.next_wake(now);
        live.store.data_mut().watch = watch;
        live.store.set_epoch_deadline(live::first_deadline(wake));
    }

    /// After a call that returned: did it grow the workspace past its quota?
    pub(super) fn check_quota(&mut self, live: &Live) -> Option<String> {
        let (dir, quota, before) = live.store.data().watch.quota.as_ref()?;
        let usage = aside(self.walked, || Usage::of(dir)).ok()?;
        self.walked = usage.files;
        usage.exceeds(&before.usage, quota)
    }

    /// After a call failed with `disk-quota`: removes what it added to the
    /// workspace (`quota.rs` says what exactly), so a workspace does not grow
    /// with every failing call.
    pub(super) fn roll_back(&self, live: &Live) {
        let Some((dir, _, before)) = live.store.data().watch.quota.as_ref() else {
            return;
        };
        match aside(self.walked, || before.roll_back(dir)) {
            Ok(after) => tracing::warn!(
                executor = %self.name,
                bytes = after.bytes,
                files = after.files,
                "what the call over its disk quota wrote was rolled back"
            ),
            Err(e) => {
                tracing::error!(executor = %self.name, "cannot roll back the workspace of a call over its disk quota: {e}")
            }
        }
    }
}
