//! How a Pea is configured: its executor, sockets, error strategy, dump policy
//! and which endpoints write; and the addresses it ends up using.

use super::*;

/// Jina's `--on-error-strategy`: what happens to a request after its executor
/// fails. docs/protocol.md, "Error strategies".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OnError {
    /// Forward the documents unchanged; later executors run as usual.
    #[default]
    Ignore,
    /// Forward; later Peas skip their executors but record themselves on the route.
    SkipExecutor,
    /// Forward; later Peas pass the message on untouched.
    SkipHandle,
    /// End the request now: forward only the failure, with no documents.
    ThrowEarly,
}

impl OnError {
    pub fn after_error(self) -> AfterError {
        match self {
            OnError::Ignore => AfterError::Continue,
            OnError::SkipExecutor => AfterError::SkipExecutor,
            OnError::SkipHandle => AfterError::SkipHandle,
            OnError::ThrowEarly => AfterError::Abort,
        }
    }
}

/// Everything a Pea needs to start.
#[derive(Debug, Clone)]
pub struct PeaConfig {
    pub name: String,
    pub description: String,
    pub uses: PathBuf,
    /// The SHA-256 (hex) `uses` must have at the start (`--uses-sha256`):
    /// what a rolling update checked.
    pub uses_sha256: Option<String>,
    pub executor: ExecutorSpec,
    pub socket_in: SocketSpec,
    /// `tcp://host:port` (port 0 when binding: the OS picks) or `ipc://path`.
    pub address_in: String,
    pub socket_out: SocketSpec,
    pub address_out: String,
    /// Where the control ROUTER binds.
    pub address_ctrl: String,
    pub on_error: OnError,
    /// When the executor's state is dumped (never when read-only).
    pub dump: DumpPolicy,
    /// Reload the executor from its file and workspace this often.
    pub load_interval: Option<Duration>,
    /// How long `TERMINATE` waits for the request in flight, and sockets for
    /// their last sends.
    pub timeout_ctrl: Duration,
    /// Log request failures on one line, without their messages.
    pub quiet_error: bool,
    /// Endpoints that change no state (`--read-endpoints`; `*`: every one).
    /// Every other endpoint counts as a write: it is what a state loss
    /// covers, and what is refused after one (docs/stateful.md, "When state
    /// is lost").
    pub read_endpoints: Vec<String>,
}

/// `--read-endpoints` unless given: the query and export endpoints of
/// Jina's indexers (`/index`, `/update`, `/delete`, `/import` and anything
/// else are writes).
pub const DEFAULT_READ_ENDPOINTS: &[&str] = &["/search", "/export"];

/// The default `read_endpoints`.
pub fn default_read_endpoints() -> Vec<String> {
    DEFAULT_READ_ENDPOINTS
        .iter()
        .map(|e| (*e).to_string())
        .collect()
}

/// When a Pea has its executor persist its state: `--dump-interval`,
/// `dump_interval:` in a Flow. docs/stateful.md gives each mode's loss window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpPolicy {
    /// Interval mode: `dump` this often, when a request was handled since the
    /// last dump. A crash loses what was acknowledged since the last dump.
    Every(Duration),
    /// Durable mode (`0`): no request is answered before a `dump` that
    /// followed it returned (one dump per group of waiting requests); a request
    /// whose dump fails is answered with a `dump` error. A crash loses nothing
    /// that was acknowledged.
    Durable,
    /// `never`: only on DUMP, RELOAD and a graceful stop.
    Never,
}

impl DumpPolicy {
    /// Jina's default interval.
    pub const DEFAULT: DumpPolicy = DumpPolicy::Every(Duration::from_secs(240));

    pub(super) fn interval(self) -> Option<Duration> {
        match self {
            DumpPolicy::Every(every) => Some(every),
            DumpPolicy::Durable | DumpPolicy::Never => None,
        }
    }
}

impl std::str::FromStr for DumpPolicy {
    type Err = String;

    /// `0` (or `durable`): durable mode; `never`: no periodic dumps; else a
    /// duration (`240s`, `5m`, a bare number of seconds).
    fn from_str(input: &str) -> Result<Self, String> {
        match input.trim() {
            "durable" => Ok(DumpPolicy::Durable),
            "never" | "off" => Ok(DumpPolicy::Never),
            other => match crate::units::parse_duration(other)? {
                d if d.is_zero() => Ok(DumpPolicy::Durable),
                d => Ok(DumpPolicy::Every(d)),
            },
        }
    }
}

impl std::fmt::Display for DumpPolicy {
    /// The `--dump-interval` value that reads back as `self`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DumpPolicy::Every(every) => write!(f, "{}ms", every.as_millis().max(1)),
            DumpPolicy::Durable => f.write_str("0"),
            DumpPolicy::Never => f.write_str("never"),
        }
    }
}

/// The addresses a started Pea actually uses (real ports, not 0).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Addresses {
    #[serde(rename = "in")]
    pub input: String,
    #[serde(rename = "out")]
    pub output: String,
    pub ctrl: String,
    pub port_in: u16,
    pub port_out: u16,
    pub port_ctrl: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn dump_policies_parse_and_print_back() {
        for (text, policy) in [
            ("0", DumpPolicy::Durable),
            ("durable", DumpPolicy::Durable),
            ("never", DumpPolicy::Never),
            ("240s", DumpPolicy::DEFAULT),
            ("1.5s", DumpPolicy::Every(Duration::from_millis(1500))),
        ] {
            let parsed: DumpPolicy = text.parse().unwrap();
            assert_eq!(parsed, policy, "{text}");
            assert_eq!(parsed.to_string().parse::<DumpPolicy>().unwrap(), policy);
        }
        assert!("later".parse::<DumpPolicy>().is_err());
    }
}
