//! A Flow resolved into the typed settings of its Pods, before any of them
//! starts: what `flow` runs, `flow check` checks and `export` renders.

use std::time::Duration;

use super::spec::{Flow, PodSpec};
use crate::executor::{ExecutorSpec, Sandbox};
use crate::pea::{DumpPolicy, OnError, PeaConfig};
use crate::pod::{Backend, Balance, PodConfig, Polling};
use crate::transport::SocketSpec;

/// How the Flow's Pods run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub backend: Backend,
    /// Extra `jina-wasm pea` arguments for child processes.
    pub child_args: Vec<String>,
    /// Pods with `host:`, on a daemon.
    pub remote: super::remote::RemoteOptions,
    /// The most Peas the Flow may start (`--max-peas`; `None`: the file's
    /// `with.max_peas`, else [`super::spec::DEFAULT_MAX_PEAS`]).
    pub max_peas: Option<usize>,
}

/// [`resolve`], then each `uses` (and `uses_before`/`uses_after`) checked to
/// be a file holding a WebAssembly component (its header only: compiling is
/// for start): what `flow` runs and what `flow check` checks, so a file that
/// `flow check` passes is one `flow` does not refuse for its settings.
///
/// # Errors
/// The first problem, naming the file, the line and the key.
pub fn check(flow: &Flow, options: &RunOptions) -> anyhow::Result<Vec<PodConfig>> {
    let configs = resolve(flow, options)?;
    for (i, spec) in flow.pods.iter().enumerate() {
        let files = [
            ("uses", Some(&spec.uses)),
            ("uses_before", spec.uses_before.as_ref()),
            ("uses_after", spec.uses_after.as_ref()),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                component_file(path).map_err(|e| flow.pod_error(i, key, &e))?;
            }
        }
    }
    Ok(configs)
}

/// Resolves the whole Flow into the typed settings of its Pods (file order),
/// before any I/O: what `flow` starts (after [`check`]) and `export` renders.
/// Checks, beyond what [`Flow::load`] read (each value is already of its kind
/// there, with its line): the Peas against `max_peas`; every value turned
/// into its setting. Logs a warning for each bare number of 1000 or more
/// given as seconds (Jina read milliseconds).
///
/// # Errors
/// The first problem, naming the file, the line and the key.
pub fn resolve(flow: &Flow, options: &RunOptions) -> anyhow::Result<Vec<PodConfig>> {
    flow.check_peas(options.max_peas)?;
    flow.timeout().map_err(|e| super::spec::FlowError {
        file: flow.file.display().to_string(),
        message: format!("with.timeout: {e}"),
    })?;
    if let Some(warning) = flow
        .with
        .timeout
        .as_deref()
        .and_then(|t| crate::units::millisecond_warning("with.timeout", t))
    {
        tracing::warn!("{}: {warning}", flow.file.display());
    }
    let mut configs = Vec::with_capacity(flow.pods.len());
    for (i, spec) in flow.pods.iter().enumerate() {
        for (key, value) in [
            ("timeout_ready", &spec.timeout_ready),
            ("timeout_request", &spec.timeout_request),
            ("timeout_init", &spec.timeout_init),
        ] {
            if let Some(warning) = value
                .as_deref()
                .and_then(|v| crate::units::millisecond_warning(key, v))
            {
                tracing::warn!("{}: pod `{}`: {warning}", flow.file.display(), spec.name);
            }
        }
        let config = pod_config(flow, i, options).map_err(|e| {
            let text = format!("{e:#}");
            match text.split_once(": ") {
                Some((key, reason)) if flow.line_of(Some(i), key).is_some() => {
                    anyhow::Error::from(flow.pod_error(i, key, reason))
                }
                _ => anyhow::Error::from(flow.pod_error(i, "", &text)),
            }
        })?;
        configs.push(config);
    }
    Ok(configs)
}

/// `path` exists and starts as a WebAssembly component does (the header
/// check of the executor loader, on the first 8 bytes).
pub(crate) fn component_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read as _;
    let mut header = Vec::with_capacity(8);
    match std::fs::File::open(path) {
        Ok(file) => {
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "{} is a directory, not a component",
                    path.display()
                ));
            }
            file.take(8)
                .read_to_end(&mut header)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    crate::executor::check_header(path, &header).map_err(|e| e.to_string())
}

/// The PodConfig of Flow Pod `i`: what `flow` starts, and what `export`
/// turns into containers (one source of truth for both).
///
/// # Errors
/// A field whose value is not valid (a duration, a size, a strategy).
pub fn pod_config(flow: &Flow, i: usize, options: &RunOptions) -> anyhow::Result<PodConfig> {
    let env: Vec<(String, String)> = flow
        .with
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pod_settings(&flow.pods[i], env, flow.polling[i].clone(), options)
}

