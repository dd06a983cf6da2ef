//! `jina-wasm export`: golden files of the demo Flow's manifests and Compose
//! file, the manifests validated offline (kubernetes-validate --strict, oldest
//! and newest Kubernetes it bundles), the Compose file's structure, and the
//! wiring proven without a cluster: every exported container's command and
//! arguments (Kubernetes, then Compose) run as a local process, each Service
//! name mapped to its own loopback address, serving index and search like
//! `jina-wasm flow` does.
//! `JINA_WASM_BLESS=1` rewrites the golden files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{bin, cache_dir, wasm};

#[path = "../support/local_cluster.rs"]
mod local_cluster;
use local_cluster::manifests;

/// The demo Flow with the hashing encoder: its units run here as processes,
/// and the MiniLM one's model directory is not part of an export.
const DEMO: &str = "examples/flows/text-search-hashing.yml";

fn export(args: &[&str]) -> std::process::Output {
    let out = crate::util::jina_command()
        .arg("export")
        .args(args)
        .env("JINA_WASM_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn check(golden: &Path, actual: &str) {
    if std::env::var_os("JINA_WASM_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(golden, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs (JINA_WASM_BLESS=1 rewrites it)",
        golden.display()
    );
}

#[test]
fn the_demo_flow_exports_as_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    export(&[
        "kubernetes",
        DEMO,
        dir.path().to_str().unwrap(),
        "--namespace",
        "text-search",
    ]);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00-namespace.yml",
            "encode-head.yml",
            "encode.yml",
            "gateway.yml",
            "index-head.yml",
            "index.yml",
            "segment.yml"
        ]
    );
    for name in &names {
        let actual = std::fs::read_to_string(dir.path().join(name)).unwrap();
        check(&Path::new("tests/exports/kubernetes").join(name), &actual);
    }
    let compose = dir.path().join("compose.yml");
    export(&["docker-compose", DEMO, compose.to_str().unwrap()]);
    check(
        Path::new("tests/exports/docker-compose.yml"),
        &std::fs::read_to_string(&compose).unwrap(),
    );
}

#[test]
fn the_manifests_map_each_part_to_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    export(&["kubernetes", DEMO, dir.path().to_str().unwrap()]);
    let docs = manifests(dir.path());
    let find = |kind: &str, name: &str| -> &Value {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    // Shards: a StatefulSet with its headless Service and a volume per shard,
    // the Pea's workspace on it, and no Deployment-only fields.
    let index = find("StatefulSet", "index");
    assert_eq!(index["spec"]["serviceName"], "index");
    assert_eq!(index["spec"]["replicas"], 2);
    assert!(index["spec"].get("strategy").is_none());
    assert_eq!(
        index["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "workspace"
    );
    let container = &index["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| {
        args[args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
            + 1]
    };
    assert_eq!(after("--workspace"), "/workspace");
    assert_eq!(after("--shard-id"), "auto");
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "workspace" && m["mountPath"] == "/workspace")
    );
    assert_eq!(find("Service", "index")["spec"]["clusterIP"], "None");
    // memory_hwm (the demo's 3 GiB for its index) plus the host's headroom.
    assert_eq!(container["resources"]["limits"]["memory"], "3328Mi");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["exec"]["command"][1], "ping", "{probe}");
    }
    // Replicas: a Deployment behind a headless Service; they connect to the head.
    let encode = find("Deployment", "encode");
    assert_eq!(encode["spec"]["replicas"], 2);
    assert_eq!(find("Service", "encode")["spec"]["clusterIP"], "None");
    // The head: one at a time, reachable before it is ready.
    let head = find("Deployment", "index-head");
    assert_eq!(head["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        find("Service", "index-head")["spec"]["publishNotReadyAddresses"],
        true
    );
    // The gateway gets the Flow file from a ConfigMap.
    assert!(
        find("ConfigMap", "text-search-hashing-flow")["data"]["flow.yml"]
            .as_str()
            .unwrap()
            .contains("vector_indexer.wasm")
    );
}

