//! A Pea: one executor behind ZeroMQ sockets.
//!
//! ```text
//!            input (PULL/SUB/ROUTER/DEALER)           output (PUSH/PUB/ROUTER/DEALER)
//!  upstream ──────────────────────────────▶  Pea  ──────────────────────────────▶ downstream
//!                                             ▲
//!                       control (ROUTER) ─────┘  STATUS TERMINATE DUMP RELOAD ACCEPT-LOSS
//! ```
//!
//! The loop: receive a message, read its envelope (never the body), decide
//! (run the executor, skip it after an upstream failure, or give up on an
//! expired deadline), hand the body to the executor's thread, and send the
//! result on with a route entry. One request is in the executor at a time; the
//! Pea reads no more input until it is done and sent, so a slow executor or a
//! slow downstream slows the sender instead of growing a queue. Control
//! requests are answered throughout. docs/protocol.md specifies the messages.
//!
//! Loss is never silent (docs/stateful.md, "When state is lost"): in interval
//! and `never` modes with a writable workspace, the Pea counts the writes
//! acknowledged since the last good dump; if the instance holding them is
//! discarded (a trap, the memory limit), STATUS carries `state_lost` and
//! writes are refused with `state-lost` until ACCEPT-LOSS or RELOAD; while
//! dumps fail, writes are refused with `dump` and the dump is retried.

mod ledger;
pub(crate) mod worker;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::control::{self, Command, Incoming};
use crate::executor::{ExecutorSpec, Runtime};
use crate::transport::{Link, SocketSpec, SocketType};
use crate::wire::{AfterError, Envelope, ErrorKind, Kind, Message, Outcome, Route, Status, now_us};
use ledger::Ledger;
pub use worker::Failure;
use worker::{Job, Worker};

/// Jina's `--on-error-strategy`: what happens to a request after its executor
/// fails. docs/protocol.md, "Error strategies".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnError {
    /// Forward the documents unchanged; later executors run as usual.
    #[default]
    Ignore,
    /// Forward; later Peas skip their executors but record themselves on the route.
    SkipExecutor,
    /// Forward; later Peas pass the message on untouched.
    SkipHandle,
    /// End the request now: forward only the failure, with no documents.
    ThrowEarly,
}

impl OnError {
    pub fn after_error(self) -> AfterError {
        match self {
            OnError::Ignore => AfterError::Continue,
            OnError::SkipExecutor => AfterError::SkipExecutor,
            OnError::SkipHandle => AfterError::SkipHandle,
            OnError::ThrowEarly => AfterError::Abort,
        }
    }
}

/// Everything a Pea needs to start.
#[derive(Debug, Clone)]
pub struct PeaConfig {
    pub name: String,
    pub description: String,
    pub uses: PathBuf,
    pub executor: ExecutorSpec,
    pub socket_in: SocketSpec,
    /// `tcp://host:port` (port 0 when binding: the OS picks) or `ipc://path`.
    pub address_in: String,
    pub socket_out: SocketSpec,
    pub address_out: String,
    /// Where the control ROUTER binds.
    pub address_ctrl: String,
    pub on_error: OnError,
    /// When the executor's state is dumped (never when read-only).
    pub dump: DumpPolicy,
    /// Reload the executor from its file and workspace this often.
    pub load_interval: Option<Duration>,
    /// How long `TERMINATE` waits for the request in flight, and sockets for
    /// their last sends.
    pub timeout_ctrl: Duration,
    /// Log request failures on one line, without their messages.
    pub quiet_error: bool,
    /// Endpoints that change no state (`--read-endpoints`; `*`: every one).
    /// Every other endpoint counts as a write: it is what a state loss
    /// covers, and what is refused after one (docs/stateful.md, "When state
    /// is lost").
    pub read_endpoints: Vec<String>,
}

/// `--read-endpoints` unless given: the query and export endpoints of
/// Jina's indexers (`/index`, `/update`, `/delete`, `/import` and anything
/// else are writes).
pub const DEFAULT_READ_ENDPOINTS: &[&str] = &["/search", "/export"];

/// The default `read_endpoints`.
pub fn default_read_endpoints() -> Vec<String> {
    DEFAULT_READ_ENDPOINTS
        .iter()
        .map(|e| (*e).to_string())
        .collect()
}

/// When a Pea has its executor persist its state: `--dump-interval`,
/// `dump_interval:` in a Flow. docs/stateful.md gives each mode's loss window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpPolicy {
    /// Interval mode: `dump` this often, when a request was handled since the
    /// last dump. A crash loses what was acknowledged since the last dump.
    Every(Duration),
    /// Durable mode (`0`): no request is answered before a `dump` that
    /// followed it returned (one dump per group of waiting requests); a request
    /// whose dump fails is answered with a `dump` error. A crash loses nothing
    /// that was acknowledged.
    Durable,
    /// `never`: only on DUMP, RELOAD and a graceful stop.
    Never,
}

impl DumpPolicy {
    /// Jina's default interval.
    pub const DEFAULT: DumpPolicy = DumpPolicy::Every(Duration::from_secs(240));

    fn interval(self) -> Option<Duration> {
        match self {
            DumpPolicy::Every(every) => Some(every),
            DumpPolicy::Durable | DumpPolicy::Never => None,
        }
    }
}

impl std::str::FromStr for DumpPolicy {
    type Err = String;

    /// `0` (or `durable`): durable mode; `never`: no periodic dumps; else a
    /// duration (`240s`, `5m`, a bare number of seconds).
    fn from_str(input: &str) -> Result<Self, String> {
        match input.trim() {
            "durable" => Ok(DumpPolicy::Durable),
            "never" | "off" => Ok(DumpPolicy::Never),
            other => match crate::units::parse_duration(other)? {
                d if d.is_zero() => Ok(DumpPolicy::Durable),
                d => Ok(DumpPolicy::Every(d)),
            },
        }
    }
}

impl std::fmt::Display for DumpPolicy {
    /// The `--dump-interval` value that reads back as `self`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpPolicy::Every(every) => write!(f, "{}ms", every.as_millis().max(1)),
            DumpPolicy::Durable => f.write_str("0"),
            DumpPolicy::Never => f.write_str("never"),
        }
    }
}

/// The addresses a started Pea actually uses (real ports, not 0).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Addresses {
    #[serde(rename = "in")]
    pub input: String,
    #[serde(rename = "out")]
    pub output: String,
    pub ctrl: String,
    pub port_in: u16,
    pub port_out: u16,
    pub port_ctrl: u16,
}

