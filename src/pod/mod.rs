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
//!
//! The parts: this file starts a Pod and assembles it (sockets, Head, Tail,
//! members, undone on failure); `config.rs` is what it is given and where
//! each Pea goes; `members.rs` starts one member; `supervise.rs` runs child
//! processes; `task.rs` is the running Pod's control loop and `status.rs`
//! what its STATUS reports; [`head`] and [`tail`] split and merge; [`update`]
//! replaces replicas one by one.

mod config;
pub(crate) mod head;
mod members;
pub mod reduce;
pub mod reshard;
mod status;
mod supervise;
pub(crate) mod tail;
mod task;
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
use crate::wire::{Envelope, ErrorKind, Status};
pub use config::{
    Backend, Balance, DEFAULT_TIMEOUT_READY, ExternalPeas, Layout, MemberInfo, Place, PodConfig,
    Polling, parts_timeout, placed,
};
use config::{member_config, place_of};
use members::{close_worker, serve, start_member, start_side_worker};
pub use reduce::shard_of;
pub use status::{MemberAnswer, MemberStatus, PodStatus};
use supervise::{Member, Supervision, spawn_child, supervise};
pub use supervise::{RESTART_BACKOFF_FIRST, RESTART_BACKOFF_MAX, pea_args, pod_args};
pub use tail::{Expect, Lost, Reducer, Sent, TailInput};
use task::PodTask;

/// The names of a Pod's Peas by index, shared by its Head and Tail (the Head
/// adds replicas that join an open Pod).
pub type Members = Arc<std::sync::RwLock<Vec<String>>>;

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
    /// The copies of the executor file the members run: removed at the end
    /// of [`Opened::undo`], once they stopped (a `PROCESS` Pea restarted
    /// meanwhile still finds its file).
    checked: Option<update::CheckedDir>,
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
    for (i, (spec, address, what)) in sockets.into_iter().enumerate() {
        let owner = format!("pod `{name}` {what}");
        // The control socket drops replies to a client that never reads them.
        let link = if i == 0 {
            Link::open_control(address, &owner).await?
        } else {
            Link::open(spec, address, &owner).await?
        };
        opened.links.push(link);
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
    // The Peas started here run a copy of the file, pinned to its digest
    // (update/checked.rs): a Pea process restarted after a crash, or a
    // rollback to this first version, runs the version the Pod started
    // with, whatever the path holds by then.
    let (pinned, current);
    let config = if local > 0 {
        let dir = update::checked_dir().await.map_err(anyhow::Error::msg)?;
        let (copy, sha256) =
            update::check_and_copy(&runtime, &pod.uses, pod.uses_sha256.as_deref(), &dir).await?;
        current = update::Current::new(std::sync::RwLock::new(update::Component {
            uses: pod.uses.display().to_string(),
            sha256: sha256.clone(),
            with: pod.executor.config.clone(),
            generation: 0,
        }));
        let mut copied = config.clone();
        copied.pea.uses = copy;
        copied.pea.uses_sha256 = Some(sha256);
        pinned = copied;
        opened.checked = Some(dir);
        &pinned
    } else {
        current = update::component_of(&pod.uses, &pod.executor.config).await;
        config
    };
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
    let (resend_tx, resend_rx) = mpsc::unbounded_channel();
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
            resend: resend_tx,
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
            resends: resend_rx,
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
    let (updater, replica_set) = if let Some(checked) = opened.checked.take() {
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
            named: pod.uses.clone(),
            checked,
            mixed: false,
        };
        let set_stop = CancellationToken::new();
        let task = tokio::spawn(set.run(requests, set_stop.clone()));
        (updater, Some((set_stop, task)))
    } else {
        let why = format!(
            "pod `{name}` runs only its Head and Tail here (its Peas run elsewhere): update its Peas where they run"
        );
        (update::Updater::unsupported(current.clone(), why), None)
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
        // A Pea's DUMP waits behind its request in flight, then runs as a
        // call: two call timeouts and the margin, at most.
        ask_timeout: config.timeout_parts * 2,
        fan_outs: Arc::new(tokio::sync::Semaphore::new(task::MAX_FAN_OUTS)),
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
