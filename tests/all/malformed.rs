//! Malformed messages against a running `jina-wasm pea` process: truncated
//! frames, wrong frame counts, an unknown protocol version, huge declared
//! lengths, an oversized envelope, bad bodies, and garbage on the control
//! socket. A message whose envelope does not decode cannot be answered (there
//! is no request to answer) and is dropped with a log line and counted in
//! `STATUS`; one whose body does not decode gets a `malformed` error reply;
//! garbage on the control socket gets a `malformed` or `version` reply. After
//! all of it the Pea serves a good request. A flood of control messages from
//! clients that never read an answer stalls neither the data path nor another
//! control client, of a Pea or of a Pod.

use std::time::Duration;

use bytes::Bytes;
use jina_wasm::transport::{Link, SocketSpec};
use jina_wasm::wire::{Body, Envelope, MAX_ENVELOPE, Message, Status};

use crate::pea::{PeaProcess, client, documents, error_kind, request, status_until};
use crate::util::text_doc;

fn envelope_bytes() -> Vec<u8> {
    Envelope::request("/echo", "").encode()
}

fn body_bytes() -> Vec<u8> {
    let mut body = Vec::new();
    Body::from_documents(&[text_doc("a", "first"), text_doc("b", "second")]).encode(&mut body);
    body
}

/// Messages whose envelope does not decode: each is dropped and counted.
fn undecodable() -> Vec<(&'static str, Vec<Bytes>)> {
    let envelope = envelope_bytes();
    let body = Bytes::from(body_bytes());
    let mut cases: Vec<(&str, Vec<Bytes>)> = Vec::new();
    for cut in [1, 2, 3, 10, envelope.len() - 1] {
        cases.push((
            "truncated envelope",
            vec![Bytes::copy_from_slice(&envelope[..cut]), body.clone()],
        ));
    }
    cases.push((
        "three frames",
        vec![envelope.clone().into(), body.clone(), body.clone()],
    ));
    cases.push((
        "five frames",
        vec![
            envelope.clone().into(),
            body.clone(),
            body.clone(),
            body.clone(),
            body.clone(),
        ],
    ));
    let mut version = envelope.clone();
    version[2] = 99;
    cases.push((
        "unknown protocol version",
        vec![version.into(), body.clone()],
    ));
    // The request id's length prefix (after magic, version, kind, after_error).
    let mut huge = envelope.clone();
    huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push((
        "huge declared string length",
        vec![huge.into(), body.clone()],
    ));
    let oversized = Envelope::request("/echo", "x".repeat(MAX_ENVELOPE + 1)).encode();
    cases.push(("oversized envelope", vec![oversized.into(), body.clone()]));
    cases.push((
        "not an envelope",
        vec![Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n")],
    ));
    cases.push(("empty frame", vec![Bytes::new(), Bytes::new()]));
    cases
}

/// Bodies that do not decode under a good envelope: each gets `malformed`.
fn bad_bodies() -> Vec<(&'static str, Bytes)> {
    let body = body_bytes();
    let mut huge_count = body.clone();
    huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut huge_id = body.clone();
    // The end offset of the first id, far past the body.
    huge_id[4..8].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    vec![
        (
            "truncated body",
            Bytes::copy_from_slice(&body[..body.len() / 2]),
        ),
        ("huge declared document count", huge_count.into()),
        ("huge declared id length", huge_id.into()),
        (
            "garbage body",
            Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2]),
        ),
        (
            "trailing bytes",
            Bytes::from([body.as_slice(), &[7, 7, 7]].concat()),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_answered_or_dropped_and_the_pea_keeps_serving() {
    let pea = PeaProcess::start("passthrough", &["--name", "target"]);
    let input = Link::open(SocketSpec::PUSH_CONNECT, &pea.addr("in"), "test sender")
        .await
        .unwrap();
    let mut client = client(&pea).await;
    let dropped = undecodable();
    for (_, frames) in &dropped {
        input.send(frames.clone()).await.unwrap();
    }
    for (what, body) in bad_bodies() {
        let reply = client
            .call(Message::new(Envelope::request("/echo", ""), body))
            .await
            .unwrap();
        assert_eq!(
            error_kind(&reply),
            ("target".to_string(), "malformed".to_string()),
            "{what}"
        );
    }
    // Garbage on the control socket is answered.
    let mut ctrl = Link::open(
        SocketSpec::DEALER_CONNECT,
        &pea.addr("ctrl"),
        "test control",
    )
    .await
    .unwrap();
    let mut version = Envelope::control("STATUS").encode();
    version[2] = 99;
    let garbage: [(&str, Vec<Bytes>, &str); 4] = [
        (
            "garbage",
            vec![Bytes::from_static(b"\x00\xffnot a message")],
            "malformed",
        ),
        (
            "unknown version",
            vec![version.into(), Bytes::from_static(b"{}")],
            "version",
        ),
        (
            "a data message",
            vec![envelope_bytes().into(), Bytes::new()],
            "unsupported",
        ),
        (
            "three frames",
            vec![
                Envelope::control("STATUS").encode().into(),
                Bytes::new(),
                Bytes::new(),
            ],
            "malformed",
        ),
    ];
    for (what, frames, kind) in garbage {
        ctrl.send(frames).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), ctrl.recv())
            .await
            .expect(what)
            .expect(what);
        let reply = Message::from_frames(&reply).unwrap_or_else(|e| panic!("{what}: {e}"));
        match &reply.envelope.status {
            Status::Error { kind: got, .. } => assert_eq!(got.as_str(), kind, "{what}"),
            Status::Success => panic!("{what}: answered with success"),
        }
    }
    // Still serving, and every undecodable message was counted and logged.
    let good = client
        .call(request("/echo", &[text_doc("g", "good")]))
        .await
        .unwrap();
    assert_eq!(documents(&good)[0].text.as_deref(), Some("good"));
    // The undecodable messages came on a connection of their own, which the
    // Pea reads fairly alongside the client's: they may be counted after the
    // good request was answered, but they must all be counted.
    status_until(
        &pea.addr("ctrl"),
        "every undecodable message counted",
        |s| s["dropped"] == dropped.len(),
    )
    .await;
    let log = pea.log();
    assert_eq!(
        log.matches("dropped a message").count(),
        dropped.len(),
        "{log}"
    );
    assert!(log.contains("protocol version 99"), "{log}");
    input.close(Duration::from_secs(1)).await;
    ctrl.close(Duration::from_secs(1)).await;
    client.close().await;
}

