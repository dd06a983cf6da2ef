//! A Pod: Peas that share one executor, behind one input and one output.
//!
//! ```text
//!                         ┌── shard-0 / replica-0 ──┐
//!  input ──▶ head ─ROUTER─┼── shard-1 / replica-1 ──┼─PULL─▶ tail ──▶ output
//!                         └── ...   (DEALER in) ────┘ (PUSH out)
//! ```
//!
//! One Pea and no `--uses-before`/`--uses-after` is a singleton: the Pea itself
//! is the Pod. Otherwise the Head ([`head`]) fans requests out, the Tail
//! ([`tail`]) collects and merges the parts, and the Peas run as threads of
//! this process or as child processes (`--runtime-backend`). docs/pods.md
//! describes the behaviour; the wire protocol is docs/protocol.md.

pub(crate) mod head;
pub mod reduce;
pub mod reshard;
pub(crate) mod tail;
pub mod update;
pub mod workspace;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::control::{self, Command, Incoming};
use crate::executor::{ExecutorSpec, Runtime, Sandbox};
use crate::metrics::{HeadStats, TailStats};
use crate::pea::worker::{Job, Worker};
use crate::pea::{Addresses, PeaConfig, PeaHandle};
use crate::transport::{Link, SocketSpec};
use crate::wire::{Envelope, ErrorKind, Message, Status};
pub use reduce::shard_of;
pub use tail::Reducer;

/// The names of a Pod's Peas by index, shared by its Head and Tail (the Head
/// adds replicas that join an open Pod).
pub type Members = Arc<std::sync::RwLock<Vec<String>>>;

/// Shards partition state; replicas share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Shards,
    Replicas,
    /// Shards, each a set of replicas (Jina 3's shards × replicas): member
    /// `i` is replica `i % replicas` of shard `i / replicas`.
    ShardReplicas {
        replicas: usize,
    },
}

impl Layout {
    /// The shard member `index` (named `name`) of a Pod named `pod` serves:
    /// its own index for shards, 0 for replicas; for shards × replicas, the
    /// shard its name says (`<pod>/shard-<i>/replica-<j>`), so a replica that
    /// joins a head-only Pod or replaces another in a rolling update lands in
    /// its shard whatever its index.
    pub fn shard_of_member(self, pod: &str, index: usize, name: &str) -> Option<usize> {
        match self {
            Layout::Shards => Some(index),
            Layout::Replicas => Some(0),
            Layout::ShardReplicas { .. } => name
                .strip_prefix(pod)?
                .strip_prefix("/shard-")?
                .split_once('/')?
                .0
                .parse()
                .ok(),
        }
    }
}

/// How a Head picks a replica for `polling any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    /// The replica that asked for work (sent IDLE) and has not been given any since.
    #[default]
    Credit,
    /// Each connected replica in turn, busy or not.
    RoundRobin,
}

/// Where the Peas of a Pod run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Backend {
    /// Tasks and threads of the Pod's process.
    #[default]
    Thread,
    /// One `jina-wasm pea` child process each.
    Process,
}

/// `any` (one Pea per request, or its part for shards) or `all` (every Pea),
/// for every endpoint or per endpoint (`/index:any,/search:all,*:any`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polling {
    default_all: bool,
    endpoints: Vec<(String, bool)>,
}

impl Polling {
    pub const ANY: Polling = Polling {
        default_all: false,
        endpoints: Vec::new(),
    };

    pub fn is_all(&self, endpoint: &str) -> bool {
        self.endpoints
            .iter()
            .find(|(e, _)| e == endpoint)
            .map_or(self.default_all, |(_, all)| *all)
    }

    /// Every endpoint is `all`.
    pub fn always_all(&self) -> bool {
        self.default_all && self.endpoints.iter().all(|(_, all)| *all)
    }
}

impl std::fmt::Display for Polling {
    /// The form [`FromStr`] reads back: `any`, `all`, or `/index:any,*:all`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = |all: bool| if all { "all" } else { "any" };
        if self.endpoints.is_empty() {
            return f.write_str(mode(self.default_all));
        }
        let mut items: Vec<String> = self
            .endpoints
            .iter()
            .map(|(e, all)| format!("{e}:{}", mode(*all)))
            .collect();
        items.push(format!("*:{}", mode(self.default_all)));
        f.write_str(&items.join(","))
    }
}

impl FromStr for Polling {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mode = |m: &str| match m.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(false),
            "all" => Ok(true),
            other => Err(format!("polling `{other}` is neither `any` nor `all`")),
        };
        // Jina 3's form: a JSON object of endpoint to `ANY`/`ALL`, `*` the rest.
        if text.trim_start().starts_with('{') {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| {
                    format!("`{text}` is not a JSON object of ENDPOINT to \"any\" or \"all\" ({e}); or write /index:any,/search:all,*:any")
                })?;
            let mut polling = Polling::ANY;
            for (endpoint, m) in map {
                let m = m.as_str().ok_or_else(|| {
                    format!("polling of `{endpoint}`: `{m}` is not \"any\" or \"all\"")
                })?;
                let all = mode(m).map_err(|e| format!("polling of `{endpoint}`: {e}"))?;
                match endpoint.as_str() {
                    "*" => polling.default_all = all,
                    _ => polling.endpoints.push((endpoint, all)),
                }
            }
            return Ok(polling);
        }
        if !text.contains(':') {
            return Ok(Polling {
                default_all: mode(text)?,
                endpoints: Vec::new(),
            });
        }
        let mut polling = Polling::ANY;
        for item in text.split(',').filter(|i| !i.trim().is_empty()) {
            let (endpoint, m) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("`{item}` is not ENDPOINT:any or ENDPOINT:all"))?;
            match endpoint.trim() {
                "*" => polling.default_all = mode(m)?,
                e => polling.endpoints.push((e.to_string(), mode(m)?)),
            }
        }
        Ok(polling)
    }
}

