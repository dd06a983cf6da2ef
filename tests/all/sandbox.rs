//! Misbehaving guests (tests/guests/misbehave) are contained: each bad call ends
//! with the right error kind, and the same executor then serves a good request.
//! Every limit is tested both ways: obeyed and violated.

use std::time::{Duration, Instant};

use jina_wasm::executor::{ErrorKind, Executor, Phase, Sandbox};
use serde_json::{Value, json};

use crate::util::{start, text_doc, try_start};

fn misbehave(sandbox: Sandbox) -> Executor {
    start("misbehave", Value::Null, sandbox)
}

fn call(
    executor: &mut Executor,
    endpoint: &str,
    params: Value,
) -> Result<Vec<jina_wasm::Document>, jina_wasm::ExecutorError> {
    executor.handle(endpoint, &[text_doc("d", "hello")], &params)
}

/// The good request every containment test ends with.
fn still_serves(executor: &mut Executor) {
    let docs =
        call(executor, "/echo", Value::Null).expect("a good request after a bad one succeeds");
    assert_eq!(docs[0].text.as_deref(), Some("hello"));
}

fn expect_kind(
    result: Result<Vec<jina_wasm::Document>, jina_wasm::ExecutorError>,
    kind: ErrorKind,
) -> jina_wasm::ExecutorError {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.kind, kind, "unexpected error: {error}");
    assert_eq!(error.executor, "misbehave");
    error
}

fn limits(memory: u64, call: Duration) -> Sandbox {
    Sandbox {
        memory_limit: memory,
        call_timeout: call,
        ..Sandbox::default()
    }
}

#[test]
fn infinite_loop_times_out_then_recovers() {
    let mut executor = misbehave(limits(64 << 20, Duration::from_millis(300)));
    let started = Instant::now();
    let error = expect_kind(
        call(&mut executor, "/loop", Value::Null),
        ErrorKind::Timeout,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline stopped the loop"
    );
    assert!(error.message.contains("300ms"), "{error}");
    still_serves(&mut executor);
    assert_eq!(executor.stats().traps, 1);
    assert_eq!(executor.stats().restarts, 1);
}

#[test]
fn time_limit_obeyed_by_a_slow_but_finite_init() {
    let sandbox = Sandbox {
        init_timeout: Duration::from_secs(20),
        ..Sandbox::default()
    };
    let mut executor = start("misbehave", json!({"slow_init_ms": 200}), sandbox);
    still_serves(&mut executor);
}

#[test]
fn slow_init_past_its_limit_is_a_timeout_in_init() {
    let sandbox = Sandbox {
        init_timeout: Duration::from_millis(200),
        ..Sandbox::default()
    };
    let error = try_start("misbehave", json!({"slow_init_ms": 60_000}), sandbox)
        .err()
        .expect("init must time out");
    assert_eq!(
        (error.phase, error.kind),
        (Phase::Init, ErrorKind::Timeout),
        "{error}"
    );
}

#[test]
fn memory_bomb_hits_the_limit_then_recovers() {
    let mut executor = misbehave(limits(64 << 20, Duration::from_secs(20)));
    let error = expect_kind(
        call(&mut executor, "/alloc", Value::Null),
        ErrorKind::MemoryLimit,
    );
    assert!(error.message.contains("64 MiB"), "{error}");
    still_serves(&mut executor);
}

#[test]
fn many_small_allocations_hit_the_limit() {
    let mut executor = misbehave(limits(32 << 20, Duration::from_secs(20)));
    expect_kind(
        call(&mut executor, "/alloc-small", Value::Null),
        ErrorKind::MemoryLimit,
    );
    still_serves(&mut executor);
}

#[test]
fn memory_limit_obeyed_by_a_large_but_bounded_result() {
    // 4M floats = 16 MiB of guest memory (plus its copy on the way out): fits in 128 MiB.
    let mut executor = misbehave(limits(128 << 20, Duration::from_secs(20)));
    let docs = call(&mut executor, "/big-embedding", json!({"n": 4_000_000})).unwrap();
    assert_eq!(docs[0].embedding.as_ref().unwrap().len(), 4_000_000);
    // ...and the same request under a limit it cannot fit in.
    let mut small = misbehave(limits(8 << 20, Duration::from_secs(20)));
    expect_kind(
        call(&mut small, "/big-embedding", json!({"n": 4_000_000})),
        ErrorKind::MemoryLimit,
    );
    still_serves(&mut small);
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let mut executor = misbehave(Sandbox::default());
    expect_kind(
        call(&mut executor, "/recurse", Value::Null),
        ErrorKind::StackOverflow,
    );
    still_serves(&mut executor);
}

