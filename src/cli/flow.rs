//! `jina-wasm flow`: Flows described in YAML (docs/flow-yaml.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{MonitoringArgs, RuntimeArgs, TracingArgs};
use crate::flow::Flow;
use crate::flow::front::{Gateways, listeners};
use crate::flow::remote::RemoteOptions;
use crate::flow::resolve::RunOptions;

/// Run a Flow: its Pods, in dependency order, behind an HTTP and/or gRPC gateway.
///
/// `jina-wasm flow --uses flow.yml` starts every Pod (stopping them all again if
/// one fails), prints the topology and then one JSON line with the gateway's
/// address(es), and serves until Ctrl-C or SIGTERM. `flow check` and `flow plot`
/// read a file without running it; `flow update` replaces a running Flow's Pod
/// while it serves (a rolling update).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FlowCommand {
    #[command(subcommand)]
    pub action: Option<FlowAction>,

    /// The Flow YAML file to run.
    #[arg(long, value_name = "FLOW.yml")]
    pub uses: Option<PathBuf>,

    /// The gateway's port, or one per protocol in --protocol's order
    /// (`8080,8081`; overrides the file's `with.port`; 0: the OS picks).
    /// `--port-expose` is Jina's name for it.
    #[arg(long, visible_alias = "port-expose", value_delimiter = ',', num_args = 1..)]
    pub port: Vec<u16>,

    /// The protocols the gateway serves, each on its own port: `http`,
    /// `grpc` (Jina's client's default), or both (`http,grpc`). Overrides the
    /// file's `with.protocol`; default http.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1..)]
    pub protocol: Vec<crate::flow::front::Protocol>,

    /// The interface the gateway binds (overrides `with.host`).
    #[arg(long)]
    pub host: Option<String>,

    /// Where the Pods' Peas run: THREAD (this process) or PROCESS (a process each).
    #[arg(long, value_enum, ignore_case = true, default_value = "THREAD")]
    pub runtime_backend: crate::pod::Backend,

    /// Don't print the logs of remote Pods (Pods with `host:`) on stderr.
    #[arg(long)]
    pub quiet_remote_logs: bool,

    /// The daemon workspace remote Pods' files and state go to (overrides
    /// `with.workspace_id`; default: the Flow file's stem). The same id in a
    /// later run finds the same uploads and executor state.
    #[arg(long, value_name = "ID")]
    pub workspace_id: Option<String>,

    /// How long a daemon keeps a remote Pod after the Flow's last renewal (the
    /// Flow renews every third of it): if this process dies, its remote Pods
    /// are deleted within this time.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration, default_value = "10s")]
    pub remote_lease: std::time::Duration,

    /// The most Peas the Flow may start (each Pod's shards times replicas, plus
    /// its uses_before/uses_after); a larger Flow is refused before anything
    /// starts. Overrides the file's `with.max_peas`. [default: 64]
    #[arg(long, value_name = "N")]
    pub max_peas: Option<usize>,

    /// The token the gateway's admin route (`POST /admin/update`, used by
    /// `flow update`) requires as `Authorization: Bearer TOKEN`, from any
    /// client. Without one, the admin route answers only clients on this
    /// machine (a loopback address).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "JINA_WASM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    #[command(flatten)]
    pub runtime: RuntimeArgs,

    #[command(flatten)]
    pub http: crate::http_server::HttpLimits,

    #[command(flatten)]
    pub monitoring: MonitoringArgs,

    #[command(flatten)]
    pub tracing: TracingArgs,
}

