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
//! `clocks.rs` (the guest's clocks; a sleep past the deadline stops the guest),
//! `quota.rs` (the workspace disk quota), `tenant.rs` (per-tenant memory
//! budgets and CPU accounting), `convert.rs` (documents to and from the
//! contract's flat batch), `error.rs`. docs/limits.md lists every limit.

mod bindings;
pub mod cache;
mod clocks;
mod component;
mod convert;
mod error;
mod linalg;
pub mod output;
pub mod quota;
pub mod sandbox;
mod state;
pub mod tenant;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};

pub use cache::{CacheOutcome, ComponentCache};
pub use component::{
    CONTRACT_VERSION, CONTRACT_VERSIONS, EXECUTOR_EXPORT, LoadError, LoadedComponent, check_header,
    supported_versions,
};
pub use error::{ErrorKind, ExecutorError, Phase};
pub use sandbox::{GUEST_WORKSPACE, Sandbox, Volume};
pub use tenant::{Tenant, TenantSpec, Tenants};

use crate::document::Document;
use crate::wire::Body;
use bindings::{GuestError, v1, v2};
use component::Pre;
use output::GuestOutput;
use quota::{Snapshot, Usage};
use sandbox::{Limiter, Refused};
use state::{ExecutorState, Watch};

/// How often the epoch advances. Deadlines are rounded up to whole ticks, so a
/// time limit is enforced within one tick (10 ms) of its value.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How often a running call's writable workspace is measured against its
/// quota, at least: the guest can write for this long (plus one write call,
/// whose size its memory limit bounds) past its quota before it is stopped.
/// Measuring a large tree takes time, so the interval grows to ten times the
/// last measurement: the check never costs more than a tenth of the call.
pub const QUOTA_CHECK: Duration = Duration::from_millis(100);

/// A call that has run this long is a batch job (or a runaway): its thread
/// drops to background priority (nice 19) so that short calls of other
/// executors on the machine get the CPU first when they wake. The default of
/// `Sandbox::background_after`; see `tenant.rs` and docs/limits.md.
pub const DEMOTE_AFTER: Duration = Duration::from_millis(100);

/// Settings of a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// How many executor instances the pooling allocator keeps slots for;
    /// `None`: every instance's memories and tables are mapped when it is
    /// created and unmapped when it is dropped (wasmtime's on-demand
    /// allocator). See [`pooling`].
    pub pool_slots: Option<u32>,
}

/// Per-slot budgets of the pooling allocator, at twice or more what the
/// largest guest we know needs: a componentize-py Python executor has 14 core
/// instances, 1 memory and 2 tables (a component over a budget fails to load,
/// naming the budget). Memories and tables are virtual reservations until
/// touched: a memory slot is wasmtime's 4 GiB reservation plus its guard (so
/// any `--memory-hwm` up to the wasm32 maximum fits; the limiter enforces the
/// real limit), a table slot `MAX_TABLE_ELEMENTS` pointers (8 MiB).
const SLOT_CORE_INSTANCES: u32 = 32;
const SLOT_MEMORIES: u32 = 4;
const SLOT_TABLES: u32 = 8;
/// `VMContext` metadata of one component instance and of each core instance
/// (wasmtime's default is 1 MiB; the Python executor needs less than that,
/// but a bigger guest should not fail on it).
const SLOT_METADATA: usize = 4 << 20;

/// The most memory a wasm32 instance can address: what a `memory_hwm` of
/// `-1` (no limit) amounts to.
pub const WASM32_MAX_MEMORY: u64 = 1 << 32;

/// A `memory_hwm` as a tenant's quota counts it: a size, or `-1` (Jina's "no
/// limit"); past wasm32's 4 GiB an instance cannot grow, so that is the most
/// it counts.
///
/// # Errors
/// Not a size, named as [`crate::units::parse_size`] does.
pub fn memory_limit(input: &str) -> Result<u64, String> {
    parse_memory_hwm(input).map(|n| n.min(WASM32_MAX_MEMORY))
}

/// The least `memory_hwm` taken: below it no executor (not even an empty
/// Rust one) can start, so a smaller one is refused as a bad setting rather
/// than a process that dies.
pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;

/// A `memory_hwm` as given: a size, or `-1` (no limit), of at least
/// [`MIN_MEMORY_LIMIT`].
///
/// # Errors
/// Not a size, or too small, named.
pub fn parse_memory_hwm(input: &str) -> Result<u64, String> {
    let bytes = crate::units::parse_limit_size(input)?;
    check_memory_hwm(bytes)
        .map_err(|e| format!("`{}` {e}", input.trim()))
        .map(|()| bytes)
}

