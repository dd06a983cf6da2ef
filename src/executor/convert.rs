//! The seam between the wire's columnar [`Body`] and the contract's `batch`:
//! the two have the same columns, so a call borrows the body's buffers on the
//! way in and moves the guest's buffers into a new body on the way out. No
//! document trees are built, whatever the batch's size. docs/wit-contract.md has
//! the flattening rule and an example.

/// The seam, written once and expanded per contract version (the two
/// versions' batches are the same record under different generated types).
macro_rules! seam {
    () => {
        use crate::wire::body::{Column, Columns, StrColumn};
        use crate::wire::{Body, Relation, Score};

        /// A body lent to one call: the columns whose types differ (relations and
        /// scores) converted, everything else borrowed.
        pub struct BatchView<'a> {
            body: &'a Body,
            relations: Vec<wit::Relation>,
            scores: Vec<wit::NamedScoreParam<'a>>,
        }

        impl<'a> BatchView<'a> {
            pub fn new(body: &'a Body) -> Self {
                let relations = body
                    .relations
                    .iter()
                    .map(|r| match r {
                        Relation::Root => wit::Relation::Root,
                        Relation::Chunk => wit::Relation::Chunk,
                        Relation::Match => wit::Relation::Match,
                    })
                    .collect();
                let scores = body
                    .scores
                    .iter()
                    .map(|s| wit::NamedScoreParam {
                        doc: s.doc,
                        name: &s.name,
                        value: s.value,
                        op_name: s.op_name.as_deref(),
                        description: s.description.as_deref(),
                    })
                    .collect();
                BatchView {
                    body,
                    relations,
                    scores,
                }
            }

            /// The batch as the generated bindings take it.
            pub fn param(&self) -> wit::BatchParam<'_> {
                let b = self.body;
                let optional = |c: &'a StrColumn| wit::OptionalStringColumnParam {
                    present: &c.present,
                    data: &c.data,
                    ends: &c.ends,
                };
                wit::BatchParam {
                    ids: wit::StringColumnParam {
                        data: &b.ids.data,
                        ends: &b.ids.ends,
                    },
                    parents: &b.parents,
                    relations: &self.relations,
                    texts: optional(&b.texts),
                    blobs: wit::OptionalBytesColumnParam {
                        present: &b.blobs.present,
                        data: &b.blobs.data,
                        ends: &b.blobs.ends,
                    },
                    uris: optional(&b.uris),
                    mime_types: optional(&b.mime_types),
                    tags: optional(&b.tags),
                    embedding_dims: &b.embedding_dims,
                    embeddings: &b.embeddings,
                    scores: &self.scores,
                }
            }
        }

        /// Takes the batch a guest returned as a body. The guest is not trusted: every
        /// column length, offset, index, relation and tag is checked.
        ///
        /// # Errors
        /// A message naming the column and the document index.
        pub fn from_batch(batch: wit::BatchResult) -> Result<Body, String> {
            let wit::BatchResult {
                ids,
                parents,
                relations,
                texts,
                blobs,
                uris,
                mime_types,
                tags,
                embedding_dims,
                embeddings,
                scores,
            } = batch;
            let wit::StringColumnResult { data, ends } = ids;
            let optional = |c: wit::OptionalStringColumnResult| Column {
                present: c.present,
                data: c.data,
                ends: c.ends,
            };
            let wit::OptionalBytesColumnResult {
                present,
                data: blob_data,
                ends: blob_ends,
            } = blobs;
            let body = Body(Columns {
                ids: Column {
                    present: Vec::new(),
                    data,
                    ends,
                },
                parents,
                relations: relations
                    .into_iter()
                    .map(|r| match r {
                        wit::Relation::Root => Relation::Root,
                        wit::Relation::Chunk => Relation::Chunk,
                        wit::Relation::Match => Relation::Match,
                    })
                    .collect(),
                texts: optional(texts),
                blobs: Column {
                    present,
                    data: blob_data,
                    ends: blob_ends,
                },
                uris: optional(uris),
                mime_types: optional(mime_types),
                tags: optional(tags),
                embedding_dims,
                embeddings,
                scores: scores
                    .into_iter()
                    .map(|s| Score {
                        doc: s.doc,
                        name: s.name,
                        value: s.value,
                        op_name: s.op_name,
                        description: s.description,
                    })
                    .collect(),
            });
            body.validate()?;
            body.check_tags()?;
            Ok(body)
        }
    };
}

/// For `jina:executor@0.2.0` components.
pub mod v2 {
    use crate::executor::bindings::v2::types as wit;
    seam!();
}

/// For `jina:executor@0.1.0` components.
pub mod v1 {
    use crate::executor::bindings::v1::types as wit;
    seam!();
}

#[cfg(test)]
mod tests {
    use super::v2::*;
    use crate::Document;
    use crate::executor::bindings::v2::types::{
        BatchResult, NamedScoreResult, OptionalBytesColumnResult, OptionalStringColumnParam,
        OptionalStringColumnResult, StringColumnResult,
    };
    use crate::wire::Body;

    /// What a guest would hand back if it returned the batch unchanged.
    fn echo(view: &BatchView<'_>) -> BatchResult {
        let p = view.param();
        let opt = |c: OptionalStringColumnParam<'_>| OptionalStringColumnResult {
            present: c.present.to_vec(),
            data: c.data.to_owned(),
            ends: c.ends.to_vec(),
        };
        BatchResult {
            ids: StringColumnResult {
                data: p.ids.data.to_owned(),
                ends: p.ids.ends.to_vec(),
            },
            parents: p.parents.to_vec(),
            relations: p.relations.to_vec(),
            texts: opt(p.texts),
            blobs: OptionalBytesColumnResult {
                present: p.blobs.present.to_vec(),
                data: p.blobs.data.to_vec(),
                ends: p.blobs.ends.to_vec(),
            },
            uris: opt(p.uris),
            mime_types: opt(p.mime_types),
            tags: opt(p.tags),
            embedding_dims: p.embedding_dims.to_vec(),
            embeddings: p.embeddings.to_vec(),
            scores: p
                .scores
                .iter()
                .map(|s| NamedScoreResult {
                    doc: s.doc,
                    name: s.name.to_owned(),
                    value: s.value,
                    op_name: s.op_name.map(str::to_owned),
                    description: s.description.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn a_body_crosses_the_boundary_unchanged() {
        let mut doc = Document::from_text("q ✓");
        doc.embedding = Some(vec![1.0, 2.0]);
        doc.chunks = vec![Document::from_text("c")].into();
        doc.matches = vec![Document::from_text("m")].into();
        doc.tags = serde_json::json!({"k": 1}).as_object().unwrap().clone();
        let body = Body::from_documents(&[doc]);
        assert_eq!(from_batch(echo(&BatchView::new(&body))).unwrap(), body);
    }

    #[test]
    fn malformed_guest_output_is_rejected() {
        let body = Body::from_documents(&[Document::from_text("x")]);
        let mut batch = echo(&BatchView::new(&body));
        batch.tags = OptionalStringColumnResult {
            present: vec![true],
            data: "[1]".into(),
            ends: vec![3],
        };
        assert!(from_batch(batch).unwrap_err().contains("not a JSON object"));
        let mut batch = echo(&BatchView::new(&body));
        batch.parents.push(None);
        assert!(from_batch(batch).unwrap_err().contains("parents"));
    }
}
