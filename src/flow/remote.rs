//! A Flow's remote Pods: a Pod with `host: ADDRESS:PORT` runs on that
//! `jina-wasm daemon` (docs/daemon.md).
//!
//! The Flow uploads the Pod's `.wasm` files into a daemon workspace (only those
//! the workspace does not already hold with the same sha256), asks the daemon
//! to start the Pod with a lease, and connects its router to the addresses the
//! daemon answers (bound on the daemon's host, so reachable from here). While
//! the Pod runs, the Flow renews the lease (every third of it) and prints the
//! remote log on its own stderr (unless `--quiet-remote-logs`); on teardown it
//! deletes the Pod. If the Flow's process dies, renewals stop and the daemon
//! deletes the Pod when the lease runs out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::spec::{Flow, PodSpec};
use crate::client_daemon::DaemonClient;
use crate::pea::Addresses;
use crate::pod::{MemberInfo, PodHandle};

/// The environment variable a Flow reads a daemon's bearer token from when the
/// file has no `with.daemon_token`.
pub const TOKEN_ENV: &str = "JINA_WASM_DAEMON_TOKEN";

/// How a Flow runs its remote Pods.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Don't print the remote Pods' logs.
    pub quiet_logs: bool,
    /// The daemon workspace the files and state go to [default: the file's
    /// `with.workspace_id`, else the Flow file's stem].
    pub workspace_id: Option<String>,
    /// How long a remote Pod outlives the Flow's last renewal.
    pub lease: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            quiet_logs: false,
            workspace_id: None,
            lease: Duration::from_secs(10),
        }
    }
}

/// Starts Flow Pod `i` on its daemon.
///
/// # Errors
/// No token, a file that cannot be uploaded, or the daemon's refusal (quota,
/// a Pod that does not start), with the daemon's message.
pub async fn start(flow: &Flow, i: usize, options: &RemoteOptions) -> anyhow::Result<PodHandle> {
    let spec = &flow.pods[i];
    let host = spec.host.as_deref().expect("a remote Pod has a host");
    let token = flow
        .with
        .daemon_token
        .clone()
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .with_context(|| format!("host `{host}` needs the daemon's bearer token: set with.daemon_token or {TOKEN_ENV}"))?;
    let client = DaemonClient::new(host, &token);
    let workspace = options
        .workspace_id
        .clone()
        .or_else(|| flow.with.workspace_id.clone())
        .unwrap_or_else(|| default_workspace(&flow.file));

    // Upload what the daemon does not already have.
    let mut files: Vec<(String, &Path)> = Vec::new();
    for path in [
        Some(&spec.uses),
        spec.uses_before.as_ref(),
        spec.uses_after.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        files.push((file_name(path)?, path.as_path()));
    }
    let held = match client
        .json(
            Method::GET,
            &format!("/workspaces/{workspace}"),
            &Value::Null,
        )
        .await
    {
        Ok(answer) => {
            serde_json::from_value::<Workspace>(answer)
                .with_context(|| {
                    format!(
                        "daemon {}: GET /workspaces/{workspace}: not a workspace",
                        client.address
                    )
                })?
                .files
        }
        Err(e)
            if e.downcast_ref::<crate::client_daemon::Refused>()
                .is_some_and(|r| r.status == hyper::StatusCode::NOT_FOUND) =>
        {
            BTreeMap::new()
        }
        Err(e) => return Err(e),
    };
    let mut missing = Vec::new();
    for (name, path) in &files {
        let sha = crate::client_daemon::sha256_of(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if held.get(name).map(|f| f.sha256.as_str()) != Some(sha.as_str()) {
            missing.push((name.clone(), *path));
        }
    }
    if !missing.is_empty() {
        client.upload(&workspace, &missing).await?;
    }

    let request = pod_request(flow, i, &workspace, options.lease)?;
    let answer = client.json(Method::POST, "/pods", &request).await?;
    let started: Started = serde_json::from_value(answer).with_context(|| {
        format!(
            "daemon {}: POST /pods: the answer is not a started Pod",
            client.address
        )
    })?;
    let id = started.id;
    // A daemon bound on every interface (`--host 0.0.0.0`) answers 0.0.0.0:
    // the Flow reaches it at the address it reached the daemon at.
    let daemon_host = client
        .address
        .rsplit_once(':')
        .map_or(client.address.as_str(), |(h, _)| h);
    let address = |a: &str| a.replace("tcp://0.0.0.0:", &format!("tcp://{daemon_host}:"));
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let (input, output) = (address(&started.input), address(&started.output));
    let ctrl = format!("http://{}/pods/{id}", client.address);
    let addresses = Addresses {
        port_in: port(&input),
        port_out: port(&output),
        input,
        output,
        ctrl: ctrl.clone(),
        port_ctrl: 0,
    };
    let members: Vec<MemberInfo> = started
        .peas
        .into_iter()
        .flatten()
        .map(|p| MemberInfo {
            pea: p.pea,
            role: p.role,
            ctrl: ctrl.clone(),
        })
        .collect();
    tracing::info!(pod = %spec.name, daemon = %client.address, %id, input = %addresses.input, output = %addresses.output, "remote pod ready");

    let stop = CancellationToken::new();
    let logs = (!options.quiet_logs).then(|| {
        let (client, path, tag) = (
            client.clone(),
            format!("/pods/{id}/logs/stream"),
            format!("[{} {}]", client.address, spec.name),
        );
        tokio::spawn(async move {
            let _ = client
                .follow(&path, |line| {
                    eprintln!("{tag} {}", crate::wire::printable(line))
                })
                .await;
        })
    });
    let task = tokio::spawn(supervise(
        client,
        id,
        spec.name.clone(),
        options.lease,
        stop.clone(),
        logs,
    ));
    // The component is on the daemon: named by its path here, not hashed.
    let current = crate::pod::update::component_of(
        std::path::Path::new(""),
        spec.with.as_ref().unwrap_or(&serde_json::Value::Null),
    )
    .await;
    current.write().expect("current").uses = spec.uses.display().to_string();
    let updater = crate::pod::update::Updater::unsupported(
        current,
        format!(
            "pod `{}` runs on the daemon at {} (`host:`): rolling updates of remote Pods are not supported; \
             restart the Flow to change it",
            spec.name,
            spec.host.as_deref().unwrap_or("?")
        ),
    );
    Ok(PodHandle::from_task(
        spec.name.clone(),
        addresses,
        members,
        stop,
        task,
        updater,
    ))
}

/// Renews the lease until `stop`, then deletes the remote Pod.
async fn supervise(
    client: DaemonClient,
    id: String,
    name: String,
    lease: Duration,
    stop: CancellationToken,
    logs: Option<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let mut renew = tokio::time::interval((lease / 3).max(Duration::from_millis(100)));
    renew.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = renew.tick() => {
                // A daemon that does not answer must not hold up the next renewal or the teardown.
                let path = format!("/pods/{id}/lease");
                match tokio::time::timeout(lease / 3, client.json(Method::PUT, &path, &Value::Null)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(pod = %name, daemon = %client.address, "cannot renew the remote Pod's lease: {e:#}"),
                    Err(_) => tracing::warn!(pod = %name, daemon = %client.address, "the daemon did not answer a lease renewal within {:?}", lease / 3),
                }
            }
        }
    }
    // Deleting waits for the Pod to stop (TERMINATE, then SIGKILL within 15 s).
    let deleted = match tokio::time::timeout(
        Duration::from_secs(30),
        client.json(Method::DELETE, &format!("/pods/{id}"), &Value::Null),
    )
    .await
    {
        Ok(deleted) => deleted,
        Err(_) => Err(anyhow::anyhow!(
            "the daemon did not answer DELETE within 30s; the lease will end the Pod"
        )),
    };
    if let Some(logs) = logs {
        // The stream ends with the Pod; give it a moment to print the last lines.
        let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
    }
    deleted
        .map(|_| ())
        .with_context(|| format!("remote pod `{name}` ({id} on {})", client.address))
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// The Flow file's stem, as a workspace id.
fn default_workspace(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if crate::client_daemon::is_safe_id(&id) {
        id
    } else {
        "flow".into()
    }
}