/// A running Pea.
pub struct PeaHandle {
    pub name: String,
    pub addresses: Addresses,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl PeaHandle {
    /// Asks the Pea to stop as `TERMINATE` does (finish the request in flight,
    /// dump, close); [`PeaHandle::wait`] then returns.
    pub fn terminate(&self) {
        self.stop.cancel();
    }

    /// A token that stops the Pea when cancelled (for signal handlers).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the Pea has stopped and released its ports.
    ///
    /// # Errors
    /// When closing the executor failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the Pea's task panicked")?
    }
}

/// Starts a Pea: binds its sockets (so a taken port fails here, naming the Pea
/// and the port), then loads and `init`s the executor. On any failure, whatever
/// was opened is closed again.
///
/// # Errors
/// A socket that cannot be opened, or an executor that does not load or init.
pub async fn start(runtime: Arc<Runtime>, mut config: PeaConfig) -> anyhow::Result<PeaHandle> {
    let name = config.name.clone();
    // The executor may persist incrementally when every request is dumped;
    // the Pea's policy decides, not a `durable` the user wrote under `jina`.
    if config.dump == DumpPolicy::Durable {
        crate::executor::set_runtime_arg(&mut config.executor.config, "durable", json!(true));
    } else {
        crate::executor::unset_runtime_arg(&mut config.executor.config, "durable");
    }
    let grace = config.timeout_ctrl;
    let ctrl = Link::open(
        SocketSpec::ROUTER_BIND,
        &config.address_ctrl,
        &format!("pea `{name}` control socket"),
    )
    .await
    .with_context(|| format!("pea `{name}` did not start"))?;
    let input = match Link::open(
        config.socket_in,
        &config.address_in,
        &format!("pea `{name}` input socket"),
    )
    .await
    {
        Ok(link) => link,
        Err(e) => {
            ctrl.close(grace).await;
            return Err(anyhow::Error::from(e).context(format!("pea `{name}` did not start")));
        }
    };
    let output = match Link::open(
        config.socket_out,
        &config.address_out,
        &format!("pea `{name}` output socket"),
    )
    .await
    {
        Ok(link) => link,
        Err(e) => {
            tokio::join!(ctrl.close(grace), input.close(grace));
            return Err(anyhow::Error::from(e).context(format!("pea `{name}` did not start")));
        }
    };
    let pool_slots = runtime.pool_slots();
    let worker = match Worker::start(runtime, config.uses.clone(), config.executor.clone()).await {
        Ok(worker) => worker,
        Err(e) => {
            tokio::join!(ctrl.close(grace), input.close(grace), output.close(grace));
            return Err(e.context(format!("pea `{name}` did not start")));
        }
    };
    // Compiling a component (a cold cache) leaves megabytes of freed Cranelift
    // memory in glibc's arenas; hand it back so an idle Pea stays small.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let addresses = Addresses {
        input: input.endpoint.clone(),
        output: output.endpoint.clone(),
        ctrl: ctrl.endpoint.clone(),
        port_in: input.port(),
        port_out: output.port(),
        port_ctrl: ctrl.port(),
    };
    // A killed predecessor's unsaved writes (interval and `never` modes).
    let mut ledger = match &config.executor.sandbox.workspace {
        Some(workspace) if tracks_loss(&config) => Ledger::open(&name, workspace),
        _ => None,
    };
    let state_lost = ledger.as_mut().and_then(Ledger::recover);
    if let Some(lost) = &state_lost {
        tracing::error!(
            pea = %name,
            "STATE LOST: {} ({}); this process serves the state of the last good dump, and writes are refused until \
             ACCEPT-LOSS or RELOAD",
            lost.window.describe(),
            lost.reason
        );
    }
    let sandbox = &config.executor.sandbox;
    let metrics = crate::metrics::PeaMetrics::new(
        &name,
        sandbox.memory_limit,
        (sandbox.workspace.is_some() && !sandbox.read_only).then_some(sandbox.quota.bytes),
    );
    let stop = CancellationToken::new();
    let pea = Pea {
        metrics,
        job_started: Instant::now(),
        config,
        input,
        output,
        ctrl,
        worker,
        pool_slots,
        started: Instant::now(),
        counters: Counters::default(),
        busy: None,
        outbox: VecDeque::new(),
        held: Vec::new(),
        traps_seen: 0,
        credits: VecDeque::new(),
        control_jobs: VecDeque::new(),
        terminating: false,
        terminate_by: None,
        dumped_at: 0,
        unsaved: Unsaved::default(),
        state_lost,
        ledger,
        dump_failure: None,
        retry_dump_at: None,
        revive_at: None,
        reviving: None,
        write_error: None,
    };
    tracing::info!(pea = %name, input = %addresses.input, output = %addresses.output, ctrl = %addresses.ctrl, "ready");
    let task = tokio::spawn(pea.run(stop.clone()));
    Ok(PeaHandle {
        name,
        addresses,
        stop,
        task,
    })
}

#[derive(Debug, Default)]
struct Counters {
    /// Data messages received and sent on.
    requests: u64,
    /// Of those, the ones whose executor failed here.
    failed: u64,
    /// Messages dropped because their envelope did not decode.
    dropped: u64,
    /// Successful dumps (periodic, DUMP, RELOAD, or group commits when durable).
    dumps: u64,
    /// `requests` when the last successful dump started: every request up to
    /// there is on disk; later ones are lost if the process dies now.
    dumped_through: u64,
}

/// Interval and `never` modes with a writable workspace: the state since the
/// last good dump lives only in the instance, so its loss is tracked.
fn tracks_loss(config: &PeaConfig) -> bool {
    !matches!(config.dump, DumpPolicy::Durable)
        && !config.executor.sandbox.read_only
        && config.executor.sandbox.workspace.is_some()
}

/// Durable mode commits at most this many requests with one `dump`.
const GROUP_COMMIT: usize = 16;

/// The longest wait between two attempts at a dump that keeps failing
/// (shorter when the dump interval is).
const DUMP_RETRY_MAX: Duration = Duration::from_secs(30);

/// Acknowledged writes that no successful dump holds yet (interval and
/// `never` modes): what losing the instance now would lose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsaved {
    /// How many write requests were acknowledged since the last good dump.
    pub writes: u64,
    /// The first and last of them, numbered as `requests` counts.
    pub first_request: u64,
    pub last_request: u64,
}

