//! The executor's task: it owns the executor and makes the jobs a Pea (or a
//! Pod's side worker) queues, one at a time, answering each on its `reply`.
//! The Pea awaits the answer beside its control socket, so it answers
//! control requests while a call runs. Each job is a future this task polls
//! itself; one that runs long moves to a thread of its own
//! (`executor::offload`), so a guest never holds a tokio worker for long.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::executor::{
    ErrorKind, Executor, ExecutorError, ExecutorSpec, ExecutorStats, InitBackoff, Runtime, offload,
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
    /// Dump (unless read-only) and close; the task ends.
    Close {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Try again to replace a lost instance once its crash-loop backoff ran
    /// out, so the Pea heals without waiting for a request.
    Revive { reply: oneshot::Sender<()> },
}

/// What `STATUS` reports about the executor, kept current by its task.
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

pub struct Worker {
    jobs: mpsc::Sender<Job>,
    pub health: Arc<Mutex<Health>>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Loads the component and starts the executor (`init`), then its task.
    ///
    /// # Errors
    /// The load or `init` failure, naming the executor.
    pub async fn start(
        runtime: Arc<Runtime>,
        uses: PathBuf,
        spec: ExecutorSpec,
    ) -> anyhow::Result<Worker> {
        let name = spec.name.clone();
        let executor = start(runtime.clone(), uses.clone(), spec.clone())
            .await
            .map_err(|e| e.context(format!("executor `{name}` did not start")))?;
        let health = Arc::new(Mutex::new(Health {
            tenant: executor.tenant().cloned(),
            healthy: true,
            ..Health::default()
        }));
        let (jobs, rx) = mpsc::channel(1);
        let state = State {
            executor,
            runtime,
            uses,
            spec,
            health: health.clone(),
        };
        let task = tokio::spawn(run(state, rx));
        Ok(Worker { jobs, health, task })
    }

    /// Queues a job; the answer comes on the job's `reply`.
    pub async fn submit(&self, job: Job) {
        // The task ends only after `Close`; a send after that is dropped, and
        // the dropped reply tells the caller.
        let _ = self.jobs.send(job).await;
    }

    /// A handle that queues jobs from elsewhere.
    pub fn sender(&self) -> mpsc::Sender<Job> {
        self.jobs.clone()
    }

    /// Waits for the task to end (after `Close`).
    pub async fn join(self) {
        drop(self.jobs);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the executor's task panicked");
        }
    }
}

/// Loads the component (compiling it, or mapping it from the cache, off the
/// reactor) and starts an executor from it.
async fn start(
    runtime: Arc<Runtime>,
    uses: PathBuf,
    spec: ExecutorSpec,
) -> anyhow::Result<Executor> {
    let name = spec.name.clone();
    let loader = runtime.clone();
    let component = tokio::task::spawn_blocking(move || loader.load(&uses))
        .await
        .map_err(|_| anyhow::anyhow!("loading the component panicked"))??;
    let started = offload::run(&name, Executor::start_async(runtime, component, spec)).await?;
    Ok(started)
}

/// Everything the executor's task owns.
struct State {
    executor: Executor,
    runtime: Arc<Runtime>,
    uses: PathBuf,
    spec: ExecutorSpec,
    health: Arc<Mutex<Health>>,
}

async fn run(mut state: State, mut jobs: mpsc::Receiver<Job>) {
    let name = state.spec.name.clone();
    while let Some(job) = jobs.recv().await {
        match offload::run(&name, state.execute(job)).await {
            Some(next) => state = next,
            None => return,
        }
    }
    // The Pea went away without `Close`: still close the instance.
    if let Err(e) = offload::run(&name, state.executor.close_async()).await {
        tracing::warn!("{e}");
    }
}

impl State {
    fn publish(&self, busy: Option<Instant>) {
        let mut h = self.health.lock().expect("health lock");
        h.stats = self.executor.stats().clone();
        h.busy_since = busy;
        h.backoff = self.executor.backoff().cloned();
    }

    fn set_healthy(&self, healthy: bool) {
        self.health.lock().expect("health lock").healthy = healthy;
    }

    /// Makes one job and answers it; `None` after `Close`, which consumes the
    /// executor.
    async fn execute(mut self, job: Job) -> Option<State> {
        match job {
            Job::Handle {
                endpoint,
                body,
                parameters,
                timeout,
                reply,
            } => {
                self.publish(Some(Instant::now()));
                let result =
                    handle(&mut self.executor, &endpoint, &body, &parameters, timeout).await;
                // A trap discarded the instance: make the next one now, so the
                // next request does not pay for `init` and STATUS tells the truth.
                let healthy = revive(&mut self.executor).await;
                self.publish(None);
                self.set_healthy(healthy);
                let _ = reply.send(result);
            }
            Job::Dump { reply } => {
                let _ = reply.send(dump(&mut self.executor).await);
                self.publish(None);
            }
            Job::Commit { reply } => {
                let result = commit(&mut self.executor).await;
                let healthy = revive(&mut self.executor).await;
                self.publish(None);
                self.set_healthy(healthy);
                let _ = reply.send(result);
            }
            Job::Reload { reply } => {
                let result = self.reload().await;
                let _ = reply.send(result);
                self.publish(None);
            }
            Job::Revive { reply } => {
                let healthy = revive(&mut self.executor).await;
                self.publish(None);
                self.set_healthy(healthy);
                let _ = reply.send(());
            }
            Job::Close { reply } => {
                let result = match dump(&mut self.executor).await {
                    Ok(()) => self.executor.close_async().await.map_err(Failure::from),
                    Err(failure) => Err(failure),
                };
                let _ = reply.send(result);
                return None;
            }
        }
        Some(self)
    }

    /// Dump (unless read-only), then replace the instance with one from the
    /// file as it is now; the running one stays if that fails.
    async fn reload(&mut self) -> Result<(), Failure> {
        dump(&mut self.executor).await?;
        let fresh = start(self.runtime.clone(), self.uses.clone(), self.spec.clone()).await;
        match fresh {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.executor, fresh);
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
