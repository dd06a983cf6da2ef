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
    assert_eq!(actual, expected, "{} differs (JINA_WASM_BLESS=1 rewrites it)", golden.display());
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
        let error = Flow::parse(&text, &file, env).err().unwrap_or_else(|| panic!("{} parsed", file.display()));
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