impl Unsaved {
    fn add(&mut self, number: u64) {
        if self.writes == 0 {
            self.first_request = number;
        }
        self.writes += 1;
        self.last_request = number;
    }

    fn describe(&self) -> String {
        let plural = if self.writes == 1 { "" } else { "s" };
        if self.first_request == self.last_request {
            format!(
                "{} acknowledged write request{plural} (request {})",
                self.writes, self.first_request
            )
        } else {
            format!(
                "{} acknowledged write request{plural} (requests {} to {})",
                self.writes, self.first_request, self.last_request
            )
        }
    }
}

/// Acknowledged writes that are gone: the instance holding them was
/// discarded (a trap, the memory limit) before a dump saved them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateLost {
    /// The writes lost (the window is `first_request..=last_request`).
    #[serde(flatten)]
    pub window: Unsaved,
    /// `dumped_through` then: the state served now holds the requests up to here.
    pub dumped_through: u64,
    /// Why the instance was discarded.
    pub reason: String,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// Dumps are failing (interval and `never` modes): writes are refused until
/// one succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpFailure {
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure's kind and message.
    pub kind: ErrorKind,
    pub message: String,
    /// Milliseconds until the next attempt (0 while one runs).
    pub retry_in_ms: u64,
}

/// The crash-loop backoff as STATUS shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffStatus {
    /// Replacement instances whose `init` failed in a row.
    pub failures: u32,
    /// Milliseconds until the next attempt.
    pub retry_in_ms: u64,
    /// The last `init` failure: its kind and message.
    pub kind: ErrorKind,
    pub last_error: String,
}

/// A tenant's accounts, in a Pea's STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStatus {
    pub name: String,
    pub memory_bytes: u64,
    pub memory_budget: u64,
    pub cpu_ms: u64,
    pub calls: u64,
}

/// A Pea's answer to `STATUS` (docs/protocol.md, "Control requests").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeaStatus {
    pub pea: String,
    pub description: String,
    pub tenant: Option<TenantStatus>,
    pub executor: String,
    pub uses: String,
    /// `ready`, `busy` or `terminating`.
    pub state: String,
    /// False while the executor has no instance, a state loss is not
    /// accepted, or dumps fail.
    pub healthy: bool,
    pub requests: u64,
    pub failed: u64,
    pub dropped: u64,
    pub dump_interval: String,
    pub dumps: u64,
    pub dumped_through: u64,
    /// Acknowledged writes since the last good dump (interval and `never`
    /// modes with a writable workspace).
    #[serde(default)]
    pub unsaved_writes: u64,
    #[serde(default)]
    pub state_lost: Option<StateLost>,
    #[serde(default)]
    pub dump_failure: Option<DumpFailure>,
    #[serde(default)]
    pub init_backoff: Option<BackoffStatus>,
    /// The last write failed with `io` (a full disk?): its message, until a
    /// write succeeds.
    #[serde(default)]
    pub write_error: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    pub restarts: u64,
    pub pool_slots: u32,
    pub busy_for_ms: u64,
    pub uptime_ms: u64,
    pub pid: u32,
    /// Where this process serves its metrics (`--port-monitoring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<String>,
}

/// What the executor is doing.
enum Busy {
    /// `number`: the request's place in `requests`; `write`: not a read endpoint.
    Request {
        message: Message,
        started: u64,
        number: u64,
        write: bool,
        reply: oneshot::Receiver<Result<Bytes, Failure>>,
    },
    /// `through`: `requests` when the job started.
    Control {
        job: ControlJob,
        through: u64,
        reply: oneshot::Receiver<Result<(), Failure>>,
    },
    /// Durable mode's dump for the `held` requests; `through`: `requests` then.
    Commit {
        through: u64,
        reply: oneshot::Receiver<Result<(), Failure>>,
    },
}

enum Done {
    Request(Result<Bytes, Failure>),
    Control(Result<(), Failure>),
    Commit(Result<(), Failure>),
}

/// A control request waiting for the executor.
struct ControlJob {
    /// Empty for a job the Pea's own timers started: no one to answer.
    prefix: Vec<Bytes>,
    request: Envelope,
    command: Command,
}

impl ControlJob {
    /// A job of the Pea's own (the dump and reload timers).
    fn own(command: Command) -> ControlJob {
        ControlJob {
            prefix: Vec::new(),
            request: Envelope::control(command.as_str()),
            command,
        }
    }
}

struct Pea {
    config: PeaConfig,
    input: Link,
    output: Link,
    ctrl: Link,
    worker: Worker,
    /// The process's pooling allocator slots (`None`: on demand), for STATUS.
    pool_slots: Option<u32>,
    started: Instant,
    counters: Counters,
    busy: Option<Busy>,
    /// Messages waiting to be sent (for a ROUTER output: for credit).
    outbox: VecDeque<Vec<Bytes>>,
    /// Durable mode: handled requests waiting for the commit (one `dump` for
    /// all of them) before they are answered.
    held: Vec<Message>,
    /// The executor's trap count when the last result came: another one means
    /// the instance holding the `held` changes is gone (a RELOAD, which resets
    /// the count, only runs when nothing is held).
    traps_seen: u64,
    /// Identities of downstream DEALERs, one entry per request they asked for.
    credits: VecDeque<Bytes>,
    control_jobs: VecDeque<ControlJob>,
    terminating: bool,
    /// When `TERMINATE` stops waiting for the request in flight.
    terminate_by: Option<tokio::time::Instant>,
    /// `counters.requests` at the last periodic dump.
    dumped_at: u64,
    /// Acknowledged writes no good dump holds yet (when loss is tracked).
    unsaved: Unsaved,
    /// Writes lost with a discarded instance, until an operator accepts it.
    state_lost: Option<StateLost>,
    /// The record beside the workspace that tells the next process about
    /// writes this one has not saved (when loss is tracked).
    ledger: Option<Ledger>,
    /// Dumps are failing: writes are refused until one succeeds.
    dump_failure: Option<DumpFailure>,
    /// When the failing dump is tried again.
    retry_dump_at: Option<tokio::time::Instant>,
    /// When the crash-loop backoff ends (the executor is then revived).
    revive_at: Option<tokio::time::Instant>,
    /// A revival in progress on the executor's thread.
    reviving: Option<oneshot::Receiver<()>>,
    /// The last write failed with `io` (its message), until one succeeds.
    write_error: Option<String>,
    /// Prometheus metrics, when on (src/metrics.rs).
    metrics: Option<crate::metrics::PeaMetrics>,
    /// When the running control job or commit started (a dump's duration).
    job_started: Instant,
}

