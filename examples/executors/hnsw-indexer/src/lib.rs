//! `hnsw-indexer`: a stateful approximate nearest-neighbour index (HNSW),
//! in memory, persisted in its workspace. docs/hnsw.md is the user's guide;
//! this is the reference.
//!
//! - `with:`
//!   - `metric` (default `"cosine"`): `"cosine"`, `"dot"` or `"l2"`.
//!   - `dim` (default: set by the first document stored): floats per embedding.
//!   - `m` (default 16, 2..=128): links per node on the upper levels, twice as
//!     many on level 0. More: better recall, more memory, slower inserts.
//!   - `ef_construction` (default 200): beam width while inserting.
//!   - `ef_search` (default 64): beam width while searching, unless a request
//!     says (`ef`); at least `top_k` is used.
//!   - `top_k` (default 10), `workspace` (default `"/workspace"`), `durable`,
//!     `compact_log_bytes` (default 16 MiB: replaying a log means inserting
//!     again, so it is kept shorter than vector-indexer's) and `traversal`
//!     (`"roots"` or `"chunks"`), as in vector-indexer.
//! - Endpoints (the same contract as vector-indexer's, docs/stateful.md):
//!   - `/index`: store each document (id, text, tags, embedding); an existing
//!     id is replaced. Every document needs a finite, non-empty embedding of the
//!     index's dimension, else the whole request fails with `bad-request`
//!     naming the id, and nothing is stored.
//!   - `/update`: as `/index`, for ids already stored; other ids are skipped
//!     (and counted in a log line), as Jina's indexers do.
//!   - `/search`: for each top-level document with an embedding, `matches`
//!     becomes its `top_k` nearest stored documents, best first, equal scores
//!     in id order, each with `scores[<metric>]`: the cosine similarity, the dot
//!     product, or minus the Euclidean distance (higher is better for all
//!     three, as the Pod's merge of shards expects). `ef` widens the search;
//!     `return_embeddings: true` adds the stored embeddings.
//!   - `/delete`: remove the documents' ids (unknown ids are ignored). The
//!     nodes stay in the graph as tombstones (searched through, never
//!     returned) until the next snapshot compacts them away.
//!   - `/export` (`offset`, `limit`) and `/import`: as vector-indexer's, so
//!     `jina-wasm reshard` moves this index between shard counts.
//!   - `/stats`: one document, `hnsw-stats`, whose tags say `documents`,
//!     `tombstones`, `dim`, `metric`, `m`, `ef_construction`, `ef_search`,
//!     `index_bytes` (the index's own structures) and `linear_memory_bytes`
//!     (the guest's whole memory, which the host's `memory_hwm` limits).
//!   - A read-only executor (`--read-only`) answers `/index`, `/update`,
//!     `/delete` and `/import` with `read-only`.
//!   - anything else: the documents pass through.
//!   - Counts (`top_k`, `ef`, `offset`, `limit`) may be sent as doubles
//!     (`3.0`), as Jina's Python client does.
//!
//! # Why not a crate
//!
//! Measured against this executor's needs (docs/hnsw.md has the details):
//! `instant-distance` compiles for wasm32-wasip2 but builds an immutable map
//! in one batch (no insert, no delete: every `/index` would rebuild the
//! graph); `hnsw_rs` does not compile for wasm32-wasip2 (its `mmap-rs`
//! dependency) and cannot delete; `usearch` is C++ and would need a WASI C++
//! toolchain in the build. None persists in a form that fits the
//! workspace's snapshot-plus-log contract.
//! The graph is written here instead: `graph.rs`.
//!
//! # State
//!
//! Two files in the workspace, written through `state::Journal` (the policy
//! vector-indexer follows, docs/stateful.md):
//!
//! - `hnsw-index.snapshot`, the whole compacted index, little-endian:
//!
//!   ```text
//!   magic   "JHNS"               4 bytes
//!   version u32 = 2              (version 1: below)
//!   metric  u32                  0 cosine, 1 dot, 2 l2
//!   dim     u32
//!   m       u32
//!   count   u32                  nodes (= live documents)
//!   entry   u32                  the entry node (0xFFFFFFFF: empty)
//!   count x { id_len u32, id, text_len u32 (0xFFFFFFFF: none), text,
//!             tags_len u32 (0: none), tags (JSON object text) }
//!   count x level u8
//!   count x node block           dim x f32 the embedding, u32 1/|embedding|
//!                                (cosine; recomputed on load), u32 0 (the
//!                                tombstone flag: a snapshot is compacted),
//!                                u32 level-0 link count, 2m x u32 places
//!                                (the first `count` are the links): the
//!                                graph's own layout, read page by page
//!                                straight into place
//!   for each node, level x (1 + m) u32   its links on levels 1..=level
//!   xxh3    u64                  XXH3-64 (seed 0) of every byte before it
//!   ```
//!
//!   Version 1 (written before 2026-12-06's load work, still read) has, in
//!   place of the node blocks, `count x dim x f32` (the embeddings) then
//!   `count x (1 + 2m) u32` (the level-0 lists), and ends with a CRC-32 (as
//!   zlib's, u32) instead of the XXH3-64.
//!
//!   Loading it reads the graph as it was, front to back in 8 MiB pieces
//!   straight into the node pages: no rebuild, and no copy of the whole
//!   file in memory. Both versions are read; version 2 is written (so the
//!   first snapshot after an upgrade, once a change makes one due, replaces
//!   a version-1 file). Any other version is refused, naming the file and
//!   the version.
//! - `hnsw-index.log`, the changes since that snapshot: vector-indexer's
//!   record format (`1` upsert with the document, `2` delete with the id),
//!   replayed (re-inserted) by `init`.
//!
//! A snapshot is written when `Journal` says one is due (a change only in
//! memory, or a log past `compact_log_bytes`) or when a tenth of the nodes
//! are tombstones; every snapshot compacts the tombstones away first.

