//! What a tenant names and what its objects write, at a real daemon (issue 15):
//! upload names and the folders on their way, file counts that cost no
//! bytes, and logs that flood. docs/sandbox.md ("Threat model: the filesystem
//! and tenants") lists each guarantee beside the test here that proves it.
//!
//! - names: links on the way to a workspace, its files or the blob store are
//!   refused, never followed (nothing lands outside the tenant's directory);
//!   a name that collides with a folder, or a folder with a file, is a clean
//!   400; unicode look-alikes are names of their own; each tenant's files are
//!   its own whatever the names;
//! - counts: empty files cost no `disk` but are held by the `files` quota;
//! - logs: a chatty object's log rotates at `--max-log`, both parts count in
//!   the tenant's `disk`, and `GET .../logs` streams them back;
//! - calls: a tenant's open calls (log streams) are capped by its own
//!   `requests` quota, so they cannot take the daemon from the others.

use std::time::{Duration, Instant};

use jina_wasm::client::{Client, Target};
use serde_json::{Value, json};

use crate::daemon::DaemonProcess;
use crate::pod::message;
use crate::util::wasm;

const TENANTS: &str = "
tenants:
  - name: alice
    token: alice-token-hd
  - name: bob
    token: bob-token-hd
  - name: carol
    token: carol-token-hd
    quota: {files: 3, requests: 3}
";
const ALICE: &str = "alice-token-hd";
const BOB: &str = "bob-token-hd";
const CAROL: &str = "carol-token-hd";

fn error(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_string()
}

fn download(d: &DaemonProcess, token: &str, ws: &str, name: &str) -> (u16, Vec<u8>) {
    let response = crate::util::http()
        .get(format!(
            "http://{}/workspaces/{ws}/files/{name}",
            d.address()
        ))
        .bearer_auth(token)
        .send()
        .unwrap();
    let code = response.status().as_u16();
    (code, response.bytes().unwrap().to_vec())
}

