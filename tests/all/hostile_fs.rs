//! What a guest leaves on disk and what a tenant names (issue 15, classes 1, 3
//! and the volume part of 8), tried as an attacker would, through real `pea`
//! and `pod` processes and a real daemon. docs/sandbox.md ("Threat model: the
//! filesystem and tenants") lists each guarantee beside the test here that
//! proves it.

use std::path::Path;
use std::time::{Duration, Instant};

use jina_wasm::Document;
use jina_wasm::client::{Client, Target};
use jina_wasm::wire::{Message, Status};
use serde_json::{Value, json};

use crate::daemon::DaemonProcess;
use crate::pea::{PeaProcess, error_kind};
use crate::pod::message;
use crate::util::wasm;

/// A client for one test's requests to one Pea or Pod. One per test, not one
/// per request: a Pea's output is a bound PUSH, and a new client per request
/// races it (the reply can go to the previous client's connection before the
/// Pea has seen that connection close, and is lost; docs/protocol.md, "Flow
/// control").
async fn caller(input: &str, output: &str) -> Client {
    let mut client = Client::open(&Target::pea(input, output)).await.unwrap();
    client.timeout = Duration::from_secs(60);
    client
}

/// [`caller`] for a started Pea or Pod.
async fn caller_of(pea: &PeaProcess) -> Client {
    caller(&pea.addr("in"), &pea.addr("out")).await
}

/// One call; the reply.
async fn call(client: &mut Client, endpoint: &str, parameters: Value) -> Message {
    let doc = Document {
        id: "d".into(),
        ..Default::default()
    };
    client
        .call(message(endpoint, parameters, &[doc]))
        .await
        .unwrap()
}

fn ok(reply: &Message) {
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}",
        reply.envelope.status
    );
}

fn failed_with(reply: &Message, kind: &str) -> String {
    assert_eq!(error_kind(reply).1, kind, "{:?}", reply.envelope.status);
    format!("{:?}", reply.envelope.status)
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Symlinks: a guest cannot make one, relative or absolute (the host would
/// otherwise meet it later); one its owner made is never followed by the quota
/// walk; hard links inside the workspace still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_make_links_and_the_host_follows_none() {
    let (workspace, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(outside.path().join("big"), vec![1u8; 8 << 20]).unwrap();
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("owners-link")).unwrap();
    let ws = workspace.path().to_str().unwrap();
    let pea = PeaProcess::start("misbehave", &["--workspace", ws, "--disk-quota", "4MiB"]);
    let mut c = caller_of(&pea).await;
    for target in ["../../../../etc", "sub/../../..", "/etc", "owners-link/big"] {
        let reply = call(
            &mut c,
            "/symlink",
            json!({"target": target, "link": "/workspace/mine"}),
        )
        .await;
        let why = failed_with(&reply, "io");
        assert!(why.contains("PermissionDenied"), "{target}: {why}");
    }
    assert_eq!(names(workspace.path()), ["owners-link"], "no link was made");
    // The 8 MiB behind the owner's link are not the guest's: writes still fit.
    ok(&call(
        &mut c,
        "/write",
        json!({"path": "/workspace/a.txt", "content": "a"}),
    )
    .await);
    ok(&call(
        &mut c,
        "/hardlink",
        json!({"target": "/workspace/a.txt", "link": "/workspace/b.txt"}),
    )
    .await);
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("b.txt")).unwrap(),
        "a"
    );
}

