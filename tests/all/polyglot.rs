//! Executors in Python and JavaScript (componentize-py, componentize-js) on the
//! same contract: the sentence-segmenter ported to both gives exactly the Rust
//! example's output for the same input, through the host API, in a Pea, and in
//! a Flow next to Rust executors.

use std::collections::BTreeMap;

use jina_wasm::executor::{ErrorKind, Sandbox};
use jina_wasm::{Document, NamedScore};
use serde_json::{Value, json};

use crate::util::{start, text_doc, try_start};

/// The Rust example and its ports, the Rust one first (the reference).
pub const SEGMENTERS: [&str; 3] = [
    "sentence-segmenter",
    "py-sentence-segmenter",
    "js-sentence-segmenter",
];

/// Inputs where a port could drift from Rust: byte offsets of non-ASCII text
/// (2-, 3- and 4-byte characters), Unicode whitespace Python's `isspace` or
/// JavaScript's `trim` treat differently (U+001C, U+FEFF, U+3000), `3.14` and
/// `...`, empty and missing text, and a document tree with every field that
/// must come back untouched.
fn inputs() -> Vec<Document> {
    let mut scores = BTreeMap::new();
    scores.insert(
        "cosine".to_string(),
        NamedScore {
            value: 0.5,
            op_name: Some("cos".into()),
            description: None,
        },
    );
    let full = Document {
        id: "tree".into(),
        text: Some("Keep me. And the rest!".into()),
        blob: Some(vec![0, 1, 255]),
        uri: Some("file:///x".into()),
        mime_type: Some("text/plain".into()),
        embedding: Some(vec![0.25, -1.5]),
        tags: json!({"k": [1, "two", null], "nested": {"f": 1.5}})
            .as_object()
            .unwrap()
            .clone(),
        scores: scores.clone(),
        chunks: vec![text_doc("tree-old", "An existing chunk. Not split again.")].into(),
        matches: vec![Document {
            scores,
            ..text_doc("m", "A match. Left alone.")
        }]
        .into(),
    };
    vec![
        text_doc("plain", "Hello world. How are you? Fine!\nNext line"),
        text_doc(
            "numbers",
            "Pi is 3.14! Wait... what?!Really?Yes\n\n  trailing  ",
        ),
        text_doc(
            "unicode",
            "Héllo wörld. Ça va? 日本語の文。 Emoji 😀 ok! fin",
        ),
        text_doc(
            "spaces",
            "\u{3000}Ideographic space.\u{3000}Next.\u{1c}Not a space. \u{feff}BOM is no space.\u{a0}",
        ),
        text_doc("empty", ""),
        Document {
            id: "no-text".into(),
            ..Default::default()
        },
        full,
    ]
}

#[test]
fn ports_give_the_rust_segmenters_output_for_the_same_input() {
    for config in [Value::Null, json!({"min_len": 6})] {
        let mut rust = start(SEGMENTERS[0], config.clone(), Sandbox::default());
        let expected = rust.handle("/index", &inputs(), &json!({"p": 1})).unwrap();
        // The reference does split (so equality below is not vacuous).
        assert_eq!(
            expected[0].chunks.len(),
            if config.is_null() { 4 } else { 3 }
        );
        for port in &SEGMENTERS[1..] {
            let mut executor = start(port, config.clone(), Sandbox::default());
            let out = executor
                .handle("/index", &inputs(), &json!({"p": 1}))
                .unwrap();
            for (want, got) in expected.iter().zip(&out) {
                assert_eq!(
                    got, want,
                    "{port} with {config} differs on document {:?}",
                    want.id
                );
            }
            assert_eq!(out.len(), expected.len(), "{port}");
            // And again on the same instance: no state leaks between requests.
            assert_eq!(
                executor.handle("/search", &inputs(), &Value::Null).unwrap(),
                expected,
                "{port}, second call"
            );
        }
    }
}

#[test]
fn ports_reject_a_bad_configuration_like_rust() {
    for config in [json!({"min_len": "long"}), json!({"min_len": -1})] {
        for name in SEGMENTERS {
            let error = try_start(name, config.clone(), Sandbox::default())
                .err()
                .unwrap_or_else(|| panic!("{name} accepted {config}"));
            assert_eq!(error.kind, ErrorKind::BadConfig, "{name}: {error}");
            assert!(
                error.to_string().contains("min_len"),
                "{name}: the message names the parameter: {error}"
            );
        }
    }
    // Jina's style: `with:` keys are constructor arguments; an unknown one is named.
    for name in &SEGMENTERS[1..] {
        let error = try_start(name, json!({"min_lenght": 3}), Sandbox::default())
            .err()
            .unwrap();
        assert_eq!(error.kind, ErrorKind::BadConfig, "{name}: {error}");
        assert!(error.to_string().contains("min_lenght"), "{name}: {error}");
    }
}

