//! A document tree flattened into columns and rebuilt from them, for any
//! document type ([`Node`]): the host's and the guest SDK's `Document`.
//!
//! The columns list the documents in depth-first pre-order: a root, then each
//! of its chunk subtrees in order, then each of its match subtrees in order,
//! then the next root. A child's `parents` entry is its parent's index and its
//! `relations` entry is `Chunk` or `Match`; a root has no parent and relation
//! `Root`. Rebuilding is lenient about order: any list where every parent
//! comes before its children rebuilds the same tree (children keep their
//! relative order). Neither direction recurses, so a tree of any depth cannot
//! overflow a stack (a guest's is small).

use serde_json::{Map, Value};

use crate::{Columns, Error, Relation, Score, StrColumn};

/// A document type the columns flatten and rebuild. It holds the fields of
/// Jina's document: an id, optional text, blob, uri, mime type and embedding,
/// JSON object tags, named scores, and two lists of child documents.
pub trait Node: Sized {
    fn id(&self) -> &str;
    fn text(&self) -> Option<&str>;
    fn blob(&self) -> Option<&[u8]>;
    fn uri(&self) -> Option<&str>;
    fn mime_type(&self) -> Option<&str>;
    fn embedding(&self) -> Option<&[f32]>;
    /// Empty means "no tags" (an absent entry in the columns).
    fn tags(&self) -> &Map<String, Value>;
    /// The scores, each name once, in the order to write them (by name).
    fn scores(&self) -> impl Iterator<Item = ScoreRef<'_>>;
    fn chunks(&self) -> &[Self];
    fn matches(&self) -> &[Self];

    /// A document with these fields, no scores and no children.
    fn from_fields(fields: Fields) -> Self;
    /// Sets a score (`score.doc` is this document's index; ignore it). A
    /// later score of the same name replaces an earlier one.
    fn add_score(&mut self, score: Score);
    /// The chunks and the matches, to attach children to.
    fn children_mut(&mut self) -> (&mut Vec<Self>, &mut Vec<Self>);
}

/// One score of a document being flattened.
pub struct ScoreRef<'a> {
    pub name: &'a str,
    pub value: f64,
    pub op_name: Option<&'a str>,
    pub description: Option<&'a str>,
}

/// The fields of one document being rebuilt ([`Node::from_fields`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub id: String,
    pub text: Option<String>,
    pub blob: Option<Vec<u8>>,
    pub uri: Option<String>,
    pub mime_type: Option<String>,
    pub embedding: Option<Vec<f32>>,
    pub tags: Map<String, Value>,
}

/// What the columns of some trees will hold, counted first so every buffer
/// is allocated once.
#[derive(Default)]
struct Sizes {
    docs: usize,
    ids: usize,
    texts: usize,
    blobs: usize,
    uris: usize,
    mime_types: usize,
    floats: usize,
    scores: usize,
}

impl Sizes {
    fn of<D: Node>(roots: &[D]) -> Sizes {
        let mut s = Sizes::default();
        let mut stack: Vec<&D> = roots.iter().collect();
        while let Some(d) = stack.pop() {
            s.docs += 1;
            s.ids += d.id().len();
            s.texts += d.text().map_or(0, str::len);
            s.blobs += d.blob().map_or(0, <[u8]>::len);
            s.uris += d.uri().map_or(0, str::len);
            s.mime_types += d.mime_type().map_or(0, str::len);
            s.floats += d.embedding().map_or(0, <[f32]>::len);
            s.scores += d.scores().count();
            stack.extend(d.chunks().iter().chain(d.matches()));
        }
        s
    }
}

impl Columns {
    /// Flattens document trees in pre-order, without recursion. The result
    /// is valid ([`Columns::validate`]) if the trees are no deeper than
    /// [`crate::MAX_DEPTH`] and hold less than 4 GiB of any one column.
    pub fn from_documents<D: Node>(roots: &[D]) -> Columns {
        let s = Sizes::of(roots);
        let n = s.docs;
        let column = |bytes: usize| StrColumn {
            present: Vec::with_capacity(n),
            data: String::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        };
        let mut out = Columns {
            ids: StrColumn {
                present: Vec::new(),
                data: String::with_capacity(s.ids),
                ends: Vec::with_capacity(n),
            },
            parents: Vec::with_capacity(n),
            relations: Vec::with_capacity(n),
            texts: column(s.texts),
            blobs: crate::BytesColumn {
                present: Vec::with_capacity(n),
                data: Vec::with_capacity(s.blobs),
                ends: Vec::with_capacity(n),
            },
            uris: column(s.uris),
            mime_types: column(s.mime_types),
            // Tag text is only known once serialised.
            tags: column(0),
            embedding_dims: Vec::with_capacity(n),
            embeddings: Vec::with_capacity(s.floats),
            scores: Vec::with_capacity(s.scores),
        };
        // An explicit stack instead of recursion: (document, parent, relation),
        // children pushed in reverse so chunks pop first, each subtree whole
        // before the next.
        let mut stack: Vec<(&D, Option<u32>, Relation)> = roots
            .iter()
            .rev()
            .map(|d| (d, None, Relation::Root))
            .collect();
        while let Some((doc, parent, relation)) = stack.pop() {
            let index = out.parents.len() as u32;
            out.ids.push_required(doc.id());
            out.parents.push(parent);
            out.relations.push(relation);
            out.texts.push(doc.text());
            out.blobs.push(doc.blob());
            out.uris.push(doc.uri());
            out.mime_types.push(doc.mime_type());
            let tags = (!doc.tags().is_empty())
                .then(|| serde_json::to_string(doc.tags()).expect("a JSON map serialises"));
            out.tags.push(tags.as_deref());
            let embedding = doc.embedding().unwrap_or(&[]);
            out.embedding_dims.push(embedding.len() as u32);
            out.embeddings.extend_from_slice(embedding);
            out.scores.extend(doc.scores().map(|s| Score {
                doc: index,
                name: s.name.to_owned(),
                value: s.value,
                op_name: s.op_name.map(str::to_owned),
                description: s.description.map(str::to_owned),
            }));
            let parent = Some(index);
            stack.extend(
                doc.matches()
                    .iter()
                    .rev()
                    .map(|d| (d, parent, Relation::Match)),
            );
            stack.extend(
                doc.chunks()
                    .iter()
                    .rev()
                    .map(|d| (d, parent, Relation::Chunk)),
            );
        }
        out
    }

