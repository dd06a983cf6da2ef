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

/// A document `levels` levels of chunks deep; the deepest one is `leaf`.
fn chain(levels: usize, leaf: Document) -> Document {
    let mut doc = leaf;
    for i in 0..levels {
        doc = Document {
            id: format!("l{i}"),
            chunks: vec![doc].into(),
            ..Default::default()
        };
    }
    doc
}

#[test]
fn chunks_and_matches_count_against_the_request_limit() {
    use crate::flow::gateway::MAX_REQUEST_DOCS;
    // One root whose chunks are MAX_REQUEST_DOCS empty documents: one too
    // many, counted on the bytes (hostile pass 3, H3-2).
    let list = |n: usize| DocListProto {
        docs: vec![DocProto {
            data: HashMap::from([(
                "chunks".to_owned(),
                node(Content::DocArray(DocListProto {
                    docs: vec![DocProto::default(); n],
                })),
            )]),
        }],
    };
    let content = |n: usize| {
        DataContentProto {
            documents: Some(Documents::Docs(list(n))),
        }
        .encode_to_vec()
    };
    assert_eq!(count_docs(&content(MAX_REQUEST_DOCS)), MAX_REQUEST_DOCS + 1);
    assert_eq!(count_docs(&content(3)), 4);
    // `docs_bytes` too; a key other than chunks/matches is not documents;
    // unknown fields and groups are skipped as prost skips them.
    let bytes = DataContentProto {
        documents: Some(Documents::DocsBytes(list(5).encode_to_vec())),
    }
    .encode_to_vec();
    assert_eq!(count_docs(&bytes), 6);
    let mut other = list(5);
    let node = other.docs[0].data.remove("chunks").unwrap();
    other.docs[0].data.insert("others".into(), node);
    let mut bytes = vec![0x18, 0x01, 0x1b, 0x08, 0x01, 0x1c];
    bytes.extend(
        DataContentProto {
            documents: Some(Documents::Docs(other)),
        }
        .encode_to_vec(),
    );
    assert_eq!(count_docs(&bytes), 1);
    // The flattening checks the total as it goes too.
    let error = body_from_docs(&list(MAX_REQUEST_DOCS)).unwrap_err();
    assert!(
        error.starts_with("the request has 100001 documents, more than the 100000"),
        "{error}"
    );
    assert_eq!(body_from_docs(&list(10)).unwrap().len(), 11);
}

