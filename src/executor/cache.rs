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

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "JINA_WASM_CACHE_DIR";

/// Compiled-component cache in one directory.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
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
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Loads the compiled form of `wasm` from the cache, or compiles and stores it.
    /// A corrupt or unreadable artifact is recompiled and replaced.
    ///
    /// # Errors
    /// Only compilation errors; cache I/O problems are logged and skipped.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.artifact_path(digest);
        if path.exists() {
            // SAFETY: artifacts in this directory are written only by `store` below
            // from `Component::serialize` of the same engine configuration (the engine
            // hash is in the file name); see the module docs for the trust assumption.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached component: {e:#}")
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        let outcome = match self.store(&component, &path) {
            Ok(()) => CacheOutcome::Compiled,
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