/// Quotas through handles: a file whose host path is far past PATH_MAX is
/// counted, a tree deeper than the walk is a violation, and what a call over
/// the quota wrote is rolled back (new entries removed, grown files cut back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_walks_cannot_be_hidden_from_and_failed_calls_are_rolled_back() {
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("keep.txt"), "kept").unwrap();
    let ws = workspace.path().to_str().unwrap();
    let pea = PeaProcess::start("misbehave", &["--workspace", ws, "--disk-quota", "4MiB"]);
    let mut c = caller_of(&pea).await;
    // 40 levels of 200-byte names: the file's host path is ~8 KB long.
    let reply = call(
        &mut c,
        "/deep-dirs",
        json!({"dir": "/workspace/t", "depth": 40, "name_len": 200, "mib": 8}),
    )
    .await;
    let why = failed_with(&reply, "disk-quota");
    assert!(why.contains("--disk-quota"), "{why}");
    assert_eq!(
        names(workspace.path()),
        ["keep.txt"],
        "the call's tree was removed"
    );
    // Deeper than the walk goes (256 levels): a violation, not a hiding place.
    let reply = call(
        &mut c,
        "/deep-dirs",
        json!({"dir": "/workspace/u", "depth": 300, "name_len": 1, "mib": 0}),
    )
    .await;
    let why = failed_with(&reply, "disk-quota");
    assert!(why.contains("cannot measure"), "{why}");
    assert_eq!(
        names(workspace.path()),
        ["keep.txt"],
        "the deep tree was removed"
    );
    // A file that existed is cut back to its length before the call.
    let reply = call(
        &mut c,
        "/fill",
        json!({"path": "/workspace/keep.txt", "mib": 8}),
    )
    .await;
    failed_with(&reply, "disk-quota");
    assert_eq!(
        std::fs::metadata(workspace.path().join("keep.txt"))
            .unwrap()
            .len(),
        4
    );
    // Within the quota, everything works as before.
    ok(&call(
        &mut c,
        "/deep-dirs",
        json!({"dir": "/workspace/v", "depth": 30, "name_len": 200, "mib": 1}),
    )
    .await);
    ok(&call(
        &mut c,
        "/fill",
        json!({"path": "/workspace/keep.txt", "mib": 1}),
    )
    .await);
}