mod codec;
mod graph;
mod store;

use std::path::PathBuf;

use jina_guest_sdk::Traversal;
use jina_guest_sdk::log;
use jina_guest_sdk::prelude::*;
use jina_guest_sdk::state::{AppendLog, Journal};

use codec::Op;
use graph::{MAX_DIM, Metric, Shape};
use store::{Entry, Store};

const SNAPSHOT_FILE: &str = "hnsw-index.snapshot";
const LOG_FILE: &str = "hnsw-index.log";
/// `compact_log_bytes` unless `with:` says.
pub const COMPACT_LOG_BYTES: u64 = 16 << 20;
/// Documents per `/export` page unless the request says.
const EXPORT_PAGE: usize = 1000;
/// `with:` defaults.
const M: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const EF_SEARCH: usize = 64;
/// Bounds that keep a configuration from exhausting memory per node (and
/// `graph::MAX_DIM`).
const MAX_M: usize = 128;

struct HnswIndexer {
    /// Matches per query unless a request says otherwise.
    top_k: usize,
    /// Beam width of a search unless a request says otherwise.
    ef_search: usize,
    /// `with.dim`, when given: every vector must have it.
    dim: Option<usize>,
    /// Act on the request's documents or on their chunks, unless a request says otherwise.
    traversal: Traversal,
    /// The host preopened the workspace read-only: refuse changes.
    read_only: bool,
    store: Store,
    journal: Journal,
}