/// A ZMTP 3.0 peer's greeting (NULL mechanism) and READY command, as a
/// DEALER: what any socket accepts before the first frame.
fn zmtp_handshake() -> Vec<u8> {
    let mut bytes = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    bytes.extend(mechanism);
    bytes.push(0); // as-server
    bytes.extend([0u8; 31]);
    let mut ready = b"\x05READY\x0bSocket-Type".to_vec();
    ready.extend(6u32.to_be_bytes());
    ready.extend(b"DEALER");
    bytes.extend([0x04, ready.len() as u8]);
    bytes.extend(ready);
    bytes
}

/// Frame headers that lie about their size, on every socket a peer can reach
/// (the data input and the control socket): 2^50 bytes (upstream reserved it
/// before a byte arrived, and the process aborted), a frame past the 1 GiB
/// message cap, and a message of too many frames. Each connection is dropped;
/// the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_headers_that_lie_about_their_size_drop_the_connection_not_the_pea() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pea = PeaProcess::start("passthrough", &["--name", "target"]);
    let mut too_many_frames = Vec::new();
    for _ in 0..300 {
        too_many_frames.extend([0x01, 0x00]);
    }
    let lies: [(&str, Vec<u8>); 3] = [
        (
            "2^50 bytes",
            [&[0x02][..], &(1u64 << 50).to_be_bytes()].concat(),
        ),
        (
            "1 GiB + 1",
            [&[0x02][..], &((1u64 << 30) + 1).to_be_bytes()].concat(),
        ),
        ("300 frames", too_many_frames),
    ];
    // The handshake is one the Pea takes: a STATUS after it is answered.
    let ctrl = pea.addr("ctrl");
    let mut stream = tokio::net::TcpStream::connect(ctrl.trim_start_matches("tcp://"))
        .await
        .unwrap();
    stream.write_all(&zmtp_handshake()).await.unwrap();
    let envelope = jina_wasm::wire::Envelope::control("STATUS").encode();
    let mut status = vec![0x03];
    status.extend((envelope.len() as u64).to_be_bytes());
    status.extend(&envelope);
    status.extend([0x00, 2, b'{', b'}']);
    stream.write_all(&status).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"healthy\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a STATUS answer")
            .unwrap();
        assert!(n > 0, "the handshake was refused");
        answer.extend(&buf[..n]);
    }
    for port in ["in", "ctrl"] {
        let address = pea.addr(port);
        let host_port = address.trim_start_matches("tcp://");
        for (what, lie) in &lies {
            let mut stream = tokio::net::TcpStream::connect(host_port).await.unwrap();
            stream.write_all(&zmtp_handshake()).await.unwrap();
            // The lie, then some bytes of the frame it announces.
            stream.write_all(lie).await.unwrap();
            let _ = stream.write_all(&[0u8; 4096]).await;
            // The Pea drops the connection (after its own greeting and READY).
            let mut buf = [0u8; 4096];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => panic!("{port}: {what}: the connection was not dropped"),
                }
            }
            // Still alive and answering, on the socket it was sent to too.
            let status = status_until(&pea.addr("ctrl"), what, |s| s["healthy"] == true).await;
            assert_eq!(status["pea"], "target", "{port}: {what}");
        }
    }
    let mut client = client(&pea).await;
    let good = client
        .call(request("/echo", &[text_doc("g", "good")]))
        .await
        .unwrap();
    assert_eq!(documents(&good)[0].text.as_deref(), Some("good"));
    client.close().await;
}

