//! Loading a component: from a path to a checked, linked, ready-to-instantiate
//! executor, with one clear error per way it can go wrong.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::component::Component;

use super::Runtime;
use super::bindings::{v1, v2};
use super::cache::{CacheOutcome, digest};
use super::state::ExecutorState;

/// The contract version this host implements (what `jina-wasm new` and the
/// SDKs build).
pub const CONTRACT_VERSION: &str = "0.2.0";
/// Every contract version this host runs, newest first.
pub const CONTRACT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];
/// The export every executor must have (at one of [`CONTRACT_VERSIONS`]).
pub const EXECUTOR_EXPORT: &str = "jina:executor/executor@0.2.0";
const EXPORT_PREFIX: &str = "jina:executor/executor@";

/// The versions this host runs, for messages: `0.2.0 and 0.1.0`.
pub fn supported_versions() -> String {
    CONTRACT_VERSIONS.join(" and ")
}

/// Why a file cannot be used as an executor. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("executor file {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot read executor file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: build it with `cargo build --target wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path} implements executor contract {found}, but this host implements {}: \
         rebuild it against jina-guest-sdk for contract {CONTRACT_VERSION}",
        supported_versions()
    )]
    WrongVersion { path: PathBuf, found: String },
    #[error(
        "{path} is not a jina-wasm executor: it does not export {EXECUTOR_EXPORT} (or an older \
         jina:executor/executor@{}) (it exports: {exports})",
        CONTRACT_VERSIONS[1..].join(", @")
    )]
    MissingExport { path: PathBuf, exports: String },
    #[error("{path} cannot run on this host: {reason}")]
    Unlinkable { path: PathBuf, reason: String },
    /// Loading it panicked on the blocking pool ([`super::Runtime::load_async`]):
    /// a bug of the host's, not of the file's.
    #[error(
        "loading {path} failed in the host: {why} (a bug in jina-wasm; the file may still be valid)"
    )]
    Panicked { path: PathBuf, why: String },
    /// Not the file of the digest it was pinned to ([`super::Runtime::load_pinned_async`]).
    #[error(
        "{path} is not the file that was checked: its SHA-256 is {found}, not {wanted} (it changed after the \
         check, as during a rolling update); it is not started"
    )]
    NotTheChecked {
        path: PathBuf,
        found: String,
        wanted: String,
    },
}

/// A checked, compiled executor component, ready to instantiate many times.
pub struct LoadedComponent {
    pub path: PathBuf,
    /// Hex SHA-256 of the file.
    pub digest: String,
    pub size: u64,
    /// The contract version found in its exports.
    pub contract: String,
    /// Interfaces it imports (WASI and ours), sorted.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub(super) pre: Pre,
    /// How it was obtained, and how long that took.
    pub cache: CacheOutcome,
    pub load_time: Duration,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("path", &self.path)
            .field("contract", &self.contract)
            .finish()
    }
}

/// A linked component of either contract version, ready to instantiate.
pub(super) enum Pre {
    V2(v2::ExecutorWorldPre<ExecutorState>),
    V1(v1::ExecutorWorldPre<ExecutorState>),
}

/// Checks the bytes before compiling, so each mistake has its own message.
pub fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_owned(),
        });
    }
    // Bytes 4..8: version and layer. A core module is version 1, layer 0; a
    // component has layer 1 (see the component-model binary format).
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The most bytes an executor file may have: 1 GiB, past the largest
/// componentize-py or JavaScript component (tens of MB) by far. A larger
/// file is refused before it is read, as reading it would take that memory.
pub const MAX_COMPONENT_BYTES: u64 = 1 << 30;

