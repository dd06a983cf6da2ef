//! Rolling updates of a running Pod: a new component (`uses`) and/or new
//! `with:` settings, put in place one Pea at a time while the Pod serves
//! (`jina-wasm flow update`, docs/operations.md).
//!
//! - **Replicas**: for each one, start its replacement (same name, same
//!   place), wait until it has connected to the Head, tell the Head to send
//!   the old one no more work, wait until the Tail has every part the old one
//!   holds (at most the drain timeout), then stop it. Requests never wait.
//! - **Shards × replicas**: every replica of every shard in turn, as for
//!   replicas (shard 0's first): each shard keeps a replica serving, and its
//!   requests never wait.
//! - **Shards**: for each one, the Head takes no new request from the Pod's
//!   input (they wait upstream: held, not failed, for at most the drain
//!   timeout); once the Tail has the shard's every part, the shard dumps its
//!   state, stops, and its replacement starts on the same workspace (the state
//!   carries over), connects, and the Head takes requests again.
//!
//! The new component is compiled (and checked against the contract) before
//! anything stops, and the new Peas start from a copy of the file checked
//! (`checked.rs`), as the Pod's first Peas did: a rollback puts back the
//! copy that ran. A replacement that does not start (a bad `with:`, an
//! `init` error, not connected within `timeout_ready`) is stopped and every
//! Pea this update already replaced gets its previous settings back: the Pod
//! ends up as it was, and the error says why. The Pod's STATUS (and the
//! Flow's `GET /status`) names the component that serves: its path, its
//! SHA-256 and the update's generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::head::HeadCommand;
use super::{Layout, Member, MemberInfo, PodConfig, Roster, TailInput};
use crate::executor::Runtime;

mod checked;
mod place;

pub(super) use checked::CheckedDir;

/// What a rolling update changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The new component file.
    pub uses: Option<PathBuf>,
    /// The new `with:` (replaces the whole map).
    pub with: Option<Value>,
}

/// The component a Pod serves, as STATUS and `GET /status` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Component {
    /// The component file.
    pub uses: String,
    /// Hex SHA-256 of the file when it was loaded.
    pub sha256: String,
    /// The `with:` settings.
    pub with: Value,
    /// Rolling updates applied since the Pod started.
    pub generation: u64,
}

/// The component of a Pod, shared by its updater and its STATUS.
pub type Current = Arc<std::sync::RwLock<Component>>;

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// This Pod cannot be updated in place (a single Pea, remote Peas).
    #[error("{0}")]
    Unsupported(String),
    /// The new settings did not start; the Pod serves its previous ones.
    #[error("{0}")]
    Failed(String),
    /// The new settings did not start and the previous ones could not be
    /// restored everywhere: some Pea of the Pod is down.
    #[error("{0}")]
    Degraded(String),
    /// The Pod stopped during the update.
    #[error("the Pod is stopping")]
    Stopping,
}

/// What a successful update did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pod: String,
    /// What serves now.
    pub component: Component,
    /// The Peas replaced, in order.
    pub replaced: Vec<String>,
    /// Requests a replica still held when its drain timeout ended (they may
    /// have failed); 0 when every replica drained in time.
    pub abandoned: usize,
    pub took_ms: u64,
}

pub(super) struct Request {
    change: Change,
    drain: Duration,
    reply: oneshot::Sender<Result<Report, UpdateError>>,
}

/// A handle to a Pod's updater (cloneable; held by the Flow's admin route).
#[derive(Clone)]
pub struct Updater {
    requests: Result<mpsc::Sender<Request>, String>,
    current: Current,
}

impl Updater {
    /// A Pod that cannot be updated in place, and why.
    pub fn unsupported(current: Current, why: String) -> Updater {
        Updater {
            requests: Err(why),
            current,
        }
    }

    /// What the Pod serves now.
    pub fn component(&self) -> Component {
        self.current.read().expect("current").clone()
    }

    /// Runs a rolling update to `change`, each replica (or held shard) given
    /// at most `drain` to finish what it holds.
    ///
    /// # Errors
    /// See [`UpdateError`].
    pub async fn update(&self, change: Change, drain: Duration) -> Result<Report, UpdateError> {
        let requests = self
            .requests
            .as_ref()
            .map_err(|why| UpdateError::Unsupported(why.clone()))?;
        let (reply, rx) = oneshot::channel();
        requests
            .send(Request {
                change,
                drain,
                reply,
            })
            .await
            .map_err(|_| UpdateError::Stopping)?;
        rx.await.map_err(|_| UpdateError::Stopping)?
    }
}

/// Why a component was not made ready to start Peas from.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    /// It does not load: missing, not a component, the wrong contract...
    #[error(transparent)]
    Load(crate::executor::LoadError),
    /// It could not be copied.
    #[error("{0}")]
    Copy(String),
}