/// Links a host left on the way (a workspace, a folder of its files, the blob
/// store) are refused, never followed; names that collide with folders or
/// files are clean 400s; look-alike names are their own; tenants' same names
/// hold their own bytes. The daemon serves on after each.
#[test]
fn upload_names_stay_beneath_the_tenant() {
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &[]);
    let outside = tempfile::tempdir().unwrap();
    let tenants = d.dir.path().join("data/tenants");
    let empty = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count() == 0;

    // A plain upload makes the tenant's directories.
    assert_eq!(d.upload(ALICE, "w", &[("a.bin", b"alice".to_vec())]).0, 200);

    // A workspace that is a link to a host directory.
    std::os::unix::fs::symlink(outside.path(), tenants.join("alice/workspaces/lnk")).unwrap();
    let (code, answer) = d.upload(ALICE, "lnk", &[("x.bin", b"planted".to_vec())]);
    assert_eq!(code, 400, "{answer}");
    assert!(error(&answer).contains("symbolic link"), "{answer}");
    assert!(empty(outside.path()), "nothing written through the link");

    // A folder of a workspace's files that is a link.
    std::os::unix::fs::symlink(outside.path(), tenants.join("alice/workspaces/w/files/sub"))
        .unwrap();
    let (code, answer) = d.upload(ALICE, "w", &[("sub/x.bin", b"planted".to_vec())]);
    assert_eq!(code, 400, "{answer}");
    assert!(error(&answer).contains("symbolic link"), "{answer}");
    assert!(empty(outside.path()));
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let (code, bytes) = download(&d, ALICE, "w", "sub/secret");
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&bytes));

    // The blob store itself a link (bob's, made before his first upload).
    std::fs::create_dir_all(tenants.join("bob")).unwrap();
    std::fs::remove_file(outside.path().join("secret")).unwrap();
    std::os::unix::fs::symlink(outside.path(), tenants.join("bob/blobs")).unwrap();
    let (code, answer) = d.upload(BOB, "w", &[("a.bin", b"bob".to_vec())]);
    assert_eq!(code, 400, "{answer}");
    assert!(empty(outside.path()), "no blob stored through the link");
    std::fs::remove_file(tenants.join("bob/blobs")).unwrap();

    // A name where a folder is, and a folder where a file is: refused cleanly.
    assert_eq!(d.upload(ALICE, "w", &[("dir/f.bin", b"f".to_vec())]).0, 200);
    for name in ["dir", "dir/f.bin/g.bin", "a.bin/x"] {
        let (code, answer) = d.upload(ALICE, "w", &[(name, b"clash".to_vec())]);
        assert_eq!(code, 400, "{name}: {answer}");
        assert!(error(&answer).contains(name), "{name}: {answer}");
    }
    assert_eq!(download(&d, ALICE, "w", "dir/f.bin"), (200, b"f".to_vec()));

    // Look-alikes and long names: each its own file, read back as sent.
    let long = "n".repeat(255);
    let names = [
        "caf\u{e9}.bin",
        "cafe\u{301}.bin",
        "\u{ff41}.bin",
        "\u{202e}nib.exe",
        long.as_str(),
    ];
    let parts: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (*n, n.as_bytes().to_vec())).collect();
    let (code, answer) = d.upload(ALICE, "w", &parts);
    assert_eq!(code, 200, "{answer}");
    for name in names {
        let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(
            download(&d, ALICE, "w", &encoded),
            (200, name.as_bytes().to_vec()),
            "{name:?}"
        );
    }
    let (code, answer) = d.upload(ALICE, "w", &[(&"n".repeat(256), b"x".to_vec())]);
    assert_eq!(code, 400, "{answer}");
    assert!(error(&answer).contains("1 to 255 bytes"), "{answer}");
    // A file name that is not UTF-8 is refused, not stored under the part's
    // field name (found by a hostile test).
    let body = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\xff\xfeb\"\r\n\r\nbytes\r\n--x--\r\n".to_vec();
    let (code, answer) = d.call(
        "POST",
        "/workspaces/w/files",
        Some(ALICE),
        "multipart/form-data; boundary=x",
        &body,
    );
    assert_eq!(code, 400, "{answer}");
    assert!(error(&answer).contains("not plain UTF-8"), "{answer}");
    assert_eq!(download(&d, ALICE, "w", "file").0, 404);

    // Two tenants, the same workspace and file names: each its own bytes.
    assert_eq!(d.upload(BOB, "w", &[("a.bin", b"bob".to_vec())]).0, 200);
    assert_eq!(download(&d, ALICE, "w", "a.bin"), (200, b"alice".to_vec()));
    assert_eq!(download(&d, BOB, "w", "a.bin"), (200, b"bob".to_vec()));
    assert_eq!(download(&d, BOB, "w", "dir/f.bin").0, 404);
}

/// Empty files cost no bytes of `disk`; the `files` quota holds them: past
/// it a new name is 413 naming the quota, a name already there may still be
/// replaced, and deleting a workspace gives its names back.
#[test]
fn empty_files_are_held_by_the_files_quota() {
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &[]);
    let parts: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("e{i}"), Vec::new())).collect();
    let parts: Vec<(&str, Vec<u8>)> = parts.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (code, answer) = d.upload(CAROL, "w", &parts);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["disk"], 0, "{answer}");
    for ws in ["w", "other"] {
        let (code, answer) = d.upload(CAROL, ws, &[("one-more", Vec::new())]);
        assert_eq!(code, 413, "{answer}");
        assert!(
            error(&answer).contains("file quota: tenant `carol` has 3 of 3 files"),
            "{answer}"
        );
    }
    let (code, answer) = d.upload(CAROL, "w", &[("e0", b"now with bytes".to_vec())]);
    assert_eq!(code, 200, "replacing a name is no new file: {answer}");
    assert_eq!(
        d.json("DELETE", "/workspaces/w", CAROL, &Value::Null).0,
        200
    );
    assert_eq!(d.upload(CAROL, "other", &[("one-more", Vec::new())]).0, 200);
}