impl Pea {
    async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        if self.config.socket_in.kind == SocketType::Dealer {
            self.grant_credit("IDLE").await;
        }
        let mut dump_timer = interval(
            self.config
                .dump
                .interval()
                .filter(|_| !self.config.executor.sandbox.read_only),
        );
        let mut load_timer = interval(self.config.load_interval);
        let out_is_router = self.config.socket_out.kind == SocketType::Router;
        let out_tx = self.output.sender();
        // A DEALER input that connects again has a new upstream ROUTER (a
        // restarted head, rescheduled in a cluster) that never got this Pea's
        // IDLE: announce it again, or the Pea would wait for work forever.
        let mut reconnects = self.input.reconnects();
        let mut announce = self.config.socket_in.kind == SocketType::Dealer;
        loop {
            if let Some(m) = &self.metrics {
                let running = usize::from(matches!(self.busy, Some(Busy::Request { .. })));
                m.state(
                    running + self.held.len() + self.outbox.len(),
                    self.state_lost.is_some(),
                    self.unsaved.writes,
                );
            }
            let idle = self.busy.is_none() && self.outbox.is_empty();
            if idle && !self.held.is_empty() {
                // Group commit: requests already waiting join this dump.
                if self.held.len() < GROUP_COMMIT
                    && !self.terminating
                    && let Some(frames) = self.input.try_recv()
                {
                    self.take_input(frames).await;
                } else {
                    self.start_commit().await;
                }
                continue;
            }
            if idle && let Some(job) = self.control_jobs.pop_front() {
                self.start_control_job(job).await;
                continue;
            }
            if self.terminating && idle {
                break;
            }
            tokio::select! {
                biased;
                frames = self.ctrl.recv() => match frames {
                    Some(frames) => self.on_control(frames).await,
                    None => break,
                },
                done = wait_busy(&mut self.busy) => match done {
                    Done::Request(result) => {
                        self.on_result(result);
                        self.schedule_revival();
                    }
                    Done::Control(result) => {
                        self.on_control_done(result).await;
                        self.schedule_revival();
                    }
                    Done::Commit(result) => {
                        self.on_commit(result);
                        self.schedule_revival();
                    }
                },
                frames = self.output.recv(), if out_is_router => {
                    if let Some(frames) = frames { self.on_downstream(frames); }
                },
                permit = out_tx.reserve(), if !self.outbox.is_empty() && (!out_is_router || !self.credits.is_empty()) => {
                    let Ok(permit) = permit else { break };
                    let mut frames = self.outbox.pop_front().expect("guarded");
                    if out_is_router {
                        frames.insert(0, self.credits.pop_front().expect("guarded"));
                    }
                    permit.send(frames);
                    if self.config.socket_in.kind == SocketType::Dealer {
                        self.grant_credit("IDLE").await;
                    }
                },
                frames = self.input.recv(), if idle && !self.terminating => match frames {
                    Some(frames) => self.take_input(frames).await,
                    None => break,
                },
                changed = reconnects.changed(), if announce => match changed {
                    // Busy: the IDLE that follows the answer does it.
                    Ok(()) if idle => self.grant_credit("IDLE").await,
                    Ok(()) => {}
                    Err(_) => announce = false,
                },
                // Only when something was handled since the last dump: an idle
                // Pea does not rewrite its state for nothing.
                _ = dump_timer.tick(), if self.counters.requests > self.dumped_at => {
                    self.dumped_at = self.counters.requests;
                    self.control_jobs.push_back(ControlJob::own(Command::Dump));
                },
                _ = load_timer.tick() => self.control_jobs.push_back(ControlJob::own(Command::Reload)),
                () = sleep_until(self.retry_dump_at), if self.retry_dump_at.is_some() => {
                    self.retry_dump_at = None;
                    self.control_jobs.push_back(ControlJob::own(Command::Dump));
                },
                () = sleep_until(self.revive_at), if self.revive_at.is_some() && self.reviving.is_none() && !self.terminating => {
                    self.revive_at = None;
                    let (reply, rx) = oneshot::channel();
                    self.worker.submit(Job::Revive { reply }).await;
                    self.reviving = Some(rx);
                },
                _ = wait_reviving(&mut self.reviving) => {
                    self.reviving = None;
                    self.schedule_revival();
                },
                () = stop.cancelled(), if !self.terminating => {
                    tracing::info!(pea = %self.config.name, "terminating");
                    self.terminate();
                },
                () = sleep_until(self.terminate_by), if !idle => {
                    tracing::warn!(
                        pea = %self.config.name,
                        "the request in flight did not finish within {:?} (--timeout-ctrl); stopping without it",
                        self.config.timeout_ctrl
                    );
                    break;
                },
            }
        }
        self.shutdown().await
    }

    /// Dumps and closes the executor, withdraws credit, closes every socket.
    async fn shutdown(mut self) -> anyhow::Result<()> {
        let name = self.config.name.clone();
        let grace = self.config.timeout_ctrl;
        if self.config.socket_in.kind == SocketType::Dealer {
            let _ = self.input.send(control::frames("CANCEL", json!({}))).await;
        }
        // A request abandoned after --timeout-ctrl still holds the executor's
        // thread: closing would wait for it, so the process leaves it behind.
        // The record of unsaved writes, up to date before the final dump: a
        // kill during it (SIGTERM, then SIGKILL) is then reported with every
        // write it lost, not the count of up to a second before.
        if self.unsaved.writes > 0
            && let Some(ledger) = &mut self.ledger
        {
            ledger.refresh(self.unsaved, self.counters.dumped_through);
        }
        let closed = if self.busy.is_some() {
            Ok(())
        } else {
            let (tx, rx) = oneshot::channel();
            self.worker.submit(Job::Close { reply: tx }).await;
            // No answer: the thread is gone, and so is whatever it held.
            let (closed, dumped) = match rx.await {
                Ok(result) => {
                    let dumped = result.is_ok();
                    (result, dumped)
                }
                Err(_) => (Ok(()), false),
            };
            self.worker.join();
            // The final dump holds every acknowledged write.
            if dumped
                && self.state_lost.is_none()
                && let Some(ledger) = &mut self.ledger
            {
                ledger.clear();
            }
            closed
        };
        tokio::join!(
            self.input.close(grace),
            self.output.close(grace),
            self.ctrl.close(grace)
        );
        tracing::info!(pea = %name, "stopped");
        let unsaved = self.unsaved;
        closed.map_err(|f| {
            let lost = if unsaved.writes > 0 {
                format!(
                    "; NOT SAVED: {} since the last successful dump (through request {})",
                    unsaved.describe(),
                    self.counters.dumped_through
                )
            } else {
                String::new()
            };
            anyhow::anyhow!(
                "pea `{name}`: closing the executor failed ({}): {}{lost}",
                f.kind,
                f.message
            )
        })
    }

    /// Stops reading input; the request in flight gets `--timeout-ctrl` to finish.
    fn terminate(&mut self) {
        self.terminating = true;
        self.terminate_by
            .get_or_insert(tokio::time::Instant::now() + self.config.timeout_ctrl);
    }

    /// Tells the upstream ROUTER (our DEALER input) we can take one more request.
    async fn grant_credit(&self, command: &str) {
        let _ = self
            .input
            .send(control::frames(
                command,
                json!({"credit": 1, "pea": self.config.name}),
            ))
            .await;
    }

    /// One message from the input socket.
    async fn take_input(&mut self, frames: Vec<Bytes>) {
        let before = self.outbox.len();
        self.on_input(frames).await;
        // Nothing came of it (dropped): the credit it used is free again.
        if self.busy.is_none()
            && self.outbox.len() == before
            && self.config.socket_in.kind == SocketType::Dealer
        {
            self.grant_credit("IDLE").await;
        }
    }

    async fn on_input(&mut self, mut frames: Vec<Bytes>) {
        if self.config.socket_in.kind == SocketType::Router && !frames.is_empty() {
            frames.remove(0);
        }
        let mut message = match Message::from_frames(&frames) {
            Ok(message) => message,
            Err(e) => {
                self.counters.dropped += 1;
                tracing::warn!(pea = %self.config.name, "dropped a message that is not a jina-wasm message: {e}");
                return;
            }
        };
        if message.envelope.kind != Kind::Data {
            tracing::warn!(pea = %self.config.name, command = %message.envelope.endpoint, "ignored a control message on the data input");
            return;
        }
        self.counters.requests += 1;
        if let Some(m) = &mut self.metrics {
            m.request(&message.envelope.endpoint);
        }
        let received = now_us();
        let envelope = &mut message.envelope;
        if envelope.is_error() {
            match envelope.after_error {
                AfterError::Continue => {}
                AfterError::SkipExecutor => {
                    self.route(&mut message, received, Outcome::Skipped);
                    self.outbox.push_back(message.frames().to_vec());
                    return;
                }
                AfterError::SkipHandle | AfterError::Abort => {
                    self.outbox.push_back(message.frames().to_vec());
                    return;
                }
            }
        }
        if envelope.expired() {
            envelope.fail(
                &self.config.name,
                ErrorKind::Deadline,
                "the request's deadline passed before the executor could run it",
            );
            envelope.after_error = AfterError::Abort;
            message.body = Bytes::new();
            if let Some(m) = &mut self.metrics {
                m.error(ErrorKind::Deadline);
            }
            self.route(&mut message, received, Outcome::Failed);
            self.outbox.push_back(message.frames().to_vec());
            return;
        }
        let write = !self.is_read(&envelope.endpoint);
        if write && let Some(refusal) = self.write_refusal() {
            self.fail(&mut message, received, &refusal);
            self.outbox.push_back(message.frames().to_vec());
            return;
        }
        let timeout = (envelope.deadline_ms != 0)
            .then(|| Duration::from_millis(envelope.deadline_ms.saturating_sub(now_us() / 1000)));
        let (reply, rx) = oneshot::channel();
        let job = Job::Handle {
            endpoint: envelope.endpoint.clone(),
            body: message.body.clone(),
            parameters: envelope.parameters.clone(),
            timeout,
            reply,
        };
        self.worker.submit(job).await;
        let number = self.counters.requests;
        self.busy = Some(Busy::Request {
            message,
            started: received,
            number,
            write,
            reply: rx,
        });
    }

    /// Whether `endpoint` changes no state (`read_endpoints`).
    fn is_read(&self, endpoint: &str) -> bool {
        self.config
            .read_endpoints
            .iter()
            .any(|e| e == endpoint || e == "*")
    }

    /// Interval and `never` modes with a writable workspace: the state since
    /// the last good dump lives only in the instance, so its loss is tracked.
    fn tracks_loss(&self) -> bool {
        tracks_loss(&self.config)
    }

    /// Why a write cannot be taken now: lost state not yet accepted, or
    /// dumps that fail (a write acknowledged now could not be saved).
    fn write_refusal(&self) -> Option<Failure> {
        let name = &self.config.name;
        if let Some(lost) = &self.state_lost {
            return Some(Failure {
                kind: ErrorKind::StateLost,
                message: format!(
                    "pea `{name}` lost {} when its instance was discarded ({}); it serves the state of its last good \
                     dump (through request {}). Writes are refused until an operator accepts the loss (`jina-wasm \
                     control {} ACCEPT-LOSS`) or reloads the executor from its dump (RELOAD)",
                    lost.window.describe(),
                    lost.reason,
                    lost.dumped_through,
                    self.ctrl.endpoint
                ),
            });
        }
        if let Some(dump) = &self.dump_failure
            && self.tracks_loss()
        {
            return Some(Failure {
                kind: ErrorKind::Dump,
                message: format!(
                    "pea `{name}` refuses writes: its last dump failed ({}: {}), so a write acknowledged now could not \
                     be saved; the dump is tried again (next in {} ms, or send DUMP) and writes resume once one succeeds",
                    dump.kind,
                    dump.message,
                    self.retry_dump_at.map_or(0, |at| at
                        .saturating_duration_since(tokio::time::Instant::now())
                        .as_millis())
                ),
            });
        }
        None
    }

    /// Whether a trap discarded the executor's instance since the last look.
    fn instance_lost(&mut self) -> bool {
        let traps = self.worker.health.lock().expect("health lock").stats.traps;
        let lost = traps != self.traps_seen;
        self.traps_seen = traps;
        lost
    }

    /// The instance holding the `unsaved` writes is gone: record the loss,
    /// which refuses writes until it is accepted.
    fn on_instance_lost(&mut self, reason: String) {
        if !self.tracks_loss() || self.unsaved.writes == 0 {
            return;
        }
        let window = std::mem::take(&mut self.unsaved);
        tracing::error!(
            pea = %self.config.name,
            "STATE LOST: {} since the last good dump (through request {}) were lost with the discarded instance ({reason}); \
             writes are refused until ACCEPT-LOSS or RELOAD",
            window.describe(),
            self.counters.dumped_through
        );
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.state_lost = Some(match self.state_lost.take() {
            // An earlier loss not yet accepted: one window covering both.
            Some(mut earlier) => {
                earlier.window.writes += window.writes;
                earlier.window.last_request = window.last_request;
                earlier.dumped_through = self.counters.dumped_through;
                earlier.reason = reason;
                earlier.at_ms = at_ms;
                earlier
            }
            None => StateLost {
                window,
                dumped_through: self.counters.dumped_through,
                reason,
                at_ms,
            },
        });
        if let (Some(ledger), Some(lost)) = (&mut self.ledger, &self.state_lost) {
            ledger.lost(lost);
        }
    }

    /// Hands the executor's counts (restarts, traps, memory) to the metrics.
    fn observe_executor(&mut self) {
        if let Some(m) = &mut self.metrics {
            let stats = self
                .worker
                .health
                .lock()
                .expect("health lock")
                .stats
                .clone();
            m.executor(&stats);
        }
    }

    /// Arms the revival at the end of the crash-loop backoff, if one is in force.
    fn schedule_revival(&mut self) {
        let until = self
            .worker
            .health
            .lock()
            .expect("health lock")
            .backoff
            .as_ref()
            .map(|b| b.until);
        self.revive_at = until.map(tokio::time::Instant::from_std);
    }

    /// Durable mode: every request is dumped before it is answered.
    fn durable(&self) -> bool {
        self.config.dump == DumpPolicy::Durable && !self.config.executor.sandbox.read_only
    }

    fn on_result(&mut self, result: Result<Bytes, Failure>) {
        let Some(Busy::Request {
            mut message,
            started,
            number,
            write,
            ..
        }) = self.busy.take()
        else {
            unreachable!("a request's result comes while the request is in flight")
        };
        let instance_lost = self.instance_lost();
        if let Some(m) = &mut self.metrics {
            let elapsed = Duration::from_micros(now_us().saturating_sub(started));
            m.handled(&message.envelope.endpoint, elapsed);
        }
        self.observe_executor();
        if write && !self.config.executor.sandbox.read_only {
            // Storage trouble (a full disk) makes the Pea unhealthy until a
            // write succeeds again.
            self.write_error = match &result {
                Ok(_) => None,
                Err(f) if f.kind == ErrorKind::Io => Some(f.message.clone()),
                Err(_) => self.write_error.take(),
            };
        }
        // The executor call's span (traces on, a traced request): the
        // request's documents before the call, its outcome after.
        let traced = message.envelope.trace.filter(|_| crate::trace::enabled());
        let docs_in = traced.map_or(0, |_| crate::trace::documents(&message.body));
        let error = traced
            .and(result.as_ref().err())
            .map(|f| (f.kind, f.message.clone()));
        match result {
            Ok(body) => {
                message.body = body;
                self.route(&mut message, started, Outcome::Handled);
            }
            Err(failure) => {
                if instance_lost {
                    self.on_instance_lost(format!(
                        "request {number} to `{}` failed: {}: {}",
                        message.envelope.endpoint, failure.kind, failure.message
                    ));
                }
                self.fail(&mut message, started, &failure);
            }
        }
        if traced.is_some() {
            let error = error.as_ref().map(|(k, m)| (k.as_str(), m.as_str()));
            crate::trace::record("pea", traced.as_ref(), (started, now_us()), error, |span| {
                span.set("pea", self.config.name.clone());
                span.set("endpoint", message.envelope.endpoint.clone());
                span.set("request.id", message.envelope.request_id.clone());
                span.set("documents", docs_in);
                span.set("documents.out", crate::trace::documents(&message.body));
                span.set(
                    "outcome",
                    if error.is_some() { "failed" } else { "handled" },
                );
            });
        }
        if !self.durable() {
            if write
                && self.tracks_loss()
                && message
                    .envelope
                    .routes
                    .last()
                    .is_some_and(|r| r.outcome == Outcome::Handled)
            {
                self.unsaved.add(number);
                // Recorded before the acknowledgement leaves.
                if let Some(ledger) = &mut self.ledger {
                    ledger.note(self.unsaved, self.counters.dumped_through);
                }
            }
            self.outbox.push_back(message.frames().to_vec());
            return;
        }
        // A trap discarded the instance that held the changes of the requests
        // still waiting for their commit: they are lost, so not acknowledged.
        if instance_lost {
            let lost = Failure {
                kind: ErrorKind::Dump,
                message: "the request was handled, but the executor trapped on a later request before its changes \
                          were saved, so it is not acknowledged (durable mode)"
                    .into(),
            };
            self.release_held(Some(&lost));
        }
        self.held.push(message);
    }

    /// Starts durable mode's dump for the `held` requests.
    async fn start_commit(&mut self) {
        self.job_started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.worker.submit(Job::Commit { reply }).await;
        self.busy = Some(Busy::Commit {
            through: self.counters.requests,
            reply: rx,
        });
    }

    fn on_commit(&mut self, result: Result<(), Failure>) {
        let Some(Busy::Commit { through, .. }) = self.busy.take() else {
            unreachable!("a commit's result comes while it runs")
        };
        if let Some(m) = &self.metrics {
            m.dumped(result.is_ok(), self.job_started.elapsed());
        }
        match &result {
            Ok(()) => {
                self.counters.dumps += 1;
                self.counters.dumped_through = through;
                // Writes are saved again (a full disk got space back).
                self.dump_failure = None;
            }
            Err(f) => {
                tracing::warn!(pea = %self.config.name, requests = self.held.len(), "commit failed: {}", f.message);
                // STATUS is unhealthy until a commit succeeds; every write
                // tries again (durable mode refuses nothing up front).
                let failures = self.dump_failure.as_ref().map_or(0, |d| d.failures) + 1;
                self.dump_failure = Some(DumpFailure {
                    failures,
                    kind: f.kind,
                    message: f.message.clone(),
                    retry_in_ms: 0,
                });
            }
        }
        self.release_held(result.as_ref().err());
    }

    /// Sends the `held` requests on; with `failure`, the ones that were
    /// handled fail with it (their changes are not on disk).
    fn release_held(&mut self, failure: Option<&Failure>) {
        for mut message in std::mem::take(&mut self.held) {
            if let Some(failure) = failure
                && let Some(route) = message
                    .envelope
                    .routes
                    .pop_if(|r| r.outcome == Outcome::Handled)
            {
                self.fail(&mut message, route.start_us, failure);
            }
            self.outbox.push_back(message.frames().to_vec());
        }
    }

    /// Records a failure of this Pea's executor on `message`.
    fn fail(&mut self, message: &mut Message, started: u64, failure: &Failure) {
        self.counters.failed += 1;
        if let Some(m) = &mut self.metrics {
            m.error(failure.kind);
        }
        let name = &self.config.name;
        if self.config.quiet_error {
            tracing::warn!(pea = %name, request = %message.envelope.request_id, kind = %failure.kind, "request failed");
        } else {
            tracing::warn!(pea = %name, request = %message.envelope.request_id, kind = %failure.kind, "request failed: {}", failure.message);
        }
        let envelope = &mut message.envelope;
        envelope.fail(name, failure.kind, &failure.message);
        // A body that did not decode cannot go on; otherwise the strategy decides.
        let strategy = if failure.kind == ErrorKind::Malformed {
            OnError::ThrowEarly
        } else {
            self.config.on_error
        };
        if envelope.after_error == AfterError::Continue {
            envelope.after_error = strategy.after_error();
        }
        if strategy == OnError::ThrowEarly {
            message.body = Bytes::new();
        }
        self.route(message, started, Outcome::Failed);
    }

    fn route(&self, message: &mut Message, start_us: u64, outcome: Outcome) {
        message.envelope.routes.push(Route {
            pea: self.config.name.clone(),
            start_us,
            end_us: now_us(),
            outcome,
        });
    }

    /// A message from a downstream DEALER on our ROUTER output: credit.
    fn on_downstream(&mut self, frames: Vec<Bytes>) {
        let Some((identity, rest)) = frames.split_first() else {
            return;
        };
        if rest.is_empty() {
            // The peer went away without CANCEL.
            self.credits.retain(|id| id != identity);
            return;
        }
        let Ok(message) = Message::from_frames(rest) else {
            tracing::warn!(pea = %self.config.name, "dropped a malformed message from downstream");
            return;
        };
        match message.envelope.endpoint.as_str() {
            "IDLE" => {
                let credit = serde_json::from_slice::<Value>(&message.body)
                    .ok()
                    .and_then(|v| v.get("credit").and_then(Value::as_u64))
                    .unwrap_or(1)
                    .min(1024);
                self.credits
                    .extend(std::iter::repeat_n(identity.clone(), credit as usize));
            }
            "CANCEL" => self.credits.retain(|id| id != identity),
            other => tracing::warn!(pea = %self.config.name, "ignored `{other}` from downstream"),
        }
    }

    async fn on_control(&mut self, frames: Vec<Bytes>) {
        let (prefix, request, command) = match control::read(frames, &Command::ALL) {
            Incoming::Gone => return,
            Incoming::Refused {
                prefix,
                reply_to,
                kind,
                message,
            } => {
                return self
                    .reply(prefix, &reply_to, Err(Failure { kind, message }))
                    .await;
            }
            Incoming::Command {
                prefix,
                request,
                command,
            } => (prefix, request, command),
        };
        match command {
            Command::Status => {
                let status = self.status();
                self.reply(prefix, &request, Ok(status)).await;
            }
            Command::Terminate => {
                tracing::info!(pea = %self.config.name, "TERMINATE received");
                self.terminate();
                self.reply(prefix, &request, Ok(json!({"state": "terminating"})))
                    .await;
            }
            Command::Dump | Command::Reload => self.control_jobs.push_back(ControlJob {
                prefix,
                request,
                command,
            }),
            Command::AcceptLoss => {
                let accepted = self.state_lost.take();
                if let Some(ledger) = &mut self.ledger
                    && self.unsaved.writes == 0
                {
                    ledger.clear();
                }
                if let Some(lost) = &accepted {
                    tracing::warn!(pea = %self.config.name, "the loss of {} was accepted: writes are taken again", lost.window.describe());
                }
                self.reply(prefix, &request, Ok(json!({"accepted": accepted})))
                    .await;
            }
        }
    }

    /// Hands `DUMP` or `RELOAD` to the executor; the answer comes to
    /// [`Pea::on_control_done`], and control requests are answered meanwhile.
    async fn start_control_job(&mut self, job: ControlJob) {
        if job.command == Command::Dump && self.config.executor.sandbox.read_only {
            return self
                .reply(
                    job.prefix,
                    &job.request,
                    Ok(json!({"dumped": false, "reason": "read-only"})),
                )
                .await;
        }
        self.job_started = Instant::now();
        let (reply, rx) = oneshot::channel();
        let work = if job.command == Command::Dump {
            Job::Dump { reply }
        } else {
            Job::Reload { reply }
        };
        self.worker.submit(work).await;
        // Nothing is in flight: the dump holds every request received so far.
        let through = self.counters.requests;
        self.busy = Some(Busy::Control {
            job,
            through,
            reply: rx,
        });
    }

    async fn on_control_done(&mut self, result: Result<(), Failure>) {
        let Some(Busy::Control { job, through, .. }) = self.busy.take() else {
            unreachable!("a control job's result comes while it runs")
        };
        if let Some(m) = &mut self.metrics {
            // A RELOAD dumps first: its success is a dump's.
            if !self.config.executor.sandbox.read_only
                && (job.command == Command::Dump || result.is_ok())
            {
                m.dumped(result.is_ok(), self.job_started.elapsed());
            }
        }
        self.observe_executor();
        if result.is_ok() && !self.config.executor.sandbox.read_only {
            self.counters.dumps += 1;
            self.counters.dumped_through = through;
            // Nothing ran beside the dump: it holds every acknowledged write.
            self.unsaved = Unsaved::default();
            if self.dump_failure.take().is_some() {
                tracing::info!(pea = %self.config.name, "a dump succeeded again: writes are taken again");
            }
            self.retry_dump_at = None;
        }
        if let Err(f) = &result {
            if self.instance_lost() {
                self.on_instance_lost(format!("{} failed: {}: {}", job.command, f.kind, f.message));
            }
            if self.tracks_loss() && job.command == Command::Dump {
                let failures = self.dump_failure.as_ref().map_or(0, |d| d.failures) + 1;
                let every = self
                    .config
                    .dump
                    .interval()
                    .unwrap_or(DUMP_RETRY_MAX)
                    .min(DUMP_RETRY_MAX);
                let wait = Duration::from_secs(1)
                    .saturating_mul(1 << failures.saturating_sub(1).min(16))
                    .min(every);
                tracing::error!(
                    pea = %self.config.name,
                    "DUMP FAILED ({failures} in a row): writes are refused until a dump succeeds; the next attempt in {wait:?}"
                );
                self.dump_failure = Some(DumpFailure {
                    failures,
                    kind: f.kind,
                    message: f.message.clone(),
                    retry_in_ms: wait.as_millis() as u64,
                });
                self.retry_dump_at = Some(tokio::time::Instant::now() + wait);
            }
        }
        if result.is_ok()
            && job.command == Command::Reload
            && let Some(lost) = self.state_lost.take()
        {
            tracing::warn!(pea = %self.config.name, "reloaded from its dump: the loss of {} is cleared", lost.window.describe());
        }
        // Every acknowledged write is saved and no loss is pending.
        if result.is_ok()
            && self.unsaved.writes == 0
            && self.state_lost.is_none()
            && let Some(ledger) = &mut self.ledger
        {
            ledger.clear();
        }
        let key = if job.command == Command::Dump {
            "dumped"
        } else {
            "reloaded"
        };
        if let Err(f) = &result {
            tracing::warn!(pea = %self.config.name, "{} failed ({}): {}", job.command, f.kind, f.message);
        }
        // Timer-driven jobs have no one to answer.
        if !job.prefix.is_empty() {
            self.reply(
                job.prefix,
                &job.request,
                result.map(|()| json!({ key: true })),
            )
            .await;
        }
    }

    async fn reply(&self, prefix: Vec<Bytes>, request: &Envelope, result: Result<Value, Failure>) {
        let (status, body) = match result {
            Ok(body) => (Status::Success, body),
            Err(f) => (
                Status::Error {
                    executor: self.config.name.clone(),
                    kind: f.kind,
                    message: f.message,
                },
                json!({}),
            ),
        };
        let _ = self
            .ctrl
            .send(control::reply(prefix, request, status, &body))
            .await;
    }

    fn status(&self) -> Value {
        serde_json::to_value(self.status_of()).expect("a STATUS serialises")
    }

    fn status_of(&self) -> PeaStatus {
        let health = self.worker.health.lock().expect("health lock").clone();
        let state = if self.terminating {
            "terminating"
        } else if self.busy.is_some() {
            "busy"
        } else {
            "ready"
        };
        let tenant = health.tenant.as_ref().map(|t| TenantStatus {
            name: t.name().to_string(),
            memory_bytes: t.memory_used(),
            memory_budget: t.budget(),
            cpu_ms: t.cpu_time().as_millis() as u64,
            calls: t.calls(),
        });
        let now = tokio::time::Instant::now();
        let mut dump_failure = self.dump_failure.clone();
        if let Some(d) = &mut dump_failure {
            d.retry_in_ms = self
                .retry_dump_at
                .map_or(0, |at| at.saturating_duration_since(now).as_millis() as u64);
        }
        let init_backoff = health.backoff.as_ref().map(|b| BackoffStatus {
            failures: b.failures,
            retry_in_ms: b
                .until
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            kind: b.last_error.kind,
            last_error: b.last_error.message.clone(),
        });
        PeaStatus {
            pea: self.config.name.clone(),
            description: self.config.description.clone(),
            tenant,
            executor: self.config.executor.name.clone(),
            uses: self.config.uses.display().to_string(),
            state: state.into(),
            healthy: health.healthy
                && self.state_lost.is_none()
                && self.dump_failure.is_none()
                && self.write_error.is_none(),
            requests: self.counters.requests,
            failed: self.counters.failed,
            dropped: self.counters.dropped,
            dump_interval: self.config.dump.to_string(),
            dumps: self.counters.dumps,
            dumped_through: self.counters.dumped_through,
            unsaved_writes: self.unsaved.writes,
            state_lost: self.state_lost.clone(),
            dump_failure,
            init_backoff,
            write_error: self.write_error.clone(),
            calls: health.stats.calls,
            errors: health.stats.errors,
            traps: health.stats.traps,
            restarts: health.stats.restarts,
            pool_slots: self.pool_slots.unwrap_or(0),
            busy_for_ms: health
                .busy_since
                .map_or(0, |t| t.elapsed().as_millis() as u64),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            pid: std::process::id(),
            monitoring: crate::metrics::serving(),
        }
    }
}

