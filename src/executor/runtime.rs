//! The process-wide half of the host: the wasmtime `Engine` (pooling
//! allocator, epoch interruption and its ticker), the shared `Linker`, the
//! component cache and the tenants; and the memory limits every instance is
//! checked against.

use super::*;

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
pub(super) const SLOT_CORE_INSTANCES: u32 = 32;

pub(super) const SLOT_MEMORIES: u32 = 4;

pub(super) const SLOT_TABLES: u32 = 8;

/// `VMContext` metadata of one component instance and of each core instance
/// (wasmtime's default is 1 MiB; the Python executor needs less than that,
/// but a bigger guest should not fail on it).
pub(super) const SLOT_METADATA: usize = 4 << 20;

/// A call's fiber stack: the guest's [`sandbox::MAX_WASM_STACK`] and the
/// rest for the host functions it calls and the epoch callback (which
/// measures the workspace), as much as an executor's own thread had when
/// calls were not futures. Virtual: only the pages touched are resident.
pub(super) const ASYNC_STACK: usize = 8 << 20;

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
pub(super) fn pooling(slots: u32) -> wasmtime::PoolingAllocationConfig {
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
        .max_core_instance_size(SLOT_METADATA)
        // One fiber stack per call in progress: at most one per instance.
        .total_stacks(slots);
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
        // Calls are futures (see `Executor`): the guest runs on a fiber stack
        // of this size, which holds the wasm stack and the host functions it
        // calls.
        config.async_stack_size(ASYNC_STACK);
        // On demand, each instance's stack is one a dropped instance gave
        // back (the pool keeps its own): see `stacks.rs`.
        config.with_host_stack(Arc::new(super::stacks::Stacks::default()));
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
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
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
        component::load(self, path, None).map(|(loaded, _)| Arc::new(loaded))
    }

    /// [`Runtime::load`] off the reactor, on tokio's blocking pool: compiling
    /// takes seconds, and mapping from the cache reads a file. What every
    /// async caller (a Pea's start, a rolling update's check, the Flow's
    /// endpoint discovery) uses.
    ///
    /// Then [`release_free_memory`] on that same thread: mimalloc collects
    /// the calling thread's heap, and that is where a compile's Cranelift
    /// memory was freed (a Pea that compiled its component: 38 MiB idle, not
    /// 41, `jina-wasm pea` on passthrough.wasm with an empty cache).
    ///
    /// # Errors
    /// As [`Runtime::load`], and [`LoadError::Panicked`].
    pub async fn load_async(
        self: &Arc<Self>,
        path: &Path,
    ) -> Result<Arc<LoadedComponent>, LoadError> {
        self.load_pinned_async(path, None).await
    }

    /// [`Runtime::load_async`] of a file that must have the SHA-256 `wanted`
    /// (what a rolling update checked), when given: another file is refused
    /// before it is compiled.
    ///
    /// # Errors
    /// As [`Runtime::load_async`], and [`LoadError::NotTheChecked`].
    pub async fn load_pinned_async(
        self: &Arc<Self>,
        path: &Path,
        wanted: Option<&str>,
    ) -> Result<Arc<LoadedComponent>, LoadError> {
        let (loaded, ()) = self.load_then_async(path, wanted, |_, _| ()).await?;
        Ok(loaded)
    }

    /// [`Runtime::load_pinned_async`], then `then` with what was loaded and
    /// the very bytes it was loaded from, on the same blocking thread and
    /// before [`release_free_memory`]: how a Pod copies the file it checked
    /// for its Peas with one read, so the copy cannot differ from the check.
    ///
    /// # Errors
    /// As [`Runtime::load_pinned_async`]; `then` runs only after a load that
    /// succeeded.
    pub async fn load_then_async<T: Send + 'static>(
        self: &Arc<Self>,
        path: &Path,
        wanted: Option<&str>,
        then: impl FnOnce(&LoadedComponent, Vec<u8>) -> T + Send + 'static,
    ) -> Result<(Arc<LoadedComponent>, T), LoadError> {
        let (runtime, owned) = (self.clone(), path.to_path_buf());
        let wanted = wanted.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let loaded =
                component::load(&runtime, &owned, wanted.as_deref()).map(|(loaded, bytes)| {
                    let kept = then(&loaded, bytes);
                    (Arc::new(loaded), kept)
                });
            release_free_memory();
            loaded
        })
        .await
        .unwrap_or_else(|e| {
            // What the panic said goes to whoever asked (an operator's
            // rolling update), not only to stderr.
            let why = if e.is_cancelled() {
                "it was cancelled: the runtime is shutting down".to_string()
            } else {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic that said nothing".into())
            };
            Err(LoadError::Panicked {
                path: path.to_path_buf(),
                why,
            })
        })
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
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> EpochTicker {
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

pub(super) fn ticks(limit: Duration) -> u64 {
    (limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos())).max(1) as u64
}

/// Hands memory that is allocated but free back to the OS: compiling a
/// component (a cold cache) leaves megabytes of freed Cranelift memory
/// behind, and an idle Pea should stay small. Both allocators a process may
/// run on: mimalloc (the `jina-wasm` binary's, src/main.rs: its free pages
/// are otherwise kept until its next purge, which an idle process never
/// reaches) and glibc's (C code, and binaries on the system allocator).
pub fn release_free_memory() {
    // mimalloc's C library is linked through the `mimalloc` crate (see
    // lib.rs); its Rust binding declares `mi_collect` only under a feature
    // whose dependency is not vendored here, so it is declared here.
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect frees nothing in use and has no preconditions; it
    // is safe on any thread, whichever allocator the process uses.
    unsafe {
        mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
