//! Kubernetes manifests for a [`Plan`]: one file per unit in OUTDIR.
//!
//! | unit | workload | Service |
//! |---|---|---|
//! | gateway | Deployment (+ the Flow file as a ConfigMap) | ClusterIP: `http`, `ctrl` |
//! | singleton Pea | Deployment, or a StatefulSet of 1 with a workspace | headless |
//! | head | Deployment of 1, `Recreate` (never two heads) | ClusterIP, `publishNotReadyAddresses` |
//! | shards | StatefulSet, `serviceName`, `volumeClaimTemplates` for a workspace | headless |
//! | replicas | Deployment | headless |
//! | the replicas of one shard (shards × replicas) | Deployment, + a ReadWriteMany PersistentVolumeClaim for a workspace, which they share | headless |
//!
//! A head Service publishes not-ready addresses because a head is ready only
//! once its Peas have connected, through that very Service. Each object has
//! only fields of its kind (kubernetes-validate `--strict` checks it).

use std::path::Path;

use serde_json::{Value, json};

use super::{
    CACHE_DIR, EXECUTORS_DIR, FLOW_FILE, Kind, PORT_CTRL, Plan, Unit, WORKSPACE_DIR, mebibytes,
};

/// Settings of the export that the Flow file does not have.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: Option<String>,
    /// The `jina-wasm` image every unit runs.
    pub image: String,
    /// An image whose `/executors/` holds the Flow's `.wasm` files; an init
    /// container copies them into each unit that needs them.
    pub executors_image: String,
    /// Size of each shard's persistent volume.
    pub volume_size: String,
    /// A StorageClass for the volumes (the cluster's default without it).
    pub storage_class: Option<String>,
}

/// The user and group the image runs as (the Dockerfile creates them); the
/// volumes are made theirs with `fsGroup`.
const UID: u64 = 10001;

/// The manifests as (file name, YAML) pairs, in the order to apply them.
pub fn render(plan: &Plan, options: &Options) -> Vec<(String, String)> {
    let mut files = Vec::new();
    if let Some(ns) = &options.namespace {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"app.kubernetes.io/part-of": plan.name}}});
        files.push(("00-namespace.yml".to_string(), yaml(&[namespace])));
    }
    for unit in &plan.units {
        files.push((
            format!("{}.yml", unit.name),
            yaml(&objects(plan, unit, options)),
        ));
    }
    files
}

/// Writes the manifests into `dir`.
///
/// # Errors
/// A file that cannot be written.
pub fn write(plan: &Plan, options: &Options, dir: &Path) -> anyhow::Result<Vec<String>> {
    let files = render(plan, options);
    for (name, text) in &files {
        super::write(&dir.join(name), text)?;
    }
    Ok(files.into_iter().map(|(name, _)| name).collect())
}

fn yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| {
            format!(
                "---\n{}",
                serde_yaml::to_string(o).expect("JSON values are YAML")
            )
        })
        .collect()
}

fn config_map_name(plan: &Plan) -> String {
    format!("{}-flow", plan.name)
}

fn labels(plan: &Plan, unit: &Unit) -> Value {
    let component = match unit.kind {
        Kind::Gateway => "gateway",
        Kind::Pea => "pea",
        Kind::Head => "head",
        Kind::Shards => "shard",
        Kind::Replicas => "replica",
        Kind::ShardReplicas => "shard-replica",
    };
    json!({"app.kubernetes.io/name": unit.name, "app.kubernetes.io/part-of": plan.name, "app.kubernetes.io/component": component})
}

fn metadata(plan: &Plan, unit: &Unit, name: &str, options: &Options) -> Value {
    let mut meta = json!({"name": name, "labels": labels(plan, unit)});
    if let Some(ns) = &options.namespace {
        meta["namespace"] = ns.clone().into();
    }
    meta
}

