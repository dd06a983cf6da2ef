//! Flow YAML: parsing, environment substitution, and the `needs` graph.
//! docs/flow-yaml.md documents every field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::pod::Polling;

mod checked;
mod locate;
mod pod;
#[cfg(test)]
mod tests;

use locate::{Step, line_of, locate, yaml_error};
#[cfg(test)]
pub(crate) use pod::every_setting;
pub use pod::{FLOW_ONLY, Needs, POD_ONLY, PodSpec, PollingSpec};

/// The name `needs` uses for the gateway (the Flow's entry and exit).
pub const GATEWAY: &str = "gateway";

/// A whole Flow file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// The file format's version: `1` (Jina's `jtype: Flow` files also carry one).
    #[serde(default)]
    pub version: Option<Value>,
    /// Jina writes `jtype: Flow`; accepted and ignored.
    #[serde(default)]
    pub jtype: Option<String>,
    /// Flow-level settings.
    #[serde(default)]
    pub with: FlowWith,
    /// The Pods, in order (`executors:` is Jina 2's name).
    #[serde(default, alias = "executors")]
    pub pods: Vec<PodSpec>,
}

/// Flow-level `with:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowWith {
    /// The gateway's port, or one per protocol (`[8080, 8081]`; 0 or absent:
    /// the OS picks; `--port` overrides).
    pub port: Option<super::front::OneOrMany<u16>>,
    /// Jina's name for a single port.
    pub port_expose: Option<u16>,
    /// `http` (the default), `grpc`, or a list (`[http, grpc]`): docs/grpc.md.
    pub protocol: Option<super::front::OneOrMany<super::front::Protocol>>,
    /// The interface the gateway binds (default 127.0.0.1).
    pub host: Option<String>,
    /// Requests the gateway keeps in flight at most.
    pub prefetch: Option<usize>,
    /// How long a request may take end to end (default 60s; `-1`: no limit).
    #[serde(default, deserialize_with = "checked::limit_duration")]
    pub timeout: Option<String>,
    /// Defaults for every Pod's `env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The bearer token for the daemons of remote Pods (`host:`); else
    /// `$JINA_WASM_DAEMON_TOKEN`. Write `${{ ENV.X }}` rather than the token.
    #[serde(default)]
    pub daemon_token: Option<String>,
    /// The daemon workspace remote Pods' files and state go to (default: this
    /// file's stem); the same id in a later run finds the same files and state.
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// The most Peas this Flow may start (default [`DEFAULT_MAX_PEAS`];
    /// `--max-peas` overrides).
    #[serde(default)]
    pub max_peas: Option<usize>,
    /// Prometheus metrics on the gateway's `GET /metrics` (Jina 3's
    /// `monitoring`; `--monitoring` too): docs/operations.md.
    #[serde(default)]
    pub monitoring: Option<bool>,
    /// Serve the metrics on this port as well (implies `monitoring`;
    /// `--port-monitoring` overrides).
    #[serde(default)]
    pub port_monitoring: Option<u16>,
    /// OpenTelemetry traces, one per request (Jina 3's `tracing`;
    /// docs/operations.md, "Traces"): needs `traces_endpoint` (or Jina's
    /// `traces_exporter_host`/`traces_exporter_port`). `false` turns them
    /// off even with an endpoint.
    #[serde(default)]
    pub tracing: Option<bool>,
    /// The OTLP/HTTP collector the spans go to (`http://localhost:4318`, or a
    /// URL with its path); implies `tracing`. `--traces-endpoint` overrides.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Jina's name for the collector's host (with `traces_exporter_port`:
    /// `http://HOST:PORT`). The spans go over OTLP/HTTP: the collector's
    /// port for that (4318), not its gRPC one (4317).
    #[serde(default)]
    pub traces_exporter_host: Option<String>,
    /// Jina's name for the collector's port (default 4318).
    #[serde(default)]
    pub traces_exporter_port: Option<u16>,
}