#[derive(Debug, Subcommand)]
pub enum FlowAction {
    /// Check a Flow file as `flow` would before starting anything (fields and
    /// their values, the `needs` graph, each `uses` a component, the Peas
    /// against `--max-peas`) and print its Pods in start order; exit 1 with
    /// the file, line and key of the first problem.
    Check { file: PathBuf },
    /// Print the Flow's topology as a Mermaid flowchart, as Jina's `plot`.
    Plot { file: PathBuf },
    /// Replace a running Flow's Pod with a new component and/or new `with:`
    /// settings, one Pea at a time, while the Flow serves (a rolling update;
    /// docs/operations.md).
    ///
    /// Replicas (`parallel: N`): each new one starts and connects before the
    /// old one gets no more work, finishes what it holds (up to
    /// --drain-timeout) and stops. Shards: one at a time, their requests held
    /// (not failed, up to --drain-timeout) while the shard dumps its state,
    /// stops, and its replacement starts on the same workspace. A replacement
    /// that does not start rolls everything back; the command then exits 1
    /// with the reason, and the Pod serves its previous settings. Prints the
    /// gateway's JSON answer: the component that serves now (path, SHA-256,
    /// `with`, generation). A Pod of one Pea, and Pods on a daemon (`host:`),
    /// cannot be updated (restart the Flow).
    ///
    /// It talks to the gateway's admin route, which answers clients on the
    /// Flow's machine only, unless the Flow was started with --admin-token
    /// (then give the same token here).
    Update(UpdateArgs),
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The running Flow's HTTP gateway (its ready line's `gateway`).
    #[arg(long, value_name = "http://HOST:PORT")]
    pub gateway: String,

    /// The Pod to update (its `name:` in the Flow file).
    #[arg(long, value_name = "NAME")]
    pub pod: String,

    /// The new component (a path the Flow's process can read; made absolute
    /// here when it exists here). Default: the Pod's current one.
    #[arg(long, value_name = "NEW.wasm")]
    pub uses: Option<PathBuf>,

    /// The new `with:` settings as a JSON object; they replace the Pod's
    /// whole `with:`. Default: the current ones.
    #[arg(long, value_name = "JSON")]
    pub uses_with: Option<String>,

    /// How long a replica may take to finish the requests it holds before it
    /// is stopped, and how long a shard's requests may be held.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub drain_timeout: String,

    /// The Flow's --admin-token, if it has one.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "JINA_WASM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// How long to wait for the update to finish.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration, default_value = "10m")]
    pub timeout: std::time::Duration,
}

impl FlowCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match &self.action {
            Some(FlowAction::Check { file }) => {
                let flow = Flow::load(file)?;
                // The same resolution `flow` does before it starts anything.
                crate::flow::resolve::check(&flow, &self.run_options())?;
                listeners(&flow.with, &self.protocol, &self.port)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for &i in &flow.order {
                    println!("{}", describe(&flow, i));
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(FlowAction::Plot { file }) => {
                print!("{}", Flow::load(file)?.mermaid());
                Ok(ExitCode::SUCCESS)
            }
            Some(FlowAction::Update(args)) => args.execute(),
            None => {
                let Some(file) = self.uses.clone() else {
                    anyhow::bail!(
                        "give the Flow to run with --uses FLOW.yml (or use `flow check` / `flow plot`)"
                    );
                };
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(self.run(file))
            }
        }
    }

