//! The executor host: runs executor components inside a sandbox.
//!
//! - [`Runtime`] is built once per process: the wasmtime `Engine` (with epoch
//!   interruption, driven by one ticker thread), the `Linker` with WASI preview 2
//!   and our `log` import, and the compiled-component cache.
//! - [`Runtime::load`] turns a `.wasm` path into a checked [`LoadedComponent`]
//!   (compiled or taken from the cache, exports checked, imports linked).
//! - [`Executor`] is one live executor: one `Store` and instance, `init`ed with its
//!   `with:` config, called with [`Executor::handle`], [`Executor::dump`] and
//!   [`Executor::close`]. A trap (panic, timeout, memory limit, stack overflow)
//!   becomes a typed [`ExecutorError`]; the instance is discarded and the next call
//!   gets a fresh one, re-`init`ed.
//!
//! Calls are synchronous and may run for as long as their time limit: async code
//! runs them on a blocking thread (`tokio::task::spawn_blocking`), never on the
//! reactor.
//!
//! Files: `bindings.rs` (the only `bindgen!`), `component.rs` (loading),
//! `cache.rs` (compiled components on disk), `sandbox.rs` (what a guest may touch),
//! `state.rs` (per-instance host state), `output.rs` (guest stdout/stderr/logs),
//! `convert.rs` (documents to and from the contract's flat batch), `error.rs`.

mod bindings;
pub mod cache;
mod component;
mod convert;
mod error;
pub mod output;
pub mod sandbox;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};

pub use cache::{CacheOutcome, ComponentCache};
pub use component::{CONTRACT_VERSION, EXECUTOR_EXPORT, LoadError, LoadedComponent, check_header};
pub use error::{ErrorKind, ExecutorError, Phase};
pub use sandbox::{GUEST_WORKSPACE, Sandbox, Volume};

use crate::document::Document;
use crate::wire::Body;
use bindings::{ExecutorWorld, types};
use output::GuestOutput;
use sandbox::Limiter;
use state::ExecutorState;

/// How often the epoch advances. Deadlines are rounded up to whole ticks, so a
/// time limit is enforced within one tick (10 ms) of its value.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
}

/// The per-process part of the host, shared by every executor in the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<ExecutorState>,
    cache: Option<ComponentCache>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine, the linker and the epoch ticker.
    ///
    /// # Errors
    /// When wasmtime rejects the configuration (it should not on supported hosts).
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Arc<Runtime>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(sandbox::MAX_WASM_STACK);
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("cannot create the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        ExecutorWorld::add_to_linker::<ExecutorState, HasSelf<ExecutorState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)?;

        let cache = options.cache_dir.map(|dir| ComponentCache::new(dir, &engine));
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime { engine, linker, cache, _ticker: ticker }))
    }

    /// Loads, checks and links a component. See [`LoadError`] for what is checked.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedComponent>, LoadError> {
        component::load(self, path).map(Arc::new)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<ExecutorState> {
        &self.linker
    }

    pub fn cache(&self) -> Option<&ComponentCache> {
        self.cache.as_ref()
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread, which
/// stops when the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("jina-wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("cannot spawn the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ticks(limit: Duration) -> u64 {
    (limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos())).max(1) as u64
}

/// Sets `with.jina.<key>`: what the host tells an executor about how it runs
/// (as Jina's `runtime_args`): `shard_id`/`shards`, `replica_id`/`replicas`,
/// `read_only`, `durable`. docs/wit-contract.md lists them. A `with` that is
/// not a map is left alone (`start` refuses it).
pub fn set_runtime_arg(config: &mut Value, key: &str, value: Value) {
    if config.is_null() {
        *config = Value::Object(serde_json::Map::new());
    }
    let Value::Object(with) = config else { return };
    let jina = with.entry("jina").or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(jina) = jina {
        jina.insert(key.to_string(), value);
    }
}

/// What to run and how: everything but the component itself.
#[derive(Debug, Clone)]
pub struct ExecutorSpec {
    /// Name used in logs and errors (the Pea's name).
    pub name: String,
    /// The `with:` parameters: a JSON object.
    pub config: Value,
    pub sandbox: Sandbox,
}

/// Counters reported by `STATUS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    /// `handle` calls made.
    pub calls: u64,
    /// Calls that ended in an error the executor returned.
    pub errors: u64,
    /// Calls that ended in a trap (the instance was discarded).
    pub traps: u64,
    /// Instances created after the first.
    pub restarts: u64,
}

/// One live instance.
struct Live {
    store: Store<ExecutorState>,
    bindings: ExecutorWorld,
}

/// One running executor: a component, its config and sandbox, and (between a
/// trap and the next call, none) a live instance.
pub struct Executor {
    name: Arc<str>,
    component: Arc<LoadedComponent>,
    runtime: Arc<Runtime>,
    config: String,
    sandbox: Sandbox,
    live: Option<Live>,
    stats: ExecutorStats,
    /// The time limit of the call in progress (for the message when it runs out).
    limit: Duration,
}

