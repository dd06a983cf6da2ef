//! What a guest may touch, decided once per executor and applied to every
//! instance. Deny by default:
//!
//! - **filesystem**: nothing, unless a workspace is given; then exactly that host
//!   directory, preopened at [`GUEST_WORKSPACE`], read-only when asked, plus any
//!   `--volumes`. Paths are resolved by wasmtime-wasi's capability-based
//!   filesystem: absolute paths outside a preopen, `..` out of a preopen and
//!   symlinks pointing out are refused (ENOENT / ENOTCAPABLE / EPERM in the guest);
//!   a guest cannot create a symlink at all ([`refuse_symlinks`]): host code
//!   that later reaches the directory must never meet a link a guest made;
//! - **network**: no sockets at all (TCP, UDP and name lookup refused);
//! - **environment**: empty except values passed with `--env`; no arguments; stdin
//!   is empty;
//! - **stdout / stderr**: captured into the host's log (see `output.rs`);
//! - **clocks and random**: granted (wall clock, monotonic clock, secure
//!   random), unless [`Sandbox::deterministic`]: then the wall clock is frozen
//!   at the Unix epoch and random comes from a fixed seed. A sleep that would
//!   outlast the call's deadline stops the guest at once (`clocks.rs`);
//! - **disk**: a writable workspace has a quota of bytes and of entries
//!   ([`Sandbox::quota`], `quota.rs`); a call that grows it past either fails
//!   with `disk-quota`;
//! - **results**: at most [`Sandbox::max_result_docs`] documents and
//!   [`Sandbox::max_result_bytes`] bytes per call (`result-too-large`);
//! - **output**: [`Sandbox::log_rate`] lines per second reach the log;
//! - **tenant**: an optional owner whose memory budget all its instances share
//!   (`tenant.rs`);
//! - **memory**: at most [`Sandbox::memory_limit`] bytes of linear memory per
//!   instance; a refused `memory.grow` makes a Rust guest abort, which the host
//!   reports as `memory-limit`;
//! - **time**: each call runs under an epoch deadline ([`Sandbox::call_timeout`],
//!   [`Sandbox::init_timeout`]); past it the guest traps and the host reports
//!   `timeout`;
//! - **stack**: [`MAX_WASM_STACK`] bytes; deeper recursion traps as `stack-overflow`.
//!
//! docs/sandbox.md lists the same guarantees for users, docs/limits.md every limit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::output::{GuestOutput, Stream};

/// Where the workspace appears inside the guest.
pub const GUEST_WORKSPACE: &str = "/workspace";
/// Default linear-memory limit per instance (Jina's `--memory-hwm`): enough for
/// an index of ~500k 128-dim embeddings, small enough to host many tenants.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Default limit for one `handle` or `dump` call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for `init`, which may load a large index from the workspace.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Guest stack: deep enough for real recursive code, small enough that a runaway
/// recursion traps quickly.
pub const MAX_WASM_STACK: usize = 1 << 20;
/// Table elements per instance (function pointers); far above what compilers emit.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Default workspace disk quota (`--disk-quota`): room for an index of a few
/// million 128-dim embeddings.
pub const DEFAULT_DISK_QUOTA: u64 = 4 << 30;
/// Default cap on the entries (files, directories, symlinks) in a workspace
/// (`--max-files`): an inode bomb fails long before the host's filesystem does.
pub const DEFAULT_MAX_FILES: u64 = 100_000;
/// Default cap on the documents (roots, chunks and matches) one call may
/// return (`--max-result-docs`).
pub const DEFAULT_MAX_RESULT_DOCS: usize = 1_000_000;
/// Default cap on the bytes one call may return (`--max-result-bytes`): ids,
/// texts, blobs, tags, embeddings and scores together, as the wire body holds them.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 256 << 20;
pub use super::output::DEFAULT_LINES_PER_SECOND as DEFAULT_LOG_RATE;
pub use super::quota::{Quota, Usage};
pub use super::tenant::TenantSpec;

/// The resources granted to one executor.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Host directory preopened at [`GUEST_WORKSPACE`]; `None`: no filesystem.
    pub workspace: Option<PathBuf>,
    /// Preopen the workspace read-only (the guest can read but not write).
    pub read_only: bool,
    /// Extra host directories preopened to the guest (`--volumes`).
    pub volumes: Vec<Volume>,
    /// Environment variables the guest sees; nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Linear-memory limit per instance, bytes.
    pub memory_limit: u64,
    /// Time limit for each `handle`, `dump` and `close` call.
    pub call_timeout: Duration,
    /// Time limit for `init`.
    pub init_timeout: Duration,
    /// Disk quota of a writable workspace (bytes and entries).
    pub quota: Quota,
    /// Documents one call may return.
    pub max_result_docs: usize,
    /// Bytes one call may return.
    pub max_result_bytes: u64,
    /// Output lines per second that reach the host's log.
    pub log_rate: u32,
    /// Freeze the wall clock at the Unix epoch and seed random with a constant,
    /// for executors whose results must not depend on when or where they run.
    pub deterministic: bool,
    /// The owner and its shared memory budget; `None`: no budget beyond the
    /// instance's own limit.
    pub tenant: Option<TenantSpec>,
    /// A call running longer than this drops its thread to background
    /// priority (Linux nice 19); `None`: never. Only for callers that
    /// move the executor to a fresh thread afterwards (the Pea does).
    pub background_after: Option<Duration>,
}