/// The unit's workload and Service (and the gateway's ConfigMap).
fn objects(plan: &Plan, unit: &Unit, options: &Options) -> Vec<Value> {
    let selector =
        json!({"app.kubernetes.io/name": unit.name, "app.kubernetes.io/part-of": plan.name});
    let mut template =
        json!({"metadata": {"labels": labels(plan, unit)}, "spec": pod_spec(plan, unit, options)});
    // Prometheus' Kubernetes discovery reads these (docs/operations.md).
    if let Some((_, port)) = unit.ports.iter().find(|(n, _)| *n == "monitoring") {
        template["metadata"]["annotations"] = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": port.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    let stateful = matches!(unit.kind, Kind::Shards) || (unit.kind == Kind::Pea && unit.workspace);
    let mut out = Vec::new();
    if unit.kind == Kind::ShardReplicas && unit.workspace {
        // One volume per shard that all its replicas mount: ReadWriteMany, as
        // they may run on different nodes.
        let mut claim = json!({"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": options.volume_size}}});
        if let Some(class) = &options.storage_class {
            claim["storageClassName"] = class.clone().into();
        }
        out.push(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata(plan, unit, &workspace_claim(unit), options),
            "spec": claim,
        }));
    }
    if unit.kind == Kind::Gateway {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(plan, unit, &config_map_name(plan), options),
            "data": {"flow.yml": plan.flow_text},
        }));
    }
    let workload = if stateful {
        let mut spec = json!({
            "serviceName": unit.name,
            "replicas": unit.count,
            // Shards are independent: start and stop them all at once.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": template,
        });
        if unit.workspace {
            let mut claim = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": options.volume_size}}});
            if let Some(class) = &options.storage_class {
                claim["storageClassName"] = class.clone().into();
            }
            spec["volumeClaimTemplates"] = json!([{"metadata": {"name": "workspace", "labels": labels(plan, unit)}, "spec": claim}]);
        }
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(plan, unit, &unit.name, options), "spec": spec})
    } else {
        let mut spec = json!({"replicas": unit.count, "selector": {"matchLabels": selector}, "template": template});
        if unit.kind == Kind::Head {
            // One head at a time: two would split the Peas between them.
            spec["strategy"] = json!({"type": "Recreate"});
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(plan, unit, &unit.name, options), "spec": spec})
    };
    out.push(workload);
    let ports: Vec<Value> = unit.ports.iter().map(|(name, port)| json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"})).collect();
    let mut service = json!({"selector": selector, "ports": ports});
    match unit.kind {
        Kind::Gateway => {}
        // The Peas reach their head before it is ready (it is ready once they have).
        Kind::Head => service["publishNotReadyAddresses"] = true.into(),
        // Peas: every copy its own DNS record, looked up again on each reconnect.
        Kind::Pea | Kind::Shards | Kind::Replicas | Kind::ShardReplicas => {
            service["clusterIP"] = "None".into();
        }
    }
    out.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata(plan, unit, &unit.name, options), "spec": service}));
    out
}

fn ping(alive: bool) -> Value {
    let mut command = vec![
        "jina-wasm".to_string(),
        "ping".into(),
        format!("127.0.0.1:{PORT_CTRL}"),
        "--timeout".into(),
        "3s".into(),
    ];
    if alive {
        command.push("--alive".into());
    }
    json!({"exec": {"command": command}})
}

fn pod_spec(plan: &Plan, unit: &Unit, options: &Options) -> Value {
    let mut mounts = vec![json!({"name": "cache", "mountPath": CACHE_DIR})];
    let mut volumes = vec![json!({"name": "cache", "emptyDir": {}})];
    let mut init = Vec::new();
    if !unit.executors.is_empty() {
        mounts.push(json!({"name": "executors", "mountPath": EXECUTORS_DIR, "readOnly": true}));
        volumes.push(json!({"name": "executors", "emptyDir": {}}));
        let mut copy = vec!["cp".to_string()];
        copy.extend(
            unit.executors
                .iter()
                .map(|e| format!("{EXECUTORS_DIR}/{e}")),
        );
        copy.push("/shared/".into());
        init.push(json!({
            "name": "executors",
            "image": options.executors_image,
            "command": copy,
            "volumeMounts": [{"name": "executors", "mountPath": "/shared"}],
        }));
    }
    if unit.kind == Kind::Gateway {
        let dir = Path::new(FLOW_FILE)
            .parent()
            .expect("a directory")
            .display()
            .to_string();
        mounts.push(json!({"name": "flow", "mountPath": dir, "readOnly": true}));
        volumes.push(json!({"name": "flow", "configMap": {"name": config_map_name(plan)}}));
    }
    if unit.workspace {
        // From the StatefulSet's volumeClaimTemplates, or the shard's claim.
        mounts.push(json!({"name": "workspace", "mountPath": WORKSPACE_DIR}));
        if unit.kind == Kind::ShardReplicas {
            volumes.push(json!({"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim(unit)}}));
        }
    }
    let ports: Vec<Value> = unit
        .ports
        .iter()
        .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
        .collect();
    let mut container = json!({
        "name": "jina-wasm",
        "image": options.image,
        "command": ["jina-wasm"],
        "args": unit.args,
        "ports": ports,
        "env": [
            {"name": "JINA_WASM_CACHE_DIR", "value": CACHE_DIR},
            {"name": "JINA_WASM_LOG", "value": "info"},
        ],
        "volumeMounts": mounts,
        // Compiling a large component takes a while at first: up to 10 minutes.
        "startupProbe": dict_with(ping(true), &[("periodSeconds", 2), ("timeoutSeconds", 5), ("failureThreshold", 300)]),
        "readinessProbe": dict_with(ping(false), &[("periodSeconds", 5), ("timeoutSeconds", 5), ("failureThreshold", 2)]),
        "livenessProbe": dict_with(ping(true), &[("periodSeconds", 10), ("timeoutSeconds", 5), ("failureThreshold", 3)]),
    });
    if let Some(limit) = unit.memory_limit {
        container["resources"] = json!({"limits": {"memory": mebibytes(limit)}});
    }
    let mut spec = json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID},
        "containers": [container],
        "volumes": volumes,
    });
    if !init.is_empty() {
        spec["initContainers"] = init.into();
    }
    spec
}

/// The PersistentVolumeClaim the replicas of one shard share.
fn workspace_claim(unit: &Unit) -> String {
    format!("{}-workspace", unit.name)
}

fn dict_with(mut value: Value, fields: &[(&str, u64)]) -> Value {
    for (k, v) in fields {
        value[*k] = (*v).into();
    }
    value
}
