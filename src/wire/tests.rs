//! The test vectors of docs/protocol.md, checked both ways, and property tests:
//! anything encoded decodes to itself; no input makes a decoder panic.

use proptest::prelude::*;

use super::*;
use crate::document::{Document, NamedScore};

/// The hex frame of vector `name` in docs/protocol.md.
fn vector(name: &str) -> Vec<u8> {
    let doc = include_str!("../../docs/protocol.md");
    let marker = format!("<!-- vector: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md has no vector {name}"));
    let block = &doc[start..];
    let body = &block[block.find("```text").expect("a text block") + 7..];
    let body = &body[..body.find("```").expect("a closed block")];
    let hex: String = body
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|part| part.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn check_envelope(name: &str, envelope: &Envelope) {
    let bytes = vector(name);
    assert_eq!(
        envelope.encode(),
        bytes,
        "encoding of {name} differs from docs/protocol.md"
    );
    assert_eq!(
        &Envelope::decode(&bytes).unwrap(),
        envelope,
        "decoding of {name}"
    );
}

#[test]
fn envelope_vectors() {
    let mut data = Envelope::request("/index", r#"{"top_k":3}"#);
    data.request_id = "r1".into();
    data.deadline_ms = 1_700_000_000_000;
    data.parts = vec![2];
    data.routes = vec![Route {
        pea: "encoder".into(),
        start_us: 1_700_000_000_000_000,
        end_us: 1_700_000_000_000_250,
        outcome: Outcome::Handled,
    }];
    check_envelope("envelope-data", &data);

    let mut error = Envelope::request("/search", "");
    error.request_id = "r2".into();
    error.after_error = AfterError::Abort;
    error.fail(
        "indexer",
        ErrorKind::Timeout,
        "ran past its time limit of 30s",
    );
    check_envelope("envelope-error", &error);

    let mut control = Envelope::control("STATUS");
    control.request_id = "c1".into();
    check_envelope("envelope-control", &control);

    let mut traced = Envelope::request("/search", "");
    traced.request_id = "r3".into();
    traced.trace = Some(crate::wire::TraceContext {
        trace_id: hex::decode("4bf92f3577b34da6a3ce929d0e0e4736")
            .unwrap()
            .try_into()
            .unwrap(),
        parent_id: hex::decode("00f067aa0ba902b7").unwrap().try_into().unwrap(),
        sampled: true,
    });
    check_envelope("envelope-traced", &traced);
}

#[test]
fn body_vectors() {
    let mut a = Document {
        id: "a".into(),
        text: Some("hi".into()),
        embedding: Some(vec![1.0, -0.5]),
        ..Default::default()
    };
    a.tags = serde_json::json!({"k": 1}).as_object().unwrap().clone();
    a.chunks = vec![Document {
        id: "a-0".into(),
        text: Some("h".into()),
        ..Default::default()
    }]
    .into();
    let mut m = Document {
        id: "m".into(),
        ..Default::default()
    };
    m.scores.insert(
        "cosine".into(),
        NamedScore {
            value: 0.25,
            op_name: None,
            description: None,
        },
    );
    a.matches = vec![m].into();
    let b = Document {
        id: "b".into(),
        blob: Some(vec![0x00, 0xff]),
        mime_type: Some("application/octet-stream".into()),
        ..Default::default()
    };
    let docs = vec![a, b];
    let mut bytes = Vec::new();
    Body::from_documents(&docs).encode(&mut bytes);
    assert_eq!(
        bytes,
        vector("body-tree"),
        "encoding of body-tree differs from docs/protocol.md"
    );
    assert_eq!(
        Body::decode(&vector("body-tree"))
            .unwrap()
            .into_documents()
            .unwrap(),
        docs
    );

    let mut empty = Vec::new();
    Body::default().encode(&mut empty);
    assert_eq!(empty, vector("body-empty"));
    assert!(Body::decode(&empty).unwrap().is_empty());
}

#[test]
fn unknown_versions_and_garbage_are_errors() {
    let mut bytes = vector("envelope-control");
    bytes[2] = 2;
    assert_eq!(Envelope::decode(&bytes), Err(WireError::Version(2)));
    assert!(
        Envelope::decode(b"HTTP/1.1 200 OK")
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
    let mut extra = vector("envelope-control");
    extra.push(0);
    assert!(
        Envelope::decode(&extra)
            .unwrap_err()
            .to_string()
            .contains("left over")
    );
    assert_eq!(
        Message::from_frames(&[Bytes::new(), Bytes::new(), Bytes::new(), Bytes::new()]),
        Err(WireError::Frames(3))
    );
}

/// What names a request, an endpoint or a Pea holds no control character
/// (nor U+2028/9): it goes into logs and answers as it is. A message's
/// status text may (a guest's traceback), and is escaped where it is shown.
#[test]
fn names_with_control_characters_are_refused() {
    let named = |set: &dyn Fn(&mut Envelope)| {
        let mut e = Envelope::request("/index", "");
        set(&mut e);
        Envelope::decode(&e.encode())
    };
    for (what, set) in [
        (
            "request_id",
            &(|e: &mut Envelope| e.request_id = "a\nb".into()) as &dyn Fn(&mut Envelope),
        ),
        ("endpoint", &|e: &mut Envelope| {
            e.endpoint = "/x\u{1b}[2K".into()
        }),
        ("endpoint", &|e: &mut Envelope| {
            e.endpoint = "/ind\u{202e}xe".into()
        }),
        ("status executor", &|e: &mut Envelope| {
            e.fail("p\r", ErrorKind::Internal, "m")
        }),
        ("route pea", &|e: &mut Envelope| {
            e.routes.push(Route {
                pea: "p\u{2028}".into(),
                start_us: 1,
                end_us: 2,
                outcome: Outcome::Skipped,
            })
        }),
    ] {
        let error = named(set).unwrap_err().to_string();
        assert!(
            error.contains(&format!("{what}: a character no name may hold")),
            "{error}"
        );
    }
    let traceback = named(&|e: &mut Envelope| e.fail("p", ErrorKind::Internal, "line 1\nline 2"));
    assert!(
        matches!(traceback.unwrap().status, Status::Error { message, .. } if message == "line 1\nline 2")
    );
}

/// The trace field is optional and last: an envelope without one is the
/// same bytes as before it existed (the vectors above), one with it decodes
/// to it, and a trace field that is cut, zero or unknown is an error.
#[test]
fn trace_contexts_are_optional_and_checked() {
    let plain = vector("envelope-control");
    let mut traced = Envelope::decode(&plain).unwrap();
    assert_eq!(traced.trace, None);
    traced.trace = Some(TraceContext {
        trace_id: [7; 16],
        parent_id: [9; 8],
        sampled: true,
    });
    let bytes = traced.encode();
    assert_eq!(&bytes[..plain.len()], &plain[..]);
    assert_eq!(bytes.len(), plain.len() + 26);
    assert_eq!(Envelope::decode(&bytes).unwrap(), traced);
    for cut in plain.len() + 1..bytes.len() {
        let error = Envelope::decode(&bytes[..cut]).unwrap_err().to_string();
        assert!(error.contains("trace"), "{error}");
    }
    let mut zero = bytes.clone();
    zero[plain.len() + 1..plain.len() + 17].fill(0);
    let error = Envelope::decode(&zero).unwrap_err().to_string();
    assert!(error.contains("all-zero"), "{error}");
    let mut unknown = bytes.clone();
    unknown[plain.len()] = 2;
    let error = Envelope::decode(&unknown).unwrap_err().to_string();
    assert!(error.contains("26 bytes left over"), "{error}");
    let mut long = bytes;
    long.push(0);
    let error = Envelope::decode(&long).unwrap_err().to_string();
    assert!(error.contains("left over"), "{error}");
}

fn text() -> impl Strategy<Value = String> {
    "[a-z✓ ]{0,6}"
}

fn document(depth: u32) -> BoxedStrategy<Document> {
    let leaf = (
        text(),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(-1.0f32..1.0, 1..4)),
        proptest::collection::btree_map(text(), -1.0f64..1.0, 0..2),
        proptest::option::of(text()),
    )
        .prop_map(|(id, text, blob, uri, embedding, scores, tag)| Document {
            id,
            text,
            blob,
            uri,
            embedding,
            tags: tag
                .map(|t| serde_json::json!({ "t": t }).as_object().unwrap().clone())
                .unwrap_or_default(),
            scores: scores
                .into_iter()
                .map(|(name, value)| {
                    (
                        name,
                        NamedScore {
                            value,
                            op_name: None,
                            description: Some("d".into()),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (
        leaf,
        proptest::collection::vec(document(depth - 1), 0..3),
        proptest::collection::vec(document(depth - 1), 0..2),
    )
        .prop_map(|(mut doc, chunks, matches)| {
            doc.chunks = chunks.into();
            doc.matches = matches.into();
            doc
        })
        .boxed()
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        text(),
        text(),
        text(),
        any::<u64>(),
        proptest::option::of((
            text(),
            proptest::sample::select(ErrorKind::ALL.to_vec()),
            text(),
        )),
        proptest::collection::vec(any::<u32>(), 0..4),
        proptest::collection::vec((text(), any::<u64>(), any::<u64>()), 0..4),
        proptest::option::of((1u128.., 1u64.., any::<bool>())),
    )
        .prop_map(
            |(id, endpoint, parameters, deadline_ms, error, parts, routes, trace)| {
                let mut e = Envelope::request(endpoint, parameters);
                e.request_id = id;
                e.deadline_ms = deadline_ms;
                if let Some((x, k, m)) = error {
                    e.fail(&x, k, &m);
                    e.after_error = AfterError::SkipExecutor;
                }
                e.parts = parts;
                e.routes = routes
                    .into_iter()
                    .map(|(pea, start_us, end_us)| Route {
                        pea,
                        start_us,
                        end_us,
                        outcome: Outcome::Skipped,
                    })
                    .collect();
                e.trace = trace.map(|(t, p, sampled)| TraceContext {
                    trace_id: t.to_be_bytes(),
                    parent_id: p.to_be_bytes(),
                    sampled,
                });
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn bodies_round_trip(docs in proptest::collection::vec(document(2), 0..4)) {
        let body = Body::from_documents(&docs);
        let mut bytes = Vec::new();
        body.encode(&mut bytes);
        let back = Body::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &body);
        prop_assert_eq!(back.into_documents().unwrap(), docs);
    }

    #[test]
    fn any_document_read_from_json_goes_into_a_body(value in crate::document::proptests::json()) {
        if let Ok(doc) = Document::from_json_line(&value.to_string()) {
            let body = Body::from_documents(std::slice::from_ref(&doc));
            let mut bytes = Vec::new();
            body.encode(&mut bytes);
            prop_assert!(Body::decode(&bytes).is_ok());
        }
    }

    #[test]
    fn envelopes_round_trip(e in envelope()) {
        prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Envelope::decode(&bytes);
        let _ = Body::decode(&bytes);
    }

    /// Valid frames with bytes flipped, cut or extended: errors, never panics.
    #[test]
    fn damaged_frames_never_panic(docs in proptest::collection::vec(document(1), 1..3), e in envelope(), at in any::<usize>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut body = Vec::new();
        Body::from_documents(&docs).encode(&mut body);
        for mut frame in [body, e.encode()] {
            let i = at % frame.len();
            if cut { frame.truncate(i); } else { frame[i] = byte; }
            if let Ok(b) = Body::decode(&frame) {
                let _ = b.into_documents();
            }
            let _ = Envelope::decode(&frame);
        }
    }
}