/// wasmtime's own default cap on the bytes the host allocates to copy one
/// value out of a guest ("hostcall fuel"), which [`Sandbox::hostcall_fuel`]
/// replaces.
pub const WASMTIME_HOSTCALL_FUEL: usize = 128 << 20;

/// What wasmtime's error says when a copy out of a guest ran out of hostcall
/// fuel (its error type is private, so it is recognised by its text).
pub const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

impl Sandbox {
    /// The hostcall fuel (bytes the host may allocate copying one value out
    /// of this guest) such that any result within `max_result_bytes` and
    /// `max_result_docs` is copied out whole, so those two flags are the
    /// limits a caller meets, not wasmtime's 128 MiB default. Lifted, a
    /// batch costs its content bytes, 42 bytes of columns per document, and
    /// per score an 88-byte record where `byte_size` counts 12: at most 8 ×
    /// the bytes plus 64 per document. Raising it lets the host copy no more
    /// than the guest's own memory (`memory_hwm`) holds: wasmtime checks
    /// every list against it first.
    pub fn hostcall_fuel(&self) -> usize {
        let bytes = usize::try_from(self.max_result_bytes).unwrap_or(usize::MAX);
        bytes
            .saturating_mul(8)
            .saturating_add(self.max_result_docs.saturating_mul(64))
            .max(WASMTIME_HOSTCALL_FUEL)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            workspace: None,
            read_only: false,
            volumes: Vec::new(),
            env: Vec::new(),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            quota: Quota {
                bytes: DEFAULT_DISK_QUOTA,
                files: DEFAULT_MAX_FILES,
            },
            max_result_docs: DEFAULT_MAX_RESULT_DOCS,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            log_rate: DEFAULT_LOG_RATE,
            deterministic: false,
            tenant: None,
            // Opt-in: only a caller that moves the executor to a fresh thread
            // afterwards may use it (the Pea's worker; `--background-after`).
            background_after: None,
        }
    }
}

/// An extra directory for the guest: `HOST:GUEST[:ro]` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

impl std::str::FromStr for Volume {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let mut parts = spec.split(':');
        let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
            return Err(format!("volume `{spec}` is not HOST_DIR:GUEST_DIR[:ro]"));
        };
        let read_only = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => {
                return Err(format!(
                    "volume `{spec}`: mode `{other}` is neither `ro` nor `rw`"
                ));
            }
        };
        if parts.next().is_some() || host.is_empty() || !guest.starts_with('/') {
            return Err(format!("volume `{spec}` is not HOST_DIR:/GUEST_DIR[:ro]"));
        }
        if guest == GUEST_WORKSPACE {
            return Err(format!(
                "volume `{spec}`: {GUEST_WORKSPACE} is reserved for the workspace"
            ));
        }
        Ok(Volume {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        })
    }
}

impl Sandbox {
    /// Checks the directories exist (creating a writable workspace), before any
    /// instance is built, so a bad path is reported once, at start, by name.
    ///
    /// # Errors
    /// A missing read-only workspace or volume, or a workspace that can't be created.
    pub fn prepare(&self) -> anyhow::Result<()> {
        if let Some(dir) = &self.workspace {
            if self.read_only {
                anyhow::ensure!(
                    dir.is_dir(),
                    "read-only workspace {} does not exist",
                    dir.display()
                );
            } else {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create workspace {}", dir.display()))?;
            }
        }
        for volume in &self.volumes {
            anyhow::ensure!(
                volume.host.is_dir(),
                "volume {} is not a directory",
                volume.host.display()
            );
        }
        Ok(())
    }

    /// The workspace the quota applies to: a writable one.
    pub fn quota_dir(&self) -> Option<&std::path::Path> {
        self.workspace.as_deref().filter(|_| !self.read_only)
    }