#[test]
fn embedding_values_must_be_finite_32_bit_floats() {
    // As the HTTP gateway's JSON reader: refused by index (hostile pass 3,
    // H3-10), in an ndarray of either float dtype and in a list.
    let array = |dtype: &str, buffer: Vec<u8>, n: u32| {
        node(Content::Ndarray(NdArrayProto {
            dense: Some(DenseNdArrayProto {
                buffer,
                shape: vec![n],
                dtype: dtype.into(),
            }),
            parameters: None,
        }))
    };
    let f8 = |values: &[f64]| {
        let buffer = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        array("<f8", buffer, values.len() as u32)
    };
    let f4 = |values: &[f32]| {
        let buffer = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        array(">f4", buffer, values.len() as u32)
    };
    let list = |values: &[f64]| {
        node(Content::List(ListOfAnyProto {
            data: values.iter().map(|v| node(Content::Float(*v))).collect(),
        }))
    };
    let error = |field: &str, n: NodeProto| {
        body_from_docs(&DocListProto {
            docs: vec![DocProto {
                data: HashMap::from([(field.to_owned(), n)]),
            }],
        })
        .map(|_| ())
    };
    for (n, want) in [
        (
            f8(&[1e300, 1.0]),
            "docs[0].embedding[0] = 1e300 does not fit a 32-bit float",
        ),
        (
            f8(&[1.0, -1e39]),
            "docs[0].embedding[1] = -1e39 does not fit a 32-bit float",
        ),
        (
            f8(&[0.0, f64::NAN]),
            "docs[0].embedding[1] = NaN is not a finite number",
        ),
        (
            f4(&[1.0, 2.0, f32::INFINITY]),
            "docs[0].embedding[2] = inf is not a finite number",
        ),
        (
            f4(&[f32::NAN]),
            "docs[0].embedding[0] = NaN is not a finite number",
        ),
        (
            list(&[1e300]),
            "docs[0].embedding[0] = 1e300 does not fit a 32-bit float",
        ),
        (
            list(&[2.0, f64::NEG_INFINITY]),
            "docs[0].embedding[1] = -inf is not a finite number",
        ),
    ] {
        assert_eq!(error("embedding", n), Err(want.to_owned()));
    }
    // In range: read as before (f32::MAX itself fits).
    assert_eq!(
        error("embedding", f8(&[f64::from(f32::MAX), -1e-50])),
        Ok(())
    );
    assert_eq!(error("embedding", list(&[1.5, -3e38])), Ok(()));
    // The fast path falls back, so a request gives the same message.
    let content = DataContentProto {
        documents: Some(Documents::Docs(DocListProto {
            docs: vec![DocProto {
                data: HashMap::from([("embedding".to_owned(), f4(&[1.0, f32::NAN]))]),
            }],
        })),
    }
    .encode_to_vec();
    assert!(fast_body(&content).is_none());
    // NaN and the infinities in tags: JSON cannot hold them, the HTTP
    // gateway's reader refuses them; so does this, naming where.
    let tags = node(Content::Dict(DictOfAnyProto {
        data: HashMap::from([(
            "a".to_owned(),
            node(Content::List(ListOfAnyProto {
                data: vec![
                    node(Content::Float(1.0)),
                    node(Content::Float(f64::INFINITY)),
                ],
            })),
        )]),
    }));
    assert_eq!(
        error("tags", tags),
        Err("docs[0].tags[\"a\"][1] = inf is not a finite number".to_owned())
    );
}

#[test]
fn answers_protobuf_clients_cannot_read_are_refused() {
    // Hostile pass 3, H3-9: Python's protobuf reads 23 levels of plain
    // documents, 22 with scores, tags nested 31 deep at the top level (all
    // measured with its upb decoder); one more is refused, naming it.
    let plain = |levels| Body::from_documents(&[chain(levels, Document::default())]);
    assert!(docs_from_body(&plain(23)).is_ok());
    assert!(content_from_body(&plain(23)).is_ok());
    let AnswerError::TooDeep(message) = docs_from_body(&plain(24)).unwrap_err() else {
        panic!("not TooDeep")
    };
    assert!(
        message.contains("24 levels of chunks and matches below its root, nests protobuf messages 102 deep, more than the 100"),
        "{message}"
    );
    let (kind, _) = content_from_body(&plain(24))
        .unwrap_err()
        .kind_and_message();
    assert_eq!(kind, crate::wire::ErrorKind::InvalidOutput);
    let scored = |levels| {
        let leaf = Document {
            scores: [(
                "s".to_owned(),
                crate::document::NamedScore {
                    value: 1.0,
                    op_name: None,
                    description: None,
                },
            )]
            .into(),
            ..Default::default()
        };
        Body::from_documents(&[chain(levels, leaf)])
    };
    assert!(docs_from_body(&scored(22)).is_ok());
    assert!(docs_from_body(&scored(23)).is_err());
    let tagged = |depth: usize| {
        let mut value = serde_json::json!("leaf");
        for _ in 0..depth {
            value = serde_json::json!({ "a": value });
        }
        let serde_json::Value::Object(tags) = value else {
            unreachable!()
        };
        Body::from_documents(&[Document {
            tags,
            ..Default::default()
        }])
    };
    assert!(docs_from_body(&tagged(31)).is_ok());
    assert!(docs_from_body(&tagged(32)).is_err());
}
