//! What a guest may touch, decided once per executor and applied to every
//! instance. Deny by default:
//!
//! - **filesystem**: nothing, unless a workspace is given; then exactly that host
//!   directory, preopened at [`GUEST_WORKSPACE`], read-only when asked, plus any
//!   `--volumes`. Paths are resolved by wasmtime-wasi's capability-based
//!   filesystem: absolute paths outside a preopen, `..` out of a preopen and
//!   symlinks pointing out are refused (ENOENT / ENOTCAPABLE / EPERM in the guest);
//! - **network**: no sockets at all (TCP, UDP and name lookup refused);
//! - **environment**: empty except values passed with `--env`; no arguments; stdin
//!   is empty;
//! - **stdout / stderr**: captured into the host's log (see `output.rs`);
//! - **clocks and random**: granted (wall clock, monotonic clock, secure random);
//! - **memory**: at most [`Sandbox::memory_limit`] bytes of linear memory per
//!   instance; a refused `memory.grow` makes a Rust guest abort, which the host
//!   reports as `memory-limit`;
//! - **time**: each call runs under an epoch deadline ([`Sandbox::call_timeout`],
//!   [`Sandbox::init_timeout`]); past it the guest traps and the host reports
//!   `timeout`;
//! - **stack**: [`MAX_WASM_STACK`] bytes; deeper recursion traps as `stack-overflow`.
//!
//! docs/sandbox.md lists the same guarantees for users.

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
            Some(other) => return Err(format!("volume `{spec}`: mode `{other}` is neither `ro` nor `rw`")),
        };
        if parts.next().is_some() || host.is_empty() || !guest.starts_with('/') {
            return Err(format!("volume `{spec}` is not HOST_DIR:/GUEST_DIR[:ro]"));
        }
        if guest == GUEST_WORKSPACE {
            return Err(format!("volume `{spec}`: {GUEST_WORKSPACE} is reserved for the workspace"));
        }
        Ok(Volume { host: PathBuf::from(host), guest: guest.to_string(), read_only })
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
                anyhow::ensure!(dir.is_dir(), "read-only workspace {} does not exist", dir.display());
            } else {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create workspace {}", dir.display()))?;
            }
        }
        for volume in &self.volumes {
            anyhow::ensure!(volume.host.is_dir(), "volume {} is not a directory", volume.host.display());
        }
        Ok(())
    }

    /// The WASI context of one instance.
    pub(super) fn wasi_ctx(&self, output: &GuestOutput) -> anyhow::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            // Guest calls already run on a blocking thread: do file I/O inline.
            .allow_blocking_current_thread(true);
        for (key, value) in &self.env {
            builder.env(key, value);
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

fn preopen(builder: &mut WasiCtxBuilder, host: &std::path::Path, guest: &str, read_only: bool) -> anyhow::Result<()> {
    let perms = if read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
    builder
        .preopened_dir(host, guest, perms)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot open {} for the guest at {guest}", host.display()))?;
    Ok(())
}

/// Enforces the memory limit and remembers a refusal, so that the trap that
/// follows (a Rust guest aborts when allocation fails) is reported as
/// `memory-limit` rather than a bare `unreachable`.
pub(super) struct Limiter {
    pub memory_limit: usize,
    pub memory_refused: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
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
        assert!("/data:/workspace".parse::<Volume>().unwrap_err().contains("reserved"));
        assert!("/data:/d:xx".parse::<Volume>().unwrap_err().contains("xx"));
    }
}