/// A chatty object: its log rotates at `--max-log` (one older part kept,
/// neither past the cap), both parts count in the tenant's `disk`, and
/// `GET .../logs` streams them back (no length known up front, the older
/// part first), without the daemon holding either whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_objects_log_rotates_at_the_cap_counts_and_streams() {
    let cap: u64 = 64 << 10;
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &["--max-log", "64KiB"]);
    let misbehave = std::fs::read(wasm("misbehave")).unwrap();
    let blob = misbehave.len() as u64;
    assert_eq!(d.upload(ALICE, "w", &[("m.wasm", misbehave)]).0, 200);
    let (code, pea) = d.json(
        "POST",
        "/peas",
        ALICE,
        &json!({"workspace": "w", "uses": "m.wasm", "name": "chatty", "memory_hwm": "256MiB"}),
    );
    assert_eq!(code, 201, "{pea}");
    let id = pea["id"].as_str().unwrap().to_string();
    let mut client = Client::open(&Target::pea(
        pea["in"].as_str().unwrap(),
        pea["out"].as_str().unwrap(),
    ))
    .await
    .unwrap();
    client.timeout = Duration::from_secs(30);
    // ~200 KiB of lines (the guest's line rate lets 200 a second through).
    let line = format!("chatty {}", "x".repeat(1000));
    let reply = client
        .call(message(
            "/print",
            json!({"lines": 150, "line": line}),
            &[jina_wasm::Document::default()],
        ))
        .await
        .unwrap();
    assert_eq!(reply.envelope.status, jina_wasm::wire::Status::Success);
    client.close().await;

    let logs = d.dir.path().join("data/tenants/alice/logs");
    let (current, older) = (
        logs.join(format!("{id}.log")),
        logs.join(format!("{id}.log.1")),
    );
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while size(&older) == 0 || size(&current) == 0 {
        assert!(Instant::now() < deadline, "the log never rotated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the copy settle: the two parts stop changing.
    let mut last = (0, 0);
    loop {
        let now = (size(&older), size(&current));
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.0 <= cap && last.1 <= cap,
        "each part within the cap: {last:?}"
    );
    assert_eq!(
        std::fs::read_dir(&logs).unwrap().count(),
        2,
        "one older part kept"
    );
    let (_, tenant) = d.json("GET", "/tenant", ALICE, &Value::Null);
    assert_eq!(
        tenant["usage"]["disk"].as_u64().unwrap(),
        blob + last.0 + last.1,
        "both parts count: {tenant}"
    );

    let response = crate::util::http()
        .get(format!("http://{}/peas/{id}/logs", d.address()))
        .bearer_auth(ALICE)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.content_length(),
        None,
        "streamed, not sized up front"
    );
    let text = response.text().unwrap();
    let expected = [
        std::fs::read(&older).unwrap(),
        std::fs::read(&current).unwrap(),
    ]
    .concat();
    assert_eq!(
        text.as_bytes(),
        expected,
        "the older part, then the current"
    );
    assert!(text.contains("chatty xxx"));
    assert_eq!(
        d.json("DELETE", &format!("/peas/{id}"), ALICE, &Value::Null)
            .0,
        200
    );
    assert_eq!(
        std::fs::read_dir(&logs).unwrap().count(),
        0,
        "both parts removed"
    );
}