    async fn run(self, file: PathBuf) -> anyhow::Result<ExitCode> {
        let flow = Flow::load(&file)?;
        let mut options = self.run_options();
        // Traces on before any Pod is resolved (a Pea process's arguments
        // include the endpoint) or started; the last spans are flushed once
        // everything has stopped (the guard is dropped last).
        let from_file = flow.with.traces_endpoint().map_err(anyhow::Error::msg)?;
        let (traces, _flush) = self.tracing.start(from_file, "jina-wasm")?;
        if let Some(endpoint) = &traces {
            options.child_args.extend(TracingArgs::child_args(endpoint));
        }
        // Every Pod's settings and the gateway's listeners, before the
        // runtime (and its compile cache, pool) exists and before any Pod
        // starts.
        let mut configs = crate::flow::resolve::check(&flow, &options)?;
        let listeners = listeners(&flow.with, &self.protocol, &self.port)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let runtime = self.runtime.runtime(0)?;
        // Metrics on before any Pod starts, so each records into them.
        let served = tokio_util::sync::CancellationToken::new();
        let (metrics, monitoring) = self
            .monitoring
            .start(
                flow.with.monitoring.unwrap_or(false),
                flow.with.port_monitoring,
                served.clone(),
            )
            .await?;
        let _served = served.drop_guard();
        if metrics {
            options.child_args.extend(self.monitoring.child_args());
            // The Pods were resolved before: their Pea processes
            // (--runtime-backend PROCESS) serve metrics of their own too.
            for config in &mut configs {
                config.child_args.clone_from(&options.child_args);
            }
        }
        let running = crate::flow::run::start(runtime.clone(), &flow, configs, &options).await?;
        // What the executors declare, for /openapi.json and gRPC discovery.
        let endpoints = crate::flow::endpoints::discover(runtime, &flow).await;
        let host = self
            .host
            .clone()
            .or_else(|| flow.with.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let pods: Vec<_> = running
            .pods
            .iter()
            .map(|(name, pod)| json!({"pod": name, "in": pod.addresses.input, "out": pod.addresses.output, "ctrl": pod.addresses.ctrl, "peas": pod.members, "component": pod.updater.component()}))
            .collect();
        let info =
            json!({"flow": file.display().to_string(), "pods": pods, "endpoints": endpoints});
        let admin = crate::flow::update::Admin::new(&running, self.admin_token.clone());
        let gateway = match Gateways::start(
            &host,
            &listeners,
            &running.calls,
            flow.with.prefetch.unwrap_or(8),
            &info,
            &self.http,
            Some(admin),
        )
        .await
        {
            Ok(gateway) => gateway,
            Err(e) => {
                let _ = running.stop().await;
                return Err(e.context(format!("{}: the gateway did not start", file.display())));
            }
        };
        // The topology, for people; with --log-format json, as log lines, so
        // that every line of stderr is JSON.
        let json = std::env::var("JINA_WASM_LOG_FORMAT").is_ok_and(|f| f == "json");
        for &i in &flow.order {
            if json {
                tracing::info!(pod = %flow.pods[i].name, "{}", describe(&flow, i));
            } else {
                eprintln!("  {}", describe(&flow, i));
            }
        }
        let mut ready = info;
        gateway.describe(&mut ready);
        if let Some(url) = monitoring {
            ready["monitoring"] = url.into();
        }
        println!("{ready}");
        super::pea::shutdown_signal().await;
        tracing::info!("stopping the Flow");
        gateway.stop().await;
        running
            .stop()
            .await
            .with_context(|| format!("{}", file.display()))?;
        Ok(ExitCode::SUCCESS)
    }
}

impl FlowCommand {
    fn run_options(&self) -> RunOptions {
        RunOptions {
            backend: self.runtime_backend,
            child_args: self.runtime.child_args(),
            remote: RemoteOptions {
                quiet_logs: self.quiet_remote_logs,
                workspace_id: self.workspace_id.clone(),
                lease: self.remote_lease,
            },
            max_peas: self.max_peas,
        }
    }
}

impl UpdateArgs {
    fn execute(&self) -> anyhow::Result<ExitCode> {
        let uses_with = match &self.uses_with {
            None => None,
            Some(text) => {
                let value: serde_json::Value = serde_json::from_str(text)
                    .with_context(|| format!("--uses-with `{text}` is not JSON"))?;
                anyhow::ensure!(
                    value.is_object(),
                    "--uses-with must be a JSON object (the Pod's `with:`), not {value}"
                );
                Some(value)
            }
        };
        anyhow::ensure!(
            self.uses.is_some() || uses_with.is_some(),
            "nothing to update: give --uses NEW.wasm and/or --uses-with JSON"
        );
        crate::units::parse_duration(&self.drain_timeout)
            .map_err(|e| anyhow::anyhow!("--drain-timeout: {e}"))?;
        let uses = self
            .uses
            .as_ref()
            .map(|u| std::fs::canonicalize(u).unwrap_or_else(|_| u.clone()));
        let body = json!({
            "pod": self.pod,
            "uses": uses,
            "uses_with": uses_with,
            "drain_timeout": self.drain_timeout,
        });
        let url = format!(
            "{}{}",
            self.gateway.trim_end_matches('/'),
            crate::flow::update::UPDATE_ROUTE
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (code, answer) = rt.block_on(async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(crate::client_http::CONNECT_TIMEOUT)
                .timeout(self.timeout)
                .build()?;
            let mut request = client.post(&url).json(&body);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach the gateway's admin route at {url}"))?;
            let code = response.status();
            let text = response.text().await?;
            anyhow::Ok((code, text))
        })?;
        let parsed: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or(serde_json::Value::String(answer));
        if code.is_success() {
            println!("{parsed}");
            return Ok(ExitCode::SUCCESS);
        }
        let reason = parsed
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| parsed.to_string(), str::to_string);
        anyhow::bail!(
            "the update of pod `{}` failed (HTTP {code}): {reason}",
            self.pod
        )
    }
}

/// `name <- needs (uses)`.
fn describe(flow: &Flow, i: usize) -> String {
    let pod = &flow.pods[i];
    let needs: Vec<&str> = if flow.needs[i].is_empty() {
        vec![crate::flow::GATEWAY]
    } else {
        flow.needs[i]
            .iter()
            .map(|&j| flow.pods[j].name.as_str())
            .collect()
    };
    let on = pod
        .host
        .as_deref()
        .map_or_else(String::new, |host| format!(" on daemon {host}"));
    format!(
        "{} <- {} ({}){on}",
        pod.name,
        needs.join(", "),
        pod.uses.display()
    )
}
