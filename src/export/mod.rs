//! Exporting a Flow to a cluster engine: every part of the Flow becomes a unit,
//! a `jina-wasm` command line that runs on its own in a container, and the
//! units become Kubernetes objects ([`kubernetes`]) or Docker Compose services
//! ([`compose`]). docs/kubernetes.md describes the result.
//!
//! The units come from the same [`crate::flow::resolve::resolve`] that
//! `jina-wasm flow` starts Pods from, and the Peas' arguments from the same
//! [`crate::pod::pea_args`] a Pod uses for its child processes: one source of
//! truth for limits, timeouts, strategies and executor parameters. What the
//! export adds is addresses: each unit is its own host (a Service name), so
//! every unit binds the same fixed ports ([`PORT_IN`] ...).
//!
//! | Flow part | unit | runs |
//! |---|---|---|
//! | the gateway | `gateway` | `jina-wasm gateway`: HTTP and/or gRPC + the router |
//! | a singleton Pod `p` | `p` | `jina-wasm pea`, binding its input and output |
//! | a Pod `p` with shards, replicas or `uses_before`/`uses_after` | `p-head` | `jina-wasm pod --role head`: head and tail |
//! | its shards | `p` ×N | `jina-wasm pea --shard-id auto --shard-count N` (a StatefulSet) |
//! | its replicas | `p` ×N | `jina-wasm pea --replica-id auto` (a Deployment) |
//! | shards × replicas: shard `i` | `p-i` ×R | `jina-wasm pea --shard-id i --shard-count S --replica-id auto` (a Deployment per shard) |
//!
//! The head and the tail stay one unit: the head tells the tail which parts
//! to expect for each request in process (an [`crate::pod::Expect`]), and
//! they share the Pod's one control socket. Peas connect to the head unit;
//! the head binds.

pub mod compose;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::flow::Flow;
use crate::flow::front::{Protocol, listeners};
use crate::flow::resolve::{RunOptions, resolve};
use crate::pea::PeaConfig;
use crate::transport::SocketSpec;

/// The gateway's HTTP port, unless the Flow sets `with.port`.
pub const PORT_HTTP: u16 = 8080;
/// The gateway's gRPC port (with `protocol: grpc`), unless the Flow sets one.
pub const PORT_GRPC: u16 = 8086;
/// A Pod's input (PULL, bound by its head or singleton Pea).
pub const PORT_IN: u16 = 8081;
/// A Pod's output (PUSH).
pub const PORT_OUT: u16 = 8082;
/// Every unit's control socket (`jina-wasm ping`).
pub const PORT_CTRL: u16 = 8083;
/// A head's ROUTER, which its Peas' DEALER inputs connect to.
pub const PORT_FANOUT: u16 = 8084;
/// A tail's PULL, which its Peas' PUSH outputs connect to.
pub const PORT_PARTS: u16 = 8085;
/// Every unit's metrics (`GET /metrics`), when the Flow has `monitoring: true`
/// (or sets `port_monitoring`, which this replaces where it is 0).
pub const PORT_MONITORING: u16 = 9090;

/// Where things are inside a container.
pub const EXECUTORS_DIR: &str = "/executors";
pub const FLOW_FILE: &str = "/flow/flow.yml";
pub const WORKSPACE_DIR: &str = "/workspace";
pub const CACHE_DIR: &str = "/cache";

/// Host memory a container needs beyond its executors' linear memory
/// (`memory_hwm`): wasmtime, the compiled code, sockets and queues. Measured
/// resident size of an idle Pea running the text encoder is ~40 MiB; a
/// request's copies of its documents come on top.
pub const MEMORY_HEADROOM: u64 = 256 << 20;

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gateway,
    /// A singleton Pod: one Pea, no head.
    Pea,
    /// The head and tail of a Pod whose Peas are units of their own.
    Head,
    /// The shards of a Pod: one stable identity each.
    Shards,
    /// The replicas of a Pod: interchangeable.
    Replicas,
    /// The replicas of one shard of a Pod (shards × replicas): they share
    /// the shard's workspace, one volume.
    ShardReplicas,
}

/// One `jina-wasm` command line of the exported Flow, and what it needs.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Object, Service and host name (DNS-1123): `gateway`, `encode-head`, `encode`.
    pub name: String,
    pub kind: Kind,
    /// The Flow Pod it belongs to (none for the gateway).
    pub pod: Option<String>,
    /// How many copies run.
    pub count: usize,
    /// The arguments after `jina-wasm`.
    pub args: Vec<String>,
    /// The ports it binds, by name.
    pub ports: Vec<(&'static str, u16)>,
    /// The executor files (names under [`EXECUTORS_DIR`]) it loads.
    pub executors: Vec<String>,
    /// Keeps state in [`WORKSPACE_DIR`]: a persistent volume per copy.
    pub workspace: bool,
    /// Container memory limit, bytes (executor limit + [`MEMORY_HEADROOM`]).
    pub memory_limit: Option<u64>,
}

