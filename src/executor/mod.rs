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
//! Calls are futures (wasmtime's async support): the `_async` methods. The
//! guest yields at every epoch tick, and [`offload::run`] moves a call that
//! runs long to a thread of its own, so a short call is made by the task that
//! wants its answer. The plain methods ([`Executor::start`],
//! [`Executor::handle`], ...) block on them (`offload::block_on`), for code
//! outside async code (the CLI's `run`, `inspect`, `reshard`, tests and
//! benchmarks); inside async code they panic.
//!
//! Files: `bindings.rs` (the only `bindgen!`), `component.rs` (loading),
//! `cache.rs` (compiled components on disk), `sandbox.rs` (what a guest may touch),
//! `state.rs` (per-instance host state), `output.rs` (guest stdout/stderr/logs),
//! `clocks.rs` (the guest's clocks; a sleep past the deadline stops the guest),
//! `offload.rs` (where a call runs), `stacks.rs` (the calls' fiber stacks),
//! `quota.rs` (the workspace disk quota), `tenant.rs` (per-tenant memory
//! budgets and CPU accounting), `convert.rs` (documents to and from the
//! contract's flat batch), `error.rs`. docs/limits.md lists every limit.

mod bindings;
pub mod cache;
mod clocks;
mod component;
mod convert;
mod endpoints;
mod error;
mod linalg;
mod live;
pub mod offload;
pub mod output;
pub mod quota;
mod runtime;
pub mod sandbox;
mod stacks;
mod state;
pub mod tenant;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use offload::block_on;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};

pub use cache::{CacheOutcome, ComponentCache};
pub(crate) use component::read as read_component;
pub use component::{
    CONTRACT_VERSION, CONTRACT_VERSIONS, EXECUTOR_EXPORT, LoadError, LoadedComponent, check_header,
    supported_versions,
};
pub use endpoints::{
    DEFAULT_ENDPOINT, EndpointInfo, MAX_ENDPOINT_DOC, MAX_ENDPOINT_NAME, MAX_ENDPOINTS,
    check_endpoints, set_runtime_arg, unset_runtime_arg,
};
pub use error::{ErrorKind, ExecutorError, Phase};
use live::{GuestResult, Live};
pub use live::{INIT_BACKOFF_FIRST, INIT_BACKOFF_MAX, InitBackoff};
use runtime::ticks;
pub use runtime::{
    MIN_MEMORY_LIMIT, Runtime, RuntimeOptions, WASM32_MAX_MEMORY, check_memory_hwm, memory_limit,
    parse_memory_hwm, release_free_memory,
};
pub use sandbox::{GUEST_WORKSPACE, Sandbox, Volume};
pub use tenant::{Tenant, TenantSpec, Tenants};

use crate::document::Document;
use crate::wire::Body;
use bindings::{GuestError, v1, v2};
use component::Pre;
use output::GuestOutput;
use quota::{Snapshot, Usage, aside};
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
/// (its own by then: `offload.rs`) drops to background priority (nice 19) so that short calls of other
/// executors on the machine get the CPU first when they wake. The default of
/// `Sandbox::background_after`; see `tenant.rs` and docs/limits.md.
pub const DEMOTE_AFTER: Duration = Duration::from_millis(100);

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
    /// Set while replacement instances keep failing their `init`.
    backoff: Option<InitBackoff>,
    /// Entries in the workspace when it was last measured (`quota::aside`;
    /// `u64::MAX` before the first time).
    walked: u64,
}

impl Executor {
    /// [`Executor::start_async`], blocking.
    ///
    /// # Errors
    /// As [`Executor::start_async`].
    pub fn start(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        spec: ExecutorSpec,
    ) -> Result<Executor, ExecutorError> {
        block_on(Executor::start_async(runtime, component, spec))
    }

    /// Prepares the sandbox, instantiates the component and calls `init`.
    ///
    /// # Errors
    /// A bad workspace or volume, an instantiation failure, or `init` failing or
    /// trapping, each naming the executor.
    pub async fn start_async(
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
            backoff: None,
            // Not measured yet: the first walk (before `init`) goes aside.
            walked: u64::MAX,
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
        executor.ensure_live().await?;
        Ok(executor)
    }

