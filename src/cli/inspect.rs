//! `jina-wasm inspect`: what a component is, and whether this host will run it.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::Args;

use super::common::RuntimeArgs;
use crate::executor::{CONTRACT_VERSION, CacheOutcome};
use crate::units::format_size;

/// Show which contract version a component implements, what it imports and
/// exports, and whether this host can run it (exit 1 with the reason if not).
#[derive(Debug, Args)]
pub struct InspectCommand {
    /// The component to inspect.
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl InspectCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let runtime = self.runtime.runtime(0)?;
        let loaded = match runtime.load(&self.file) {
            Ok(loaded) => loaded,
            Err(e) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({ "file": self.file, "runnable": false, "error": e.to_string() })
                    );
                } else {
                    eprintln!("error: {e}");
                }
                return Ok(ExitCode::FAILURE);
            }
        };
        let mut out = std::io::stdout().lock();
        let compiled = match loaded.cache {
            CacheOutcome::Hit => "loaded from cache",
            CacheOutcome::Compiled => "compiled (now cached)",
            CacheOutcome::CompiledUncached => "compiled (not cached)",
        };
        if self.json {
            let report = serde_json::json!({
                "file": loaded.path,
                "size": loaded.size,
                "sha256": loaded.digest,
                "contract": format!("jina:executor@{}", loaded.contract),
                "host_contract": format!("jina:executor@{CONTRACT_VERSION}"),
                "runnable": true,
                "exports": loaded.exports,
                "imports": loaded.imports,
                "load_ms": loaded.load_time.as_secs_f64() * 1e3,
                "compiled": compiled,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            writeln!(
                out,
                "file:      {} ({})",
                loaded.path.display(),
                format_size(loaded.size)
            )?;
            writeln!(out, "sha256:    {}", loaded.digest)?;
            writeln!(
                out,
                "contract:  jina:executor@{} (this host: {CONTRACT_VERSION}) - runnable",
                loaded.contract
            )?;
            writeln!(out, "exports:   {}", loaded.exports.join(", "))?;
            writeln!(out, "imports:")?;
            for import in &loaded.imports {
                writeln!(out, "  {import}")?;
            }
            writeln!(
                out,
                "load:      {compiled} in {:.1} ms",
                loaded.load_time.as_secs_f64() * 1e3
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
