//! The host's facts about an instance (shard, replica, read-only, durable:
//! Jina's `runtime_args`) reach executors apart from their `with:`
//! parameters, in every SDK: the Python and JavaScript executors, which
//! refuse unknown parameters in Jina's style, run as shards, replicas,
//! read-only and durable, in a Pod and in a Flow, with the Rust executor's
//! exact output. (The fresh Python scaffold reading its `runtime_args` is in
//! `polyglot::new_python_scaffold_builds_and_runs`.)
//!
//! And the real Jina client's `parameters={'top_k': 3}` (a double on the
//! wire) searches the Rust indexers; `3.5` is refused by name.

use serde_json::Value;

use crate::polyglot::SEGMENTERS;

/// Two documents of three sentences each, one request per document (so a
/// sharded Pod sends them to their shards separately).
const TEXT: &str = "{\"id\": \"a\", \"text\": \"Héllo wörld. Ça va? Oui!\"}\n{\"id\": \"b\", \"text\": \"One. Two.\\nThree\"}\n{\"id\": \"c\", \"text\": \"Un. Deux.\"}\n{\"id\": \"d\", \"text\": \"Eins! Zwei?\"}\n";

/// The answer's documents, sorted by id: shards and replicas answer in any order.
fn sorted(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    docs.sort_by_key(|d| d["id"].as_str().unwrap_or_default().to_string());
    docs
}

/// `/index` through a Pea or Pod's sockets with `jina-wasm client`.
fn index(p: &crate::pea::PeaProcess) -> Vec<Value> {
    sorted(&crate::cli::jina(
        &[
            "client",
            "--in",
            &p.addr("in"),
            "--out",
            &p.addr("out"),
            "--endpoint",
            "/index",
            "--timeout",
            "60s",
            "--request-size",
            "1",
        ],
        TEXT,
    ))
}

#[test]
fn python_and_js_executors_run_as_shards_replicas_read_only_and_durable_in_a_pod() {
    let reference = index(&crate::pea::PeaProcess::start(SEGMENTERS[0], &[]));
    assert_eq!(reference.len(), 4, "{reference:?}");
    assert_eq!(reference[1]["chunks"].as_array().unwrap().len(), 3);
    for name in &SEGMENTERS[1..] {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().to_str().unwrap();
        for (mode, args) in [
            ("shards", vec!["--shards", "2"]),
            ("replicas", vec!["--parallel", "2"]),
            (
                "shards × replicas",
                vec!["--shards", "2", "--parallel", "2"],
            ),
            (
                "durable shards",
                vec![
                    "--shards",
                    "2",
                    "--workspace",
                    workspace,
                    "--dump-interval",
                    "0",
                ],
            ),
            (
                "read-only replicas",
                vec!["--parallel", "2", "--workspace", workspace, "--read-only"],
            ),
            (
                "a read-only Pea",
                vec!["--workspace", workspace, "--read-only"],
            ),
        ] {
            let mut all = vec!["--name", "seg"];
            all.extend(args);
            let p = crate::pod::try_pod(name, &all)
                .unwrap_or_else(|log| panic!("{name} as {mode} did not start:\n{log}"));
            assert_eq!(index(&p), reference, "{name} as {mode}");
        }
    }
}

#[test]
fn python_and_js_executors_run_as_shards_replicas_read_only_and_durable_in_a_flow() {
    let answer = |flow: &crate::flow::FlowProcess| {
        sorted(&crate::cli::jina(
            &[
                "client",
                "--port",
                &flow.port().to_string(),
                "--endpoint",
                "/index",
                "--request-size",
                "1",
            ],
            TEXT,
        ))
    };
    let reference = answer(&crate::flow::FlowProcess::start(
        "pods:\n  - name: segment\n    uses: {W}/sentence_segmenter.wasm\n",
    ));
    assert_eq!(reference.len(), 4, "{reference:?}");
    // Each port segments as two durable shards, then the other port runs as
    // read-only replicas with a `min_len` no sentence reaches (so it adds
    // nothing, and its own `with:` still reaches it beside the host's facts).
    for (first, second) in [
        (SEGMENTERS[1], SEGMENTERS[2]),
        (SEGMENTERS[2], SEGMENTERS[1]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().display();
        let flow = crate::flow::FlowProcess::start(&format!(
            "pods:\n  - name: segment\n    uses: {{W}}/{}.wasm\n    shards: 2\n    workspace: {ws}/segment\n    dump_interval: 0\n  - name: again\n    uses: {{W}}/{}.wasm\n    parallel: 2\n    workspace: {ws}\n    read_only: true\n    with: {{min_len: 1000}}\n",
            first.replace('-', "_"),
            second.replace('-', "_"),
        ));
        assert_eq!(answer(&flow), reference, "{first} then {second} in a Flow");
    }
}

#[test]
fn the_jina_clients_top_k_is_a_whole_number_for_both_indexers() {
    let python = crate::util::python_venv(
        "jina-client-venv",
        "tests/interop/jina_client/requirements.txt",
    );
    for indexer in ["vector_indexer", "hnsw_indexer"] {
        let dir = tempfile::tempdir().unwrap();
        let flow = crate::flow::FlowProcess::start(&format!(
            "pods:\n  - name: index\n    uses: {{W}}/{indexer}.wasm\n    workspace: {}\n",
            dir.path().display()
        ));
        let out = std::process::Command::new(&python)
            .arg("tests/interop/jina_client/jina_search_top_k.py")
            .args(["--port", &flow.port().to_string()])
            .env("JINA_OPTOUT_TELEMETRY", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("jina top_k ok"),
            "{indexer}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
