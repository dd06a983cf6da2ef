//! The HTTP gateway's tests: requests read, answers written, failures shaped.

use super::answer::{FailureAnswer, cap, failure};
use super::request::is_json;
use super::*;
use crate::document::MAX_DEPTH;

fn nested(levels: usize) -> String {
    format!(
        "{}{}",
        r#"{"chunks":["#.repeat(levels + 1),
        "]}".repeat(levels + 1)
    )
}

#[test]
fn requests_are_read_with_the_client_id_kept_apart() {
    let body = br#"{"data": [{"id": "a", "text": "x"}, "plain"], "exec_endpoint": "/index",
        "parameters": {"top_k": 3}, "header": {"request_id": "mine"}}"#;
    let request = parse_request(body, None).unwrap();
    assert_eq!(
        (
            request.endpoint.as_str(),
            request.docs,
            request.client_id.as_deref()
        ),
        ("/index", 2, Some("mine"))
    );
    assert_eq!(request.parameters["top_k"], 3);
    assert_eq!(request.body.texts.get(1), Some("plain"));
    // The path's endpoint wins; `{"docs": [...]}` and `requestId` too.
    let request = parse_request(
        br#"{"data": {"docs": []}, "exec_endpoint": "/x", "header": {"requestId": "j"}}"#,
        Some("/y".into()),
    )
    .unwrap();
    assert_eq!(
        (request.endpoint.as_str(), request.client_id.as_deref()),
        ("/y", Some("j"))
    );
    assert_eq!(parse_request(b"{}", None).unwrap().endpoint, "/");
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let error = |body: &[u8]| parse_request(body, None).unwrap_err();
    assert!(error(b"{").starts_with("the body is not JSON"));
    assert!(error(b"[1]").contains("must be a JSON object"));
    assert!(error(br#"{"parameters": 1}"#).contains("`parameters` must be an object"));
    assert!(error(br#"{"exec_endpoint": 1}"#).contains("`exec_endpoint` must be a string"));
    assert_eq!(
        parse_request(br#"{"exec_endpoint": ""}"#, None)
            .unwrap()
            .endpoint,
        "/"
    );
    assert!(error(br#"{"exec_endpoint": "index"}"#).contains("starts with `/`"));
    assert!(error(br#"{"exec_endpoint": "/a\u0000b"}"#).contains("no control characters"));
    assert!(error(br#"{"exec_endpoint": "/ind\u202eex"}"#).contains("bidirectional-text"));
    assert!(error(br#"{"exec_endpoint": "/a\u2066b"}"#).contains("bidirectional-text"));
    let long = format!(r#"{{"exec_endpoint": "/{}"}}"#, "x".repeat(300));
    assert!(error(long.as_bytes()).contains("301 bytes, more than 256"));
    assert!(error(br#"{"header": "x"}"#).contains("`header` must be an object"));
    assert!(error(br#"{"header": {"request_id": 7}}"#).contains("must be a string, not 7"));
    assert!(error(br#"{"data": 1}"#).contains("`data` must be a list"));
    assert!(error(br#"{"data": [{"embedding": "x"}]}"#).starts_with("data[0] is not a document"));
}

/// At the depth limit a request reads and becomes a valid body; one level
/// past it is refused by name, as is a nesting far past serde's own limit.
#[test]
fn documents_past_the_depth_limit_are_refused() {
    let at = format!(r#"{{"data": [{}]}}"#, nested(MAX_DEPTH));
    let request = parse_request(at.as_bytes(), None).unwrap();
    request.body.validate().unwrap();
    assert_eq!(request.body.into_documents().unwrap()[0].depth(), MAX_DEPTH);
    let past = format!(r#"{{"data": [{}]}}"#, nested(MAX_DEPTH + 1));
    let error = parse_request(past.as_bytes(), None).unwrap_err();
    assert!(
        error.starts_with("data[0] is not a document: documents nest more than 32 levels"),
        "{error}"
    );
    let far = format!(r#"{{"data": [{}]}}"#, nested(5000));
    assert!(parse_request(far.as_bytes(), None).is_err());
}

#[test]
fn answers_have_jinas_shape() {
    let status = failure("enc", ErrorKind::Panic, "boom");
    let answer = Answer {
        header: Header {
            request_id: Some("r"),
            exec_endpoint: "/",
            status,
        },
        parameters: None,
        routes: Some(vec![RouteJson {
            executor: "gateway",
            start_time: rfc3339(0),
            end_time: rfc3339(0),
            status: RouteStatus { code: 0 },
        }]),
        data: &[] as &[Document],
    };
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "header": {"requestId": "r", "execEndpoint": "/", "status": {"code": 1, "description": "executor `enc` failed (panic): boom",
                "exception": {"name": "panic", "args": ["boom"], "executor": "enc"}}},
            "routes": [{"executor": "gateway", "startTime": "1970-01-01T00:00:00.000000Z", "endTime": "1970-01-01T00:00:00.000000Z", "status": {"code": 0}}],
            "data": []
        })
    );
    let dry = serde_json::to_value(DryRun {
        code: 0,
        description: "ready",
        exception: None,
    })
    .unwrap();
    assert_eq!(
        dry,
        serde_json::json!({"code": 0, "description": "ready", "exception": null})
    );
}

/// Status and reason come first, the header keeps Jina's full status,
/// and a long reason is cut.
#[test]
fn failures_lead_with_the_reason_and_stay_short() {
    let long = "é".repeat(MAX_REASON);
    let reason = cap(&long);
    assert!(reason.len() < MAX_REASON + 40, "{}", reason.len());
    assert!(reason.ends_with(&format!(
        "… ({} more bytes cut)",
        2 * MAX_REASON - MAX_REASON
    )));
    assert_eq!(cap("short"), "short");
    let status = failure("enc", ErrorKind::Panic, "boom");
    let answer = FailureAnswer {
        code: ERROR,
        description: &status.description.clone(),
        header: Header {
            request_id: Some("r"),
            exec_endpoint: "/x",
            status,
        },
        routes: None,
    };
    let text = serde_json::to_string(&answer).unwrap();
    assert!(
        text.starts_with(
            r#"{"code":1,"description":"executor `enc` failed (panic): boom","header":{"#
        ),
        "{text}"
    );
    assert!(!text.contains("\"data\""), "{text}");
}

#[test]
fn json_content_types() {
    for yes in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.x+json",
    ] {
        assert!(is_json(yes), "{yes}");
    }
    for no in [
        "",
        "text/plain",
        "application/jsonl",
        "multipart/form-data; boundary=x",
        "json",
    ] {
        assert!(!is_json(no), "{no}");
    }
}

#[test]
fn timestamps_are_rfc3339() {
    assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        super::rfc3339(1_700_000_000_000_250),
        "2023-11-14T22:13:20.000250Z"
    );
    assert_eq!(
        super::rfc3339(951_782_400_000_000),
        "2000-02-29T00:00:00.000000Z"
    );
    assert_eq!(super::rfc3339(u64::MAX), "9999-12-31T23:59:59.999999Z");
    assert_eq!(
        super::rfc3339(253_402_300_799_999_999),
        "9999-12-31T23:59:59.999999Z"
    );
    // Every day's first and last microsecond up to 2500 (leap days, the
    // centuries that are not leap years, 2400 that is), as humantime writes them.
    for day in 0..194_000u64 {
        for us in [day * 86_400_000_000, (day + 1) * 86_400_000_000 - 1] {
            let want = humantime::format_rfc3339_micros(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(us),
            );
            assert_eq!(super::rfc3339(us), want.to_string());
        }
    }
}

/// The request reader never panics, whatever the bytes.
mod proptests {
    use proptest::prelude::*;

    proptest! {
        /// The timestamps are humantime's, to the microsecond, from the
        /// epoch to the year 9999.
        #[test]
        fn timestamps_are_humantimes(us in 0u64..253_402_300_800_000_000) {
            let want = humantime::format_rfc3339_micros(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(us),
            )
            .to_string();
            prop_assert_eq!(super::super::rfc3339(us), want);
        }

        #[test]
        fn any_body_reads_or_fails(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = super::parse_request(&bytes, None);
        }

        #[test]
        fn any_json_ish_body_reads_or_fails(body in r#"\{("data"|"parameters"|"exec_endpoint"|"header"|"docs"|"chunks"|"id"|"request_id"|[\[\]{}:,"0-9a-z ])*\}"#) {
            if let Ok(request) = super::parse_request(body.as_bytes(), None) {
                prop_assert!(request.body.validate().is_ok());
            }
        }
    }
}

/// The columnar reader and writer against the reference ones (documents
/// through `serde_json::Value` and [`Document`] trees).
mod columns {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::{read, request, write};
    use crate::document::Document;
    use crate::wire::Body;
    use crate::wire::body::Indexed;

    /// The body's bytes, with each id the reader made up (32 hex digits
    /// not in the request) replaced by one mark.
    fn bytes(mut body: Body, request: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(request);
        let ids: Vec<String> = (0..body.len())
            .map(|i| {
                let id = body.ids.get(i).unwrap();
                let made = id.len() == 32
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
                    && !text.contains(id);
                if made { "<made>".into() } else { id.into() }
            })
            .collect();
        body.ids = Default::default();
        for id in &ids {
            body.ids.push_required(id);
        }
        let mut out = Vec::new();
        body.encode(&mut out);
        out
    }

    fn request_json() -> impl Strategy<Value = Value> {
        let doc = prop_oneof![
            crate::document::proptests::json(),
            ".{0,8}".prop_map(Value::from),
            (
                "[a-z]{1,4}",
                proptest::option::of("[a-z✓\"\\\\]{0,8}"),
                proptest::option::of(proptest::collection::vec(-2.0f64..2.0, 0..3)),
                proptest::option::of(("[a-c]{1,2}", -1.0f64..1.0)),
                proptest::collection::vec(("[a-c]{1,2}", ".{0,3}"), 0..3),
            )
                .prop_map(|(id, text, embedding, score, tags)| {
                    let mut d =
                        serde_json::json!({ "id": id, "text": text, "embedding": embedding });
                    if let Some((name, value)) = score {
                        d["scores"] =
                            serde_json::json!({ name: { "value": value, "op_name": "o" } });
                    }
                    let tags: serde_json::Map<String, Value> =
                        tags.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
                    d["tags"] = Value::Object(tags);
                    d
                }),
        ];
        let tree = doc.prop_recursive(3, 24, 4, |inner| {
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 0..3),
                proptest::collection::vec(inner, 0..3),
                any::<bool>(),
            )
                .prop_map(|(mut d, chunks, matches, matches_first)| {
                    if let Value::Object(map) = &mut d {
                        if matches_first {
                            map.insert("matches".into(), Value::Array(matches));
                            map.insert("chunks".into(), Value::Array(chunks));
                        } else {
                            map.insert("chunks".into(), Value::Array(chunks));
                            map.insert("matches".into(), Value::Array(matches));
                        }
                    }
                    d
                })
        });
        (proptest::collection::vec(tree, 0..4), any::<bool>()).prop_map(|(docs, endpoint)| {
            let mut r = serde_json::json!({ "data": docs, "parameters": {"k": 1} });
            if endpoint {
                r["exec_endpoint"] = "/x".into();
            }
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// What the columnar reader takes, the reference reads the same;
        /// what it does not, the reference answers (so errors are its own).
        #[test]
        fn the_columnar_reader_reads_as_the_reference(value in request_json()) {
            let text = value.to_string();
            if let Some(read) = read::read(text.as_bytes()) {
                let reference = request::reference(text.as_bytes(), None);
                prop_assert!(reference.is_ok(), "{text}: {:?}", reference.err());
                let reference = reference.unwrap();
                prop_assert_eq!(read.roots, reference.docs);
                prop_assert_eq!(bytes(read.body, text.as_bytes()), bytes(reference.body, text.as_bytes()), "{}", text);
            }
        }

        /// The answer's documents written from columns are the bytes the
        /// body's documents write (what the gateway wrote before: the body
        /// carries no empty embedding, so `"embedding": []` is not written).
        #[test]
        fn the_columnar_writer_writes_as_documents(values in proptest::collection::vec(crate::document::proptests::json(), 0..4)) {
            let docs: Vec<Document> = values
                .iter()
                .filter_map(|v| Document::from_json_line(&v.to_string()).ok())
                .collect();
            let body = Body::from_documents(&docs);
            let reference = body.clone().into_documents().unwrap();
            let indexed = Indexed::trusting_tags(body).unwrap();
            prop_assert_eq!(
                serde_json::to_string(&write::Docs(&indexed)).unwrap(),
                serde_json::to_string(&reference).unwrap()
            );
        }
    }

    /// The usual request (Jina's client: ids, texts, in order) is read by
    /// the columnar reader, not the reference.
    #[test]
    fn jinas_requests_take_the_columnar_path() {
        let body = br#"{"data": [{"id": "a", "text": "x", "tags": {"k": [1]}}, {"id": "b", "embedding": [0.5, null],
            "chunks": [{"id": "b-0"}], "matches": [{"id": "m", "scores": {"s": {"value": 1}}}]}],
            "execEndpoint": "/", "parameters": {}}"#;
        let read = read::read(body).expect("read by columns");
        assert_eq!((read.roots, read.body.len()), (2, 4));
        assert!(read.body.is_preorder());
        assert!(read::read(br#"{"data": {"docs": []}}"#).is_none());
        assert!(read::read(br#"{"data": [{"id": "a", "id": "b"}]}"#).is_none());
    }
}

/// The document limit counts chunks and matches: one document with
/// 100,000 empty chunks is refused as 100,001 documents would be (a
/// hostile test sent 600,000 chunks in 1.8 MB), by either reader.
#[test]
fn chunks_and_matches_count_against_the_document_limit() {
    let chunks = vec!["{}"; MAX_REQUEST_DOCS].join(",");
    let nested = format!(r#"{{"data": [{{"id": "root", "chunks": [{chunks}]}}]}}"#);
    let error = parse_request(nested.as_bytes(), None).unwrap_err();
    assert!(
        error.starts_with("the request has 100001 documents, more than the 100000"),
        "{error}"
    );
    let matches = vec!["{}"; MAX_REQUEST_DOCS / 2].join(",");
    let split = format!(r#"{{"data": [{{"chunks": [{matches}]}}, {{"matches": [{matches}]}}]}}"#);
    assert!(parse_request(split.as_bytes(), None).is_err());
    // At the limit, taken.
    let chunks = vec!["{}"; MAX_REQUEST_DOCS - 1].join(",");
    let full = format!(r#"{{"data": [{{"chunks": [{chunks}]}}]}}"#);
    assert_eq!(
        parse_request(full.as_bytes(), None).unwrap().body.len(),
        MAX_REQUEST_DOCS
    );
}