/// The shard identity lives where no guest can write it, and a link in its
/// place (what a guest could once plant) is refused at start, not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_identity_is_out_of_the_guests_reach_and_never_followed() {
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_str().unwrap();
    let pod = crate::pod::pod(
        "misbehave",
        &["--name", "p", "--shards", "2", "--workspace", ws],
    );
    let mut c = caller_of(&pod).await;
    for path in [
        "/workspace/../shard-0.json",
        "/workspace/../shard-1.json",
        "/workspace/../../p/shard-0.json",
    ] {
        failed_with(
            &call(&mut c, "/write", json!({"path": path, "content": "{}"})).await,
            "io",
        );
    }
    c.close().await;
    drop(pod);
    let identity = workspace.path().join("p/shard-0.json");
    let text = std::fs::read_to_string(&identity).unwrap();
    assert!(text.contains("\"shard\": 0"), "{text}");
    std::fs::remove_file(&identity).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &identity).unwrap();
    let started = Instant::now();
    let log = crate::pod::try_pod(
        "misbehave",
        &["--name", "p", "--shards", "2", "--workspace", ws],
    )
    .err()
    .expect("refused");
    assert!(log.contains("shard-0.json is a symbolic link"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A Pea started alone (`--shard-id`, as in Kubernetes) owns its workspace
/// as a volume: shard 0's volume mounted as shard 1, or under another path,
/// is refused before anything is written to it.
#[test]
fn a_volume_mounted_as_another_shard_is_refused() {
    let mounts = tempfile::tempdir().unwrap();
    let volume = mounts.path().join("index-0");
    let shard = |id: &str, at: &Path| {
        let at = at.to_str().unwrap().to_string();
        PeaProcess::try_start(
            "vector-indexer",
            &[
                "--name",
                "index",
                "--shard-id",
                id,
                "--shard-count",
                "2",
                "--workspace",
                &at,
            ],
        )
    };
    drop(shard("0", &volume).unwrap_or_else(|log| panic!("{log}")));
    let before = names(&volume);
    assert_eq!(before, [".jina-wasm-volume.json", "index"]);
    let log = shard("1", &volume)
        .err()
        .expect("shard 1 refused on shard 0's volume");
    assert!(log.contains("volume of shard 0 of 2"), "{log}");
    // Mounted somewhere else: the record moves with it.
    let elsewhere = mounts.path().join("index-1");
    std::fs::rename(&volume, &elsewhere).unwrap();
    let log = shard("index-1", &elsewhere)
        .err()
        .expect("refused wherever it is mounted");
    assert!(log.contains("volume of shard 0 of 2"), "{log}");
    // A volume written before the record existed: its shard directory says it.
    std::fs::remove_file(elsewhere.join(".jina-wasm-volume.json")).unwrap();
    let log = shard("1", &elsewhere).err().expect("refused by its data");
    assert!(log.contains("holds shard 0"), "{log}");
    assert_eq!(
        names(&elsewhere.join("index")),
        ["shard-0", "shard-0.json"],
        "nothing of shard 1 was written"
    );
    // Its own shard still starts on it.
    drop(shard("0", &elsewhere).unwrap_or_else(|log| panic!("{log}")));
}

const TENANTS: &str = "
tenants:
  - name: alice
    token: alice-token-fs
  - name: bob
    token: bob-token-fs
";

/// On the daemon every object gets its own state unless the tenant names
/// one; a named state has one live user; what a guest writes (however deep)
/// counts in the tenant's disk; logs are capped per line and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_objects_get_their_own_state_and_their_output_is_bounded() {
    let d = DaemonProcess::start("127.0.0.2", TENANTS, &[]);
    let alice = "alice-token-fs";
    let misbehave = std::fs::read(wasm("misbehave")).unwrap();
    let blob = misbehave.len() as u64;
    assert_eq!(
        d.upload(alice, "w", &[("misbehave.wasm", misbehave)]).0,
        200
    );
    let create = |kind: &str, body: Value| d.json("POST", kind, alice, &body);
    let (code, pea) = create(
        "/peas",
        json!({"workspace": "w", "uses": "misbehave.wasm", "name": "x", "state": true, "memory_hwm": "256MiB"}),
    );
    assert_eq!(code, 201, "{pea}");
    let pea_id = pea["id"].as_str().unwrap().to_string();
    let mut c = caller(pea["in"].as_str().unwrap(), pea["out"].as_str().unwrap()).await;
    ok(&call(
        &mut c,
        "/write",
        json!({"path": "/workspace/mine.txt", "content": "pea"}),
    )
    .await);
    // A Pod of the same name does not get the Pea's directory.
    let (code, pod) = create(
        "/pods",
        json!({"workspace": "w", "uses": "misbehave.wasm", "name": "x", "state": true, "shards": 2, "memory_hwm": "256MiB"}),
    );
    assert_eq!(code, 201, "{pod}");
    let pod_id = pod["id"].as_str().unwrap().to_string();
    let objects = d.dir.path().join("data/tenants/alice/workspaces/w/objects");
    // (Beside it, until a dump, the Pea's record of unsaved writes:
    // docs/stateful.md.)
    let mut own = names(&objects.join(&pea_id));
    own.retain(|n| !n.starts_with(".jina-wasm-unsaved."));
    assert_eq!(own, ["mine.txt"]);
    assert_eq!(
        names(&objects.join(&pod_id).join("x")),
        ["shard-0", "shard-0.json", "shard-1", "shard-1.json"]
    );
    // A named state: one live user at a time.
    let named = json!({"workspace": "w", "uses": "misbehave.wasm", "name": "n", "state": "index", "memory_hwm": "256MiB"});
    let (code, first) = create("/peas", named.clone());
    assert_eq!(code, 201, "{first}");
    let (code, second) = create("/peas", named);
    assert_eq!(code, 409, "{second}");
    assert!(
        second["error"].as_str().unwrap().contains("one live user"),
        "{second}"
    );
    assert_eq!(
        create(
            "/peas",
            json!({"workspace": "w", "uses": "misbehave.wasm", "state": "../up"})
        )
        .0,
        400
    );

    // A deep tree with long names counts in the tenant's disk, and 16 MiB of
    // log fields leave one cut line.
    ok(&call(
        &mut c,
        "/deep-dirs",
        json!({"dir": "/workspace/t", "depth": 40, "name_len": 200, "mib": 2}),
    )
    .await);
    ok(&call(&mut c, "/log-fields", json!({"n": 1024, "size": 16384})).await);
    let (_, tenant) = d.json("GET", "/tenant", alice, &Value::Null);
    let disk = tenant["usage"]["disk"].as_u64().unwrap();
    assert!(
        disk >= blob + (2 << 20),
        "the deep file is counted: {tenant}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let (code, log) = d.json("GET", &format!("/peas/{pea_id}/logs"), alice, &Value::Null);
        assert_eq!(code, 200);
        let log = log
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| log.to_string());
        if log.contains("many fields") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("many fields"))
        .expect("the log line arrived");
    assert!(line.len() < 16 << 10, "fields cut: {} bytes", line.len());
    assert!(log.len() < 1 << 20, "{} bytes of log", log.len());

    // Deleting the Pea removes its own state and its log; a named state stays.
    assert_eq!(
        d.json("DELETE", &format!("/peas/{pea_id}"), alice, &Value::Null)
            .0,
        200
    );
    assert!(
        !objects.join(&pea_id).exists()
            && !d
                .dir
                .path()
                .join(format!("data/tenants/alice/logs/{pea_id}.log"))
                .exists()
    );
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(
        d.json("DELETE", &format!("/peas/{first_id}"), alice, &Value::Null)
            .0,
        200
    );
    assert!(
        d.dir
            .path()
            .join("data/tenants/alice/workspaces/w/state/index")
            .is_dir()
    );
}

