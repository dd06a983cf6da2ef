//! The in-memory index: one row per stored document, vectors in one contiguous
//! buffer, brute-force cosine search.

use std::cmp::Ordering;
use std::collections::HashMap;

use jina_guest_sdk::embedding::{dot, norm};

/// One stored document, as indexed and as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: String,
    pub text: Option<String>,
    /// The tags as JSON object text, `None` when there are none.
    pub tags: Option<String>,
    pub embedding: Vec<f32>,
}

/// Rows are dense (`0..len`); deleting moves the last row into the hole.
#[derive(Debug, Default)]
pub struct Index {
    /// Length of every vector; 0 until the first insert, free again when empty.
    dim: usize,
    ids: Vec<String>,
    texts: Vec<Option<String>>,
    tags: Vec<Option<String>>,
    /// `ids.len() * dim` values, row-major.
    vectors: Vec<f32>,
    /// The norm of each row, so a search computes one dot product per row.
    norms: Vec<f32>,
    /// id -> row.
    rows: HashMap<String, usize>,
    /// Bytes of every row's strings: id (twice: `ids` and `rows`), text, tags.
    string_bytes: usize,
}

/// Memory a row costs beyond its vector and strings: three `String`s or
/// `Option<String>`s, a norm, a hash map entry and its share of the table.
const ROW_OVERHEAD: usize = 128;

fn strings(id: &str, text: &Option<String>, tags: &Option<String>) -> usize {
    2 * id.len() + text.as_ref().map_or(0, String::len) + tags.as_ref().map_or(0, String::len)
}

/// A row borrowed from the index.
pub struct Row<'a> {
    pub id: &'a str,
    pub text: Option<&'a str>,
    pub tags: Option<&'a str>,
    pub embedding: &'a [f32],
}

impl Index {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// About how much memory the index may take: its vectors counted twice
    /// (the buffer grows by doubling, so it can be twice their size), its
    /// strings and its rows. Counted from the rows, not the buffer's current
    /// size, so the same index always gets the same figure.
    pub fn memory(&self) -> usize {
        self.vectors.len() * 4 * 2 + self.ids.len() * ROW_OVERHEAD + self.string_bytes
    }

    /// [`memory`](Self::memory) of storing `entry` as a new row.
    pub fn entry_memory(entry: &Entry) -> usize {
        entry.embedding.len() * 4 * 2 + ROW_OVERHEAD + strings(&entry.id, &entry.text, &entry.tags)
    }

    /// The vector length, `None` while the index is empty.
    pub fn dim(&self) -> Option<usize> {
        (!self.ids.is_empty()).then_some(self.dim)
    }

    /// Whether `entry` fits: any length when empty, else the index's.
    pub fn accepts_dim(&self, dim: usize) -> bool {
        self.ids.is_empty() || dim == self.dim
    }

    pub fn row(&self, row: usize) -> Row<'_> {
        Row {
            id: &self.ids[row],
            text: self.texts[row].as_deref(),
            tags: self.tags[row].as_deref(),
            embedding: &self.vectors[row * self.dim..(row + 1) * self.dim],
        }
    }

    /// Insert or replace. The caller checks [`accepts_dim`](Self::accepts_dim).
    pub fn upsert(&mut self, entry: Entry) {
        assert!(
            self.accepts_dim(entry.embedding.len()),
            "dimension checked by the caller"
        );
        self.dim = entry.embedding.len();
        let n = norm(&entry.embedding);
        match self.rows.get(&entry.id) {
            Some(&row) => {
                self.string_bytes -= strings(&self.ids[row], &self.texts[row], &self.tags[row]);
                self.string_bytes += strings(&entry.id, &entry.text, &entry.tags);
                self.texts[row] = entry.text;
                self.tags[row] = entry.tags;
                self.vectors[row * self.dim..(row + 1) * self.dim]
                    .copy_from_slice(&entry.embedding);
                self.norms[row] = n;
            }
            None => {
                self.string_bytes += strings(&entry.id, &entry.text, &entry.tags);
                self.rows.insert(entry.id.clone(), self.ids.len());
                self.ids.push(entry.id);
                self.texts.push(entry.text);
                self.tags.push(entry.tags);
                self.vectors.extend_from_slice(&entry.embedding);
                self.norms.push(n);
            }
        }
    }

    /// Remove `id`; whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.rows.remove(id) else {
            return false;
        };
        self.string_bytes -= strings(&self.ids[row], &self.texts[row], &self.tags[row]);
        let last = self.ids.len() - 1;
        if row != last {
            let (dim, moved) = (self.dim, &self.ids[last]);
            *self.rows.get_mut(moved).expect("every id has a row") = row;
            self.vectors
                .copy_within(last * dim..(last + 1) * dim, row * dim);
        }
        self.ids.swap_remove(row);
        self.texts.swap_remove(row);
        self.tags.swap_remove(row);
        self.norms.swap_remove(row);
        self.vectors.truncate(last * self.dim);
        true
    }

    /// The `k` rows most cosine-similar to `query` (of length `dim`), best first;
    /// equal scores in id order. A zero vector scores 0 against everything.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        if k == 0 || self.ids.is_empty() {
            return Vec::new();
        }
        let query_norm = norm(query);
        let mut scored: Vec<(usize, f32)> = self
            .vectors
            .chunks_exact(self.dim)
            .zip(&self.norms)
            .map(|(row, &n)| {
                let denominator = query_norm * n;
                if denominator == 0.0 {
                    0.0
                } else {
                    dot(query, row) / denominator
                }
            })
            .enumerate()
            .collect();
        let order = |a: &(usize, f32), b: &(usize, f32)| -> Ordering {
            b.1.total_cmp(&a.1)
                .then_with(|| self.ids[a.0].cmp(&self.ids[b.0]))
        };
        if k < scored.len() {
            scored.select_nth_unstable_by(k - 1, order);
            scored.truncate(k);
        }
        scored.sort_unstable_by(order);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, v: &[f32]) -> Entry {
        Entry {
            id: id.into(),
            text: Some(id.to_uppercase()),
            tags: None,
            embedding: v.to_vec(),
        }
    }

    fn ids(index: &Index, query: &[f32], k: usize) -> Vec<String> {
        index
            .search(query, k)
            .iter()
            .map(|&(r, _)| index.row(r).id.to_string())
            .collect()
    }

    #[test]
    fn upsert_remove_search() {
        let mut index = Index::default();
        index.upsert(entry("a", &[1.0, 0.0]));
        index.upsert(entry("b", &[0.0, 1.0]));
        index.upsert(entry("c", &[1.0, 1.0]));
        index.upsert(entry("d", &[1.0, 1.0])); // ties with c
        assert_eq!(index.len(), 4);
        assert!(!index.accepts_dim(3));

        assert_eq!(ids(&index, &[1.0, 0.9], 3), ["c", "d", "a"]);
        assert_eq!(ids(&index, &[1.0, 0.9], 10), ["c", "d", "a", "b"]);

        index.upsert(entry("a", &[0.0, 2.0])); // replace
        assert_eq!(index.len(), 4);
        assert_eq!(ids(&index, &[0.0, 1.0], 2), ["a", "b"]);

        assert!(index.remove("a"));
        assert!(!index.remove("a"));
        assert_eq!(index.row(index.rows["d"]).embedding, &[1.0, 1.0]);
        assert_eq!(ids(&index, &[0.0, 1.0], 1), ["b"]);
        for id in ["b", "c", "d"] {
            index.remove(id);
        }
        assert!(index.accepts_dim(3), "an empty index takes any dimension");
    }
}
