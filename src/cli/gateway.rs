//! `jina-wasm gateway`: a Flow's HTTP and/or gRPC gateway and router alone, for Pods that
//! run elsewhere (the gateway unit of a Kubernetes or Compose export).

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use crate::control::{self, Command, Incoming};
use crate::flow::Flow;
use crate::flow::front::{Gateways, listeners};
use crate::transport::Link;
use crate::wire::Status;

/// Run a Flow's gateway (HTTP, gRPC or both), and the router that carries requests along its
/// `needs` graph, for Pods that are already running elsewhere.
///
/// `jina-wasm flow` starts the Pods itself; this command only connects to them:
/// every Pod of the Flow file needs a --pod-address with its input (where the
/// Pod's head or singleton Pea binds PULL) and its output (PUSH). Host names are
/// looked up again on every reconnect, so a Pod restarted behind a Kubernetes
/// Service is found again. A control socket (--port-ctrl) answers STATUS for
/// `jina-wasm ping` and TERMINATE. `jina-wasm export` writes these arguments.
#[derive(Debug, Args)]
pub struct GatewayCommand {
    /// The Flow YAML file (its `with:` settings and `needs` graph; the
    /// executors' files are not read).
    #[arg(long, value_name = "FLOW.yml")]
    pub uses: PathBuf,

    /// Where Pod NAME takes requests and gives results, as
    /// NAME=HOST:PORT_IN,HOST:PORT_OUT (repeatable, one per Pod).
    #[arg(long = "pod-address", value_name = "NAME=IN,OUT")]
    pub pod_addresses: Vec<PodAddress>,

    /// The gateway's port, or one per protocol in --protocol's order
    /// (`8080,8081`; overrides the file's `with.port`; 0: the OS picks).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub port: Vec<u16>,

    /// The protocols served, each on its own port: `http`, `grpc` or both
    /// (`http,grpc`). Overrides the file's `with.protocol`; default http.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1..)]
    pub protocol: Vec<crate::flow::front::Protocol>,

    /// The interface the gateway's ports bind (overrides `with.host`; 0.0.0.0 in a
    /// container).
    #[arg(long)]
    pub host: Option<String>,

    /// Interface of the control socket.
    #[arg(long, default_value = "127.0.0.1")]
    pub host_ctrl: String,

    /// Port of the control socket (0: the OS picks).
    #[arg(long, default_value_t = 0)]
    pub port_ctrl: u16,

    #[command(flatten)]
    pub http: crate::http_server::HttpLimits,

    #[command(flatten)]
    pub monitoring: super::common::MonitoringArgs,

    #[command(flatten)]
    pub tracing: super::common::TracingArgs,
}

/// `NAME=HOST:PORT,HOST:PORT`.
#[derive(Debug, Clone)]
pub struct PodAddress {
    pub name: String,
    pub input: String,
    pub output: String,
}

impl FromStr for PodAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not NAME=HOST:PORT_IN,HOST:PORT_OUT");
        let (name, rest) = text.split_once('=').ok_or_else(bad)?;
        let (input, output) = rest.split_once(',').ok_or_else(bad)?;
        let tcp = |a: &str| -> Result<String, String> {
            let a = a.trim().trim_start_matches("tcp://");
            match a.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) =>
                {
                    Ok(format!("tcp://{a}"))
                }
                _ => Err(format!(
                    "`{text}`: `{a}` is not HOST:PORT with a port above 0"
                )),
            }
        };
        Ok(PodAddress {
            name: name.trim().to_string(),
            input: tcp(input)?,
            output: tcp(output)?,
        })
    }
}

