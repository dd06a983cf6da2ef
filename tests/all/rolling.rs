//! Rolling updates of a running Flow (`jina-wasm flow update`, the gateway's
//! `POST /admin/update`): under continuous load (a bounded HTTP loop on a
//! thread, counting failures), replicas are replaced with no failed request
//! and answers show the new settings; a broken replacement rolls back while
//! serving goes on; a shard update keeps every document; refusals say why.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flow::{FlowProcess, post};

/// A Pod of two text-encoder replicas (`dim` 8) behind the gateway.
const REPLICAS: &str = "pods:\n  - name: encode\n    uses: {W}/text_encoder.wasm\n    with: {dim: 8}\n    parallel: 2\n";

/// Requests sent in a loop until stopped (or 60 s, or 20,000 requests).
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered so far (successes and failures).
    answered: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// The embedding length of each answer, in order.
    dims: Vec<usize>,
}

impl Load {
    fn start(port: u16, endpoint: &'static str, body: fn(usize) -> Value) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let mut tally = Tally::default();
            let started = Instant::now();
            for i in 0..20_000 {
                if flag.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let response = crate::util::http()
                    .post(format!("http://127.0.0.1:{port}{endpoint}"))
                    .json(&body(i))
                    .send();
                let answer = response.map_err(|e| e.to_string()).and_then(|r| {
                    let code = r.status().as_u16();
                    let answer: Value = r.json().map_err(|e| e.to_string())?;
                    if code == 200 && answer["header"]["status"]["code"] == 0 {
                        Ok(answer)
                    } else {
                        Err(format!("HTTP {code}: {answer}"))
                    }
                });
                match answer {
                    Ok(answer) => {
                        tally.ok += 1;
                        let dim = answer["data"][0]["embedding"]
                            .as_array()
                            .map_or(0, Vec::len);
                        tally.dims.push(dim);
                    }
                    Err(e) => tally.failures.push(e),
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            tally
        });
        Load {
            stop,
            answered,
            thread,
        }
    }

