//! Each way a file can fail to be an executor has its own clear message naming
//! the file; the compiled-component cache turns a compile into a quick load.

use jina_wasm::Document;
use jina_wasm::executor::{
    CacheOutcome, ErrorKind, Executor, ExecutorSpec, LoadError, Runtime, RuntimeOptions, Sandbox,
};
use serde_json::{Value, json};

use crate::util::{cache_dir, load, runtime, start, text_doc, wasm};

fn load_error(path: &std::path::Path) -> LoadError {
    runtime().load(path).expect_err("load should fail")
}

#[test]
fn missing_file() {
    let error = load_error(std::path::Path::new("/nonexistent/x.wasm"));
    assert!(matches!(error, LoadError::NotFound { .. }));
    assert_eq!(
        error.to_string(),
        "executor file /nonexistent/x.wasm does not exist"
    );
}

#[test]
fn not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.wasm");
    std::fs::write(&path, "# not wasm at all").unwrap();
    let error = load_error(&path);
    assert!(matches!(error, LoadError::NotWasm { .. }), "{error}");
    assert!(error.to_string().contains("readme.wasm"));
}

#[test]
fn core_module_instead_of_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let error = load_error(&path);
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error}");
    assert!(error.to_string().contains("wasm32-wasip2"));
}

#[test]
fn truncated_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.wasm");
    let bytes = std::fs::read(wasm("passthrough")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = load_error(&path);
    assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
}

#[test]
fn component_of_another_world() {
    let error = load_error(&wasm("wrong-world"));
    assert!(matches!(error, LoadError::MissingExport { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("jina:executor/executor@0.2.0")
            && message.contains("jina:executor/executor@0.1.0")
            && message.contains("wasi:cli/run"),
        "{message}"
    );
}

#[test]
fn component_of_a_newer_contract() {
    let error = load_error(&wasm("future-contract"));
    assert!(
        matches!(&error, LoadError::WrongVersion { found, .. } if found == "0.3.0"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("this host implements 0.2.0 and 0.1.0"),
        "{error}"
    );
}

/// A component built against the published 0.1.0 contract still loads and
/// runs (its own bindings: handle, errors, logs), declares no endpoints, and
/// runs inside a Pea too (`pea::an_old_contract_component_runs_in_a_pea`).
#[test]
fn a_component_of_contract_0_1_0_still_runs() {
    let loaded = load("old-contract");
    assert_eq!(loaded.contract, "0.1.0");
    let endpoints =
        Executor::declared_endpoints(runtime(), loaded.clone(), "old-contract").unwrap();
    assert_eq!(endpoints, None, "0.1.0 cannot declare endpoints");
    let mut executor = start("old-contract", json!({}), Sandbox::default());
    let docs = vec![Document::from_text("hello")];
    let out = executor.handle("/upper", &docs, &json!({})).unwrap();
    assert_eq!(out[0].text.as_deref(), Some("HELLO"));
    let out = executor.handle("/anything", &docs, &json!({})).unwrap();
    assert_eq!(out, docs);
    let error = executor.handle("/fail", &docs, &json!({})).unwrap_err();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::BadRequest, "refused by a 0.1.0 executor")
    );
    executor.close().unwrap();
}

/// A 0.2.0 component declares its endpoints, from the SDK's routes, with
/// their docs; without `init`.
#[test]
fn a_component_of_contract_0_2_0_declares_its_endpoints() {
    let loaded = load("vector-indexer");
    let endpoints = Executor::declared_endpoints(runtime(), loaded, "idx")
        .unwrap()
        .expect("0.2.0 declares");
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["/index", "/search", "/delete", "/export", "/import"]
    );
    assert!(endpoints[0].doc.contains("capacity"), "{endpoints:?}");
}

#[test]
fn every_example_loads_and_names_its_contract() {
    for name in [
        "passthrough",
        "text-encoder",
        "sentence-segmenter",
        "vector-indexer",
        "match-merger",
    ] {
        let loaded = runtime()
            .load(&wasm(name))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.contract, "0.2.0");
        assert!(
            loaded
                .imports
                .iter()
                .any(|i| i.starts_with("jina:executor/types")),
            "{:?}",
            loaded.imports
        );
    }
}

#[test]
fn second_load_comes_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let path = wasm("passthrough");
    let first = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(first.load(&path).unwrap().cache, CacheOutcome::Compiled);
    let second = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(second.load(&path).unwrap().cache, CacheOutcome::Hit);
    // A corrupt artifact is recompiled, not trusted.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(third.load(&path).unwrap().cache, CacheOutcome::Compiled);
}

/// The pooling allocator (`--pool-slots`): a full pool is an error that names
/// the flag, and a dropped instance gives its slot back.
#[test]
fn a_full_instance_pool_names_the_flag_and_a_dropped_instance_frees_its_slot() {
    let pooled = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache_dir().to_path_buf()),
        pool_slots: Some(1),
    })
    .unwrap();
    assert_eq!(pooled.pool_slots(), Some(1));
    let component = pooled.load(&wasm("passthrough")).unwrap();
    let spec = || ExecutorSpec {
        name: "pooled".into(),
        config: Value::Null,
        sandbox: Sandbox::default(),
    };
    for _ in 0..3 {
        let first = Executor::start(pooled.clone(), component.clone(), spec()).unwrap();
        let full = Executor::start(pooled.clone(), component.clone(), spec())
            .err()
            .expect("a second instance in one slot");
        assert!(
            full.to_string()
                .contains("every instance slot of this process is taken (--pool-slots 1)"),
            "{full}"
        );
        drop(first);
    }
    let mut last = Executor::start(pooled.clone(), component, spec()).unwrap();
    let out = last
        .handle("/", &[text_doc("d", "still serving")], &Value::Null)
        .unwrap();
    assert_eq!(out[0].text.as_deref(), Some("still serving"));
}
