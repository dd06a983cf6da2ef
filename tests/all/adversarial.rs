//! The adversarial guest suite, through real `jina-wasm pea` processes over
//! ZeroMQ: each misbehaviour of tests/guests/misbehave is one test that
//! asserts the exact error kind in the reply (naming the Pea) and that the
//! same Pea then serves a good request. Contract violations (wrong exports, a
//! newer contract, a trap or a timeout in `init`) fail the start, naming the
//! Pea and the reason. tests/all/sandbox.rs runs the same guests through the
//! host API, each limit obeyed and violated. docs/limits.md lists the limits.

use std::path::Path;

use jina_wasm::wire::{Body, Envelope, Message, Status};
use serde_json::{Value, json};

use crate::pea::{PeaProcess, client, documents, error_kind, request, rss_kib};
use crate::util::text_doc;

/// The limits every Pea here runs with: small, so each is hit quickly.
const LIMITS: &[&str] = &[
    "--memory-hwm",
    "64MiB",
    "--timeout-request",
    "1s",
    "--disk-quota",
    "4MiB",
    "--max-files",
    "200",
    "--max-result-docs",
    "10000",
    "--max-result-bytes",
    "4MiB",
    // Normal priority throughout: at nice 19 on a loaded machine a call that
    // should hit its disk quota can reach its 1 s limit first.
    "--background-after",
    "0",
];

/// A workspace beside a directory with a secret the guest must not reach,
/// and a symlink (made on the host) from the one into the other.
struct Dirs {
    outside: tempfile::TempDir,
    workspace: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
        let workspace = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), workspace.path().join("link-out")).unwrap();
        Dirs { outside, workspace }
    }
}

/// Starts a Pea on misbehave, sends `endpoint` with `params` (where
/// `{outside}` stands for the secret's directory), asserts the reply is an
/// error of `kind` from this Pea, then that a good request succeeds.
/// Returns the error's message.
async fn contained(endpoint: &str, params: Value, kind: &str, extra: &[&str]) -> String {
    let dirs = Dirs::new();
    let ws = dirs.workspace.path().to_str().unwrap();
    let mut args = LIMITS.to_vec();
    args.extend(["--name", "tenant-a", "--workspace", ws]);
    args.extend(extra);
    let pea = PeaProcess::start("misbehave", &args);
    let mut client = client(&pea).await;
    let params = match params {
        Value::Null => String::new(),
        params => params
            .to_string()
            .replace("{outside}", dirs.outside.path().to_str().unwrap()),
    };
    let bad = Message::data(
        Envelope::request(endpoint, params),
        &Body::from_documents(&[text_doc("d", "hello")]),
    );
    let reply = client.call(bad).await.unwrap();
    assert_eq!(
        error_kind(&reply),
        ("tenant-a".to_string(), kind.to_string()),
        "{endpoint}: {:?}",
        reply.envelope.status
    );
    let Status::Error { message, .. } = &reply.envelope.status else {
        unreachable!()
    };
    assert!(!message.contains("host secret"), "{message}");
    let good = client
        .call(request("/echo", &[text_doc("g", "still here")]))
        .await
        .unwrap();
    assert_eq!(
        good.envelope.status,
        Status::Success,
        "{endpoint}: the next request failed\n{}",
        pea.log()
    );
    assert_eq!(documents(&good)[0].text.as_deref(), Some("still here"));
    assert!(
        !read_all(dirs.workspace.path()).contains("host secret"),
        "{endpoint}: the secret leaked into the workspace"
    );
    client.close().await;
    message.clone()
}

/// Every file's content under `dir`, without following symlinks.
fn read_all(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            all += &read_all(&entry.path());
        } else if kind.is_file() {
            all += &String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    all
}