/// What the Head tells the Tail about a request before sending its parts.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The id the Head minted for the request: the Tail's key.
    pub request_id: String,
    /// The id the request came in with, put back on the answer. Two senders
    /// may use the same one, so it never keys anything (docs/sandbox.md).
    pub client_id: String,
    /// Member indices that will each send one part.
    pub targets: Vec<usize>,
    /// Of those, the ones the Head knows are gone.
    pub down: Vec<usize>,
    pub deadline: tokio::time::Instant,
    pub top_k: Option<usize>,
    /// The trace context the request came in with (src/trace.rs): the Tail
    /// puts it back on the merged answer, so the next Pod's spans hang
    /// under the same parent as this Pod's Head.
    pub trace: Option<crate::wire::TraceContext>,
    /// The Head's span for the request, when recorded: the Tail's span (the
    /// merge, or the failure) is its child.
    pub head_span: Option<crate::wire::TraceContext>,
}

pub enum TailInput {
    Expect(Expect),
    /// A request the Head does not fan out (skipped after an error, or failed
    /// in the Head): straight to the output.
    Forward(Message),
    /// How many requests in flight still wait for a part from `member` (a
    /// rolling update drains a replica before stopping it).
    Outstanding {
        member: usize,
        reply: oneshot::Sender<usize>,
    },
}

/// Everything a Pod needs to start.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// The Pod's name, executor and outer sockets; its Peas derive from it.
    pub pea: PeaConfig,
    pub shards: usize,
    pub replicas: usize,
    pub polling: Polling,
    pub balance: Balance,
    pub uses_before: Option<PathBuf>,
    pub uses_after: Option<PathBuf>,
    pub backend: Backend,
    pub timeout_ready: Duration,
    /// How long the Tail waits for the parts of a request without a deadline.
    pub timeout_parts: Duration,
    /// Extra `jina-wasm pea` arguments for child processes (`--cache-dir`...).
    pub child_args: Vec<String>,
    /// The Peas run elsewhere (`jina-wasm pod --role head`, one container of a
    /// Kubernetes or Compose export): bind the Head's and Tail's sockets here
    /// and start no Peas.
    pub external: Option<ExternalPeas>,
}

/// Where a head-only Pod binds the sockets its remote Peas connect to.
#[derive(Debug, Clone)]
pub struct ExternalPeas {
    /// The Head's ROUTER (each Pea's DEALER input connects here).
    pub fanout: String,
    /// The Tail's PULL (each Pea's PUSH output connects here).
    pub parts: String,
}

/// A Pea's place in its Pod: what it is called, what its executor is told
/// (Jina's `runtime_args`), and which shard workspace it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Shard {
        id: usize,
        shards: usize,
    },
    /// `id` is an index inside one process, or any unique name (a Kubernetes
    /// pod's) for replicas that join a head-only Pod.
    Replica {
        id: String,
        replicas: Option<usize>,
    },
    /// Replica `replica` of shard `shard`: the shard's workspace, shared
    /// with the shard's other replicas.
    ShardReplica {
        shard: usize,
        shards: usize,
        replica: String,
        replicas: Option<usize>,
    },
}

impl Place {
    pub fn role(&self) -> String {
        match self {
            Place::Shard { id, .. } => format!("shard-{id}"),
            Place::Replica { id, .. } => format!("replica-{id}"),
            Place::ShardReplica { shard, replica, .. } => {
                format!("shard-{shard}/replica-{replica}")
            }
        }
    }

    /// The shard this place serves (0 for a replica of an unsharded Pod).
    pub fn shard(&self) -> usize {
        match self {
            Place::Shard { id, .. } => *id,
            Place::Replica { .. } => 0,
            Place::ShardReplica { shard, .. } => *shard,
        }
    }
}

impl PodConfig {
    fn layout(&self) -> Layout {
        match (self.shards > 1, self.replicas > 1) {
            (true, true) => Layout::ShardReplicas {
                replicas: self.replicas,
            },
            (true, false) => Layout::Shards,
            _ => Layout::Replicas,
        }
    }

    /// The Peas: shards × replicas.
    fn count(&self) -> usize {
        self.shards.max(1) * self.replicas.max(1)
    }

    pub fn is_singleton(&self) -> bool {
        self.count() == 1
            && self.uses_before.is_none()
            && self.uses_after.is_none()
            && self.external.is_none()
    }
}

/// One Pea of a Pod, as `STATUS` and the ready line show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    pub pea: String,
    pub role: String,
    pub ctrl: String,
}

/// A Pod's members as they are now, by member index (the Head's): a
/// restarted child process has a new control address, a rolling update adds
/// members and retires the ones they replace. Shared by the Pod's control
/// task, the supervisors of its child processes and its updater.
type Roster = Arc<std::sync::RwLock<Vec<Slot>>>;

#[derive(Debug, Clone)]
struct Slot {
    info: MemberInfo,
    /// Times the supervisor restarted this member's process.
    restarts: u64,
    /// False from the moment its process died until it runs again.
    running: bool,
    /// Replaced by a rolling update (or a replacement that did not start):
    /// not part of the Pod any more.
    retired: bool,
}

/// Sets the roster's slot `index`, padding with retired slots up to it.
fn set_slot(roster: &Roster, index: usize, slot: Slot) {
    let mut roster = roster.write().expect("roster");
    while roster.len() < index {
        let mut pad = slot.clone();
        pad.retired = true;
        pad.running = false;
        roster.push(pad);
    }
    if index < roster.len() {
        roster[index] = slot;
    } else {
        roster.push(slot);
    }
}