/// Refuses a memory limit below [`MIN_MEMORY_LIMIT`].
///
/// # Errors
/// How much it is and why that is too little.
pub fn check_memory_hwm(bytes: u64) -> Result<(), String> {
    if bytes < MIN_MEMORY_LIMIT {
        return Err(format!(
            "is {}, less than the 1 MiB any executor needs to start (a bare number is GiB, as in Jina)",
            crate::units::format_size(bytes)
        ));
    }
    Ok(())
}

/// The pooling allocator's configuration for `slots` executor instances.
///
/// Why pool: an instance then takes memories and tables from slots mapped
/// once, and a dropped instance's slot is reset with `madvise` instead of
/// unmapped: fewer system calls (and less contention on the process's memory
/// map) per start and per restart after a trap. Measured (docs/benchmarks.md):
/// a Rust executor's restart 1.5-2x faster, a JS one's up to 1.5x, a Python
/// one's unchanged on a quiet machine (2x under load); a large guest's cached
/// start is mostly hashing and mapping its artifact, which pooling does not
/// touch. The cost: a fixed number of slots and a large virtual (not
/// resident) reservation per slot, so commands that run many executors in
/// one process default to on demand.
fn pooling(slots: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * SLOT_CORE_INSTANCES)
        .total_memories(slots * SLOT_MEMORIES)
        .total_tables(slots * SLOT_TABLES)
        .max_core_instances_per_component(SLOT_CORE_INSTANCES)
        .max_memories_per_component(SLOT_MEMORIES)
        .max_tables_per_component(SLOT_TABLES)
        .max_memories_per_module(SLOT_MEMORIES)
        .max_tables_per_module(SLOT_TABLES)
        .table_elements(sandbox::MAX_TABLE_ELEMENTS)
        .max_memory_size(WASM32_MAX_MEMORY as usize)
        .max_component_instance_size(SLOT_METADATA)
        .max_core_instance_size(SLOT_METADATA);
    pool
}

/// The per-process part of the host, shared by every executor in the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<ExecutorState>,
    cache: Option<ComponentCache>,
    tenants: Tenants,
    pool_slots: Option<u32>,
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
        let mut pool_slots = options.pool_slots.filter(|&s| s > 0);
        if let Some(slots) = pool_slots {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling(
                slots,
            )));
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            // The pool is one large virtual reservation, which an address-space
            // limit (`ulimit -v`) can refuse: run, as wasmtime would without it.
            Err(e) if pool_slots.is_some() => {
                tracing::warn!(
                    "cannot reserve the instance pool ({e:#}): allocating instances on demand"
                );
                pool_slots = None;
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
                Engine::new(&config)
                    .map_err(anyhow::Error::from)
                    .context("cannot create the wasmtime engine")?
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context("cannot create the wasmtime engine"));
            }
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        // Both contract versions' imports: their names differ by version
        // (`jina:executor/log@0.2.0`, `@0.1.0`), so each component finds its own.
        v2::ExecutorWorld::add_to_linker::<ExecutorState, HasSelf<ExecutorState>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)?;
        v1::ExecutorWorld::add_to_linker::<ExecutorState, HasSelf<ExecutorState>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)?;
        clocks::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot replace the guest's sleep")?;
        // The host's matrix product (`jina:linalg`), for every executor; only
        // components that call it import it.
        linalg::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot add jina:linalg")?;
        sandbox::refuse_symlinks(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot refuse the guest's symlinks")?;

        let cache = options
            .cache_dir
            .map(|dir| ComponentCache::new(dir, &engine));
        let ticker = EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            tenants: Tenants::default(),
            pool_slots,
            _ticker: ticker,
        }))
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

    /// The instance slots of the pooling allocator; `None`: on demand.
    pub fn pool_slots(&self) -> Option<u32> {
        self.pool_slots
    }

    /// The tenants whose executors run in this process.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
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
        EpochTicker {
            stop,
            thread: Some(thread),
        }
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
/// `read_only`, `durable`, `memory_limit`. docs/wit-contract.md lists them,
/// and which the host always decides itself. A `with` that is not a map is
/// left alone (`start` refuses it).
pub fn set_runtime_arg(config: &mut Value, key: &str, value: Value) {
    if config.is_null() {
        *config = Value::Object(serde_json::Map::new());
    }
    let Value::Object(with) = config else { return };
    let jina = with
        .entry("jina")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(jina) = jina {
        jina.insert(key.to_string(), value);
    }
}

/// Removes `with.jina.<key>` (and `jina` when nothing is left in it): for a
/// fact the host decides itself, so a value the user wrote under `jina` is
/// not taken for the host's.
pub fn unset_runtime_arg(config: &mut Value, key: &str) {
    let Value::Object(with) = config else { return };
    if let Some(Value::Object(jina)) = with.get_mut("jina") {
        jina.remove(key);
        if jina.is_empty() {
            with.remove("jina");
        }
    }
}

