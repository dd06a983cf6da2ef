//! Runs exported Kubernetes manifests without a cluster: every Deployment's
//! and StatefulSet's container command and arguments as a local process, each
//! pod on its own loopback address, each Service name mapped to its pod's
//! address. Shared by tests/all/export.rs and examples/bench.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every YAML document of every file in `dir`, by file name.
pub fn manifests(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            docs.push((file.file_name().unwrap().to_string_lossy().into_owned(), value));
        }
    }
    docs
}

/// The exported containers as local processes, killed on drop.
pub struct LocalCluster {
    pub children: Vec<(String, Child)>,
    /// The pods' volumes (`volumes/<pod>/`) and the Flow file (the test reads them).
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    /// Each workload's (Service's) address: its first pod's.
    pub hosts: BTreeMap<String, String>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One running copy of a workload: a Kubernetes pod.
struct Instance {
    /// Its pod name, which is also its host name (`index-1`).
    hostname: String,
    ip: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    readiness: Vec<String>,
}

/// Runs every Deployment's and StatefulSet's container of the manifests in
/// `dir` as processes, all at once as a cluster would: each pod its own
/// 127.x.y.z address, each Service name resolved to its pod's address,
/// /executors to the built guests, /workspace to a directory per pod (its
/// persistent volume), the ConfigMap to a file. Waits until every pod's own
/// readiness probe passes.
impl LocalCluster {
    pub fn start(dir: &Path, bin: &Path, guests: &Path, cache: &Path) -> LocalCluster {
        let docs = manifests(dir);
        let work = tempfile::tempdir().unwrap();
        // A /16 of loopback addresses of our own, so concurrent runs don't collide.
        let pid = std::process::id();
        let prefix = format!("127.{}.{}", 10 + pid % 200, (pid / 200) % 250);
        let mut next = 1u32;
        let mut ip = || {
            next += 1;
            format!("{prefix}.{next}")
        };
        let config_map = docs.iter().map(|(_, d)| d).find(|d| d["kind"] == "ConfigMap").unwrap();
        let flow_file = work.path().join("flow.yml");
        std::fs::write(&flow_file, config_map["data"]["flow.yml"].as_str().unwrap()).unwrap();

        // Pods and their addresses first: Services resolve to them.
        let mut pods: Vec<(Value, String, String)> = Vec::new();
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        for (_, doc) in &docs {
            let kind = doc["kind"].as_str().unwrap();
            if kind != "Deployment" && kind != "StatefulSet" {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            for i in 0..doc["spec"]["replicas"].as_u64().unwrap() {
                let hostname = if kind == "StatefulSet" {
                    format!("{name}-{i}")
                } else {
                    format!("{name}-5d8f{i}")
                };
                let address = ip();
                // A headless Service of several pods resolves to each in turn;
                // nothing here connects to one (Peas connect out to their head).
                hosts.entry(name.clone()).or_insert_with(|| address.clone());
                pods.push((doc.clone(), hostname, address));
            }
        }
        // `flag` is the argument before `arg`: host names are values of host flags.
        let rewrite = |flag: &str, arg: &str, own: &str, hostname: &str| -> String {
            if arg == "0.0.0.0" {
                return own.to_string();
            }
            if flag.starts_with("--host")
                && let Some(address) = hosts.get(arg)
            {
                return address.clone();
            }
            if let Some(file) = arg.strip_prefix("/executors/") {
                return guests.join(file).display().to_string();
            }
            if arg == "/flow/flow.yml" {
                return flow_file.display().to_string();
            }
            if arg == "/workspace" {
                return work.path().join("volumes").join(hostname).display().to_string();
            }
            if arg == "/cache" {
                return cache.display().to_string();
            }
            if let Some(rest) = arg.strip_prefix("127.0.0.1:") {
                return format!("{own}:{rest}");
            }
            if flag == "--pod-address"
                && let Some((pod, addresses)) = arg.split_once('=')
            {
                let mapped: Vec<String> = addresses
                    .split(',')
                    .map(|a| {
                        let (host, port) = a.rsplit_once(':').unwrap();
                        format!("{}:{port}", hosts.get(host).unwrap_or_else(|| panic!("no Service `{host}`")))
                    })
                    .collect();
                return format!("{pod}={}", mapped.join(","));
            }
            arg.to_string()
        };
        let instances: Vec<Instance> = pods
            .iter()
            .map(|(doc, hostname, address)| {
                let container = &doc["spec"]["template"]["spec"]["containers"][0];
                let strings = |v: &Value| -> Vec<String> {
                    let items: Vec<&str> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
                    (0..items.len())
                        .map(|i| rewrite(if i == 0 { "" } else { items[i - 1] }, items[i], address, hostname))
                        .collect()
                };
                let mut command = strings(&container["command"]);
                command.extend(strings(&container["args"]));
                let mut env: Vec<(String, String)> = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e["name"].as_str().unwrap().to_string(),
                            rewrite("", e["value"].as_str().unwrap(), address, hostname),
                        )
                    })
                    .collect();
                env.push(("HOSTNAME".into(), hostname.clone()));
                Instance {
                    hostname: hostname.clone(),
                    ip: address.clone(),
                    command,
                    env,
                    readiness: strings(&container["readinessProbe"]["exec"]["command"]),
                }
            })
            .collect();
        let program = |name: &str| if name == "jina-wasm" { bin.to_path_buf() } else { PathBuf::from(name) };
        let mut cluster = LocalCluster {
            children: Vec::new(),
            dir: work,
            hosts: hosts.clone(),
        };
        for instance in &instances {
            let child = Command::new(program(&instance.command[0]))
                .args(&instance.command[1..])
                .env_clear()
                .envs(instance.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("JINA_WASM_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            cluster.children.push((instance.hostname.clone(), child));
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        for instance in &instances {
            loop {
                let probe = Command::new(program(&instance.readiness[0])).args(&instance.readiness[1..]).output().unwrap();
                if probe.status.success() {
                    break;
                }
                for (name, child) in &mut cluster.children {
                    assert!(child.try_wait().unwrap().is_none(), "{name} exited");
                }
                assert!(
                    Instant::now() < deadline,
                    "{} ({}) not ready: {}",
                    instance.hostname,
                    instance.ip,
                    String::from_utf8_lossy(&probe.stdout)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        cluster
    }
}