enum Member {
    Thread(PeaHandle),
    /// A child process, watched by its supervisor task, which restarts it
    /// when it dies and stops it when `stop` is cancelled.
    Process {
        stop: CancellationToken,
        supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Member {
    /// Stops the Pea as TERMINATE does and waits for it (a child process is
    /// killed if it has not exited within `grace`).
    async fn stop(self, _grace: Duration) -> anyhow::Result<()> {
        match self {
            Member::Thread(pea) => {
                pea.terminate();
                pea.wait().await
            }
            Member::Process { stop, supervisor } => {
                stop.cancel();
                supervisor.await.context("a Pea's supervisor panicked")?
            }
        }
    }
}

/// The first wait before restarting a Pea whose process died; it doubles
/// with every death that follows within [`STABLE_AFTER`], up to
/// [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(250);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long before dying starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What a supervisor needs to restart its child.
struct Supervision {
    config: PeaConfig,
    extra: Vec<String>,
    roster: Roster,
    index: usize,
    grace: Duration,
    /// How long a restarted child may take to print its ready line.
    timeout_ready: Duration,
    stop: CancellationToken,
}

/// Watches one child Pea: reaps it when it dies and starts it again (same
/// arguments, so a shard on its own workspace) after a capped exponential
/// backoff; stops it gracefully when `stop` is cancelled. Meanwhile the Head
/// sees the member gone and requests that need it fail fast (`unavailable`).
async fn supervise(s: Supervision, mut child: tokio::process::Child) -> anyhow::Result<()> {
    let name = s.config.name.clone();
    let mut failures = 0u32;
    let mut started = tokio::time::Instant::now();
    loop {
        let status = tokio::select! {
            status = child.wait() => status,
            () = s.stop.cancelled() => return stop_child(&name, &s, child).await,
        };
        // Reaped: the process is gone. Start it again, after the backoff.
        s.roster.write().expect("roster")[s.index].running = false;
        let status =
            status.map_or_else(|e| format!("an unknown status ({e})"), |st| st.to_string());
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        loop {
            failures += 1;
            let wait = RESTART_BACKOFF_FIRST
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(RESTART_BACKOFF_MAX);
            tracing::error!(pea = %name, "its process exited with {status}; restarting it in {wait:?} (restart backoff)");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = s.stop.cancelled() => return Err(anyhow::anyhow!("pea `{name}` had exited with {status} and was not running when the Pod stopped")),
            }
            let spawned = tokio::select! {
                spawned = tokio::time::timeout(s.timeout_ready, spawn_child(&s.config, &s.extra)) => spawned,
                () = s.stop.cancelled() => return Err(anyhow::anyhow!("pea `{name}` was restarting when the Pod stopped")),
            };
            match spawned {
                Ok(Ok((new, ctrl))) => {
                    child = new;
                    started = tokio::time::Instant::now();
                    let mut roster = s.roster.write().expect("roster");
                    let slot = &mut roster[s.index];
                    slot.info.ctrl = ctrl;
                    slot.restarts += 1;
                    slot.running = true;
                    tracing::info!(pea = %name, restarts = slot.restarts, ctrl = %slot.info.ctrl, "restarted");
                    break;
                }
                Ok(Err(e)) => tracing::error!(pea = %name, "restart failed: {e:#}"),
                Err(_) => {
                    tracing::error!(pea = %name, "restart failed: not ready within {:?}", s.timeout_ready)
                }
            }
        }
    }
}

/// Stops a child as TERMINATE does; kills it if it has not exited within
/// three times `grace`.
async fn stop_child(
    name: &str,
    s: &Supervision,
    mut child: tokio::process::Child,
) -> anyhow::Result<()> {
    let ctrl = s.roster.read().expect("roster")[s.index].info.ctrl.clone();
    let grace = s.grace;
    let _ = tokio::time::timeout(grace, control::ask(&ctrl, Command::Terminate)).await;
    match tokio::time::timeout(grace * 2, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(anyhow::anyhow!("pea `{name}` exited with {status}")),
        _ => {
            let _ = child.kill().await;
            Err(anyhow::anyhow!(
                "pea `{name}` did not stop within {:?} and was killed",
                grace * 3
            ))
        }
    }
}

/// A running Pod.
pub struct PodHandle {
    pub name: String,
    pub addresses: Addresses,
    pub members: Vec<MemberInfo>,
    /// A head-only Pod's sockets for its Peas, as bound.
    pub external: Option<ExternalPeas>,
    /// Rolling updates of the Pod, and the component it serves.
    pub updater: update::Updater,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl PodHandle {
    /// A Pod run by something else (a daemon, for a Flow's remote Pod): `task`
    /// ends once it has stopped, after `stop` is cancelled.
    pub fn from_task(
        name: String,
        addresses: Addresses,
        members: Vec<MemberInfo>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
        updater: update::Updater,
    ) -> PodHandle {
        PodHandle {
            name,
            addresses,
            members,
            external: None,
            updater,
            stop,
            task,
        }
    }

    pub fn terminate(&self) {
        self.stop.cancel();
    }

    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the Pod has stopped: every Pea, the Head, the Tail.
    ///
    /// # Errors
    /// A Pea that failed to stop cleanly.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the Pod's task panicked")?
    }
}

/// Starts a Pod: its outer sockets, its Peas, the Head and the Tail; ready
/// when every Pea has connected to the Head. On any failure everything already
/// started is stopped again, and the error names the Pea and the reason.
///
/// # Errors
/// A socket, an executor, a shard workspace or a Pea that does not come up.
pub async fn start(runtime: Arc<Runtime>, config: PodConfig) -> anyhow::Result<PodHandle> {
    let name = config.pea.name.clone();
    let sandbox = &config.pea.executor.sandbox;
    if config.replicas > 1 && sandbox.workspace.is_some() && !sandbox.read_only {
        // Not refused: a stateless executor may be given a workspace it
        // never writes. But a stateful one loses writes here, so say it
        // before the first one.
        tracing::warn!(
            pod = %name,
            "{} writable replicas share each workspace: each keeps its own state and dumps it over the others', \
             so writes one replica acknowledged can be gone after a restart; give query replicas --read-only \
             (docs/stateful.md, \"Read-only replicas\")",
            config.replicas
        );
    }
    if config.is_singleton() {
        let current = update::component_of(&config.pea.uses, &config.pea.executor.config).await;
        let updater = update::Updater::unsupported(
            current,
            format!(
                "pod `{name}` is a single Pea with no Head, so nothing could serve while it is replaced: \
                 give it `parallel: 2` (or shards) to update it while it runs, or restart the Flow"
            ),
        );
        let pea = crate::pea::start(runtime, config.pea).await?;
        let members = vec![MemberInfo {
            pea: name.clone(),
            role: "singleton".into(),
            ctrl: pea.addresses.ctrl.clone(),
        }];
        let addresses = pea.addresses.clone();
        let stop = pea.stop_token();
        let task = tokio::spawn(pea.wait());
        return Ok(PodHandle {
            name,
            addresses,
            members,
            external: None,
            updater,
            stop,
            task,
        });
    }
    let mut opened = Opened::default();
    match tokio::time::timeout(
        config.timeout_ready,
        assemble(runtime, &config, &mut opened),
    )
    .await
    {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => {
            opened.undo(config.pea.timeout_ctrl).await;
            Err(e.context(format!("pod `{name}` did not start")))
        }
        Err(_) => {
            let waiting = opened.unregistered();
            opened.undo(config.pea.timeout_ctrl).await;
            Err(anyhow::anyhow!(
                "pod `{name}` was not ready within {:?} (--timeout-ready){}",
                config.timeout_ready,
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(": waiting for {}", waiting.join(", "))
                }
            ))
        }
    }
}

