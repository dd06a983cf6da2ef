//! `jina-wasm run`, `inspect`, `flow check`, `cache` and Jina's flags as a user runs them, and the README's commands as printed.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::util::wasm;

/// Runs `jina-wasm ARGS` with `stdin`, sharing the tests' component cache.
pub fn jina(args: &[&str], stdin: &str) -> Output {
    let mut child = crate::util::jina_command()
        .args(args)
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
        // A command that fails at once may exit before reading its input.
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e),
        })
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
        stdout(&out).contains("contract:  jina:executor@0.2.0 (this host: 0.2.0 and 0.1.0)"),
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
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("contract 0.3.0") && error.contains("this host implements 0.2.0 and 0.1.0"),
        "{error}"
    );
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
            // Shards × replicas count as shards times replicas.
            "peas",
            pod("    shards: 8\n    replicas: 8\n"),
            "the Flow would start 65 Peas, over its limit of 64",
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
    // Jina's spellings pass, and shards × replicas.
    let file = dir.path().join("jina.yml");
    std::fs::write(
        &file,
        pod("    shards: 2\n    replicas: 2\n    uses_with: {k: 1}\n    timeout_ready: -1\n    memory_hwm: -1\n    on_error_strategy: throw_early\n    polling: ALL\n    timeout_request: 60000\n"),
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
    // The executor sees both values given after one --env.
    let misbehave = wasm("misbehave");
    let out = jina(
        &[
            "run",
            "--uses",
            misbehave.to_str().unwrap(),
            "--endpoint",
            "/env",
            "--env",
            "A=1",
            "B=2",
        ],
        "x\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env = &lines(&out)[0]["tags"]["env"];
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str()),
        (Some("1"), Some("2")),
        "{env}"
    );
    let help = stdout(&jina(&["flow", "--help"], ""));
    assert!(
        help.contains("--port <PORT>") && help.contains("port-expose"),
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

/// Issue 16: the README's "A Pea by hand" block, run as printed: every
/// command and flag comes from the README itself; only the ports are swapped
/// for free ones, `$W` for the guests' directory and `target/debug/jina-wasm`
/// for the binary under test.
#[test]
fn readme_a_pea_by_hand_runs_as_printed() {
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let readme = std::fs::read_to_string("README.md").unwrap();
    let section = readme
        .split("### A Pea by hand")
        .nth(1)
        .expect("the README has `A Pea by hand`");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let ports = [("40101", free()), ("40102", free()), ("40103", free())];
    let guests = wasm("text_encoder").parent().unwrap().to_path_buf();
    let mut pea: Option<Kill> = None;
    let mut ran = Vec::new();
    for line in block.lines() {
        let line = line.split("  #").next().unwrap().trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with("make ")
            || line.starts_with("W=")
        {
            continue;
        }
        let mut line = line.replace("$W", guests.to_str().unwrap());
        for (printed, mine) in &ports {
            line = line.replace(printed, mine);
        }
        if line == "kill %1" {
            let mut child = pea.take().expect("a Pea in the background to kill");
            assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
            let status = child.0.wait().unwrap();
            assert!(status.success(), "the Pea after SIGTERM: {status}");
            ran.push(line);
            continue;
        }
        let (stdin, command) = match line.split_once(" | ") {
            Some((echo, command)) => (
                format!("{}\n", echo.trim_start_matches("echo ").trim_matches('"')),
                command.to_string(),
            ),
            None => (String::new(), line.clone()),
        };
        let (command, background) = match command.strip_suffix('&') {
            Some(c) => (c.trim().to_string(), true),
            None => (command, false),
        };
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("target/debug/jina-wasm"), "{line}");
        let args: Vec<&str> = words.collect();
        if background {
            use std::io::BufRead;
            let mut child = Kill(
                crate::util::jina_command()
                    .args(&args)
                    .env("JINA_WASM_LOG", "warn")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let mut ready = String::new();
            std::io::BufReader::new(child.0.stdout.take().unwrap())
                .read_line(&mut ready)
                .unwrap();
            let ready: serde_json::Value =
                serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{line}: {e}: {ready}"));
            assert_eq!(
                ready["in"],
                format!("tcp://127.0.0.1:{}", ports[0].1),
                "{ready}"
            );
            pea = Some(child);
        } else {
            let out = jina(&args, &stdin);
            assert!(out.status.success(), "{line}: {}", stderr(&out));
            if !stdin.is_empty() {
                let docs = lines(&out);
                assert_eq!(docs[0]["text"], "hello world", "{line}");
                assert!(
                    docs[0]["embedding"]
                        .as_array()
                        .is_some_and(|e| !e.is_empty()),
                    "{line}"
                );
            }
        }
        ran.push(line);
    }
    assert_eq!(ran.len(), 4, "{ran:?}");
}

/// Issue 16: compiling says so in the log (name, size, "cached afterwards");
/// a load from the cache does not; the cache is listed, trimmed to its cap
/// least recently used first (a load counts as a use), and pruned.
#[test]
fn the_component_cache_logs_compiles_and_keeps_the_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap();
    let run = |guest: &str, max: &str| {
        let out = crate::util::jina_command()
            .args(["run", "--uses", wasm(guest).to_str().unwrap()])
            .env("JINA_WASM_CACHE_DIR", cache)
            .env("JINA_WASM_CACHE_MAX", max)
            .env("JINA_WASM_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{guest}: {}", stderr(&out));
        stderr(&out)
    };
    let listed = || {
        let out = jina(&["cache", "ls", "--cache-dir", cache], "");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let log = run("passthrough", "1GiB");
    assert!(
        log.contains("compiling ")
            && log.contains("passthrough.wasm (")
            && log.contains("cached afterwards in"),
        "{log}"
    );
    assert!(
        !run("passthrough", "1GiB").contains("compiling "),
        "a second start compiled again"
    );
    run("sentence_segmenter", "1GiB");
    assert!(listed().contains("2 compiled components"), "{}", listed());
    // passthrough used again: now the most recent; a cap of 1 byte on the
    // next store keeps only what was just stored.
    run("passthrough", "1GiB");
    let log = run("text_encoder", "1B");
    assert!(log.contains("removed the 2 least recently used"), "{log}");
    assert!(listed().contains("1 compiled components"), "{}", listed());
    // prune: least recently used first.
    run("passthrough", "1GiB");
    let entries = listed();
    let newest = entries.lines().next().unwrap().to_string();
    // The newest artifact's exact size, from the directory itself.
    let newest_bytes = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .max_by_key(|m| m.modified().unwrap())
        .unwrap()
        .len();
    let max = format!("{newest_bytes}B");
    let out = jina(&["cache", "prune", "--cache-dir", cache, "--max", &max], "");
    assert!(
        stdout(&out).contains("removed 1 compiled components"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listed().lines().next().unwrap(), newest);
    let out = jina(&["cache", "prune", "--cache-dir", cache, "--all"], "");
    assert!(
        stdout(&out).contains("removed 1 compiled components"),
        "{}",
        stdout(&out)
    );
    assert!(listed().contains("0 compiled components"));
}

/// `inspect` lists the endpoints a component declares, from each SDK's own
/// routing: the Rust SDK's `Routes` (with `.doc`), Python's `@requests`
/// (with the docstring's first line), JavaScript's `requests(.., {doc})`;
/// a 0.1.0 component declares none and takes any.
#[test]
fn inspect_lists_the_declared_endpoints_of_each_sdk() {
    let out = jina(&["inspect", wasm("vector-indexer").to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "endpoints:",
        "  /index   Store the documents' embeddings",
        "  /search  Add each document's `top_k` nearest",
        "  /import  Store documents that /export returned",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    for guest in ["py-sentence-segmenter", "js-sentence-segmenter"] {
        let out = jina(&["inspect", "--json", wasm(guest).to_str().unwrap()], "");
        assert!(out.status.success(), "{guest}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["contract"], "jina:executor@0.2.0", "{report}");
        // Python's doc is its docstring's first line, period included.
        let endpoints = report["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{guest}: {report}");
        assert_eq!(endpoints[0]["name"], "__default__", "{guest}: {report}");
        assert!(
            endpoints[0]["doc"]
                .as_str()
                .unwrap()
                .starts_with("Append one chunk per sentence to each document with text"),
            "{guest}: {report}"
        );
    }
    let out = jina(&["inspect", wasm("old-contract").to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "contract:  jina:executor@0.1.0 (this host: 0.2.0 and 0.1.0) - runnable\nendpoints: none declared (contract 0.1.0 cannot): takes any endpoint"
        ),
        "{}",
        stdout(&out)
    );
}
