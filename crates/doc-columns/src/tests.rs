//! Trees flattened and rebuilt, columns refused with their column, document
//! and reason, and properties over arbitrary trees and arbitrary damage.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::*;

/// A score as the host's and the guest's documents hold one.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sc {
    value: f64,
    op_name: Option<String>,
    description: Option<String>,
}

/// A document with Jina's field names, as the host's and the guest's are.
#[derive(Debug, Clone, Default, PartialEq)]
struct Doc {
    id: String,
    text: Option<String>,
    blob: Option<Vec<u8>>,
    uri: Option<String>,
    mime_type: Option<String>,
    embedding: Option<Vec<f32>>,
    tags: Map<String, Value>,
    scores: BTreeMap<String, Sc>,
    chunks: Vec<Doc>,
    matches: Vec<Doc>,
}

impl_node!(Doc, Sc);

fn score(value: f64, op_name: Option<&str>, description: Option<&str>) -> Sc {
    Sc {
        value,
        op_name: op_name.map(str::to_owned),
        description: description.map(str::to_owned),
    }
}

fn doc(id: &str) -> Doc {
    Doc {
        id: id.into(),
        ..Doc::default()
    }
}

/// A root with a chunk that has a chunk, a second chunk, a match with a
/// match; a plain root; an empty root.
fn tree() -> Vec<Doc> {
    let mut q = doc("q");
    q.text = Some("query ✓".into());
    q.embedding = Some(vec![1.0, 2.0]);
    q.tags = json!({"k": {"nested": [1, 2]}})
        .as_object()
        .unwrap()
        .clone();
    q.scores
        .insert("cosine".into(), score(0.25, Some("op"), None));
    let mut c0 = doc("c0");
    c0.text = Some("part".into());
    let mut c0c0 = doc("c0c0");
    c0c0.embedding = Some(vec![3.0]);
    c0.chunks.push(c0c0);
    let mut c1 = doc("c1");
    c1.blob = Some(vec![0, 1, 2]);
    let mut m0 = doc("m0");
    m0.scores.insert("cosine".into(), score(0.9, None, None));
    m0.scores.insert("l2".into(), score(1.5, None, Some("d")));
    let mut m0m0 = doc("m0m0");
    m0m0.embedding = Some(vec![4.0, 5.0, 6.0]);
    m0.matches.push(m0m0);
    q.chunks = vec![c0, c1];
    q.matches = vec![m0];
    let mut plain = doc("plain");
    plain.uri = Some("file:///x".into());
    plain.mime_type = Some("text/plain".into());
    plain.text = Some(String::new());
    vec![q, plain, doc("")]
}

/// A chain `depth` levels deep: "0" has chunk "1", ...
fn chain(depth: usize) -> Doc {
    let mut d = doc(&depth.to_string());
    for level in (0..depth).rev() {
        let mut parent = doc(&level.to_string());
        parent.chunks.push(d);
        d = parent;
    }
    d
}

