//! The `jina-wasm` binary: parse, set up logging, run the command, and turn an
//! error into a message with its causes and an exit code.

use std::process::ExitCode;

use clap::Parser;
use jina_wasm::cli::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.init_tracing();
    match cli.execute() {
        Ok(code) => code,
        // Output closed by its reader (`| head`): not an error.
        Err(error) if jina_wasm::cli::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", jina_wasm::cli::report(&error));
            ExitCode::FAILURE
        }
    }
}
