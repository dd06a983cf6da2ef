//! `jina-wasm pea`: one executor behind ZeroMQ sockets, until TERMINATE or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::common::{ExecutorArgs, MonitoringArgs, RuntimeArgs};
use crate::pea::{OnError, PeaConfig};
use crate::pod::Place;
use crate::transport::SocketSpec;
use crate::units::parse_duration;

/// Run one executor as a Pea: documents arrive on its input socket, results
/// leave on its output socket, and a control socket answers STATUS, TERMINATE,
/// DUMP and RELOAD (docs/protocol.md).
///
/// Ports default to ones the OS picks. Once ready, the Pea prints one JSON line
/// on stdout with the addresses it bound, for example
/// {"pea":"enc","in":"tcp://127.0.0.1:40101","out":"tcp://127.0.0.1:40102",
/// "ctrl":"tcp://127.0.0.1:40103","port_in":40101,"port_out":40102,"port_ctrl":40103};
/// logs go to stderr. It stops on TERMINATE, Ctrl-C or SIGTERM: it finishes the
/// request in flight, dumps the executor (unless --read-only) and closes it.
#[derive(Debug, Args)]
pub struct PeaCommand {
    #[command(flatten)]
    pub executor: ExecutorArgs,

    #[command(flatten)]
    pub sockets: SocketArgs,

    /// Free text shown in STATUS.
    #[arg(long, default_value = "")]
    pub description: String,

    /// What happens to a request whose executor fails: IGNORE (forward it, later
    /// executors run), SKIP_EXECUTOR (later executors are skipped),
    /// SKIP_HANDLE (later Peas pass it on untouched), THROW_EARLY (end it now,
    /// forwarding only the failure). The client always sees the failure.
    #[arg(long, value_enum, ignore_case = true, default_value = "IGNORE")]
    pub on_error_strategy: OnError,

    /// When the executor's state is saved (docs/stateful.md). A duration
    /// (interval mode): dump this often, when a request was handled since the
    /// last dump; a crash loses what was answered since then. `0` (durable
    /// mode): no request is answered before a dump that followed it (one dump
    /// per group of requests waiting together); a crash loses
    /// nothing that was answered. `never`: no periodic dumps. In every mode the
    /// state is also dumped on TERMINATE, DUMP and RELOAD; never with --read-only.
    #[arg(long, value_name = "DURATION|0|never", default_value = "240s")]
    pub dump_interval: crate::pea::DumpPolicy,

    /// Endpoints that change no state, comma-separated (`*`: all). With a
    /// writable workspace in interval or `never` mode, every other endpoint
    /// is a write: a write acknowledged since the last good dump is reported
    /// lost (STATUS `state_lost`) if the instance holding it is discarded,
    /// and then writes are refused (`state-lost`) until ACCEPT-LOSS or
    /// RELOAD; while dumps fail, writes are refused (`dump`). Reads are
    /// served throughout (docs/stateful.md).
    #[arg(long, value_name = "ENDPOINTS", value_delimiter = ',', default_values_t = crate::pea::default_read_endpoints())]
    pub read_endpoints: Vec<String>,

    /// Reload the executor from its file and workspace this often (0: never):
    /// for a read-only Pea serving an index another Pea writes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0")]
    pub load_interval: Duration,

    /// How long to wait for the executor's start (load, compile, init) before
    /// giving up (a bare number is seconds; -1: no limit).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::limit_duration_flag, allow_negative_numbers = true, default_value = "600s")]
    pub timeout_ready: Duration,

    /// No log output at all.
    #[arg(long)]
    pub quiet: bool,

    /// Log a failed request as one line with its kind, without the message.
    #[arg(long)]
    pub quiet_error: bool,

    /// The SHA-256 (64 hex digits) the --uses file must have when the Pea
    /// starts; a file that differs is refused before it is compiled, naming
    /// both digests. A Pod's rolling update passes the digest of the file it
    /// checked, so a file changed during the update is not started
    /// unchecked. The Pea then runs that version: a reload (--load-interval,
    /// RELOAD) loads its state into a fresh instance of the same component,
    /// without reading the file again.
    #[arg(long, value_name = "HEX", value_parser = sha256_hex)]
    pub uses_sha256: Option<String>,