impl Executor {
    /// Prepares the sandbox, instantiates the component and calls `init`.
    ///
    /// # Errors
    /// A bad workspace or volume, an instantiation failure, or `init` failing or
    /// trapping, each naming the executor.
    pub fn start(runtime: Arc<Runtime>, component: Arc<LoadedComponent>, mut spec: ExecutorSpec) -> Result<Executor, ExecutorError> {
        if spec.sandbox.read_only {
            set_runtime_arg(&mut spec.config, "read_only", Value::Bool(true));
        }
        let config = match &spec.config {
            Value::Null => "{}".to_string(),
            Value::Object(_) => spec.config.to_string(),
            other => {
                return Err(ExecutorError {
                    executor: spec.name,
                    phase: Phase::Init,
                    kind: ErrorKind::BadConfig,
                    message: format!("`with` must be a map of parameters, not {other}"),
                });
            }
        };
        let mut executor = Executor {
            name: spec.name.into(),
            component,
            runtime,
            config,
            sandbox: spec.sandbox,
            live: None,
            stats: ExecutorStats::default(),
            limit: Duration::ZERO,
        };
        executor
            .sandbox
            .prepare()
            .map_err(|e| executor.error(Phase::Init, ErrorKind::Host, format!("{e:#}")))?;
        executor.ensure_live()?;
        Ok(executor)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }

    pub fn stats(&self) -> &ExecutorStats {
        &self.stats
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Handles one request: `docs` to the executor's `endpoint`, with the request
    /// `parameters` (a JSON object or null).
    ///
    /// # Errors
    /// The executor's own error, a trap, or malformed output; see [`ErrorKind`].
    pub fn handle(&mut self, endpoint: &str, docs: &[Document], parameters: &Value) -> Result<Vec<Document>, ExecutorError> {
        let params = match parameters {
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let body = self.handle_body(endpoint, &Body::from_documents(docs), &params, None)?;
        body.into_documents().map_err(|message| self.error(Phase::Handle, ErrorKind::InvalidOutput, message))
    }

    /// Handles one request given as columns, the way a Pea receives it:
    /// `parameters` is JSON object text (empty for none). `timeout` shortens the
    /// call's time limit (a request's deadline); it never lengthens it.
    ///
    /// # Errors
    /// As [`Executor::handle`].
    pub fn handle_body(
        &mut self,
        endpoint: &str,
        body: &Body,
        parameters: &str,
        timeout: Option<Duration>,
    ) -> Result<Body, ExecutorError> {
        self.stats.calls += 1;
        self.ensure_live()?;
        let params = if parameters.is_empty() { "{}" } else { parameters };
        let view = convert::BatchView::new(body);
        let batch = view.param();
        let limit = timeout.map_or(self.sandbox.call_timeout, |t| t.min(self.sandbox.call_timeout));
        let result = self.call(Phase::Handle, limit, |live| {
            live.bindings.jina_executor_executor().call_handle(&mut live.store, endpoint, batch, params)
        })?;
        convert::from_batch(result).map_err(|message| {
            self.stats.errors += 1;
            self.error(Phase::Handle, ErrorKind::InvalidOutput, message)
        })
    }

    /// Asks the executor to persist its state into its workspace.
    ///
    /// # Errors
    /// As [`Executor::handle`].
    pub fn dump(&mut self) -> Result<(), ExecutorError> {
        self.ensure_live()?;
        let timeout = self.sandbox.call_timeout;
        self.call(Phase::Dump, timeout, |live| live.bindings.jina_executor_executor().call_dump(&mut live.store))
    }

    /// Calls `close` (if an instance is live) and drops the instance.
    ///
    /// # Errors
    /// When `close` traps.
    pub fn close(mut self) -> Result<(), ExecutorError> {
        let Some(mut live) = self.live.take() else { return Ok(()) };
        live.store.set_epoch_deadline(ticks(self.sandbox.call_timeout));
        live.bindings
            .jina_executor_executor()
            .call_close(&mut live.store)
            .map_err(|e| self.classify(Phase::Close, e, &live))
    }

    /// Runs one guest call under a deadline and turns its outcome into ours.
    fn call<T>(
        &mut self,
        phase: Phase,
        timeout: Duration,
        f: impl FnOnce(&mut Live) -> wasmtime::Result<Result<T, types::Error>>,
    ) -> Result<T, ExecutorError> {
        let live = self.live.as_mut().expect("ensure_live was called");
        live.store.data().output.clear_recent();
        live.store.set_epoch_deadline(ticks(timeout));
        self.limit = timeout;
        match f(live) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(guest)) => {
                self.stats.errors += 1;
                Err(self.error(phase, guest_kind(guest.kind), guest.message))
            }
            Err(trap) => {
                let live = self.live.take().expect("live during call");
                self.stats.traps += 1;
                Err(self.classify(phase, trap, &live))
            }
        }
    }

    /// Whether an instance is live (false after a trap, until the next call).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Drops the live instance without calling `close`: the next call starts a
    /// new one, which loads the workspace as it is on disk.
    pub fn discard(&mut self) {
        self.live = None;
    }

