//! `jina-wasm daemon`: real daemon processes on loopback aliases (127.0.0.2,
//! 127.0.0.3: two hosts on one machine), real uploads, real Pods as child
//! processes, a real Flow whose Pods are split across the two.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{cache_dir, wasm};

const FLOW_TOKEN: &str = "flow-tenant-token";

/// A `jina-wasm daemon` process on `host`, with its data dir; stopped (SIGTERM,
/// then SIGKILL) on drop.
pub struct DaemonProcess {
    child: Child,
    pub host: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl DaemonProcess {
    pub fn start(host: &str, tenants: &str, extra: &[&str]) -> DaemonProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tenants.yml"), tenants).unwrap();
        let mut child = crate::util::jina_command()
            .args(["daemon", "--host", host, "--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tenants")
            .arg(dir.path().join("tenants.yml"))
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(extra)
            .env("JINA_WASM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready line ({e}): {line}"));
        DaemonProcess {
            child,
            host: host.to_string(),
            port: ready["port"].as_u64().unwrap() as u16,
            dir,
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// One HTTP/1.1 request; the status and the body (JSON when it is JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Value) {
        http(
            &self.host,
            self.port,
            method,
            path,
            token,
            content_type,
            body,
        )
    }

    /// A JSON POST to another server on `host:port` (a gateway the daemon started).
    pub fn call_at(host: &str, port: u16, path: &str, body: &Value) -> (u16, Value) {
        http(
            host,
            port,
            "POST",
            path,
            None,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    pub fn json(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.call(method, path, Some(token), "application/json", &bytes)
    }

    /// Uploads (name, bytes) parts into workspace `ws`.
    pub fn upload(&self, token: &str, ws: &str, parts: &[(&str, Vec<u8>)]) -> (u16, Value) {
        self.upload_as(Some(token), ws, parts)
    }

    /// Uploads as [`DaemonProcess::upload`], with any token or none.
    pub fn upload_as(
        &self,
        token: Option<&str>,
        ws: &str,
        parts: &[(&str, Vec<u8>)],
    ) -> (u16, Value) {
        let mut form = reqwest::blocking::multipart::Form::new();
        for (name, bytes) in parts {
            form = form.part(
                "file",
                reqwest::blocking::multipart::Part::bytes(bytes.clone())
                    .file_name(name.to_string()),
            );
        }
        let mut request = crate::util::http()
            .post(format!(
                "http://{}:{}/workspaces/{ws}/files",
                self.host, self.port
            ))
            .multipart(form);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer("POST", &format!("/workspaces/{ws}/files"), request)
    }

    /// SIGTERM, and waits for the daemon to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        crate::util::signal(self.child.id(), rustix::process::Signal::TERM);
        wait_for(&mut self.child, Duration::from_secs(30))
            .expect("the daemon did not stop within 30s")
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        crate::util::signal(self.child.id(), rustix::process::Signal::TERM);
        if wait_for(&mut self.child, Duration::from_secs(15)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request to `host:port`; the status and the body (JSON when it is JSON).
fn http(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let verb = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = crate::util::http()
        .request(verb, format!("http://{host}:{port}{path}"))
        .header("content-type", content_type)
        .body(body.to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(method, path, request)
}

/// Sends `request`; the status and the body (JSON when it is JSON).
fn answer(method: &str, path: &str, request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e:?}"));
    let code = response.status().as_u16();
    let text = response
        .text()
        .unwrap_or_else(|e| panic!("{method} {path}: the answer broke off: {e:?}"));
    (
        code,
        serde_json::from_str(text.trim()).unwrap_or(Value::String(text)),
    )
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// True while a process with this pid exists (and is not a zombie).
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// A `jina-wasm flow` process with the daemon token in its environment; its
/// stderr in a file; killed on drop.
struct Flow {
    child: Child,
    port: u16,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Flow {
    fn start(yaml: &str, extra: &[&str]) -> Flow {
        let dir = tempfile::tempdir().unwrap();
        let guests = wasm("passthrough").parent().unwrap().to_path_buf();
        let file = dir.path().join("flow.yml");
        std::fs::write(&file, yaml.replace("{W}", guests.to_str().unwrap())).unwrap();
        let stderr = dir.path().join("stderr.log");
        let mut child = crate::util::jina_command()
            .args(["flow", "--uses"])
            .arg(&file)
            .args(extra)
            .env("JINA_WASM_LOG", "warn")
            .env("JINA_WASM_DAEMON_TOKEN", FLOW_TOKEN)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "no ready line ({e}): {line}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        Flow {
            child,
            port: ready["port"].as_u64().unwrap() as u16,
            stderr,
            _dir: dir,
        }
    }

    fn client(&self, endpoint: &str, parameters: &str, input: &str) -> Vec<Value> {
        let port = self.port.to_string();
        let out = crate::cli::jina(
            &[
                "client",
                "--port",
                &port,
                "--endpoint",
                endpoint,
                "--parameters",
                parameters,
            ],
            input,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flow_tenants() -> String {
    format!("tenants:\n  - name: flows\n    token: {FLOW_TOKEN}\n")
}

/// The demo's Pods: `segment`, `encode`, a two-shard `index` with match-merger;
/// `hosts` places them (None: local).
fn search_flow(hosts: [Option<&str>; 3]) -> String {
    let host = |h: Option<&str>| h.map_or_else(String::new, |h| format!("    host: {h}\n"));
    format!(
        "with:\n  timeout: 60s\npods:\n  - name: segment\n    uses: {{W}}/sentence_segmenter.wasm\n{}  - name: encode\n    uses: {{W}}/text_encoder.wasm\n{}  - name: index\n    uses: {{W}}/vector_indexer.wasm\n    shards: 2\n    polling:\n      /index: any\n      /search: all\n    uses_after: {{W}}/match_merger.wasm\n    with:\n      traversal: chunks\n    workspace: workspace\n{}",
        host(hosts[0]),
        host(hosts[1]),
        host(hosts[2])
    )
}

/// Indexes the demo corpus and asks three questions; the ranked match ids and scores.
fn index_and_search(flow: &Flow) -> Vec<Value> {
    let corpus = std::fs::read_to_string("examples/data/corpus.txt").unwrap();
    flow.client("/index", "{}", &corpus);
    let queries = "what makes writes survive a crash\nhow do plants make food\nwhich protocol carries web pages\n";
    flow.client("/search", r#"{"top_k": 3}"#, queries)
        .iter()
        .map(|answer| {
            let matches: Vec<Value> = answer["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| json!([m["id"], m["scores"]]))
                .collect();
            json!({"text": answer["text"], "matches": matches})
        })
        .collect()
}

#[test]
fn a_flow_split_over_two_daemons_finds_what_the_local_flow_finds() {
    let a = DaemonProcess::start("127.0.0.2", &flow_tenants(), &[]);
    let b = DaemonProcess::start("127.0.0.3", &flow_tenants(), &[]);
    let local = {
        let flow = Flow::start(&search_flow([None, None, None]), &[]);
        index_and_search(&flow)
    };
    assert_eq!(local.len(), 3);
    assert!(
        local
            .iter()
            .all(|q| q["matches"].as_array().unwrap().len() == 3),
        "{local:?}"
    );

    // segment on 127.0.0.2, encode here, the sharded index on 127.0.0.3.
    let (host_a, host_b) = (a.address(), b.address());
    let mut flow = Flow::start(
        &search_flow([Some(&host_a), None, Some(&host_b)]),
        &["--workspace-id", "split"],
    );
    let (code, pods) = b.json("GET", "/pods", FLOW_TOKEN, &Value::Null);
    assert_eq!(code, 200);
    assert_eq!(pods[0]["name"], "index", "{pods}");
    assert_eq!(pods[0]["pea_count"], 3, "two shards and the merger: {pods}");
    assert!(
        pods[0]["in"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.3:"),
        "bound on the daemon's host: {pods}"
    );
    let remote = index_and_search(&flow);
    assert_eq!(remote, local, "the split Flow answers as the local one");

    // The index's state is on B, in the workspace the Flow named.
    let (code, ws) = b.json("GET", "/workspaces/split", FLOW_TOKEN, &Value::Null);
    assert_eq!(code, 200, "{ws}");
    assert!(
        ws["files"]["vector_indexer.wasm"]["sha256"].is_string()
            && ws["state_bytes"].as_u64().unwrap() > 0,
        "{ws}"
    );

    // Remote logs arrive on the Flow's stderr, tagged with the daemon and the Pod.
    let tag = format!("[{host_b} index]");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flow.stderr().contains(&tag) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        flow.stderr().contains(&tag) && flow.stderr().contains(&format!("[{host_a} segment]")),
        "{}",
        flow.stderr()
    );

    // A stopped Flow deletes its remote Pods.
    crate::util::signal(flow.child.id(), rustix::process::Signal::TERM);
    let status = wait_for(&mut flow.child, Duration::from_secs(60)).expect("the Flow did not stop");
    assert!(status.success(), "{}", flow.stderr());
    for daemon in [&a, &b] {
        assert_eq!(
            daemon.json("GET", "/pods", FLOW_TOKEN, &Value::Null).1,
            json!([]),
            "{}",
            flow.stderr()
        );
    }

    // Its state survives on B: a second run with the same workspace id finds
    // the index without indexing again, and nothing is uploaded twice.
    let flow = Flow::start(
        &search_flow([Some(&host_a), None, Some(&host_b)]),
        &["--workspace-id", "split", "--quiet-remote-logs"],
    );
    let queries = "what makes writes survive a crash\n";
    let answer = flow.client("/search", r#"{"top_k": 3}"#, queries);
    assert_eq!(
        answer[0]["matches"].as_array().unwrap().len(),
        3,
        "{answer:?}"
    );
    assert_eq!(
        json!([
            answer[0]["matches"][0]["id"],
            answer[0]["matches"][0]["scores"]
        ]),
        local[0]["matches"][0]
    );
    assert!(
        !flow.stderr().contains(&tag),
        "--quiet-remote-logs: {}",
        flow.stderr()
    );
}

const TENANTS: &str = "tenants:
  - name: alice
    token: alice-token
    quota: {max_peas: 2, memory_per_pea: 256MiB, total_memory: 300MiB}
  - name: bob
    token: bob-token-x
  - name: tiny
    token: tiny-token
    quota: {disk: 100KiB}
";

#[test]
fn tenants_see_only_their_own_and_quotas_and_names_are_enforced() {
    let d = DaemonProcess::start("127.0.0.2", TENANTS, &["--max-upload", "1MiB"]);
    let (alice, bob) = ("alice-token", "bob-token-x");
    let passthrough = std::fs::read(wasm("passthrough")).unwrap();

    // No token, a malformed one, a wrong one: 401, for reads and for uploads.
    assert_eq!(d.call("GET", "/pods", None, "text/plain", b"").0, 401);
    assert_eq!(
        d.call("GET", "/pods", Some("alice-tokeN"), "text/plain", b"")
            .0,
        401
    );
    let (code, answer) = d.call("GET", "/workspaces", Some(""), "text/plain", b"");
    assert_eq!(code, 401, "{answer}");
    assert_eq!(
        d.upload_as(None, "w", &[("p.wasm", passthrough.clone())]).0,
        401
    );

    // Alice uploads and starts a Pea.
    let (code, up) = d.upload(alice, "w", &[("passthrough.wasm", passthrough.clone())]);
    assert_eq!(code, 200, "{up}");
    let (code, pea) = d.json(
        "POST",
        "/peas",
        alice,
        &json!({"workspace": "w", "uses": "passthrough.wasm", "memory_hwm": "128MiB"}),
    );
    assert_eq!(code, 201, "{pea}");
    let id = pea["id"].as_str().unwrap().to_string();
    assert_eq!(pea["state"], "running");

    // Bob sees none of it, and cannot touch it.
    assert_eq!(d.json("GET", "/peas", bob, &Value::Null), (200, json!([])));
    assert_eq!(
        d.json("GET", "/workspaces", bob, &Value::Null),
        (200, json!([]))
    );
    for (method, path) in [
        ("GET", format!("/peas/{id}")),
        ("GET", format!("/peas/{id}/logs")),
        ("GET", format!("/peas/{id}/logs/stream")),
        ("PUT", format!("/peas/{id}/lease")),
        ("DELETE", format!("/peas/{id}")),
        ("GET", "/workspaces/w".into()),
        ("GET", "/workspaces/w/files/passthrough.wasm".into()),
        ("DELETE", "/workspaces/w".into()),
    ] {
        let (code, answer) = d.json(method, &path, bob, &Value::Null);
        assert_eq!(code, 404, "bob: {method} {path}: {answer}");
    }
    let (code, answer) = d.json(
        "POST",
        "/peas",
        bob,
        &json!({"workspace": "w", "uses": "passthrough.wasm"}),
    );
    assert_eq!(
        code, 404,
        "bob cannot start from alice's workspace: {answer}"
    );
    // Nor the Pea under the other kind's route.
    assert_eq!(
        d.json("GET", &format!("/pods/{id}"), alice, &Value::Null).0,
        404
    );
    // Alice's Pea is still there, with its log.
    let (code, shown) = d.json("GET", &format!("/peas/{id}"), alice, &Value::Null);
    assert_eq!(
        (code, &shown["state"], &shown["status"]["healthy"]),
        (200, &json!("running"), &json!(true)),
        "{shown}"
    );
    let (code, log) = d.json("GET", &format!("/peas/{id}/logs"), alice, &Value::Null);
    assert!(
        code == 200 && log.as_str().unwrap().contains("ready"),
        "{log}"
    );

    // The live stream: the log so far, then `end` once the Pea is deleted.
    let stream = crate::util::http()
        .get(format!(
            "http://{}:{}/peas/{id}/logs/stream",
            d.host, d.port
        ))
        .bearer_auth(alice)
        .send()
        .unwrap();
    let mut seen = format!("{:?}\n", stream.headers().get("content-type"));
    let mut reader = std::io::BufReader::new(stream);
    while !seen.contains("ready") {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended: {seen}"
        );
        seen.push_str(&line);
    }
    assert!(
        seen.contains("text/event-stream") && seen.contains("data: "),
        "{seen}"
    );

    // A file that is not an executor: 422 with the reason from its log; the
    // daemon goes on serving.
    let (code, _) = d.upload(
        alice,
        "w",
        &[(
            "wrong_world.wasm",
            std::fs::read(wasm("wrong-world")).unwrap(),
        )],
    );
    assert_eq!(code, 200);
    let (code, answer) = d.json(
        "POST",
        "/pods",
        alice,
        &json!({"workspace": "w", "uses": "wrong_world.wasm", "memory_hwm": "64MiB"}),
    );
    assert_eq!(code, 422, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("pod `wrong_world` did not start") && message.contains("wrong_world.wasm"),
        "{message}"
    );
    assert_eq!(
        d.json("GET", "/pods", alice, &Value::Null),
        (200, json!([]))
    );

    // Quotas: 4xx naming the limit; nothing is started.
    let refuse = |body: Value, code: u16, words: &str| {
        let (got, answer) = d.json("POST", "/pods", alice, &body);
        assert_eq!(got, code, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(words) && message.contains("tenant `alice`"),
            "{message}"
        );
    };
    refuse(
        json!({"workspace": "w", "uses": "passthrough.wasm", "memory_hwm": "512MiB"}),
        403,
        "memory_per_pea 256 MiB",
    );
    // Jina's `-1` (no limit) counts as wasm32's 4 GiB, for a Pod and for a
    // Pod of an uploaded Flow alike (found by a hostile test: the Flow's
    // check said `-1` was not a number).
    refuse(
        json!({"workspace": "w", "uses": "passthrough.wasm", "memory_hwm": "-1"}),
        403,
        "memory_per_pea 256 MiB",
    );
    let (code, up) = d.upload(
        alice,
        "w",
        &[(
            "unlimited.yml",
            b"pods:\n  - name: p\n    uses: passthrough.wasm\n    memory_hwm: -1\n".to_vec(),
        )],
    );
    assert_eq!(code, 200, "{up}");
    let (code, answer) = d.json(
        "POST",
        "/flows",
        alice,
        &json!({"workspace": "w", "uses": "unlimited.yml"}),
    );
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        code == 403 && message.contains("memory_per_pea 256 MiB"),
        "{code} {answer}"
    );
    refuse(
        json!({"workspace": "w", "uses": "passthrough.wasm", "parallel": 2, "memory_hwm": "64MiB"}),
        403,
        "max_peas 2",
    );
    refuse(
        json!({"workspace": "w", "uses": "passthrough.wasm", "memory_hwm": "256MiB"}),
        403,
        "total_memory 300 MiB",
    );
    let (code, tenant) = d.json("GET", "/tenant", alice, &Value::Null);
    assert_eq!(
        (code, &tenant["usage"]["peas"], &tenant["usage"]["memory"]),
        (200, &json!(1), &json!(128 << 20)),
        "{tenant}"
    );
    assert!(
        tenant["usage"]["rss_bytes"].as_u64().unwrap() > 0,
        "{tenant}"
    );
    let (code, answer) = d.upload(
        "tiny-token",
        "w",
        &[("passthrough.wasm", passthrough.clone())],
    );
    assert_eq!(code, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("disk quota: tenant `tiny`"),
        "{answer}"
    );
    let (code, answer) = d.upload(bob, "w", &[("big.bin", vec![7u8; 1536 << 10])]);
    assert_eq!(code, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("1 MiB per file (--max-upload)"),
        "{answer}"
    );

    // Names that escape: refused, nothing written outside the workspace.
    for name in [
        "../evil.wasm",
        "/tmp/evil.wasm",
        "a/../../evil.wasm",
        "..",
        "a\\..\\evil",
    ] {
        let (code, answer) = d.upload(bob, "w", &[(name, b"x".to_vec())]);
        assert_eq!(code, 400, "{name}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("is refused"),
            "{answer}"
        );
    }
    // A workspace id `..`: an HTTP library folds `..` out of a URL's path
    // before sending it, a hostile client need not, so this one is written raw.
    let raw = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect((d.host.as_str(), d.port)).unwrap();
        let body = "--x--\r\n";
        write!(
            stream,
            "POST /workspaces/../files HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer {bob}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(
        raw.starts_with("HTTP/1.1 400") && raw.contains("workspace id"),
        "{raw}"
    );
    let (code, answer) = d.json(
        "POST",
        "/peas",
        alice,
        &json!({"workspace": "w", "uses": "../../../bob/workspaces/w/files/x"}),
    );
    assert_eq!(code, 400, "{answer}");
    let data = d.dir.path().join("data");
    let all: Vec<String> = walk(&data)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(!all.iter().any(|p| p.contains("evil")), "{all:?}");
    // A link inside a workspace (the daemon never makes one) is not followed.
    std::os::unix::fs::symlink("/etc", data.join("tenants/alice/workspaces/w/files/etc")).unwrap();
    let (code, answer) = d.json(
        "POST",
        "/peas",
        alice,
        &json!({"workspace": "w", "uses": "etc/hostname"}),
    );
    assert!(
        code == 400 && answer["error"].as_str().unwrap().contains("symbolic link"),
        "{answer}"
    );
    std::fs::remove_file(data.join("tenants/alice/workspaces/w/files/etc")).unwrap();

    // A workspace in use is kept; deleting the Pea ends its stream and its process.
    assert_eq!(
        d.json("DELETE", "/workspaces/w", alice, &Value::Null).0,
        409
    );
    let pid = pea["pid"].as_u64().unwrap();
    assert_eq!(
        d.json("DELETE", &format!("/peas/{id}"), alice, &Value::Null)
            .0,
        200
    );
    assert!(!running(pid), "the Pea's process is gone");
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(rest.contains("event: end"), "{rest}");
    assert_eq!(
        d.json("GET", &format!("/peas/{id}"), alice, &Value::Null).0,
        404
    );
    let (code, answer) = d.json("DELETE", "/workspaces/w", alice, &Value::Null);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        std::fs::read_dir(data.join("tenants/alice/blobs"))
            .unwrap()
            .count(),
        0,
        "no blob left"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_killed_flow_leaves_nothing_behind_and_a_stopped_daemon_stops_everything() {
    let mut d = DaemonProcess::start("127.0.0.3", &flow_tenants(), &[]);
    let yaml = format!(
        "pods:\n  - name: echo\n    uses: {{W}}/passthrough.wasm\n    host: {}\n",
        d.address()
    );
    let mut flow = Flow::start(&yaml, &["--remote-lease", "2s"]);
    let answer = flow.client("/", "{}", "hello\n");
    assert_eq!(answer[0]["text"], "hello");
    let (_, pods) = d.json("GET", "/pods", FLOW_TOKEN, &Value::Null);
    let pid = pods[0]["pid"].as_u64().unwrap();
    assert!(running(pid));
    // Twice the lease later the Flow's renewals have kept it.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(flow.client("/", "{}", "still\n")[0]["text"], "still");
    assert_eq!(
        d.json("GET", "/pods", FLOW_TOKEN, &Value::Null).1[0]["pid"],
        pid
    );

    // kill -9: no teardown; the lease runs out and the daemon deletes the Pod.
    flow.child.kill().unwrap();
    flow.child.wait().unwrap();
    let killed = Instant::now();
    while d.json("GET", "/pods", FLOW_TOKEN, &Value::Null).1 != json!([]) {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the remote Pod outlived its 2s lease by far"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while running(pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "the Pod's process outlived its deletion"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A Flow whose daemon refuses it (a wrong token) names the Pod and the reason.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    let yaml = format!(
        "pods:\n  - name: echo\n    uses: {}\n    host: {}\n",
        wasm("passthrough").display(),
        d.address()
    );
    std::fs::write(&file, yaml).unwrap();
    let out = crate::util::jina_command()
        .args(["flow", "--uses"])
        .arg(&file)
        .env("JINA_WASM_DAEMON_TOKEN", "not-the-token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pod `echo` did not start")
            && stderr.contains("401")
            && stderr.contains("unknown token"),
        "{stderr}"
    );

    // The daemon's own shutdown stops what it started.
    let (code, up) = d.upload(
        FLOW_TOKEN,
        "w",
        &[(
            "passthrough.wasm",
            std::fs::read(wasm("passthrough")).unwrap(),
        )],
    );
    assert_eq!(code, 200, "{up}");
    let (code, pod) = d.json(
        "POST",
        "/pods",
        FLOW_TOKEN,
        &json!({"workspace": "w", "uses": "passthrough.wasm", "shards": 2, "parallel": 2}),
    );
    assert_eq!(code, 201, "{pod}");
    // Shards × replicas: two replicas of each shard, counted as four Peas.
    assert_eq!(
        pod["peas"][3]["pea"], "passthrough/shard-1/replica-1",
        "{pod}"
    );
    let (_, tenant) = d.json("GET", "/tenant", FLOW_TOKEN, &Value::Null);
    assert_eq!(tenant["usage"]["peas"], 4, "{tenant}");
    let pid = pod["pid"].as_u64().unwrap();
    assert!(d.terminate().success());
    assert!(!running(pid), "the daemon's Pod survived it");
}

#[test]
fn a_tenant_runs_a_whole_flow_on_the_daemon_inside_its_workspace() {
    let tenants = "tenants:\n  - name: carol\n    token: carol-token\n    quota: {memory_per_pea: 128MiB, max_peas: 3}\n";
    let d = DaemonProcess::start("127.0.0.3", tenants, &[]);
    let token = "carol-token";
    let flow = "with:\n  port: 80\npods:\n  - name: encode\n    uses: text_encoder.wasm\n  - name: keep\n    uses: guests/passthrough.wasm\n    workspace: kept\n";
    let parts = [
        ("flow.yml", flow.as_bytes().to_vec()),
        (
            "text_encoder.wasm",
            std::fs::read(wasm("text-encoder")).unwrap(),
        ),
        (
            "guests/passthrough.wasm",
            std::fs::read(wasm("passthrough")).unwrap(),
        ),
    ];
    assert_eq!(d.upload(token, "f", &parts).0, 200);
    let (code, created) = d.json(
        "POST",
        "/flows",
        token,
        &json!({"workspace": "f", "uses": "flow.yml", "lease": "60s"}),
    );
    assert_eq!(code, 201, "{created}");
    let gateway = created["gateway"].as_str().unwrap();
    assert!(
        gateway.starts_with("http://127.0.0.3:") && !gateway.ends_with(":80"),
        "the daemon's host, a port the OS picks: {created}"
    );
    assert_eq!(created["pea_count"], 2);
    assert_eq!(
        created["memory_hwm"],
        128 << 20,
        "a Pod without memory_hwm gets the tenant's memory_per_pea"
    );

    // Jina's HTTP interface, on the daemon's host.
    let port: u16 = gateway.rsplit(':').next().unwrap().parse().unwrap();
    let gw = DaemonProcess::call_at(
        "127.0.0.3",
        port,
        "/post",
        &json!({"data": [{"id": "a", "text": "hello world"}], "exec_endpoint": "/"}),
    );
    assert_eq!(gw.0, 200, "{}", gw.1);
    assert!(
        gw.1["data"][0]["embedding"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        gw.1
    );
    assert!(
        d.dir
            .path()
            .join("data/tenants/carol/workspaces/f/state/flow/kept")
            .is_dir(),
        "the Pod's workspace is under the tenant's state"
    );

    // A Flow file that reaches out of the workspace, or into the daemon's
    // environment, or for another daemon, is refused before anything runs.
    for (yaml, words) in [
        (
            "pods:\n  - name: a\n    uses: ../../../bob/workspaces/w/files/x.wasm\n",
            "`..` escapes",
        ),
        (
            "pods:\n  - name: a\n    uses: /etc/passwd\n",
            "absolute path",
        ),
        (
            "pods:\n  - name: a\n    uses: text_encoder.wasm\n    workspace: ../../escape\n",
            "`..` escapes",
        ),
        (
            "pods:\n  - name: a\n    uses: text_encoder.wasm\n    with: {home: '${{ ENV.HOME }}'}\n",
            "not available on a daemon",
        ),
        (
            "pods:\n  - name: a\n    uses: text_encoder.wasm\n    host: 10.0.0.1:8000\n",
            "`host`",
        ),
        (
            "pods:\n  - name: a\n    uses: text_encoder.wasm\n    shards: 3\n",
            "quota",
        ),
    ] {
        assert_eq!(
            d.upload(token, "f", &[("bad.yml", yaml.as_bytes().to_vec())])
                .0,
            200
        );
        let (code, answer) = d.json(
            "POST",
            "/flows",
            token,
            &json!({"workspace": "f", "uses": "bad.yml"}),
        );
        assert!(code == 400 || code == 403, "{yaml}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(words),
            "{yaml}: {answer}"
        );
    }
    let (code, answer) = d.json(
        "POST",
        "/flows",
        token,
        &json!({"workspace": "f", "uses": "flow.yml", "shards": 2}),
    );
    assert!(
        code == 400
            && answer["error"]
                .as_str()
                .unwrap()
                .contains("`shards` is a Pod setting"),
        "{answer}"
    );

    // Deleted: the gateway is gone with its Pods.
    let id = created["id"].as_str().unwrap();
    let pid = created["pid"].as_u64().unwrap();
    assert_eq!(
        d.json("DELETE", &format!("/flows/{id}"), token, &Value::Null)
            .0,
        200
    );
    assert!(!running(pid));
    assert!(
        std::net::TcpStream::connect(("127.0.0.3", port)).is_err(),
        "the gateway still answers"
    );
    let (_, log) = d.json("GET", "/flows", token, &Value::Null);
    assert_eq!(log, json!([]));
}

/// The argv the daemon renders for a Pod (shards, a reducer, Jina's habits
/// and limits) is one the child's own parser takes.
#[test]
fn the_argv_the_daemon_renders_parses_as_the_cli() {
    use jina_wasm::daemon::objects::{CreateRequest, Files, Kind};
    let request: CreateRequest = serde_json::from_value(json!({
        "workspace": "w", "uses": "a.wasm", "uses_with": {"dim": 3}, "shards": 2,
        "memory_hwm": "-1", "timeout_request": "-1", "timeout_ready": "-1",
        "polling": "ALL", "on_error_strategy": "SKIP_HANDLE", "uses_after": "m.wasm",
    }))
    .unwrap();
    let files = Files {
        uses: "a.wasm".into(),
        uses_before: None,
        uses_after: Some("m.wasm".into()),
    };
    let quota = jina_wasm::daemon::tenants::Quota {
        memory_per_pea: 64 << 20,
        ..Default::default()
    };
    let plan = request.plan(Kind::Pod, &quota).unwrap();
    let config = request
        .pod_config(&plan, "127.0.0.1", &files, None)
        .unwrap();
    let args = CreateRequest::args(Kind::Pod, &config, Path::new("c"));
    let argv = std::iter::once("jina-wasm".to_string()).chain(args.clone());
    if let Err(e) = <jina_wasm::cli::Cli as clap::Parser>::try_parse_from(argv) {
        panic!("{args:?}: {e}");
    }
}
