//! A Pod's Peas as child processes (`--runtime-backend process`): the argv
//! that starts one, the supervisor that restarts one that dies (with a
//! backoff), and the stop that asks first and kills after the grace.

use super::*;
use crate::child::{Ended, StderrCopy};

pub(super) enum Member {
    Thread(PeaHandle),
    /// A child process, watched by its supervisor task, which restarts it
    /// when it dies and stops it when `stop` cancels its token: when
    /// [`Member::stop`] drops it, or when the Member is dropped anywhere else
    /// (an updater that panicked), so no Pea outlives its Pod.
    Process {
        stop: tokio_util::sync::DropGuard,
        supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Member {
    /// Stops the Pea as TERMINATE does and waits for it (a child process is
    /// killed if it has not exited within `grace`).
    pub(super) async fn stop(self, _grace: Duration) -> anyhow::Result<()> {
        match self {
            Member::Thread(pea) => {
                pea.terminate();
                pea.wait().await
            }
            Member::Process { stop, supervisor } => {
                drop(stop);
                supervisor.await.context("a Pea's supervisor panicked")?
            }
        }
    }
}

/// The first wait before restarting a Pea whose process died; it doubles
/// with every death that follows within [`STABLE_AFTER`], up to
/// [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(250);

pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A process that ran this long before dying starts the backoff over.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// What a supervisor needs to restart its child.
pub(super) struct Supervision {
    pub(super) config: PeaConfig,
    pub(super) extra: Vec<String>,
    pub(super) roster: Roster,
    pub(super) index: usize,
    pub(super) grace: Duration,
    /// How long a restarted child may take to print its ready line.
    pub(super) timeout_ready: Duration,
    pub(super) stop: CancellationToken,
}

/// A Pea's process, and the copy of its stderr into the Pod's.
pub(super) struct Process {
    child: tokio::process::Child,
    stderr: Option<StderrCopy>,
}

impl Process {
    /// How long, once the process is gone, its last lines may take to be
    /// copied (whatever it started that shares its stderr can hold it open).
    const DRAIN: Duration = Duration::from_secs(2);

    /// Waits for the copy of its stderr to end (its last lines copied); what
    /// it said last. (On the field, so that it serves after `child` was
    /// moved out to be stopped.)
    async fn drain(stderr: &mut Option<StderrCopy>) -> Option<String> {
        match stderr.take() {
            Some(copy) => copy.finish(Self::DRAIN).await,
            None => None,
        }
    }
}

/// Watches one child Pea: reaps it when it dies and starts it again (same
/// arguments, so a shard on its own workspace) after a capped exponential
/// backoff; stops it gracefully when `stop` is cancelled. Meanwhile the Head
/// sees the member gone and requests that need it fail fast (`unavailable`).
pub(super) async fn supervise(s: Supervision, mut process: Process) -> anyhow::Result<()> {
    let name = s.config.name.clone();
    let mut failures = 0u32;
    let mut started = tokio::time::Instant::now();
    loop {
        let status = tokio::select! {
            status = process.child.wait() => status,
            () = s.stop.cancelled() => return stop_child(&name, &s, process).await,
        };
        Process::drain(&mut process.stderr).await;
        // Reaped: the process is gone. Start it again, after the backoff.
        s.roster.write().expect("roster")[s.index].running = false;
        let status =
            status.map_or_else(|e| format!("an unknown status ({e})"), |st| st.to_string());
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        loop {
            failures += 1;
            let wait = RESTART_BACKOFF_FIRST
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(RESTART_BACKOFF_MAX);
            tracing::error!(pea = %name, "its process exited with {status}; restarting it in {wait:?} (restart backoff)");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = s.stop.cancelled() => return Err(anyhow::anyhow!("pea `{name}` had exited with {status} and was not running when the Pod stopped")),
            }
            let spawned = tokio::select! {
                spawned = tokio::time::timeout(s.timeout_ready, spawn_child(&s.config, &s.extra)) => spawned,
                () = s.stop.cancelled() => return Err(anyhow::anyhow!("pea `{name}` was restarting when the Pod stopped")),
            };
            match spawned {
                Ok(Ok((new, ctrl))) => {
                    process = new;
                    started = tokio::time::Instant::now();
                    let mut roster = s.roster.write().expect("roster");
                    let slot = &mut roster[s.index];
                    slot.info.ctrl = ctrl;
                    slot.restarts += 1;
                    slot.running = true;
                    tracing::info!(pea = %name, restarts = slot.restarts, ctrl = %slot.info.ctrl, "restarted");
                    break;
                }
                Ok(Err(e)) => tracing::error!(pea = %name, "restart failed: {e:#}"),
                Err(_) => {
                    tracing::error!(pea = %name, "restart failed: not ready within {:?}", s.timeout_ready)
                }
            }
        }
    }
}

/// Stops a child as TERMINATE does; kills it if it has not exited within
/// three times `grace`.
pub(super) async fn stop_child(
    name: &str,
    s: &Supervision,
    mut process: Process,
) -> anyhow::Result<()> {
    let ctrl = s.roster.read().expect("roster")[s.index].info.ctrl.clone();
    let ended = crate::child::stop(process.child, &ctrl, s.grace).await;
    // Its last lines (how it stopped) in the Pod's log before the Pod goes on.
    Process::drain(&mut process.stderr).await;
    match ended {
        Ended::Exited(status) if status.success() => Ok(()),
        Ended::Exited(status) => Err(anyhow::anyhow!("pea `{name}` exited with {status}")),
        Ended::Killed => Err(anyhow::anyhow!(
            "pea `{name}` did not stop within {:?} and was killed",
            s.grace * 3
        )),
    }
}

/// Starts a member as `jina-wasm pea` in a child process and reads its ready
/// line; returns the child and its control address.
pub(super) async fn spawn_child(
    config: &PeaConfig,
    extra: &[String],
) -> anyhow::Result<(Process, String)> {
    let exe = std::env::current_exe().context("cannot find the jina-wasm executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("pea")
        .args(pea_args(config))
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Copied into the Pod's, and read when the Pea does not start.
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    crate::child::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("pea `{}`: cannot start a process", config.name))?;
    let stderr = StderrCopy::start(&mut child);
    let mut process = Process { child, stderr };
    let Some(ready) = crate::child::ready_line(&mut process.child).await? else {
        let status = process.child.wait().await?;
        let name = &config.name;
        match Process::drain(&mut process.stderr).await {
            Some(said) => anyhow::bail!(
                "pea `{name}`'s process exited with {status} before it was ready: {said}"
            ),
            None => anyhow::bail!(
                "pea `{name}`'s process exited with {status} before it was ready, saying nothing"
            ),
        }
    };
    Ok((process, crate::child::ctrl_of(&ready)))
}

/// The `jina-wasm pea` arguments that reproduce `config` (its control socket
/// excepted: a child's is picked by the OS, an exported one is fixed).
pub fn pea_args(c: &PeaConfig) -> Vec<String> {
    let (host_in, port_in) = host_port(&c.address_in);
    let (host_out, port_out) = host_port(&c.address_out);
    let secs = |d: Option<Duration>| format!("{}ms", d.map_or(0, |d| d.as_millis()));
    let sandbox = &c.executor.sandbox;
    let mut args: Vec<String> = vec![
        "--uses".into(),
        c.uses.display().to_string(),
        "--name".into(),
        c.name.clone(),
        "--socket-in".into(),
        c.socket_in.to_string(),
        "--host-in".into(),
        host_in,
        "--port-in".into(),
        port_in,
        "--socket-out".into(),
        c.socket_out.to_string(),
        "--host-out".into(),
        host_out,
        "--port-out".into(),
        port_out,
        "--on-error-strategy".into(),
        clap::ValueEnum::to_possible_value(&c.on_error)
            .expect("no skipped variants")
            .get_name()
            .to_string(),
        "--dump-interval".into(),
        c.dump.to_string(),
        "--load-interval".into(),
        secs(c.load_interval),
        "--timeout-ctrl".into(),
        secs(Some(c.timeout_ctrl)),
        "--memory-hwm".into(),
        format!("{}B", sandbox.memory_limit),
        "--timeout-request".into(),
        secs(Some(sandbox.call_timeout)),
        "--timeout-init".into(),
        secs(Some(sandbox.init_timeout)),
        "--disk-quota".into(),
        format!("{}B", sandbox.quota.bytes),
        "--max-files".into(),
        sandbox.quota.files.to_string(),
        "--max-result-docs".into(),
        sandbox.max_result_docs.to_string(),
        "--max-result-bytes".into(),
        format!("{}B", sandbox.max_result_bytes),
        "--log-rate".into(),
        sandbox.log_rate.to_string(),
        "--background-after".into(),
        secs(sandbox.background_after),
    ];
    if !c.executor.config.is_null() {
        args.extend(["--uses-with".into(), c.executor.config.to_string()]);
    }
    if sandbox.deterministic {
        args.push("--deterministic".into());
    }
    if let Some(tenant) = &sandbox.tenant {
        args.extend(["--tenant".into(), tenant.name.clone()]);
        if tenant.memory != u64::MAX {
            args.extend(["--tenant-memory".into(), format!("{}B", tenant.memory)]);
        }
    }
    if let Some(dir) = &sandbox.workspace {
        args.extend(["--workspace".into(), dir.display().to_string()]);
    }
    if sandbox.read_only {
        args.push("--read-only".into());
    }
    if let Some(sha256) = &c.uses_sha256 {
        args.extend(["--uses-sha256".into(), sha256.clone()]);
    }
    if c.quiet_error {
        args.push("--quiet-error".into());
    }
    if c.read_endpoints != crate::pea::default_read_endpoints() {
        args.extend(["--read-endpoints".into(), c.read_endpoints.join(",")]);
    }
    for v in &sandbox.volumes {
        args.extend([
            "--volumes".into(),
            format!(
                "{}:{}{}",
                v.host.display(),
                v.guest,
                if v.read_only { ":ro" } else { "" }
            ),
        ]);
    }
    for (k, v) in &sandbox.env {
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    args
}

/// The `jina-wasm pod` arguments that reproduce `config`: its Peas' as
/// [`pea_args`] renders them, then the Pod's own (shards, replicas, polling,
/// the head's and tail's executors, how long it may take to be ready).
pub fn pod_args(config: &PodConfig) -> Vec<String> {
    let mut args = pea_args(&config.pea);
    args.extend([
        "--shards".into(),
        config.shards.to_string(),
        "--parallel".into(),
        config.replicas.to_string(),
        "--polling".into(),
        config.polling.to_string(),
        "--timeout-ready".into(),
        format!("{}ms", config.timeout_ready.as_millis()),
    ]);
    for (flag, file) in [
        ("--uses-before", &config.uses_before),
        ("--uses-after", &config.uses_after),
    ] {
        if let Some(file) = file {
            args.extend([flag.to_string(), file.display().to_string()]);
        }
    }
    args
}

pub(super) fn host_port(address: &str) -> (String, String) {
    let rest = address.trim_start_matches("tcp://");
    match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (rest.to_string(), "0".into()),
    }
}