    /// Waits until `n` more requests were answered.
    fn let_run(&self, n: usize) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline && !self.thread.is_finished(),
                "the load stopped answering"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn encode_body(i: usize) -> Value {
    json!({"data": [{"id": format!("q{i}"), "text": format!("hello {i}")}]})
}

/// `flow update` as a user runs it: exit status, stdout, stderr.
fn flow_update(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = crate::util::jina_command()
        .args(["flow", "update", "--gateway"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .env("JINA_WASM_LOG", "warn")
        .env_remove("JINA_WASM_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The embedding length of one answer now.
fn dim_now(port: u16) -> usize {
    let (code, answer) = post(port, "/post", &encode_body(0));
    assert_eq!(code, 200, "{answer}");
    answer["data"][0]["embedding"].as_array().unwrap().len()
}

/// `GET /status`'s component of pod `pod`.
fn component(port: u16, pod: &str) -> Value {
    let status: Value = crate::util::http()
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == pod)
        .unwrap_or_else(|| panic!("no pod {pod}: {status}"))["component"]
        .clone()
}

#[test]
fn replicas_take_new_settings_under_load_with_no_failed_request() {
    let flow = FlowProcess::start(REPLICAS);
    let port = flow.port();
    assert_eq!(dim_now(port), 8);
    let before = component(port, "encode");
    assert_eq!(before["generation"], 0, "{before}");
    assert_eq!(before["with"]["dim"], 8, "{before}");
    assert_eq!(before["sha256"].as_str().unwrap().len(), 64, "{before}");

    let load = Load::start(port, "/post", encode_body);
    load.let_run(4);
    let (ok, stdout, stderr) =
        flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 16}"#]);
    assert!(ok, "flow update failed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["pod"], "encode", "{report}");
    assert_eq!(report["component"]["with"]["dim"], 16, "{report}");
    assert_eq!(report["component"]["generation"], 1, "{report}");
    assert_eq!(
        report["replaced"],
        json!(["encode/replica-0", "encode/replica-1"]),
        "{report}"
    );
    load.let_run(4);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "failed requests during the update: {:?}",
        tally.failures
    );
    assert!(tally.ok > 0);
    // Old answers, then new ones (during the swap, both), never anything else.
    assert!(
        tally.dims.iter().all(|&d| d == 8 || d == 16),
        "{:?}",
        tally.dims
    );
    assert_eq!(tally.dims.first(), Some(&8));
    // The load ran through the update: its last answers are the new ones.
    assert_eq!(tally.dims.last(), Some(&16), "{:?}", tally.dims);
    assert_eq!(dim_now(port), 16);
    // Both replicas serve the new settings: every answer from now on.
    for _ in 0..6 {
        assert_eq!(dim_now(port), 16);
    }
    let after = component(port, "encode");
    assert_eq!(after["generation"], 1, "{after}");
    assert_eq!(after["with"]["dim"], 16, "{after}");
    assert_eq!(after["sha256"], before["sha256"], "same component file");

    // A new component file (passthrough: no embedding at all).
    let passthrough = crate::util::wasm("passthrough");
    let (ok, stdout, stderr) = flow_update(
        port,
        &[
            "--pod",
            "encode",
            "--uses",
            passthrough.to_str().unwrap(),
            "--uses-with",
            "{}",
        ],
    );
    assert!(ok, "flow update failed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["component"]["generation"], 2, "{report}");
    assert_ne!(report["component"]["sha256"], before["sha256"], "{report}");
    let (code, answer) = post(port, "/post", &encode_body(1));
    assert_eq!(code, 200, "{answer}");
    assert!(answer["data"][0]["embedding"].is_null(), "{answer}");
}

/// Shards × replicas: every replica of every shard replaced in turn under
/// load, each shard keeping a replica serving: no failed request.
#[test]
fn shards_times_replicas_are_replaced_one_replica_at_a_time_with_no_failed_request() {
    let flow = FlowProcess::start(
        "pods:\n  - name: encode\n    uses: {W}/text_encoder.wasm\n    with: {dim: 8}\n    shards: 2\n    parallel: 2\n",
    );
    let port = flow.port();
    assert_eq!(dim_now(port), 8);
    // Two documents a request, so most requests need both shards.
    let load = Load::start(
        port,
        "/post",
        |i| json!({"data": [{"id": format!("a{i}"), "text": "hello"}, {"id": format!("b{i}"), "text": "world"}]}),
    );
    load.let_run(4);
    let (ok, stdout, stderr) =
        flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 16}"#]);
    assert!(ok, "flow update failed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        report["replaced"],
        json!([
            "encode/shard-0/replica-0",
            "encode/shard-0/replica-1",
            "encode/shard-1/replica-0",
            "encode/shard-1/replica-1"
        ]),
        "{report}"
    );
    load.let_run(4);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "failed requests during the update: {:?}",
        tally.failures
    );
    assert_eq!(tally.dims.last(), Some(&16), "{:?}", tally.dims);
    for _ in 0..6 {
        assert_eq!(dim_now(port), 16);
    }
}

#[test]
fn a_broken_replacement_rolls_back_and_serving_never_stops() {
    let flow = FlowProcess::start(REPLICAS);
    let port = flow.port();
    let before = component(port, "encode");
    let load = Load::start(port, "/post", encode_body);
    load.let_run(4);

    // A bad `with:` (init refuses dim 0): the first new replica does not start.
    let (ok, _, stderr) = flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 0}"#]);
    assert!(!ok, "a replica with dim 0 was accepted");
    assert!(stderr.contains("HTTP 422"), "{stderr}");
    assert!(
        stderr.contains("pea `encode/replica-0` did not start"),
        "{stderr}"
    );
    assert!(stderr.contains("with.dim = 0"), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");

    // A component of another world: refused before anything stops.
    let wrong = crate::util::wasm("wrong-world");
    let (code, answer) = post(
        port,
        "/admin/update",
        &json!({"pod": "encode", "uses": wrong}),
    );
    assert_eq!(code, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("does not load"), "{error}");
    assert!(error.contains("nothing was changed"), "{error}");

    // An executor that traps in `init`.
    let misbehave = crate::util::wasm("misbehave");
    let (code, answer) = post(
        port,
        "/admin/update",
        &json!({"pod": "encode", "uses": misbehave, "uses_with": {"panic_in_init": true}}),
    );
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("rolled back"),
        "{answer}"
    );

    load.let_run(4);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:?}",
        tally.failures
    );
    assert!(tally.dims.iter().all(|&d| d == 8), "{:?}", tally.dims);
    assert_eq!(component(port, "encode"), before);
    for _ in 0..4 {
        assert_eq!(dim_now(port), 8);
    }
}