#[test]
fn shadow_stack_exhaustion_is_a_trap_with_a_hint() {
    let mut executor = misbehave(Sandbox::default());
    let error = expect_kind(
        call(&mut executor, "/recurse-shadow", Value::Null),
        ErrorKind::Trap,
    );
    assert!(
        error.message.contains("out of bounds") && error.message.contains("recursion"),
        "{error}"
    );
    still_serves(&mut executor);
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let mut executor = misbehave(Sandbox::default());
    let error = expect_kind(call(&mut executor, "/panic", Value::Null), ErrorKind::Panic);
    assert!(error.message.contains("panicked at"), "{error}");
    still_serves(&mut executor);
}

#[test]
fn a_trap_in_init_fails_the_start_with_the_panic_message() {
    let error = try_start(
        "misbehave",
        json!({"panic_in_init": true}),
        Sandbox::default(),
    )
    .err()
    .expect("init panics");
    assert_eq!(
        (error.phase, error.kind),
        (Phase::Init, ErrorKind::Panic),
        "{error}"
    );
}

fn workspace_with_secret() -> (tempfile::TempDir, tempfile::TempDir) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("inside.txt"), "inside").unwrap();
    (outside, workspace)
}

fn with_workspace(workspace: &tempfile::TempDir, read_only: bool) -> Sandbox {
    Sandbox {
        workspace: Some(workspace.path().to_path_buf()),
        read_only,
        ..Sandbox::default()
    }
}

#[test]
fn filesystem_reads_inside_the_workspace_are_allowed() {
    let (_outside, workspace) = workspace_with_secret();
    let mut executor = misbehave(with_workspace(&workspace, false));
    let docs = call(
        &mut executor,
        "/read",
        json!({"path": "/workspace/inside.txt"}),
    )
    .unwrap();
    assert_eq!(docs[0].text.as_deref(), Some("inside"));
}

#[test]
fn filesystem_escapes_are_refused() {
    let (outside, workspace) = workspace_with_secret();
    let secret = outside.path().join("secret.txt");
    // A symlink inside the workspace that points out, made by someone on the host.
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("link-out")).unwrap();
    let mut executor = misbehave(with_workspace(&workspace, false));
    let attempts = [
        secret.display().to_string(),
        "/etc/passwd".to_string(),
        "/workspace/../secret.txt".to_string(),
        format!("/workspace/../../../../..{}", secret.display()),
        "/workspace/link-out/secret.txt".to_string(),
        "../secret.txt".to_string(),
    ];
    for path in attempts {
        let result = call(&mut executor, "/read", json!({ "path": path }));
        let error = expect_kind(result, ErrorKind::Io);
        assert!(!error.message.contains("host secret"), "{path}: {error}");
    }
    // A symlink the guest makes itself, pointing out, leads nowhere either.
    let made = call(
        &mut executor,
        "/symlink",
        json!({"target": secret.display().to_string(), "link": "/workspace/mine"}),
    );
    if made.is_ok() {
        expect_kind(
            call(&mut executor, "/read", json!({"path": "/workspace/mine"})),
            ErrorKind::Io,
        );
    }
    still_serves(&mut executor);
}

#[test]
fn no_filesystem_without_a_workspace() {
    let mut executor = misbehave(Sandbox::default());
    expect_kind(
        call(
            &mut executor,
            "/read",
            json!({"path": "/workspace/inside.txt"}),
        ),
        ErrorKind::Io,
    );
    expect_kind(
        call(
            &mut executor,
            "/write",
            json!({"path": "/tmp/x", "content": "x"}),
        ),
        ErrorKind::Io,
    );
}

#[test]
fn read_only_workspace_refuses_writes_and_allows_reads() {
    let (_outside, workspace) = workspace_with_secret();
    let mut executor = misbehave(with_workspace(&workspace, true));
    expect_kind(
        call(
            &mut executor,
            "/write",
            json!({"path": "/workspace/new.txt", "content": "x"}),
        ),
        ErrorKind::Io,
    );
    assert!(!workspace.path().join("new.txt").exists());
    let docs = call(
        &mut executor,
        "/read",
        json!({"path": "/workspace/inside.txt"}),
    )
    .unwrap();
    assert_eq!(docs[0].text.as_deref(), Some("inside"));
    // Writable: the same write lands in the host directory.
    let mut writable = misbehave(with_workspace(&workspace, false));
    call(
        &mut writable,
        "/write",
        json!({"path": "/workspace/new.txt", "content": "x"}),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("new.txt")).unwrap(),
        "x"
    );
}

