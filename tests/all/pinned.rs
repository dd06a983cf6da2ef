//! A Pod with a Head starts its Peas from a checked copy of `uses`
//! (src/pod/update/checked.rs): what the operator pinned still holds, and a
//! Pod that does not start leaves no copy behind.

use crate::pea::PeaProcess;
use crate::util::wasm;

/// The directories of checked files under `tmp`.
fn checked_dirs(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("jina-wasm-checked-"))
        .collect()
}

/// `jina-wasm pod --uses-sha256` with replicas or shards refuses a file of
/// another digest, as a single Pea does, naming the operator's path: the
/// Pod's copy was pinned to whatever the file held, and the pin was dropped.
#[test]
fn a_pods_uses_sha256_is_kept_with_a_head() {
    let wrong = "0".repeat(64);
    let uses = wasm("text_encoder");
    for layout in [["--parallel", "2"], ["--shards", "2"]] {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--uses-sha256",
            wrong.as_str(),
            "--uses-with",
            r#"{"dim": 8}"#,
        ];
        args.extend(layout);
        let mut all = vec!["--pod"];
        all.extend(args);
        let started = PeaProcess::try_start_uses(&uses, &all, |c| {
            c.env("TMPDIR", tmp.path());
        });
        let log = match started {
            Ok(_) => panic!("{layout:?}: a file of another SHA-256 than --uses-sha256 was started"),
            Err(log) => log,
        };
        for part in [
            "is not the file that was checked",
            &wrong,
            &uses.display().to_string(),
        ] {
            assert!(log.contains(part), "{layout:?}: no `{part}` in: {log}");
        }
        assert!(
            checked_dirs(tmp.path()).is_empty(),
            "{layout:?}: a copy was left"
        );
    }
}

/// `path` with a custom section appended: a valid component of another
/// SHA-256.
fn another_digest(path: &std::path::Path, to: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend_from_slice(&[0, 6, 4, b'n', b'o', b't', b'e', b'!']);
    std::fs::write(to, bytes).unwrap();
}

/// Every Pea of the Flow's first Pod runs a file that is there (a PROCESS
/// Pea restarted after a crash reads it again).
fn every_peas_file_is_there(flow: &crate::flow::FlowProcess, when: &str) {
    let ctrl = flow.ready["pods"][0]["ctrl"].as_str().unwrap().to_string();
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::util::control(&ctrl, "STATUS"))
        .unwrap();
    for pea in status["peas"].as_array().unwrap() {
        let uses = pea["uses"].as_str().unwrap_or_else(|| panic!("{pea}"));
        assert!(
            std::path::Path::new(uses).exists(),
            "{when}: {} runs {uses}, which was removed",
            pea["pea"]
        );
    }
}

/// A degraded update leaves some replicas on the new version (their put-back
/// failed). A later update that is refused at its first Pea and rolls back
/// must not remove the copy those replicas still run: a crashed one would
/// never restart.
#[test]
fn a_rollback_keeps_the_copy_a_degraded_replica_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (uses, other) = (dir.path().join("a.wasm"), dir.path().join("b.wasm"));
    std::fs::copy(wasm("misbehave"), &uses).unwrap();
    another_digest(&uses, &other);
    let workspace = dir.path().join("ws");
    let flow = crate::flow::FlowProcess::start(&format!(
        "pods:\n  - name: mis\n    uses: {}\n    with: {{fail_init_if_exists: /workspace/a}}\n    shards: 2\n    parallel: 2\n    workspace: {}\n",
        uses.display(),
        workspace.display()
    ));
    let port = flow.port();
    let shard = |i: usize| workspace.join("mis").join(format!("shard-{i}"));
    // Shard 0 refuses its first settings from now on, shard 1 the second.
    std::fs::write(shard(0).join("a"), b"").unwrap();
    std::fs::write(shard(1).join("b"), b"").unwrap();
    let update = |body: serde_json::Value| crate::flow::post(port, "/admin/update", &body);
    let (code, answer) = update(serde_json::json!({
        "pod": "mis", "uses": other, "uses_with": {"fail_init_if_exists": "/workspace/b"}
    }));
    assert_ne!(code, 200, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("putting back the previous settings failed too"),
        "{answer}"
    );
    every_peas_file_is_there(&flow, "degraded");

    // Refused at shard 0's first replica: nothing replaced, "rolled back".
    std::fs::write(shard(0).join("c"), b"").unwrap();
    let (code, answer) = update(serde_json::json!({
        "pod": "mis", "uses": uses, "uses_with": {"fail_init_if_exists": "/workspace/c"}
    }));
    assert_ne!(code, 200, "{answer}");
    every_peas_file_is_there(&flow, "after a rolled-back update");
}
