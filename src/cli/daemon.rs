//! `jina-wasm daemon`: the remote, multi-tenant host (docs/daemon.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::daemon::DaemonConfig;
use crate::units::parse_size;

/// Host Peas, Pods and Flows for other machines and for several tenants (Jina's JinaD).
///
/// An HTTP API (JSON) on --host:--port: tenants upload files into workspaces
/// (multipart, stored once per content), start Peas, Pods and Flows from them, read
/// and stream their logs, and delete them. Every call needs
/// `Authorization: Bearer <token>`; the --tenants file maps tokens to tenants
/// and their quotas. Started Peas and Pods are child processes whose inputs and
/// outputs bind --host, so a Flow on another machine connects to them (a Flow
/// Pod with `host: ADDRESS:PORT`). Everything started is stopped on DELETE, when
/// its lease runs out, and when the daemon stops (Ctrl-C, SIGTERM; SIGKILL
/// takes the children with it). Once listening it prints one JSON line:
/// {"daemon":"http://HOST:PORT","host":...,"port":...}.
#[derive(Debug, Args)]
pub struct DaemonCommand {
    /// The address the API and the started Peas' sockets bind: a loopback
    /// address (127.0.0.2) for tests, the machine's address for other hosts.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// The API's port; 0 lets the OS pick one.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Where tenants' files, workspaces, state and logs are kept (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The tenants file (YAML): each tenant's name, bearer token and quota
    /// (max_peas, memory_per_pea, total_memory, disk). docs/daemon.md.
    #[arg(long, value_name = "FILE")]
    pub tenants: PathBuf,

    /// Where the Peas cache compiled components, shared by every tenant (an
    /// entry is keyed by the component's sha256 and the engine's) [default:
    /// DATA_DIR/cache].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// The largest single uploaded file (413 beyond it).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256MiB")]
    pub max_upload: u64,

    /// Each Pea's, Pod's or Flow's log is rotated past this size (one older
    /// part kept), counted in its tenant's disk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "8MiB")]
    pub max_log: u64,

    #[command(flatten)]
    pub http: crate::http_server::HttpLimits,
}

impl DaemonCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let tenants = crate::daemon::tenants::load(&self.tenants)?;
        let open: usize = tenants.iter().map(|t| t.quota.requests).sum();
        if open >= self.http.http_max_connections as usize {
            tracing::warn!(
                "the tenants' quota.requests add up to {open}, not under --http-max-connections ({}): \
                 tenants with all their calls open could leave none for the others",
                self.http.http_max_connections
            );
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create the data dir {}", self.data_dir.display()))?;
        let data_dir = std::fs::canonicalize(&self.data_dir)
            .with_context(|| format!("data dir {}", self.data_dir.display()))?;
        let config = DaemonConfig {
            host: self.host.clone(),
            port: self.port,
            data_dir: data_dir.clone(),
            tenants,
            cache_dir: self
                .cache_dir
                .as_deref()
                .map(super::absolute)
                .unwrap_or_else(|| data_dir.join("cache")),
            max_upload: self.max_upload,
            max_log: self.max_log.max(1),
            exe: std::env::current_exe().context("cannot find the jina-wasm executable")?,
            http: self.http.clone(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ready = |address: std::net::SocketAddr| {
                println!("{}", serde_json::json!({"daemon": format!("http://{address}"), "host": address.ip().to_string(), "port": address.port()}));
                tracing::info!(%address, "daemon ready");
            };
            crate::daemon::serve(config, ready, super::pea::shutdown_signal()).await
        })?;
        Ok(ExitCode::SUCCESS)
    }
}