/// What a start has opened so far, to close again if it fails.
#[derive(Default)]
struct Opened {
    links: Vec<Link>,
    members: Vec<Member>,
    workers: Vec<Worker>,
    /// Members not yet connected to the Head, by name.
    registered: Option<(watch::Receiver<Vec<bool>>, Vec<String>)>,
    /// The member being started, before the Head runs.
    starting: Option<String>,
    head: Option<(CancellationToken, tokio::task::JoinHandle<Link>)>,
    tail: Option<(CancellationToken, tokio::task::JoinHandle<(Link, Link)>)>,
}

impl Opened {
    fn unregistered(&self) -> Vec<String> {
        match (&self.registered, &self.starting) {
            (Some((rx, names)), _) => rx
                .borrow()
                .iter()
                .zip(names)
                .filter(|(r, _)| !**r)
                .map(|(_, n)| format!("`{n}`"))
                .collect(),
            (None, Some(name)) => vec![format!("`{name}` (still starting)")],
            (None, None) => Vec::new(),
        }
    }

    /// Stops in order: the Head takes no more work, the Tail ends the requests
    /// in flight, the Peas stop (dumping their state), then every socket closes.
    async fn undo(mut self, grace: Duration) -> Vec<String> {
        if let Some((stop, task)) = self.head.take() {
            stop.cancel();
            if let Ok(fanout) = task.await {
                self.links.push(fanout);
            }
        }
        if let Some((stop, task)) = self.tail.take() {
            stop.cancel();
            if let Ok((parts, output)) = task.await {
                self.links.extend([parts, output]);
            }
        }
        let stops = self.members.drain(..).map(|m| m.stop(grace));
        let failures = futures::future::join_all(stops)
            .await
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect();
        for worker in self.workers {
            close_worker(worker).await;
        }
        futures::future::join_all(self.links.into_iter().map(|l| l.close(grace))).await;
        failures
    }
}

async fn close_worker(worker: Worker) {
    let (tx, rx) = oneshot::channel();
    worker.submit(Job::Close { reply: tx }).await;
    let _ = rx.await;
    worker.join();
}

