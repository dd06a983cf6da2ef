//! A body as ranges of documents: in the pre-order `from_documents` gives
//! (a document, its chunks with their subtrees, then its matches with theirs),
//! each document's subtree is one contiguous range, so a Head splits a body
//! and a Tail merges bodies by copying ranges of columns, without building
//! document trees ([`crate::pod::reduce`]).

use std::ops::Range;

use super::{Body, Relation};

/// A body in canonical form (pre-order, each document's scores by name, one
/// per name), with what copying ranges of it takes: where each document's
/// subtree ends, and where its embedding values and scores start.
pub struct Indexed {
    pub body: Body,
    /// `ends[i]`: one past the last document of `i`'s subtree.
    ends: Vec<u32>,
    /// `floats[i]`: where document `i`'s embedding starts (n + 1 entries).
    floats: Vec<usize>,
    /// `scores[i]`: where document `i`'s scores start (n + 1 entries).
    scores: Vec<usize>,
}

impl Indexed {
    /// Indexes a valid body ([`super::Columns::validate`]) after putting it in the form
    /// `Body::from_documents(&body.into_documents()?)` has, but for the tags'
    /// text (kept as it came): scores sorted by name, the last of one name
    /// kept; documents reordered only if they are not in pre-order (not
    /// from this host), through document trees.
    ///
    /// # Errors
    /// Tags that are not a JSON object, as [`Body::into_documents`] says it.
    pub fn new(body: Body) -> Result<Indexed, String> {
        body.check_tags()?;
        Indexed::trusting_tags(body)
    }

    /// [`Indexed::new`] without checking the tags, for a caller that reads
    /// them itself (the gateway's answer writer). A body not in pre-order
    /// goes through document trees, whose tags are checked.
    ///
    /// # Errors
    /// Tags that are not a JSON object, in a body not in pre-order.
    pub fn trusting_tags(mut body: Body) -> Result<Indexed, String> {
        if !body.is_preorder() {
            body = Body::from_documents(&body.into_documents()?);
        }
        body.sort_scores();
        let n = body.len();
        let mut ends: Vec<u32> = (1..=n as u32).collect();
        for i in (0..n).rev() {
            if let Some(p) = body.parents[i] {
                ends[p as usize] = ends[p as usize].max(ends[i]);
            }
        }
        let mut floats = Vec::with_capacity(n + 1);
        let mut at = 0;
        floats.push(0);
        for &dim in &body.embedding_dims {
            at += dim as usize;
            floats.push(at);
        }
        let mut scores = Vec::with_capacity(n + 1);
        let mut k = 0;
        for i in 0..=n {
            while k < body.scores.len() && (body.scores[k].doc as usize) < i {
                k += 1;
            }
            scores.push(k);
        }
        Ok(Indexed {
            body,
            ends,
            floats,
            scores,
        })
    }

    /// The top-level documents, by index.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let root = (i < self.body.len()).then_some(i)?;
            i = self.ends[root] as usize;
            Some(root)
        })
    }

    /// Document `i` and its descendants.
    pub fn subtree(&self, i: usize) -> Range<usize> {
        i..self.ends[i] as usize
    }

    /// Document `i`'s chunks (with their subtrees) and its matches (each
    /// match by index).
    pub fn children(&self, i: usize) -> (Range<usize>, impl Iterator<Item = usize> + '_) {
        let end = self.ends[i] as usize;
        let mut c = i + 1;
        while c < end && self.body.relations[c] == Relation::Chunk {
            c = self.ends[c] as usize;
        }
        let mut m = c;
        let matches = std::iter::from_fn(move || {
            let at = (m < end).then_some(m)?;
            m = self.ends[at] as usize;
            Some(at)
        });
        (i + 1..c, matches)
    }

    /// Document `i`'s scores, by name.
    pub fn scores_of(&self, i: usize) -> &[super::Score] {
        &self.body.scores[self.scores[i]..self.scores[i + 1]]
    }

    /// Document `i`'s embedding (empty for none).
    pub fn embedding_of(&self, i: usize) -> &[f32] {
        &self.body.embeddings[self.floats[i]..self.floats[i + 1]]
    }
}

impl Body {
    /// Appends documents `docs` of `from`: whole subtrees, one after
    /// another. Those whose parent comes before `docs` (chunks or matches
    /// of one document) hang under `parent` here; roots stay roots.
    pub fn extend_from(&mut self, from: &Indexed, docs: Range<usize>, parent: Option<u32>) {
        let body = &from.body;
        let offset = self.len() as u32;
        let start = docs.start as u32;
        self.ids.extend_range(&body.ids, docs.clone());
        self.parents
            .extend(body.parents[docs.clone()].iter().map(|p| match *p {
                Some(p) if p >= start => Some(p - start + offset),
                Some(_) => parent,
                None => None,
            }));
        self.relations
            .extend_from_slice(&body.relations[docs.clone()]);
        self.texts.extend_range(&body.texts, docs.clone());
        self.blobs.extend_range(&body.blobs, docs.clone());
        self.uris.extend_range(&body.uris, docs.clone());
        self.mime_types.extend_range(&body.mime_types, docs.clone());
        self.tags.extend_range(&body.tags, docs.clone());
        self.embedding_dims
            .extend_from_slice(&body.embedding_dims[docs.clone()]);
        self.embeddings
            .extend_from_slice(&body.embeddings[from.floats[docs.start]..from.floats[docs.end]]);
        self.scores.extend(
            body.scores[from.scores[docs.start]..from.scores[docs.end]]
                .iter()
                .map(|s| super::Score {
                    doc: s.doc - start + offset,
                    ..s.clone()
                }),
        );
    }
}
