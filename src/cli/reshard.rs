//! `jina-wasm reshard`: move a stopped Pod's data to another number of shards.

use std::process::ExitCode;

use clap::Args;

use super::common::{ExecutorArgs, RuntimeArgs};

/// Move a sharded Pod's data to another number of shards (docs/stateful.md).
///
/// Stop the Pod first. Give the executor and workspace as the Pod had them
/// (`--uses`, `--uses-with`, `--name`, `--workspace`) and the new `--shards`.
/// Each old shard is opened read-only and read through the executor's
/// `/export` endpoint; each document is `/import`ed into the new shard the
/// Pod's head will send its id to. The new shards are built beside the old
/// ones, dumped and counted, then swapped in; the old ones are kept as
/// `<workspace>/<name>.<N>-shards` until you delete them. Prints a JSON
/// summary. Exits 1, with the workspace unchanged, if anything fails.
#[derive(Debug, Args)]
pub struct ReshardCommand {
    #[command(flatten)]
    pub executor: ExecutorArgs,

    /// The new number of shards: 1 to 256, as `pod --shards` takes (a Pod
    /// of more could never start, so they are not built).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: u32,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl ReshardCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let spec = self.executor.spec();
        let Some(root) = spec.sandbox.workspace.clone() else {
            anyhow::bail!("--workspace is required: the directory the Pod's shards live in");
        };
        anyhow::ensure!(
            !spec.sandbox.read_only,
            "--read-only makes no sense here: the new shards are written"
        );
        let runtime = self.runtime.runtime(0)?;
        let report = crate::pod::reshard::reshard(
            &runtime,
            &self.executor.uses,
            &spec,
            &root,
            self.shards as usize,
        )?;
        println!("{}", serde_json::to_string(&report)?);
        Ok(ExitCode::SUCCESS)
    }
}
