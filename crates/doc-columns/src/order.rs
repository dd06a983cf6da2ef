//! The canonical form: pre-order, each document's scores by name. In it each
//! document's subtree is one contiguous range of every column, which is what
//! lets the host split and merge columns by copying ranges.

use crate::{Columns, Relation, Score};

impl Columns {
    /// Whether every document comes right after its parent's earlier
    /// children's subtrees, chunks before matches: the order
    /// [`Columns::from_documents`] writes.
    pub fn is_preorder(&self) -> bool {
        // The open ancestors of the current document, each with whether a
        // match of it came yet.
        let mut open: Vec<(u32, bool)> = Vec::new();
        for (i, (&parent, &relation)) in self.parents.iter().zip(&self.relations).enumerate() {
            if let Some(p) = parent {
                while open.last().is_some_and(|&(top, _)| top != p) {
                    open.pop();
                }
                let Some(top) = open.last_mut() else {
                    return false;
                };
                match relation {
                    Relation::Chunk if top.1 => return false,
                    Relation::Match => top.1 = true,
                    _ => {}
                }
            } else {
                open.clear();
            }
            open.push((i as u32, false));
        }
        true
    }

    /// Sorts the scores by document and name, keeping the last of one name
    /// for one document (as a document's map of scores does).
    pub fn sort_scores(&mut self) {
        fn key(s: &Score) -> (u32, &str) {
            (s.doc, s.name.as_str())
        }
        if self.scores.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
            return;
        }
        self.scores.sort_by(|a, b| key(a).cmp(&key(b)));
        let mut kept: Vec<Score> = Vec::with_capacity(self.scores.len());
        for score in self.scores.drain(..) {
            match kept.last_mut() {
                Some(last) if key(last) == key(&score) => *last = score,
                _ => kept.push(score),
            }
        }
        self.scores = kept;
    }
}