    /// How a Pod runs its Peas: THREAD (tasks of one process) or PROCESS (a
    /// process each). A standalone Pea is one process either way.
    #[arg(long, value_enum, ignore_case = true, default_value = "THREAD")]
    pub runtime_backend: crate::pod::Backend,

    /// This Pea is shard ID of a Pod whose head runs elsewhere (`pod --role
    /// head`): a number, a name ending in `-NUMBER` such as a Kubernetes
    /// StatefulSet pod's (`index-1`), or `auto`: the host name ($HOSTNAME),
    /// which is that pod name. The Pea is named `<name>/shard-ID`, its
    /// executor gets `with.jina.shard_id`, and its workspace is
    /// `<workspace>/<name>/shard-ID/`, checked as a Pod's own shard's is.
    /// Needs --shard-count. With --replica-id too, the Pea is one replica of
    /// that shard (`<name>/shard-ID/replica-RID`), sharing the shard's
    /// workspace with its other replicas.
    #[arg(long, value_name = "ID", requires = "shard_count")]
    pub shard_id: Option<String>,

    /// With --shard-id: how many shards the Pod has.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shard_count: Option<u32>,

    /// This Pea is a replica of a Pod whose head runs elsewhere, under a name
    /// unique in the Pod (`auto`: the host name, a Kubernetes pod's name): it
    /// is named `<name>/replica-ID` and its executor gets `with.jina.replica_id`.
    /// With --shard-id, a replica of that shard (unique in the shard).
    #[arg(long, value_name = "ID")]
    pub replica_id: Option<String>,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub monitoring: MonitoringArgs,

    #[command(flatten)]
    pub tracing: super::common::TracingArgs,
}

/// The socket flags of a Pea (and, later, of the Peas of a Pod).
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Input socket: PULL_BIND, PULL_CONNECT, SUB_BIND, SUB_CONNECT, ROUTER_BIND
    /// or DEALER_CONNECT (which asks its upstream ROUTER for work with IDLE credit).
    #[arg(long, default_value = "PULL_BIND")]
    pub socket_in: SocketSpec,

    /// Output socket: PUSH_BIND, PUSH_CONNECT, PUB_BIND, PUB_CONNECT, ROUTER_BIND
    /// (sends only to downstream DEALERs that asked) or DEALER_CONNECT.
    #[arg(long, default_value = "PUSH_BIND")]
    pub socket_out: SocketSpec,

    /// Host of the input socket: the interface to bind, or the peer to connect
    /// to. Binding defaults to loopback; use 0.0.0.0 to accept remote peers.
    #[arg(long, default_value = "127.0.0.1")]
    pub host_in: String,

    /// Port of the input socket; 0 lets the OS pick one when binding.
    #[arg(long, default_value_t = 0)]
    pub port_in: u16,

    /// Host of the output socket (as --host-in).
    #[arg(long, default_value = "127.0.0.1")]
    pub host_out: String,

    /// Port of the output socket; 0 lets the OS pick one when binding.
    #[arg(long, default_value_t = 0)]
    pub port_out: u16,

    /// Interface the control socket binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub host_ctrl: String,

    /// Port of the control socket; 0 lets the OS pick one.
    #[arg(long, default_value_t = 0)]
    pub port_ctrl: u16,

    /// Bind the control socket on a Unix socket (ipc://) in the temp directory
    /// instead of TCP.
    #[arg(long)]
    pub ctrl_with_ipc: bool,

    /// How long TERMINATE waits for the request in flight, and closing sockets
    /// for their last sends.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub timeout_ctrl: Duration,
}

