//! `jina-wasm run` and `jina-wasm inspect` as a user runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::util::{bin, cache_dir, wasm};

/// Runs `jina-wasm ARGS` with `stdin`, sharing the tests' component cache.
pub fn jina(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("JINA_WASM_CACHE_DIR", cache_dir())
        .env("JINA_WASM_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_passes_json_lines_and_plain_text_through() {
    let passthrough = wasm("passthrough");
    let input = "{\"id\":\"a\",\"text\":\"one\",\"tags\":{\"k\":1}}\nplain text line\n\n{\"id\":\"c\",\"embedding\":[1,2]}\n";
    let out = jina(
        &[
            "run",
            "--uses",
            passthrough.to_str().unwrap(),
            "--request-size",
            "2",
        ],
        input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let docs = lines(&out);
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs[0],
        serde_json::json!({"id": "a", "text": "one", "tags": {"k": 1}})
    );
    assert_eq!(docs[1]["text"], "plain text line");
    assert_eq!(docs[2]["embedding"], serde_json::json!([1.0, 2.0]));
}

#[test]
fn run_keeps_state_in_the_workspace_between_runs() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let encoder = wasm("text-encoder");
    let indexer = wasm("vector-indexer");
    let corpus = "{\"id\":\"wasm\",\"text\":\"sandboxed webassembly executors\"}\n{\"id\":\"zmq\",\"text\":\"zeromq sockets between peas\"}\n";
    let encoded = jina(&["run", "--uses", encoder.to_str().unwrap()], corpus);
    assert!(encoded.status.success(), "{}", stderr(&encoded));
    let indexed = jina(
        &[
            "run",
            "--uses",
            indexer.to_str().unwrap(),
            "--endpoint",
            "/index",
            "--workspace",
            ws,
        ],
        &stdout(&encoded),
    );
    assert!(indexed.status.success(), "{}", stderr(&indexed));

    let query = jina(
        &["run", "--uses", encoder.to_str().unwrap()],
        "zeromq sockets\n",
    );
    let found = jina(
        &[
            "run",
            "--uses",
            indexer.to_str().unwrap(),
            "--endpoint",
            "/search",
            "--workspace",
            ws,
            "--read-only",
            "--parameters",
            "top_k: 1",
        ],
        &stdout(&query),
    );
    assert!(found.status.success(), "{}", stderr(&found));
    let docs = lines(&found);
    assert_eq!(docs[0]["matches"][0]["id"], "zmq");
}