/// A Flow with the parts the demo does not have.
const OTHER_FLOW: &str = "pods:\n  - name: Store_1\n    uses: store.wasm\n    workspace: ws\n    memory_hwm: 256MiB\n  - name: rank\n    uses: rank.wasm\n    parallel: 3\n    uses_before: before.wasm\n    polling: all\n    env: {A: '1'}\n    memory_hwm: -1\n  - name: grid\n    uses: store.wasm\n    shards: 2\n    replicas: 2\n    workspace: ws\n";

#[test]
fn a_stateful_singleton_and_a_head_with_uses_before_map_too() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.yml");
    std::fs::write(&other, OTHER_FLOW).unwrap();
    export(&[
        "kubernetes",
        other.to_str().unwrap(),
        dir.path().join("k8s").to_str().unwrap(),
    ]);
    let docs = manifests(&dir.path().join("k8s"));
    let find = |kind: &str, name: &str| -> Value {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let store = find("StatefulSet", "store-1");
    assert_eq!(store["spec"]["replicas"], 1);
    assert_eq!(
        store["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    let container = &store["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    let args = container["args"].to_string();
    assert!(
        args.contains(r#""--name","Store_1""#)
            && args.contains(r#""--workspace","/workspace""#)
            && !args.contains("--shard-id"),
        "{args}"
    );
    let head = find("Deployment", "rank-head")["spec"]["template"]["spec"].clone();
    let args = head["containers"][0]["args"].to_string();
    assert!(
        args.contains(r#""--uses-before","/executors/before.wasm""#)
            && args.contains(r#""--polling","all""#)
            && args.contains(r#""--parallel","3""#),
        "{args}"
    );
    assert_eq!(
        head["initContainers"][0]["command"],
        json!(["cp", "/executors/before.wasm", "/shared/"])
    );
    let rank = find("Deployment", "rank");
    assert_eq!(rank["spec"]["replicas"], 3);
    // `memory_hwm: -1` (Jina's "no limit"): no container limit either.
    assert!(
        rank["spec"]["template"]["spec"]["containers"][0]["resources"].is_null(),
        "{rank}"
    );
    assert!(
        rank["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string()
            .contains(r#""--env","A=1""#)
    );
    let gateway =
        find("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    assert!(
        gateway.contains("Store_1=store-1:8081,store-1:8082")
            && gateway.contains("rank=rank-head:8081,rank-head:8082"),
        "{gateway}"
    );
    // Shards × replicas: a Deployment of 2 per shard, sharing the shard's
    // volume; the head knows both counts.
    let head = find("Deployment", "grid-head");
    let args = head["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains(r#""--shards","2""#) && args.contains(r#""--parallel","2""#),
        "{args}"
    );
    for shard in 0..2 {
        let unit = format!("grid-{shard}");
        let deployment = find("Deployment", &unit);
        assert_eq!(deployment["spec"]["replicas"], 2, "{deployment}");
        let spec = &deployment["spec"]["template"]["spec"];
        let args = spec["containers"][0]["args"].to_string();
        assert!(
            args.contains(&format!(
                r#""--shard-id","{shard}","--shard-count","2","--replica-id","auto""#
            )) && args.contains(r#""--workspace","/workspace""#),
            "{args}"
        );
        let claim = format!("{unit}-workspace");
        assert!(
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == claim.as_str()),
            "{spec}"
        );
        let pvc = find("PersistentVolumeClaim", &claim);
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteMany"]));
        find("Service", &unit);
    }
    let out = crate::util::jina_command()
        .args([
            "export",
            "kubernetes",
            other.to_str().unwrap(),
            "x",
            "--volume-size",
            "lots",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--volume-size `lots`: not a Kubernetes quantity")
    );
}

#[test]
fn the_manifests_validate_strictly_against_the_oldest_and_newest_kubernetes() {
    let python = crate::util::python_venv(
        "kubernetes-validate-venv",
        "tests/interop/kubernetes/requirements.txt",
    );
    let dir = tempfile::tempdir().unwrap();
    export(&[
        "kubernetes",
        DEMO,
        dir.path().to_str().unwrap(),
        "--namespace",
        "demo",
        "--storage-class",
        "fast",
    ]);
    // And the other kinds: a stateful singleton, uses_before, polling all,
    // env; and the Flow golden fixtures.
    let flows = tempfile::tempdir().unwrap();
    let other = flows.path().join("other.yml");
    std::fs::write(&other, OTHER_FLOW).unwrap();
    export(&[
        "kubernetes",
        other.to_str().unwrap(),
        dir.path().join("other").to_str().unwrap(),
    ]);
    for fixture in ["chain", "join"] {
        export(&[
            "kubernetes",
            &format!("tests/flows/valid/{fixture}.yml"),
            dir.path().join(fixture).to_str().unwrap(),
        ]);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in ["", "other", "chain", "join"] {
        files.extend(
            std::fs::read_dir(dir.path().join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yml")),
        );
    }
    assert!(files.len() > 15, "{files:?}");
    let validate = |files: &[PathBuf]| {
        Command::new(&python)
            .arg("tests/interop/kubernetes/validate.py")
            .args(files)
            .output()
            .unwrap()
    };
    let out = validate(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let versions: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    assert_eq!(versions.len(), 2, "{stdout}");
    assert_ne!(versions[0], versions[1], "{stdout}");
    // The validator is strict: a Deployment's `strategy` in a StatefulSet (what
    // Jina's export wrote) is rejected.
    let text = std::fs::read_to_string(dir.path().join("index.yml"))
        .unwrap()
        .replacen(
            "  podManagementPolicy: Parallel\n",
            "  podManagementPolicy: Parallel\n  strategy:\n    type: Recreate\n",
            1,
        );
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, text).unwrap();
    let out = validate(&[bad]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("'strategy' was unexpected"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The keys of a Compose service (compose-spec) this export may use.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "entrypoint",
    "command",
    "environment",
    "restart",
    "healthcheck",
    "volumes",
    "depends_on",
    "ports",
    "configs",
    "mem_limit",
    "deploy",
    "hostname",
    "user",
];

#[test]
fn the_compose_file_publishes_only_the_gateway_and_checks_health() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yml");
    export(&[
        "docker-compose",
        DEMO,
        file.to_str().unwrap(),
        "--image",
        "registry.example/jina-wasm:1",
    ]);
    let compose: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let top: Vec<&String> = compose.as_object().unwrap().keys().collect();
    assert!(
        top.iter()
            .all(|k| ["name", "services", "volumes", "configs"].contains(&k.as_str())),
        "{top:?}"
    );
    let services = compose["services"].as_object().unwrap();
    let volumes = compose["volumes"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "encode",
            "encode-head",
            "executors",
            "gateway",
            "index-0",
            "index-1",
            "index-head",
            "segment"
        ]
    );
    for (name, service) in services {
        for key in service.as_object().unwrap().keys() {
            assert!(
                SERVICE_KEYS.contains(&key.as_str()),
                "service {name}: `{key}`"
            );
        }
        assert_eq!(
            service.get("ports").is_some(),
            name == "gateway",
            "service {name} publishes a port"
        );
        for mount in service["volumes"].as_array().into_iter().flatten() {
            let volume = mount.as_str().unwrap().split(':').next().unwrap();
            assert!(
                volumes.contains_key(volume),
                "service {name} mounts undeclared volume {volume}"
            );
        }
        for dependency in service["depends_on"]
            .as_object()
            .into_iter()
            .flat_map(|d| d.keys())
        {
            assert!(
                services.contains_key(dependency),
                "service {name} depends on unknown {dependency}"
            );
        }
        if name == "executors" {
            continue;
        }
        assert_eq!(service["image"], "registry.example/jina-wasm:1");
        let test: Vec<&str> = service["healthcheck"]["test"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(&test[..3], ["CMD", "jina-wasm", "ping"], "service {name}");
    }
    assert_eq!(
        services["gateway"]["ports"],
        json!([{"target": 8080, "published": "8080", "protocol": "tcp"}])
    );
    // Each shard its own host name (its shard id) and named volume.
    for i in 0..2 {
        let shard = &services[&format!("index-{i}")];
        assert_eq!(shard["hostname"], format!("index-{i}"));
        assert_eq!(
            shard["volumes"][1],
            format!("index-{i}-workspace:/workspace")
        );
    }
    assert_eq!(services["encode"]["deploy"]["replicas"], 2);
    assert!(
        compose["configs"]["flow"]["content"]
            .as_str()
            .unwrap()
            .contains("pods:")
    );
}

#[test]
fn bad_flows_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("f.yml");
    std::fs::write(
        &flow,
        "pods:\n  - name: a\n    uses: x/same.wasm\n  - name: b\n    uses: y/same.wasm\n",
    )
    .unwrap();
    let out = crate::util::jina_command()
        .args(["export", "kubernetes"])
        .arg(&flow)
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("pod `b`")
            && stderr.contains("same file name `same.wasm`"),
        "{stderr}"
    );
    std::fs::write(
        &flow,
        "pods:\n  - name: A_b\n    uses: a.wasm\n  - name: a-b\n    uses: b.wasm\n",
    )
    .unwrap();
    let out = crate::util::jina_command()
        .args(["export", "docker-compose"])
        .arg(&flow)
        .arg(dir.path().join("c.yml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("pods `A_b` and `a-b` both become `a-b`"),
        "{stderr}"
    );
}

/// `jina-wasm client` against the gateway at `host:port`; its stdout.
fn client(host: &str, port: u16, args: &[&str], input: &str) -> String {
    let port = port.to_string();
    let mut all = vec!["client", "--host", host, "--port", &port];
    all.extend(args);
    let out = crate::cli::jina(&all, input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Index the corpus, then the ranked matches (id and score) of each query.
fn index_and_search(host: &str, port: u16) -> Vec<Vec<(String, Value)>> {
    client(
        host,
        port,
        &["--endpoint", "/index"],
        &std::fs::read_to_string("examples/data/corpus.txt").unwrap(),
    );
    search(host, port)
}

/// The ranked matches (id and score) of each query.
fn search(host: &str, port: u16) -> Vec<Vec<(String, Value)>> {
    let queries = "why does bread taste sour\nhow do animals find food in the dark\nwhat makes writes survive a crash\nmoon and the sea\n";
    client(
        host,
        port,
        &["--endpoint", "/search", "--parameters", r#"{"top_k": 3}"#],
        queries,
    )
    .lines()
    .map(|line| {
        let doc: Value = serde_json::from_str(line).unwrap();
        doc["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap().to_string(), m["scores"].clone()))
            .collect()
    })
    .collect()
}

/// What an exported cluster answers, after checking its heads and volumes.
/// `shard` names shard `i`'s pod (its volume's directory).
fn serve_exported(
    cluster: &local_cluster::LocalCluster,
    shard: impl Fn(usize) -> String,
) -> Vec<Vec<(String, Value)>> {
    let hosts = &cluster.hosts;
    // Every replica joined its head on its own, and both shards are connected.
    // A head that was just restarted is ready before its Peas have
    // reconnected (they back off and retry), so this waits for them.
    for (head, expected) in [("encode-head", 2), ("index-head", 2)] {
        let address = format!("{}:8083", hosts[head]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = crate::cli::jina(&["ping", &address, "--json"], "");
            let status: Value = serde_json::from_slice(&out.stdout).unwrap();
            if status["connected"].as_array().map(Vec::len) == Some(expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{head}: {expected} Peas not connected within 30 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let answers = index_and_search(&hosts["gateway"], 8080);
    // Each shard claimed its directory on its own volume, as in a Pod.
    for i in 0..2 {
        let volume = cluster
            .dir
            .path()
            .join(format!("volumes/{}/index", shard(i)));
        // (A record of unsaved writes may sit beside the shard too.)
        let mut shards: Vec<String> = std::fs::read_dir(&volume)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".unsaved.json"))
            .collect();
        shards.sort();
        assert_eq!(
            shards,
            [format!("shard-{i}"), format!("shard-{i}.json")],
            "{}",
            volume.display()
        );
    }
    answers
}

#[test]
fn the_exported_units_run_as_processes_and_answer_like_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let guests = wasm("passthrough").parent().unwrap().to_path_buf();
    let yaml = std::fs::read_to_string(DEMO)
        .unwrap()
        .replace("../../target/wasm32-wasip2/release", "{W}")
        .replace("../../target/demo-workspace", "workspace");
    let flow = crate::flow::FlowProcess::start(&yaml);
    let local = index_and_search("127.0.0.1", flow.port());
    drop(flow);
    assert_eq!(local.len(), 4);
    assert!(local.iter().all(|m| m.len() == 3), "{local:?}");

    // Kubernetes: StatefulSet pods index-0 and index-1.
    export(&["kubernetes", DEMO, dir.path().join("k8s").to_str().unwrap()]);
    let mut cluster = local_cluster::LocalCluster::kubernetes(
        &dir.path().join("k8s"),
        &bin(),
        &guests,
        cache_dir(),
    );
    let exported = serve_exported(&cluster, |i| format!("index-{i}"));
    assert_eq!(
        exported, local,
        "the Kubernetes units answer differently from `jina-wasm flow`"
    );
    // Both heads rescheduled: their shards and replicas connect again and
    // announce themselves, the gateway reconnects, the index is still there.
    cluster.restart("index-head-");
    cluster.restart("encode-head-");
    let again = search(&cluster.hosts["gateway"], 8080);
    assert_eq!(again, local, "after the heads restarted");
    drop(cluster);

    // Compose: services index-0 and index-1 with those host names.
    let file = dir.path().join("compose.yml");
    export(&["docker-compose", DEMO, file.to_str().unwrap()]);
    let cluster = local_cluster::LocalCluster::compose(&file, &bin(), &guests, cache_dir());
    let exported = serve_exported(&cluster, |i| format!("index-{i}"));
    drop(cluster);
    assert_eq!(
        exported, local,
        "the Compose services answer differently from `jina-wasm flow`"
    );
}

/// A process whose first stdout line is its JSON ready line, killed on drop.
struct Unit(Child, Value);

impl Unit {
    fn start(args: &[&str], hostname: &str) -> Unit {
        use std::io::BufRead;
        let mut child = crate::util::jina_command()
            .args(args)
            .env("JINA_WASM_LOG", "warn")
            .env("HOSTNAME", hostname)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{args:?}: no ready line ({e}): {line}"));
        Unit(child, ready)
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A head-only Pod of shards × replicas (as exported): replicas join the
/// shard their `--shard-id` names, under their host names; the head is
/// healthy once every shard has one, and each shard's part goes to one of
/// its replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_of_shards_times_replicas_takes_the_replicas_of_each_shard() {
    let guest = wasm("misbehave");
    let guest = guest.to_str().unwrap();
    let head = Unit::start(
        &[
            "pod",
            "--role",
            "head",
            "--uses",
            guest,
            "--name",
            "grid",
            "--shards",
            "2",
            "--parallel",
            "2",
        ],
        "head",
    );
    let ctrl = head.1["ctrl"].as_str().unwrap().to_string();
    let port = |key: &str| {
        head.1[key]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let (fanout, parts) = (port("fanout"), port("parts"));
    let pea = |shard: &str, hostname: &str| {
        let args = [
            "pea",
            "--uses",
            guest,
            "--name",
            "grid",
            "--socket-in",
            "DEALER_CONNECT",
            "--port-in",
            &fanout,
            "--socket-out",
            "PUSH_CONNECT",
            "--port-out",
            &parts,
            "--shard-id",
            shard,
            "--shard-count",
            "2",
            "--replica-id",
            "auto",
        ];
        Unit::start(&args, hostname)
    };
    let status_until = |what: &str, done: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = crate::cli::jina(&["ping", ctrl.trim_start_matches("tcp://"), "--json"], "");
            let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let _a = pea("0", "web-a");
    let _b = pea("0", "web-b");
    let status = status_until("both replicas of shard 0", &|s| {
        s["connected"].as_array().is_some_and(|c| c.len() == 2)
    });
    assert_eq!(status["healthy"], false, "shard 1 has no replica: {status}");
    assert_eq!(
        status["connected"],
        json!(["grid/shard-0/replica-web-a", "grid/shard-0/replica-web-b"]),
        "{status}"
    );
    let _c = pea("1", "web-c");
    status_until("healthy with a replica of each shard", &|s| {
        s["healthy"] == true
    });

    let mut client = jina_wasm::client::Client::open(&jina_wasm::client::Target::pea(
        head.1["in"].as_str().unwrap(),
        head.1["out"].as_str().unwrap(),
    ))
    .await
    .unwrap();
    let mut places = std::collections::BTreeSet::new();
    for k in 0..10 {
        let docs: Vec<jina_wasm::Document> = (0..6)
            .map(|i| crate::util::text_doc(&format!("h{k}-{i}"), "x"))
            .collect();
        let reply = client
            .call(crate::pod::message(
                "/only",
                json!({"who": "nobody"}),
                &docs,
            ))
            .await
            .unwrap();
        assert_eq!(reply.envelope.status, jina_wasm::wire::Status::Success);
        for d in crate::pod::documents(&reply) {
            let place = d.tags["place"].as_str().unwrap().to_string();
            let shard = jina_wasm::pod::shard_of(&d.id, 2);
            assert!(
                place.starts_with(&format!("shard-{shard}/replica-web-")),
                "{}: {place}",
                d.id
            );
            places.insert(place);
        }
    }
    assert_eq!(
        places.into_iter().collect::<Vec<_>>(),
        [
            "shard-0/replica-web-a",
            "shard-0/replica-web-b",
            "shard-1/replica-web-c"
        ]
    );

    // A second Pea under web-c's name (a replacement started while the
    // first still hung, or a copy-paste of its id) takes the work; when it
    // goes, the first, still connected, serves on: the shard is not lost.
    let twin = pea("1", "web-c");
    let twin_ctrl = twin.1["ctrl"].as_str().unwrap().to_string();
    let twin_requests = || {
        let out = crate::cli::jina(
            &["ping", twin_ctrl.trim_start_matches("tcp://"), "--json"],
            "",
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)["requests"]
            .as_u64()
            .unwrap_or(0)
    };
    let call = |k: usize| {
        let docs: Vec<jina_wasm::Document> = (0..6)
            .map(|i| crate::util::text_doc(&format!("t{k}-{i}"), "x"))
            .collect();
        crate::pod::message("/only", json!({"who": "nobody"}), &docs)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 0;
    while twin_requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the second Pea of web-c's name never took work"
        );
        let reply = client.call(call(k)).await.unwrap();
        assert_eq!(reply.envelope.status, jina_wasm::wire::Status::Success);
        k += 1;
    }
    drop(twin);
    for k in 100..110 {
        let reply = client.call(call(k)).await.unwrap();
        assert_eq!(
            reply.envelope.status,
            jina_wasm::wire::Status::Success,
            "the first Pea of web-c's name serves on"
        );
    }
    client.close().await;
}

#[test]
fn a_head_is_alive_at_once_and_healthy_when_its_shards_have_connected() {
    let indexer = wasm("vector-indexer");
    let indexer = indexer.to_str().unwrap();
    let head = Unit::start(
        &[
            "pod", "--role", "head", "--uses", indexer, "--name", "idx", "--shards", "2",
        ],
        "head",
    );
    let ctrl = head.1["ctrl"]
        .as_str()
        .unwrap()
        .trim_start_matches("tcp://")
        .to_string();
    let ping = |extra: &[&str]| {
        let mut args = vec!["ping", ctrl.as_str(), "--json"];
        args.extend(extra);
        let out = crate::cli::jina(&args, "");
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
        )
    };
    let (code, status) = ping(&[]);
    assert_eq!(code, Some(1), "no shard yet: {status}");
    assert_eq!(status["expected"], 2);
    assert_eq!(ping(&["--alive"]).0, Some(0));
    let port = |key: &str| {
        head.1[key]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let (fanout, parts) = (port("fanout"), port("parts"));
    // Each shard its own workspace, as each has its own volume in a cluster
    // (a Pea started with --shard-id refuses one that holds another shard).
    let workspaces = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let pea = |hostname: &str| {
        let workspace = &workspaces[usize::from(hostname.ends_with('1'))];
        let args = [
            // By host name, as in a cluster (looked up on each connect).
            "pea",
            "--uses",
            indexer,
            "--name",
            "idx",
            "--socket-in",
            "DEALER_CONNECT",
            "--host-in",
            "localhost",
            "--port-in",
            &fanout,
            "--socket-out",
            "PUSH_CONNECT",
            "--host-out",
            "localhost",
            "--port-out",
            &parts,
            "--shard-id",
            "auto",
            "--shard-count",
            "2",
            "--workspace",
            workspace.path().to_str().unwrap(),
        ];
        Unit::start(&args, hostname)
    };
    let _first = pea("idx-1");
    let _second = pea("idx-0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, status) = ping(&[]);
        if code == Some(0) {
            assert_eq!(
                status["connected"],
                json!(["idx/shard-0", "idx/shard-1"]),
                "{status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shards never connected: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        workspaces[0].path().join("idx/shard-0").is_dir()
            && workspaces[1].path().join("idx/shard-1").is_dir()
    );
}

#[test]
fn unit_flags_that_do_not_fit_are_refused_with_the_reason() {
    let indexer = wasm("vector-indexer");
    let out = crate::cli::jina(
        &[
            "pea",
            "--uses",
            indexer.to_str().unwrap(),
            "--shard-id",
            "index-5",
            "--shard-count",
            "2",
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--shard-id `index-5`: shard 5 does not exist"),
        "{stderr}"
    );
    let out = crate::cli::jina(
        &[
            "pea",
            "--uses",
            indexer.to_str().unwrap(),
            "--shard-id",
            "index",
            "--shard-count",
            "2",
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("neither a number nor a name ending in -NUMBER")
    );
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("f.yml");
    std::fs::write(
        &flow,
        "pods:\n  - name: a\n    uses: a.wasm\n  - name: b\n    uses: b.wasm\n",
    )
    .unwrap();
    let flow = flow.to_str().unwrap();
    let out = crate::cli::jina(
        &["gateway", "--uses", flow, "--pod-address", "a=x:1,x:2"],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("pod `b`")
            && stderr.contains("has no --pod-address"),
        "{stderr}"
    );
    let out = crate::cli::jina(
        &[
            "gateway",
            "--uses",
            flow,
            "--pod-address",
            "a=x:1,x:2",
            "--pod-address",
            "c=x:1,x:2",
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pod-address `c`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::cli::jina(&["gateway", "--uses", flow, "--pod-address", "a=x:1"], "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not NAME=HOST:PORT_IN,HOST:PORT_OUT")
    );
}