/// An exported Flow.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The Flow's name (its file's stem, as a DNS label): labels and the ConfigMap.
    pub name: String,
    /// The Flow file as the gateway reads it, `${{ ENV }}` already substituted.
    pub flow_text: String,
    pub units: Vec<Unit>,
    /// Every executor file: name in the container, path on this machine.
    pub executors: BTreeMap<String, PathBuf>,
    /// The gateway's protocols and their ports (`with.protocol`, `with.port`;
    /// [`PORT_HTTP`], [`PORT_GRPC`] where the Flow leaves them to the OS).
    pub listeners: Vec<(Protocol, u16)>,
}

impl Plan {
    /// Plans the units of a Flow file.
    ///
    /// # Errors
    /// A Flow that does not load, a Pod setting that is not valid, a Pod name
    /// that is not a usable host name, two executor files with one name.
    pub fn new(path: &Path) -> anyhow::Result<Plan> {
        let flow = Flow::load(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let flow_text = crate::flow::spec::substitute(&text, |name| std::env::var(name).ok())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .map_or_else(|| "flow".into(), |s| s.to_string_lossy().into_owned());
        let name = dns_label(&stem).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the file name `{stem}` has no letters or digits to name the Flow by",
                path.display()
            )
        })?;
        let mut plan = Plan {
            name,
            flow_text,
            units: Vec::new(),
            executors: BTreeMap::new(),
            listeners: listeners(&flow.with, &[], &[])
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .into_iter()
                .map(|(protocol, port)| match (protocol, port) {
                    (Protocol::Http, 0) => (protocol, PORT_HTTP),
                    (Protocol::Grpc, 0) => (protocol, PORT_GRPC),
                    _ => (protocol, port),
                })
                .collect(),
        };
        let mut pod_addresses = Vec::new();
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        // The same resolved settings `flow` runs and `flow check` checks.
        let configs = resolve(&flow, &RunOptions::default())?;
        for (spec, config) in flow.pods.iter().zip(configs) {
            let at =
                |e: anyhow::Error| e.context(format!("{}: pod `{}`", path.display(), spec.name));
            let host = dns_label(&spec.name)
                .filter(|h| h.len() <= 58)
                .ok_or_else(|| at(anyhow::anyhow!("its name does not make a Kubernetes name (letters, digits, `-`; at most 58)")))?;
            for unit in [host.clone(), format!("{host}-head")] {
                if let Some(other) = taken.insert(unit.clone(), spec.name.clone()) {
                    anyhow::bail!(
                        "{}: pods `{other}` and `{}` both become `{unit}`: rename one",
                        path.display(),
                        spec.name
                    );
                }
            }
            if host == "gateway" {
                return Err(at(anyhow::anyhow!(
                    "`gateway` is the gateway's unit name: rename the Pod"
                )));
            }
            // `memory_hwm: -1` (no limit) gives the container none either.
            let hwm = config.pea.executor.sandbox.memory_limit;
            let memory_limit =
                (hwm < crate::units::MAX_SIZE).then(|| hwm.saturating_add(MEMORY_HEADROOM));
            let uses = plan.executor(&config.pea.uses).map_err(at)?;
            let workspace = config.pea.executor.sandbox.workspace.is_some();
            let mut base = config.pea.clone();
            base.uses = PathBuf::from(EXECUTORS_DIR).join(&uses);
            base.executor.sandbox.workspace = workspace.then(|| PathBuf::from(WORKSPACE_DIR));
            if config.is_singleton() {
                base.socket_in = SocketSpec::PULL_BIND;
                base.address_in = format!("tcp://0.0.0.0:{PORT_IN}");
                base.socket_out = SocketSpec::PUSH_BIND;
                base.address_out = format!("tcp://0.0.0.0:{PORT_OUT}");
                plan.units.push(Unit {
                    name: host.clone(),
                    kind: Kind::Pea,
                    pod: Some(spec.name.clone()),
                    count: 1,
                    args: pea_command(&base, &[]),
                    ports: vec![("in", PORT_IN), ("out", PORT_OUT), ("ctrl", PORT_CTRL)],
                    executors: vec![uses],
                    workspace,
                    memory_limit,
                });
                pod_addresses.push((spec.name.clone(), host));
                continue;
            }
            // The head and tail: the Pod's outer sockets, and two for its Peas.
            let head_name = format!("{host}-head");
            let mut head = base.clone();
            head.executor.sandbox.workspace = None;
            head.socket_in = SocketSpec::PULL_BIND;
            head.address_in = format!("tcp://0.0.0.0:{PORT_IN}");
            head.socket_out = SocketSpec::PUSH_BIND;
            head.address_out = format!("tcp://0.0.0.0:{PORT_OUT}");
            let mut args = pea_command(&head, &[]);
            args[0] = "pod".into();
            args.extend(["--role", "head", "--host-peas", "0.0.0.0"].map(String::from));
            args.extend([
                "--port-fanout".into(),
                PORT_FANOUT.to_string(),
                "--port-parts".into(),
                PORT_PARTS.to_string(),
            ]);
            args.extend(["--polling".into(), config.polling.to_string()]);
            let shards = config.shards > 1;
            let replicas = config.replicas.max(1);
            if shards {
                args.extend(["--shards".into(), config.shards.to_string()]);
            }
            if !shards || replicas > 1 {
                args.extend(["--parallel".into(), replicas.to_string()]);
            }
            let mut head_executors = Vec::new();
            for (flag, file) in [
                ("--uses-before", &config.uses_before),
                ("--uses-after", &config.uses_after),
            ] {
                if let Some(file) = file {
                    let name = plan.executor(file).map_err(at)?;
                    args.extend([flag.to_string(), format!("{EXECUTORS_DIR}/{name}")]);
                    head_executors.push(name);
                }
            }
            plan.units.push(Unit {
                name: head_name.clone(),
                kind: Kind::Head,
                pod: Some(spec.name.clone()),
                count: 1,
                args,
                ports: vec![
                    ("in", PORT_IN),
                    ("out", PORT_OUT),
                    ("ctrl", PORT_CTRL),
                    ("fanout", PORT_FANOUT),
                    ("parts", PORT_PARTS),
                ],
                executors: head_executors,
                workspace: false,
                memory_limit,
            });
            // The Peas: connect to the head; learn their place from their host name.
            let mut pea = base;
            pea.socket_in = SocketSpec::DEALER_CONNECT;
            pea.address_in = format!("tcp://{head_name}:{PORT_FANOUT}");
            pea.socket_out = SocketSpec::PUSH_CONNECT;
            pea.address_out = format!("tcp://{head_name}:{PORT_PARTS}");
            if shards && replicas > 1 {
                // Shards × replicas: one unit per shard, its replicas
                // interchangeable (named by host name) and sharing its volume.
                for i in 0..config.shards {
                    let unit = format!("{host}-{i}");
                    if let Some(other) = taken.insert(unit.clone(), spec.name.clone()) {
                        anyhow::bail!(
                            "{}: pods `{other}` and `{}` both become `{unit}`: rename one",
                            path.display(),
                            spec.name
                        );
                    }
                    let place = [
                        "--shard-id".to_string(),
                        i.to_string(),
                        "--shard-count".into(),
                        config.shards.to_string(),
                        "--replica-id".into(),
                        "auto".into(),
                    ];
                    plan.units.push(Unit {
                        name: unit,
                        kind: Kind::ShardReplicas,
                        pod: Some(spec.name.clone()),
                        count: replicas,
                        args: pea_command(&pea, &place),
                        ports: vec![("ctrl", PORT_CTRL)],
                        executors: vec![uses.clone()],
                        workspace,
                        memory_limit,
                    });
                }
                pod_addresses.push((spec.name.clone(), head_name));
                continue;
            }
            let (kind, count, place) = if shards {
                (
                    Kind::Shards,
                    config.shards,
                    vec![
                        "--shard-id".to_string(),
                        "auto".into(),
                        "--shard-count".into(),
                        config.shards.to_string(),
                    ],
                )
            } else {
                (
                    Kind::Replicas,
                    config.replicas.max(1),
                    vec!["--replica-id".to_string(), "auto".into()],
                )
            };
            plan.units.push(Unit {
                name: host.clone(),
                kind,
                pod: Some(spec.name.clone()),
                count,
                args: pea_command(&pea, &place),
                ports: vec![("ctrl", PORT_CTRL)],
                executors: vec![uses],
                workspace,
                memory_limit,
            });
            pod_addresses.push((spec.name.clone(), head_name));
        }
        let mut args: Vec<String> = vec![
            "gateway".into(),
            "--uses".into(),
            FLOW_FILE.into(),
            "--host".into(),
            "0.0.0.0".into(),
        ];
        if plan.listeners.iter().any(|(p, _)| *p != Protocol::Http) {
            let names: Vec<&str> = plan.listeners.iter().map(|(p, _)| p.name()).collect();
            args.extend(["--protocol".into(), names.join(",")]);
        }
        let ports: Vec<String> = plan.listeners.iter().map(|(_, p)| p.to_string()).collect();
        args.extend([
            "--port".into(),
            ports.join(","),
            "--host-ctrl".into(),
            "0.0.0.0".into(),
            "--port-ctrl".into(),
            PORT_CTRL.to_string(),
        ]);
        for (pod, host) in &pod_addresses {
            args.extend([
                "--pod-address".into(),
                format!("{pod}={host}:{PORT_IN},{host}:{PORT_OUT}"),
            ]);
        }
        plan.units.insert(
            0,
            Unit {
                name: "gateway".into(),
                kind: Kind::Gateway,
                pod: None,
                count: 1,
                args,
                ports: plan
                    .listeners
                    .iter()
                    .map(|(p, port)| (p.name(), *port))
                    .chain([("ctrl", PORT_CTRL)])
                    .collect(),
                executors: Vec::new(),
                workspace: false,
                memory_limit: None,
            },
        );
        // Every unit serves its own metrics on one fixed port, which the
        // manifests annotate for Prometheus (docs/operations.md).
        if flow.with.monitoring.unwrap_or(false) || flow.with.port_monitoring.is_some() {
            let port = flow
                .with
                .port_monitoring
                .filter(|&p| p != 0)
                .unwrap_or(PORT_MONITORING);
            for unit in &mut plan.units {
                unit.args.extend([
                    "--port-monitoring".into(),
                    port.to_string(),
                    "--host-monitoring".into(),
                    "0.0.0.0".into(),
                ]);
                unit.ports.push(("monitoring", port));
            }
        }
        // Every unit exports its own spans to the Flow's collector (a
        // `localhost` one is each container's own: give a service name).
        if let Some(endpoint) = flow.with.traces_endpoint().map_err(anyhow::Error::msg)? {
            for unit in &mut plan.units {
                unit.args
                    .extend(["--traces-endpoint".into(), endpoint.clone()]);
            }
        }
        Ok(plan)
    }

    /// Registers an executor file; returns its name in [`EXECUTORS_DIR`].
    fn executor(&mut self, path: &Path) -> anyhow::Result<String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow::anyhow!("`{}` is not a file", path.display()))?;
        match self.executors.get(&name) {
            Some(other) if other != path => {
                anyhow::bail!(
                    "executors {} and {} have the same file name `{name}`: one directory holds them all in the container",
                    other.display(),
                    path.display()
                )
            }
            _ => {
                self.executors.insert(name.clone(), path.to_path_buf());
                Ok(name)
            }
        }
    }
}