#[test]
fn only_granted_environment_is_visible() {
    // SAFETY: this test binary sets no other variables concurrently with reads
    // of this name; the guest must not see it either way.
    unsafe { std::env::set_var("JINA_WASM_TEST_HOST_SECRET", "leak") };
    let sandbox = Sandbox {
        env: vec![("GRANTED".into(), "yes".into())],
        ..Sandbox::default()
    };
    let mut executor = misbehave(sandbox);
    let docs = call(&mut executor, "/env", Value::Null).unwrap();
    let tags = &docs[0].tags;
    assert_eq!(tags["env"], json!({"GRANTED": "yes"}));
    assert_eq!(tags["args"], json!([]));
}

#[test]
fn sockets_are_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut executor = misbehave(Sandbox::default());
    expect_kind(
        call(&mut executor, "/socket", json!({ "addr": addr })),
        ErrorKind::Io,
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected");
    still_serves(&mut executor);
}

#[test]
fn output_floods_are_bounded_and_harmless() {
    let mut executor = misbehave(Sandbox::default());
    let line = "x".repeat(10_000);
    let docs = call(
        &mut executor,
        "/print",
        json!({"lines": 20_000, "line": line}),
    )
    .unwrap();
    assert_eq!(docs.len(), 1);
    call(&mut executor, "/log", Value::Null).unwrap();
    still_serves(&mut executor);
}

#[test]
fn clocks_and_random_are_granted() {
    let mut executor = misbehave(Sandbox::default());
    let docs = call(&mut executor, "/time", Value::Null).unwrap();
    let now_ms = docs[0].tags["now_ms"].as_u64().unwrap();
    let host_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(host_ms.abs_diff(now_ms) < 60_000);
}

#[test]
fn many_documents_in_one_result() {
    let mut executor = misbehave(Sandbox::default());
    let docs = call(&mut executor, "/many-docs", json!({"n": 100_000})).unwrap();
    assert_eq!(docs.len(), 100_000);
}

#[test]
fn a_sleep_past_the_deadline_is_a_timeout() {
    let mut executor = misbehave(limits(64 << 20, Duration::from_millis(300)));
    // Within the limit, a sleep is a sleep.
    call(&mut executor, "/sleep", json!({"ms": 20})).unwrap();
    for (endpoint, params) in [
        ("/sleep", Value::Null),
        ("/sleep", json!({"ms": 3_600_000})),
        ("/sleep-loop", Value::Null),
    ] {
        let started = Instant::now();
        let error = expect_kind(call(&mut executor, endpoint, params), ErrorKind::Timeout);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{endpoint} held the thread for {:?}",
            started.elapsed()
        );
        assert!(error.message.contains("300ms"), "{error}");
        still_serves(&mut executor);
    }
}

fn quota(workspace: &tempfile::TempDir, bytes: u64, files: u64) -> Sandbox {
    Sandbox {
        quota: jina_wasm::executor::sandbox::Quota { bytes, files },
        ..with_workspace(workspace, false)
    }
}

#[test]
fn disk_quota_obeyed_and_violated() {
    let workspace = tempfile::tempdir().unwrap();
    let mut executor = misbehave(quota(&workspace, 4 << 20, 100));
    call(
        &mut executor,
        "/fill",
        json!({"path": "/workspace/a", "mib": 2}),
    )
    .unwrap();
    let error = expect_kind(
        call(
            &mut executor,
            "/fill",
            json!({"path": "/workspace/b", "mib": 64}),
        ),
        ErrorKind::DiskQuota,
    );
    assert!(error.message.contains("disk quota of 4 MiB"), "{error}");
    // What the failed call wrote was rolled back; calls that do not grow the
    // workspace past its quota still succeed...
    assert!(
        !workspace.path().join("b").exists(),
        "the failed call's file was removed"
    );
    still_serves(&mut executor);
    let docs = call(&mut executor, "/read", json!({"path": "/workspace/a"})).unwrap();
    assert_eq!(docs[0].text.as_ref().unwrap().len(), 2 << 20);
    // ...and growing it past the quota fails again.
    expect_kind(
        call(
            &mut executor,
            "/fill",
            json!({"path": "/workspace/c", "mib": 3}),
        ),
        ErrorKind::DiskQuota,
    );
    assert!(!workspace.path().join("c").exists());
    // A read-only workspace has nothing to account.
    let mut reader = misbehave(Sandbox {
        read_only: true,
        ..quota(&workspace, 1, 1)
    });
    call(&mut reader, "/read", json!({"path": "/workspace/a"})).unwrap();
}

#[test]
fn file_count_cap_obeyed_and_violated() {
    let workspace = tempfile::tempdir().unwrap();
    let mut executor = misbehave(quota(&workspace, 1 << 30, 100));
    call(
        &mut executor,
        "/many-files",
        json!({"dir": "/workspace/few", "n": 50}),
    )
    .unwrap();
    let error = expect_kind(
        call(
            &mut executor,
            "/many-files",
            json!({"dir": "/workspace/many", "n": 20_000}),
        ),
        ErrorKind::DiskQuota,
    );
    assert!(error.message.contains("--max-files"), "{error}");
    still_serves(&mut executor);
}