impl Executor for HnswIndexer {
    fn init(config: Config) -> Result<Self> {
        let workspace = PathBuf::from(config.get_or("workspace", "/workspace".to_string())?);
        let metric = Metric::parse(&config.get_or("metric", "cosine".to_string())?)
            .map_err(|e| Error::bad_config(format!("with.metric: {e}")))?;
        let m = config.get_count_or("m", M)?;
        if !(2..=MAX_M).contains(&m) {
            return Err(Error::bad_config(format!(
                "with.m = {m}: must be between 2 and {MAX_M}"
            )));
        }
        let ef_construction = config.get_count_or("ef_construction", EF_CONSTRUCTION)?;
        let ef_search = config.get_count_or("ef_search", EF_SEARCH)?;
        for (key, value) in [
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ] {
            if value == 0 {
                return Err(Error::bad_config(format!("with.{key} must be at least 1")));
            }
        }
        let dim = config.get_count("dim")?;
        if let Some(d) = dim
            && !(1..=MAX_DIM).contains(&d)
        {
            return Err(Error::bad_config(format!(
                "with.dim = {d}: must be between 1 and {MAX_DIM}"
            )));
        }
        let top_k = config.get_count_or("top_k", 10)?;
        let traversal = Traversal::parse(&config.get_or("traversal", "roots".to_string())?)
            .map_err(|e| Error::bad_config(format!("with.traversal: {e}")))?;
        let read_only = config.runtime_args().read_only;
        let journal = Journal::new(
            &workspace,
            SNAPSHOT_FILE,
            LOG_FILE,
            &config,
            COMPACT_LOG_BYTES,
        )?;
        let shape = Shape {
            metric,
            m,
            ef_construction,
        };

        let mut store = Store::new(shape);
        let mut replayed = 0;
        if workspace.is_dir() {
            // The snapshot is read as a stream, not through `Journal::load`,
            // which would hold the whole file in memory beside the index.
            let path = journal.snapshot_path();
            let context = |e: Error| e.context(path.display().to_string());
            match std::fs::File::open(path) {
                Ok(file) => {
                    let len = file
                        .metadata()
                        .map_err(|e| context(Error::io(format!("cannot read its size: {e}"))))?
                        .len();
                    store = codec::read_snapshot(file, len, shape).map_err(context)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(context(Error::io(format!("cannot open: {e}")))),
            }
            let records = AppendLog::replay(journal.log_path())?;
            if let (Some(want), Some(have)) = (dim, store.dim())
                && want != have
            {
                return Err(Error::bad_config(format!(
                    "with.dim = {want}, but the index in the workspace holds {have}-dim vectors"
                )));
            }
            for (i, record) in records.iter().enumerate() {
                let context = || format!("{} record {i}", journal.log_path().display());
                let op = codec::decode_op(record).map_err(|e| e.context(context()))?;
                // A log's vector is checked as a request's was (a NaN one
                // would be served as the nearest of all).
                if let Op::Upsert(entry) = &op {
                    check_vector(&entry.id, &entry.embedding, &mut dim.or(store.dim()))
                        .map_err(|e| Error::io(e.message).context(context()))?;
                }
                apply(&mut store, dim, op).map_err(|e| Error::io(e.message).context(context()))?;
                replayed += 1;
            }
        } else {
            log::warn(format!(
                "workspace {} is not available: starting with an empty index; dump will fail",
                workspace.display()
            ));
        }
        log::log(
            log::Level::Info,
            "hnsw index loaded",
            &[
                ("documents", &store.len().to_string()),
                ("dim", &store.dim().or(dim).unwrap_or(0).to_string()),
                ("metric", metric.name()),
                ("replayed", &replayed.to_string()),
                ("tombstones", &store.graph().tombstones().to_string()),
            ],
        );
        Ok(HnswIndexer {
            top_k,
            ef_search,
            dim,
            traversal,
            read_only,
            store,
            journal,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .on("/index", Self::index)
            .on("/update", Self::update)
            .on("/search", Self::search)
            .on("/delete", Self::delete)
            .on("/export", Self::export)
            .on("/import", Self::import)
            .on("/stats", Self::stats)
    }

    fn dump(&mut self) -> Result<()> {
        let graph = self.store.graph();
        // Tombstones cost search time and memory: past a tenth of the
        // nodes, compact even when the log alone would not call for it.
        let force = graph.tombstones() > 0 && graph.tombstones() * 10 >= graph.slots();
        let store = &mut self.store;
        self.journal.dump(force, || {
            store.compact();
            codec::encode_snapshot(store)
        })?;
        Ok(())
    }
}

impl HnswIndexer {
    fn index(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let targets = self.targets(&docs, params)?;
        self.store_all(&targets, params, "/index")?;
        Ok(docs)
    }

    fn import(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        self.store_all(&docs.iter().collect::<Vec<_>>(), params, "/import")?;
        Ok(docs)
    }

    fn update(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let targets = self.targets(&docs, params)?;
        let (known, unknown): (Vec<&Document>, Vec<&Document>) = targets
            .into_iter()
            .partition(|d| self.store.contains(&d.id));
        if !unknown.is_empty() {
            log::warn(format!(
                "/update skipped {} documents whose ids are not stored, e.g. {:?}",
                unknown.len(),
                unknown[0].id
            ));
        }
        self.store_all(&known, params, "/update")?;
        Ok(docs)
    }

    /// Stores `targets`, all or none.
    fn store_all(&mut self, targets: &[&Document], params: &Params, endpoint: &str) -> Result<()> {
        self.writable()?;
        // Check the whole request before changing anything.
        let mut dim = self.dim.or(self.store.dim());
        let mut ops = Vec::with_capacity(targets.len());
        for doc in targets {
            let Some(embedding) = &doc.embedding else {
                return Err(Error::bad_request(format!(
                    "doc {:?} has no embedding: {endpoint} stores embeddings",
                    doc.id
                )));
            };
            check_vector(&doc.id, embedding, &mut dim)?;
            ops.push(Op::Upsert(Entry {
                id: doc.id.clone(),
                text: doc.text.clone(),
                tags: (!doc.tags.is_empty()).then(|| Value::Object(doc.tags.clone()).to_string()),
                embedding: embedding.clone(),
            }));
        }
        self.commit(ops, params)
    }

    fn delete(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        self.writable()?;
        let ops = self
            .targets(&docs, params)?
            .into_iter()
            .map(|d| Op::Delete(d.id.clone()))
            .collect();
        self.commit(ops, params)?;
        Ok(docs)
    }

    fn search(&mut self, mut docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let top_k = params.get_count_or("top_k", self.top_k)?;
        let ef = params.get_count_or("ef", self.ef_search)?;
        let return_embeddings = params.get_or("return_embeddings", false)?;
        let metric = self.store.graph().shape().metric.name();
        for doc in &mut docs {
            let Some(query) = &doc.embedding else {
                continue;
            };
            let mut dim = self.dim.or(self.store.dim());
            check_vector(&format!("query {}", doc.id), query, &mut dim)?;
            doc.matches = self
                .store
                .search(query, top_k, ef)
                .into_iter()
                .map(|(slot, score)| {
                    let mut m = stored(self.store.row(slot), return_embeddings);
                    m.set_score(metric, score);
                    m
                })
                .collect();
        }
        Ok(docs)
    }

    fn export(&mut self, _docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let offset = params.get_count_or("offset", 0)?;
        let limit = params.get_count_or("limit", EXPORT_PAGE)?;
        Ok(self
            .store
            .live()
            .skip(offset)
            .take(limit)
            .map(|slot| stored(self.store.row(slot), true))
            .collect())
    }

    /// One document, `hnsw-stats`, whose tags describe the index.
    fn stats(&mut self, _docs: Vec<Document>, _params: &Params) -> Result<Vec<Document>> {
        let graph = self.store.graph();
        let shape = graph.shape();
        // The guest's linear memory: what the host's memory limit counts
        // (it only grows; the allocator's free space included).
        #[cfg(target_arch = "wasm32")]
        let linear = core::arch::wasm32::memory_size::<0>() as u64 * 65_536;
        #[cfg(not(target_arch = "wasm32"))]
        let linear = 0u64;
        Ok(vec![
            Document::new("hnsw-stats")
                .with_tag("documents", self.store.len())
                .with_tag("tombstones", graph.tombstones())
                .with_tag("dim", self.store.dim().or(self.dim).unwrap_or(0))
                .with_tag("metric", shape.metric.name())
                .with_tag("m", shape.m)
                .with_tag("ef_construction", shape.ef_construction)
                .with_tag("ef_search", self.ef_search)
                .with_tag("index_bytes", self.store.heap_bytes())
                .with_tag("linear_memory_bytes", linear),
        ])
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::read_only(
                "this index is read-only (--read-only): it serves /search and /export; write through the Pea that owns the workspace",
            ));
        }
        Ok(())
    }

    /// The documents `/index`, `/update` and `/delete` act on.
    fn targets<'a>(&self, docs: &'a [Document], params: &Params) -> Result<Vec<&'a Document>> {
        let traversal = match params.get::<String>("traversal")? {
            Some(name) => Traversal::parse(&name)
                .map_err(|e| Error::bad_request(format!("parameters.traversal: {e}")))?,
            None => self.traversal,
        };
        Ok(traversal.select(docs))
    }

    /// Apply checked `ops`, recorded in the journal first.
    fn commit(&mut self, ops: Vec<Op>, params: &Params) -> Result<()> {
        let durable = params.get_or("durable", self.journal.durable)?;
        let records: Vec<Vec<u8>> = ops.iter().map(codec::encode_op).collect();
        self.journal.record(&records, durable)?;
        for op in ops {
            apply(&mut self.store, self.dim, op)?;
        }
        Ok(())
    }
}