/// `pea ARGS...` for a Pea config, with its control socket on the fixed port.
fn pea_command(config: &PeaConfig, extra: &[String]) -> Vec<String> {
    let mut args = vec!["pea".to_string()];
    args.extend(crate::pod::pea_args(config));
    args.extend(["--host-ctrl", "0.0.0.0"].map(String::from));
    args.extend(["--port-ctrl".into(), PORT_CTRL.to_string()]);
    args.extend(extra.iter().cloned());
    args
}

/// A DNS-1123 label: lower case, `-` for anything else, no `-` at either end.
fn dns_label(name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-').to_string();
    (!trimmed.is_empty() && trimmed.len() <= 63).then_some(trimmed)
}

/// Memory in Kubernetes' and Compose's notation (`1280Mi`).
pub fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

/// Writes `text` to `path`, creating its directory.
pub(crate) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Flow with traces: every exported unit exports its own spans.
    #[test]
    fn every_unit_gets_the_traces_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flow.yml");
        std::fs::write(&file, "with:\n  traces_endpoint: http://otel:4318\npods:\n  - name: a\n    uses: a.wasm\n    shards: 2\n").unwrap();
        let plan = Plan::new(&file).unwrap();
        assert!(plan.units.len() >= 3);
        for unit in &plan.units {
            let at = unit.args.iter().position(|a| a == "--traces-endpoint");
            assert_eq!(
                at.map(|i| unit.args[i + 1].as_str()),
                Some("http://otel:4318"),
                "{}: {:?}",
                unit.name,
                unit.args
            );
        }
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("Encode_Text").as_deref(), Some("encode-text"));
        assert_eq!(dns_label("__"), None);
        assert_eq!(dns_label("text-search"), Some("text-search".into()));
    }
}