/// One endpoint a component declares (contract 0.2.0's `endpoint-info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointInfo {
    /// As requests name it (`/index`), or [`DEFAULT_ENDPOINT`].
    pub name: String,
    /// One line for people; may be empty.
    pub doc: String,
}

/// The declared name of "every endpoint without its own entry" (Jina's
/// default handler, `@requests` without `on`).
pub const DEFAULT_ENDPOINT: &str = "__default__";
/// The most endpoints a component may declare.
pub const MAX_ENDPOINTS: usize = 256;
/// The longest endpoint name, in bytes.
pub const MAX_ENDPOINT_NAME: usize = 256;
/// The longest endpoint doc, in bytes.
pub const MAX_ENDPOINT_DOC: usize = 1024;

/// Checks what a guest declared (untrusted): at most [`MAX_ENDPOINTS`], each
/// name non-empty, at most [`MAX_ENDPOINT_NAME`] bytes, without whitespace or
/// control characters; each doc one line of at most [`MAX_ENDPOINT_DOC`]
/// bytes. A name given twice keeps its first entry.
///
/// # Errors
/// A message naming the entry and what is wrong with it.
pub fn check_endpoints(declared: Vec<(String, String)>) -> Result<Vec<EndpointInfo>, String> {
    if declared.len() > MAX_ENDPOINTS {
        return Err(format!(
            "declared {} endpoints, over the limit of {MAX_ENDPOINTS}",
            declared.len()
        ));
    }
    let mut out: Vec<EndpointInfo> = Vec::with_capacity(declared.len());
    for (i, (name, doc)) in declared.into_iter().enumerate() {
        let shown: String = name.chars().take(40).collect();
        if name.is_empty() || name.len() > MAX_ENDPOINT_NAME {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): a name must have 1 to {MAX_ENDPOINT_NAME} bytes, not {}",
                name.len()
            ));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): a name must not contain whitespace or control characters"
            ));
        }
        if doc.len() > MAX_ENDPOINT_DOC || doc.chars().any(char::is_control) {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): the doc must be one line of at most {MAX_ENDPOINT_DOC} bytes"
            ));
        }
        if !out.iter().any(|e| e.name == name) {
            out.push(EndpointInfo { name, doc });
        }
    }
    Ok(out)
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
    /// The instance's linear memory after its last call (every memory of the
    /// component), for metrics.
    pub memory_bytes: u64,
    /// The workspace's file bytes measured before the last call, when a
    /// disk quota is watched.
    pub workspace_bytes: Option<u64>,
}

/// One live instance.
struct Live {
    store: Store<ExecutorState>,
    bindings: Bindings,
}

/// An instance's exports, of the contract version it implements.
enum Bindings {
    V2(v2::ExecutorWorld),
    V1(v1::ExecutorWorld),
}

/// What one guest call returns: a trap (outer), or the guest's own answer.
type GuestResult<T> = wasmtime::Result<Result<T, GuestError>>;

impl Live {
    fn init(&mut self, config: &str) -> GuestResult<()> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_init(&mut self.store, config)
                .map(|r| r.map_err(Into::into)),
            Bindings::V1(b) => b
                .jina_executor_executor()
                .call_init(&mut self.store, config)
                .map(|r| r.map_err(Into::into)),
        }
    }

    /// `handle`, with the returned batch taken as a body (`Err(message)`: the
    /// guest's output is malformed).
    fn handle(
        &mut self,
        endpoint: &str,
        body: &Body,
        parameters: &str,
    ) -> GuestResult<Result<Body, String>> {
        match &self.bindings {
            Bindings::V2(b) => {
                let view = convert::v2::BatchView::new(body);
                b.jina_executor_executor()
                    .call_handle(&mut self.store, endpoint, view.param(), parameters)
                    .map(|r| r.map(convert::v2::from_batch).map_err(Into::into))
            }
            Bindings::V1(b) => {
                let view = convert::v1::BatchView::new(body);
                b.jina_executor_executor()
                    .call_handle(&mut self.store, endpoint, view.param(), parameters)
                    .map(|r| r.map(convert::v1::from_batch).map_err(Into::into))
            }
        }
    }

    fn dump(&mut self) -> GuestResult<()> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_dump(&mut self.store)
                .map(|r| r.map_err(Into::into)),
            Bindings::V1(b) => b
                .jina_executor_executor()
                .call_dump(&mut self.store)
                .map(|r| r.map_err(Into::into)),
        }
    }

    fn close(&mut self) -> wasmtime::Result<()> {
        match &self.bindings {
            Bindings::V2(b) => b.jina_executor_executor().call_close(&mut self.store),
            Bindings::V1(b) => b.jina_executor_executor().call_close(&mut self.store),
        }
    }

    /// The endpoints the component declares; `None` for a 0.1.0 component,
    /// which cannot say.
    fn endpoints(&mut self) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        match &self.bindings {
            Bindings::V2(b) => b
                .jina_executor_executor()
                .call_endpoints(&mut self.store)
                .map(|list| Some(list.into_iter().map(|e| (e.name, e.doc)).collect())),
            Bindings::V1(_) => Ok(None),
        }
    }
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
    /// The owner whose budget this executor's instances share.
    tenant: Option<Arc<Tenant>>,
    /// A call ran long enough to drop the calling thread to background priority.
    demoted: bool,
    /// Set while replacement instances keep failing their `init`.
    backoff: Option<InitBackoff>,
}