    /// [`Executor::declared_endpoints_async`], blocking.
    ///
    /// # Errors
    /// As [`Executor::declared_endpoints_async`].
    pub fn declared_endpoints(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        name: &str,
    ) -> Result<Option<Vec<EndpointInfo>>, ExecutorError> {
        block_on(Executor::declared_endpoints_async(runtime, component, name))
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
    pub async fn declared_endpoints_async(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        name: &str,
    ) -> Result<Option<Vec<EndpointInfo>>, ExecutorError> {
        let sandbox = Sandbox::default();
        let mut executor = Executor {
            name: name.into(),
            component,
            runtime,
            config: "{}".into(),
            limit: sandbox.init_timeout,
            sandbox,
            live: None,
            stats: ExecutorStats::default(),
            tenant: None,
            backoff: None,
            walked: 0,
        };
        let mut live = executor
            .instantiate()
            .await
            .map_err(|e| executor.error(Phase::Endpoints, ErrorKind::Host, format!("{e:#}")))?;
        let timeout = executor.sandbox.init_timeout;
        executor.arm(&mut live, timeout).await;
        match live.endpoints().await {
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

    pub fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }

    pub fn stats(&self) -> &ExecutorStats {
        &self.stats
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The tenant this executor belongs to, if any.
    pub fn tenant(&self) -> Option<&Arc<Tenant>> {
        self.tenant.as_ref()
    }

    /// Handles one request: `docs` to the executor's `endpoint`, with the request
    /// `parameters` (a JSON object or null).
    ///
    /// Blocks (see the module doc): for tests, benchmarks and the CLI.
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

    /// [`Executor::handle_body_async`], blocking.
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
        block_on(self.handle_body_async(endpoint, body, parameters, timeout))
    }

    /// Handles one request given as columns, the way a Pea receives it:
    /// `parameters` is JSON object text (empty for none). `timeout` shortens the
    /// call's time limit (a request's deadline); it never lengthens it.
    ///
    /// # Errors
    /// As [`Executor::handle`].
    pub async fn handle_body_async(
        &mut self,
        endpoint: &str,
        body: &Body,
        parameters: &str,
        timeout: Option<Duration>,
    ) -> Result<Body, ExecutorError> {
        self.stats.calls += 1;
        self.ensure_live().await?;
        let params = if parameters.is_empty() {
            "{}"
        } else {
            parameters
        };
        let limit = timeout.map_or(self.sandbox.call_timeout, |t| {
            t.min(self.sandbox.call_timeout)
        });
        let mut live = self.begin(limit).await;
        let outcome =
            tenant::metered(self.tenant.as_deref(), live.handle(endpoint, body, params)).await;
        let result = self.finish(Phase::Handle, live, outcome)?;
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

    /// [`Executor::dump_async`], blocking.
    ///
    /// # Errors
    /// As [`Executor::dump_async`].
    pub fn dump(&mut self) -> Result<(), ExecutorError> {
        block_on(self.dump_async())
    }

    /// Asks the executor to persist its state into its workspace.
    ///
    /// # Errors
    /// As [`Executor::handle`].
    pub async fn dump_async(&mut self) -> Result<(), ExecutorError> {
        self.ensure_live().await?;
        let mut live = self.begin(self.sandbox.call_timeout).await;
        let outcome = tenant::metered(self.tenant.as_deref(), live.dump()).await;
        self.finish(Phase::Dump, live, outcome)
    }

    /// [`Executor::close_async`], blocking.
    ///
    /// # Errors
    /// As [`Executor::close_async`].
    pub fn close(self) -> Result<(), ExecutorError> {
        block_on(self.close_async())
    }

    /// Calls `close` (if an instance is live) and drops the instance.
    ///
    /// # Errors
    /// When `close` traps.
    pub async fn close_async(mut self) -> Result<(), ExecutorError> {
        let Some(mut live) = self.live.take() else {
            return Ok(());
        };
        self.limit = self.sandbox.call_timeout;
        self.arm(&mut live, self.sandbox.call_timeout).await;
        let result = tenant::metered(self.tenant.as_deref(), live.close()).await;
        result.map_err(|e| self.classify(Phase::Close, e, &live))
    }

    /// Takes the live instance for one guest call under a deadline; the
    /// caller makes the call and gives both to [`Executor::finish`].
    async fn begin(&mut self, timeout: Duration) -> Live {
        let mut live = self.live.take().expect("ensure_live was called");
        live.store.data().output.clear_recent();
        self.limit = timeout;
        self.arm(&mut live, timeout).await;
        live
    }

    /// Turns a guest call's outcome into ours, and keeps the instance unless
    /// the call trapped.
    fn finish<T>(
        &mut self,
        phase: Phase,
        live: Live,
        outcome: GuestResult<T>,
    ) -> Result<T, ExecutorError> {
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
    pub async fn revive(&mut self) -> Result<(), ExecutorError> {
        self.ensure_live().await
    }

    /// The crash-loop backoff in force, if replacement instances keep failing.
    pub fn backoff(&self) -> Option<&InitBackoff> {
        self.backoff.as_ref()
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