/// The bytes of the executor file at `path`: a regular file (a FIFO would
/// be waited on forever, a device such as `/dev/zero` read until memory
/// runs out) of at most [`MAX_COMPONENT_BYTES`]. Opened first and then
/// looked at, so what is read is what was checked.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_owned(),
        },
        _ => LoadError::Unreadable {
            path: path.to_owned(),
            source,
        },
    };
    let refused = |why: String| LoadError::Unreadable {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
    };
    // Non-blocking: opening a FIFO would wait for a writer. Reads of a
    // regular file do not block either way.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(refused("it is a directory, not a file".into()));
    }
    if !meta.is_file() {
        return Err(refused(
            "it is not a regular file (a FIFO, socket or device)".into(),
        ));
    }
    let too_large = |size: u64| {
        refused(format!(
            "it is {}, more than the {} an executor file may be",
            crate::units::format_size(size),
            crate::units::format_size(MAX_COMPONENT_BYTES)
        ))
    };
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // It may grow while it is read: no more than the limit and one byte.
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads, checks and compiles (or maps from the cache) the component at
/// `path`; when `wanted` is given, only a file of that SHA-256, checked
/// before anything is compiled. The bytes read come back too, for a caller
/// that keeps what it checked (a Pod's copy for its Peas).
pub(super) fn load(
    runtime: &Runtime,
    path: &Path,
    wanted: Option<&str>,
) -> Result<(LoadedComponent, Vec<u8>), LoadError> {
    let started = Instant::now();
    let bytes = read(path)?;
    let digest = digest(&bytes);
    if let Some(wanted) = wanted
        && !digest.eq_ignore_ascii_case(wanted)
    {
        return Err(LoadError::NotTheChecked {
            path: path.to_owned(),
            found: digest,
            wanted: wanted.to_owned(),
        });
    }
    check_header(path, &bytes)?;
    let engine = runtime.engine();
    let (component, cache) = match runtime.cache() {
        Some(cache) => cache.load_or_compile(engine, &bytes, &digest, path),
        None => {
            super::cache::log_compiling(path, bytes.len(), None);
            Component::new(engine, &bytes).map(|c| (c, CacheOutcome::CompiledUncached))
        }
    }
    .map_err(|e| LoadError::Invalid {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    })?;

    let ty = component.component_type();
    let mut exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    exports.sort();
    let mut imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    imports.sort();

    let contract = match exports.iter().find_map(|e| e.strip_prefix(EXPORT_PREFIX)) {
        Some(version) if CONTRACT_VERSIONS.contains(&version) => version.to_string(),
        Some(version) => {
            return Err(LoadError::WrongVersion {
                path: path.to_owned(),
                found: version.to_string(),
            });
        }
        None => {
            let exports = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(LoadError::MissingExport {
                path: path.to_owned(),
                exports,
            });
        }
    };

    let unlinkable = |e: wasmtime::Error| LoadError::Unlinkable {
        path: path.to_owned(),
        reason: format!("{e:#}"),
    };
    let instance_pre = runtime
        .linker()
        .instantiate_pre(&component)
        .map_err(unlinkable)?;
    let pre = if contract == "0.1.0" {
        Pre::V1(v1::ExecutorWorldPre::new(instance_pre).map_err(unlinkable)?)
    } else {
        Pre::V2(v2::ExecutorWorldPre::new(instance_pre).map_err(unlinkable)?)
    };
    let loaded = LoadedComponent {
        path: path.to_owned(),
        digest,
        size: bytes.len() as u64,
        contract,
        imports,
        exports,
        pre,
        cache,
        load_time: started.elapsed(),
    };
    Ok((loaded, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let p = Path::new("x.wasm");
        assert!(matches!(
            check_header(p, b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(p, b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_header(p, b"\0asm\x0d\0\x01\0").is_ok());
        let message = LoadError::CoreModule { path: p.into() }.to_string();
        assert!(message.contains("x.wasm") && message.contains("wasm32-wasip2"));
    }

    /// `uses` naming a FIFO (or a device): refused at once, naming it, where
    /// reading it waited for a writer forever (or, `/dev/zero`, read until
    /// the process ran out of memory), holding a thread of the blocking pool
    /// and whatever waited on the load (a Pea's start, a rolling update).
    #[tokio::test]
    async fn a_file_that_is_not_a_regular_file_is_refused_at_once() {
        use crate::test_support::{fifo, within_10s};
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path(), "fifo.wasm");
        let runtime = crate::executor::Runtime::new(Default::default()).unwrap();
        let loaded = within_10s(&fifo, runtime.load_async(&fifo)).await;
        let error = loaded.expect("refused at once, not waiting for a writer");
        let message = error.expect_err("a FIFO is no component").to_string();
        assert!(
            message.contains("fifo.wasm") && message.contains("not a regular file"),
            "{message}"
        );

        // A directory, and a file past the limit (sparse: nothing is
        // written, and nothing may be read).
        let error = runtime.load_async(dir.path()).await.err().unwrap();
        assert!(error.to_string().contains("is a directory"), "{error}");
        let huge = dir.path().join("huge.wasm");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(MAX_COMPONENT_BYTES + 1).unwrap();
        let error = runtime.load_async(&huge).await.err().unwrap().to_string();
        assert!(
            error.contains("huge.wasm") && error.contains("more than the 1 GiB"),
            "{error}"
        );
    }
}
