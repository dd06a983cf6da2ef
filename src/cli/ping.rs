//! `jina-wasm ping`: is a Pea alive and healthy?

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::control::{self, Command};
use crate::units::parse_duration;

/// Send STATUS to a Pea's control address and print its answer.
///
/// Exits 0 when the Pea answers healthy, 1 when it answers unhealthy or not at
/// all within --timeout. With --alive any answer is exit 0: a liveness probe
/// (a Pod's head answers unhealthy while its Peas are not all connected, which
/// is a reason not to send it work, not to restart it).
#[derive(Debug, Args)]
pub struct PingCommand {
    /// The control address: HOST:PORT, tcp://HOST:PORT or ipc://PATH (the
    /// `ctrl` the Pea printed when it started).
    pub address: String,

    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Print the whole STATUS answer as JSON.
    #[arg(long)]
    pub json: bool,

    /// Exit 0 on any answer, healthy or not (for liveness probes).
    #[arg(long)]
    pub alive: bool,
}

impl PingCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let address = endpoint(&self.address);
        let status = match ask(&address, Command::Status, self.timeout)? {
            Ok(status) => status,
            Err(code) => return Ok(code),
        };
        let healthy = status["healthy"].as_bool() == Some(true);
        if self.json {
            println!("{status}");
        } else {
            println!(
                "pea `{}` at {address}: {}, {}, {} requests, {} failed",
                crate::wire::printable(status["pea"].as_str().unwrap_or("?")),
                if healthy { "healthy" } else { "UNHEALTHY" },
                status["state"].as_str().unwrap_or("?"),
                status["requests"],
                status["failed"]
            );
        }
        Ok(if healthy || self.alive {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// Sends one control request and waits up to `timeout`; a failure or no
/// answer is printed on stderr and becomes exit code 1.
fn ask(
    address: &str,
    command: Command,
    timeout: Duration,
) -> anyhow::Result<Result<Value, ExitCode>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(
        match rt
            .block_on(async { tokio::time::timeout(timeout, control::ask(address, command)).await })
        {
            Err(_) => {
                eprintln!("no answer from {address} within {timeout:?}");
                Err(ExitCode::FAILURE)
            }
            Ok(Err(e)) => {
                eprintln!("{address}: {}", crate::wire::printable(&format!("{e:#}")));
                Err(ExitCode::FAILURE)
            }
            Ok(Ok(answer)) => Ok(answer),
        },
    )
}

/// Send a control request (DUMP, RELOAD, TERMINATE, STATUS, ACCEPT-LOSS) to a
/// Pea's or a Pod's control address and print the answer as JSON.
///
/// Exits 0 when the request succeeded, 1 with the reason when it failed or no
/// answer came within --timeout. DUMP, RELOAD and ACCEPT-LOSS sent to a Pod go
/// to every one of its Peas.
#[derive(Debug, Args)]
pub struct ControlCommand {
    /// The control address: HOST:PORT, tcp://HOST:PORT or ipc://PATH.
    pub address: String,

    /// The command: STATUS, DUMP, RELOAD, TERMINATE or ACCEPT-LOSS (clears a
    /// Pea's `state_lost` so it takes writes again; docs/stateful.md).
    #[arg(value_parser = ["STATUS", "DUMP", "RELOAD", "TERMINATE", "ACCEPT-LOSS"], ignore_case = true)]
    pub command: String,

    /// How long to wait for the answer (a DUMP of a large index takes a while).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

impl ControlCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let address = endpoint(&self.address);
        let name = self.command.to_ascii_uppercase();
        let command = Command::parse(&name)
            .ok_or_else(|| anyhow::anyhow!("unknown control command `{name}`"))?;
        match ask(&address, command, self.timeout)? {
            Ok(answer) => {
                println!("{answer}");
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        }
    }
}

/// `HOST:PORT` as a TCP endpoint; full endpoints as they are.
pub(crate) fn endpoint(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("tcp://{address}")
    }
}
