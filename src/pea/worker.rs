//! The executor's own thread. Guest calls are synchronous and may run for as
//! long as their time limit, so a Pea never makes them on the async reactor:
//! it hands jobs to this thread and awaits the answer, serving control requests
//! meanwhile.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::executor::{
    ErrorKind, Executor, ExecutorError, ExecutorSpec, ExecutorStats, InitBackoff, Runtime,
};
use crate::wire::Body;

/// Native stack of the executor thread: wasm may use up to 1 MiB of it
/// (`MAX_WASM_STACK`), and the host's own frames need the rest. Only the
/// pages touched count towards RSS.
const STACK: usize = 8 << 20;

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
    /// Dump (unless read-only) and close; the thread ends.
    Close {
        reply: oneshot::Sender<Result<(), Failure>>,
    },
    /// Try again to replace a lost instance once its crash-loop backoff ran
    /// out, so the Pea heals without waiting for a request.
    Revive { reply: oneshot::Sender<()> },
}

/// What `STATUS` reports about the executor, kept current by the thread.
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
    thread: Option<std::thread::JoinHandle<()>>,
    /// The thread that took over from a retired one (see [`retire`]).
    successor: Successor,
}

/// Where a retiring executor thread leaves the handle of the thread that
/// continues its work (several, when successors retire in turn).
type Successor = Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>;

impl Worker {
    /// Loads the component and starts the executor on its own thread.
    ///
    /// # Errors
    /// The load or `init` failure, naming the executor.
    pub async fn start(
        runtime: Arc<Runtime>,
        uses: PathBuf,
        spec: ExecutorSpec,
    ) -> anyhow::Result<Worker> {
        let (jobs, rx) = mpsc::channel(1);
        let (ready_tx, ready) = oneshot::channel();
        let health = Arc::new(Mutex::new(Health::default()));
        let shared = health.clone();
        let successor = Successor::default();
        let next = successor.clone();
        let tokio = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("executor {}", spec.name))
            .stack_size(STACK)
            .spawn(move || {
                let name = spec.name.clone();
                let started =
                    runtime
                        .load(&uses)
                        .map_err(anyhow::Error::from)
                        .and_then(|component| {
                            Executor::start(runtime.clone(), component, spec.clone())
                                .map_err(anyhow::Error::from)
                        });
                match started {
                    Ok(executor) => {
                        shared.lock().expect("health lock").tenant = executor.tenant().cloned();
                        let _ = ready_tx.send(Ok(()));
                        run(Thread {
                            executor,
                            tokio,
                            runtime,
                            uses,
                            spec,
                            jobs: rx,
                            health: shared,
                            successor: next,
                        });
                    }
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(e.context(format!("executor `{name}` did not start"))));
                    }
                }
            })?;
        ready
            .await
            .map_err(|_| anyhow::anyhow!("the executor thread died while starting"))??;
        health.lock().expect("health lock").healthy = true;
        Ok(Worker {
            jobs,
            health,
            thread: Some(thread),
            successor,
        })
    }

    /// Queues a job; the answer comes on the job's `reply`.
    pub async fn submit(&self, job: Job) {
        // The thread ends only after `Close`; a send after that is dropped, and
        // the dropped reply tells the caller.
        let _ = self.jobs.send(job).await;
    }

    /// A handle that queues jobs from elsewhere.
    pub fn sender(&self) -> mpsc::Sender<Job> {
        self.jobs.clone()
    }

    /// Waits for the thread to end (after `Close`), and for the threads that
    /// took over from it, if any.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // A retiring thread stores its successor before it ends.
        loop {
            let next = self.successor.lock().expect("successor lock").pop();
            let Some(thread) = next else { break };
            let _ = thread.join();
        }
    }
}

/// Everything the executor's thread owns.
struct Thread {
    executor: Executor,
    /// The runtime that starts a replacement thread (see [`retire`]).
    tokio: tokio::runtime::Handle,
    runtime: Arc<Runtime>,
    uses: PathBuf,
    spec: ExecutorSpec,
    jobs: mpsc::Receiver<Job>,
    health: Arc<Mutex<Health>>,
    successor: Successor,
}

