//! Peas and Pods a tenant asks for (the request: [`super::request`]), and
//! the record of each one started (its process in [`super::child`]: a supervising task
//! stops it, TERMINATE then SIGKILL after the grace, and records how it
//! ended), with an optional lease after which the daemon deletes it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub use super::request::{CreateRequest, Files, Plan, StateRequest};

/// An object's log is rotated past this many bytes by default (`daemon
/// --max-log`; the previous part kept as `<id>.log.1`), so one object holds
/// at most twice this on disk; it counts in the tenant's `disk`.
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// What was asked for: a Pea (one executor) or a Pod (shards, replicas or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pea,
    Pod,
    Flow,
}

impl Kind {
    pub fn command(self) -> &'static str {
        match self {
            Kind::Pea => "pea",
            Kind::Pod => "pod",
            Kind::Flow => "flow",
        }
    }

    /// The route prefix, `/peas` or `/pods`.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Pea => "/peas",
            Kind::Pod => "/pods",
            Kind::Flow => "/flows",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Exited,
}

/// What changes while the object lives.
#[derive(Debug, Clone)]
pub struct Live {
    pub state: State,
    pub pid: Option<u32>,
    /// The child's ready line: addresses and Peas.
    pub ready: Value,
    /// How the process ended, once it has.
    pub exit: Option<String>,
}

/// One Pea or Pod of one tenant.
pub struct Object {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub workspace: String,
    pub plan: Plan,
    pub created: std::time::SystemTime,
    pub expires: Option<Instant>,
    pub log: PathBuf,
    /// Its state directory, relative to the tenant's root, and whether it is
    /// the object's own (removed with it) rather than a named one.
    pub state: Option<(PathBuf, bool)>,
    pub live: Arc<Mutex<Live>>,
    pub stop: CancellationToken,
    pub supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl Object {
    /// Counts against the quota until its process has exited.
    pub fn holds_resources(&self) -> bool {
        self.live.lock().expect("live").state != State::Exited
    }

    pub fn renew(&mut self) {
        if let Some(lease) = self.plan.lease {
            self.expires = Some(Instant::now() + lease);
        }
    }

    /// The object as the API shows it.
    pub fn describe(&self) -> Value {
        let live = self.live.lock().expect("live").clone();
        let rss = live
            .pid
            .filter(|_| live.state == State::Running)
            .and_then(super::child::rss_bytes);
        json!({
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "workspace": self.workspace,
            "state": live.state,
            "pid": live.pid,
            "in": live.ready["in"],
            "out": live.ready["out"],
            "peas": live.ready["peas"],
            "gateway": live.ready["gateway"],
            "pods": live.ready["pods"],
            "pea_count": self.plan.peas,
            "memory_hwm": self.plan.memory_per_pea,
            "rss_bytes": rss,
            "lease_ms": self.plan.lease.map(|l| l.as_millis() as u64),
            "expires_in_ms": self.expires.map(|e| e.saturating_duration_since(Instant::now()).as_millis() as u64),
            "exit": live.exit,
            "created_unix_ms": self.created.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "log": format!("{}/{}/logs", self.kind.route(), self.id),
        })
    }

    /// Stops the process (TERMINATE, then SIGKILL) and waits until it is gone.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.supervisor.take() {
            let _ = task.await;
        }
    }
}