/// A Flow's Pods keep their state under the Flow's name: while it runs, a
/// second Flow of that name and a Pea given that named state are refused
/// (409), so no two live objects write one shard's files.
#[test]
fn a_flows_state_has_one_live_user() {
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &[]);
    let flow =
        "pods:\n  - name: p\n    uses: m.wasm\n    workspace: kept\n    memory_hwm: 256MiB\n";
    let parts = [
        ("m.wasm", std::fs::read(wasm("misbehave")).unwrap()),
        ("flow.yml", flow.as_bytes().to_vec()),
    ];
    assert_eq!(d.upload(ALICE, "w", &parts).0, 200);
    let create = |path: &str, body: Value| d.json("POST", path, ALICE, &body);
    let (code, first) = create(
        "/flows",
        json!({"workspace": "w", "uses": "flow.yml", "name": "f"}),
    );
    assert_eq!(code, 201, "{first}");
    for (path, body) in [
        (
            "/flows",
            json!({"workspace": "w", "uses": "flow.yml", "name": "f"}),
        ),
        (
            "/peas",
            json!({"workspace": "w", "uses": "m.wasm", "state": "f", "memory_hwm": "256MiB"}),
        ),
    ] {
        let (code, answer) = create(path, body);
        assert_eq!(code, 409, "{path}: {answer}");
        assert!(error(&answer).contains("one live user"), "{answer}");
    }
    // A Flow file of more Pods than the tenant may run, or larger than a
    // Flow file is, is refused at once (found by a hostile test: 300,000
    // Pods kept the daemon busy for minutes), and the daemon serves on.
    let many: String = std::iter::once("pods:\n".to_string())
        .chain((0..20_000).map(|i| format!("  - name: p{i}\n    uses: m.wasm\n")))
        .collect();
    let huge = format!("# {}\n{flow}", "x".repeat(2 << 20));
    // Counts that overflow when multiplied (shards × parallel × memory_hwm).
    let vast = "pods:\n  - name: p\n    uses: m.wasm\n    shards: 18446744073709551615\n    parallel: 18446744073709551615\n";
    // A Pod's sandbox limit past the tenant's quota (hostile pass 4, H4-5).
    let disk = "pods:\n  - name: p\n    uses: m.wasm\n    disk_quota: '-1'\n";
    let parts = [
        ("many.yml", many.into_bytes()),
        ("huge.yml", huge.into_bytes()),
        ("vast.yml", vast.as_bytes().to_vec()),
        ("disk.yml", disk.as_bytes().to_vec()),
    ];
    assert_eq!(d.upload(ALICE, "w", &parts).0, 200);
    let started = Instant::now();
    for (file, words) in [
        ("many.yml", "max_peas"),
        ("huge.yml", "at most 1048576 bytes"),
        (
            "disk.yml",
            "disk_quota 1024 TiB is more than the tenant's disk",
        ),
    ] {
        let (code, answer) = create("/flows", json!({"workspace": "w", "uses": file}));
        assert_eq!(code, 400, "{file}: {answer}");
        assert!(error(&answer).contains(words), "{file}: {answer}");
    }
    // Counted without overflow, and refused by the quota, leaving nothing:
    // neither its Flow file nor a state directory.
    let tenant = d.dir.path().join("data/tenants/alice");
    let listing = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(tenant.join(dir))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let before = (listing("flows"), listing("workspaces/w/state"));
    let (code, answer) = create("/flows", json!({"workspace": "w", "uses": "vast.yml"}));
    assert_eq!(code, 403, "{answer}");
    assert!(
        error(&answer).contains("needs 18446744073709551615 Peas"),
        "{answer}"
    );
    assert_eq!((listing("flows"), listing("workspaces/w/state")), before);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        d.json("DELETE", &format!("/flows/{id}"), ALICE, &Value::Null)
            .0,
        200
    );
    let (code, pea) = create(
        "/peas",
        json!({"workspace": "w", "uses": "m.wasm", "state": "f", "memory_hwm": "256MiB"}),
    );
    assert_eq!(code, 201, "the state is free again: {pea}");
}