/// The body of `POST /pods` (docs/daemon.md) that starts Flow Pod `i`: its
/// settings as the file gives them (the daemon reads them into the same
/// [`PodSpec`]; what is not set is left out, so the daemon applies its
/// defaults), its files by name in the daemon workspace `workspace`, the
/// Flow's `env` under its own, a named state (the Pod's name, so a later run
/// finds it again) when it has a workspace, and the lease.
///
/// # Errors
/// A file path without a file name.
pub fn pod_request(
    flow: &Flow,
    i: usize,
    workspace: &str,
    lease: Duration,
) -> anyhow::Result<Value> {
    let spec = &flow.pods[i];
    let name = |path: &Option<PathBuf>| {
        path.as_deref()
            .map(|p| file_name(p).map(PathBuf::from))
            .transpose()
    };
    let mut env = flow.with.env.clone();
    env.extend(spec.env.clone());
    let pod = PodSpec {
        uses: file_name(&spec.uses)?.into(),
        uses_before: name(&spec.uses_before)?,
        uses_after: name(&spec.uses_after)?,
        env,
        needs: None,
        host: None,
        workspace: None,
        ..spec.clone()
    };
    let request = PodRequest {
        workspace,
        state: spec.workspace.as_ref().map(|_| spec.name.as_str()),
        lease: format!("{}ms", lease.as_millis()),
        pod: &pod,
    };
    Ok(serde_json::to_value(&request)?)
}

/// The daemon's own keys of a request, and the Pod's.
#[derive(Serialize)]
struct PodRequest<'a> {
    workspace: &'a str,
    /// The named state the Pod keeps in the workspace (docs/daemon.md), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    /// `{n}ms`.
    lease: String,
    #[serde(flatten)]
    pod: &'a PodSpec,
}

/// What the daemon answers `POST /pods` (the parts a Flow uses).
#[derive(Deserialize)]
struct Started {
    id: String,
    /// The Pod's input address (`tcp://host:port`).
    #[serde(rename = "in")]
    input: String,
    /// The Pod's output address.
    #[serde(rename = "out")]
    output: String,
    /// `null` while the daemon does not know them.
    #[serde(default)]
    peas: Option<Vec<StartedPea>>,
}

/// One Pea of a started Pod.
#[derive(Deserialize)]
struct StartedPea {
    pea: String,
    role: String,
}

/// What the daemon answers `GET /workspaces/{id}` (the parts a Flow uses).
#[derive(Deserialize)]
struct Workspace {
    /// File name to its digest and size.
    #[serde(default)]
    files: BTreeMap<String, crate::client_daemon::FileEntry>,
}
