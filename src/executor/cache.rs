//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes ~100 ms to seconds; loading the
//! compiled artifact takes well under a millisecond. Artifacts are stored as
//! `<dir>/<sha256 of the .wasm>-<engine hash>.cwasm`, where the engine hash covers
//! the wasmtime version and every compilation setting, so a changed component or a
//! changed engine never loads a stale artifact.
//!
//! Trust: loading an artifact is `unsafe` in wasmtime, because a tampered one can
//! run arbitrary native code. The cache directory is created `0700` and only this
//! host writes it (atomically: temp file, then rename). Don't point `--cache-dir`
//! at a directory other users can write.
//!
//! Size: the cache keeps at most [`CACHE_MAX_ENV`] bytes (default
//! [`DEFAULT_CACHE_MAX`]). Each use of an artifact sets its modification
//! time, so after a new one is stored the least recently used are removed
//! until the rest fit. `jina-wasm cache ls|prune` lists and prunes it.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "JINA_WASM_CACHE_DIR";

/// Environment variable: the most bytes of compiled components the cache
/// keeps (a size: `512MiB`, `2GiB`); past it, the least recently used go.
pub const CACHE_MAX_ENV: &str = "JINA_WASM_CACHE_MAX";

/// The default cap of the cache: 1 GiB, room for dozens of Rust components
/// (1-5 MB compiled) and a dozen Python or JavaScript ones (30-60 MB each).
pub const DEFAULT_CACHE_MAX: u64 = 1 << 30;

/// The cap: `$JINA_WASM_CACHE_MAX`, else [`DEFAULT_CACHE_MAX`] (a value that
/// is not a size is logged and ignored).
pub fn max_bytes() -> u64 {
    match std::env::var(CACHE_MAX_ENV) {
        Err(_) => DEFAULT_CACHE_MAX,
        Ok(text) => crate::units::parse_size(&text).unwrap_or_else(|e| {
            tracing::warn!("{CACHE_MAX_ENV}: {e}; the cache keeps the default 1 GiB");
            DEFAULT_CACHE_MAX
        }),
    }
}

/// One compiled component in a cache directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    /// When it was last stored or loaded (its modification time).
    pub last_used: std::time::SystemTime,
}

/// The compiled components in `dir`, most recently used first (none when
/// the directory does not exist).
///
/// # Errors
/// The directory cannot be read.
pub fn entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for item in read {
        let item = item?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".cwasm") {
            continue;
        }
        let meta = match item.metadata() {
            Ok(meta) if meta.is_file() => meta,
            _ => continue,
        };
        entries.push(Entry {
            path: item.path(),
            size: meta.len(),
            last_used: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        });
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.last_used));
    Ok(entries)
}

/// Removes the least recently used compiled components in `dir` until the
/// rest take at most `max` bytes, never `keep` (the one just stored).
/// Returns what was removed. Another process loading one of them keeps its
/// mapping; a later load recompiles.
///
/// # Errors
/// The directory cannot be read, or a file cannot be removed.
pub fn prune(dir: &Path, max: u64, keep: Option<&Path>) -> std::io::Result<Vec<Entry>> {
    let mut entries = entries(dir)?;
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    let mut removed = Vec::new();
    // Oldest last: pop from the end.
    while total > max {
        let Some(entry) = entries.pop() else { break };
        if keep == Some(entry.path.as_path()) {
            continue;
        }
        match std::fs::remove_file(&entry.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= entry.size;
        removed.push(entry);
    }
    Ok(removed)
}

/// Compiled-component cache in one directory.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
    /// The most bytes it keeps ([`max_bytes`] when it was made).
    max_bytes: u64,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled, and stored for next time.
    Compiled,
    /// Compiled; no cache configured or it could not be written.
    CompiledUncached,
}

impl ComponentCache {
    /// The default directory: `$JINA_WASM_CACHE_DIR`, else `$XDG_CACHE_HOME/jina-wasm`,
    /// else `~/.cache/jina-wasm`; `None` when none of these is known.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("jina-wasm"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("jina-wasm"))
    }

    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ComponentCache {
            dir,
            engine_hash: format!("{:016x}", hasher.finish()),
            max_bytes: max_bytes(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Loads the compiled form of `wasm` (the file `name`) from the cache, or
    /// compiles and stores it, saying so in the log (a Python component takes
    /// 5-20 s), then trims the cache to its cap. A corrupt or unreadable
    /// artifact is recompiled and replaced.
    ///
    /// # Errors
    /// Only compilation errors; cache I/O problems are logged and skipped.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
        name: &Path,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.artifact_path(digest);
        if path.exists() {
            // SAFETY: artifacts in this directory are written only by `store` below
            // from `Component::serialize` of the same engine configuration (the engine
            // hash is in the file name); see the module docs for the trust assumption.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Used now: the last to go when the cache is trimmed.
                    let _ = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached component: {e:#}")
                }
            }
        }
        log_compiling(name, wasm.len(), Some(&self.dir));
        let component = Component::new(engine, wasm)?;
        let outcome = match self.store(&component, &path) {
            Ok(()) => {
                match prune(&self.dir, self.max_bytes, Some(&path)) {
                    Ok(removed) if !removed.is_empty() => tracing::info!(
                        dir = %self.dir.display(),
                        "component cache over its {} cap ({CACHE_MAX_ENV}): removed the {} least recently used ({})",
                        crate::units::format_size(self.max_bytes),
                        removed.len(),
                        crate::units::format_size(removed.iter().map(|e| e.size).sum())
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(dir = %self.dir.display(), "cannot trim the component cache: {e}")
                    }
                }
                CacheOutcome::Compiled
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot write the component cache: {e:#}");
                CacheOutcome::CompiledUncached
            }
        };
        Ok((component, outcome))
    }

    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        create_private_dir(&self.dir)?;
        let bytes = component.serialize()?;
        // A uniquely named temp file in the same directory (so the rename is
        // atomic), removed if anything below fails.
        let mut file = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)?;
        file.write_all(&bytes)?;
        file.as_file().sync_all()?;
        file.persist(path)?;
        Ok(())
    }
}

/// The log line before a component is compiled: which file, how large, and
/// whether the result is cached (`dir`) or not.
pub fn log_compiling(name: &Path, size: usize, dir: Option<&Path>) {
    let size = crate::units::format_size(size as u64);
    match dir {
        Some(dir) => tracing::info!(
            "compiling {} ({size}); this can take seconds; cached afterwards in {}",
            name.display(),
            dir.display()
        ),
        None => tracing::info!(
            "compiling {} ({size}); this can take seconds; not cached (no cache directory)",
            name.display()
        ),
    }
}

/// Hex SHA-256 of a component's bytes: the cache key and the identity recorded
/// for a shard's workspace.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
