//! `jina-wasm flow`: Flows described in YAML (docs/flow-yaml.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::flow::Flow;

/// Work with Flow YAML files: a DAG of Pods behind a gateway.
#[derive(Debug, Args)]
pub struct FlowCommand {
    #[command(subcommand)]
    pub action: FlowAction,
}

#[derive(Debug, Subcommand)]
pub enum FlowAction {
    /// Check a Flow file (fields, paths, the `needs` graph) and print its Pods
    /// in start order; exit 1 with the file, line and key of the first problem.
    Check { file: PathBuf },
    /// Print the Flow's topology as a Mermaid flowchart, as Jina's `plot`.
    Plot { file: PathBuf },
}

impl FlowCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.action {
            FlowAction::Check { file } => {
                let flow = Flow::load(&file)?;
                for &i in &flow.order {
                    let pod = &flow.pods[i];
                    let needs: Vec<&str> = if flow.needs[i].is_empty() {
                        vec![crate::flow::GATEWAY]
                    } else {
                        flow.needs[i].iter().map(|&j| flow.pods[j].name.as_str()).collect()
                    };
                    println!("{} <- {} ({})", pod.name, needs.join(", "), pod.uses.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            FlowAction::Plot { file } => {
                print!("{}", Flow::load(&file)?.mermaid());
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