#[test]
fn trees_flatten_in_pre_order_with_parent_indices() {
    let c = Columns::from_documents(&tree());
    c.validate().unwrap();
    assert!(c.is_preorder());
    let ids: Vec<&str> = (0..c.len()).map(|i| c.ids.get(i).unwrap()).collect();
    assert_eq!(ids, ["q", "c0", "c0c0", "c1", "m0", "m0m0", "plain", ""]);
    use Relation::*;
    assert_eq!(
        c.parents,
        [
            None,
            Some(0),
            Some(1),
            Some(0),
            Some(0),
            Some(4),
            None,
            None
        ]
    );
    assert_eq!(
        c.relations,
        [Root, Chunk, Chunk, Chunk, Match, Match, Root, Root]
    );
    assert_eq!(c.embedding_dims, [2, 0, 1, 0, 0, 3, 0, 0]);
    assert_eq!(c.embeddings, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Optional columns: one slot per document, empty span when absent; an
    // empty text is present.
    assert_eq!(
        c.texts.present,
        [true, true, false, false, false, false, true, false]
    );
    assert_eq!(c.blobs.ends, [0, 0, 0, 3, 3, 3, 3, 3]);
    assert_eq!(c.tags.data, r#"{"k":{"nested":[1,2]}}"#);
    // Scores: sparse, documents in order, names in name order.
    let scores: Vec<(u32, &str)> = c.scores.iter().map(|s| (s.doc, &*s.name)).collect();
    assert_eq!(scores, [(0, "cosine"), (4, "cosine"), (4, "l2")]);
    assert_eq!((c.roots(), c.byte_size() > 0), (3, true));
}

#[test]
fn trees_round_trip() {
    let docs = tree();
    let back: Vec<Doc> = Columns::from_documents(&docs).into_documents().unwrap();
    assert_eq!(back, docs);
    let empty: Vec<Doc> = Columns::from_documents::<Doc>(&[])
        .into_documents()
        .unwrap();
    assert!(empty.is_empty());
}

#[test]
fn any_parent_first_order_rebuilds_the_same_tree() {
    // Root, then its match, then its chunk: not pre-order, still a valid tree.
    let mut r = doc("r");
    r.chunks.push(doc("c"));
    r.matches.push(doc("m"));
    let mut c = Columns::from_documents(&[r.clone()]);
    c.ids = StrColumn::default();
    for id in ["r", "m", "c"] {
        c.ids.push_required(id);
    }
    c.relations = vec![Relation::Root, Relation::Match, Relation::Chunk];
    c.validate().unwrap();
    assert!(!c.is_preorder());
    assert_eq!(c.into_documents::<Doc>().unwrap(), vec![r]);
}

/// Flattening, rebuilding and dropping never recurse: a tree far past
/// MAX_DEPTH (which only an API, not validated columns, can build) goes
/// through all three.
#[test]
fn deep_trees_do_not_recurse() {
    let depth = 100_000;
    let docs = vec![chain(depth)];
    let c = Columns::from_documents(&docs);
    drop_tree(docs);
    assert_eq!(c.len(), depth + 1);
    let back: Vec<Doc> = c.into_documents().unwrap();
    assert_eq!(back[0].chunks[0].id, "1");
    drop_tree(back);
}

#[test]
fn trees_past_the_depth_limit_are_refused_naming_the_document() {
    Columns::from_documents(&[chain(MAX_DEPTH)])
        .validate()
        .unwrap();
    let error = Columns::from_documents(&[chain(MAX_DEPTH + 1)])
        .validate()
        .unwrap_err();
    assert_eq!((error.column, error.doc), (None, Some(MAX_DEPTH + 1)));
    assert!(
        error
            .to_string()
            .starts_with("document 33: documents nest more than 32 levels"),
        "{error}"
    );
}

/// A change that makes columns invalid.
type Damage = dyn FnOnce(&mut Columns);

/// The error for `mutate`d columns, with its column and document.
fn refused(mutate: impl FnOnce(&mut Columns)) -> (Option<&'static str>, Option<usize>, String) {
    let mut c = Columns::from_documents(&tree());
    mutate(&mut c);
    let e = c
        .validate()
        .and_then(|()| c.check_tags())
        .expect_err("damaged columns must be refused");
    (e.column, e.doc, e.to_string())
}

#[test]
fn damaged_columns_are_refused_naming_column_document_and_reason() {
    let cases: Vec<(Box<Damage>, &str)> = vec![
        (
            Box::new(|c| {
                c.parents.pop();
            }),
            "column parents: 7 entries for 8 documents",
        ),
        (
            Box::new(|c| c.relations.push(Relation::Root)),
            "column relations: 9 entries for 8 documents",
        ),
        (
            Box::new(|c| {
                c.texts.present.pop();
            }),
            "column texts: 7 presence flags for 8 documents",
        ),
        (
            Box::new(|c| {
                c.blobs.ends.pop();
            }),
            "column blobs: 7 entries for 8 documents",
        ),
        (
            Box::new(|c| c.ids.present = vec![true; 8]),
            "column ids: ids are never absent",
        ),
        (
            Box::new(|c| c.ids.ends[1] = 0),
            "ids[1]: offsets go backwards",
        ),
        (
            Box::new(|c| c.ids.data.push('x')),
            "column ids: offsets end at 20, data is 21 bytes",
        ),
        (
            Box::new(|c| c.texts.ends[0] = 7),
            "texts[0]: span does not fall on a UTF-8 boundary",
        ),
        (
            Box::new(|c| c.texts.present[0] = false),
            "texts[0]: absent but has data",
        ),
        (
            Box::new(|c| c.blobs.present[3] = false),
            "blobs[3]: absent but has data",
        ),
        (
            Box::new(|c| c.parents[2] = Some(2)),
            "parents[2]: 2 does not come before it",
        ),
        (
            Box::new(|c| c.relations[1] = Relation::Root),
            "relations[1]: Root does not agree with parent Some(0)",
        ),
        (
            Box::new(|c| c.relations[6] = Relation::Chunk),
            "relations[6]: Chunk does not agree with parent None",
        ),
        (
            Box::new(|c| c.embedding_dims[5] = 4),
            "documents declare 7 embedding values but the body carries 6",
        ),
        (
            Box::new(|c| c.scores[1].doc = 8),
            "scores[1]: document 8 does not exist (8 documents)",
        ),
        (
            Box::new(|c| {
                c.tags.data = "[1]".into();
                c.tags.ends = vec![3; 8];
            }),
            "tags[0]: not a JSON object",
        ),
        (
            Box::new(|c| {
                c.tags.data = "{".into();
                c.tags.ends = vec![1; 8];
            }),
            "tags[0]: not valid JSON: EOF while parsing an object at line 1 column 1",
        ),
    ];
    for (mutate, message) in cases {
        assert_eq!(refused(mutate).2, message);
    }
    assert_eq!(
        refused(|c| c.texts.present[0] = false),
        (
            Some("texts"),
            Some(0),
            "texts[0]: absent but has data".into()
        )
    );
    let into_string: String = Error::column("ids", "x").into();
    assert_eq!(into_string, "column ids: x");
}

#[test]
fn scores_sort_by_document_and_name_keeping_the_last() {
    let mut c = Columns::from_documents(&tree());
    let mut dup = c.scores[0].clone();
    dup.value = 7.0;
    c.scores.push(dup);
    c.scores.swap(0, 2);
    c.sort_scores();
    let scores: Vec<(u32, &str, f64)> = c
        .scores
        .iter()
        .map(|s| (s.doc, &*s.name, s.value))
        .collect();
    assert_eq!(
        scores,
        [(0, "cosine", 7.0), (4, "cosine", 0.9), (4, "l2", 1.5)]
    );
}

fn arb_fields() -> impl Strategy<Value = Fields> {
    (
        "[a-zé✓]{0,4}",
        proptest::option::of("[a-z ✓]{0,6}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        proptest::option::of(proptest::collection::vec(-1e3f32..1e3, 1..4)),
        proptest::option::of(("[a-z]{1,3}", 0i64..9)),
    )
        .prop_map(|(id, text, blob, embedding, tag)| Fields {
            id,
            text,
            blob,
            uri: None,
            mime_type: None,
            embedding,
            tags: tag
                .map(|(k, v)| Map::from_iter([(k, Value::from(v))]))
                .unwrap_or_default(),
        })
}

fn arb_doc() -> impl Strategy<Value = Doc> {
    let leaf = (arb_fields(), proptest::option::of(-1.0f64..1.0)).prop_map(|(fields, s)| {
        let mut d = Doc::from_fields(fields);
        if let Some(v) = s {
            d.scores.insert("s".into(), score(v, None, None));
        }
        d
    });
    leaf.prop_recursive(4, 24, 3, |inner| {
        (
            inner.clone(),
            proptest::collection::vec(inner.clone(), 0..3),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(mut d, chunks, matches)| {
                d.chunks = chunks;
                d.matches = matches;
                d
            })
    })
}

proptest! {
    /// Every tree flattens into valid pre-order columns and comes back equal.
    #[test]
    fn arbitrary_trees_round_trip(docs in proptest::collection::vec(arb_doc(), 0..4)) {
        let c = Columns::from_documents(&docs);
        prop_assert!(c.validate().is_ok());
        prop_assert!(c.check_tags().is_ok());
        prop_assert!(c.is_preorder());
        let back: Vec<Doc> = c.into_documents().unwrap();
        prop_assert_eq!(back, docs);
    }

    /// Damage anywhere is refused or harmless: validation never panics, and
    /// columns it passes rebuild without panicking.
    #[test]
    fn arbitrary_damage_never_panics(
        docs in proptest::collection::vec(arb_doc(), 1..3),
        which in 0usize..7,
        at in any::<prop::sample::Index>(),
        value in any::<u32>(),
    ) {
        let mut c = Columns::from_documents(&docs);
        let ends = match which {
            0 => &mut c.ids.ends,
            1 => &mut c.texts.ends,
            2 => &mut c.blobs.ends,
            3 => &mut c.tags.ends,
            4 => &mut c.embedding_dims,
            _ => {
                let i = at.index(c.parents.len());
                c.parents[i] = (value % 4 != 0).then_some(value % 8);
                c.relations[i] = [Relation::Root, Relation::Chunk, Relation::Match][value as usize % 3];
                &mut Vec::new()
            }
        };
        if !ends.is_empty() {
            let i = at.index(ends.len());
            ends[i] = value % 64;
        }
        if c.validate().is_ok() {
            let _ = c.into_documents::<Doc>();
        }
    }
}
