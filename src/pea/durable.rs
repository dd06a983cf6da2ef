//! What a Pea knows about its executor's state: which requests write, when a
//! write must be refused (lost state not accepted, dumps failing), what a lost
//! instance takes with it, and the durable mode's group commit (results held
//! until one `dump` covers them).

use super::*;

/// Interval and `never` modes with a writable workspace: the state since the
/// last good dump lives only in the instance, so its loss is tracked.
pub(super) fn tracks_loss(config: &PeaConfig) -> bool {
    !matches!(config.dump, DumpPolicy::Durable)
        && !config.executor.sandbox.read_only
        && config.executor.sandbox.workspace.is_some()
}

/// Durable mode commits at most this many requests with one `dump`.
pub(super) const GROUP_COMMIT: usize = 16;

/// The longest wait between two attempts at a dump that keeps failing
/// (shorter when the dump interval is).
pub(super) const DUMP_RETRY_MAX: Duration = Duration::from_secs(30);

impl Pea {
    /// Interval and `never` modes with a writable workspace: the state since
    /// the last good dump lives only in the instance, so its loss is tracked.
    pub(super) fn tracks_loss(&self) -> bool {
        tracks_loss(&self.config)
    }

    /// Whether `endpoint` changes no state (`read_endpoints`).
    pub(super) fn is_read(&self, endpoint: &str) -> bool {
        self.config
            .read_endpoints
            .iter()
            .any(|e| e == endpoint || e == "*")
    }

    /// Why a write cannot be taken now: lost state not yet accepted, or
    /// dumps that fail (a write acknowledged now could not be saved).
    pub(super) fn write_refusal(&self) -> Option<Failure> {
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
    pub(super) fn instance_lost(&mut self) -> bool {
        let traps = self.worker.health.lock().expect("health lock").stats.traps;
        let lost = traps != self.traps_seen;
        self.traps_seen = traps;
        lost
    }

    /// The instance holding the `unsaved` writes is gone: record the loss,
    /// which refuses writes until it is accepted.
    pub(super) fn on_instance_lost(&mut self, reason: String) {
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
    pub(super) fn observe_executor(&mut self) {
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
    pub(super) fn schedule_revival(&mut self) {
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
    pub(super) fn durable(&self) -> bool {
        self.config.dump == DumpPolicy::Durable && !self.config.executor.sandbox.read_only
    }

    pub(super) fn on_result(&mut self, result: Result<Bytes, Failure>) {
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
    pub(super) async fn start_commit(&mut self) {
        self.job_started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.running.push(self.worker.run(Job::Commit { reply }));
        self.busy = Some(Busy::Commit {
            through: self.counters.requests,
            reply: rx,
        });
    }

    pub(super) fn on_commit(&mut self, result: Result<(), Failure>) {
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
    pub(super) fn release_held(&mut self, failure: Option<&Failure>) {
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
}