/// One test per case: `name: endpoint, params => kind [, extra pea args]`.
macro_rules! adversarial {
    ($($(#[$doc:meta])* $name:ident: $endpoint:literal, $params:expr => $kind:literal $(, [$($arg:literal),*])?;)*) => {
        $(
            $(#[$doc])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                contained($endpoint, $params, $kind, &[$($($arg),*)?]).await;
            }
        )*
        /// The number of cases above, for the report.
        pub const CASES: usize = [$(stringify!($name)),*].len();
    };
}

adversarial! {
    /// CPU: a loop that computes forever.
    cpu_infinite_loop: "/loop", Value::Null => "timeout";
    /// CPU: a loop that gives the CPU away (sleeps) and never returns.
    cpu_loop_that_yields_nothing: "/sleep-loop", Value::Null => "timeout";
    /// CPU: one sleep longer than the call may take (it would hold the thread forever).
    cpu_sleep_forever: "/sleep", Value::Null => "timeout";
    /// CPU: recursion past the wasm stack.
    cpu_deep_recursion: "/recurse", Value::Null => "stack-overflow";
    /// CPU: recursion past Rust's shadow stack in linear memory.
    cpu_shadow_stack_recursion: "/recurse-shadow", Value::Null => "trap";
    /// A panic.
    panic_in_handle: "/panic", Value::Null => "panic";
    /// Memory: 1 MiB blocks until refused.
    memory_grow_until_refused: "/alloc", Value::Null => "memory-limit";
    /// Memory: 64-byte nodes until refused.
    memory_many_small_allocations: "/alloc-small", Value::Null => "memory-limit";
    /// Memory: a list<f32> result larger than the memory limit.
    memory_huge_embedding_result: "/big-embedding", json!({"n": 40_000_000}) => "memory-limit";
    /// Memory: millions of documents.
    memory_millions_of_documents: "/many-docs", json!({"n": 3_000_000}) => "memory-limit";
    /// Result caps: a list<f32> result within memory, past --max-result-bytes.
    result_embedding_past_the_byte_cap: "/big-embedding", json!({"n": 2_000_000}) => "result-too-large";
    /// Result caps: more documents than --max-result-docs.
    result_documents_past_the_document_cap: "/many-docs", json!({"n": 20_000}) => "result-too-large";
    /// Filesystem: an absolute path outside the workspace.
    fs_absolute_path: "/read", json!({"path": "{outside}/secret.txt"}) => "io";
    /// Filesystem: a system file.
    fs_system_file: "/read", json!({"path": "/etc/passwd"}) => "io";
    /// Filesystem: `..` out of the workspace.
    fs_dot_dot: "/read", json!({"path": "/workspace/../secret.txt"}) => "io";
    /// Filesystem: a symlink inside the workspace pointing out.
    fs_symlink_out: "/read", json!({"path": "/workspace/link-out/secret.txt"}) => "io";
    /// Filesystem: a symlink the guest makes to a host path.
    fs_guest_symlink_out: "/symlink", json!({"target": "{outside}/secret.txt", "link": "/workspace/link-out/mine"}) => "io";
    /// Filesystem: a hard link to a host file.
    fs_hardlink_out: "/hardlink", json!({"target": "{outside}/secret.txt", "link": "/workspace/stolen"}) => "io";
    /// Filesystem: a hard link through `..`.
    fs_hardlink_dot_dot: "/hardlink", json!({"target": "/workspace/../secret.txt", "link": "/workspace/stolen"}) => "io";
    /// Filesystem: writing to a read-only workspace.
    fs_write_read_only: "/write", json!({"path": "/workspace/new.txt", "content": "x"}) => "io", ["--read-only"];
    /// Filesystem: filling the disk past --disk-quota.
    fs_fill_past_the_quota: "/fill", json!({"path": "/workspace/big", "mib": 64}) => "disk-quota";
    /// Filesystem: more files than --max-files.
    fs_huge_file_count: "/many-files", json!({"dir": "/workspace/many", "n": 5_000}) => "disk-quota";
    /// Environment: a TCP connection.
    env_open_a_socket: "/socket", json!({"addr": "127.0.0.1:9"}) => "io";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_args_clocks_and_random_are_only_what_is_granted() {
    let pea = PeaProcess::start(
        "misbehave",
        &["--name", "det", "--env", "GRANTED=yes", "--deterministic"],
    );
    let mut client = client(&pea).await;
    let env = documents(&client.call(request("/env", &[])).await.unwrap());
    assert_eq!(env[0].tags["env"], json!({"GRANTED": "yes"}));
    assert_eq!(env[0].tags["args"], json!([]));
    let time = documents(&client.call(request("/time", &[])).await.unwrap());
    assert_eq!(time[0].tags["now_ms"], 0, "the wall clock is frozen");
    // A new instance (after a trap) starts from the same seed.
    assert_eq!(
        error_kind(&client.call(request("/panic", &[])).await.unwrap()).1,
        "panic"
    );
    let again = documents(&client.call(request("/time", &[])).await.unwrap());
    assert_eq!(
        again[0].tags["random"], time[0].tags["random"],
        "the seed is fixed"
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_floods_are_rate_limited_and_the_pea_keeps_serving() {
    // At normal priority throughout: 400 MB of output takes seconds on a busy
    // machine, and what is under test is the rate, not the scheduling.
    let pea = PeaProcess::start(
        "misbehave",
        &[
            "--name",
            "loud",
            "--log-rate",
            "20",
            "--background-after",
            "0",
        ],
    );
    let mut client = client(&pea).await;
    client.timeout = std::time::Duration::from_secs(120);
    let line = "x".repeat(10_000);
    let params = json!({"lines": 20_000, "line": line}).to_string();
    let flood = Message::data(
        Envelope::request("/print", params),
        &Body::from_documents(&[text_doc("d", "hello")]),
    );
    let rss_before = rss_kib(pea.pid());
    let started = std::time::Instant::now();
    assert_eq!(
        client.call(flood).await.unwrap().envelope.status,
        Status::Success
    );
    // 400 MB went through stdout and stderr; the host kept none of it. (The
    // guest's own buffers are in its linear memory, under --memory-hwm.)
    let grown = rss_kib(pea.pid()).saturating_sub(rss_before);
    assert!(
        grown < 64 << 10,
        "the Pea grew by {grown} KiB during the flood"
    );
    // The rate is per second: a flood that takes longer (a busy machine) gets
    // 20 lines in each second it spans.
    let seconds = started.elapsed().as_secs() + 2;
    let good = client
        .call(request("/echo", &[text_doc("g", "ok")]))
        .await
        .unwrap();
    assert_eq!(documents(&good)[0].text.as_deref(), Some("ok"));
    // The count of dropped lines is logged when the next second's first line comes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        client
            .call(request("/log", &[]))
            .await
            .unwrap()
            .envelope
            .status,
        Status::Success
    );
    let log = pea.log();
    let printed = log.lines().filter(|l| l.contains("xxxx")).count();
    assert!(
        printed as u64 <= 20 * seconds,
        "{printed} lines reached the log at --log-rate 20 in {seconds} s windows"
    );
    assert!(
        printed < 20_000 / 100,
        "the flood was cut: {printed} of 40000 lines logged"
    );
    assert!(log.contains("lines dropped"), "{log}");
    assert!(
        log.lines().all(|l| l.len() < 4096 + 200),
        "a line longer than 4 KiB reached the log"
    );
    client.close().await;
}

#[test]
fn contract_violations_fail_the_start_by_name() {
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("wrong-world", &[], &["jina:executor/executor@0.2.0"]),
        ("future-contract", &[], &["0.3.0", "0.2.0 and 0.1.0"]),
        (
            "misbehave",
            &["--uses-with", "panic_in_init: true"],
            &["(panic)", "asked to panic in init"],
        ),
        (
            "misbehave",
            &[
                "--uses-with",
                "slow_init_ms: 60000",
                "--timeout-init",
                "300ms",
            ],
            &["(timeout)", "300ms"],
        ),
    ];
    for (guest, args, expected) in cases {
        let mut all = vec!["--name", "bad-contract"];
        all.extend(args);
        let log = PeaProcess::try_start(guest, &all)
            .err()
            .unwrap_or_else(|| panic!("{guest} {args:?} started"));
        assert!(log.contains("pea `bad-contract` did not start"), "{log}");
        for needle in expected {
            assert!(
                log.contains(needle),
                "{guest} {args:?}: no `{needle}` in\n{log}"
            );
        }
    }
}

#[test]
fn the_suite_counts_its_cases() {
    // docs/limits.md quotes this number.
    assert_eq!(CASES, 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_accounts_are_in_status() {
    let pea = PeaProcess::start(
        "misbehave",
        &[
            "--name",
            "owned",
            "--tenant",
            "acme",
            "--tenant-memory",
            "48MiB",
        ],
    );
    let mut client = client(&pea).await;
    // `/only` spins in the Pea whose place matches `who` (outside a Pod: "").
    let busy = Message::data(
        Envelope::request("/only", json!({"who": "", "ms": 50}).to_string()),
        &Body::default(),
    );
    assert_eq!(
        client.call(busy).await.unwrap().envelope.status,
        Status::Success
    );
    let status = crate::util::control(&pea.addr("ctrl"), "STATUS")
        .await
        .unwrap();
    let tenant = &status["tenant"];
    assert_eq!(tenant["name"], "acme", "{status}");
    assert_eq!(tenant["memory_budget"], 48 << 20);
    assert!(tenant["memory_bytes"].as_u64().unwrap() > 0, "{status}");
    // Thread CPU time, not wall time: on a busy machine less than the 50 ms spin.
    assert!(tenant["cpu_ms"].as_u64().unwrap() > 0, "{status}");
    // The budget binds: growing past 48 MiB fails, naming the tenant.
    let bomb = client.call(request("/alloc", &[])).await.unwrap();
    let Status::Error { kind, message, .. } = &bomb.envelope.status else {
        panic!("the bomb succeeded")
    };
    assert_eq!(kind.as_str(), "memory-limit");
    assert!(message.contains("tenant `acme`"), "{message}");
    client.close().await;
}
