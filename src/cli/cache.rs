//! `jina-wasm cache`: the compiled-component cache (README.md, "The
//! compiled-component cache").

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::executor::ComponentCache;
use crate::executor::cache::{self, CACHE_MAX_ENV};
use crate::units::{format_size, parse_size};

/// List or prune the compiled-component cache.
///
/// Every component is compiled on its first start (seconds; tens of seconds
/// for a Python or JavaScript one) and the result kept here, so later starts
/// take milliseconds. The cache keeps at most $JINA_WASM_CACHE_MAX bytes
/// (default 1GiB): past it, the least recently used go.
#[derive(Debug, Args)]
pub struct CacheCommand {
    #[command(subcommand)]
    pub action: CacheAction,

    /// The cache directory [default: $JINA_WASM_CACHE_DIR, else
    /// $XDG_CACHE_HOME/jina-wasm, else ~/.cache/jina-wasm].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// List the compiled components, most recently used first, and the total.
    Ls,
    /// Remove the least recently used compiled components until the rest
    /// take at most --max.
    Prune {
        /// The most the cache may keep [default: $JINA_WASM_CACHE_MAX, else 1GiB].
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max: Option<u64>,
        /// Remove every compiled component.
        #[arg(long, conflicts_with = "max")]
        all: bool,
    },
}

impl CacheCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let Some(dir) = self.cache_dir.or_else(ComponentCache::default_dir) else {
            anyhow::bail!(
                "no cache directory: give --cache-dir (or set $JINA_WASM_CACHE_DIR or $HOME)"
            );
        };
        match self.action {
            CacheAction::Ls => {
                let entries = cache::entries(&dir)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
                for entry in &entries {
                    println!(
                        "{:>10}  {}  {}",
                        format_size(entry.size),
                        humantime::format_rfc3339_seconds(entry.last_used),
                        entry.path.file_name().unwrap_or_default().to_string_lossy()
                    );
                }
                println!(
                    "{} compiled components, {} of at most {} ({CACHE_MAX_ENV}) in {}",
                    entries.len(),
                    format_size(entries.iter().map(|e| e.size).sum()),
                    format_size(cache::max_bytes()),
                    dir.display()
                );
            }
            CacheAction::Prune { max, all } => {
                let max = if all {
                    0
                } else {
                    max.unwrap_or_else(cache::max_bytes)
                };
                let removed = cache::prune(&dir, max, None)
                    .map_err(|e| anyhow::anyhow!("cannot prune {}: {e}", dir.display()))?;
                println!(
                    "removed {} compiled components ({}) from {}",
                    removed.len(),
                    format_size(removed.iter().map(|e| e.size).sum()),
                    dir.display()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
