//! `jina-wasm run`: one executor, documents in on stdin, documents out on stdout.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::common::{ExecutorArgs, RequestArgs, RuntimeArgs, write_document};
use super::is_broken_pipe;
use crate::executor::{Executor, ExecutorError};

/// Run one executor over documents read as JSON lines.
///
/// Each input line is a Jina document as JSON (`{"id": "a", "text": "hi"}`) or a
/// plain text line, which becomes a text document. Documents are sent to the
/// executor's ENDPOINT in requests of --request-size; the documents it returns
/// are written to stdout as JSON lines. Before exiting, `run` calls the
/// executor's `dump` (unless --read-only) and `close`, so a later `run` on the
/// same --workspace finds the state.
///
/// Exits 1 with the executor's name and reason on stderr when a request fails.
#[derive(Debug, Args)]
pub struct RunCommand {
    #[command(flatten)]
    pub executor: ExecutorArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub request: RequestArgs,
}

impl RunCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let runtime = self.runtime.runtime(super::common::POOL_SLOTS)?;
        let uses = &self.executor.uses;
        let component = runtime.load(uses).map_err(anyhow::Error::from)?;
        // Calls block this thread, never a call's own (`executor::offload`):
        // they always run at normal priority.
        let spec = self.executor.spec();
        let read_only = spec.sandbox.read_only;
        let mut executor = Executor::start(runtime, component, spec)?;

        let outcome = self.pump(&mut executor);
        // A reader that stops early (`| head`) is not a failure: stop quietly.
        let outcome = match outcome {
            Err(Failure::Other(e)) if is_broken_pipe(&e) => Ok(()),
            other => other,
        };
        let mut failed = false;
        if let Err(failure) = &outcome {
            report(failure);
            failed = true;
        }
        // Persist what was handled, unless the instance was lost to a trap (a
        // fresh instance would only dump the state it loaded) or it is read-only.
        let instance_lost = matches!(&outcome, Err(Failure::Executor(e)) if e.kind.is_trap());
        if !read_only
            && !instance_lost
            && let Err(e) = executor.dump()
        {
            report(&Failure::Executor(e));
            failed = true;
        }
        if let Err(e) = executor.close() {
            tracing::warn!("{e}");
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    fn pump(&self, executor: &mut Executor) -> Result<(), Failure> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let request = &self.request;
        let parameters = request.parameters.clone().unwrap_or(Value::Null);
        for batch in request.batches().map_err(Failure::Other)? {
            let batch = batch.map_err(Failure::Other)?;
            let result = executor
                .handle(&request.endpoint, &batch, &parameters)
                .map_err(Failure::Executor)?;
            for doc in &result {
                write_document(&mut out, request.output, doc)
                    .context("cannot write output")
                    .map_err(Failure::Other)?;
            }
        }
        out.flush()
            .context("cannot write output")
            .map_err(Failure::Other)
    }
}

enum Failure {
    Executor(ExecutorError),
    Other(anyhow::Error),
}

fn report(failure: &Failure) {
    match failure {
        Failure::Executor(e) => eprintln!("error: {}", crate::wire::printable(&e.to_string())),
        Failure::Other(e) => eprintln!("{}", super::report(e)),
    }
}