/// The typed settings of one Pod described as a Flow file does: a Flow's
/// Pod, and a Pea or Pod a daemon starts for a tenant (its request, made a
/// [`PodSpec`]): one parser of durations, sizes, strategies and limits.
/// `env` comes before the Pod's own (a Flow's `with.env`); `polling` is read.
///
/// # Errors
/// A field whose value is not valid, named.
pub fn pod_settings(
    spec: &PodSpec,
    mut env: Vec<(String, String)>,
    polling: Polling,
    options: &RunOptions,
) -> anyhow::Result<PodConfig> {
    let duration =
        |field: &str, value: &Option<String>, default: Duration| -> anyhow::Result<Duration> {
            value.as_deref().map_or(Ok(default), |v| {
                crate::units::parse_limit_duration(v).map_err(|e| anyhow::anyhow!("{field}: {e}"))
            })
        };
    let size = |field: &str,
                value: &Option<serde_json::Value>,
                default: u64|
     -> anyhow::Result<u64> {
        match value {
            None => Ok(default),
            Some(serde_json::Value::Number(n)) => crate::units::parse_limit_size(&n.to_string())
                .map_err(|e| anyhow::anyhow!("{field}: {e}")),
            Some(serde_json::Value::String(s)) => {
                crate::units::parse_limit_size(s).map_err(|e| anyhow::anyhow!("{field}: {e}"))
            }
            Some(other) => anyhow::bail!("{field}: `{other}` is not a size"),
        }
    };
    use crate::executor::sandbox as limits;
    let memory_limit = size("memory_hwm", &spec.memory_hwm, limits::DEFAULT_MEMORY_LIMIT)?;
    crate::executor::check_memory_hwm(memory_limit)
        .map_err(|e| anyhow::anyhow!("memory_hwm {e}"))?;
    let quota = limits::Quota {
        bytes: size("disk_quota", &spec.disk_quota, limits::DEFAULT_DISK_QUOTA)?,
        files: spec.max_files.unwrap_or(limits::DEFAULT_MAX_FILES),
    };
    let max_result_bytes = size(
        "max_result_bytes",
        &spec.max_result_bytes,
        limits::DEFAULT_MAX_RESULT_BYTES,
    )?;
    let call_timeout = duration(
        "timeout_request",
        &spec.timeout_request,
        crate::executor::sandbox::DEFAULT_CALL_TIMEOUT,
    )?;
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let sandbox = Sandbox {
        workspace: spec.workspace.clone(),
        read_only: spec.read_only,
        env,
        memory_limit,
        call_timeout,
        init_timeout: duration(
            "timeout_init",
            &spec.timeout_init,
            limits::DEFAULT_INIT_TIMEOUT,
        )?,
        quota,
        max_result_docs: spec
            .max_result_docs
            .unwrap_or(limits::DEFAULT_MAX_RESULT_DOCS),
        max_result_bytes,
        log_rate: spec.log_rate.unwrap_or(limits::DEFAULT_LOG_RATE),
        deterministic: spec.deterministic,
        background_after: Some(crate::executor::DEMOTE_AFTER),
        ..Sandbox::default()
    };
    let on_error = match &spec.on_error_strategy {
        None => OnError::Ignore,
        Some(s) => <OnError as clap::ValueEnum>::from_str(s, true)
            .map_err(|e| anyhow::anyhow!("on_error_strategy: {e}"))?,
    };
    let dump = match &spec.dump_interval {
        None => Ok(DumpPolicy::DEFAULT),
        Some(serde_json::Value::Number(n)) => n.to_string().parse(),
        Some(serde_json::Value::String(s)) => s.parse(),
        Some(other) => Err(format!("`{other}` is not a duration, 0 or never")),
    }
    .map_err(|e| anyhow::anyhow!("dump_interval: {e}"))?;
    let pea = PeaConfig {
        name: spec.name.clone(),
        description: String::new(),
        uses: spec.uses.clone(),
        uses_sha256: None,
        executor: ExecutorSpec {
            name: spec.name.clone(),
            config: spec.with.clone().unwrap_or(serde_json::Value::Null),
            sandbox,
        },
        socket_in: SocketSpec::PULL_BIND,
        address_in: "tcp://127.0.0.1:0".into(),
        socket_out: SocketSpec::PUSH_BIND,
        address_out: "tcp://127.0.0.1:0".into(),
        address_ctrl: "tcp://127.0.0.1:0".into(),
        on_error,
        dump,
        load_interval: None,
        timeout_ctrl: Duration::from_secs(5),
        quiet_error: false,
        read_endpoints: crate::pea::default_read_endpoints(),
    };
    Ok(PodConfig {
        pea,
        shards: spec.shards.unwrap_or(1),
        replicas: spec.parallel.unwrap_or(1),
        polling,
        balance: Balance::Credit,
        uses_before: spec.uses_before.clone(),
        uses_after: spec.uses_after.clone(),
        backend: options.backend,
        timeout_ready: duration(
            "timeout_ready",
            &spec.timeout_ready,
            crate::pod::DEFAULT_TIMEOUT_READY,
        )?,
        timeout_parts: crate::pod::parts_timeout(call_timeout),
        child_args: options.child_args.clone(),
        external: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy, or the error: from reading the file (a value not of its
    /// kind, with its line) or from resolving it.
    fn dump_of(value: &str) -> Result<DumpPolicy, String> {
        let yaml = format!(
            "version: 1\nexecutors:\n  - name: idx\n    uses: idx.wasm\n    dump_interval: {value}\n"
        );
        let flow = Flow::parse(&yaml, std::path::Path::new("flow.yml"), |_| None)
            .map_err(|e| e.to_string())?;
        let options = RunOptions::default();
        pod_config(&flow, 0, &options)
            .map(|config| config.pea.dump)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn dump_interval_chooses_the_durability_mode() {
        assert_eq!(dump_of("0").unwrap(), DumpPolicy::Durable);
        assert_eq!(dump_of("\"0\"").unwrap(), DumpPolicy::Durable);
        assert_eq!(dump_of("never").unwrap(), DumpPolicy::Never);
        assert_eq!(
            dump_of("5m").unwrap(),
            DumpPolicy::Every(Duration::from_secs(300))
        );
        assert_eq!(
            dump_of("30").unwrap(),
            DumpPolicy::Every(Duration::from_secs(30))
        );
        let error = dump_of("soon").unwrap_err();
        assert!(
            error.starts_with("flow.yml: line 5 column 20: executors[0].dump_interval: `soon`"),
            "{error}"
        );
    }
}