impl SocketArgs {
    fn addresses(&self, name: &str) -> anyhow::Result<(String, String, String)> {
        if !self.socket_in.kind.can_recv() {
            anyhow::bail!(
                "--socket-in {}: a {:?} socket cannot receive; use PULL_BIND, PULL_CONNECT, SUB_BIND, SUB_CONNECT, \
                 ROUTER_BIND or DEALER_CONNECT",
                self.socket_in,
                self.socket_in.kind
            );
        }
        if !self.socket_out.kind.can_send() {
            anyhow::bail!(
                "--socket-out {}: a {:?} socket cannot send; use PUSH_BIND, PUSH_CONNECT, PUB_BIND, PUB_CONNECT, \
                 ROUTER_BIND or DEALER_CONNECT",
                self.socket_out,
                self.socket_out.kind
            );
        }
        let input = tcp(&self.host_in, self.port_in, self.socket_in, "--port-in")?;
        let output = tcp(&self.host_out, self.port_out, self.socket_out, "--port-out")?;
        let ctrl = if self.ctrl_with_ipc {
            let safe: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path =
                std::env::temp_dir().join(format!("jina-wasm-{safe}-{}.ctrl", std::process::id()));
            format!("ipc://{}", path.display())
        } else {
            format!("tcp://{}:{}", self.host_ctrl, self.port_ctrl)
        };
        Ok((input, output, ctrl))
    }
}

fn tcp(host: &str, port: u16, spec: SocketSpec, flag: &str) -> anyhow::Result<String> {
    if !spec.bind && port == 0 {
        anyhow::bail!("{spec} connects to a peer: give its port with {flag}");
    }
    Ok(format!("tcp://{host}:{port}"))
}

// The defaults above are spelled out for --help; keep them equal to a Flow's.
const _: () = assert!(crate::pod::DEFAULT_TIMEOUT_READY.as_secs() == 600);
const _: () = assert!(matches!(
    crate::pea::DumpPolicy::DEFAULT,
    crate::pea::DumpPolicy::Every(d) if d.as_secs() == 240
));

impl PeaCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(self.run())
    }

    /// The Pea this command describes.
    ///
    /// # Errors
    /// Socket flags that do not fit together.
    pub fn config(&self) -> anyhow::Result<PeaConfig> {
        let spec = self.executor.spec();
        // The name goes on the wire in every answer's route: one its
        // receivers would refuse is refused here (`--name`, or the file stem).
        crate::wire::check_name("the Pea's name (--name, else the file stem)", &spec.name)
            .map_err(anyhow::Error::msg)?;
        let (address_in, address_out, address_ctrl) = self.sockets.addresses(&spec.name)?;
        let config = PeaConfig {
            name: spec.name.clone(),
            description: self.description.clone(),
            uses: self.executor.uses.clone(),
            uses_sha256: self.uses_sha256.clone(),
            executor: spec,
            socket_in: self.sockets.socket_in,
            address_in,
            socket_out: self.sockets.socket_out,
            address_out,
            address_ctrl,
            on_error: self.on_error_strategy,
            dump: self.dump_interval,
            load_interval: Some(self.load_interval).filter(|d| !d.is_zero()),
            timeout_ctrl: self.sockets.timeout_ctrl,
            quiet_error: self.quiet_error,
            read_endpoints: self.read_endpoints.clone(),
        };
        match self.place()? {
            Some(place) => crate::pod::placed(&config, &place, crate::pod::workspace::Scope::Alone),
            None => Ok(config),
        }
    }

    /// The Pea's place in a Pod whose head runs elsewhere, if it has one.
    ///
    /// # Errors
    /// A shard id that is not a number (nor ends in one) or not below --shards.
    pub fn place(&self) -> anyhow::Result<Option<Place>> {
        let replica = match &self.replica_id {
            Some(id) => {
                let id = auto(id)?;
                if id.is_empty() || id.contains(['/', ' ']) {
                    anyhow::bail!("--replica-id `{id}`: must be non-empty, without `/` or spaces");
                }
                crate::wire::check_name("--replica-id", &id).map_err(anyhow::Error::msg)?;
                Some(id)
            }
            None => None,
        };
        if let Some(text) = &self.shard_id {
            let text = &auto(text)?;
            let shards = self.shard_count.unwrap_or(1) as usize;
            let digits = text.rsplit('-').next().unwrap_or(text);
            let id: usize = digits.parse().map_err(|_| {
                anyhow::anyhow!("--shard-id `{text}`: neither a number nor a name ending in -NUMBER (a StatefulSet pod's name)")
            })?;
            if id >= shards {
                anyhow::bail!(
                    "--shard-id `{text}`: shard {id} does not exist, the Pod has --shard-count {shards} (0 to {})",
                    shards - 1
                );
            }
            return Ok(Some(match replica {
                Some(replica) => Place::ShardReplica {
                    shard: id,
                    shards,
                    replica,
                    replicas: None,
                },
                None => Place::Shard { id, shards },
            }));
        }
        if let Some(id) = replica {
            return Ok(Some(Place::Replica { id, replicas: None }));
        }
        Ok(None)
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let config = self.config()?;
        let name = config.name.clone();
        let runtime = self.runtime.runtime(super::common::POOL_SLOTS)?;
        let served = tokio_util::sync::CancellationToken::new();
        let (_, monitoring) = self.monitoring.start(false, None, served.clone()).await?;
        let _served = served.drop_guard();
        // Flushes the last spans once the Pea has stopped.
        let (_, _flush) = self.tracing.start(None, &name)?;
        let pea = tokio::time::timeout(self.timeout_ready, crate::pea::start(runtime, config))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "pea `{name}` was not ready within {:?} (--timeout-ready)",
                    self.timeout_ready
                )
            })??;
        let mut ready = serde_json::to_value(&pea.addresses)?;
        ready
            .as_object_mut()
            .expect("an object")
            .insert("pea".into(), name.clone().into());
        if let Some(url) = monitoring {
            ready["monitoring"] = url.into();
        }
        println!("{ready}");
        stop_on_signal(pea.stop_token());
        pea.wait().await.with_context(|| format!("pea `{name}`"))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `--uses-sha256`: 64 hex digits (either case), kept in lower case as
