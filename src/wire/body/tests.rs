//! Bodies built, encoded, decoded and refused.

use super::*;
use crate::document::MAX_DEPTH;
use crate::wire::put_u32;

pub(crate) fn tree() -> Vec<Document> {
    let leaf = |id: &str| Document {
        id: id.into(),
        text: Some(format!("text of {id} ✓")),
        ..Default::default()
    };
    let mut q = leaf("q");
    q.embedding = Some(vec![1.0, 2.0]);
    q.blob = Some(vec![0, 255]);
    q.tags = serde_json::json!({"k": [1, "two"]})
        .as_object()
        .unwrap()
        .clone();
    q.scores.insert(
        "cosine".into(),
        NamedScore {
            value: 0.5,
            op_name: Some("op".into()),
            description: None,
        },
    );
    let mut q1 = leaf("q-1");
    q1.matches = vec![Document {
        embedding: Some(vec![3.0]),
        ..leaf("m")
    }]
    .into();
    q.chunks = vec![leaf("q-0"), q1].into();
    q.matches = vec![leaf("q-m")].into();
    vec![
        q,
        Document {
            id: "r".into(),
            ..Default::default()
        },
    ]
}

#[test]
fn trees_round_trip_through_columns_and_bytes() {
    let docs = tree();
    let body = Body::from_documents(&docs);
    assert_eq!(
        body.parents,
        vec![None, Some(0), Some(0), Some(2), Some(0), None]
    );
    body.validate().unwrap();
    let mut bytes = Vec::new();
    body.encode(&mut bytes);
    let back = Body::decode(&bytes).unwrap();
    assert_eq!(back, body);
    assert_eq!(back.into_documents().unwrap(), docs);
}

/// Flattening and rebuilding never recurse, and dropping what they
/// build does not either: a tree far past MAX_DEPTH (as only the host API
/// can build one) goes through both.
#[test]
fn deep_trees_do_not_recurse() {
    let docs = vec![crate::document::tests::chain(100_000)];
    let back = Body::from_documents(&docs).into_documents().unwrap();
    assert_eq!((back[0].id.as_str(), back[0].depth()), ("99999", 100_000));
}

/// A body whose tree is deeper than MAX_DEPTH is refused by `validate`
/// (so by `decode` and by an executor's output), naming the document;
/// one at the limit is valid.
#[test]
fn bodies_past_the_depth_limit_are_refused() {
    let at = Body::from_documents(&[crate::document::tests::chain(MAX_DEPTH)]);
    at.validate().unwrap();
    let mut bytes = Vec::new();
    at.encode(&mut bytes);
    assert_eq!(Body::decode(&bytes).unwrap().len(), MAX_DEPTH + 1);
    let past = Body::from_documents(&[crate::document::tests::chain(MAX_DEPTH + 1)]);
    let error = past.validate().unwrap_err().to_string();
    assert!(
        error.starts_with("document 33: documents nest more than 32 levels"),
        "{error}"
    );
    let mut bytes = Vec::new();
    past.encode(&mut bytes);
    assert!(
        Body::decode(&bytes)
            .unwrap_err()
            .to_string()
            .contains("more than 32 levels")
    );
}

fn rejected(mutate: impl FnOnce(&mut Body)) -> String {
    let mut body = Body::from_documents(&tree());
    mutate(&mut body);
    body.validate()
        .and_then(|()| body.check_tags())
        .expect_err("a malformed body must be rejected")
        .to_string()
}

#[test]
fn malformed_bodies_are_rejected_not_trusted() {
    assert!(
        rejected(|b| {
            b.parents.pop();
        })
        .contains("parents")
    );
    assert!(rejected(|b| b.ids.ends[1] = 0).contains("backwards"));
    assert!(rejected(|b| b.ids.data.push('x')).contains("ids"));
    assert!(
        rejected(|b| {
            let at = b.texts.data.find('✓').unwrap() + 1;
            b.texts.ends[0] = at as u32;
        })
        .contains("UTF-8")
    );
    assert!(rejected(|b| b.texts.present[0] = false).contains("absent"));
    assert!(rejected(|b| b.parents[1] = Some(4)).contains("come before"));
    assert!(rejected(|b| b.relations[0] = Relation::Chunk).contains("agree"));
    assert!(rejected(|b| b.embedding_dims[0] = 5).contains("embedding"));
    assert!(rejected(|b| b.scores[0].doc = 99).contains("does not exist"));
    assert!(
        rejected(|b| {
            b.tags.data = "[1]".into();
            b.tags.ends = vec![3; 6];
        })
        .contains("not a JSON object")
    );
    assert!(rejected(|b| b.blobs.present[0] = false).contains("blobs[0]"));
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let mut bytes = Vec::new();
    put_u32(&mut bytes, u32::MAX);
    let error = Body::decode(&bytes).unwrap_err().to_string();
    assert!(error.contains("document columns"), "{error}");
}