/// A call that ran long dropped its thread to background priority (see
/// `executor::DEMOTE_AFTER`), which an unprivileged process cannot undo; so
/// the executor moves to a fresh thread at normal priority and this one ends.
/// A thread inherits its creator's policy, so the new one is started from a
/// tokio worker (normal priority), and this one waits until it has been.
/// Costs one thread start (~50 µs) after a call of 100 ms or more. `Err`
/// gives the state back when no thread can be started: work goes on here.
// The state goes back by value (once per call of 100 ms or more): boxing
// it would cost an allocation on every such call for a lint's sake.
#[allow(clippy::result_large_err)]
fn retire(thread: Thread) -> Result<(), Thread> {
    let name = std::thread::current()
        .name()
        .unwrap_or("executor")
        .to_string();
    let tokio = thread.tokio.clone();
    let successor = thread.successor.clone();
    let (done_tx, done) = std::sync::mpsc::channel();
    tokio.spawn(async move {
        let state = Arc::new(Mutex::new(Some(thread)));
        let moved = state.clone();
        let spawned = std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn(move || {
                let thread = moved
                    .lock()
                    .expect("state lock")
                    .take()
                    .expect("moved once");
                run(thread);
            });
        let outcome = match spawned {
            Ok(handle) => {
                successor.lock().expect("successor lock").push(handle);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    "cannot start a thread to replace a background one, staying on it: {e}"
                );
                Err(state.lock().expect("state lock").take().expect("not moved"))
            }
        };
        let _ = done_tx.send(outcome);
    });
    // The runtime is gone (shutting down): nothing took the state over, and
    // it went down with the task; the Pea is stopping anyway.
    done.recv().unwrap_or(Ok(()))
}

fn run(thread: Thread) {
    let Thread {
        mut executor,
        tokio,
        runtime,
        uses,
        spec,
        mut jobs,
        health,
        successor,
    } = thread;
    let publish = |executor: &Executor, busy: Option<Instant>| {
        let mut h = health.lock().expect("health lock");
        h.stats = executor.stats().clone();
        h.busy_since = busy;
        h.backoff = executor.backoff().cloned();
    };
    loop {
        if executor.take_demoted() {
            let thread = Thread {
                executor,
                tokio,
                runtime,
                uses,
                spec,
                jobs,
                health,
                successor,
            };
            match retire(thread) {
                Ok(()) => return,
                Err(thread) => return run(thread),
            }
        }
        // The thread parks at once between jobs. Polling for the next one for
        // 200 µs first (as it once did) cost more CPU than the wake-up it
        // saved on two shared cores: docs/benchmarks.md, "The floor".
        let Some(job) = jobs.blocking_recv() else {
            break;
        };
        match job {
            Job::Handle {
                endpoint,
                body,
                parameters,
                timeout,
                reply,
            } => {
                publish(&executor, Some(Instant::now()));
                let result = handle(&mut executor, &endpoint, &body, &parameters, timeout);
                // A trap discarded the instance: make the next one now, so the
                // next request does not pay for `init` and STATUS tells the truth.
                let healthy = revive(&mut executor);
                publish(&executor, None);
                health.lock().expect("health lock").healthy = healthy;
                let _ = reply.send(result);
            }
            Job::Dump { reply } => {
                let _ = reply.send(dump(&mut executor));
                publish(&executor, None);
            }
            Job::Commit { reply } => {
                let result = commit(&mut executor);
                let healthy = revive(&mut executor);
                publish(&executor, None);
                health.lock().expect("health lock").healthy = healthy;
                let _ = reply.send(result);
            }
            Job::Reload { reply } => {
                let result = dump(&mut executor).and_then(|()| {
                    let component = runtime.load(&uses).map_err(|e| Failure {
                        kind: ErrorKind::Host,
                        message: e.to_string(),
                    })?;
                    Executor::start(runtime.clone(), component, spec.clone()).map_err(Failure::from)
                });
                match result {
                    Ok(fresh) => {
                        let old = std::mem::replace(&mut executor, fresh);
                        if let Err(e) = old.close() {
                            tracing::warn!("{e}");
                        }
                        health.lock().expect("health lock").healthy = true;
                        tracing::info!(executor = %spec.name, "reloaded from {}", uses.display());
                        let _ = reply.send(Ok(()));
                    }
                    Err(failure) => {
                        tracing::warn!(executor = %spec.name, "reload failed, the running instance stays: {}", failure.message);
                        let _ = reply.send(Err(failure));
                    }
                }
                publish(&executor, None);
            }
            Job::Revive { reply } => {
                let healthy = revive(&mut executor);
                publish(&executor, None);
                health.lock().expect("health lock").healthy = healthy;
                let _ = reply.send(());
            }
            Job::Close { reply } => {
                let result =
                    dump(&mut executor).and_then(|()| executor.close().map_err(Failure::from));
                let _ = reply.send(result);
                return;
            }
        }
    }
    // The Pea went away without `Close`: still close the instance.
    if let Err(e) = executor.close() {
        tracing::warn!("{e}");
    }
}

fn handle(
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
    let result = executor.handle_body(endpoint, &docs, parameters, timeout)?;
    let mut out = Vec::new();
    result.encode(&mut out);
    Ok(out.into())
}

/// Makes a new instance if the last was lost; false when there is none (its
/// `init` failed, or the crash-loop backoff is waiting, which is not logged
/// again for every request).
fn revive(executor: &mut Executor) -> bool {
    match executor.revive() {
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
fn commit(executor: &mut Executor) -> Result<(), Failure> {
    dump(executor).map_err(|failure| {
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

fn dump(executor: &mut Executor) -> Result<(), Failure> {
    if executor.sandbox().read_only {
        return Ok(());
    }
    executor.dump().map_err(Failure::from)
}