/// Checks the component at `uses` (compiled, or mapped from the cache, and
/// checked against the contract) and copies it into `dir`: the file a Pod's
/// Peas start from (`checked.rs`), and its SHA-256. The copy is written from
/// the bytes that were checked, read once, so a file changed in between
/// cannot slip past. With `wanted` (the operator's `--uses-sha256`), a file
/// of another digest is refused before it is compiled, as a Pea does.
pub(super) async fn check_and_copy(
    runtime: &Arc<Runtime>,
    uses: &Path,
    wanted: Option<&str>,
    dir: &CheckedDir,
) -> Result<(PathBuf, String), StageError> {
    let (owned, dir) = (uses.to_path_buf(), dir.path().to_path_buf());
    let (loaded, copy) = runtime
        .load_then_async(uses, wanted, move |loaded, bytes| {
            checked::copy_checked(&owned, &bytes, &loaded.digest, &dir)
        })
        .await
        .map_err(StageError::Load)?;
    Ok((copy.map_err(StageError::Copy)?, loaded.digest.clone()))
}

/// A new directory for a Pod's copies of its executor files, off the reactor.
pub(super) async fn checked_dir() -> Result<CheckedDir, String> {
    tokio::task::spawn_blocking(CheckedDir::new)
        .await
        .map_err(|e| format!("making the checked files' directory failed in the host: {e}"))?
        .map_err(|e| format!("cannot make a directory for the checked files in the temp dir: {e}"))
}

/// The component at `path` as first started, for a Pod whose Peas do not
/// start from a copy (a single Pea, Peas elsewhere): its digest read from
/// the file.
pub async fn component_of(path: &std::path::Path, with: &Value) -> Current {
    // Read as a Pea reads it (a FIFO or a device refused, not waited on or
    // read without end), off the reactor.
    let owned = path.to_path_buf();
    let sha256 = tokio::task::spawn_blocking(move || crate::executor::read_component(&owned))
        .await
        .ok()
        .and_then(Result::ok)
        .map_or_else(String::new, |b| crate::executor::cache::digest(&b));
    Arc::new(std::sync::RwLock::new(Component {
        uses: path.display().to_string(),
        sha256,
        with: with.clone(),
        generation: 0,
    }))
}

/// What a [`ReplicaSet`] hands back to its Pod when the Pod stops.
pub(super) struct HandedBack {
    /// Every Pea it ran, for the Pod to stop.
    pub(super) members: Vec<Member>,
    /// The files those Peas run: kept until they stopped, so a `PROCESS`
    /// Pea restarted meanwhile still finds its file.
    pub(super) checked: CheckedDir,
}

/// The Peas of a running Pod and what changes them: owned by one task, which
/// takes update requests one at a time and hands the Peas back to the Pod
/// when it stops.
pub(super) struct ReplicaSet {
    pub(super) runtime: Arc<Runtime>,
    /// The settings the Pod serves now.
    pub(super) config: PodConfig,
    pub(super) layout: Layout,
    /// The Head's ROUTER and the Tail's PULL, which every Pea connects to.
    pub(super) fanout_at: String,
    pub(super) parts_at: String,
    pub(super) head: mpsc::Sender<HeadCommand>,
    pub(super) tail: mpsc::Sender<TailInput>,
    /// Which members are connected to the Head, by member index.
    pub(super) registered: watch::Receiver<Vec<bool>>,
    /// By member index (the Head's), as `members`.
    pub(super) roster: Roster,
    /// Every Pea started, by member index: a replaced one is `None`.
    pub(super) members: Vec<Option<Member>>,
    /// Per place (replica or shard number), the member index serving it.
    pub(super) active: Vec<usize>,
    pub(super) current: Current,
    /// The executor file the operator named last (the Peas run a copy of
    /// it: [`check_and_copy`]).
    pub(super) named: PathBuf,
    /// Those copies, named by digest: the version that serves, and during an
    /// update the new one.
    pub(super) checked: CheckedDir,
    /// Since an update left the Pod degraded, until one replaces every Pea:
    /// some Peas may run another version than `config`'s (a replica whose
    /// put-back failed runs the new one), so no copy is removed.
    pub(super) mixed: bool,
}