#[test]
fn refusals_name_the_reason() {
    let flow = FlowProcess::start(
        "pods:\n  - name: slow\n    uses: {W}/misbehave.wasm\n    parallel: 2\n  - name: one\n    uses: {W}/passthrough.wasm\n",
    );
    let port = flow.port();
    let admin = |body: Value| post(port, "/admin/update", &body);

    let (code, answer) = admin(json!({"pod": "nope", "uses_with": {}}));
    assert_eq!(code, 404, "{answer}");
    assert_eq!(
        answer["error"],
        "no pod `nope` in this Flow (its Pods: slow, one)"
    );

    let (code, answer) = admin(json!({"pod": "one", "uses_with": {}}));
    assert_eq!(code, 501, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("single Pea"),
        "{answer}"
    );

    let (code, answer) = admin(json!({"pod": "slow"}));
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nothing to update"),
        "{answer}"
    );

    let (code, answer) = admin(json!({"pod": "slow", "uses_with": [1]}));
    assert_eq!(code, 400, "{answer}");

    let (code, answer) = admin(json!({"pod": "slow", "uses": "/no/such.wasm"}));
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("does not exist"),
        "{answer}"
    );

    // One update at a time: a second one while the first (slow `init`s) runs.
    let first = std::thread::spawn(move || {
        post(
            port,
            "/admin/update",
            &json!({"pod": "slow", "uses_with": {"slow_init_ms": 1500}}),
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    // Probed with an unknown Pod: 404 while nothing runs, 409 while it does
    // (so the probe itself never starts an update).
    let conflict = loop {
        let (code, answer) = admin(json!({"pod": "nope", "uses_with": {}}));
        if code == 409 {
            break answer;
        }
        assert_eq!(code, 404, "{answer}");
        assert!(Instant::now() < deadline, "never 409");
        assert!(
            !first.is_finished(),
            "the slow update ended before a 409 was seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("an update of pod `slow` is in progress"),
        "{conflict}"
    );
    let (code, answer) = first.join().unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["component"]["generation"], 1, "{answer}");

    // Only POST.
    let response = crate::util::http()
        .get(format!("http://127.0.0.1:{port}/admin/update"))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[test]
fn a_token_guards_the_admin_route() {
    let flow = FlowProcess::start_with(REPLICAS, &[("JINA_WASM_ADMIN_TOKEN", "s3cret")]);
    let port = flow.port();
    let (code, answer) = post(
        port,
        "/admin/update",
        &json!({"pod": "encode", "uses_with": {"dim": 4}}),
    );
    assert_eq!(code, 401, "{answer}");
    let (ok, _, stderr) = flow_update(
        port,
        &[
            "--pod",
            "encode",
            "--uses-with",
            r#"{"dim": 4}"#,
            "--token",
            "wrong",
        ],
    );
    assert!(!ok && stderr.contains("HTTP 401"), "{stderr}");
    let (ok, _, stderr) = flow_update(
        port,
        &[
            "--pod",
            "encode",
            "--uses-with",
            r#"{"dim": 4}"#,
            "--token",
            "s3cret",
        ],
    );
    assert!(ok, "{stderr}");
    assert_eq!(dim_now(port), 4);
}

#[test]
fn a_shard_update_holds_requests_and_keeps_every_document() {
    let flow = FlowProcess::start(
        "pods:\n  - name: encode\n    uses: {W}/text_encoder.wasm\n    with: {dim: 8}\n  - name: index\n    uses: {W}/vector_indexer.wasm\n    shards: 2\n    polling:\n      /index: any\n      /search: all\n      /export: all\n    workspace: workspace\n",
    );
    let port = flow.port();
    let docs: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("doc-{i}"), "text": format!("document number {i}")}))
        .collect();
    let (code, answer) = post(port, "/index", &json!({"data": docs}));
    assert_eq!(code, 200, "{answer}");
    let count = |port: u16| {
        let (code, answer) = post(
            port,
            "/export",
            &json!({"data": [], "parameters": {"limit": 1000}}),
        );
        assert_eq!(code, 200, "{answer}");
        answer["data"].as_array().unwrap().len()
    };
    assert_eq!(count(port), 40);
    let matches = |port: u16| {
        let (code, answer) = post(
            port,
            "/search",
            &json!({"data": [{"text": "document number 3"}]}),
        );
        assert_eq!(code, 200, "{answer}");
        answer["data"][0]["matches"].as_array().unwrap().len()
    };
    assert_eq!(matches(port), 10, "the default top_k");

    // Writes during the update: held while a shard is swapped, never lost.
    let load = Load::start(
        port,
        "/index",
        |i| json!({"data": [{"id": format!("live-{i}"), "text": format!("live {i}")}]}),
    );
    load.let_run(4);
    let (ok, stdout, stderr) =
        flow_update(port, &["--pod", "index", "--uses-with", r#"{"top_k": 3}"#]);
    assert!(ok, "flow update failed: {stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        report["replaced"],
        json!(["index/shard-0", "index/shard-1"]),
        "{report}"
    );
    load.let_run(4);
    let tally = load.finish();
    assert!(
        tally.failures.is_empty(),
        "failed requests: {:?}",
        tally.failures
    );
    assert!(tally.ok > 0);
    assert_eq!(
        count(port),
        40 + tally.ok,
        "every document indexed before and during the update"
    );
    assert_eq!(matches(port), 3, "the new top_k");
}

/// An update in place (the file copied over, then `flow update`) of a
/// sharded Pod whose new Pea does not start: the shard is put back with
/// the file that ran, the Pod's copy of the version it started with, not
/// with whatever the path now holds. At first the shard restarted from the
/// new file and the update answered "the Pod serves its previous settings"
/// while it did not; then the put-back refused the new file and left the
/// shard down, as the Pod's first version had no copy.
#[test]
fn a_shard_put_back_runs_the_file_that_ran_not_the_one_copied_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let uses = dir.path().join("enc.wasm");
    std::fs::copy(crate::util::wasm("text_encoder"), &uses).unwrap();
    let flow = FlowProcess::start(&format!(
        "pods:\n  - name: encode\n    uses: {}\n    with: {{dim: 8}}\n    shards: 2\n",
        uses.display()
    ));
    let port = flow.port();
    let before = component(port, "encode");
    assert_eq!(dim_now(port), 8);

    // Copied over in place; the new settings make its `init` trap.
    std::fs::copy(crate::util::wasm("misbehave"), &uses).unwrap();
    let (code, answer) = post(
        port,
        "/admin/update",
        &json!({"pod": "encode", "uses_with": {"panic_in_init": true}}),
    );
    assert_ne!(code, 200, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("rolled back: the Pod serves its previous settings"),
        "shard 0 was not put back with the version it ran: {error}"
    );
    assert_eq!(component(port, "encode"), before);
    // Both shards answer with the encoder the Pod started with.
    for _ in 0..4 {
        assert_eq!(dim_now(port), 8);
    }
}

/// PROCESS-backed Peas (`flow --runtime-backend PROCESS`) get the checked digest as `--uses-sha256` on their
/// command line: an update (`with:` only, and in place: the file copied
/// over first) starts them, and `GET /status` names the digest they run. One
/// that does not start is reported with what its process said; one that
/// crashes after the path changed is restarted from a copy of its version.
#[test]
fn process_peas_start_pinned_to_the_checked_file() {
    let dir = tempfile::tempdir().unwrap();
    let uses = dir.path().join("enc.wasm");
    std::fs::copy(crate::util::wasm("text_encoder"), &uses).unwrap();
    let flow = FlowProcess::start_with_args(
        &format!(
            "pods:\n  - name: encode\n    uses: {}\n    with: {{dim: 8}}\n    parallel: 2\n",
            uses.display()
        ),
        &[],
        &["--runtime-backend", "PROCESS"],
    );
    let port = flow.port();
    assert_eq!(dim_now(port), 8);
    let (ok, _, stderr) = flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 4}"#]);
    assert!(ok, "{stderr}");
    assert_eq!(dim_now(port), 4);
    // A Pea process that does not start: the answer says why, in the Pea's
    // own words (its client never sees the Flow's log).
    let (ok, _, stderr) = flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 0}"#]);
    assert!(!ok, "a replica with dim 0 was accepted");
    for part in [
        "pea `encode/replica-0`'s process exited",
        "before it was ready",
        "with.dim = 0",
        "rolled back",
    ] {
        assert!(stderr.contains(part), "no `{part}` in: {stderr}");
    }
    assert_eq!(dim_now(port), 4);

    // Another file copied over the path, with no update, and a replica's
    // process killed: the Pod restarts it from its copy of the checked file,
    // so it serves the version it was pinned to (not refused forever).
    let original = std::fs::read(&uses).unwrap();
    let bytes = std::fs::read(crate::util::wasm("passthrough")).unwrap();
    std::fs::write(&uses, &bytes).unwrap();
    let ctrl = flow.ready["pods"][0]["ctrl"].as_str().unwrap().to_string();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let status = crate::util::control(&ctrl, "STATUS").await.unwrap();
        let victim = status["peas"][0]["pid"].as_u64().unwrap();
        crate::util::kill_9(victim as u32);
        crate::pea::status_until(&ctrl, "the replica restarted from its copy", |s| {
            s["healthy"] == json!(true)
                && s["process_restarts"] == json!(1)
                && s["peas"][0]["pid"].as_u64() != Some(victim)
        })
        .await;
    });
    for _ in 0..4 {
        assert_eq!(dim_now(port), 4);
    }
    assert_eq!(
        component(port, "encode")["uses"],
        uses.display().to_string(),
        "the path named, not the copy"
    );
    std::fs::write(&uses, &original).unwrap();

    // In place: the same path, another file (passthrough: no embedding).
    let bytes = std::fs::read(crate::util::wasm("passthrough")).unwrap();
    std::fs::write(&uses, &bytes).unwrap();
    let (ok, _, stderr) = flow_update(port, &["--pod", "encode", "--uses-with", r#"{"dim": 4}"#]);
    assert!(ok, "{stderr}");
    assert_eq!(
        component(port, "encode")["sha256"],
        jina_wasm::executor::cache::digest(&bytes)
    );
    for i in 0..4 {
        let (code, answer) = post(port, "/post", &encode_body(i));
        assert_eq!(code, 200, "{answer}");
        assert!(answer["data"][0]["embedding"].is_null(), "{answer}");
    }
    // Three updates, two versions copied: only the serving one is kept.
    let copies: Vec<String> = std::fs::read_dir(flow.temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("jina-wasm-checked-")
        })
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".lock")
        .collect();
    assert_eq!(
        copies,
        [format!(
            "{}.wasm",
            jina_wasm::executor::cache::digest(&bytes)
        )]
    );
}
