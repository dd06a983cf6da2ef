//! The `jina-wasm` binary: parse, set up logging, run the command, and turn an
//! error into a message with its causes and an exit code.

use std::process::ExitCode;

use clap::Parser;
use jina_wasm::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.init_tracing();
    match cli.execute() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
