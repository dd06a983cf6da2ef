//! Runs an exported Flow without a cluster: every container of the Kubernetes
//! manifests (each Deployment's and StatefulSet's pod) or of the Compose file
//! (each service's replica) as a local process with its exported command and
//! arguments, all at once as an engine would start them. Each pod gets its own
//! loopback address (127.x.y.z) and binds the manifests' fixed ports there;
//! each Service (or Compose service) name is mapped to its pod's address;
//! `/executors` to the built guests, `/workspace` to a directory per pod (its
//! volume), the Flow file to a local file; `$HOSTNAME` is the pod's name.
//! Shared by tests/all/export.rs and examples/bench.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every YAML document of every file in `dir`, by file name.
pub fn manifests(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            docs.push((
                file.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    docs
}

/// One container to run, as the export describes it.
struct Pod {
    /// The Service (workload or Compose service) it answers for.
    service: String,
    /// Its host name: `index-1` in a StatefulSet, `index-0` by Compose's `hostname:`.
    hostname: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    readiness: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The pods of Kubernetes manifests, and the Flow file from the ConfigMap.
fn from_kubernetes(dir: &Path) -> (Vec<Pod>, String) {
    let docs = manifests(dir);
    let config_map = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap();
    let mut pods = Vec::new();
    for (_, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap();
        if kind != "Deployment" && kind != "StatefulSet" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap().to_string();
        let container = &doc["spec"]["template"]["spec"]["containers"][0];
        let mut command = strings(&container["command"]);
        command.extend(strings(&container["args"]));
        let env: Vec<(String, String)> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for i in 0..doc["spec"]["replicas"].as_u64().unwrap() {
            let hostname = if kind == "StatefulSet" {
                format!("{name}-{i}")
            } else {
                format!("{name}-5d8f{i}")
            };
            let readiness = strings(&container["readinessProbe"]["exec"]["command"]);
            pods.push(Pod {
                service: name.clone(),
                hostname,
                command: command.clone(),
                env: env.clone(),
                readiness,
            });
        }
    }
    (
        pods,
        config_map["data"]["flow.yml"].as_str().unwrap().to_string(),
    )
}

/// The pods of a Compose file (the one-shot `executors` copy aside: the
/// executors are mapped), and the Flow file from its config.
fn from_compose(file: &Path) -> (Vec<Pod>, String) {
    let compose: Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    // Compose reads `$$` as a literal `$`.
    let literal = |s: String| s.replace("$$", "$");
    let mut pods = Vec::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        if name == "executors" {
            continue;
        }
        let mut command: Vec<String> = strings(&service["entrypoint"])
            .into_iter()
            .map(literal)
            .collect();
        command.extend(strings(&service["command"]).into_iter().map(literal));
        let env: Vec<(String, String)> = service["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), literal(v.as_str().unwrap().to_string())))
            .collect();
        let readiness: Vec<String> = strings(&service["healthcheck"]["test"])
            .into_iter()
            .skip(1)
            .collect();
        let replicas = service["deploy"]["replicas"].as_u64().unwrap_or(1);
        for i in 0..replicas {
            let hostname = service["hostname"]
                .as_str()
                .map_or_else(|| format!("{name}-c0ffee{i}"), str::to_string);
            pods.push(Pod {
                service: name.clone(),
                hostname,
                command: command.clone(),
                env: env.clone(),
                readiness: readiness.clone(),
            });
        }
    }
    (
        pods,
        literal(
            compose["configs"]["flow"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
    )
}

/// A pod's process and how to start it again.
struct Started {
    hostname: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    probe: Vec<String>,
}

/// The exported containers as local processes, killed on drop.
pub struct LocalCluster {
    pub children: Vec<(String, Child)>,
    started: Vec<Started>,
    bin: PathBuf,
    /// The pods' volumes (`volumes/<pod>/`) and the Flow file (the test reads them).
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    /// Each Service's address: its first pod's.
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

impl LocalCluster {
    /// Runs the Kubernetes manifests in `dir`; see the module's doc.
    pub fn kubernetes(dir: &Path, bin: &Path, guests: &Path, cache: &Path) -> LocalCluster {
        let (pods, flow) = from_kubernetes(dir);
        LocalCluster::start(pods, &flow, bin, guests, cache)
    }

    /// Runs the Compose file `file`; see the module's doc.
    #[allow(dead_code)]
    pub fn compose(file: &Path, bin: &Path, guests: &Path, cache: &Path) -> LocalCluster {
        let (pods, flow) = from_compose(file);
        LocalCluster::start(pods, &flow, bin, guests, cache)
    }

    /// Starts every pod at once, then waits until each one's own readiness
    /// probe (or health check) passes.
    fn start(pods: Vec<Pod>, flow: &str, bin: &Path, guests: &Path, cache: &Path) -> LocalCluster {
        let work = tempfile::tempdir().unwrap();
        let volumes = work.path().join("volumes");
        let flow_file = work.path().join("flow.yml");
        std::fs::write(&flow_file, flow).unwrap();
        // A /16 of loopback addresses of our own, so concurrent runs don't collide.
        let pid = std::process::id();
        let prefix = format!("127.{}.{}", 10 + pid % 200, (pid / 200) % 250);
        let addresses: Vec<String> = (0..pods.len())
            .map(|i| format!("{prefix}.{}", i + 2))
            .collect();
        // A Service of several pods resolves to each in turn; nothing here
        // connects to one of those (Peas connect out to their head).
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        for (pod, address) in pods.iter().zip(&addresses) {
            hosts
                .entry(pod.service.clone())
                .or_insert_with(|| address.clone());
        }
        // `flag` is the argument before `arg`: host names are values of host flags.
        let rewrite = |flag: &str, arg: &str, own: &str, hostname: &str| -> String {
            let service = |host: &str| {
                hosts
                    .get(host)
                    .unwrap_or_else(|| panic!("no Service `{host}`"))
                    .clone()
            };
            match arg {
                "0.0.0.0" => own.to_string(),
                "/flow/flow.yml" => flow_file.display().to_string(),
                "/workspace" => volumes.join(hostname).display().to_string(),
                "/cache" => cache.display().to_string(),
                _ if flag == "--host-in" || flag == "--host-out" => service(arg),
                _ if flag == "--pod-address" => {
                    let (pod, pair) = arg.split_once('=').unwrap();
                    let mapped: Vec<String> = pair
                        .split(',')
                        .map(|a| a.rsplit_once(':').unwrap())
                        .map(|(h, p)| format!("{}:{p}", service(h)))
                        .collect();
                    format!("{pod}={}", mapped.join(","))
                }
                _ => match (
                    arg.strip_prefix("/executors/"),
                    arg.strip_prefix("127.0.0.1:"),
                ) {
                    (Some(file), _) => guests.join(file).display().to_string(),
                    (_, Some(port)) => format!("{own}:{port}"),
                    _ => arg.to_string(),
                },
            }
        };
        let args = |items: &[String], own: &str, hostname: &str| -> Vec<String> {
            (0..items.len())
                .map(|i| {
                    rewrite(
                        if i == 0 { "" } else { &items[i - 1] },
                        &items[i],
                        own,
                        hostname,
                    )
                })
                .collect()
        };
        let mut cluster = LocalCluster {
            children: Vec::new(),
            started: Vec::new(),
            bin: bin.to_path_buf(),
            dir: work,
            hosts: hosts.clone(),
        };
        for (pod, own) in pods.iter().zip(&addresses) {
            let env = pod
                .env
                .iter()
                .map(|(k, v)| (k.clone(), rewrite("", v, own, &pod.hostname)))
                .collect();
            let started = Started {
                hostname: pod.hostname.clone(),
                command: args(&pod.command, own, &pod.hostname),
                env,
                probe: args(&pod.readiness, own, &pod.hostname),
            };
            let child = cluster.spawn(&started);
            cluster.children.push((pod.hostname.clone(), child));
            cluster.started.push(started);
        }
        for i in 0..cluster.started.len() {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn program(&self, name: &str) -> PathBuf {
        if name == "jina-wasm" {
            self.bin.clone()
        } else {
            PathBuf::from(name)
        }
    }

    fn spawn(&self, pod: &Started) -> Child {
        Command::new(self.program(&pod.command[0]))
            .args(&pod.command[1..])
            .env_clear()
            .envs(pod.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HOSTNAME", &pod.hostname)
            // What a killed pod leaves in its temp dir goes with the cluster.
            .env("TMPDIR", self.dir.path())
            .env("JINA_WASM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Waits until pod `i`'s readiness probe passes.
    fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let probe = &self.started[i].probe;
        loop {
            let answer = Command::new(self.program(&probe[0]))
                .args(&probe[1..])
                .output()
                .unwrap();
            if answer.status.success() {
                return;
            }
            for (name, child) in &mut self.children {
                assert!(child.try_wait().unwrap().is_none(), "{name} exited");
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready: {}",
                self.started[i].hostname,
                String::from_utf8_lossy(&answer.stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the pod whose name starts with `prefix` and starts it again, as a
    /// cluster reschedules a pod (same address, as a Service's DNS name would
    /// resolve to its new one); returns once it is ready again.
    #[allow(dead_code)]
    pub fn restart(&mut self, prefix: &str) {
        let i = self
            .started
            .iter()
            .position(|p| p.hostname.starts_with(prefix))
            .unwrap_or_else(|| panic!("no pod {prefix}*"));
        let child = &mut self.children[i].1;
        child.kill().unwrap();
        child.wait().unwrap();
        self.children[i].1 = self.spawn(&self.started[i]);
        self.wait_ready(i);
    }
}