/// A Pod's name is a directory of its workspace (`<name>/shard-<i>`): a Flow
/// file naming a Pod `.`, `..`, with a backslash, a control character or
/// past 255 bytes is refused by name when the file is read, before anything
/// starts or is created (a `..` used to reach the workspace's parent, a `.`
/// its root).
#[test]
fn flow_pod_names_that_are_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let long = "n".repeat(256);
    for name in [
        ".",
        "..",
        "a\\\\b",
        "a\\0b",
        "a\\tb",
        // Not control characters to Unicode, but no name on the wire may
        // hold them (a Pea named so would have every answer refused).
        "idx\\u200f",
        "a\\u2028b",
        long.as_str(),
    ] {
        let file = dir.path().join("f.yml");
        std::fs::write(
            &file,
            format!("pods:\n  - name: \"{name}\"\n    uses: missing.wasm\n    workspace: ws\n"),
        )
        .unwrap();
        let out = crate::cli::jina(&["flow", "--uses", file.to_str().unwrap()], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("a Pod's name must be 1 to 255 bytes, not `gateway`, `.` or `..`"),
            "{name}: {stderr}"
        );
    }
    assert!(!dir.path().join("ws").exists(), "nothing was created");
}

/// A name the wire refuses is refused where it is given, before anything
/// starts: a Pea so named would have every answer dropped by its receivers,
/// and a client's endpoint so named its every request.
#[test]
fn names_the_wire_refuses_are_refused_on_the_command_line() {
    let refused = "is a character no name may hold";
    for args in [
        &["pea", "--uses", "missing.wasm", "--name", "idx\u{200f}"][..],
        &["pea", "--uses", "missing.wasm", "--name", "a\tb"],
        &["pod", "--uses", "missing.wasm", "--name", "a\u{2028}b"],
        &[
            "pea",
            "--uses",
            "missing.wasm",
            "--shard-count",
            "1",
            "--replica-id",
            "r\u{1b}",
        ],
        &[
            "client",
            "--in",
            "127.0.0.1:1",
            "--out",
            "127.0.0.1:2",
            "--endpoint",
            "/ind\u{202e}xe",
        ],
    ] {
        let out = crate::cli::jina(args, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(refused), "{args:?}: {stderr}");
    }
}
