//! What a Pea's STATUS reports: its counters, its executor's health, its
//! tenant, and the state of its writes (unsaved, lost, failing dumps).

use super::*;

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
    pub(super) fn add(&mut self, number: u64) {
        if self.writes == 0 {
            self.first_request = number;
        }
        self.writes += 1;
        self.last_request = number;
    }

    pub(super) fn describe(&self) -> String {
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

impl Pea {
    pub(super) fn status(&self) -> Value {
        serde_json::to_value(self.status_of()).expect("a STATUS serialises")
    }

    pub(super) fn status_of(&self) -> PeaStatus {
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