/// The first wait after a replacement instance's `init` failed; it doubles
/// with every further failure, up to [`INIT_BACKOFF_MAX`].
pub const INIT_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts at a failing `init`.
pub const INIT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Crash-loop backoff: a trap discarded the instance and the replacement's
/// `init` failed `failures` times in a row. Until `until`, calls are answered
/// at once with `unavailable` (naming the last init error) instead of paying
/// for another `init` that would likely fail the same way (each can run for
/// `--timeout-init`). Cleared by the first `init` that succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitBackoff {
    pub failures: u32,
    pub until: Instant,
    pub last_error: ExecutorError,
}

impl InitBackoff {
    /// The wait after `failures` failed attempts: 1 s, 2 s, 4 s, ... 60 s.
    pub fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        INIT_BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(INIT_BACKOFF_MAX)
    }
}

impl Executor {
    /// Prepares the sandbox, instantiates the component and calls `init`.
    ///
    /// # Errors
    /// A bad workspace or volume, an instantiation failure, or `init` failing or
    /// trapping, each naming the executor.
    pub fn start(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        mut spec: ExecutorSpec,
    ) -> Result<Executor, ExecutorError> {
        // `read_only` and `memory_limit` are the sandbox's, whatever `with:`
        // says under `jina`.
        if spec.sandbox.read_only {
            set_runtime_arg(&mut spec.config, "read_only", Value::Bool(true));
        } else {
            unset_runtime_arg(&mut spec.config, "read_only");
        }
        // So a stateful executor (one with a workspace) can refuse work before
        // it runs out of memory, which would trap and lose its unsaved state.
        // Not for others: executors built before the SDKs took `jina` out of
        // the parameters refuse a `with` key they do not know.
        if spec.sandbox.workspace.is_some() && (spec.config.is_null() || spec.config.is_object()) {
            set_runtime_arg(
                &mut spec.config,
                "memory_limit",
                Value::from(spec.sandbox.memory_limit),
            );
        } else {
            unset_runtime_arg(&mut spec.config, "memory_limit");
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
            tenant: None,
            demoted: false,
            backoff: None,
        };
        executor
            .sandbox
            .prepare()
            .map_err(|e| executor.error(Phase::Init, ErrorKind::Host, format!("{e:#}")))?;
        if let Some(spec) = &executor.sandbox.tenant {
            let tenant = executor
                .runtime
                .tenants()
                .get(spec)
                .map_err(|e| executor.error(Phase::Init, ErrorKind::Host, e))?;
            executor.tenant = Some(tenant);
        }
        executor.ensure_live()?;
        Ok(executor)
    }

