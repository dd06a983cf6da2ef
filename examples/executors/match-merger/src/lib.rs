//! `match-merger`: a reducer for sharded search results.
//!
//! Each shard answers the same query documents with its own matches; the input
//! holds every shard's copy (the same id several times). The output has one
//! document per distinct id, in first-seen order: the first copy, with the matches
//! of all copies merged:
//!
//! - deduplicated by match id, keeping the copy with the best score;
//! - sorted by the score, best first, equal scores in id order (a match without
//!   the score sorts last);
//! - cut to `top_k`.
//!
//! Documents without matches pass through the same way (one per id).
//!
//! - `with:`
//!   - `score` (default `"cosine"`): the score to rank by, higher is better.
//!   - `top_k` (default 10): matches kept per document.
//! - Endpoints: every endpoint (the default route).
//! - Parameters: `top_k` overrides `with.top_k`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use jina_guest_sdk::prelude::*;

struct MatchMerger {
    score: String,
    top_k: usize,
}

impl Executor for MatchMerger {
    fn init(config: Config) -> Result<Self> {
        Ok(MatchMerger {
            score: config.get_or("score", "cosine".to_string())?,
            top_k: config.get_or("top_k", 10)?,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .default(Self::merge)
            .doc("Merge each document's matches from every shard, keeping the best `top_k`")
    }
}

impl MatchMerger {
    fn merge(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let top_k = params.get_or("top_k", self.top_k)?;

        // Group by id in first-seen order; the first copy carries the rest.
        let mut merged: Vec<Document> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for mut doc in docs {
            match position.entry(doc.id.clone()) {
                Entry::Occupied(at) => merged[*at.get()].matches.append(&mut doc.matches),
                Entry::Vacant(slot) => {
                    slot.insert(merged.len());
                    merged.push(doc);
                }
            }
        }

        for doc in &mut merged {
            doc.matches = self.rank(std::mem::take(&mut doc.matches), top_k);
        }
        Ok(merged)
    }

    /// Best copy of each match id, best first, at most `top_k`.
    fn rank(&self, matches: Vec<Document>, top_k: usize) -> Vec<Document> {
        let score = |d: &Document| d.score(&self.score).unwrap_or(f64::NEG_INFINITY);
        let mut best: Vec<Document> = Vec::with_capacity(matches.len());
        let mut position: HashMap<String, usize> = HashMap::new();
        for m in matches {
            match position.entry(m.id.clone()) {
                Entry::Occupied(at) => {
                    let kept = &mut best[*at.get()];
                    if score(&m) > score(kept) {
                        *kept = m;
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(best.len());
                    best.push(m);
                }
            }
        }
        best.sort_by(|a, b| score(b).total_cmp(&score(a)).then_with(|| a.id.cmp(&b.id)));
        best.truncate(top_k);
        best
    }
}

export_executor!(MatchMerger);

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: &str, matches: &[(&str, f64)]) -> Document {
        let mut doc = Document::new(id);
        doc.matches = matches
            .iter()
            .map(|&(m, s)| Document::new(m).with_score("cosine", s))
            .collect();
        doc
    }

    fn summary(docs: &[Document]) -> Vec<(String, Vec<(String, f64)>)> {
        docs.iter()
            .map(|d| {
                let m = d
                    .matches
                    .iter()
                    .map(|m| (m.id.clone(), m.score("cosine").unwrap()))
                    .collect();
                (d.id.clone(), m)
            })
            .collect()
    }

    #[test]
    fn merges_shards_per_query() {
        let mut merger = MatchMerger {
            score: "cosine".into(),
            top_k: 3,
        };
        let input = vec![
            query("q1", &[("a", 0.9), ("b", 0.5)]),
            query("q2", &[("z", 0.1)]),
            query("q1", &[("c", 0.7), ("b", 0.8), ("d", 0.7)]),
            Document::new("plain"),
            Document::new("plain").with_text("second copy is dropped"),
        ];
        let out = merger.merge(input, &Params::default()).unwrap();
        let s = |id: &str, score| (id.to_string(), score);
        assert_eq!(
            summary(&out),
            vec![
                (
                    "q1".to_string(),
                    vec![s("a", 0.9), s("b", 0.8), s("c", 0.7)]
                ),
                ("q2".to_string(), vec![s("z", 0.1)]),
                ("plain".to_string(), vec![]),
            ]
        );
        assert_eq!(out[2].text, None);

        let params = Params::parse(r#"{"top_k": 1}"#).unwrap();
        let out = merger
            .merge(vec![query("q", &[("x", 0.1), ("y", 0.2)])], &params)
            .unwrap();
        assert_eq!(summary(&out)[0].1, vec![s("y", 0.2)]);
    }
}
