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
//! expired deadline), hand the body to the executor's task, and send the
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
//!
//! The parts: this file starts a Pea and runs its loop (what it waits on, in
//! which order, and shutdown); `config.rs` is what it is given;
//! `requests.rs` the data path (input, routes, credit); `durable.rs` what it
//! knows of its executor's state (writes, losses, group commit);
//! `commands.rs` its control socket; `status.rs` what STATUS reports;
//! [`worker`] the executor's task; `ledger.rs` the record of unsaved
//! writes a killed process leaves for the next.

mod commands;
mod config;
mod durable;
mod ledger;
mod requests;
mod status;
pub(crate) mod worker;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::control::{self, Command, Incoming};
use crate::executor::{ExecutorSpec, Runtime};
use crate::transport::{Link, SocketSpec, SocketType};
use crate::wire::{AfterError, Envelope, ErrorKind, Kind, Message, Outcome, Route, Status, now_us};
use commands::ControlJob;
pub use config::{
    Addresses, DEFAULT_READ_ENDPOINTS, DumpPolicy, OnError, PeaConfig, default_read_endpoints,
};
use durable::{DUMP_RETRY_MAX, GROUP_COMMIT, tracks_loss};
use ledger::Ledger;
pub use status::{BackoffStatus, DumpFailure, PeaStatus, StateLost, TenantStatus, Unsaved};
pub use worker::Failure;
use worker::{Job, Running, Worker};

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
    let ctrl = Link::open_control(
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
    let worker = Worker::start(
        runtime,
        config.uses.clone(),
        config.uses_sha256.as_deref(),
        config.executor.clone(),
    );
    let worker = match worker.await {
        Ok(worker) => worker,
        Err(e) => {
            tokio::join!(ctrl.close(grace), input.close(grace), output.close(grace));
            return Err(e.context(format!("pea `{name}` did not start")));
        }
    };
    crate::executor::release_free_memory();
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
        idle: requests::idle_frames(&config),
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
        credits: requests::Credits::default(),
        control_jobs: VecDeque::new(),
        running: FuturesUnordered::new(),
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

struct Pea {
    config: PeaConfig,
    input: Link,
    output: Link,
    ctrl: Link,
    /// [`requests::idle_frames`]: sent with every request.
    idle: Vec<Bytes>,
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
    credits: requests::Credits,
    control_jobs: VecDeque<ControlJob>,
    /// The executor's jobs in progress (a request, a control job or a
    /// commit, and a revival), polled here: this task runs the executor.
    running: FuturesUnordered<Running>,
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
    /// A revival in progress on the executor's task.
    reviving: Option<oneshot::Receiver<()>>,
    /// The last write failed with `io` (its message), until one succeeds.
    write_error: Option<String>,
    /// Prometheus metrics, when on (src/metrics/).
    metrics: Option<crate::metrics::PeaMetrics>,
    /// When the running control job or commit started (a dump's duration).
    job_started: Instant,
}

impl Pea {
    async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        if self.config.socket_in.kind == SocketType::Dealer {
            self.grant_credit().await;
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
                // First: the executor's jobs run only when this branch polls
                // them, so a flood on the control socket must not starve
                // them; a job is ready once, at its end (it has answered its
                // reply, which `wait_busy` takes).
                Some(()) = self.running.next(), if !self.running.is_empty() => {},
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
                // Room for the next answer (a ROUTER's: at the DEALER whose credit it uses).
                permit = out_tx.reserve(self.credits.front()), if !self.outbox.is_empty() && (!out_is_router || !self.credits.is_empty()) => {
                    let Ok(permit) = permit else { break };
                    let mut frames = self.outbox.pop_front().expect("guarded");
                    if out_is_router {
                        frames.insert(0, self.credits.pop_front().expect("guarded"));
                    }
                    permit.send(frames);
                    if self.config.socket_in.kind == SocketType::Dealer {
                        self.grant_credit().await;
                    }
                },
                frames = self.input.recv(), if idle && !self.terminating => match frames {
                    Some(frames) => self.take_input(frames).await,
                    None => break,
                },
                changed = reconnects.changed(), if announce => match changed {
                    // Busy: the IDLE that follows the answer does it.
                    Ok(()) if idle => self.grant_credit().await,
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
                    self.running.push(self.worker.run(Job::Revive { reply }));
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
            // The requests it took and will not answer (queued, or abandoned
            // after --timeout-ctrl): named, so a Pod's Head sends them to
            // another replica at once (docs/pods.md, Supervision).
            let mut unanswered: Vec<String> = match &self.busy {
                Some(Busy::Request { message, .. }) => vec![message.envelope.request_id.clone()],
                _ => Vec::new(),
            };
            while let Some(frames) = self.input.try_recv() {
                if let Ok(message) = Message::from_frames(&frames)
                    && message.envelope.kind == Kind::Data
                {
                    unanswered.push(message.envelope.request_id);
                }
            }
            let cancel = json!({ "unanswered": unanswered });
            let _ = self.input.send(control::frames("CANCEL", cancel)).await;
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
            // A revival still in progress goes first (it holds the executor).
            while self.running.next().await.is_some() {}
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
}

async fn wait_busy(busy: &mut Option<Busy>) -> Done {
    let gone = || Failure {
        kind: ErrorKind::Host,
        message: "the executor's task ended".into(),
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
