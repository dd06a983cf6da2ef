//! `jina-wasm inspect`: what a component is, and whether this host will run it.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::Args;

use super::common::RuntimeArgs;
use crate::executor::{
    CONTRACT_VERSION, CONTRACT_VERSIONS, CacheOutcome, DEFAULT_ENDPOINT, Executor,
    supported_versions,
};
use crate::units::format_size;

/// Show which contract version a component implements, the endpoints it
/// declares, what it imports and exports, and whether this host can run it
/// (exit 1 with the reason if not).
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
        let refuse = |e: &dyn std::fmt::Display| {
            if self.json {
                println!(
                    "{}",
                    serde_json::json!({ "file": self.file, "runnable": false, "error": e.to_string() })
                );
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        };
        let loaded = match runtime.load(&self.file) {
            Ok(loaded) => loaded,
            Err(e) => return Ok(refuse(&e)),
        };
        let name = self
            .file
            .file_stem()
            .map_or_else(|| "executor".into(), |s| s.to_string_lossy().into_owned());
        let endpoints = match Executor::declared_endpoints(runtime.clone(), loaded.clone(), &name) {
            Ok(endpoints) => endpoints,
            Err(e) => return Ok(refuse(&e)),
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
                "host_contracts": CONTRACT_VERSIONS.iter().map(|v| format!("jina:executor@{v}")).collect::<Vec<_>>(),
                "runnable": true,
                // null: a 0.1.0 component, which cannot declare (takes any).
                "endpoints": endpoints,
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
                "contract:  jina:executor@{} (this host: {}) - runnable",
                loaded.contract,
                supported_versions()
            )?;
            match &endpoints {
                None => writeln!(
                    out,
                    "endpoints: none declared (contract {} cannot): takes any endpoint",
                    loaded.contract
                )?,
                Some(list) if list.is_empty() => writeln!(
                    out,
                    "endpoints: none (every request passes through unchanged)"
                )?,
                Some(list) => {
                    writeln!(out, "endpoints:")?;
                    let width = list.iter().map(|e| e.name.len()).max().unwrap_or(0);
                    for e in list {
                        let note = if e.name == DEFAULT_ENDPOINT && e.doc.is_empty() {
                            "(every endpoint without its own handler)"
                        } else {
                            e.doc.as_str()
                        };
                        let line = format!("  {:width$}  {note}", e.name);
                        writeln!(out, "{}", line.trim_end())?;
                    }
                }
            }
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