async fn assemble(
    runtime: Arc<Runtime>,
    config: &PodConfig,
    opened: &mut Opened,
) -> anyhow::Result<PodHandle> {
    let pod = &config.pea;
    let name = pod.name.clone();
    // Every socket first, so a taken port fails before any Pea starts. They
    // stay in `opened` (closed again on failure) until the Head and Tail take them.
    // The Head's and the Tail's links to the Peas: in-process when every Pea
    // is a thread of this process (no loopback TCP on the request path), TCP
    // for child processes, the given addresses for Peas elsewhere.
    let internal = |what: &str| match config.backend {
        Backend::Thread => crate::transport::inproc::address(&format!("{name}-{what}")),
        Backend::Process => "tcp://127.0.0.1:0".to_string(),
    };
    let (fanout_bind, parts_bind) = match &config.external {
        Some(external) => (external.fanout.clone(), external.parts.clone()),
        None => (internal("fanout"), internal("parts")),
    };
    let sockets = [
        (
            SocketSpec::ROUTER_BIND,
            pod.address_ctrl.as_str(),
            "control socket",
        ),
        (pod.socket_in, pod.address_in.as_str(), "input socket"),
        (pod.socket_out, pod.address_out.as_str(), "output socket"),
        (
            SocketSpec::ROUTER_BIND,
            &fanout_bind,
            "head (--port-fanout)",
        ),
        (SocketSpec::PULL_BIND, &parts_bind, "tail (--port-parts)"),
    ];
    for (spec, address, what) in sockets {
        opened
            .links
            .push(Link::open(spec, address, &format!("pod `{name}` {what}")).await?);
    }
    let at = |i: usize| opened.links[i].endpoint.clone();
    let port = |i: usize| opened.links[i].port();
    let addresses = Addresses {
        input: at(1),
        output: at(2),
        ctrl: at(0),
        port_in: port(1),
        port_out: port(2),
        port_ctrl: port(0),
    };
    let (fanout_at, parts_at) = (at(3), at(4));

    // The Peas: started here, or (head-only) expected to connect: every shard
    // by name, replicas (of the Pod, or of each shard) as they come.
    let layout = config.layout();
    let n = config.count();
    let open = config.external.is_some() && layout != Layout::Shards;
    let role = |i: usize| place_of(config, layout, i).role();
    let names: Vec<String> = if open {
        Vec::new()
    } else {
        (0..n).map(|i| format!("{name}/{}", role(i))).collect()
    };
    let local = if config.external.is_some() { 0 } else { n };
    let roster: Roster = Arc::default();
    // An open Pod has no names: its Peas are elsewhere (`local` is 0).
    for (i, pea_name) in names.iter().enumerate().take(local) {
        let member = member_config(config, layout, i, &fanout_at, &parts_at)?;
        tracing::info!(pod = %name, pea = %pea_name, role = %role(i), "starting");
        opened.starting = Some(pea_name.clone());
        let info = MemberInfo {
            pea: pea_name.clone(),
            role: role(i),
            ctrl: String::new(),
        };
        let started = start_member(&runtime, config, member, &roster, i, info).await?;
        opened.members.push(started);
    }
    let infos: Vec<MemberInfo> = roster
        .read()
        .expect("roster")
        .iter()
        .map(|s| s.info.clone())
        .collect();
    let current = update::component_of(&pod.uses, &pod.executor.config).await;

    // Executors of the Head and the Tail.
    let before = match &config.uses_before {
        Some(path) => Some(serve(
            start_side_worker(&runtime, path, &format!("{name}/head"), pod).await?,
            opened,
        )),
        None => None,
    };
    let after = match &config.uses_after {
        Some(path) => Some(serve(
            start_side_worker(&runtime, path, &format!("{name}/tail"), pod).await?,
            opened,
        )),
        None => None,
    };

    let mut links = std::mem::take(&mut opened.links).into_iter();
    let (ctrl, input, output, fanout, parts) = match (
        links.next(),
        links.next(),
        links.next(),
        links.next(),
        links.next(),
    ) {
        (Some(c), Some(i), Some(o), Some(f), Some(p)) => (c, i, o, f, p),
        _ => unreachable!("five sockets were opened"),
    };
    opened.links.push(ctrl);
    let (tail_tx, tail_rx) = mpsc::channel(1024);
    let to_tail = tail_tx.clone();
    let (head_commands, head_commands_rx) = mpsc::channel(8);
    let tail_stats = Arc::new(TailStats::default());
    let tail_stop = CancellationToken::new();
    let members: Members = Arc::new(std::sync::RwLock::new(names.clone()));
    let tail_task = tokio::spawn(
        tail::Tail {
            name: format!("{name}/tail"),
            members: members.clone(),
            parts,
            output,
            inbox: tail_rx,
            reducer: after,
            stats: tail_stats.clone(),
        }
        .run(tail_stop.clone()),
    );
    opened.tail = Some((tail_stop, tail_task));
    let (registered_tx, registered_rx) = watch::channel(vec![false; names.len()]);
    let head_stats = Arc::new(HeadStats::default());
    let head_stop = CancellationToken::new();
    let head_task = tokio::spawn(
        head::Head {
            name: format!("{name}/head"),
            layout,
            shards: config.shards.max(1),
            polling: config.polling.clone(),
            balance: config.balance,
            members: members.clone(),
            open,
            input,
            fanout,
            tail: tail_tx,
            timeout: config.timeout_parts,
            registered: registered_tx,
            stats: head_stats.clone(),
            before,
            on_error: pod.on_error,
            commands: head_commands_rx,
        }
        .run(head_stop.clone()),
    );
    opened.head = Some((head_stop, head_task));
    opened.registered = Some((registered_rx.clone(), names.clone()));
    // A head-only Pod serves at once: its Peas come and go on their own, and
    // its STATUS says how many are connected (readiness waits for that): one
    // replica, or one of each shard.
    let expected = if open { config.shards.max(1) } else { n };
    if config.external.is_none() {
        let mut registered = registered_rx.clone();
        registered
            .wait_for(|r| r.iter().all(|&x| x))
            .await
            .context("the Head stopped")?;
    }

    // The Peas started here go to the updater, which hands them back when
    // the Pod stops; Peas that run elsewhere are not this Pod's to replace.
    let (updater, replica_set) = if config.external.is_some() {
        let why = format!(
            "pod `{name}` runs only its Head and Tail here (its Peas run elsewhere): update its Peas where they run"
        );
        (update::Updater::unsupported(current.clone(), why), None)
    } else {
        let (updater, requests) = update::ReplicaSet::channel(current.clone());
        let set = update::ReplicaSet {
            runtime: runtime.clone(),
            config: config.clone(),
            layout,
            fanout_at: fanout_at.clone(),
            parts_at: parts_at.clone(),
            head: head_commands,
            tail: to_tail,
            registered: registered_rx.clone(),
            roster: roster.clone(),
            members: std::mem::take(&mut opened.members)
                .into_iter()
                .map(Some)
                .collect(),
            active: (0..n).collect(),
            current: current.clone(),
        };
        let set_stop = CancellationToken::new();
        let task = tokio::spawn(set.run(requests, set_stop.clone()));
        (updater, Some((set_stop, task)))
    };

    let stop = CancellationToken::new();
    let ctrl = opened.links.pop().expect("the control socket");
    // The head's and tail's counters on /metrics, read at scrape time.
    let metrics = crate::metrics::watch_pod(crate::metrics::PodSource {
        pod: name.clone(),
        head: head_stats.clone(),
        tail: tail_stats.clone(),
        connected: registered_rx.clone(),
        expected,
    });
    let pod_task = PodTask {
        _metrics: metrics,
        name: name.clone(),
        description: pod.description.clone(),
        ctrl,
        roster,
        rest: std::mem::take(opened),
        head_stats,
        tail_stats,
        grace: pod.timeout_ctrl,
        connected: (registered_rx, members, expected),
        layout,
        open,
        replica_set,
        current,
    };
    let task = tokio::spawn(pod_task.run(stop.clone()));
    tracing::info!(pod = %name, input = %addresses.input, output = %addresses.output, ctrl = %addresses.ctrl, peas = n, "ready");
    let external = config.external.as_ref().map(|_| ExternalPeas {
        fanout: fanout_at,
        parts: parts_at,
    });
    Ok(PodHandle {
        name,
        addresses,
        members: infos,
        external,
        updater,
        stop,
        task,
    })
}

