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