impl ReplicaSet {
    /// Serves update requests until `stop`; returns the Peas that run.
    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        stop: CancellationToken,
    ) -> HandedBack {
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    let result = self.update(request.change, request.drain, &stop).await;
                    let _ = request.reply.send(result);
                }
                () = stop.cancelled() => break,
            }
        }
        HandedBack {
            members: self.members.into_iter().flatten().collect(),
            checked: self.checked,
        }
    }

    /// The channel the Pod's updater handle sends to, and the handle.
    pub(super) fn channel(current: Current) -> (Updater, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Updater {
                requests: Ok(tx),
                current,
            },
            rx,
        )
    }

    async fn update(
        &mut self,
        change: Change,
        drain: Duration,
        stop: &CancellationToken,
    ) -> Result<Report, UpdateError> {
        let started = Instant::now();
        let name = self.config.pea.name.clone();
        let mut next = self.config.clone();
        // The path the operator named, read again by an update that names
        // none, and reported as `uses` (the Peas run a copy of it).
        let named = change.uses.unwrap_or_else(|| self.named.clone());
        if let Some(with) = change.with {
            next.pea.executor.config = with;
        }
        // Compiled and checked before anything stops (cached for the Peas).
        // Each new Pea reads the file again: it must be the one checked, or
        // replicas could run another version than `current` reports. So they
        // read a copy of it that nothing else writes, which a Pea process
        // restarted after a crash reads again, whatever the path named now
        // holds; and each is pinned to its digest.
        let (copy, sha256) = match check_and_copy(&self.runtime, &named, None, &self.checked).await
        {
            Ok(staged) => staged,
            Err(StageError::Load(e)) => {
                return Err(UpdateError::Failed(format!(
                    "pod `{name}`: the new component does not load: {e}; nothing was changed"
                )));
            }
            Err(StageError::Copy(e)) => {
                return Err(UpdateError::Failed(format!(
                    "pod `{name}`: {e}; nothing was changed"
                )));
            }
        };
        tracing::info!(pod = %name, uses = %named.display(), %sha256, "rolling update: starting");
        next.pea.uses = copy;
        next.pea.uses_sha256 = Some(sha256.clone());
        // What a rollback puts back: the copy the Peas run now, pinned.
        let previous = self.config.clone();
        let mut done: Vec<usize> = Vec::new();
        let mut replaced = Vec::new();
        let mut abandoned = 0;
        for place in 0..self.active.len() {
            let result = self.replace(place, &next, drain, stop).await;
            match result {
                Ok(left) => {
                    abandoned += left;
                    done.push(place);
                    replaced.push(
                        self.roster.read().expect("roster")[self.active[place]]
                            .info
                            .pea
                            .clone(),
                    );
                }
                Err(failure) => {
                    if stop.is_cancelled() {
                        return Err(UpdateError::Stopping);
                    }
                    let mut reason = format!("pod `{name}`: {}", failure.reason());
                    let mut down = failure.down();
                    // Every Pea already replaced goes back to what it was.
                    for &place in done.iter().rev() {
                        if let Err(back) = self.replace(place, &previous, drain, stop).await {
                            down = true;
                            reason.push_str(&format!(
                                "; putting back the previous settings failed too: {}",
                                back.reason()
                            ));
                        }
                    }
                    tracing::error!(pod = %name, "rolling update failed: {reason}");
                    self.mixed |= down;
                    if !self.mixed {
                        // Every Pea runs the previous settings again.
                        self.keep_checked(previous.pea.uses_sha256.clone()).await;
                    }
                    return Err(if down {
                        UpdateError::Degraded(reason)
                    } else {
                        UpdateError::Failed(format!(
                            "{reason}; rolled back: the Pod serves its previous settings"
                        ))
                    });
                }
            }
        }
        // Every Pea runs the new version: no other copy is needed again.
        self.keep_checked(Some(sha256.clone())).await;
        self.mixed = false;
        let component = {
            let mut current = self.current.write().expect("current");
            *current = Component {
                uses: named.display().to_string(),
                sha256,
                with: next.pea.executor.config.clone(),
                generation: current.generation + 1,
            };
            current.clone()
        };
        self.config = next;
        self.named = named;
        tracing::info!(pod = %name, generation = component.generation, "rolling update: done");
        Ok(Report {
            pod: name,
            component,
            replaced,
            abandoned,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Removes the copies of checked files but that of `serving` (the
    /// version every Pea runs), once nothing can start from them again: a
    /// Pod updated many times keeps one copy, not one per version.
    async fn keep_checked(&self, serving: Option<String>) {
        let dir = self.checked.path().to_path_buf();
        let _ =
            tokio::task::spawn_blocking(move || checked::keep_only(&dir, serving.as_deref())).await;
    }

    /// Puts `config` in place for one place (replica or shard); the number
    /// of requests abandoned after the drain timeout.
    async fn replace(
        &mut self,
        place: usize,
        config: &PodConfig,
        drain: Duration,
        stop: &CancellationToken,
    ) -> Result<usize, Failure> {
        match self.layout {
            // Shards × replicas: each replica in turn, as for replicas, so
            // every shard keeps a replica serving throughout.
            Layout::Replicas | Layout::ShardReplicas { .. } => {
                self.replace_replica(place, config, drain, stop).await
            }
            Layout::Shards => self
                .replace_shard(place, config, drain, stop)
                .await
                .map(|()| 0),
        }
    }

    /// Starts member `index` and waits until it has connected to the Head.
    async fn start(
        &mut self,
        index: usize,
        config: &PodConfig,
        pea: crate::pea::PeaConfig,
        role: String,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let info = MemberInfo {
            pea: pea.name.clone(),
            role,
            ctrl: String::new(),
        };
        let placeholder = super::Slot {
            info: info.clone(),
            restarts: 0,
            running: false,
            retired: true,
        };
        let started = tokio::select! {
            started = super::start_member(&self.runtime, config, pea, &self.roster, index, info) => {
                started.map_err(|e| format!("{e:#}"))
            }
            () = stop.cancelled() => Err("the Pod is stopping".into()),
        };
        let member = match started {
            Ok(member) => member,
            Err(e) => {
                // The roster keeps one slot per member index.
                super::set_slot(&self.roster, index, placeholder);
                return Err(e);
            }
        };
        if self.members.len() <= index {
            self.members.resize_with(index + 1, || None);
        }
        self.members[index] = Some(member);
        let mut registered = self.registered.clone();
        let wait = registered.wait_for(|r| r.get(index).copied() == Some(true));
        let connected = tokio::select! {
            r = tokio::time::timeout(config.timeout_ready, wait) => match r {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err("the Head stopped".to_string()),
                Err(_) => Err(format!("not connected to the Head within {:?} (timeout_ready)", config.timeout_ready)),
            },
            () = stop.cancelled() => Err("the Pod is stopping".into()),
        };
        if connected.is_err() {
            self.stop_member(index).await;
        }
        connected
    }

    /// Stops member `index` (if it runs) and marks it replaced.
    async fn stop_member(&mut self, index: usize) {
        let grace = self.config.pea.timeout_ctrl;
        if let Some(member) = self.members.get_mut(index).and_then(Option::take)
            && let Err(e) = member.stop(grace).await
        {
            tracing::warn!(pod = %self.config.pea.name, "a replaced Pea did not stop cleanly: {e:#}");
        }
        if let Some(slot) = self.roster.write().expect("roster").get_mut(index) {
            slot.retired = true;
            slot.running = false;
        }
    }

    /// Member `index` gets no more work (and no longer counts in STATUS).
    async fn retire(&mut self, index: usize) {
        let _ = self
            .command(|reply| HeadCommand::Retire { index, reply })
            .await;
    }

    /// Waits until the Tail has every part member `index` owes, or
    /// `deadline`; the number still owed.
    async fn drain(&self, index: usize, deadline: Instant, stop: &CancellationToken) -> usize {
        loop {
            let (reply, rx) = oneshot::channel();
            if self
                .tail
                .send(TailInput::Outstanding {
                    member: index,
                    reply,
                })
                .await
                .is_err()
            {
                return 0;
            }
            let left = rx.await.unwrap_or(0);
            if left == 0 || Instant::now() >= deadline || stop.is_cancelled() {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends a command to the Head and waits until it has applied it.
    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> HeadCommand,
    ) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        self.head
            .send(make(reply))
            .await
            .map_err(|_| "the Pod's Head has stopped".to_string())?;
        rx.await
            .map_err(|_| "the Pod's Head has stopped".to_string())
    }
}

/// How one place's replacement failed.
enum Failure {
    /// Nothing changed for it (the old Pea still serves).
    Unchanged(String),
    /// The new one did not start; the old settings run again.
    RolledBack(String),
    /// Neither runs: the place is down.
    Down(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Unchanged(r) | Failure::RolledBack(r) | Failure::Down(r) => r,
        }
    }

    fn down(&self) -> bool {
        matches!(self, Failure::Down(_))
    }
}

#[cfg(test)]
mod tests {
    /// `uses` naming a FIFO or a device: the digest a Pod reports is read
    /// as the Pea reads its file (refused, not waited on or read without
    /// end), where a singleton Pod read it before its Pea did, with
    /// `tokio::fs::read`: it waited for a writer forever (`/dev/zero`: read
    /// until memory ran out).
    #[tokio::test]
    async fn the_digest_of_a_fifo_or_a_device_is_not_waited_for() {
        use crate::test_support::{fifo, within_10s};
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path(), "fifo.wasm");
        let null = serde_json::Value::Null;
        let read = within_10s(&fifo, super::component_of(&fifo, &null)).await;
        let current = read.expect("a FIFO's digest was waited for");
        assert_eq!(current.read().unwrap().sha256, "");
    }
}