    /// The WASI context of one instance.
    pub(super) fn wasi_ctx(
        &self,
        output: &GuestOutput,
        clock: super::clocks::Monotonic,
    ) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            // One file operation is one read or write of a guest buffer: done
            // inline, it costs less than a hand-off to a blocking thread and
            // back. A call that runs long is on a thread of its own anyway
            // (`offload.rs`).
            .allow_blocking_current_thread(true);
        for (key, value) in &self.env {
            builder.env(key, value);
        }
        builder.monotonic_clock(clock);
        if self.deterministic {
            builder
                .wall_clock(super::clocks::Frozen)
                .secure_random(wasmtime_wasi::Deterministic::new(
                    DETERMINISTIC_SEED.to_vec(),
                ))
                .insecure_random(wasmtime_wasi::Deterministic::new(
                    DETERMINISTIC_SEED.to_vec(),
                ))
                .insecure_random_seed(u128::from_le_bytes(
                    DETERMINISTIC_SEED[..16].try_into().expect("16 bytes"),
                ));
        }
        if let Some(dir) = &self.workspace {
            preopen(&mut builder, dir, GUEST_WORKSPACE, self.read_only)?;
        }
        for volume in &self.volumes {
            preopen(&mut builder, &volume.host, &volume.guest, volume.read_only)?;
        }
        Ok(builder.build())
    }
}

fn preopen(
    builder: &mut WasiCtxBuilder,
    host: &std::path::Path,
    guest: &str,
    read_only: bool,
) -> anyhow::Result<()> {
    let perms = if read_only {
        FsPerms::ReadOnly
    } else {
        FsPerms::ReadWrite
    };
    builder
        .preopened_dir(host, guest, perms)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot open {} for the guest at {guest}", host.display()))?;
    Ok(())
}

/// The WASI import that makes a symlink, as wasmtime-wasi 48 names it: the
/// only way a wasm32-wasip2 guest creates one (wasi-libc's `symlink` and
/// Rust's `std::os::wasi::fs::symlink_path` both end here).
const SYMLINK_AT: &str = "[method]descriptor.symlink-at";
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `symlink-at` so that it always fails with `not-permitted`
/// (EPERM in the guest). wasmtime-wasi refuses only links whose target is
/// absolute; a relative one (`../../x`) it creates, and the guest cannot
/// follow it out, but host code that walks the directory with plain paths
/// (an identity file read, a `create_dir_all`, a quota walk) would. Refusing
/// them all is the simplest rule that holds: docs/sandbox.md ("Threat model:
/// the filesystem and tenants") says so and tests/all/hostile_fs.rs proves it.
/// Links already there (made by the owner on the host) are left alone, and the
/// host's own code never follows one either.
///
/// # Errors
/// The linker has no such import (a wasmtime-wasi upgrade renamed it): the
/// runtime refuses to start rather than run without the rule.
pub(super) fn refuse_symlinks(
    linker: &mut wasmtime::component::Linker<super::state::ExecutorState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        SYMLINK_AT,
        |_store, (_dir, _target, _link): (Resource<Descriptor>, String, String)| {
            Ok((Err::<(), ErrorCode>(ErrorCode::NotPermitted),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The bytes random comes from in a deterministic sandbox, over and over: the
/// same in every instance and every run, by design.
const DETERMINISTIC_SEED: [u8; 32] = *b"jina-wasm: deterministic random!";

/// Which memory limit refused a growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The instance's own `--memory-hwm`.
    Instance,
    /// The tenant's shared budget.
    Tenant,
}

/// Enforces the memory limits (the instance's and its tenant's) and remembers
/// a refusal, so that the trap that follows (a Rust guest aborts when
/// allocation fails) is reported as `memory-limit` rather than a bare
/// `unreachable`. What it took from the tenant's budget goes back when the
/// instance (its store) is dropped.
pub(super) struct Limiter {
    pub memory_limit: usize,
    pub memory_refused: Option<Refused>,
    pub tenant: Option<std::sync::Arc<super::tenant::Tenant>>,
    /// Bytes taken from the tenant's budget.
    pub reserved: u64,
    /// The instance's linear memory now (every memory), for metrics.
    pub memory: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = Some(Refused::Instance);
            return Ok(false);
        }
        if let Some(tenant) = &self.tenant {
            let more = desired.saturating_sub(current) as u64;
            if !tenant.reserve(more) {
                self.memory_refused = Some(Refused::Tenant);
                return Ok(false);
            }
            self.reserved += more;
        }
        self.memory = self.memory.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        if let Some(tenant) = &self.tenant {
            tenant.release(self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse() {
        let v: Volume = "/data:/data:ro".parse().unwrap();
        assert!(v.read_only && v.guest == "/data");
        assert!("/data".parse::<Volume>().is_err());
        assert!("/data:relative".parse::<Volume>().is_err());
        assert!(
            "/data:/workspace"
                .parse::<Volume>()
                .unwrap_err()
                .contains("reserved")
        );
        assert!("/data:/d:xx".parse::<Volume>().unwrap_err().contains("xx"));
    }
}