    /// Creates a new instance now if a trap discarded the last one (otherwise the
    /// next call would).
    ///
    /// # Errors
    /// When instantiating or `init` fails.
    pub fn revive(&mut self) -> Result<(), ExecutorError> {
        self.ensure_live()
    }

    /// Makes sure an instance is live: creates and `init`s one if the last was lost.
    fn ensure_live(&mut self) -> Result<(), ExecutorError> {
        if self.live.is_some() {
            return Ok(());
        }
        // No instance means either the start (no call yet) or a trap or a
        // failed durable dump that discarded the last one.
        let restart = self.stats.traps > 0 || self.stats.calls > 0;
        let started = Instant::now();
        let mut live = self.instantiate().map_err(|e| self.error(Phase::Init, ErrorKind::Host, format!("{e:#}")))?;
        live.store.set_epoch_deadline(ticks(self.sandbox.init_timeout));
        match live.bindings.jina_executor_executor().call_init(&mut live.store, &self.config) {
            Ok(Ok(())) => {}
            Ok(Err(guest)) => return Err(self.error(Phase::Init, guest_kind(guest.kind), guest.message)),
            Err(trap) => return Err(self.classify(Phase::Init, trap, &live)),
        }
        if restart {
            self.stats.restarts += 1;
        }
        tracing::debug!(executor = %self.name, elapsed = ?started.elapsed(), "instance ready");
        self.live = Some(live);
        Ok(())
    }

    fn instantiate(&self) -> anyhow::Result<Live> {
        let output = GuestOutput::new(self.name.clone());
        let wasi = self.sandbox.wasi_ctx(&output)?;
        let limiter = Limiter {
            memory_limit: usize::try_from(self.sandbox.memory_limit).unwrap_or(usize::MAX),
            memory_refused: false,
        };
        let state = ExecutorState { wasi, table: ResourceTable::new(), limiter, output };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(ticks(self.sandbox.init_timeout));
        let bindings = self.component.pre.instantiate(&mut store).map_err(anyhow::Error::from)?;
        Ok(Live { store, bindings })
    }

    /// Explains a trap: which limit was hit, or what the guest printed before it
    /// died (a Rust panic prints its message to stderr, then aborts).
    fn classify(&self, phase: Phase, error: wasmtime::Error, live: &Live) -> ExecutorError {
        let state = live.store.data();
        let (kind, message) = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                let limit = if phase == Phase::Init { self.sandbox.init_timeout } else { self.limit };
                (ErrorKind::Timeout, format!("ran past its time limit of {limit:?} and was stopped"))
            }
            Some(Trap::StackOverflow) => (ErrorKind::StackOverflow, "overflowed its stack".to_string()),
            Some(_) if state.limiter.memory_refused => (
                ErrorKind::MemoryLimit,
                format!(
                    "ran out of memory: its limit is {} (--memory-hwm){}",
                    crate::units::format_size(self.sandbox.memory_limit),
                    last_words(&state.output)
                ),
            ),
            Some(Trap::UnreachableCodeReached) => {
                let printed = state.output.recent_stderr();
                match printed.iter().position(|line| line.contains("panicked at")) {
                    Some(at) => (ErrorKind::Panic, printed[at..].join(" ").trim().to_string()),
                    None => (ErrorKind::Trap, format!("trapped: unreachable code{}", last_words(&state.output))),
                }
            }
            Some(Trap::MemoryOutOfBounds) => (
                ErrorKind::Trap,
                format!(
                    "trapped: out of bounds memory access (a Rust guest keeps part of its stack in linear memory: \
                     deep recursion can end this way){}",
                    last_words(&state.output)
                ),
            ),
            Some(trap) => (ErrorKind::Trap, format!("trapped: {trap}{}", last_words(&state.output))),
            None => (ErrorKind::Trap, format!("{error:#}")),
        };
        tracing::warn!(executor = %self.name, %phase, kind = kind.as_str(), "{message}; the instance is discarded and the next call gets a new one");
        self.error(phase, kind, message)
    }

    fn error(&self, phase: Phase, kind: ErrorKind, message: impl Into<String>) -> ExecutorError {
        ExecutorError { executor: self.name.to_string(), phase, kind, message: message.into() }
    }
}

fn last_words(output: &GuestOutput) -> String {
    let lines = output.recent_stderr();
    match lines.last() {
        Some(line) if !line.trim().is_empty() => format!(" (last stderr: {})", line.trim()),
        _ => String::new(),
    }
}

fn guest_kind(kind: types::ErrorKind) -> ErrorKind {
    match kind {
        types::ErrorKind::BadRequest => ErrorKind::BadRequest,
        types::ErrorKind::BadConfig => ErrorKind::BadConfig,
        types::ErrorKind::ReadOnly => ErrorKind::ReadOnly,
        types::ErrorKind::Io => ErrorKind::Io,
        types::ErrorKind::Internal => ErrorKind::Internal,
    }
}
