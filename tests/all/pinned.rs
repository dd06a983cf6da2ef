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