impl GatewayCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(self.run())
    }

    /// Every Pod of the file has exactly one address, and nothing else has one.
    fn addresses(&self, flow: &Flow) -> anyhow::Result<Vec<(String, String)>> {
        let file = flow.file.display();
        for given in &self.pod_addresses {
            if !flow.pods.iter().any(|p| p.name == given.name) {
                anyhow::bail!(
                    "--pod-address `{}`: {file} has no Pod of that name",
                    given.name
                );
            }
            if self
                .pod_addresses
                .iter()
                .filter(|a| a.name == given.name)
                .count()
                > 1
            {
                anyhow::bail!("--pod-address `{}` is given twice", given.name);
            }
        }
        flow.pods
            .iter()
            .map(|pod| {
                self.pod_addresses
                    .iter()
                    .find(|a| a.name == pod.name)
                    .map(|a| (a.input.clone(), a.output.clone()))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "pod `{}` of {file} has no --pod-address NAME=IN,OUT",
                            pod.name
                        )
                    })
            })
            .collect()
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let flow = Flow::load(&self.uses)?;
        let addresses = self.addresses(&flow)?;
        let ctrl = Link::open_control(
            &format!("tcp://{}:{}", self.host_ctrl, self.port_ctrl),
            "gateway control socket",
        )
        .await?;
        let listeners = listeners(&flow.with, &self.protocol, &self.port)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.uses.display()))?;
        let served = tokio_util::sync::CancellationToken::new();
        let (_, monitoring) = self
            .monitoring
            .start(
                flow.with.monitoring.unwrap_or(false),
                flow.with.port_monitoring,
                served.clone(),
            )
            .await?;
        let _served = served.drop_guard();
        let from_file = flow.with.traces_endpoint().map_err(anyhow::Error::msg)?;
        let (_, _flush) = self.tracing.start(from_file, "jina-wasm")?;
        let running = crate::flow::router::route(&flow, &addresses).await?;
        let host = self
            .host
            .clone()
            .or_else(|| flow.with.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let pods: Vec<_> = flow
            .pods
            .iter()
            .zip(&addresses)
            .map(|(p, (i, o))| json!({"pod": p.name, "in": i, "out": o}))
            .collect();
        let info = json!({"flow": self.uses.display().to_string(), "pods": pods});
        let gateway = match Gateways::start(
            &host,
            &listeners,
            &running.calls,
            flow.with.prefetch.unwrap_or(8),
            &info,
            &self.http,
            Some(crate::flow::update::Admin::elsewhere()),
        )
        .await
        {
            Ok(gateway) => gateway,
            Err(e) => {
                let _ = running.stop().await;
                return Err(e.context(format!(
                    "{}: the gateway did not start",
                    self.uses.display()
                )));
            }
        };
        let mut ready = info.clone();
        gateway.describe(&mut ready);
        ready["ctrl"] = ctrl.endpoint.clone().into();
        if let Some(url) = monitoring {
            ready["monitoring"] = url.into();
        }
        println!("{ready}");
        tokio::select! {
            () = super::pea::shutdown_signal() => {}
            () = serve_control(ctrl, info) => {}
        }
        tracing::info!("stopping the gateway");
        gateway.stop().await;
        running
            .stop()
            .await
            .with_context(|| format!("{}", self.uses.display()))?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Answers STATUS (healthy while serving: the Pods have their own probes)
/// until TERMINATE.
async fn serve_control(mut ctrl: Link, info: serde_json::Value) {
    let started = std::time::Instant::now();
    while let Some(frames) = ctrl.recv().await {
        let (prefix, request, command) =
            match control::read(frames, &[Command::Status, Command::Terminate]) {
                Incoming::Gone => continue,
                Incoming::Refused(refusal) => {
                    let _ = ctrl.send(refusal.answer("gateway")).await;
                    continue;
                }
                Incoming::Command {
                    prefix,
                    request,
                    command,
                } => (prefix, request, command),
            };
        let stop = command == Command::Terminate;
        let body = if stop {
            json!({"state": "terminating"})
        } else {
            let mut body = info.clone();
            body["pea"] = "gateway".into();
            body["state"] = "ready".into();
            body["healthy"] = true.into();
            body["uptime_ms"] = (started.elapsed().as_millis() as u64).into();
            body
        };
        let _ = ctrl
            .send(control::reply(prefix, &request, Status::Success, &body))
            .await;
        if stop {
            break;
        }
    }
    ctrl.close(Duration::from_millis(500)).await;
}