/// Starts one member of a Pod (a Pea thread, or a supervised child process)
/// and puts it in the roster at `index`.
async fn start_member(
    runtime: &Arc<Runtime>,
    config: &PodConfig,
    member: PeaConfig,
    roster: &Roster,
    index: usize,
    info: MemberInfo,
) -> anyhow::Result<Member> {
    let slot = |ctrl: String| Slot {
        info: MemberInfo {
            ctrl,
            ..info.clone()
        },
        restarts: 0,
        running: true,
        retired: false,
    };
    Ok(match config.backend {
        Backend::Thread => {
            let pea = crate::pea::start(runtime.clone(), member).await?;
            set_slot(roster, index, slot(pea.addresses.ctrl.clone()));
            Member::Thread(pea)
        }
        Backend::Process => {
            let (child, ctrl) = spawn_child(&member, &config.child_args).await?;
            // In the roster before its supervisor can look for it there.
            set_slot(roster, index, slot(ctrl));
            let stop = CancellationToken::new();
            let supervision = Supervision {
                config: member,
                extra: config.child_args.clone(),
                roster: roster.clone(),
                index,
                grace: config.pea.timeout_ctrl,
                timeout_ready: config.timeout_ready,
                stop: stop.clone(),
            };
            Member::Process {
                stop,
                supervisor: tokio::spawn(supervise(supervision, child)),
            }
        }
    })
}

/// The place of member `i` of a Pod started here.
fn place_of(config: &PodConfig, layout: Layout, i: usize) -> Place {
    match layout {
        Layout::Shards => Place::Shard {
            id: i,
            shards: config.shards,
        },
        Layout::Replicas => Place::Replica {
            id: i.to_string(),
            replicas: Some(config.count()),
        },
        Layout::ShardReplicas { replicas } => Place::ShardReplica {
            shard: i / replicas,
            shards: config.shards,
            replica: (i % replicas).to_string(),
            replicas: Some(replicas),
        },
    }
}

/// The PeaConfig of member `i`: its place, a DEALER input to the Head, a PUSH
/// output to the Tail.
fn member_config(
    config: &PodConfig,
    layout: Layout,
    i: usize,
    head: &str,
    tail: &str,
) -> anyhow::Result<PeaConfig> {
    let place = place_of(config, layout, i);
    let mut pea = placed(&config.pea, &place, workspace::Scope::Pod)?;
    pea.socket_in = SocketSpec::DEALER_CONNECT;
    pea.address_in = head.to_string();
    pea.socket_out = SocketSpec::PUSH_CONNECT;
    pea.address_out = tail.to_string();
    pea.address_ctrl = "tcp://127.0.0.1:0".into();
    Ok(pea)
}