    /// The endpoints `component` declares (contract 0.2.0's `endpoints`),
    /// asked of a fresh instance in a sandbox with nothing granted, without
    /// `init` (so without any configuration); the instance is dropped after.
    /// `None` for a 0.1.0 component, which cannot declare any: it may take
    /// every endpoint.
    ///
    /// # Errors
    /// The instance cannot be created, the call traps or runs past the init
    /// time limit (`phase` is `endpoints`), or the answer is malformed
    /// (`invalid-output`, naming the entry).
    pub fn declared_endpoints(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        name: &str,
    ) -> Result<Option<Vec<EndpointInfo>>, ExecutorError> {
        let sandbox = Sandbox::default();
        let executor = Executor {
            name: name.into(),
            component,
            runtime,
            config: "{}".into(),
            limit: sandbox.init_timeout,
            sandbox,
            live: None,
            stats: ExecutorStats::default(),
            tenant: None,
            demoted: false,
            backoff: None,
        };
        let mut live = executor
            .instantiate()
            .map_err(|e| executor.error(Phase::Endpoints, ErrorKind::Host, format!("{e:#}")))?;
        executor.arm(&mut live, executor.sandbox.init_timeout);
        match live.endpoints() {
            Ok(None) => Ok(None),
            Ok(Some(declared)) => check_endpoints(declared).map(Some).map_err(|message| {
                executor.error(Phase::Endpoints, ErrorKind::InvalidOutput, message)
            }),
            Err(trap) => Err(executor.classify(Phase::Endpoints, trap, &live)),
        }
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

    /// Whether a call since the last time this was asked dropped the calling
    /// thread to background priority (`Sandbox::background_after`). The
    /// thread stays there: the caller should move the executor to a fresh one.
    pub fn take_demoted(&mut self) -> bool {
        std::mem::take(&mut self.demoted)
    }

    /// The tenant this executor belongs to, if any.
    pub fn tenant(&self) -> Option<&Arc<Tenant>> {
        self.tenant.as_ref()
    }

    /// Handles one request: `docs` to the executor's `endpoint`, with the request
    /// `parameters` (a JSON object or null).
    ///
    /// # Errors
    /// The executor's own error, a trap, or malformed output; see [`ErrorKind`].
    pub fn handle(
        &mut self,
        endpoint: &str,
        docs: &[Document],
        parameters: &Value,
    ) -> Result<Vec<Document>, ExecutorError> {
        let params = match parameters {
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let body = self.handle_body(endpoint, &Body::from_documents(docs), &params, None)?;
        body.into_documents()
            .map_err(|message| self.error(Phase::Handle, ErrorKind::InvalidOutput, message))
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
        let params = if parameters.is_empty() {
            "{}"
        } else {
            parameters
        };
        let limit = timeout.map_or(self.sandbox.call_timeout, |t| {
            t.min(self.sandbox.call_timeout)
        });
        let result = self.call(Phase::Handle, limit, |live| {
            live.handle(endpoint, body, params)
        })?;
        let body = result.map_err(|message| {
            self.stats.errors += 1;
            self.error(Phase::Handle, ErrorKind::InvalidOutput, message)
        })?;
        self.check_result_size(&body)
            .inspect_err(|_| self.stats.errors += 1)?;
        Ok(body)
    }

    /// The result caps: the documents and bytes one call may return. The
    /// result was lifted out of the guest already (its size is bounded by the
    /// guest's memory limit); past a cap it goes no further.
    fn check_result_size(&self, body: &Body) -> Result<(), ExecutorError> {
        let docs = body.len();
        if docs > self.sandbox.max_result_docs {
            return Err(self.error(
                Phase::Handle,
                ErrorKind::ResultTooLarge,
                format!(
                    "returned {docs} documents, over its limit of {} (--max-result-docs)",
                    self.sandbox.max_result_docs
                ),
            ));
        }
        let bytes = body.byte_size();
        if bytes > self.sandbox.max_result_bytes {
            return Err(self.error(
                Phase::Handle,
                ErrorKind::ResultTooLarge,
                format!(
                    "returned {} of documents, over its limit of {} (--max-result-bytes)",
                    crate::units::format_size(bytes),
                    crate::units::format_size(self.sandbox.max_result_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// Asks the executor to persist its state into its workspace.
    ///
    /// # Errors
    /// As [`Executor::handle`].
    pub fn dump(&mut self) -> Result<(), ExecutorError> {
        self.ensure_live()?;
        let timeout = self.sandbox.call_timeout;
        self.call(Phase::Dump, timeout, Live::dump)
    }

    /// Calls `close` (if an instance is live) and drops the instance.
    ///
    /// # Errors
    /// When `close` traps.
    pub fn close(mut self) -> Result<(), ExecutorError> {
        let Some(mut live) = self.live.take() else {
            return Ok(());
        };
        self.limit = self.sandbox.call_timeout;
        self.arm(&mut live, self.sandbox.call_timeout);
        let cpu = self.cpu_now();
        let result = live.close();
        self.account(cpu);
        self.demoted |= live.store.data().watch.demoted;
        result.map_err(|e| self.classify(Phase::Close, e, &live))
    }

    /// Starts the watch over a call: its deadline, and the workspace's usage
    /// now when a quota applies.
    fn arm(&self, live: &mut Live, timeout: Duration) {
        let now = Instant::now();
        let quota = self.sandbox.quota_dir().and_then(|dir| {
            let before = Snapshot::take(dir).ok()?;
            Some((dir.to_path_buf(), self.sandbox.quota, before))
        });
        let watch = Watch {
            deadline: now + timeout,
            quota,
            next_check: now + QUOTA_CHECK,
            over_quota: None,
            slept_past: false,
            demote_at: self.sandbox.background_after.map(|after| now + after),
            demoted: false,
        };
        let wake = watch.next_wake(now);
        live.store.data_mut().watch = watch;
        live.store.set_epoch_deadline(ticks(wake));
    }

    /// After a call that returned: did it grow the workspace past its quota?
    fn check_quota(&self, live: &Live) -> Option<String> {
        let (dir, quota, before) = live.store.data().watch.quota.as_ref()?;
        Usage::of(dir).ok()?.exceeds(&before.usage, quota)
    }

    /// After a call failed with `disk-quota`: removes what it added to the
    /// workspace (`quota.rs` says what exactly), so a workspace does not grow
    /// with every failing call.
    fn roll_back(&self, live: &Live) {
        let Some((dir, _, before)) = live.store.data().watch.quota.as_ref() else {
            return;
        };
        match before.roll_back(dir) {
            Ok(after) => tracing::warn!(
                executor = %self.name,
                bytes = after.bytes,
                files = after.files,
                "what the call over its disk quota wrote was rolled back"
            ),
            Err(e) => {
                tracing::error!(executor = %self.name, "cannot roll back the workspace of a call over its disk quota: {e}")
            }
        }
    }

    /// The thread's CPU time, when a tenant is there to charge it to (it
    /// costs a system call).
    fn cpu_now(&self) -> Duration {
        if self.tenant.is_some() {
            tenant::thread_cpu_time()
        } else {
            Duration::ZERO
        }
    }

    fn account(&self, cpu_before: Duration) {
        if let Some(tenant) = &self.tenant {
            tenant.account(tenant::thread_cpu_time().saturating_sub(cpu_before));
        }
    }

    /// Runs one guest call under a deadline and turns its outcome into ours.
    fn call<T>(
        &mut self,
        phase: Phase,
        timeout: Duration,
        f: impl FnOnce(&mut Live) -> GuestResult<T>,
    ) -> Result<T, ExecutorError> {
        let mut live = self.live.take().expect("ensure_live was called");
        live.store.data().output.clear_recent();
        self.limit = timeout;
        self.arm(&mut live, timeout);
        let cpu = self.cpu_now();
        let outcome = f(&mut live);
        self.account(cpu);
        self.demoted |= live.store.data().watch.demoted;
        let over_quota = match &outcome {
            Ok(_) => self.check_quota(&live),
            Err(_) => None,
        };
        if over_quota.is_some() {
            self.roll_back(&live);
        }
        let state = live.store.data();
        self.stats.memory_bytes = state.limiter.memory as u64;
        if let Some((_, _, before)) = &state.watch.quota {
            self.stats.workspace_bytes = Some(before.usage.bytes);
        }
        self.live = Some(live);
        if let Some(message) = over_quota {
            self.stats.errors += 1;
            tracing::warn!(executor = %self.name, %phase, "{message}");
            return Err(self.error(phase, ErrorKind::DiskQuota, message));
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(guest)) => {
                self.stats.errors += 1;
                let kind = guest.kind;
                let mut message = guest.message;
                if kind == ErrorKind::Io
                    && let Some(full) = self.full_workspace()
                {
                    message.push_str(&full);
                }
                Err(self.error(phase, kind, message))
            }
            Err(trap) => {
                let live = self.live.take().expect("live during call");
                self.stats.traps += 1;
                Err(self.classify(phase, trap, &live))
            }
        }
    }

    /// When the writable workspace's filesystem is full: what to add to an
    /// `io` error. A guest cannot say so itself: WASI reports a failed write
    /// on a file stream as a generic I/O error ("os error 29", then "Broken
    /// pipe" once the stream is closed), whatever the host's errno was.
    fn full_workspace(&self) -> Option<String> {
        if self.sandbox.read_only {
            return None;
        }
        let dir = self.sandbox.workspace.as_deref()?;
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        let free = stat.f_bavail as u64 * stat.f_frsize as u64;
        if stat.f_bavail == 0 || free < 4096 {
            Some(format!(
                " [host: no space left on device: the workspace {} has {free} bytes free]",
                dir.display()
            ))
        } else if stat.f_files > 0 && stat.f_favail == 0 {
            Some(format!(
                " [host: no space left on device: the workspace {} has no free inodes]",
                dir.display()
            ))
        } else {
            None
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

    /// The crash-loop backoff in force, if replacement instances keep failing.
    pub fn backoff(&self) -> Option<&InitBackoff> {
        self.backoff.as_ref()
    }

    /// Makes sure an instance is live: creates and `init`s one if the last was
    /// lost, unless the crash-loop backoff says to wait (then `unavailable`).
    fn ensure_live(&mut self) -> Result<(), ExecutorError> {
        if self.live.is_some() {
            return Ok(());
        }
        if let Some(backoff) = &self.backoff
            && let Some(left) = backoff.until.checked_duration_since(Instant::now())
        {
            let message = format!(
                "executor `{}` is unavailable: its instance was lost and a new one failed to start {} time{} in a row \
                 (crash-loop backoff, next attempt in {:.1}s); last init error ({}): {}",
                self.name,
                backoff.failures,
                if backoff.failures == 1 { "" } else { "s" },
                left.as_secs_f64(),
                backoff.last_error.kind,
                backoff.last_error.message
            );
            return Err(self.error(Phase::Init, ErrorKind::Unavailable, message));
        }
        match self.start_instance() {
            Ok(live) => {
                self.backoff = None;
                self.live = Some(live);
                Ok(())
            }
            // The first start fails the Pea's start: nothing to back off from.
            Err(e) if self.stats.calls == 0 && self.stats.traps == 0 => Err(e),
            Err(e) => {
                let failures = self.backoff.as_ref().map_or(0, |b| b.failures) + 1;
                let delay = InitBackoff::delay(failures);
                tracing::warn!(executor = %self.name, failures, "init failed; the next attempt waits {delay:?} (crash-loop backoff)");
                self.backoff = Some(InitBackoff {
                    failures,
                    until: Instant::now() + delay,
                    last_error: e.clone(),
                });
                Err(e)
            }
        }
    }

    /// Creates and `init`s a new instance.
    fn start_instance(&mut self) -> Result<Live, ExecutorError> {
        // No instance means either the start (no call yet) or a trap or a
        // failed durable dump that discarded the last one.
        let restart = self.stats.traps > 0 || self.stats.calls > 0;
        let started = Instant::now();
        let mut live = self
            .instantiate()
            .map_err(|e| self.error(Phase::Init, ErrorKind::Host, format!("{e:#}")))?;
        self.arm(&mut live, self.sandbox.init_timeout);
        let cpu = self.cpu_now();
        let outcome = live.init(&self.config);
        self.account(cpu);
        self.demoted |= live.store.data().watch.demoted;
        if outcome.is_ok()
            && let Some(message) = self.check_quota(&live)
        {
            self.roll_back(&live);
            return Err(self.error(Phase::Init, ErrorKind::DiskQuota, message));
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(guest)) => {
                return Err(self.error(Phase::Init, guest.kind, guest.message));
            }
            Err(trap) => return Err(self.classify(Phase::Init, trap, &live)),
        }
        if restart {
            self.stats.restarts += 1;
        }
        tracing::debug!(executor = %self.name, elapsed = ?started.elapsed(), "instance ready");
        Ok(live)
    }

    fn instantiate(&self) -> anyhow::Result<Live> {
        let output = GuestOutput::new(self.name.clone(), self.sandbox.log_rate);
        let clock = clocks::Monotonic::new();
        let wasi = self.sandbox.wasi_ctx(&output, clock)?;
        let limiter = Limiter {
            memory_limit: usize::try_from(self.sandbox.memory_limit).unwrap_or(usize::MAX),
            memory_refused: None,
            tenant: self.tenant.clone(),
            reserved: 0,
            memory: 0,
        };
        let state = ExecutorState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            output,
            clock,
            watch: Watch::idle(),
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|state| &mut state.limiter);
        // So results up to --max-result-bytes / --max-result-docs lift whole.
        store.set_hostcall_fuel(self.sandbox.hostcall_fuel());
        store.epoch_deadline_callback(|mut store| on_epoch(store.data_mut()));
        // Instantiation runs start functions: the init limit covers them.
        store.data_mut().watch.deadline = Instant::now() + self.sandbox.init_timeout;
        store.set_epoch_deadline(ticks(self.sandbox.init_timeout));
        let instantiated = match &self.component.pre {
            Pre::V2(pre) => pre.instantiate(&mut store).map(Bindings::V2),
            Pre::V1(pre) => pre.instantiate(&mut store).map(Bindings::V1),
        };
        let bindings = instantiated.map_err(|e| {
            let pool_full = e
                .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some();
            let slots = self.runtime.pool_slots().unwrap_or(0);
            let e = anyhow::Error::from(e);
            if pool_full {
                e.context(format!(
                    "every instance slot of this process is taken (--pool-slots {slots})"
                ))
            } else {
                e
            }
        })?;
        Ok(Live { store, bindings })
    }

    /// Explains a trap: which limit was hit, or what the guest printed before it
    /// died (a Rust panic prints its message to stderr, then aborts).
    fn classify(&self, phase: Phase, error: wasmtime::Error, live: &Live) -> ExecutorError {
        let state = live.store.data();
        let (kind, message) = match error.downcast_ref::<Trap>() {
            _ if state.watch.over_quota.is_some() => {
                self.roll_back(live);
                (
                    ErrorKind::DiskQuota,
                    format!(
                        "{} and was stopped",
                        state.watch.over_quota.as_deref().unwrap_or_default()
                    ),
                )
            }
            Some(Trap::Interrupt) => {
                let limit = if phase == Phase::Init {
                    self.sandbox.init_timeout
                } else {
                    self.limit
                };
                if state.watch.slept_past {
                    (
                        ErrorKind::Timeout,
                        format!("asked to sleep past its time limit of {limit:?} and was stopped"),
                    )
                } else {
                    (
                        ErrorKind::Timeout,
                        format!("ran past its time limit of {limit:?} and was stopped"),
                    )
                }
            }
            Some(Trap::StackOverflow) => {
                (ErrorKind::StackOverflow, "overflowed its stack".to_string())
            }
            Some(_) if state.limiter.memory_refused == Some(Refused::Instance) => (
                ErrorKind::MemoryLimit,
                format!(
                    "ran out of memory: its limit is {} (--memory-hwm){}",
                    crate::units::format_size(self.sandbox.memory_limit),
                    last_words(&state.output)
                ),
            ),
            Some(_) if state.limiter.memory_refused == Some(Refused::Tenant) => {
                let tenant = self.tenant.as_ref().expect("a tenant refused");
                (
                    ErrorKind::MemoryLimit,
                    format!(
                        "ran out of memory: its tenant `{}` has used its budget of {} (--tenant-memory) across its executors{}",
                        tenant.name(),
                        crate::units::format_size(tenant.budget()),
                        last_words(&state.output)
                    ),
                )
            }
            Some(Trap::UnreachableCodeReached) => {
                let printed = state.output.recent_stderr();
                match printed.iter().position(|line| line.contains("panicked at")) {
                    Some(at) => (ErrorKind::Panic, printed[at..].join(" ").trim().to_string()),
                    None => (
                        ErrorKind::Trap,
                        format!("trapped: unreachable code{}", last_words(&state.output)),
                    ),
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
            Some(trap) => (
                ErrorKind::Trap,
                format!("trapped: {trap}{}", last_words(&state.output)),
            ),
            None if format!("{error:#}").contains(sandbox::HOSTCALL_FUEL_EXHAUSTED) => (
                ErrorKind::ResultTooLarge,
                format!(
                    "passed the host more than {} in one call (the copy limit that follows from --max-result-bytes {} \
                     and --max-result-docs {})",
                    crate::units::format_size(self.sandbox.hostcall_fuel() as u64),
                    crate::units::format_size(self.sandbox.max_result_bytes),
                    self.sandbox.max_result_docs
                ),
            ),
            None => (ErrorKind::Trap, format!("{error:#}")),
        };
        tracing::warn!(executor = %self.name, %phase, kind = kind.as_str(), "{message}; the instance is discarded and the next call gets a new one");
        self.error(phase, kind, message)
    }

    fn error(&self, phase: Phase, kind: ErrorKind, message: impl Into<String>) -> ExecutorError {
        ExecutorError {
            executor: self.name.to_string(),
            phase,
            kind,
            message: message.into(),
        }
    }
}

/// The epoch callback: stops the call at its deadline (`Trap::Interrupt`, as
/// a plain epoch deadline would) or when its workspace has grown past its
/// quota; otherwise sleeps until the next of the two.
fn on_epoch(state: &mut ExecutorState) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let now = Instant::now();
    if now >= state.watch.deadline || state.watch.slept_past {
        return Err(Trap::Interrupt.into());
    }
    if state.watch.demote_at.is_some_and(|at| now >= at) {
        state.watch.demote_at = None;
        state.watch.demoted = tenant::demote_current_thread();
    }
    if now >= state.watch.next_check
        && let Some((dir, quota, before)) = &state.watch.quota
    {
        let usage = Usage::of(dir).unwrap_or(before.usage);
        if let Some(message) = usage.exceeds(&before.usage, quota) {
            state.watch.over_quota = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        state.watch.next_check = Instant::now() + QUOTA_CHECK.max(now.elapsed() * 10);
    }
    Ok(wasmtime::UpdateDeadline::Continue(ticks(
        state.watch.next_wake(Instant::now()),
    )))
}

fn last_words(output: &GuestOutput) -> String {
    let lines = output.recent_stderr();
    match lines.last() {
        Some(line) if !line.trim().is_empty() => format!(" (last stderr: {})", line.trim()),
        _ => String::new(),
    }
}