/// The documents of one JSON-lines output.
fn json_lines(out: &std::process::Output) -> Vec<Value> {
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

const TEXT: &str = "{\"id\": \"a\", \"text\": \"Héllo wörld. Ça va? Oui!\"}\n{\"id\": \"b\", \"text\": \"One. Two.\\nThree\"}\n";

#[test]
fn ports_serve_in_a_pea_like_rust() {
    let mut answers = Vec::new();
    for name in SEGMENTERS {
        let pea = crate::pea::PeaProcess::start(name, &["--name", name]);
        let (input, output) = (pea.addr("in"), pea.addr("out"));
        let out = crate::cli::jina(
            &[
                "client",
                "--in",
                &input,
                "--out",
                &output,
                "--timeout",
                "60s",
                "--request-size",
                "1",
            ],
            TEXT,
        );
        answers.push((name, json_lines(&out)));
    }
    let (_, rust) = &answers[0];
    assert_eq!(rust[0]["chunks"].as_array().unwrap().len(), 3, "{rust:?}");
    for (name, answer) in &answers[1..] {
        assert_eq!(answer, rust, "{name} in a Pea");
    }
}

#[test]
fn ports_run_in_a_flow_beside_rust_executors() {
    // segment (Rust, Python or JavaScript) -> encode (Rust) -> passthrough
    // (Rust): the same answer whichever language segmented.
    let mut answers = Vec::new();
    for name in SEGMENTERS {
        let flow = crate::flow::FlowProcess::start(&format!(
            "pods:\n  - name: segment\n    uses: {{W}}/{}.wasm\n  - name: encode\n    uses: {{W}}/text_encoder.wasm\n  - name: after\n    uses: {{W}}/passthrough.wasm\n",
            name.replace('-', "_")
        ));
        let port = flow.port().to_string();
        let indexed = json_lines(&crate::cli::jina(
            &["client", "--port", &port, "--endpoint", "/index"],
            TEXT,
        ));
        assert_eq!(indexed.len(), 2, "{name}: {indexed:?}");
        let chunks = indexed[1]["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 3, "{name}: {indexed:?}");
        assert!(
            chunks
                .iter()
                .all(|c| c["embedding"].as_array().is_some_and(|e| e.len() == 256)),
            "{name}: chunks encoded by Rust"
        );
        answers.push((name, indexed));
    }
    for (name, answer) in &answers[1..] {
        assert_eq!(answer, &answers[0].1, "{name} in a Flow");
    }
}

/// Runs a scaffold's build command in its folder; panics with its output.
fn build(dir: &std::path::Path, program: &str, args: &[&str], envs: &[(&str, &std::ffi::OsStr)]) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `jina-wasm new NAME --lang LANG`, built by `build_it`, then run as the
/// scaffold's README says: `/upper` with a `suffix`. Returns the folder and
/// the component.
fn scaffold_builds_and_runs(
    lang: &str,
    wasm: &str,
    build_it: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("greeter");
    let out = crate::cli::jina(
        &[
            "new",
            "greeter",
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("--uses {wasm}")),
        "the README says how to run it:\n{readme}"
    );
    build_it(&dir);
    let uses = dir.join(wasm);
    let out = crate::cli::jina(
        &[
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--endpoint",
            "/upper",
            "--uses-with",
            "{suffix: '!'}",
        ],
        "hello\nworld\n",
    );
    let texts: Vec<Value> = json_lines(&out)
        .into_iter()
        .map(|d| d["text"].clone())
        .collect();
    assert_eq!(texts, [json!("HELLO!"), json!("WORLD!")], "{lang}");
    // Other endpoints pass the documents through.
    let out = crate::cli::jina(
        &[
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--endpoint",
            "/index",
        ],
        "hello\n",
    );
    assert_eq!(json_lines(&out)[0]["text"], "hello", "{lang}");
    (parent, uses)
}

/// Sends `docs` to `endpoint` of a Pea or Pod; the answer sorted by id.
fn call(p: &crate::pea::PeaProcess, endpoint: &str, docs: &str) -> Vec<Value> {
    let out = crate::cli::jina(
        &[
            "client",
            "--in",
            &p.addr("in"),
            "--out",
            &p.addr("out"),
            "--endpoint",
            endpoint,
            "--timeout",
            "60s",
            "--request-size",
            "1",
        ],
        docs,
    );
    let mut answer = json_lines(&out);
    answer.sort_by_key(|d| d["id"].as_str().unwrap_or_default().to_string());
    answer
}

/// Runs a scaffold built with a `/where` handler (added by the test) that
/// tags each document with its instance's runtime args and the request's
/// `top_k` as the SDK's integer getter reads it: as two shards, `/upper`
/// answers as in a Pea (the host's facts do not reach the constructor, which
/// refuses unknown parameters) and each shard reports its id; as two
/// read-only replicas, each reports a replica id and read-only; as two
/// shards of two replicas, each reports both.
fn scaffold_reads_its_runtime_args(lang: &str, uses: &std::path::Path) {
    let docs: String = (0..8)
        .map(|i| format!("{{\"id\": \"d{i}\", \"text\": \"doc {i}\"}}\n"))
        .collect();
    let start = |args: &[&str]| {
        let mut all = vec!["--pod", "--name", "greeter", "--uses-with", "{suffix: '!'}"];
        all.extend_from_slice(args);
        crate::pea::PeaProcess::try_start_uses(uses, &all, |_| {})
            .unwrap_or_else(|log| panic!("the {lang} scaffold as {args:?} did not start:\n{log}"))
    };
    // Jina's Python client sends `top_k: 3` as 3.0: the getter reads 3.
    let tags_of = |p: &crate::pea::PeaProcess| -> Vec<Value> {
        let out = crate::cli::jina(
            &[
                "client",
                "--in",
                &p.addr("in"),
                "--out",
                &p.addr("out"),
                "--endpoint",
                "/where",
                "--parameters",
                r#"{"top_k": 3.0}"#,
                "--timeout",
                "60s",
                "--request-size",
                "1",
            ],
            &docs,
        );
        json_lines(&out)
            .into_iter()
            .map(|d| d["tags"].clone())
            .collect()
    };

    let shards = start(&["--shards", "2"]);
    let upper = call(&shards, "/upper", &docs);
    assert_eq!(upper.len(), 8, "{lang}: {upper:?}");
    assert!(
        upper
            .iter()
            .all(|d| d["text"].as_str().unwrap().ends_with('!')),
        "{lang}: {upper:?}"
    );
    let tags = tags_of(&shards);
    assert_eq!(tags.len(), 8, "{lang}: {tags:?}");
    let shard_ids: std::collections::BTreeSet<u64> =
        tags.iter().filter_map(|t| t["shard_id"].as_u64()).collect();
    assert_eq!(
        shard_ids,
        [0, 1].into(),
        "{lang}: both shards answered: {tags:?}"
    );
    assert!(
        tags.iter().all(|t| t["shards"] == 2
            && t["suffix"] == "!"
            && t["replica_id"].is_null()
            && t["read_only"] == false
            && t["top_k"] == 3),
        "{lang}: {tags:?}"
    );
    drop(shards);

    // Shards × replicas: each instance knows its shard and its replica.
    let grid = start(&["--shards", "2", "--parallel", "2"]);
    let tags = tags_of(&grid);
    assert_eq!(tags.len(), 8, "{lang}: {tags:?}");
    let shard_ids: std::collections::BTreeSet<u64> =
        tags.iter().filter_map(|t| t["shard_id"].as_u64()).collect();
    assert_eq!(shard_ids, [0, 1].into(), "{lang}: {tags:?}");
    assert!(
        tags.iter().all(|t| t["shards"] == 2
            && t["replicas"] == 2
            && (t["replica_id"] == "0" || t["replica_id"] == "1")
            && t["suffix"] == "!"),
        "{lang}: {tags:?}"
    );
    drop(grid);

    let workspace = tempfile::tempdir().unwrap();
    let replicas = start(&[
        "--parallel",
        "2",
        "--workspace",
        workspace.path().to_str().unwrap(),
        "--read-only",
    ]);
    let tags = tags_of(&replicas);
    assert_eq!(tags.len(), 8, "{lang}: {tags:?}");
    assert!(
        tags.iter().all(|t| t["read_only"] == true
            && t["durable"] == false
            && t["shard_id"].is_null()
            && t["replica_id"].is_string()),
        "{lang}: {tags:?}"
    );
}

#[test]
fn new_python_scaffold_builds_and_runs() {
    let python =
        crate::util::python_venv("componentize-py-venv", "guest-sdk/python/requirements.txt");
    let componentize = python.with_file_name("componentize-py");
    let (_dir, uses) = scaffold_builds_and_runs("python", "greeter.wasm", |dir| {
        // The scaffold as made, plus the `/where` handler (one build for
        // both: a Python build takes a minute).
        let file = dir.join("executor.py");
        let mut code = std::fs::read_to_string(&file).unwrap();
        code.push_str(
            "\n    @requests(on=\"/where\")\n    def where(self, docs, parameters, **kwargs):\n        \
             args = self.runtime_args\n        for doc in docs:\n            \
             doc.tags.update(shard_id=args.shard_id, shards=args.shards, replica_id=args.replica_id, \
             replicas=args.replicas, read_only=args.read_only, durable=args.durable, suffix=self.suffix, \
             top_k=parameters.get_int(\"top_k\"))\n",
        );
        std::fs::write(&file, code).unwrap();
        build(
            dir,
            "sh",
            &["build.sh"],
            &[("COMPONENTIZE_PY", componentize.as_os_str())],
        );
    });
    scaffold_reads_its_runtime_args("python", &uses);
}

#[test]
fn new_js_scaffold_builds_and_runs() {
    // The scaffold's pinned packages are the SDK's, which `make guests`
    // installed once: link them instead of a second `npm ci`.
    let modules = crate::util::target_dir().join("js-tools/node_modules");
    assert!(
        modules.exists(),
        "{} is missing: run `make guests` first",
        modules.display()
    );
    let (_dir, uses) = scaffold_builds_and_runs("js", "greeter.wasm", |dir| {
        std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
        // The scaffold as made, plus the `/where` handler.
        let file = dir.join("executor.js");
        let code = std::fs::read_to_string(&file).unwrap();
        let class = code
            .split("class ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string();
        let handler = format!(
            "{class}.prototype.where = function (docs, parameters) {{\n  \
             const a = this.runtimeArgs;\n  \
             for (const doc of docs) Object.assign(doc.tags, {{ shard_id: a.shardId ?? null, \
             shards: a.shards ?? null, replica_id: a.replicaId ?? null, replicas: a.replicas ?? null, read_only: a.readOnly, \
             durable: a.durable, suffix: this.suffix, top_k: parameters.getInt('top_k') }});\n}};\n\
             requests({class}.prototype.where, {{ on: '/where' }});\n\nexport const executor"
        );
        std::fs::write(&file, code.replacen("export const executor", &handler, 1)).unwrap();
        build(dir, "npm", &["run", "build", "--silent"], &[]);
    });
    scaffold_reads_its_runtime_args("js", &uses);
}

#[test]
fn new_rust_scaffold_builds_and_runs() {
    // One target directory for every run, so the SDK's dependencies are
    // compiled once, not per test run.
    let target = crate::util::target_dir().join("scaffold-target");
    scaffold_builds_and_runs("rust", "target/wasm32-wasip2/release/greeter.wasm", |dir| {
        build(
            dir,
            "cargo",
            &["build", "--release", "--quiet"],
            &[("CARGO_TARGET_DIR", target.as_os_str())],
        );
        let built = target.join("wasm32-wasip2/release/greeter.wasm");
        std::fs::create_dir_all(dir.join("target/wasm32-wasip2/release")).unwrap();
        std::fs::copy(built, dir.join("target/wasm32-wasip2/release/greeter.wasm")).unwrap();
    });
}

#[test]
fn new_refuses_bad_names_folders_and_sdks() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().to_str().unwrap();
    std::fs::write(parent.path().join("taken"), "").unwrap();
    for (args, expected) in [
        (
            vec!["new", "Greeter", "--lang", "js", "--dir", dir],
            "executor name \"Greeter\": use lower-case letters",
        ),
        (
            vec!["new", "greeter", "--lang", "python", "--dir", dir],
            "the folder exists and is not empty",
        ),
        (
            vec![
                "new",
                "greeter",
                "--lang",
                "rust",
                "--dir",
                &format!("{dir}/x"),
                "--sdk",
                dir,
            ],
            "not the jina-guest-sdk crate",
        ),
        (
            vec!["new", "greeter", "--lang", "go"],
            "invalid value 'go' for '--lang <LANG>'",
        ),
    ] {
        let out = crate::cli::jina(&args, "");
        assert_eq!(
            out.status.code(),
            Some(if args.contains(&"go") { 2 } else { 1 }),
            "{args:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(
        !parent.path().join("x").exists(),
        "nothing written on failure"
    );
}
