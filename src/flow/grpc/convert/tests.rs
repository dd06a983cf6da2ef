use super::*;
use crate::document::Document;

fn text(t: &str) -> NodeProto {
    node(Content::Text(t.into()))
}

#[test]
fn documents_round_trip_through_the_body() {
    let mut docs = crate::wire::body::tests::tree();
    docs[0].blob = Some(vec![0, 1, 2]);
    docs[0].uri = Some("file://x".into());
    let body = Body::from_documents(&docs);
    let list = docs_from_body(&body).unwrap();
    let again = body_from_docs(&list).unwrap();
    again.validate().unwrap();
    assert_eq!(again.into_documents().unwrap(), docs);
}

#[test]
fn client_documents_read_as_the_client_sends_them() {
    // As docarray 0.41 writes DocList[Doc] (see the probe in docs/grpc.md).
    let embedding = NdArrayProto {
        dense: Some(DenseNdArrayProto {
            buffer: [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
            shape: vec![2],
            dtype: "<f4".into(),
        }),
        parameters: None,
    };
    let tags = DictOfAnyProto {
        data: HashMap::from([
            ("n".to_owned(), node(Content::Integer(1))),
            ("f".to_owned(), node(Content::Float(1.5))),
            (
                "l".to_owned(),
                node(Content::List(ListOfAnyProto {
                    data: vec![text("x"), NodeProto::default()],
                })),
            ),
        ]),
    };
    let doc = DocProto {
        data: HashMap::from([
            ("id".to_owned(), typed(Content::Text("a".into()), "id")),
            ("text".to_owned(), text("hi")),
            ("tags".to_owned(), node(Content::Dict(tags))),
            (
                "embedding".to_owned(),
                typed(Content::Ndarray(embedding), "ndarray"),
            ),
            ("url".to_owned(), NodeProto::default()),
            ("unknown".to_owned(), text("ignored")),
        ]),
    };
    let body = body_from_docs(&DocListProto {
        docs: vec![doc, DocProto::default()],
    })
    .unwrap();
    body.validate().unwrap();
    body.check_tags().unwrap();
    let docs: Vec<Document> = body.into_documents().unwrap();
    assert_eq!(docs[0].id, "a");
    assert_eq!(docs[0].text.as_deref(), Some("hi"));
    assert_eq!(docs[0].embedding.as_deref(), Some(&[1.5f32, -2.0][..]));
    assert_eq!(docs[0].tags["f"], 1.5);
    assert_eq!(docs[0].tags["l"], serde_json::json!(["x", null]));
    assert_eq!(docs[1].id.len(), 32);
}

#[test]
fn bad_documents_are_named() {
    let doc = |k: &str, v: NodeProto| DocListProto {
        docs: vec![DocProto {
            data: HashMap::from([(k.to_owned(), v)]),
        }],
    };
    let error = |list: DocListProto| body_from_docs(&list).unwrap_err();
    let many = DocListProto {
        docs: vec![DocProto::default(); 100_001],
    };
    assert!(error(many).starts_with("the request has 100001 documents, more than the 100000"));
    assert_eq!(
        error(doc("text", node(Content::Integer(1)))),
        "docs[0].text must be text, not an integer"
    );
    let bad = NdArrayProto {
        dense: Some(DenseNdArrayProto {
            buffer: vec![0; 6],
            shape: vec![2],
            dtype: "<f4".into(),
        }),
        parameters: None,
    };
    assert_eq!(
        error(doc("embedding", node(Content::Ndarray(bad)))),
        "docs[0].embedding: shape [2] of <f4 needs 8 bytes, the buffer has 6"
    );
    let f2 = NdArrayProto {
        dense: Some(DenseNdArrayProto {
            buffer: vec![0; 2],
            shape: vec![1],
            dtype: "<f2".into(),
        }),
        parameters: None,
    };
    assert!(
        error(doc("embedding", node(Content::Ndarray(f2))))
            .contains("dtype `<f2` is not supported")
    );
    // Past MAX_DEPTH, by chunks.
    let mut deep = DocProto::default();
    for _ in 0..MAX_DEPTH {
        deep = DocProto {
            data: HashMap::from([(
                "chunks".to_owned(),
                node(Content::DocArray(DocListProto { docs: vec![deep] })),
            )]),
        };
    }
    let at = body_from_docs(&DocListProto {
        docs: vec![deep.clone()],
    })
    .unwrap();
    assert_eq!(at.len(), MAX_DEPTH + 1);
    let past = DocProto {
        data: HashMap::from([(
            "matches".to_owned(),
            node(Content::DocArray(DocListProto { docs: vec![deep] })),
        )]),
    };
    assert!(error(DocListProto { docs: vec![past] }).contains("more than 32 levels"));
}

#[test]
fn parameters_become_json_text() {
    use prost_types::{Struct, Value, value::Kind};
    let s = Struct {
        fields: [
            (
                "top_k".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(3.0)),
                },
            ),
            (
                "p".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(0.5)),
                },
            ),
            (
                "name".to_owned(),
                Value {
                    kind: Some(Kind::StringValue("q\"".into())),
                },
            ),
            ("none".to_owned(), Value { kind: None }),
        ]
        .into(),
    };
    assert_eq!(
        struct_json(Some(&s)),
        r#"{"name":"q\"","none":null,"p":0.5,"top_k":3}"#
    );
    assert_eq!(struct_json(None), "{}");
}
