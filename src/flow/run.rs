//! Running a Flow: its Pods, started in dependency order from their resolved
//! settings ([`super::resolve`]), and the router ([`super::router`]) that
//! carries each request along the `needs` graph.
//!
//! Every Pod binds its input (PULL) and output (PUSH) on loopback (a remote
//! Pod on its daemon's address, [`super::remote`]; a Pod of this process's
//! threads on `inproc://`); the router, in the Flow's process, connects to both.

use std::sync::Arc;

use super::resolve::RunOptions;
use super::router::route;
use super::spec::Flow;
use crate::executor::Runtime;
use crate::pod::{PodConfig, PodHandle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::router::Call;

/// The running Pods and the router between them.
pub struct Running {
    pub pods: Vec<(String, PodHandle)>,
    pub calls: mpsc::Sender<Call>,
    pub(super) stop: CancellationToken,
    pub(super) router: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the router, then every Pod, last started first.
    ///
    /// # Errors
    /// A Pod that did not stop cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let _ = self.router.await;
        stop_pods(self.pods).await
    }
}

async fn stop_pods(pods: Vec<(String, PodHandle)>) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (name, pod) in pods.into_iter().rev() {
        pod.terminate();
        if let Err(e) = pod.wait().await {
            failures.push(format!("pod `{name}`: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(failures.join("; ")))
    }
}

/// Starts the Pods in dependency order and the router. `configs` are the
/// Pods' settings from [`super::resolve::check`] (file order): every one is
/// known before the first Pod starts. On any failure every Pod already started is stopped,
/// and the error names the Pod.
///
/// # Errors
/// A Pod that does not start.
///
/// # Panics
/// When `configs` does not hold one config per Pod (a caller's bug).
pub async fn start(
    runtime: Arc<Runtime>,
    flow: &Flow,
    configs: Vec<PodConfig>,
    options: &RunOptions,
) -> anyhow::Result<Running> {
    assert_eq!(configs.len(), flow.pods.len(), "one config per Pod");
    let mut configs: Vec<Option<PodConfig>> = configs.into_iter().map(Some).collect();
    let mut started: Vec<(String, PodHandle)> = Vec::new();
    for &i in &flow.order {
        let spec = &flow.pods[i];
        let mut config = configs[i]
            .take()
            .expect("one config per Pod, each started once");
        // A Pod whose Peas are threads of this process is reached by the
        // router in-process, not over loopback TCP (the ready line shows its
        // `inproc://` input and output; its control socket stays on TCP).
        if config.backend == crate::pod::Backend::Thread {
            let name = &spec.name;
            config.pea.address_in = crate::transport::inproc::address(&format!("{name}-in"));
            config.pea.address_out = crate::transport::inproc::address(&format!("{name}-out"));
        }
        let result = if spec.host.is_some() {
            super::remote::start(flow, i, &options.remote).await
        } else {
            crate::pod::start(runtime.clone(), config).await
        };
        match result {
            Ok(pod) => started.push((spec.name.clone(), pod)),
            Err(e) => {
                let _ = stop_pods(started).await;
                return Err(e.context(format!(
                    "{}: pod `{}` did not start",
                    flow.file.display(),
                    spec.name
                )));
            }
        }
    }
    // Back in file order, for the router's indices.
    started.sort_by_key(|(name, _)| flow.pods.iter().position(|p| &p.name == name));
    let addresses: Vec<(String, String)> = started
        .iter()
        .map(|(_, pod)| (pod.addresses.input.clone(), pod.addresses.output.clone()))
        .collect();
    match route(flow, &addresses).await {
        Ok(running) => Ok(Running {
            pods: started,
            ..running
        }),
        Err(e) => {
            let _ = stop_pods(started).await;
            Err(e)
        }
    }
}