#[test]
fn run_reports_a_trap_by_executor_and_kind() {
    let misbehave = wasm("misbehave");
    let out = jina(
        &[
            "run",
            "--uses",
            misbehave.to_str().unwrap(),
            "--endpoint",
            "/loop",
            "--timeout-request",
            "200ms",
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("executor `misbehave` failed in handle (timeout)"),
        "{err}"
    );
}

#[test]
fn run_names_a_bad_input_line() {
    let passthrough = wasm("passthrough");
    let out = jina(
        &["run", "--uses", passthrough.to_str().unwrap()],
        "ok\n{broken json\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("input line 2 is not a document"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_rejects_bad_files_and_flags_clearly() {
    let out = jina(&["run", "--uses", "/nonexistent/exec.wasm"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("executor file /nonexistent/exec.wasm does not exist"),
        "{}",
        stderr(&out)
    );

    let passthrough = wasm("passthrough");
    let out = jina(
        &[
            "run",
            "--uses",
            passthrough.to_str().unwrap(),
            "--memory-hwm",
            "lots",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--memory-hwm"), "{}", stderr(&out));
}

#[test]
fn inspect_reports_contract_and_rejects_other_worlds() {
    let out = jina(&["inspect", wasm("passthrough").to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("contract:  jina:executor@0.1.0"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("wasi:"), "{}", stdout(&out));

    let out = jina(
        &[
            "inspect",
            "--json",
            wasm("future-contract").to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["runnable"], false);
    assert!(report["error"].as_str().unwrap().contains("0.2.0"));
}

/// Issue 16: `flow check` refuses everything `flow` refuses before starting
/// anything, with the file, the line and the key; both say the same. Jina's
/// habits (`uses_with`, `-1` for no limit, enum values in any case) pass, and
/// a bare number of 1000 or more seconds is warned about.
#[test]
fn flow_check_refuses_what_flow_refuses_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let passthrough = wasm("passthrough");
    let passthrough = passthrough.to_str().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not a component").unwrap();
    let pod = |extra: &str| {
        format!(
            "pods:\n  - name: a\n    uses: {passthrough}\n  - name: b\n    uses: {passthrough}\n{extra}"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "timeout",
            pod("    timeout_request: soon\n"),
            "line 6 column 22: pods[1].timeout_request: `soon` is not a number",
        ),
        (
            "memory",
            pod("    memory_hwm: lots\n"),
            "line 6 column 17: pods[1].memory_hwm: `lots` is not a number",
        ),
        (
            "strategy",
            pod("    on_error_strategy: PANIC\n"),
            "line 6 column 24: pods[1].on_error_strategy: `PANIC` is not an error strategy",
        ),
        (
            "shards",
            pod("    shards: 2\n    replicas: 2\n"),
            "line 7: pods[1].replicas (`b`): shards and replicas together are not supported yet",
        ),
        (
            "missing",
            format!(
                "pods:\n  - name: a\n    uses: {passthrough}\n  - name: b\n    uses: nowhere.wasm\n"
            ),
            "line 5: pods[1].uses (`b`): ",
        ),
        (
            "text",
            format!(
                "pods:\n  - name: a\n    uses: {passthrough}\n  - name: b\n    uses: notes.wasm\n"
            ),
            "line 5: pods[1].uses (`b`): ",
        ),
        (
            "no-uses",
            "pods:\n  - name: a\n".to_string(),
            "pods[0]: missing field `uses`",
        ),
    ];
    for (name, yaml, expected) in &cases {
        let file = dir.path().join(format!("{name}.yml"));
        std::fs::write(&file, yaml).unwrap();
        let file = file.to_str().unwrap();
        let check = jina(&["flow", "check", file], "");
        assert_eq!(check.status.code(), Some(1), "{name}: {}", stdout(&check));
        let refused = stderr(&check);
        assert!(
            refused.contains(file) && refused.contains(expected),
            "{name}: expected `{expected}` in: {refused}"
        );
        // `flow` refuses it with the same message, before starting any Pod.
        let run = jina(&["flow", "--uses", file, "--port", "0"], "");
        assert_eq!(run.status.code(), Some(1), "{name}");
        let run_error = stderr(&run);
        assert!(
            run_error.contains(expected) && !run_error.contains("ready pea="),
            "{name}: {run_error}"
        );
    }
    assert!(
        stderr(&jina(
            &[
                "flow",
                "check",
                dir.path().join("missing.yml").to_str().unwrap()
            ],
            ""
        ))
        .contains("nowhere.wasm does not exist")
    );
    assert!(
        stderr(&jina(
            &[
                "flow",
                "check",
                dir.path().join("text.yml").to_str().unwrap()
            ],
            ""
        ))
        .contains("is not a WebAssembly file")
    );
    // Jina's spellings pass.
    let file = dir.path().join("jina.yml");
    std::fs::write(
        &file,
        pod("    uses_with: {k: 1}\n    timeout_ready: -1\n    memory_hwm: -1\n    on_error_strategy: throw_early\n    polling: ALL\n    timeout_request: 60000\n"),
    )
    .unwrap();
    let check = jina(&["flow", "check", file.to_str().unwrap()], "");
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stdout(&check).contains("b <- a"), "{}", stdout(&check));
    assert!(
        stderr(&check).contains("timeout_request `60000` is read as 60000 seconds (16h 40m)"),
        "{}",
        stderr(&check)
    );
}

/// Issue 16: Jina's command-line habits: `--env A=1 B=2`, enum values in any
/// case, `-1` for no limit, `--port-expose` on `flow`, and a warning for a
/// bare number of seconds that looks like milliseconds.
#[test]
fn jina_flags_are_accepted() {
    let passthrough = wasm("passthrough");
    let out = jina(
        &[
            "run",
            "--uses",
            passthrough.to_str().unwrap(),
            "--env",
            "A=1",
            "B=2",
            "--timeout-request",
            "-1",
            "--memory-hwm",
            "-1",
            "--timeout-init",
            "5000",
            "--output",
            "JSONL",
        ],
        "hello\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["text"], "hello");
    assert!(
        stderr(&out).contains("warning: a time limit `5000` is read as 5000 seconds"),
        "{}",
        stderr(&out)
    );
    let help = stdout(&jina(&["flow", "--help"], ""));
    assert!(
        help.contains("--port-expose") || help.contains("port-expose"),
        "{help}"
    );
    let out = jina(
        &[
            "pod",
            "--uses",
            passthrough.to_str().unwrap(),
            "--runtime-backend",
            "thread",
            "--polling",
            "ALL",
            "--help",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
