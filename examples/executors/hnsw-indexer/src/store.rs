//! The documents beside the graph: id, text and tags by slot, and the slot
//! of every live id.

use std::collections::HashMap;

use crate::graph::{Graph, Shape, level_for};

/// One stored document, as indexed and as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: String,
    pub text: Option<String>,
    /// The tags as JSON object text, `None` when there are none.
    pub tags: Option<String>,
    pub embedding: Vec<f32>,
}

/// A slot borrowed from the store.
pub struct Row<'a> {
    pub id: &'a str,
    pub text: Option<&'a str>,
    pub tags: Option<&'a str>,
    pub embedding: &'a [f32],
}

#[derive(Debug)]
pub struct Store {
    graph: Graph,
    /// By slot; a deleted slot's fields are emptied.
    ids: Vec<String>,
    texts: Vec<Option<String>>,
    tags: Vec<Option<String>>,
    /// Live id -> slot.
    slots: HashMap<String, u32>,
}

impl Store {
    pub fn new(shape: Shape) -> Self {
        Store {
            graph: Graph::new(shape),
            ids: Vec::new(),
            texts: Vec::new(),
            tags: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// A store over a decoded graph and its slots' `(id, text, tags)`.
    ///
    /// # Errors
    ///
    /// A count that differs from the graph's, or an id twice.
    pub fn from_parts(
        graph: Graph,
        metas: Vec<(String, Option<String>, Option<String>)>,
    ) -> Result<Self, String> {
        if metas.len() != graph.slots() {
            return Err("document count differs from the graph's".into());
        }
        let mut store = Store::new(graph.shape());
        store.graph = graph;
        store.slots.reserve(metas.len());
        store.ids.reserve(metas.len());
        store.texts.reserve(metas.len());
        store.tags.reserve(metas.len());
        for (slot, (id, text, tags)) in metas.into_iter().enumerate() {
            if store.slots.insert(id.clone(), slot as u32).is_some() {
                return Err(format!("id {id:?} is stored twice"));
            }
            store.ids.push(id);
            store.texts.push(text);
            store.tags.push(tags);
        }
        Ok(store)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The vector length, `None` before the first insert.
    pub fn dim(&self) -> Option<usize> {
        Some(self.graph.dim()).filter(|&d| d > 0)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.slots.contains_key(id)
    }

    pub fn row(&self, slot: u32) -> Row<'_> {
        let s = slot as usize;
        Row {
            id: &self.ids[s],
            text: self.texts[s].as_deref(),
            tags: self.tags[s].as_deref(),
            embedding: self.graph.vector(slot),
        }
    }

    /// Live slots in slot order: the order `/export` pages through.
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.graph.slots() as u32).filter(|&s| !self.graph.is_deleted(s))
    }

    /// Insert, or replace (the old node becomes a tombstone). The caller
    /// checks the dimension.
    pub fn upsert(&mut self, entry: Entry) {
        self.remove(&entry.id);
        let level = level_for(&entry.id, self.graph.shape().m);
        let slot = self.graph.insert(&entry.embedding, level);
        debug_assert_eq!(slot as usize, self.ids.len());
        self.slots.insert(entry.id.clone(), slot);
        self.ids.push(entry.id);
        self.texts.push(entry.text);
        self.tags.push(entry.tags);
    }

    /// Remove `id`; whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.slots.remove(id) else {
            return false;
        };
        self.graph.delete(slot);
        let s = slot as usize;
        self.ids[s] = String::new();
        self.texts[s] = None;
        self.tags[s] = None;
        true
    }

    /// Drop the tombstones (see [`Graph::compact`]).
    pub fn compact(&mut self) {
        if self.graph.tombstones() == 0 {
            return;
        }
        let renumber = self.graph.compact();
        fn keep<T>(v: &mut Vec<T>, renumber: &[u32]) {
            let mut slot = 0;
            v.retain(|_| {
                slot += 1;
                renumber[slot - 1] != u32::MAX
            });
        }
        keep(&mut self.ids, &renumber);
        keep(&mut self.texts, &renumber);
        keep(&mut self.tags, &renumber);
        for slot in self.slots.values_mut() {
            *slot = renumber[*slot as usize];
        }
    }

    /// The `k` nearest live documents: `(slot, score)`, best first, equal
    /// scores in id order.
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<(u32, f64)> {
        let metric = self.graph.shape().metric;
        let mut hits: Vec<(u32, f64)> = self
            .graph
            .search(query, k, ef)
            .into_iter()
            .map(|(slot, dist)| (slot, metric.score(dist)))
            .collect();
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.ids[a.0 as usize].cmp(&self.ids[b.0 as usize]))
        });
        hits.truncate(k);
        hits
    }

    /// Bytes of memory held: the graph, the documents' fields and the id map.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.ids.iter().map(|s| 24 + s.capacity()).sum::<usize>()
            + self
                .texts
                .iter()
                .chain(&self.tags)
                .map(|s| 24 + s.as_ref().map_or(0, String::capacity))
                .sum::<usize>();
        // hashbrown: the (String, u32) pair plus one control byte per bucket.
        let map = self.slots.capacity() * (24 + 4 + 1)
            + self.slots.keys().map(String::capacity).sum::<usize>();
        self.graph.heap_bytes() + strings + map
    }
}