/// Checks one embedding against the index's dimension `dim`, which the first
/// vector of a request sets when the index has none yet.
fn check_vector(what: &str, v: &[f32], dim: &mut Option<usize>) -> Result<()> {
    let what = if what.starts_with("query ") {
        what.to_string()
    } else {
        format!("doc {what:?}")
    };
    if v.is_empty() || v.len() > MAX_DIM {
        return Err(Error::bad_request(format!(
            "{what} has a {}-dim embedding: between 1 and {MAX_DIM} are accepted",
            v.len()
        )));
    }
    if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::bad_request(format!(
            "{what} has a non-finite value at position {bad} of its embedding"
        )));
    }
    match *dim {
        Some(d) if d != v.len() => Err(Error::bad_request(format!(
            "{what} has a {}-dim embedding, the index holds {d}-dim ones",
            v.len()
        ))),
        _ => {
            *dim = Some(v.len());
            Ok(())
        }
    }
}

/// Apply one change. Fails only on a vector that does not fit (a corrupt log).
fn apply(store: &mut Store, dim: Option<usize>, op: Op) -> Result<()> {
    match op {
        Op::Upsert(entry) => {
            let want = dim.or(store.dim());
            if entry.embedding.is_empty() || want.is_some_and(|d| d != entry.embedding.len()) {
                return Err(Error::internal(format!(
                    "doc {:?}: {}-dim embedding does not fit the index",
                    entry.id,
                    entry.embedding.len()
                )));
            }
            store.upsert(entry);
        }
        Op::Delete(id) => {
            store.remove(&id);
        }
    }
    Ok(())
}