/// A tenant's log streams (calls that stay open while its object runs) count
/// against its own `requests` quota: past it that tenant gets 429 naming the
/// quota while the others are served; a stream that ends gives its call back.
#[test]
fn a_tenants_open_streams_leave_the_daemon_to_the_others() {
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &[]);
    let misbehave = std::fs::read(wasm("misbehave")).unwrap();
    assert_eq!(d.upload(CAROL, "w", &[("m.wasm", misbehave)]).0, 200);
    let (code, pea) = d.json(
        "POST",
        "/peas",
        CAROL,
        &json!({"workspace": "w", "uses": "m.wasm", "memory_hwm": "256MiB"}),
    );
    assert_eq!(code, 201, "{pea}");
    let id = pea["id"].as_str().unwrap().to_string();
    let stream = || {
        let response = crate::util::http()
            .get(format!("http://{}/peas/{id}/logs/stream", d.address()))
            .bearer_auth(CAROL)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response
    };
    let mut streams: Vec<_> = (0..3).map(|_| stream()).collect();
    let (code, answer) = d.json("GET", "/tenant", CAROL, &Value::Null);
    assert_eq!(code, 429, "{answer}");
    assert!(
        error(&answer).contains("tenant `carol` has 3 calls open, its quota (quota.requests)"),
        "{answer}"
    );
    for token in [ALICE, BOB] {
        let (code, answer) = d.json("GET", "/tenant", token, &Value::Null);
        assert_eq!(code, 200, "another tenant is served: {answer}");
    }
    // A stream the client closes gives its call back.
    streams.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, answer) = d.json("GET", "/tenant", CAROL, &Value::Null);
        if code == 200 {
            assert_eq!(answer["quota"]["requests"], 3, "{answer}");
            break;
        }
        assert_eq!(code, 429, "{answer}");
        assert!(
            Instant::now() < deadline,
            "the closed stream's call was never given back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(streams);
}

/// Hostile pass 4 (H4-5, H4-6): each limit a request sets is bounded by the
/// tenant's quota or the daemon's maximum (403, named), and what the child's
/// argv cannot carry is refused as it is read (400, named), not left to fail
/// the start with 422 ("nul byte found", "Argument list too long").
#[test]
fn a_requests_limits_and_argv_are_bounded() {
    let d = DaemonProcess::start("127.0.0.1", TENANTS, &[]);
    let parts = [("m.wasm", std::fs::read(wasm("misbehave")).unwrap())];
    assert_eq!(d.upload(ALICE, "w", &parts).0, 200);
    let create = |path: &str, extra: Value| {
        let mut body = json!({"workspace": "w", "uses": "m.wasm", "state": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        d.json("POST", path, ALICE, &body)
    };
    for (path, extra, code, words) in [
        (
            "/peas",
            json!({"disk_quota": "-1"}),
            403,
            "disk_quota 1024 TiB is more than the tenant's disk 1 GiB",
        ),
        (
            "/peas",
            json!({"max_files": u64::MAX}),
            403,
            "max_files 18446744073709551615 is more than the tenant's files 10000",
        ),
        (
            "/peas",
            json!({"log_rate": 100_000}),
            403,
            "log_rate 100000 is more than the daemon's maximum 200",
        ),
        (
            "/peas",
            json!({"env": {"A": "x\u{0}y"}}),
            400,
            "env: `A` holds a NUL byte",
        ),
        (
            "/peas",
            json!({"env": {"A\u{0}B": "1"}}),
            400,
            "env: `A\\0B` is not a variable name",
        ),
        (
            "/peas",
            json!({"env": {"A": "v".repeat(200_000)}}),
            400,
            "more than the 65536 a request may carry",
        ),
        (
            "/peas",
            json!({"with": {"a": "v".repeat(200_000)}}),
            400,
            "with: 200008 bytes as JSON",
        ),
        (
            "/pods",
            json!({"polling": {"/a:all,/b": "any"}}),
            400,
            "endpoint `/a:all,/b`: an endpoint's name cannot hold",
        ),
    ] {
        let (got, answer) = create(path, extra.clone());
        assert_eq!(got, code, "{extra}: {answer}");
        assert!(error(&answer).contains(words), "{extra}: {answer}");
    }
    // Nothing was left of the refused requests' own state.
    let objects = d.dir.path().join("data/tenants/alice/workspaces/w/objects");
    let left = std::fs::read_dir(&objects).map_or(0, |r| r.count());
    assert_eq!(left, 0, "{}", objects.display());
}