impl FlowWith {
    /// Where this Flow's spans go, if anywhere: `traces_endpoint`, else
    /// Jina's host and port; `None` when `tracing: false` or nothing is set.
    ///
    /// # Errors
    /// `tracing: true` with no collector, or an endpoint that is not a URL.
    pub fn traces_endpoint(&self) -> Result<Option<String>, String> {
        let endpoint = match (&self.traces_endpoint, &self.traces_exporter_host) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(host)) => {
                let host = host.trim_start_matches("http://");
                let port = self.traces_exporter_port.unwrap_or(4318);
                Some(format!("http://{host}:{port}"))
            }
            (None, None) => None,
        };
        if let Some(url) = &endpoint {
            crate::trace::traces_url(url)?;
        }
        match (self.tracing, endpoint) {
            (Some(false), _) => Ok(None),
            (Some(true), None) => Err(
                "`tracing: true` needs `traces_endpoint` (an OTLP/HTTP collector, such as http://localhost:4318)".into(),
            ),
            (_, endpoint) => Ok(endpoint),
        }
    }
}

/// Default cap on the Peas one Flow starts (`--max-peas`, `with.max_peas`).
/// Every Pea is a thread or a process with its own executor instance (up to
/// `memory_hwm` of memory each), so a file with thousands of Pods or shards
/// would take the machine down before anything else stopped it; 64 is eight
/// Pods of eight shards, more than any Flow here uses, and is refused before
/// anything starts.
pub const DEFAULT_MAX_PEAS: usize = 64;

/// A checked Flow: paths resolved, the graph validated.
#[derive(Debug, Clone)]
pub struct Flow {
    pub file: PathBuf,
    pub with: FlowWith,
    pub pods: Vec<PodSpec>,
    /// For each Pod (by index), the Pods it needs (indices), or empty for the gateway.
    pub needs: Vec<Vec<usize>>,
    /// Pods nobody needs: their outputs go back to the gateway (joined if several).
    pub leaves: Vec<usize>,
    /// Pod indices in an order where each comes after everything it needs.
    pub order: Vec<usize>,
    pub polling: Vec<Polling>,
    /// The file's text after `${{ ENV.X }}` substitution: what
    /// [`Flow::line_of`] finds keys in.
    pub source: String,
}

/// Why a Flow file is not a Flow.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FlowError {
    pub file: String,
    pub message: String,
}

