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
            request.docs.len(),
            request.client_id.as_deref()
        ),
        ("/index", 2, Some("mine"))
    );
    assert_eq!(request.parameters["top_k"], 3);
    assert_eq!(request.docs[1].text.as_deref(), Some("plain"));
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
    assert_eq!(request.docs[0].depth(), MAX_DEPTH);
    Body::from_documents(&request.docs).validate().unwrap();
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
        data: &[],
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
}

/// The request reader never panics, whatever the bytes.
/// Property tests of the request reader.
mod proptests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_reads_or_fails(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = super::parse_request(&bytes, None);
        }

        #[test]
        fn any_json_ish_body_reads_or_fails(body in r#"\{("data"|"parameters"|"exec_endpoint"|"header"|"docs"|"chunks"|"id"|"request_id"|[\[\]{}:,"0-9a-z ])*\}"#) {
            if let Ok(request) = super::parse_request(body.as_bytes(), None) {
                prop_assert!(crate::wire::Body::from_documents(&request.docs).validate().is_ok());
            }
        }
    }
}
