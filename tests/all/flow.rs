//! Flow YAML: a golden-file suite. Each `tests/flows/valid/X.yml` parses and its
//! Mermaid plot equals `X.mmd`; each `tests/flows/invalid/X.yml` fails with
//! exactly the text in `X.err`. `JINA_WASM_BLESS=1` rewrites the golden files
//! from what the code produces (review the diff before committing it).

use std::path::{Path, PathBuf};

use jina_wasm::flow::Flow;

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new("tests/flows").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    files
}

fn check(golden: &Path, actual: &str) {
    if std::env::var_os("JINA_WASM_BLESS").is_some() {
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

fn env(name: &str) -> Option<String> {
    (name == "JINA_WASM_TEST_MODEL").then(|| "small".to_string())
}

#[test]
fn valid_flows_parse_and_plot() {
    for file in cases("valid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let flow = Flow::parse(&text, &file, env).unwrap_or_else(|e| panic!("{e}"));
        check(&file.with_extension("mmd"), &flow.mermaid());
    }
}

#[test]
fn invalid_flows_fail_with_the_exact_message() {
    for file in cases("invalid") {
        let text = std::fs::read_to_string(&file).unwrap();
        let error = Flow::parse(&text, &file, env)
            .err()
            .unwrap_or_else(|| panic!("{} parsed", file.display()));
        check(&file.with_extension("err"), &format!("{error}\n"));
    }
}

#[test]
fn needs_default_to_the_previous_pod_and_env_is_substituted() {
    let text = "pods:\n  - name: a\n    uses: a.wasm\n    with: {model: '${{ ENV.JINA_WASM_TEST_MODEL }}'}\n  - name: b\n    uses: sub/b.wasm\n";
    let flow = Flow::parse(text, Path::new("/flows/f.yml"), env).unwrap();
    assert_eq!(flow.needs, vec![vec![], vec![0]]);
    assert_eq!(flow.leaves, vec![1]);
    assert_eq!(flow.pods[0].with.as_ref().unwrap()["model"], "small");
    assert_eq!(flow.pods[1].uses, Path::new("/flows/sub/b.wasm"));
}

/// A `jina-wasm flow` process, killed on drop.
pub struct FlowProcess {
    child: std::process::Child,
    pub ready: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl FlowProcess {
    /// Writes `yaml` (with `{W}` replaced by the guests' directory) and runs it.
    pub fn start(yaml: &str) -> FlowProcess {
        FlowProcess::start_with(yaml, &[])
    }

    /// As [`FlowProcess::start`], with environment variables for the Flow.
    pub fn start_with(yaml: &str, envs: &[(&str, &str)]) -> FlowProcess {
        FlowProcess::start_with_args(yaml, envs, &[])
    }

    /// As [`FlowProcess::start_with`], with more `flow` flags.
    pub fn start_with_args(yaml: &str, envs: &[(&str, &str)], args: &[&str]) -> FlowProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let guests = crate::util::wasm("passthrough")
            .parent()
            .unwrap()
            .to_path_buf();
        let file = dir.path().join("flow.yml");
        std::fs::write(&file, yaml.replace("{W}", guests.to_str().unwrap())).unwrap();
        let mut child = crate::util::jina_command()
            .args(["flow", "--uses"])
            .arg(&file)
            .args(args)
            .env("JINA_WASM_LOG", "warn")
            // What the Flow keeps in temp dirs (its Pods' copies of their
            // executor files) goes with this test's, even when the Flow is
            // killed.
            .env("TMPDIR", dir.path())
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready line ({e}): {line}"));
        FlowProcess {
            child,
            ready,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.ready["port"].as_u64().unwrap() as u16
    }
}

impl FlowProcess {
    /// The Flow's temp dir (`TMPDIR`), removed with it.
    pub fn temp_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for FlowProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs JSON over HTTP/1.1 and returns the status code and the JSON answer.
pub fn post(port: u16, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = crate::util::http()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(body)
        .send()
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn two_branches_and_a_join_answer_once_with_both() {
    let flow = FlowProcess::start(
        "pods:\n  - name: tag\n    uses: {W}/passthrough.wasm\n    needs: gateway\n  - name: encode\n    uses: {W}/text_encoder.wasm\n    needs: gateway\n  - name: join\n    uses: {W}/passthrough.wasm\n    needs: [tag, encode]\n",
    );
    let docs: Vec<serde_json::Value> = (0..3)
        .map(
            |i| serde_json::json!({"id": format!("d{i}"), "text": "hello world", "tags": {"i": i}}),
        )
        .collect();
    let (code, answer) = post(
        flow.port(),
        "/post",
        &serde_json::json!({"data": docs, "exec_endpoint": "/", "parameters": {"k": 1}}),
    );
    assert_eq!(code, 200, "{answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(
        data.len(),
        3,
        "one copy of each document after the join: {answer}"
    );
    assert!(
        data.iter()
            .all(|d| d["embedding"].as_array().is_some_and(|e| !e.is_empty())
                && d["tags"]["i"].is_number()),
        "{answer}"
    );
    let route: Vec<&str> = answer["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["executor"].as_str().unwrap())
        .collect();
    assert_eq!(route, ["gateway", "tag", "encode", "join", "gateway"]);
    assert_eq!(answer["parameters"]["k"], 1);
    // Jina's `target_executor`: only the Pods whose names it matches (at the
    // start, as Python's re.match) run; the others pass the request on.
    let targeted = |pattern: &str| {
        post(
            flow.port(),
            "/post",
            &serde_json::json!({"data": docs, "target_executor": pattern}),
        )
    };
    let route_of = |answer: &serde_json::Value| -> Vec<String> {
        answer["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["executor"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, answer) = targeted("tag|join");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(route_of(&answer), ["gateway", "tag", "join", "gateway"]);
    assert!(
        answer["data"].as_array().unwrap().len() == 3
            && answer["data"][0].get("embedding").is_none(),
        "encode did not run: {answer}"
    );
    let (code, answer) = targeted("enc");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(route_of(&answer), ["gateway", "encode", "gateway"]);
    assert!(answer["data"][0]["embedding"].is_array(), "{answer}");
    // More documents than a request may carry: refused before the Flow.
    let (code, answer) = post(
        flow.port(),
        "/post",
        &serde_json::json!({"data": vec![serde_json::json!({}); 100_001]}),
    );
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .is_some_and(|d| d.contains("100001 documents")),
        "{answer}"
    );
    let (code, answer) = targeted("(unclosed");
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["header"]["status"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("`target_executor` is not a regular expression")),
        "{answer}"
    );
    // POST /<endpoint> works too.
    let (code, _) = post(
        flow.port(),
        "/roundtrip",
        &serde_json::json!({"data": ["plain text"]}),
    );
    assert_eq!(code, 200);
}

#[test]
fn a_failing_branch_makes_the_join_answer_with_the_error_promptly() {
    let flow = FlowProcess::start(
        "with:\n  timeout: 20s\npods:\n  - name: ok\n    uses: {W}/passthrough.wasm\n    needs: gateway\n  - name: bad\n    uses: {W}/misbehave.wasm\n    needs: gateway\n  - name: join\n    uses: {W}/passthrough.wasm\n    needs: [ok, bad]\n",
    );
    let started = std::time::Instant::now();
    let (code, answer) = post(
        flow.port(),
        "/panic",
        &serde_json::json!({"data": [{"id": "x"}]}),
    );
    assert_eq!(code, 500, "{answer}");
    let status = &answer["header"]["status"];
    assert_eq!(status["exception"]["executor"], "bad", "{answer}");
    assert_eq!(status["exception"]["name"], "panic", "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the join waited"
    );
    // The client command: results in order, the failure on stderr, exit 1.
    let port = flow.port().to_string();
    let out = crate::cli::jina(
        &["client", "--port", &port, "--request-size", "2"],
        "a\nb\nc\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let texts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["a", "b", "c"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 documents in 2 requests, 0 errors"));
    let out = crate::cli::jina(
        &["client", "--port", &port, "--endpoint", "/panic"],
        "boom\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("executor `bad` failed (panic)") && stderr.contains("1 errors"),
        "{stderr}"
    );
    // And a branch slower than the Flow's deadline.
    let flow = FlowProcess::start(
        "with:\n  timeout: 1s\npods:\n  - name: ok\n    uses: {W}/passthrough.wasm\n    needs: gateway\n  - name: slow\n    uses: {W}/misbehave.wasm\n    needs: gateway\n  - name: join\n    uses: {W}/passthrough.wasm\n    needs: [ok, slow]\n",
    );
    let started = std::time::Instant::now();
    let (code, answer) = post(
        flow.port(),
        "/loop",
        &serde_json::json!({"data": [{"id": "x"}]}),
    );
    assert_eq!(code, 500, "{answer}");
    assert_eq!(
        answer["header"]["status"]["exception"]["executor"], "slow",
        "{answer}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the request outlived its deadline"
    );
    // Still serving.
    let (code, _) = post(
        flow.port(),
        "/post",
        &serde_json::json!({"data": [{"id": "y"}], "exec_endpoint": "/"}),
    );
    assert_eq!(code, 200);
}

#[test]
fn the_demo_flow_indexes_and_finds() {
    let yaml = std::fs::read_to_string("examples/flows/text-search.yml")
        .unwrap()
        .replace("../../target/wasm32-wasip2/release", "{W}")
        .replace(
            "../../target/models",
            crate::util::target_dir().join("models").to_str().unwrap(),
        )
        .replace("../../target/demo-workspace", "workspace");
    let flow = FlowProcess::start(&yaml);
    let port = flow.port().to_string();
    let corpus = std::fs::read_to_string("examples/data/corpus.txt").unwrap();
    let out = crate::cli::jina(
        &["client", "--port", &port, "--endpoint", "/index"],
        &corpus,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::cli::jina(
        &[
            "client",
            "--port",
            &port,
            "--endpoint",
            "/search",
            "--parameters",
            r#"{"top_k": 3}"#,
        ],
        "what makes writes survive a crash\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let matches = answer["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 3, "{answer}");
    assert_eq!(matches[0]["id"], "databases-2", "{answer}");
}

#[test]
fn a_real_jina_client_posts_to_the_gateway() {
    let python = crate::util::python_venv(
        "jina-client-venv",
        "tests/interop/jina_client/requirements.txt",
    );
    let flow = FlowProcess::start("pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n");
    let out = std::process::Command::new(python)
        .arg("tests/interop/jina_client/jina_http_client.py")
        .args(["--port", &flow.port().to_string()])
        .env("JINA_OPTOUT_TELEMETRY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("jina client ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16: Jina's client raises `ValueError(<the error body>)`. With 20
/// documents of 1,000 characters and a failing executor, what it raises
/// starts with the status and the reason, and stays short (it was the whole
/// 29 KB body, the reason at character 27,851).
#[test]
fn a_real_jina_client_reads_a_failure_from_its_first_characters() {
    let python = crate::util::python_venv(
        "jina-client-venv",
        "tests/interop/jina_client/requirements.txt",
    );
    let flow = FlowProcess::start("pods:\n  - name: bad\n    uses: {W}/misbehave.wasm\n");
    let out = std::process::Command::new(python)
        .arg("tests/interop/jina_client/jina_http_errors.py")
        .args(["--port", &flow.port().to_string(), "--docs", "20"])
        .env("JINA_OPTOUT_TELEMETRY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["raised"], "builtins.ValueError", "{result}");
    let text = result["text"].as_str().unwrap();
    // Python's repr quotes the description with `"` when it holds a `'`.
    assert!(
        text.starts_with("{'code': 1, 'description': ")
            && text
                .chars()
                .take(80)
                .collect::<String>()
                .contains("executor `bad` failed (panic): "),
        "{text}"
    );
    assert!(text.len() < 2000, "{} characters: {text}", text.len());
    assert!(!text.contains("xxxxxxxxxx"), "a document is echoed: {text}");
}

/// Issue 16: the gateway's edges, each a JSON error answer in the failure
/// shape (docs/gateway.md, "Errors"): 404 for a route that does not exist,
/// 405 (with `Allow`) for a route with the wrong method, 422 for a body that
/// is not JSON or a missing or wrong Content-Type; and it keeps serving.
#[test]
fn gateway_edges_answer_json_with_the_reason() {
    let flow = FlowProcess::start("pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", flow.port());
    let http = crate::util::http();
    let read = |response: reqwest::blocking::Response| {
        let code = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = response.json().unwrap_or(serde_json::Value::Null);
        assert_eq!(kind.as_deref(), Some("application/json"), "{code} {body}");
        assert_eq!(body["code"], 1, "{body}");
        assert_eq!(
            body["description"], body["header"]["status"]["description"],
            "{body}"
        );
        (
            code,
            allow,
            body["description"].as_str().unwrap().to_string(),
        )
    };
    let (code, allow, reason) = read(http.get(url("/no/such/route")).send().unwrap());
    assert_eq!((code, allow), (404, None), "{reason}");
    assert!(reason.contains("no route GET /no/such/route"), "{reason}");
    let (code, _, reason) = read(http.delete(url("/")).send().unwrap());
    assert_eq!(code, 404, "{reason}");
    let (code, allow, reason) = read(
        http.post(url("/dry_run"))
            .json(&serde_json::json!({}))
            .send()
            .unwrap(),
    );
    assert_eq!((code, allow.as_deref()), (405, Some("GET")), "{reason}");
    assert!(reason.contains("use GET /dry_run"), "{reason}");
    let (code, allow, _) = read(http.get(url("/post")).send().unwrap());
    assert_eq!((code, allow.as_deref()), (405, Some("POST")));
    let body = r#"{"data": [{"id": "a"}]}"#;
    let (code, _, reason) = read(http.post(url("/post")).body(body).send().unwrap());
    assert_eq!(code, 422, "{reason}");
    assert!(reason.contains("no Content-Type"), "{reason}");
    let (code, _, reason) = read(
        http.post(url("/index"))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422, "{reason}");
    assert!(
        reason.contains("Content-Type `text/plain` is not JSON"),
        "{reason}"
    );
    let (code, _, reason) = read(
        http.post(url("/post"))
            .header("content-type", "application/json; charset=utf-8")
            .body("{\"data\": [")
            .send()
            .unwrap(),
    );
    assert_eq!(code, 422, "{reason}");
    assert!(reason.contains("the body is not JSON"), "{reason}");
    // The same body with its Content-Type is a request, answered.
    let response = http
        .post(url("/post"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

/// Issue 16: `jina-wasm client` takes the ready line's URL as `--host`,
/// prints a summary only (or nothing) for bulk work, keeps tags in `pretty`,
/// names a dead address or a ZeroMQ port within seconds, and still prints its
/// summary when interrupted with Ctrl-C.
#[test]
fn the_client_takes_the_ready_url_and_says_what_is_wrong() {
    use std::time::{Duration, Instant};
    let flow = FlowProcess::start(
        "pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n  - name: slow\n    uses: {W}/misbehave.wasm\n",
    );
    let url = flow.ready["gateway"].as_str().unwrap().to_string();
    let input: String = (0..5)
        .map(|i| format!("{{\"id\": \"d{i}\", \"text\": \"t{i}\", \"tags\": {{\"k\": {i}}}}}\n"))
        .collect();
    let run = |args: &[&str]| crate::cli::jina(args, &input);
    let out = run(&[
        "client",
        "--host",
        &url,
        "--endpoint",
        "/echo",
        "--output",
        "summary",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("5 documents in 1 requests, 0 errors"),
        "{stderr}"
    );
    let out = run(&[
        "client",
        "--host",
        &url,
        "--endpoint",
        "/echo",
        "--output",
        "none",
    ]);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{out:?}"
    );
    let out = run(&[
        "client",
        "--host",
        &format!("{url}/"),
        "--endpoint",
        "/echo",
        "--output",
        "pretty",
    ]);
    let pretty = String::from_utf8_lossy(&out.stdout);
    assert!(pretty.contains("d3: t3\n  tags: {\"k\":3}"), "{pretty}");
    // Nothing listens: said within the connect deadline, naming the address.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = run(&["client", "--port", &dead.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!("nothing answers at http://127.0.0.1:{dead}")),
        "{stderr}"
    );
    let out = run(&[
        "client",
        "--in",
        &format!("127.0.0.1:{dead}"),
        "--out",
        &format!("127.0.0.1:{dead}"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("nothing listens there"),
        "{stderr}"
    );
    // A Pod's in-process input and output, from another process.
    let pod = &flow.ready["pods"][0];
    let out = run(&[
        "client",
        "--in",
        pod["in"].as_str().unwrap(),
        "--out",
        pod["out"].as_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("reachable only inside that process"),
        "{stderr}"
    );
    // A Pod's ZeroMQ socket (its control socket: the Pod's input and output
    // are in-process, `inproc://`) given as the gateway.
    let zmq = flow.ready["pods"][0]["ctrl"]
        .as_str()
        .unwrap()
        .replace("tcp://", "http://");
    let out = run(&["client", "--host", &zmq]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("did not answer HTTP")
            && stderr.contains("--in/--out"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Ctrl-C while requests are in flight (the executor sleeps): the summary
    // still comes, and the exit code says interrupted; through the gateway,
    // and straight to a Pea over ZeroMQ.
    let sleep = [
        "--endpoint",
        "/sleep",
        "--parameters",
        r#"{"ms": 20000}"#,
        "--request-size",
        "1",
    ];
    interrupt_client(&[&["client", "--host", &url][..], &sleep].concat(), &input);
    let pea = crate::pea::PeaProcess::start("misbehave", &[]);
    let (pea_in, pea_out) = (pea.addr("in"), pea.addr("out"));
    interrupt_client(
        &[&["client", "--in", &pea_in, "--out", &pea_out][..], &sleep].concat(),
        &input,
    );
}

/// Runs `jina-wasm ARGS` on `input`, sends it SIGINT once it catches it, and
/// checks that it stops with the interrupted summary (no answer counted, the 5
/// requests in flight named) and exit code 130.
fn interrupt_client(args: &[&str], input: &str) {
    use std::time::{Duration, Instant};
    let mut child = crate::util::jina_command()
        .args(args)
        .env("JINA_WASM_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    // Interrupt once the client catches SIGINT (its handler is in place:
    // bit 2 of SigCgt in /proc), whatever it is doing then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0);
        if caught {
            break;
        }
        assert!(Instant::now() < deadline, "the client never caught SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the client did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("0 documents in 0 requests, 0 errors")
            && stderr.contains("interrupted, 5 requests in flight not counted"),
        "{stderr}"
    );
}

#[test]
fn a_flow_that_cannot_start_names_the_pod_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let guests = crate::util::wasm("passthrough")
        .parent()
        .unwrap()
        .to_path_buf();
    let file = dir.path().join("flow.yml");
    let yaml = format!(
        "pods:\n  - name: fine\n    uses: {0}/passthrough.wasm\n  - name: broken\n    uses: {0}/wrong_world.wasm\n",
        guests.display()
    );
    std::fs::write(&file, yaml).unwrap();
    let out = crate::util::jina_command()
        .args(["flow", "--uses", file.to_str().unwrap()])
        .env("JINA_WASM_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pod `broken` did not start") && stderr.contains("wrong_world.wasm"),
        "{stderr}"
    );
    // The Pod that had started was stopped again before the Flow gave up.
    assert!(
        stderr.contains("ready pea=fine") && stderr.contains("stopped pea=fine"),
        "{stderr}"
    );
}

/// `GET /openapi.json` is an OpenAPI 3 document listing the endpoints the
/// Flow's executors declare (vector-indexer's five), never `/default`; a
/// 0.1.0 component in the Flow takes any endpoint (`/status` says which Pod
/// declared what), and an undeclared endpoint still runs through the Flow.
#[test]
fn openapi_lists_the_flows_declared_endpoints() {
    let flow = FlowProcess::start(
        "pods:\n  - name: seg\n    uses: {W}/sentence_segmenter.wasm\n  - name: idx\n    uses: {W}/vector_indexer.wasm\n    workspace: ws\n  - name: old\n    uses: {W}/old_contract.wasm\n",
    );
    let response = crate::util::http()
        .get(format!("http://127.0.0.1:{}/openapi.json", flow.port()))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let doc: serde_json::Value = response.json().unwrap();
    assert_eq!(doc["openapi"], "3.0.3", "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut posts: Vec<&str> = paths
        .iter()
        .filter(|(_, ops)| ops.get("post").is_some())
        .map(|(p, _)| p.as_str())
        .collect();
    posts.sort_unstable();
    assert_eq!(
        posts,
        [
            "/delete", "/export", "/import", "/index", "/post", "/search"
        ],
        "{doc}"
    );
    let index = &paths["/index"]["post"];
    assert!(
        index["summary"]
            .as_str()
            .unwrap()
            .starts_with("Store the documents"),
        "{index}"
    );
    assert!(index["description"].as_str().unwrap().contains("idx"));
    assert_eq!(
        index["responses"]["507"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Failure"
    );
    assert!(doc["components"]["schemas"]["Document"].is_object());
    // `/status` shows each Pod's declaration: null for the 0.1.0 one.
    let status: serde_json::Value = crate::util::http()
        .get(format!("http://127.0.0.1:{}/status", flow.port()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pods = status["endpoints"].as_array().unwrap();
    assert_eq!(pods[0]["endpoints"][0]["name"], "__default__", "{status}");
    assert_eq!(pods[1]["endpoints"].as_array().unwrap().len(), 5);
    assert!(pods[2]["endpoints"].is_null(), "{status}");
    // Undeclared by all but the 0.1.0 Pod: it still runs through the Flow.
    let (code, answer) = post(
        flow.port(),
        "/upper",
        &serde_json::json!({"data": [{"id": "a", "text": "x."}]}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"][0]["text"], "X.", "{answer}");
    // The route is GET only.
    let (code, _) = post(flow.port(), "/openapi.json", &serde_json::json!({}));
    assert_eq!(code, 405);
}