impl Flow {
    /// Reads, substitutes `${{ ENV.NAME }}`, parses and checks a Flow file.
    ///
    /// # Errors
    /// A message naming the file and, where there is one, the line and key.
    pub fn load(path: &Path) -> Result<Flow, FlowError> {
        let text = std::fs::read_to_string(path).map_err(|e| FlowError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Flow::parse(&text, path, |name| std::env::var(name).ok())
    }

    /// [`Flow::load`] on text, with `env` for substitutions (tests pass their own).
    ///
    /// # Errors
    /// As [`Flow::load`].
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Flow, FlowError> {
        let fail = |message: String| FlowError {
            file: path.display().to_string(),
            message,
        };
        let text = substitute(text, env).map_err(fail)?;
        let file: FlowFile = serde_yaml::from_str(&text).map_err(|e| fail(yaml_error(&e)))?;
        if let Some(version) = &file.version
            && !matches!(version, Value::Number(n) if n.as_u64() == Some(1))
            && version != &Value::String("1".into())
        {
            return Err(fail(format!(
                "version {version} is not supported (this build reads version 1)"
            )));
        }
        super::front::listeners(&file.with, &[], &[])
            .map_err(|e| fail(format!("with.protocol/with.port: {e}")))?;
        if let Some(id) = &file.with.workspace_id
            && !crate::client_daemon::is_safe_id(id)
        {
            return Err(fail(format!(
                "with.workspace_id `{id}`: 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`"
            )));
        }
        file.with
            .traces_endpoint()
            .map_err(|e| fail(format!("with.tracing: {e}")))?;
        if file.pods.is_empty() {
            return Err(fail("a Flow needs at least one Pod under `pods:`".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut polling = Vec::new();
        for (i, pod) in file.pods.iter().enumerate() {
            let at = |m: String| fail(format!("pods[{i}] (`{}`): {m}", pod.name.escape_debug()));
            // The name is a directory of the Pod's workspace (`<name>/shard-<i>`).
            if pod.name.is_empty()
                || pod.name.len() > 255
                || [GATEWAY, ".", ".."].contains(&pod.name.as_str())
                || pod.name.contains(['/', '\\', ' '])
                || !pod.name.chars().all(crate::wire::fits_a_name)
            {
                return Err(at("a Pod's name must be 1 to 255 bytes, not `gateway`, `.` or `..`, without `/`, `\\`, spaces, control characters, line separators or bidirectional-text controls".into()));
            }
            if index.insert(&pod.name, i).is_some() {
                return Err(at("another Pod has the same name".into()));
            }
            if let Some(host) = &pod.host
                && !host
                    .trim_start_matches("http://")
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Err(at(format!(
                    "host `{host}` is not the ADDRESS:PORT of a jina-wasm daemon"
                )));
            }
            polling.push(match &pod.polling {
                None => Polling::ANY,
                Some(spec) => spec.polling().map_err(at)?,
            });
        }
        let mut needs = Vec::new();
        for (i, pod) in file.pods.iter().enumerate() {
            let names = match &pod.needs {
                Some(n) => n.names(),
                None if i == 0 => vec![GATEWAY.to_string()],
                None => vec![file.pods[i - 1].name.clone()],
            };
            if names.is_empty() {
                return Err(fail(format!(
                    "pods[{i}] (`{}`): `needs` is empty",
                    pod.name
                )));
            }
            let mut mine = Vec::new();
            for name in names {
                if name == GATEWAY {
                    continue;
                }
                match index.get(name.as_str()) {
                    Some(&j) if j == i => {
                        return Err(fail(format!("pods[{i}] (`{}`) needs itself", pod.name)));
                    }
                    Some(&j) => mine.push(j),
                    None => {
                        return Err(fail(format!(
                            "pods[{i}] (`{}`) needs `{name}`, which is not a Pod of this Flow (nor `gateway`)",
                            pod.name
                        )));
                    }
                }
            }
            needs.push(mine);
        }
        let order = topological(&file.pods, &needs).map_err(fail)?;
        let needed: Vec<bool> = (0..file.pods.len())
            .map(|i| needs.iter().any(|n| n.contains(&i)))
            .collect();
        let leaves = (0..file.pods.len()).filter(|&i| !needed[i]).collect();
        let mut pods = file.pods;
        for pod in &mut pods {
            pod.uses = base.join(&pod.uses);
            pod.uses_before = pod.uses_before.as_ref().map(|p| base.join(p));
            pod.uses_after = pod.uses_after.as_ref().map(|p| base.join(p));
            pod.workspace = pod.workspace.as_ref().map(|p| base.join(p));
        }
        Ok(Flow {
            file: path.to_path_buf(),
            with: file.with,
            pods,
            needs,
            leaves,
            order,
            polling,
            source: text,
        })
    }

    /// The line (1-based) of the value of Pod `pod`'s `key` in the file
    /// (`pod: None`: the key under the Flow's `with:`), for messages about
    /// values that are checked after parsing (`uses`, `max_peas`).
    pub fn line_of(&self, pod: Option<usize>, key: &str) -> Option<usize> {
        let names = [key];
        let path = match pod {
            Some(i) => vec![
                Step::Key(&["pods", "executors"]),
                Step::Index(i),
                Step::Key(&names),
            ],
            None => vec![Step::Key(&["with"]), Step::Key(&names)],
        };
        locate(&self.source, &path)
    }

    /// An error about Pod `pod`'s `key` in the shape of the parser's own:
    /// `FILE: line L: pods[I].KEY (`NAME`): MESSAGE` (no line when the key is
    /// absent, as for a missing `uses:` default).
    pub fn pod_error(&self, pod: usize, key: &str, message: &str) -> FlowError {
        let line = self
            .line_of(Some(pod), key)
            .map_or_else(String::new, |l| format!("line {l}: "));
        FlowError {
            file: self.file.display().to_string(),
            message: if key.is_empty() {
                format!("pods[{pod}] (`{}`): {message}", self.pods[pod].name)
            } else {
                format!(
                    "{line}pods[{pod}].{key} (`{}`): {message}",
                    self.pods[pod].name
                )
            },
        }
    }

    /// The Peas (executor instances) this Flow starts: each Pod's shards
    /// times its replicas (at least one), and one each for `uses_before` and
    /// `uses_after`. Remote Pods count too (their daemon runs them, and the
    /// Flow holds sockets to each).
    pub fn pea_count(&self) -> usize {
        self.pods
            .iter()
            .map(|pod| {
                let sides =
                    usize::from(pod.uses_before.is_some()) + usize::from(pod.uses_after.is_some());
                pod.shards
                    .unwrap_or(1)
                    .max(1)
                    .saturating_mul(pod.parallel.unwrap_or(1).max(1))
                    .saturating_add(sides)
            })
            .fold(0, usize::saturating_add)
    }

    /// Refuses a Flow that would start more than `max` Peas (`--max-peas`,
    /// else `with.max_peas`, else [`DEFAULT_MAX_PEAS`]), before anything starts.
    ///
    /// # Errors
    /// A message naming the file, the count, the limit and how to raise it.
    pub fn check_peas(&self, max: Option<usize>) -> Result<(), FlowError> {
        let max = max.or(self.with.max_peas).unwrap_or(DEFAULT_MAX_PEAS);
        let count = self.pea_count();
        if count > max {
            return Err(FlowError {
                file: self.file.display().to_string(),
                message: format!(
                    "the Flow would start {count} Peas, over its limit of {max} (raise it with --max-peas or `with.max_peas`)"
                ),
            });
        }
        Ok(())
    }

    /// The end-to-end time limit of a request.
    ///
    /// # Errors
    /// A `with.timeout` that is not a duration.
    pub fn timeout(&self) -> Result<Duration, String> {
        self.with.timeout.as_deref().map_or(
            Ok(Duration::from_secs(60)),
            crate::units::parse_limit_duration,
        )
    }

    /// The topology as a Mermaid flowchart (Jina's `plot`).
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n    gateway_in((gateway))\n");
        for (i, pod) in self.pods.iter().enumerate() {
            let uses = pod
                .uses
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
            let mut label = format!("{}<br/>{uses}", pod.name);
            if let Some(s) = pod.shards.filter(|&s| s > 1) {
                label.push_str(&format!("<br/>shards: {s}"));
            }
            if let Some(p) = pod.parallel.filter(|&p| p > 1) {
                label.push_str(&format!("<br/>replicas: {p}"));
            }
            out.push_str(&format!("    pod{i}[\"{label}\"]\n"));
        }
        out.push_str("    gateway_out((gateway))\n");
        for (i, needs) in self.needs.iter().enumerate() {
            if needs.is_empty() {
                out.push_str(&format!("    gateway_in --> pod{i}\n"));
            }
            for j in needs {
                out.push_str(&format!("    pod{j} --> pod{i}\n"));
            }
        }
        for i in &self.leaves {
            out.push_str(&format!("    pod{i} --> gateway_out\n"));
        }
        out
    }
}

/// Replaces `${{ ENV.NAME }}` (Jina's syntax) with the variable's value.
pub(crate) fn substitute(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "line {}: `${{{{` without a closing `}}}}`",
                line_of(text, text.len() - rest.len() + start)
            )
        })?;
        let expression = after[..end].trim();
        let name = expression.strip_prefix("ENV.").ok_or_else(|| {
            format!(
                "line {}: `${{{{ {expression} }}}}`: only `${{{{ ENV.NAME }}}}` is supported",
                line_of(text, text.len() - rest.len() + start)
            )
        })?;
        let value = env(name).ok_or_else(|| {
            format!("line {}: environment variable `{name}` is not set (used as `${{{{ ENV.{name} }}}}`)", line_of(text, text.len() - rest.len() + start))
        })?;
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Kahn's algorithm; a cycle is reported with the Pods on it.
fn topological(pods: &[PodSpec], needs: &[Vec<usize>]) -> Result<Vec<usize>, String> {
    let n = pods.len();
    let mut remaining: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut order = Vec::with_capacity(n);
    let mut ready: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    while let Some(i) = ready.pop() {
        order.push(i);
        for (j, deps) in needs.iter().enumerate() {
            if deps.contains(&i) {
                remaining[j] -= deps.iter().filter(|&&d| d == i).count();
                if remaining[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    if order.len() < n {
        let stuck: Vec<String> = (0..n)
            .filter(|i| !order.contains(i))
            .map(|i| format!("`{}`", pods[i].name))
            .collect();
        return Err(format!("the `needs` of {} form a cycle", stuck.join(", ")));
    }
    order.sort_by_key(|&i| i);
    // Keep file order where the graph allows it: a stable topological order.
    let mut placed = vec![false; n];
    let mut stable = Vec::with_capacity(n);
    while stable.len() < n {
        let next = (0..n)
            .find(|&i| !placed[i] && needs[i].iter().all(|&d| placed[d]))
            .expect("acyclic");
        placed[next] = true;
        stable.push(next);
    }
    Ok(stable)
}