#[test]
fn hard_links_out_of_the_workspace_are_refused() {
    let (outside, workspace) = workspace_with_secret();
    let secret = outside.path().join("secret.txt");
    let mut executor = misbehave(with_workspace(&workspace, false));
    for target in [
        secret.display().to_string(),
        "/workspace/../secret.txt".to_string(),
        format!("/workspace/../../..{}", secret.display()),
    ] {
        expect_kind(
            call(
                &mut executor,
                "/hardlink",
                json!({"target": target, "link": "/workspace/stolen"}),
            ),
            ErrorKind::Io,
        );
        assert!(!workspace.path().join("stolen").exists(), "{target}");
    }
    // Inside the workspace, a hard link is an ordinary file operation.
    call(
        &mut executor,
        "/hardlink",
        json!({"target": "/workspace/inside.txt", "link": "/workspace/again.txt"}),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("again.txt")).unwrap(),
        "inside"
    );
    still_serves(&mut executor);
}

#[test]
fn result_caps_obeyed_and_violated() {
    let sandbox = Sandbox {
        max_result_docs: 1_000,
        max_result_bytes: 1 << 20,
        ..Sandbox::default()
    };
    let mut executor = misbehave(sandbox);
    assert_eq!(
        call(&mut executor, "/many-docs", json!({"n": 1_000}))
            .unwrap()
            .len(),
        1_000
    );
    let error = expect_kind(
        call(&mut executor, "/many-docs", json!({"n": 1_001})),
        ErrorKind::ResultTooLarge,
    );
    assert!(
        error.message.contains("1001 documents") && error.message.contains("--max-result-docs"),
        "{error}"
    );
    call(&mut executor, "/big-embedding", json!({"n": 200_000})).unwrap();
    let error = expect_kind(
        call(&mut executor, "/big-embedding", json!({"n": 300_000})),
        ErrorKind::ResultTooLarge,
    );
    assert!(error.message.contains("--max-result-bytes"), "{error}");
    still_serves(&mut executor);
}

#[test]
fn a_deterministic_sandbox_freezes_the_clock_and_seeds_random() {
    let deterministic = || {
        misbehave(Sandbox {
            deterministic: true,
            ..Sandbox::default()
        })
    };
    let (mut a, mut b) = (deterministic(), deterministic());
    let (ta, tb) = (
        call(&mut a, "/time", Value::Null).unwrap(),
        call(&mut b, "/time", Value::Null).unwrap(),
    );
    assert_eq!(ta[0].tags["now_ms"], 0);
    assert_eq!(
        ta[0].tags["random"], tb[0].tags["random"],
        "the same seed in every instance"
    );
    // Granted (the default): real time, fresh randomness per instance.
    let (mut c, mut d) = (misbehave(Sandbox::default()), misbehave(Sandbox::default()));
    let (tc, td) = (
        call(&mut c, "/time", Value::Null).unwrap(),
        call(&mut d, "/time", Value::Null).unwrap(),
    );
    assert_ne!(tc[0].tags["now_ms"], 0);
    assert_ne!(tc[0].tags["random"], td[0].tags["random"]);
}

#[test]
fn a_tenants_instances_share_its_memory_budget() {
    use jina_wasm::executor::TenantSpec;
    let tenant = |name: &str| Sandbox {
        memory_limit: 512 << 20,
        tenant: Some(TenantSpec {
            name: name.into(),
            memory: 96 << 20,
        }),
        ..Sandbox::default()
    };
    let mut first = misbehave(tenant("acme-test"));
    // 12M floats: 48 MiB in the guest, twice over on the way out: most of the budget.
    call(&mut first, "/big-embedding", json!({"n": 12_000_000})).unwrap();
    let held = first.tenant().unwrap().memory_used();
    assert!(held > 64 << 20, "{held}");
    let mut second = misbehave(tenant("acme-test"));
    let error = expect_kind(
        call(&mut second, "/alloc", Value::Null),
        ErrorKind::MemoryLimit,
    );
    assert!(
        error.message.contains("tenant `acme-test`") && error.message.contains("96 MiB"),
        "{error}"
    );
    // Another tenant is not affected...
    let mut other = misbehave(tenant("globex-test"));
    call(&mut other, "/big-embedding", json!({"n": 12_000_000})).unwrap();
    // ...and the budget comes back when an instance goes.
    drop(first);
    call(&mut second, "/big-embedding", json!({"n": 12_000_000})).unwrap();
    assert!(second.tenant().unwrap().cpu_time() > Duration::ZERO);
}
