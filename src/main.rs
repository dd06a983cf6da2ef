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
        // Output closed by its reader (`| head`): not an error.
        Err(error) if error.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