/// One message of a control flood: every kind a control socket gets, good
/// and bad, cheap and not (a DUMP runs the executor's `dump`).
fn flood_message(i: usize) -> Vec<Bytes> {
    let control = |name: &str| Bytes::from(Envelope::control(name).encode());
    match i % 6 {
        0 => vec![control("STATUS"), Bytes::from_static(b"{}")],
        1 => vec![control("DUMP"), Bytes::from_static(b"{}")],
        2 => vec![control("NOT-A-COMMAND"), Bytes::from_static(b"{}")],
        3 => vec![Bytes::from_static(b"\x00\xffnot a message")],
        4 => vec![control("STATUS"), Bytes::new(), Bytes::new()],
        _ => vec![control("STATUS"), Bytes::from(vec![b'x'; 64 << 10])],
    }
}

/// Clients that flood a control socket and never read an answer: the data
/// path serves every request meanwhile, another client's STATUS is
/// answered (the answers to the flooders are dropped once their sockets are
/// full, not waited on), and the process keeps no backlog of answers or
/// commands: its RSS grows by 3-7 MiB in our runs (bound: 16 MiB, about
/// what keeping the 40,000 answers would take). For a Pea, and for a Pod, whose DUMPs
/// go to each of its Peas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_flood_from_clients_that_never_read_stalls_no_one_else() {
    let pea = PeaProcess::start("passthrough", &["--name", "flooded"]);
    let pod = crate::pod::pod("passthrough", &["--name", "flooded-pod", "--parallel", "2"]);
    for target in [&pea, &pod] {
        let ctrl = target.addr("ctrl");
        let mut client = client(target).await;
        let rss_before = crate::pea::rss_kib(target.pid());
        let flooders = futures::future::join_all((0..4).map(|n| {
            let ctrl = ctrl.clone();
            async move {
                let link = Link::open(SocketSpec::DEALER_CONNECT, &ctrl, &format!("flooder {n}"))
                    .await
                    .unwrap();
                for i in 0..10_000 {
                    link.send(flood_message(i)).await.unwrap();
                }
                link
            }
        }));
        let flood = tokio::spawn(flooders);
        // Meanwhile: requests, and another client's STATUS, each answered.
        let mut served = 0;
        let mut statuses = 0;
        while !flood.is_finished() || served < 200 {
            let reply = client
                .call(request("/echo", &[text_doc("d", "during")]))
                .await
                .unwrap();
            assert_eq!(documents(&reply)[0].text.as_deref(), Some("during"));
            served += 1;
            if served % 20 == 0 {
                let status: serde_json::Value = jina_wasm::control::ask_within(
                    &ctrl,
                    jina_wasm::control::Command::Status,
                    Duration::from_secs(20),
                )
                .await
                .unwrap_or_else(|e| panic!("{ctrl}: STATUS during the flood: {e}"));
                assert!(status.is_object());
                statuses += 1;
            }
        }
        let links = flood.await.unwrap();
        assert!(statuses >= 10);
        // The flood reached the executor: DUMPs ran (a Pod's on each Pea).
        status_until(&ctrl, "the flood's DUMPs run", |s| {
            let dumps = s["dumps"].as_u64().or(s["peas"][0]["dumps"].as_u64());
            dumps.is_some_and(|d| d >= 64)
        })
        .await;
        // Still answering, and holding nothing for the flooders.
        for i in 0..20 {
            let reply = client
                .call(request(
                    "/echo",
                    &[text_doc(&format!("after-{i}"), "after")],
                ))
                .await
                .unwrap();
            assert_eq!(documents(&reply)[0].text.as_deref(), Some("after"));
        }
        let grown = crate::pea::rss_kib(target.pid()).saturating_sub(rss_before);
        assert!(
            grown < 16 << 10,
            "{ctrl}: grew by {grown} KiB under a control flood"
        );
        for link in links {
            link.close(Duration::from_millis(100)).await;
        }
        client.close().await;
    }
}
