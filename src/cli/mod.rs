//! The `jina-wasm` command line: one file per command, each a clap struct with an
//! `execute` method. Flags shared by several commands live in `common.rs`.

mod cache;
mod client;
mod common;
mod daemon;
mod export;
mod flow;
mod gateway;
mod inspect;
mod new;
mod one_line;
mod pea;
mod ping;
mod pod;
mod reshard;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use common::{ExecutorArgs, MonitoringArgs, POOL_SLOTS, RuntimeArgs};

/// Run Jina-style executors as sandboxed WebAssembly components.
///
/// An executor is a WebAssembly component (`x.wasm`) built against the
/// jina:executor WIT contract, usually with the Rust `jina-guest-sdk` and
/// `cargo build --target wasm32-wasip2`.
#[derive(Debug, Parser)]
#[command(
    name = "jina-wasm",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log level or filter for the host's log on stderr (`error`, `warn`, `info`,
    /// `debug`, `trace`, or a tracing filter such as `jina_wasm=debug,guest=warn`).
    #[arg(long, global = true, env = "JINA_WASM_LOG", default_value = "info")]
    pub log_level: String,

    /// How log lines are written: `text` (for people) or `json` (one JSON
    /// object a line, for a log collector). A level alone (`info`, `debug`)
    /// leaves the libraries' own debug logs (hyper, h2, tonic, wasmtime,
    /// cranelift...) at `warn`; a filter that names them decides for itself.
    #[arg(
        long,
        global = true,
        env = "JINA_WASM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Libraries whose debug and info logs say nothing to an operator: kept at
/// `warn` unless the filter names them.
const QUIET_LIBRARIES: &[&str] = &[
    "hyper",
    "h2",
    "tonic",
    "tower",
    "want",
    "mio",
    "reqwest",
    "wasmtime",
    "cranelift",
    "regalloc2",
    "wasmparser",
    "zeromq",
    "axum",
];

/// The tracing filter for `--log-level`: a bare level more verbose than
/// `warn` gets [`QUIET_LIBRARIES`] at `warn`.
pub fn log_filter(level: &str) -> String {
    let verbose = matches!(
        level.trim().to_ascii_lowercase().as_str(),
        "info" | "debug" | "trace"
    );
    if !verbose {
        return level.to_string();
    }
    let mut filter = level.trim().to_string();
    for library in QUIET_LIBRARIES {
        filter.push_str(&format!(",{library}=warn"));
    }
    filter
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::RunCommand),
    Pea(pea::PeaCommand),
    Pod(pod::PodCommand),
    Flow(flow::FlowCommand),
    Gateway(gateway::GatewayCommand),
    #[command(subcommand)]
    Export(export::ExportCommand),
    Daemon(daemon::DaemonCommand),
    Client(client::ClientCommand),
    Ping(ping::PingCommand),
    Control(ping::ControlCommand),
    Reshard(reshard::ReshardCommand),
    Inspect(inspect::InspectCommand),
    New(new::NewCommand),
    Cache(cache::CacheCommand),
}

impl Cli {
    /// Logs go to stderr, so stdout stays clean for data.
    pub fn init_tracing(&self) {
        let level = match &self.command {
            Command::Pea(pea) if pea.quiet => "off",
            Command::Pod(pod) if pod.pea.quiet => "off",
            _ => &self.log_level,
        };
        let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter("info")));
        let terminal = self.log_format == LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || one_line::OneLine {
                to: std::io::stderr(),
                terminal,
            });
        let _ = match self.log_format {
            // Fields at the top level beside `level` and `target` (`access`
            // for the gateway's access log), as collectors expect.
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.with_ansi(terminal).with_target(false).try_init(),
        };
    }

    /// Runs the command.
    ///
    /// # Errors
    /// Whatever the command reports; `main` prints it with its causes.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        // Child processes (a Pod's Peas with --runtime-backend PROCESS) log at
        // the level this one was given, whether by flag or by environment.
        // SAFETY: called from `main` before any thread is started.
        unsafe { std::env::set_var("JINA_WASM_LOG", &self.log_level) };
        if self.log_format == LogFormat::Json {
            // SAFETY: as above.
            unsafe { std::env::set_var("JINA_WASM_LOG_FORMAT", "json") };
        }
        match self.command {
            Command::Run(cmd) => cmd.execute(),
            Command::Pea(cmd) => cmd.execute(),
            Command::Pod(cmd) => cmd.execute(),
            Command::Flow(cmd) => cmd.execute(),
            Command::Gateway(cmd) => cmd.execute(),
            Command::Export(cmd) => cmd.execute(),
            Command::Daemon(cmd) => cmd.execute(),
            Command::Client(cmd) => cmd.execute(),
            Command::Ping(cmd) => cmd.execute(),
            Command::Control(cmd) => cmd.execute(),
            Command::Reshard(cmd) => cmd.execute(),
            Command::Inspect(cmd) => cmd.execute(),
            Command::New(cmd) => cmd.execute(),
            Command::Cache(cmd) => cmd.execute(),
        }
    }
}

/// True when the error comes from writing to a pipe whose reader has gone
/// (`jina-wasm run ... | head`): the end of the output, not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// How `main` prints an error that ends the process: `error: ` and the error
/// with its causes. Its text may quote others (a guest's error, a child's
/// log): each line after the first is marked `  | `, and control characters
/// but tabs are escaped ([`crate::wire::printable`]), so no quoted line
/// starts a line of its own (a parent reading this process's stderr takes a
/// line starting `error: ` for its reason, and a log collector each line for
/// a record).
pub fn report(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let mut report = String::from("error: ");
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            report.push_str("\n  | ");
        }
        report.push_str(&crate::wire::printable(line));
    }
    report
}

/// Resolves a path given on the command line against the current directory, for
/// messages that name it.
pub(crate) fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// A quoted line end or control starts no line of the report.
    #[test]
    fn an_error_report_quotes_others_on_marked_lines() {
        let error = anyhow::anyhow!("x\nerror: forged\r\u{1b}[2Kz\n{{\"level\":\"ERROR\"}}")
            .context("pod `p` did not start");
        assert_eq!(
            super::report(&error),
            "error: pod `p` did not start: x\n  | error: forged\\r\\u{1b}[2Kz\n  | {\"level\":\"ERROR\"}"
        );
    }

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn bare_levels_quiet_the_libraries() {
        assert_eq!(super::log_filter("warn"), "warn");
        assert_eq!(super::log_filter("jina_wasm=debug"), "jina_wasm=debug");
        let debug = super::log_filter("debug");
        assert!(debug.starts_with("debug,hyper=warn,"), "{debug}");
        assert!(debug.contains(",wasmtime=warn,cranelift=warn,"), "{debug}");
    }
}
