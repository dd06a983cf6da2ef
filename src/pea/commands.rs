//! A Pea's control socket: STATUS, TERMINATE and ACCEPT-LOSS answered at
//! once; DUMP and RELOAD handed to the executor's task between requests,
//! their result applied to the Pea's durable state and answered.

use super::*;

/// A control request waiting for the executor.
pub(super) struct ControlJob {
    /// Empty for a job the Pea's own timers started: no one to answer.
    prefix: Vec<Bytes>,
    request: Envelope,
    command: Command,
}

/// The most DUMP and RELOAD commands a Pea keeps waiting; past it one is
/// answered `unavailable` at once (a hostile client queued a million).
pub(super) const MAX_CONTROL_JOBS: usize = 64;

impl ControlJob {
    /// A job of the Pea's own (the dump and reload timers).
    pub(super) fn own(command: Command) -> ControlJob {
        ControlJob {
            prefix: Vec::new(),
            request: Envelope::control(command.as_str()),
            command,
        }
    }
}

impl Pea {
    pub(super) async fn on_control(&mut self, frames: Vec<Bytes>) {
        let (prefix, request, command) = match control::read(frames, &Command::ALL) {
            Incoming::Gone => return,
            Incoming::Refused(refusal) => {
                let _ = self.ctrl.send(refusal.answer(&self.config.name)).await;
                return;
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
            // Queued behind the request in flight; a client that floods them
            // is told to wait rather than grow the queue without end.
            Command::Dump | Command::Reload if self.control_jobs.len() >= MAX_CONTROL_JOBS => {
                let message = format!(
                    "{} DUMP and RELOAD commands are already waiting: send this one when they are done",
                    self.control_jobs.len()
                );
                let failure = Failure {
                    kind: ErrorKind::Unavailable,
                    message,
                };
                self.reply(prefix, &request, Err(failure)).await;
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
    pub(super) async fn start_control_job(&mut self, job: ControlJob) {
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
        self.running.push(self.worker.run(work));
        // Nothing is in flight: the dump holds every request received so far.
        let through = self.counters.requests;
        self.busy = Some(Busy::Control {
            job,
            through,
            reply: rx,
        });
    }

    pub(super) async fn on_control_done(&mut self, result: Result<(), Failure>) {
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

    pub(super) async fn reply(
        &self,
        prefix: Vec<Bytes>,
        request: &Envelope,
        result: Result<Value, Failure>,
    ) {
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
}