/// A stored document as a result: id, text, tags, and the embedding if asked.
fn stored(row: store::Row<'_>, embedding: bool) -> Document {
    let mut doc = Document::new(row.id);
    doc.text = row.text.map(Into::into);
    if let Some(Ok(Value::Object(tags))) = row.tags.map(serde_json::from_str) {
        doc.tags = tags;
    }
    if embedding {
        doc.embedding = Some(row.embedding.to_vec());
    }
    doc
}

export_executor!(HnswIndexer);

#[cfg(test)]
mod tests {
    use super::*;
    use jina_guest_sdk::state::AppendLog;

    fn workspace(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hnsw-indexer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start(dir: &std::path::Path, extra: Value) -> HnswIndexer {
        let mut config = json!({ "workspace": dir });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        HnswIndexer::init(Config::parse(&config.to_string()).unwrap()).unwrap()
    }

    fn params(v: Value) -> Params {
        Params::parse(&v.to_string()).unwrap()
    }

    /// `n` documents on a 2-d circle: d{i} at angle i degrees.
    fn circle(n: usize) -> Vec<Document> {
        (0..n)
            .map(|i| {
                let a = (i as f32).to_radians();
                Document::new(format!("d{i}"))
                    .with_text(format!("t{i}"))
                    .with_embedding(vec![a.cos(), a.sin()])
            })
            .collect()
    }

    fn search(ix: &mut HnswIndexer, q: Vec<f32>, p: Value) -> Vec<(String, f64)> {
        let out = ix
            .search(vec![Document::new("q").with_embedding(q)], &params(p))
            .unwrap();
        out[0]
            .matches
            .iter()
            .map(|m| (m.id.clone(), m.scores.values().next().unwrap().value))
            .collect()
    }

    fn ids(hits: &[(String, f64)]) -> Vec<&str> {
        hits.iter().map(|h| h.0.as_str()).collect()
    }

    #[test]
    fn index_update_delete_search_and_restore() {
        let dir = workspace("basic");
        let mut ix = start(&dir, json!({"m": 4}));
        ix.index(circle(360), &Params::default()).unwrap();
        let hits = search(&mut ix, vec![1.0, 0.01], json!({"top_k": 3.0}));
        // 0.57 degrees: d1 (1) is nearer than d0 (0), then d2 (2) than d359.
        assert_eq!(ids(&hits), ["d1", "d0", "d2"]);
        assert!((hits[0].1 - 1.0).abs() < 1e-3);

        // d0 moves to 90 degrees; d1 goes; an unknown id is not created.
        let moved = vec![
            Document::new("d0").with_embedding(vec![0.0, 1.0]),
            Document::new("new").with_embedding(vec![1.0, 0.0]),
        ];
        ix.update(moved, &Params::default()).unwrap();
        ix.delete(vec![Document::new("d1")], &Params::default())
            .unwrap();
        assert_eq!(
            ids(&search(&mut ix, vec![1.0, 0.01], json!({"top_k": 2}))),
            ["d2", "d359"]
        );
        assert_eq!(
            search(&mut ix, vec![0.0, 1.0], json!({"top_k": 2}))[0].0,
            "d0"
        );
        assert_eq!(ix.store.len(), 359);
        assert_eq!(ix.store.graph().tombstones(), 2);

        ix.dump().unwrap();
        assert_eq!(ix.store.graph().tombstones(), 0, "a snapshot compacts");
        let mut back = start(&dir, json!({"m": 4}));
        assert_eq!(back.store.len(), 359);
        assert_eq!(
            ids(&search(&mut back, vec![1.0, 0.01], json!({"top_k": 2}))),
            ["d2", "d359"]
        );
        let p = params(json!({"top_k": 1, "return_embeddings": true}));
        let out = back
            .search(vec![Document::new("q").with_embedding(vec![0.0, 1.0])], &p)
            .unwrap();
        assert_eq!(
            out[0].matches[0].embedding.as_deref(),
            Some(&[0.0, 1.0][..])
        );
        assert_eq!(
            out[0].matches[0].text, None,
            "/update replaced the whole document"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_metric_scores_higher_for_nearer() {
        let dir = workspace("metrics");
        for (metric, best) in [("cosine", 1.0), ("dot", 4.0), ("l2", 0.0)] {
            let mut ix = start(&dir, json!({"metric": metric}));
            let docs = vec![
                Document::new("near").with_embedding(vec![2.0, 0.0]),
                Document::new("far").with_embedding(vec![-1.0, 0.5]),
            ];
            ix.index(docs, &Params::default()).unwrap();
            let hits = search(&mut ix, vec![2.0, 0.0], json!({}));
            assert_eq!(ids(&hits), ["near", "far"], "{metric}");
            assert!((hits[0].1 - best).abs() < 1e-6, "{metric}: {hits:?}");
            assert!(hits[0].1 > hits[1].1);
            let m = ix
                .search(
                    vec![Document::new("q").with_embedding(vec![1.0, 0.0])],
                    &Params::default(),
                )
                .unwrap();
            assert!(m[0].matches[0].score(metric).is_some(), "{metric}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durable_changes_survive_without_dump() {
        let dir = workspace("durable");
        let mut ix = start(&dir, json!({"durable": true}));
        ix.index(circle(50), &Params::default()).unwrap();
        ix.delete(vec![Document::new("d7")], &Params::default())
            .unwrap();
        drop(ix); // a crash: no dump
        let mut ix = start(&dir, json!({}));
        assert_eq!(ix.store.len(), 49);
        assert_eq!(AppendLog::replay(dir.join(LOG_FILE)).unwrap().len(), 51);
        let a = 7.2f32.to_radians();
        assert_eq!(
            search(&mut ix, vec![a.cos(), a.sin()], json!({"top_k": 1}))[0].0,
            "d8"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_log_record_with_a_vector_no_request_could_store_is_refused() {
        // The log is read back as the snapshot is: a NaN vector would be
        // served as the nearest of all, a 70,000-dim one past MAX_DIM.
        for (embedding, says) in [
            (vec![1.0, f32::NAN], "non-finite value at position 1"),
            (
                vec![0.5; 70_000],
                "70000-dim embedding: between 1 and 65536",
            ),
        ] {
            let dir = workspace("badlog");
            let mut log = AppendLog::open(dir.join(LOG_FILE)).unwrap();
            let op = Op::Upsert(Entry {
                id: "x".into(),
                text: None,
                tags: None,
                embedding,
            });
            log.append(&codec::encode_op(&op)).unwrap();
            drop(log);
            let config = json!({ "workspace": dir });
            let err = HnswIndexer::init(Config::parse(&config.to_string()).unwrap())
                .err()
                .unwrap();
            assert!(err.message.contains(says), "{}", err.message);
            assert!(
                err.message.contains("hnsw-index.log record 0"),
                "{}",
                err.message
            );
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn export_pages_skip_tombstones_and_import_takes_them_back() {
        let dir = workspace("export");
        let mut ix = start(&dir, json!({"traversal": "chunks"}));
        let parent = circle(5)
            .into_iter()
            .fold(Document::new("p"), Document::with_chunk);
        ix.index(vec![parent], &Params::default()).unwrap();
        ix.delete(
            vec![Document::new("p").with_chunk(Document::new("d1"))],
            &Params::default(),
        )
        .unwrap();
        let page = |ix: &mut HnswIndexer, offset: usize| {
            ix.export(vec![], &params(json!({"offset": offset, "limit": 2.0})))
                .unwrap()
        };
        let mut all = page(&mut ix, 0);
        all.extend(page(&mut ix, 2));
        assert!(page(&mut ix, 4).is_empty());
        assert_eq!(
            all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["d0", "d2", "d3", "d4"]
        );

        let other = workspace("import");
        let mut copy = start(&other, json!({"traversal": "chunks"}));
        copy.import(all.clone(), &Params::default()).unwrap();
        assert_eq!(copy.export(vec![], &Params::default()).unwrap(), all);
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn bad_input_is_named_and_changes_nothing() {
        let dir = workspace("bad");
        let mut ix = start(&dir, json!({"dim": 2}));
        let mut batch = circle(3);
        batch.push(Document::new("no-vec"));
        let err = ix.index(batch, &Params::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("no-vec"), "{}", err.message);
        for (doc, needle) in [
            (Document::new("3d").with_embedding(vec![1.0; 3]), "3-dim"),
            (
                Document::new("nan").with_embedding(vec![f32::NAN, 0.0]),
                "non-finite",
            ),
            (Document::new("empty").with_embedding(vec![]), "0-dim"),
        ] {
            let err = ix.index(vec![doc], &Params::default()).unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        }
        assert_eq!(ix.store.len(), 0);
        let err = ix.search(
            vec![Document::new("q").with_embedding(vec![1.0])],
            &Params::default(),
        );
        assert!(err.unwrap_err().message.contains("query q"));
        let err = ix
            .search(circle(1), &params(json!({"top_k": -1})))
            .unwrap_err();
        assert!(err.message.contains("parameters.top_k"), "{}", err.message);
        let err = ix
            .index(circle(1), &params(json!({"traversal": "x"})))
            .unwrap_err();
        assert!(
            err.message.contains("parameters.traversal"),
            "{}",
            err.message
        );

        for (with, needle) in [
            (json!({"metric": "hamming"}), "with.metric"),
            (json!({"m": 1}), "with.m"),
            (json!({"ef_search": 0}), "with.ef_search"),
            (json!({"dim": 0}), "with.dim"),
        ] {
            let mut config = with.as_object().unwrap().clone();
            config.insert("workspace".into(), json!(dir));
            let err = HnswIndexer::init(Config::from_map(config)).err().unwrap();
            assert_eq!(err.kind, ErrorKind::BadConfig);
            assert!(err.message.contains(needle), "{}", err.message);
        }
        // A snapshot built one way is not read another way.
        ix.index(circle(3), &Params::default()).unwrap();
        ix.dump().unwrap();
        let config = json!({"workspace": dir, "metric": "l2"});
        let err = HnswIndexer::init(Config::parse(&config.to_string()).unwrap())
            .err()
            .unwrap();
        assert!(err.message.contains("metric cosine"), "{}", err.message);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_read_only_index_refuses_changes() {
        let dir = workspace("ro");
        let mut ix = start(&dir, json!({"jina": {"read_only": true}}));
        for result in [
            ix.index(circle(2), &Params::default()),
            ix.update(circle(2), &Params::default()),
            ix.import(circle(2), &Params::default()),
            ix.delete(circle(2), &Params::default()),
        ] {
            assert_eq!(result.unwrap_err().kind, ErrorKind::ReadOnly);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