/// The Pod's Pea config made into one of its members: named `<pod>/<role>`,
/// its place in the executor's `with.jina`, and for a shard its own workspace
/// (`<workspace>/<pod>/shard-<i>/`, claimed; each replica of a shard claims
/// the same one, which its identity accepts). Sockets are left as they are:
/// the Pod's own members get theirs from `member_config`, a remote Pea
/// (`jina-wasm pea --shard-id`) from its flags.
///
/// `scope` says who claims a shard's workspace: the Pod, for all its shards,
/// or a Pea alone (`--shard-id`), whose workspace is then its own volume.
///
/// # Errors
/// A shard workspace that belongs to another shard or Pod.
pub fn placed(
    pod: &PeaConfig,
    place: &Place,
    scope: workspace::Scope,
) -> anyhow::Result<PeaConfig> {
    let name = format!("{}/{}", pod.name, place.role());
    let mut executor = pod.executor.clone();
    executor.name = name.clone();
    // Executors learn their place, as Jina's `runtime_args`.
    let mut with = match &pod.executor.config {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let replica_args = |id: &String, replicas: &Option<usize>| {
        let id = id
            .parse::<u64>()
            .map_or_else(|_| Value::from(id.clone()), Value::from);
        let mut args = vec![("replica_id", id)];
        args.extend(replicas.map(|n| ("replicas", json!(n))));
        args
    };
    let runtime_args: Vec<(&str, Value)> = match place {
        Place::Shard { id, shards } => vec![("shard_id", json!(id)), ("shards", json!(shards))],
        Place::Replica { id, replicas } => replica_args(id, replicas),
        Place::ShardReplica {
            shard,
            shards,
            replica,
            replicas,
        } => {
            let mut args = vec![("shard_id", json!(shard)), ("shards", json!(shards))];
            args.extend(replica_args(replica, replicas));
            args
        }
    };
    with.remove("jina");
    executor.config = Value::Object(with);
    for (key, value) in runtime_args {
        crate::executor::set_runtime_arg(&mut executor.config, key, value);
    }
    let shard = match place {
        Place::Shard { id, shards } => Some((*id, *shards)),
        Place::ShardReplica { shard, shards, .. } => Some((*shard, *shards)),
        Place::Replica { .. } => None,
    };
    if let Some((id, shards)) = shard
        && let Some(root) = &pod.executor.sandbox.workspace
    {
        let identity = workspace::ShardIdentity {
            pod: pod.name.clone(),
            shard: id,
            shards,
            executor: pod.executor.name.clone(),
        };
        executor.sandbox.workspace = Some(
            workspace::claim(root, &identity, scope).with_context(|| format!("pea `{name}`"))?,
        );
    }
    Ok(PeaConfig {
        name,
        executor,
        ..pod.clone()
    })
}

/// Starts a member as `jina-wasm pea` in a child process and reads its ready
/// line; returns the child and its control address.
async fn spawn_child(
    config: &PeaConfig,
    extra: &[String],
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("cannot find the jina-wasm executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("pea")
        .args(pea_args(config))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("pea `{}`: cannot start a process", config.name))?;
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?;
    let ready: Value = match line.as_deref().map(serde_json::from_str) {
        Some(Ok(ready)) => ready,
        _ => {
            let status = child.wait().await?;
            anyhow::bail!(
                "pea `{}` did not start (its process exited with {status}; its log is above)",
                config.name
            );
        }
    };
    let ctrl = ready["ctrl"].as_str().unwrap_or_default().to_string();
    Ok((child, ctrl))
}

/// If the parent process dies without stopping the child (SIGKILL), the kernel
/// kills the child too: no orphan Peas (used by Pods and by the daemon).
pub fn die_with_parent(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The `jina-wasm pea` arguments that reproduce `config` (its control socket
/// excepted: a child's is picked by the OS, an exported one is fixed).
pub fn pea_args(c: &PeaConfig) -> Vec<String> {
    let (host_in, port_in) = host_port(&c.address_in);
    let (host_out, port_out) = host_port(&c.address_out);
    let secs = |d: Option<Duration>| format!("{}ms", d.map_or(0, |d| d.as_millis()));
    let sandbox = &c.executor.sandbox;
    let mut args: Vec<String> = vec![
        "--uses".into(),
        c.uses.display().to_string(),
        "--name".into(),
        c.name.clone(),
        "--socket-in".into(),
        c.socket_in.to_string(),
        "--host-in".into(),
        host_in,
        "--port-in".into(),
        port_in,
        "--socket-out".into(),
        c.socket_out.to_string(),
        "--host-out".into(),
        host_out,
        "--port-out".into(),
        port_out,
        "--on-error-strategy".into(),
        clap::ValueEnum::to_possible_value(&c.on_error)
            .expect("no skipped variants")
            .get_name()
            .to_string(),
        "--dump-interval".into(),
        c.dump.to_string(),
        "--load-interval".into(),
        secs(c.load_interval),
        "--timeout-ctrl".into(),
        secs(Some(c.timeout_ctrl)),
        "--memory-hwm".into(),
        format!("{}B", sandbox.memory_limit),
        "--timeout-request".into(),
        secs(Some(sandbox.call_timeout)),
        "--timeout-init".into(),
        secs(Some(sandbox.init_timeout)),
        "--disk-quota".into(),
        format!("{}B", sandbox.quota.bytes),
        "--max-files".into(),
        sandbox.quota.files.to_string(),
        "--max-result-docs".into(),
        sandbox.max_result_docs.to_string(),
        "--max-result-bytes".into(),
        format!("{}B", sandbox.max_result_bytes),
        "--log-rate".into(),
        sandbox.log_rate.to_string(),
        "--background-after".into(),
        secs(sandbox.background_after),
    ];
    if !c.executor.config.is_null() {
        args.extend(["--uses-with".into(), c.executor.config.to_string()]);
    }
    if sandbox.deterministic {
        args.push("--deterministic".into());
    }
    if let Some(tenant) = &sandbox.tenant {
        args.extend(["--tenant".into(), tenant.name.clone()]);
        if tenant.memory != u64::MAX {
            args.extend(["--tenant-memory".into(), format!("{}B", tenant.memory)]);
        }
    }
    if let Some(dir) = &sandbox.workspace {
        args.extend(["--workspace".into(), dir.display().to_string()]);
    }
    if sandbox.read_only {
        args.push("--read-only".into());
    }
    if c.quiet_error {
        args.push("--quiet-error".into());
    }
    if c.read_endpoints != crate::pea::default_read_endpoints() {
        args.extend(["--read-endpoints".into(), c.read_endpoints.join(",")]);
    }
    for v in &sandbox.volumes {
        args.extend([
            "--volumes".into(),
            format!(
                "{}:{}{}",
                v.host.display(),
                v.guest,
                if v.read_only { ":ro" } else { "" }
            ),
        ]);
    }
    for (k, v) in &sandbox.env {
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    args
}

fn host_port(address: &str) -> (String, String) {
    let rest = address.trim_start_matches("tcp://");
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (rest.to_string(), "0".into()),
    }
}

/// Starts the executor of a Head (`--uses-before`) or Tail (`--uses-after`):
/// the Pod's limits, no workspace.
async fn start_side_worker(
    runtime: &Arc<Runtime>,
    path: &std::path::Path,
    name: &str,
    pod: &PeaConfig,
) -> anyhow::Result<Worker> {
    let spec = ExecutorSpec {
        name: name.to_string(),
        config: Value::Null,
        sandbox: Sandbox {
            workspace: None,
            volumes: Vec::new(),
            read_only: true,
            ..pod.executor.sandbox.clone()
        },
    };
    Worker::start(runtime.clone(), path.to_path_buf(), spec).await
}

/// Serves `handle` calls to a Head's or Tail's executor from a channel.
fn serve(worker: Worker, opened: &mut Opened) -> Reducer {
    let (tx, mut rx) = mpsc::channel::<(
        String,
        Bytes,
        String,
        oneshot::Sender<Result<Bytes, crate::pea::Failure>>,
    )>(1);
    let jobs = worker.sender();
    opened.workers.push(worker);
    tokio::spawn(async move {
        while let Some((endpoint, body, parameters, reply)) = rx.recv().await {
            let _ = jobs
                .send(Job::Handle {
                    endpoint,
                    body,
                    parameters,
                    timeout: None,
                    reply,
                })
                .await;
        }
    });
    tx
}

/// The Pod's control socket and its ordered shutdown.
struct PodTask {
    name: String,
    description: String,
    ctrl: Link,
    /// The Peas as they are now (a restarted child has a new control address).
    roster: Roster,
    /// The Peas, the Head, the Tail and their sockets.
    rest: Opened,
    head_stats: Arc<HeadStats>,
    tail_stats: Arc<TailStats>,
    grace: Duration,
    /// Which members have connected to the Head, their names, and how many
    /// make the Pod healthy (every one; for open replicas, one; for open
    /// shards × replicas, one of each shard).
    connected: (watch::Receiver<Vec<bool>>, Members, usize),
    layout: Layout,
    /// Its Peas run elsewhere and join as they come.
    open: bool,
    /// The task that owns the Peas for rolling updates; it hands them back.
    replica_set: Option<(CancellationToken, tokio::task::JoinHandle<Vec<Member>>)>,
    /// The component the Pod serves.
    current: update::Current,
    /// Keeps the Pod on /metrics while it runs.
    _metrics: Option<Arc<crate::metrics::PodSource>>,
}

impl PodTask {
    async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                frames = self.ctrl.recv() => {
                    let Some(frames) = frames else { break };
                    if self.on_control(frames, started).await {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        tracing::info!(pod = %self.name, "stopping: the head takes no more work, in-flight requests finish");
        if let Some((stop, task)) = self.replica_set.take() {
            stop.cancel();
            match task.await {
                Ok(members) => self.rest.members.extend(members),
                Err(e) => tracing::error!(pod = %self.name, "the Pod's updater panicked: {e}"),
            }
        }
        let failures = std::mem::take(&mut self.rest).undo(self.grace).await;
        self.ctrl.close(self.grace).await;
        tracing::info!(pod = %self.name, "stopped");
        if failures.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(failures.join("; ")))
        }
    }

    /// Answers one control request; true when the Pod should stop.
    async fn on_control(&self, frames: Vec<Bytes>, started: std::time::Instant) -> bool {
        let (prefix, request, command) = match control::read(frames, &Command::ALL) {
            Incoming::Gone => return false,
            Incoming::Refused {
                prefix,
                reply_to,
                kind,
                message,
            } => {
                let status = Status::Error {
                    executor: self.name.clone(),
                    kind,
                    message,
                };
                self.reply(&prefix, &reply_to, status, json!({})).await;
                return false;
            }
            Incoming::Command {
                prefix,
                request,
                command,
            } => (prefix, request, command),
        };
        let prefix = prefix.as_slice();
        match command {
            Command::Status => {
                let status = self.status(started).await;
                self.reply(prefix, &request, Status::Success, status).await;
                false
            }
            Command::Terminate => {
                self.reply(
                    prefix,
                    &request,
                    Status::Success,
                    json!({"state": "terminating"}),
                )
                .await;
                true
            }
            Command::Dump | Command::Reload | Command::AcceptLoss => {
                let infos = self.infos();
                let asks = infos.iter().map(|m| control::ask(&m.ctrl, command));
                let results = futures::future::join_all(asks).await;
                let errors: Vec<String> = results
                    .iter()
                    .zip(&infos)
                    .filter_map(|(r, m)| r.as_ref().err().map(|e| format!("{}: {e:#}", m.pea)))
                    .collect();
                let status = if errors.is_empty() {
                    Status::Success
                } else {
                    Status::Error {
                        executor: self.name.clone(),
                        kind: ErrorKind::Host,
                        message: errors.join("; "),
                    }
                };
                let answers: Vec<Value> = results
                    .into_iter()
                    .map(|r| r.unwrap_or(Value::Null))
                    .collect();
                self.reply(prefix, &request, status, json!({"peas": answers}))
                    .await;
                false
            }
        }
    }

    /// The Peas' names, roles and control addresses as they are now.
    fn infos(&self) -> Vec<MemberInfo> {
        self.roster
            .read()
            .expect("roster")
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.info.clone())
            .collect()
    }

    /// The Pod's health: every Pea's STATUS, plus the Head's and Tail's counters.
    async fn status(&self, started: std::time::Instant) -> Value {
        let slots: Vec<Slot> = self
            .roster
            .read()
            .expect("roster")
            .iter()
            .filter(|s| !s.retired)
            .cloned()
            .collect();
        let asks = slots.iter().map(|s| async move {
            if !s.running {
                return Ok(Err(anyhow::anyhow!(
                    "its process died; the Pod is restarting it"
                )));
            }
            tokio::time::timeout(
                Duration::from_secs(2),
                control::ask(&s.info.ctrl, Command::Status),
            )
            .await
        });
        let answers = futures::future::join_all(asks).await;
        let mut healthy = true;
        let restarts: u64 = slots.iter().map(|s| s.restarts).sum();
        let peas: Vec<Value> = answers
            .into_iter()
            .zip(&slots)
            .map(|(answer, slot)| {
                let mut status = match answer {
                    Ok(Ok(status)) => status,
                    Ok(Err(e)) => json!({"healthy": false, "error": format!("{e:#}")}),
                    Err(_) => json!({"healthy": false, "error": "no answer within 2s"}),
                };
                healthy &= status["healthy"].as_bool() == Some(true);
                status["role"] = slot.info.role.clone().into();
                status["pea"] = slot.info.pea.clone().into();
                status["ctrl"] = slot.info.ctrl.clone().into();
                status["process_restarts"] = slot.restarts.into();
                status
            })
            .collect();
        let (registered, members, expected) = &self.connected;
        let connected: Vec<String> = {
            let names = members.read().expect("members");
            registered
                .borrow()
                .iter()
                .zip(names.iter())
                .filter(|(r, _)| **r)
                .map(|(_, n)| n.clone())
                .collect()
        };
        // An open Pod of shards × replicas needs one replica of each shard.
        let covered = match self.layout {
            Layout::ShardReplicas { .. } if self.open => connected
                .iter()
                .filter_map(|n| self.layout.shard_of_member(&self.name, 0, n))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            _ => connected.len(),
        };
        healthy &= covered >= *expected;
        json!({
            "pea": self.name,
            "pod": self.name,
            "description": self.description,
            "state": "ready",
            "healthy": healthy,
            "requests": self.head_stats.requests.load(Ordering::Relaxed),
            "dropped": self.head_stats.dropped.load(Ordering::Relaxed),
            "failed": self.tail_stats.timed_out.load(Ordering::Relaxed),
            "pending": self.tail_stats.pending.load(Ordering::Relaxed),
            "completed": self.tail_stats.completed.load(Ordering::Relaxed),
            "timed_out": self.tail_stats.timed_out.load(Ordering::Relaxed),
            "late_parts": self.tail_stats.late.load(Ordering::Relaxed),
            "uptime_ms": started.elapsed().as_millis() as u64,
            "process_restarts": restarts,
            "peas": peas,
            "connected": connected,
            "expected": expected,
            "component": self.current.read().expect("current").clone(),
        })
    }

    async fn reply(&self, prefix: &[Bytes], request: &Envelope, status: Status, body: Value) {
        let _ = self
            .ctrl
            .send(control::reply(prefix.to_vec(), request, status, &body))
            .await;
    }
}