async fn wait_busy(busy: &mut Option<Busy>) -> Done {
    let gone = || Failure {
        kind: ErrorKind::Host,
        message: "the executor thread ended".into(),
    };
    match busy {
        Some(Busy::Request { reply, .. }) => {
            Done::Request(reply.await.unwrap_or_else(|_| Err(gone())))
        }
        Some(Busy::Control { reply, .. }) => {
            Done::Control(reply.await.unwrap_or_else(|_| Err(gone())))
        }
        Some(Busy::Commit { reply, .. }) => {
            Done::Commit(reply.await.unwrap_or_else(|_| Err(gone())))
        }
        None => std::future::pending().await,
    }
}

async fn wait_reviving(reviving: &mut Option<oneshot::Receiver<()>>) {
    match reviving {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A timer that never fires when `every` is `None`.
fn interval(every: Option<Duration>) -> tokio::time::Interval {
    let every = every.unwrap_or(Duration::from_secs(60 * 60 * 24 * 365 * 100));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_policies_parse_and_print_back() {
        for (text, policy) in [
            ("0", DumpPolicy::Durable),
            ("durable", DumpPolicy::Durable),
            ("never", DumpPolicy::Never),
            ("240s", DumpPolicy::DEFAULT),
            ("1.5s", DumpPolicy::Every(Duration::from_millis(1500))),
        ] {
            let parsed: DumpPolicy = text.parse().unwrap();
            assert_eq!(parsed, policy, "{text}");
            assert_eq!(parsed.to_string().parse::<DumpPolicy>().unwrap(), policy);
        }
        assert!("later".parse::<DumpPolicy>().is_err());
    }
}