/// digests are written. Anything else is refused as it is parsed: it could
/// never match, and the Pea would say the file changed when the flag is wrong.
fn sha256_hex(value: &str) -> Result<String, String> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(value.to_ascii_lowercase());
    }
    Err(format!(
        "`{value}` is not a SHA-256: 64 hex digits are (as `sha256sum` prints), this has {} characters{}",
        value.chars().count(),
        if value.chars().all(|c| c.is_ascii_hexdigit()) {
            ""
        } else {
            " and some are not hex digits"
        }
    ))
}

/// `auto`: this machine's host name ($HOSTNAME, else the kernel's), which is
/// the pod's name in Kubernetes (`index-1` in a StatefulSet) and what Compose
/// sets with `hostname:`. Anything else as it is.
fn auto(value: &str) -> anyhow::Result<String> {
    if value != "auto" {
        return Ok(value.to_string());
    }
    if let Some(name) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
        return Ok(name);
    }
    // What gethostname(2) answers on Linux: this UTS namespace's node name.
    // One procfs read needs no `unsafe` and no crate feature (rustix's `uname`
    // needs `system`, which nothing else in the tree enables).
    const HOSTNAME: &str = "/proc/sys/kernel/hostname";
    let name = std::fs::read_to_string(HOSTNAME)
        .with_context(|| format!("`auto`: cannot read the host name from {HOSTNAME}"))?;
    Ok(name.trim_end().to_string())
}

/// Cancels `stop` on Ctrl-C or SIGTERM.
pub(crate) fn stop_on_signal(stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
    }
}

#[cfg(test)]
mod tests {
    #[derive(clap::Parser)]
    struct Pea {
        #[command(flatten)]
        pea: super::PeaCommand,
    }

    fn parse(sha256: &str) -> Result<Option<String>, String> {
        let argv = ["pea", "--uses", "x.wasm", "--uses-sha256", sha256];
        <Pea as clap::Parser>::try_parse_from(argv)
            .map(|p| p.pea.uses_sha256)
            .map_err(|e| e.to_string())
    }

    /// A `--uses-sha256` that is no digest (empty, short, long, not hex,
    /// not ASCII) is refused by name as it is parsed, not taken to a start
    /// that says the file changed; a digest in upper case is one.
    #[test]
    fn a_uses_sha256_that_is_no_digest_is_refused_as_it_is_parsed() {
        let digest = "ab".repeat(32);
        assert_eq!(parse(&digest.to_uppercase()), Ok(Some(digest.clone())));
        let long = format!("{digest}0");
        let accented = format!("{}\u{e9}", &digest[..63]);
        for wrong in ["", "abc", &long, &"g".repeat(64), &accented] {
            let error = parse(wrong).expect_err(wrong);
            assert!(
                error.contains("--uses-sha256") && error.contains("is not a SHA-256"),
                "{wrong:?}: {error}"
            );
        }
    }
}
