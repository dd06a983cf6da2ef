//! Flows on the daemon (`POST /flows`): a Flow YAML from a tenant's workspace,
//! checked and rewritten so that nothing in it reaches outside the tenant.
//!
//! The tenant's file is not run as it is: every `uses`/`uses_before`/
//! `uses_after` must name a file of the workspace (relative, no `..`, no link)
//! and becomes its absolute path there; a Pod's `workspace` becomes a folder
//! under `workspaces/<ws>/state/<flow name>/`; the gateway binds the daemon's
//! host on a port the OS picks; a Pod without `memory_hwm` gets the tenant's
//! `memory_per_pea`, and its other sandbox limits are bounded as a Pea's or
//! Pod's request's are ([`super::bounds`]). `${{ ENV.X }}` is refused (the daemon's environment is
//! not the tenant's), and so is `host:` (a remote Pod of a remote Flow). The
//! rewritten file is then checked as any Flow file is, and the Flow runs from it.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::objects::{CreateRequest, Plan};
use super::tenants::Tenant;
use super::workspace::{TenantDirs, safe_relative};

/// The largest Flow file a daemon reads (a Flow of hundreds of Pods is a
/// few tens of KiB).
const MAX_FLOW_FILE: u64 = 1 << 20;

/// Checks a `POST /flows` request, writes the rewritten Flow file to `out`,
/// and returns the plan (every Pea of every Pod, with its memory).
///
/// # Errors
/// The field or the Pod, and why, for a 400 answer.
pub fn prepare(
    request: &CreateRequest,
    dirs: &TenantDirs,
    tenant: &Tenant,
    host: &str,
    out: &Path,
) -> Result<Plan, String> {
    if let Some(field) = request.settings().first() {
        return Err(format!(
            "`{field}` is a Pod setting: a Flow's Pods take theirs from its YAML"
        ));
    }
    let ws = &request.workspace;
    let uses = request.uses();
    let source = dirs.file(ws, &uses)?;
    let name = request.object_name()?;
    let timeout_ready = request
        .pod
        .timeout_ready
        .as_deref()
        .map(crate::units::parse_limit_duration)
        .transpose()
        .map_err(|e| format!("timeout_ready: {e}"))?;
    let lease = request.lease()?;
    // Before any work per Pod (found by a hostile test: a 13 MB file of
    // 300,000 Pods kept the daemon busy for minutes): a Flow file is small,
    // and one with more Pods than the tenant may run Peas cannot start.
    let size = std::fs::metadata(&source).map_or(0, |m| m.len());
    if size > MAX_FLOW_FILE {
        return Err(format!(
            "`{}` is {size} bytes: a Flow file on a daemon is at most {MAX_FLOW_FILE} bytes",
            uses
        ));
    }
    let text =
        std::fs::read_to_string(&source).map_err(|e| format!("`{uses}`: cannot read: {e}"))?;
    if text.contains("${{") {
        return Err(format!(
            "`{}`: `${{{{ ENV.X }}}}` is not available on a daemon: write the values into the file",
            uses
        ));
    }
    let fail = |m: String| format!("`{uses}`: {m}");
    let mut flow: Value = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let state = Path::new("workspaces").join(ws).join("state").join(&name);

    // The gateway: the daemon's host, a port the OS picks.
    let root = flow
        .as_mapping_mut()
        .ok_or_else(|| fail("a Flow file is a map".into()))?;
    let with = root
        .entry("with".into())
        .or_insert_with(|| Value::Mapping(Default::default()));
    let with = with
        .as_mapping_mut()
        .ok_or_else(|| fail("`with` is a map".into()))?;
    for key in ["port", "port_expose", "host"] {
        with.remove(key);
    }
    with.insert("host".into(), host.into());
    with.insert("port".into(), 0.into());

    let key = if root.contains_key("executors") {
        "executors"
    } else {
        "pods"
    };
    let pods = root
        .get_mut(key)
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| fail("`pods` is a list of Pods".into()))?;
    if pods.len() > tenant.quota.max_peas {
        return Err(fail(format!(
            "{} Pods, more than tenant `{}` may run at once (max_peas {})",
            pods.len(),
            tenant.name,
            tenant.quota.max_peas
        )));
    }
    let (mut peas, mut memory, mut largest) = (0usize, 0u64, 0u64);
    for (i, pod) in pods.iter_mut().enumerate() {
        let pod = pod
            .as_mapping_mut()
            .ok_or_else(|| fail(format!("pods[{i}] is not a map")))?;
        let label = format!(
            "pods[{i}] (`{}`)",
            pod.get("name").and_then(Value::as_str).unwrap_or("?")
        );
        if pod.contains_key("host") {
            return Err(fail(format!(
                "{label}: `host` (a remote Pod) is not available in a Flow run by a daemon"
            )));
        }
        for field in ["uses", "uses_before", "uses_after"] {
            let Some(value) = pod.get(field) else {
                continue;
            };
            let relative = value
                .as_str()
                .ok_or_else(|| fail(format!("{label}: `{field}` is not a file name")))?;
            let path = dirs
                .file(ws, relative)
                .map_err(|e| fail(format!("{label}: `{field}`: {e}")))?;
            pod.insert(field.into(), path.display().to_string().into());
        }
        if let Some(value) = pod.get("workspace") {
            let relative = value
                .as_str()
                .ok_or_else(|| fail(format!("{label}: `workspace` is not a folder name")))?;
            let clean =
                safe_relative(relative).map_err(|e| fail(format!("{label}: `workspace`: {e}")))?;
            let relative = Path::new("workspaces")
                .join(ws)
                .join("state")
                .join(&name)
                .join(&clean);
            let dir: PathBuf = dirs
                .beneath(&relative)
                .map_err(|e| fail(format!("{label}: `workspace`: {e}")))?;
            pod.insert("workspace".into(), dir.display().to_string().into());
        }
        let per_pea = match pod.get("memory_hwm") {
            None => {
                pod.insert(
                    "memory_hwm".into(),
                    format!("{}B", tenant.quota.memory_per_pea).into(),
                );
                tenant.quota.memory_per_pea
            }
            Some(Value::Number(n)) => crate::executor::memory_limit(&n.to_string())
                .map_err(|e| fail(format!("{label}: memory_hwm: {e}")))?,
            Some(Value::String(s)) => crate::executor::memory_limit(s)
                .map_err(|e| fail(format!("{label}: memory_hwm: {e}")))?,
            Some(_) => return Err(fail(format!("{label}: memory_hwm is not a size"))),
        };
        // The sandbox limits, bounded as for a Pea or Pod request; a Pod
        // the spec cannot read is left to Flow::parse below, which names why.
        if let Ok(spec) =
            serde_yaml::from_value::<crate::flow::spec::PodSpec>(Value::Mapping(pod.clone()))
        {
            let quota = &tenant.quota;
            let (disk, files) = super::bounds::disk_and_files(&spec, quota)
                .map_err(|e| fail(format!("{label}: {e}")))?;
            let over = super::bounds::over_bound(&spec, (disk, files), quota)
                .map_err(|e| fail(format!("{label}: {e}")))?;
            if let Some(why) = over {
                return Err(fail(format!(
                    "{label}: quota: tenant `{}`: {why}",
                    tenant.name
                )));
            }
            pod.insert("disk_quota".into(), format!("{disk}B").into());
            pod.insert("max_files".into(), files.into());
        }
        let count = |field: &str| pod.get(field).and_then(Value::as_u64).unwrap_or(1) as usize;
        let sides = usize::from(pod.contains_key("uses_before"))
            + usize::from(pod.contains_key("uses_after"));
        let n = count("shards")
            .max(1)
            .saturating_mul(count("parallel").max(count("replicas")).max(1))
            .saturating_add(sides);
        // Saturating: the counts are the tenant's (`shards: 1e18`), checked
        // against the quota (and Flow::parse's caps) only after this.
        peas = peas.saturating_add(n);
        memory = memory.saturating_add((n as u64).saturating_mul(per_pea));
        largest = largest.max(per_pea);
    }
    let rewritten = serde_yaml::to_string(&flow).map_err(|e| fail(e.to_string()))?;
    // Everything else is checked as for any Flow file, without the environment.
    crate::flow::Flow::parse(&rewritten, out, |_| None).map_err(|e| fail(e.message))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // Checked beneath the tenant's root now, as the Flow is about to get it.
    dirs.beneath(&state).map_err(|e| format!("state: {e}"))?;
    std::fs::write(out, rewritten).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(Plan {
        name,
        peas,
        memory_per_pea: largest,
        memory,
        // Not the Flow's own: its Pods' limits are in its file.
        disk_quota: 0,
        max_files: 0,
        lease,
        timeout_ready: timeout_ready.unwrap_or(crate::pod::DEFAULT_TIMEOUT_READY),
    })
}
