//! The executor and the jobs on it. A job is a future ([`Worker::run`])
//! that makes the job and answers its `reply`: whoever polls it runs the
//! executor, with no hand-off to another task or thread. The Pea polls its
//! jobs in its own loop beside its control socket, so it answers control
//! requests while a call runs; a job that runs long moves to a thread of its
//! own (`executor::offload`), so a guest never holds a tokio worker for long.
//! Jobs take the executor one at a time, in the order they first ask for it.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::executor::{
    ErrorKind, Executor, ExecutorError, ExecutorSpec, ExecutorStats, InitBackoff, LoadedComponent,
    Runtime, offload,
};
use crate::wire::Body;

/// Why a job failed: a status kind and a message for the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<ExecutorError> for Failure {
    fn from(e: ExecutorError) -> Failure {
        let message = match e.phase {
            crate::executor::Phase::Handle => e.message,
            phase => format!("in {phase}: {}", e.message),
        };
        Failure {
            kind: e.kind,
            message,
        }
    }
}

pub enum Job {
    /// Decode the body, call `handle`, encode the result.
    Handle {
        endpoint: String,
        body: Bytes,
        parameters: String,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<Bytes, Failure>>,
    },
    Dump {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Durable mode: `dump` before the requests handled since the last commit
    /// are answered. On failure the instance is discarded (and a new one made
    /// from the workspace), so nothing unsaved is served afterwards.
    Commit {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Dump (unless read-only), then replace the instance with a new one from
    /// the file as it is now; the old one stays if the new one fails.
    Reload {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Dump (unless read-only) and close; later jobs are dropped unanswered.
    Close {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Try again to replace a lost instance once its crash-loop backoff ran
    /// out, so the Pea heals without waiting for a request.
    Revive { reply: oneshot::Sender<()> },
}

/// What `STATUS` reports about the executor, kept current by its jobs.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub stats: ExecutorStats,
    /// False when an instance could not be re-created after a trap.
    pub healthy: bool,
    /// When the call in progress started.
    pub busy_since: Option<Instant>,
    /// The executor's tenant, whose accounts `STATUS` reports.
    pub tenant: Option<Arc<crate::executor::Tenant>>,
    /// The crash-loop backoff in force (a replacement's `init` keeps failing).
    pub backoff: Option<InitBackoff>,
}

/// A job in progress: poll it to the end to make it.
pub type Running = sync_wrapper::SyncFuture<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// The executor of a Pea (or of a Pod's Head or Tail), shared by the
/// handles that run jobs on it.
#[derive(Clone)]
pub struct Worker {
    state: Arc<tokio::sync::Mutex<State>>,
    pub health: Arc<Mutex<Health>>,
    name: Arc<str>,
}

impl Worker {
    /// Loads the component and starts the executor (`init`). `sha256`: the
    /// digest the file must have (what a rolling update checked).
    ///
    /// # Errors
    /// The load or `init` failure, or a file of another digest, naming the
    /// executor.
    pub async fn start(
        runtime: Arc<Runtime>,
        uses: PathBuf,
        sha256: Option<&str>,
        spec: ExecutorSpec,
    ) -> anyhow::Result<Worker> {
        let name: Arc<str> = spec.name.as_str().into();
        let executor = start(runtime.clone(), uses.clone(), sha256, spec.clone())
            .await
            .map_err(|e| e.context(format!("executor `{name}` did not start")))?;
        let health = Arc::new(Mutex::new(Health {
            tenant: executor.tenant().cloned(),
            healthy: true,
            ..Health::default()
        }));
        let state = State {
            executor: Some(executor),
            runtime,
            uses,
            pinned: sha256.is_some(),
            spec,
            health: health.clone(),
        };
        Ok(Worker {
            state: Arc::new(tokio::sync::Mutex::new(state)),
            health,
            name,
        })
    }

    /// `job` as a future: polled, it waits for the jobs before it, makes this
    /// one and answers its `reply`. Dropped before the end, the job is
    /// abandoned (its call too, unless it runs on a thread of its own).
    pub fn run(&self, job: Job) -> Running {
        let state = self.state.clone();
        let name = self.name.clone();
        sync_wrapper::SyncFuture::new(Box::pin(async move {
            let mut state = state.lock_owned().await;
            // Boxed here, before it is polled: this future stays small while
            // it waits for the lock, and the call's is made once, in place.
            offload::run(&name, Box::pin(async move { state.execute(job).await })).await;
        }))
    }

    /// Makes `job` to the end (its answer is on its `reply`).
    pub async fn submit(&self, job: Job) {
        self.run(job).await;
    }
}

/// Loads the component (compiling it, or mapping it from the cache, off the
/// reactor) and starts an executor from it; when `sha256` is given, only
/// from a file of that digest.
async fn start(
    runtime: Arc<Runtime>,
    uses: PathBuf,
    sha256: Option<&str>,
    spec: ExecutorSpec,
) -> anyhow::Result<Executor> {
    let component = runtime.load_pinned_async(&uses, sha256).await?;
    instantiate(runtime, component, spec).await
}

/// Starts an executor (`init`) from a loaded component, off the reactor.
async fn instantiate(
    runtime: Arc<Runtime>,
    component: Arc<LoadedComponent>,
    spec: ExecutorSpec,
) -> anyhow::Result<Executor> {
    let name = spec.name.clone();
    let started = offload::run(
        &name,
        Box::pin(Executor::start_async(runtime, component, spec)),
    )
    .await?;
    Ok(started)
}

/// The executor and what it takes to make a new one.
struct State {
    /// `None` once closed.
    executor: Option<Executor>,
    runtime: Arc<Runtime>,
    uses: PathBuf,
    /// Whether a rolling update pinned this Pea to a digest (`--uses-sha256`):
    /// it runs that one version until the next update, so a reload reuses
    /// the component it runs rather than reading `uses` again.
    pinned: bool,
    spec: ExecutorSpec,
    health: Arc<Mutex<Health>>,
}

impl State {
    fn publish(&self, executor: &Executor, busy: Option<Instant>) {
        self.publish_health(executor, busy, None);
    }

    /// As [`State::publish`], and the health too when `healthy` is given:
    /// under one lock, so STATUS never reads the new stats with the old
    /// health.
    fn publish_health(&self, executor: &Executor, busy: Option<Instant>, healthy: Option<bool>) {
        let mut h = self.health.lock().expect("health lock");
        h.stats = executor.stats().clone();
        h.busy_since = busy;
        h.backoff = executor.backoff().cloned();
        if let Some(healthy) = healthy {
            h.healthy = healthy;
        }
    }

    fn set_healthy(&self, healthy: bool) {
        self.health.lock().expect("health lock").healthy = healthy;
    }

    /// After a job that may have lost the instance (a trap discards it):
    /// makes the next one now, so the next request does not pay for `init`
    /// and STATUS tells the truth, then publishes the executor's state and
    /// health. `&mut self`: the future stays `Send` (`State` is not `Sync`).
    async fn settle(&mut self, executor: &mut Executor) {
        let healthy = revive(executor).await;
        self.publish_health(executor, None, Some(healthy));
    }

    /// Makes one job and answers it; after `Close` (no executor), drops it
    /// unanswered.
    async fn execute(&mut self, job: Job) {
        let Some(mut executor) = self.executor.take() else {
            return;
        };
        match job {
            Job::Handle {
                endpoint,
                body,
                parameters,
                timeout,
                reply,
            } => {
                self.publish(&executor, Some(Instant::now()));
                let result = handle(&mut executor, &endpoint, &body, &parameters, timeout).await;
                self.settle(&mut executor).await;
                let _ = reply.send(result);
            }
            Job::Dump { reply } => {
                let _ = reply.send(dump(&mut executor).await);
                self.publish(&executor, None);
            }
            Job::Commit { reply } => {
                let result = commit(&mut executor).await;
                self.settle(&mut executor).await;
                let _ = reply.send(result);
            }
            Job::Reload { reply } => {
                let result = self.reload(&mut executor).await;
                let _ = reply.send(result);
                self.publish(&executor, None);
            }
            Job::Revive { reply } => {
                self.settle(&mut executor).await;
                let _ = reply.send(());
            }
            Job::Close { reply } => {
                let result = match dump(&mut executor).await {
                    Ok(()) => executor.close_async().await.map_err(Failure::from),
                    Err(failure) => Err(failure),
                };
                let _ = reply.send(result);
                return;
            }
        }
        self.executor = Some(executor);
    }

    /// Dump (unless read-only), then replace the instance with a fresh one,
    /// which loads the dumped state: from the file as it is now, or for a
    /// pinned Pea, from the component it runs. The running one stays if that
    /// fails.
    async fn reload(&mut self, executor: &mut Executor) -> Result<(), Failure> {
        dump(executor).await?;
        let fresh = if self.pinned {
            // A Pea a rolling update pinned runs one version until the next
            // update (a Pea the Pod restarts after a crash gets the same pin,
            // so it must be what the Pea ran): it reloads its state, and never
            // reads the file, which may hold another version by now.
            let component = executor.component().clone();
            instantiate(self.runtime.clone(), component, self.spec.clone()).await
        } else {
            // The file as it is now: what a reload of code is for.
            start(
                self.runtime.clone(),
                self.uses.clone(),
                None,
                self.spec.clone(),
            )
            .await
        };
        match fresh {
            Ok(fresh) => {
                let old = std::mem::replace(executor, fresh);
                if let Err(e) = old.close_async().await {
                    tracing::warn!("{e}");
                }
                self.set_healthy(true);
                tracing::info!(executor = %self.spec.name, "reloaded from {}", self.uses.display());
                Ok(())
            }
            Err(e) => {
                let failure = Failure {
                    kind: e
                        .downcast_ref::<ExecutorError>()
                        .map_or(ErrorKind::Host, |e| e.kind),
                    message: format!("{e:#}"),
                };
                tracing::warn!(executor = %self.spec.name, "reload failed, the running instance stays: {}", failure.message);
                Err(failure)
            }
        }
    }
}

async fn handle(
    executor: &mut Executor,
    endpoint: &str,
    body: &Bytes,
    parameters: &str,
    timeout: Option<Duration>,
) -> Result<Bytes, Failure> {
    let docs = if body.is_empty() {
        Ok(Body::default())
    } else {
        Body::decode(body)
    };
    let docs = docs.map_err(|e| Failure {
        kind: ErrorKind::Malformed,
        message: e.to_string(),
    })?;
    let result = executor
        .handle_body_async(endpoint, &docs, parameters, timeout)
        .await?;
    let mut out = Vec::new();
    result.encode(&mut out);
    Ok(out.into())
}

/// Makes a new instance if the last was lost; false when there is none (its
/// `init` failed, or the crash-loop backoff is waiting, which is not logged
/// again for every request).
async fn revive(executor: &mut Executor) -> bool {
    match executor.revive().await {
        Ok(()) => true,
        Err(e) if e.kind == ErrorKind::Unavailable => false,
        Err(e) => {
            tracing::error!("{e}");
            false
        }
    }
}

/// Durable mode's dump: the changes of the requests handled since the last
/// commit are on disk when it returns `Ok`.
async fn commit(executor: &mut Executor) -> Result<(), Failure> {
    dump(executor).await.map_err(|failure| {
        // The changes may be in memory but are not on disk: drop the instance,
        // so the next request sees exactly what is on disk.
        executor.discard();
        Failure {
            kind: ErrorKind::Dump,
            message: format!(
                "the request was handled but its changes could not be saved, so it is not acknowledged (durable \
                 mode); the executor restarts from its workspace: {} ({})",
                failure.message, failure.kind
            ),
        }
    })
}

async fn dump(executor: &mut Executor) -> Result<(), Failure> {
    if executor.sandbox().read_only {
        return Ok(());
    }
    executor.dump_async().await.map_err(Failure::from)
}