    /// Rebuilds the document trees, without recursion. The columns must be
    /// valid ([`Columns::validate`]): on columns that are not, this may panic.
    ///
    /// # Errors
    /// Tags that are not a JSON object, naming the document.
    pub fn into_documents<D: Node>(self) -> Result<Vec<D>, Error> {
        let n = self.len();
        let mut flat: Vec<D> = Vec::with_capacity(n);
        let mut offset = 0;
        for i in 0..n {
            let dim = self.embedding_dims[i] as usize;
            flat.push(D::from_fields(Fields {
                id: self.ids.data[self.ids.range(i)].to_owned(),
                text: self.texts.get(i).map(str::to_owned),
                blob: self.blobs.get(i).map(<[u8]>::to_vec),
                uri: self.uris.get(i).map(str::to_owned),
                mime_type: self.mime_types.get(i).map(str::to_owned),
                embedding: (dim > 0).then(|| self.embeddings[offset..offset + dim].to_vec()),
                tags: self.tags_of(i)?,
            }));
            offset += dim;
        }
        for score in self.scores {
            flat[score.doc as usize].add_score(score);
        }
        if self.parents.iter().all(Option::is_none) {
            return Ok(flat);
        }
        // Attach children from the back: every child comes after its parent,
        // so when a document is reached all its children are attached. They
        // arrived in reverse, so its lists are flipped then.
        let mut roots = Vec::new();
        while let Some(mut doc) = flat.pop() {
            let (chunks, matches) = doc.children_mut();
            chunks.reverse();
            matches.reverse();
            let i = flat.len();
            match self.parents[i] {
                None => roots.push(doc),
                Some(p) => {
                    let (chunks, matches) = flat[p as usize].children_mut();
                    match self.relations[i] {
                        Relation::Chunk => chunks.push(doc),
                        _ => matches.push(doc),
                    }
                }
            }
        }
        roots.reverse();
        Ok(roots)
    }
}

/// Drops document trees of any depth without recursion (a derived `Drop`
/// recurses once per level).
pub fn drop_tree<D: Node>(roots: Vec<D>) {
    let mut stack = roots;
    while let Some(mut doc) = stack.pop() {
        let (chunks, matches) = doc.children_mut();
        stack.append(chunks);
        stack.append(matches);
    }
}

/// Implements [`Node`] for a document type with Jina's field names, as the
/// host's and the guest SDK's `Document` have: `id: String`; `text`, `uri`,
/// `mime_type: Option<String>`; `blob: Option<Vec<u8>>`; `embedding:
/// Option<Vec<f32>>`; `tags: serde_json::Map<String, Value>`; `scores:
/// BTreeMap<String, S>` where `S` (the second argument) has `value: f64`,
/// `op_name` and `description: Option<String>`; `chunks` and `matches`: a
/// `Vec` of the type, or anything that derefs to one; and `Default`.
#[macro_export]
macro_rules! impl_node {
    ($doc:ty, $score:ident) => {
        impl $crate::Node for $doc {
            fn id(&self) -> &str {
                &self.id
            }
            fn text(&self) -> Option<&str> {
                self.text.as_deref()
            }
            fn blob(&self) -> Option<&[u8]> {
                self.blob.as_deref()
            }
            fn uri(&self) -> Option<&str> {
                self.uri.as_deref()
            }
            fn mime_type(&self) -> Option<&str> {
                self.mime_type.as_deref()
            }
            fn embedding(&self) -> Option<&[f32]> {
                self.embedding.as_deref()
            }
            fn tags(&self) -> &$crate::__serde_json::Map<String, $crate::__serde_json::Value> {
                &self.tags
            }
            fn scores(&self) -> impl Iterator<Item = $crate::ScoreRef<'_>> {
                self.scores.iter().map(|(name, s)| $crate::ScoreRef {
                    name,
                    value: s.value,
                    op_name: s.op_name.as_deref(),
                    description: s.description.as_deref(),
                })
            }
            fn chunks(&self) -> &[Self] {
                &self.chunks
            }
            fn matches(&self) -> &[Self] {
                &self.matches
            }
            fn from_fields(f: $crate::Fields) -> Self {
                Self {
                    id: f.id,
                    text: f.text,
                    blob: f.blob,
                    uri: f.uri,
                    mime_type: f.mime_type,
                    embedding: f.embedding,
                    tags: f.tags,
                    ..Default::default()
                }
            }
            fn add_score(&mut self, s: $crate::Score) {
                self.scores.insert(
                    s.name,
                    $score {
                        value: s.value,
                        op_name: s.op_name,
                        description: s.description,
                    },
                );
            }
            fn children_mut(&mut self) -> (&mut Vec<Self>, &mut Vec<Self>) {
                (&mut self.chunks, &mut self.matches)
            }
        }
    };
}
