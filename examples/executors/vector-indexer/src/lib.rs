//! `vector-indexer`: a stateful, in-memory, brute-force cosine vector index.
//!
//! - `with:`
//!   - `workspace` (default `"/workspace"`): where the state files live.
//!   - `top_k` (default 10): matches per query when the request does not say.
//!   - `durable` (default: the host's durable mode, `RuntimeArgs::durable`): log every
//!     change durably before answering.
//!   - `compact_log_bytes` (default 64 MiB): `dump` folds the log into a new
//!     snapshot once it is larger than this (0: at every dump, which makes
//!     durable mode rewrite the whole index per request).
//!   - `traversal` (default `"roots"`): which documents `/index` and `/delete`
//!     act on: `"roots"`, the request's documents, or `"chunks"`, their chunks
//!     (Jina's `traversal_paths: ['c']`: index the sentences a segmenter made).
//!     Queries in `/search` are always the request's documents.
//! - Endpoints:
//!   - `/index`: store each top-level document (id, text, tags, embedding);
//!     an existing id is replaced. Every document needs an embedding of the
//!     index's dimension (the first one stored sets it), else the whole request
//!     fails with `bad-request` naming the id. Returns the documents unchanged.
//!   - `/search`: for each top-level document with an embedding, replaces its
//!     `matches` with the `top_k` most cosine-similar stored documents, best first,
//!     equal scores in id order. A match has the stored id, text and tags, and
//!     `scores["cosine"]`; its embedding only with `return_embeddings: true`.
//!   - `/delete`: remove the documents' ids (unknown ids are ignored). Returns
//!     the documents unchanged.
//!   - `/export`: the stored documents themselves (id, text, tags, embedding),
//!     `limit` (default 1,000) of them from row `offset` (default 0), in row
//!     order; the request's documents are ignored. Fewer than `limit` means
//!     the end. With `/import`, this is how `jina-wasm reshard` moves an index
//!     to another number of shards (docs/stateful.md).
//!   - `/import`: store the request's documents as `/index` does with
//!     `traversal: roots`, whatever the configured traversal: what `/export`
//!     returned goes back in as it was.
//!   - `/index` and `/import` are refused (the `capacity` error kind, a
//!     message that names the limit) when the index would pass 40% of
//!     the host's memory limit (`RuntimeArgs::memory_limit`; its vectors counted
//!     twice), before anything changes: past the limit the instance would
//!     trap and lose its memory.
//!   - A read-only executor (`RuntimeArgs::read_only`, set by the host for
//!     `--read-only`) answers `/index`, `/delete` and `/import` with a
//!     `read-only` error instead of changing its memory.
//!   - anything else (`/status`, ...): the documents pass through.
//!   - Parameters: `top_k` and `return_embeddings` (`/search`), `durable` and
//!     `traversal` (`/index`, `/delete`; override the `with:` values).
//!
//! # State
//!
//! Two files in the workspace:
//!
//! - `vector-index.snapshot`, the whole index, written by `dump` with one atomic
//!   replace (`state::write_atomic`). Little-endian throughout:
//!
//!   ```text
//!   magic   "JVIX"               4 bytes
//!   version u32 = 1
//!   count   u32                  documents
//!   dim     u32                  floats per embedding (0 when count is 0)
//!   count x { id_len u32, id (UTF-8),
//!             text_len u32 (0xFFFFFFFF: no text), text (UTF-8),
//!             tags_len u32 (0: no tags), tags (JSON object text) }
//!   count x dim x f32            the embeddings, in record order
//!   crc32   u32                  CRC-32 (zlib) of every byte before it
//!   ```
//!
//! - `vector-index.log`, an `AppendLog` of changes since that snapshot. Each
//!   record is `op u8` then, for `1` (upsert), the record fields above followed by
//!   `dim u32` and `dim x f32`; for `2` (delete), `id_len u32, id`. In durable
//!   mode `/index` and `/delete` append their changes and fsync before applying
//!   and answering; other changes live in memory until `dump`. Under the host's
//!   durable mode (`RuntimeArgs::durable`) they append without the fsync, and `dump`,
//!   which the host calls before answering, makes one fsync for every request
//!   it commits.
//!
//! `init` loads the snapshot, then replays the log up to its first torn record.
//! `dump` writes the snapshot, then empties the log: a crash in between replays
//! changes the snapshot already holds, which is harmless (upserts and deletes
//! are idempotent). When durable, every change is already in the log, so
//! `dump` syncs it and folds it into a new snapshot only once it holds more
//! than `compact_log_bytes`: a write costs one append and (shared with the
//! other requests of the host's group commit) one fsync, not a rewrite of
//! the index. A missing workspace starts an empty index (logged as a
//! warning); a read-only one loads normally, and `dump` or a durable change then
//! fails with `read-only`.

mod codec;
mod index;

use std::path::PathBuf;

use jina_guest_sdk::log;
use jina_guest_sdk::prelude::*;
use jina_guest_sdk::state::{self, AppendLog};

use codec::Op;
use index::{Entry, Index};

const SNAPSHOT_FILE: &str = "vector-index.snapshot";
const LOG_FILE: &str = "vector-index.log";
/// When durable, `dump` rewrites the snapshot only past this much log
/// (`compact_log_bytes` in `with:`).
pub const COMPACT_LOG_BYTES: u64 = 64 << 20;
/// Documents per `/export` page unless the request says.
const EXPORT_PAGE: usize = 1000;
/// The share of the memory limit (`jina.memory_limit`) the index may fill,
/// as `Index::memory` counts it (its vectors twice: the buffer's slack).
/// The rest: the old buffer while the vectors' buffer grows (a reallocation
/// briefly holds both), a request in flight (its documents arrive, are
/// converted and returned) and `dump`, which encodes the whole index into
/// one buffer. An index refused at this share still searches, dumps and
/// stops within the limit (tests/all/faults.rs).
const INDEX_SHARE: f64 = 0.4;

struct VectorIndexer {
    /// Holds `SNAPSHOT_FILE` and `LOG_FILE`.
    workspace: PathBuf,
    /// Matches per query unless a request says otherwise.
    top_k: usize,
    /// Log changes durably unless a request says otherwise.
    durable: bool,
    /// Act on the request's documents or on their chunks, unless a request says otherwise.
    traversal: Traversal,
    /// The host preopened the workspace read-only: refuse changes.
    read_only: bool,
    index: Index,
    /// Opened at the first durable change or dump, so a read-only workspace
    /// only fails when something must be written.
    log: Option<AppendLog>,
    /// Some change since the last snapshot is only in memory (not logged).
    unlogged: bool,
    /// The host's durable mode: `dump` (before every answer) syncs the log,
    /// so a change does not sync it itself.
    sync_in_dump: bool,
    /// Appended to the log but not yet synced.
    unsynced: bool,
    /// `dump` rewrites the snapshot once the log is larger than this.
    compact_log_bytes: u64,
    /// The host's memory limit for this instance (`jina.memory_limit`).
    memory_limit: Option<u64>,
}

impl Executor for VectorIndexer {
    fn init(config: Config) -> Result<Self> {
        let workspace = PathBuf::from(config.get_or("workspace", "/workspace".to_string())?);
        let top_k = config.get_or("top_k", 10)?;
        let runtime = config.runtime_args().clone();
        let durable = config.get_or("durable", runtime.durable)?;
        let read_only = runtime.read_only;
        let compact_log_bytes = config.get_or("compact_log_bytes", COMPACT_LOG_BYTES)?;
        let traversal = Traversal::parse(config.get_or("traversal", "roots".to_string())?)
            .map_err(Error::bad_config)?;

        let mut index = Index::default();
        let mut replayed = 0;
        if workspace.is_dir() {
            let snapshot = workspace.join(SNAPSHOT_FILE);
            if let Some(bytes) = state::read_if_exists(&snapshot)? {
                index =
                    codec::decode_snapshot(&bytes).map_err(|e| e.context(snapshot.display()))?;
            }
            let log_path = workspace.join(LOG_FILE);
            for (i, record) in AppendLog::replay(&log_path)?.iter().enumerate() {
                let context = || format!("{} record {i}", log_path.display());
                let op = codec::decode_op(record).map_err(|e| e.context(context()))?;
                apply(&mut index, op).map_err(|e| Error::io(e.message).context(context()))?;
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
            "vector index loaded",
            &[
                ("documents", &index.len().to_string()),
                ("dim", &index.dim().unwrap_or(0).to_string()),
                ("replayed", &replayed.to_string()),
            ],
        );
        Ok(VectorIndexer {
            workspace,
            top_k,
            durable,
            traversal,
            read_only,
            index,
            log: None,
            unlogged: false,
            sync_in_dump: runtime.durable,
            unsynced: false,
            compact_log_bytes,
            memory_limit: runtime.memory_limit,
        })
    }

    fn routes() -> Routes<Self> {
        Routes::new()
            .on("/index", Self::index)
            .doc("Store the documents' embeddings (replacing same ids); refused with `capacity` when full")
            .on("/search", Self::search)
            .doc("Add each document's `top_k` nearest stored documents as matches (cosine)")
            .on("/delete", Self::delete)
            .doc("Remove the documents with these ids")
            .on("/export", Self::export)
            .doc("Return `limit` stored documents from row `offset` (for re-sharding)")
            .on("/import", Self::import)
            .doc("Store documents that /export returned, as they were")
    }

    fn dump(&mut self) -> Result<()> {
        if self.unsynced
            && let Some(log) = &mut self.log
        {
            log.sync()?;
            self.unsynced = false;
        }
        // Every change since the snapshot is in the synced log.
        if !self.unlogged
            && self
                .log
                .as_ref()
                .is_none_or(|log| log.size() <= self.compact_log_bytes)
        {
            return Ok(());
        }
        let snapshot = codec::encode_snapshot(&self.index);
        state::write_atomic(self.workspace.join(SNAPSHOT_FILE), &snapshot)?;
        // Everything logged is in the snapshot now.
        let log_path = self.workspace.join(LOG_FILE);
        if self.log.is_none() && log_path.exists() {
            self.log = Some(AppendLog::open(&log_path)?);
        }
        if let Some(log) = &mut self.log {
            log.truncate()?;
        }
        self.unlogged = false;
        Ok(())
    }
}

impl VectorIndexer {
    fn index(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let targets = self.targets(&docs, params)?;
        self.store(&targets, params)?;
        Ok(docs)
    }

    fn import(&mut self, docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        self.store(&docs.iter().collect::<Vec<_>>(), params)?;
        Ok(docs)
    }

    /// Stores `targets` (`/index`, `/import`), all or none.
    fn store(&mut self, targets: &[&Document], params: &Params) -> Result<()> {
        self.writable()?;
        // Check the whole request before changing anything.
        let mut dim = self.index.dim();
        let mut ops = Vec::with_capacity(targets.len());
        for doc in targets {
            let Some(embedding) = &doc.embedding else {
                return Err(Error::bad_request(format!(
                    "doc {:?} has no embedding: /index stores embeddings",
                    doc.id
                )));
            };
            match dim {
                Some(d) if d != embedding.len() => {
                    return Err(Error::bad_request(format!(
                        "doc {:?} has a {}-dim embedding, the index holds {d}-dim ones",
                        doc.id,
                        embedding.len()
                    )));
                }
                _ => dim = Some(embedding.len()),
            }
            finite(&format!("doc {:?}", doc.id), embedding)?;
            ops.push(Op::Upsert(Entry {
                id: doc.id.clone(),
                text: doc.text.clone(),
                tags: (!doc.tags.is_empty()).then(|| Value::Object(doc.tags.clone()).to_string()),
                embedding: embedding.clone(),
            }));
        }
        self.check_capacity(&ops)?;
        self.commit(ops, params)
    }

    /// Refuses a write that would take the index past its share of the
    /// memory limit (`INDEX_SHARE`), before anything changes: past the
    /// limit the instance would trap and lose what it holds in memory.
    fn check_capacity(&self, ops: &[Op]) -> Result<()> {
        let Some(limit) = self.memory_limit else {
            return Ok(());
        };
        let adding: usize = ops
            .iter()
            .map(|op| match op {
                Op::Upsert(entry) => Index::entry_memory(entry),
                Op::Delete(_) => 0,
            })
            .sum();
        let budget = (limit as f64 * INDEX_SHARE) as usize;
        let holds = self.index.memory();
        if holds.saturating_add(adding) <= budget {
            return Ok(());
        }
        let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
        Err(Error::capacity(format!(
            "the index holds {} documents ({:.1} MiB); these {} would take it past {:.1} MiB, the {}% of \
             its memory limit of {:.0} MiB (--memory-hwm) an index may fill (the rest is for requests, growth and \
             dumps); nothing was stored. Add shards, raise --memory-hwm, or delete documents",
            self.index.len(),
            mib(holds),
            ops.len(),
            mib(budget),
            (INDEX_SHARE * 100.0) as u32,
            mib(limit as usize)
        )))
    }

    fn export(&mut self, _docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let offset = params.get_or("offset", 0usize)?;
        let limit = params.get_or("limit", EXPORT_PAGE)?;
        let end = offset.saturating_add(limit).min(self.index.len());
        Ok((offset.min(end)..end)
            .map(|row| stored(self.index.row(row), true))
            .collect())
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::read_only(
                "this index is read-only (--read-only): it serves /search and /export; write through the Pea that owns the workspace",
            ));
        }
        Ok(())
    }

    fn search(&mut self, mut docs: Vec<Document>, params: &Params) -> Result<Vec<Document>> {
        let top_k = params.get_or("top_k", self.top_k)?;
        let return_embeddings = params.get_or("return_embeddings", false)?;
        for doc in &mut docs {
            let Some(query) = &doc.embedding else {
                continue;
            };
            if let Some(dim) = self.index.dim()
                && query.len() != dim
            {
                return Err(Error::bad_request(format!(
                    "query {:?} has a {}-dim embedding, the index holds {dim}-dim ones",
                    doc.id,
                    query.len()
                )));
            }
            finite(&format!("query {:?}", doc.id), query)?;
            let hits = self.index.search(query, top_k);
            doc.matches = hits
                .into_iter()
                .map(|(row, score)| {
                    let mut m = stored(self.index.row(row), return_embeddings);
                    m.set_score("cosine", f64::from(score));
                    m
                })
                .collect();
        }
        Ok(docs)
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

    /// The documents `/index` and `/delete` act on.
    fn targets<'a>(&self, docs: &'a [Document], params: &Params) -> Result<Vec<&'a Document>> {
        let traversal = match params.get::<String>("traversal")? {
            Some(name) => Traversal::parse(name).map_err(Error::bad_request)?,
            None => self.traversal,
        };
        Ok(match traversal {
            Traversal::Roots => docs.iter().collect(),
            Traversal::Chunks => docs.iter().flat_map(|d| &d.chunks).collect(),
        })
    }

    /// Apply checked `ops`, logging them durably first when asked to.
    fn commit(&mut self, ops: Vec<Op>, params: &Params) -> Result<()> {
        if params.get_or("durable", self.durable)? && !ops.is_empty() {
            let log = match &mut self.log {
                Some(log) => log,
                None => self
                    .log
                    .insert(AppendLog::open(self.workspace.join(LOG_FILE))?),
            };
            let records: Vec<Vec<u8>> = ops.iter().map(codec::encode_op).collect();
            log.append_all(records.iter().map(Vec::as_slice))?;
            if self.sync_in_dump {
                self.unsynced = true;
            } else {
                log.sync()?;
            }
        } else if !ops.is_empty() {
            self.unlogged = true;
        }
        for op in ops {
            apply(&mut self.index, op)?;
        }
        Ok(())
    }
}

/// A stored document as a result: id, text, tags, and the embedding if asked.
fn stored(row: index::Row<'_>, embedding: bool) -> Document {
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

/// Which documents of a request are stored or deleted.
#[derive(Clone, Copy)]
enum Traversal {
    Roots,
    Chunks,
}

impl Traversal {
    fn parse(name: String) -> std::result::Result<Self, String> {
        match name.as_str() {
            "roots" | "r" => Ok(Traversal::Roots),
            "chunks" | "c" => Ok(Traversal::Chunks),
            other => Err(format!(
                "traversal {other:?} is neither \"roots\" nor \"chunks\""
            )),
        }
    }
}

/// Refuses an embedding with a NaN or an infinity: its cosine with anything
/// is NaN, which would rank it anywhere (first, in a descending sort).
fn finite(what: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(bad) => Err(Error::bad_request(format!(
            "{what} has a non-finite value at position {bad} of its embedding"
        ))),
        None => Ok(()),
    }
}

/// Apply one change. Fails only on a dimension mismatch (a corrupt log).
fn apply(index: &mut Index, op: Op) -> Result<()> {
    match op {
        Op::Upsert(entry)
            if !entry.embedding.is_empty() && index.accepts_dim(entry.embedding.len()) =>
        {
            index.upsert(entry)
        }
        Op::Upsert(entry) => {
            return Err(Error::internal(format!(
                "doc {:?}: {}-dim embedding does not fit the index",
                entry.id,
                entry.embedding.len()
            )));
        }
        Op::Delete(id) => {
            index.remove(&id);
        }
    }
    Ok(())
}

export_executor!(VectorIndexer);

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vector-indexer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start(dir: &std::path::Path, extra: Value) -> VectorIndexer {
        let mut config = json!({ "workspace": dir });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        VectorIndexer::init(Config::parse(&config.to_string()).unwrap()).unwrap()
    }

    fn docs() -> Vec<Document> {
        vec![
            Document::new("x")
                .with_text("ex")
                .with_embedding(vec![1.0, 0.0])
                .with_tag("n", 1),
            Document::new("y").with_embedding(vec![0.0, 1.0]),
            Document::new("xy").with_embedding(vec![1.0, 1.0]),
        ]
    }

    fn search(ix: &mut VectorIndexer, q: Vec<f32>, params: Value) -> Vec<(String, f64)> {
        let params = Params::parse(&params.to_string()).unwrap();
        let out = ix
            .search(vec![Document::new("q").with_embedding(q)], &params)
            .unwrap();
        out[0]
            .matches
            .iter()
            .map(|m| (m.id.clone(), m.score("cosine").unwrap()))
            .collect()
    }

    #[test]
    fn dump_then_init_restores_the_index() {
        let dir = workspace("dump");
        let mut ix = start(&dir, json!({}));
        ix.index(docs(), &Params::default()).unwrap();
        let hits = search(&mut ix, vec![1.0, 0.1], json!({"top_k": 2}));
        assert_eq!(
            hits.iter().map(|h| h.0.as_str()).collect::<Vec<_>>(),
            ["x", "xy"]
        );
        ix.dump().unwrap();

        let mut ix = start(&dir, json!({}));
        assert_eq!(ix.index.len(), 3);
        let params = Params::parse(r#"{"top_k": 1, "return_embeddings": true}"#).unwrap();
        let out = ix
            .search(
                vec![Document::new("q").with_embedding(vec![1.0, 0.0])],
                &params,
            )
            .unwrap();
        let m = &out[0].matches[0];
        assert_eq!(
            (m.id.as_str(), m.text.as_deref(), &m.tags["n"]),
            ("x", Some("ex"), &json!(1))
        );
        assert_eq!(m.embedding.as_deref(), Some(&[1.0, 0.0][..]));
        assert_eq!(m.score("cosine"), Some(1.0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durable_changes_survive_without_dump() {
        let dir = workspace("durable");
        let mut ix = start(&dir, json!({"durable": true}));
        ix.index(docs(), &Params::default()).unwrap();
        ix.delete(vec![Document::new("y")], &Params::default())
            .unwrap();
        drop(ix); // a crash: no dump

        let mut ix = start(&dir, json!({}));
        assert_eq!(ix.index.len(), 2);
        assert_eq!(search(&mut ix, vec![0.0, 1.0], json!({}))[0].0, "xy");

        // Nothing unlogged: dump has nothing to do.
        ix.dump().unwrap();
        assert_eq!(AppendLog::replay(dir.join(LOG_FILE)).unwrap().len(), 4);
        // A change kept in memory: dump folds everything into the snapshot and
        // empties the log.
        ix.delete(vec![Document::new("x")], &Params::default())
            .unwrap();
        ix.dump().unwrap();
        assert!(AppendLog::replay(dir.join(LOG_FILE)).unwrap().is_empty());
        assert_eq!(start(&dir, json!({})).index.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn export_pages_through_everything_and_import_takes_it_back() {
        let dir = workspace("export");
        let mut ix = start(&dir, json!({"traversal": "chunks"}));
        let parent = docs()
            .into_iter()
            .fold(Document::new("p"), Document::with_chunk);
        ix.index(vec![parent], &Params::default()).unwrap();
        let page = |ix: &mut VectorIndexer, offset: usize| {
            let params = Params::parse(&json!({"offset": offset, "limit": 2}).to_string()).unwrap();
            ix.export(vec![], &params).unwrap()
        };
        let mut all = page(&mut ix, 0);
        assert_eq!(all.len(), 2);
        all.extend(page(&mut ix, 2));
        assert!(page(&mut ix, 3).is_empty());
        assert_eq!(
            all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["x", "y", "xy"]
        );
        assert_eq!(all[0].tags["n"], json!(1));

        // `/import` stores the exported documents themselves, not their chunks.
        let other = workspace("import");
        let mut copy = start(&other, json!({"traversal": "chunks"}));
        copy.import(all.clone(), &Params::default()).unwrap();
        assert_eq!(copy.export(vec![], &Params::default()).unwrap(), all);
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn a_read_only_index_refuses_changes() {
        let dir = workspace("ro");
        let mut ix = start(&dir, json!({"jina": {"read_only": true}}));
        for result in [
            ix.index(docs(), &Params::default()),
            ix.import(docs(), &Params::default()),
            ix.delete(docs(), &Params::default()),
        ] {
            assert_eq!(result.unwrap_err().kind, ErrorKind::ReadOnly);
        }
        assert_eq!(ix.index.len(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn in_durable_mode_dump_only_compacts_a_large_log() {
        let dir = workspace("durable-dump");
        let mut ix = start(&dir, json!({"jina": {"durable": true}}));
        ix.index(docs(), &Params::default()).unwrap();
        ix.dump().unwrap();
        assert!(
            !dir.join(SNAPSHOT_FILE).exists(),
            "a small log is not folded"
        );
        drop(ix); // a crash
        assert_eq!(start(&dir, json!({})).index.len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_requests_name_the_doc_and_change_nothing() {
        let dir = workspace("bad");
        let mut ix = start(&dir, json!({}));
        let mut batch = docs();
        batch.push(Document::new("no-vec"));
        let err = ix.index(batch, &Params::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(err.message.contains("no-vec"), "{}", err.message);
        assert_eq!(ix.index.len(), 0);

        ix.index(docs(), &Params::default()).unwrap();
        let err = ix
            .index(
                vec![Document::new("3d").with_embedding(vec![1.0; 3])],
                &Params::default(),
            )
            .unwrap_err();
        assert!(err.message.contains("3d"), "{}", err.message);
        let params = Params::default();
        let err = ix.search(vec![Document::new("q").with_embedding(vec![1.0])], &params);
        assert_eq!(err.unwrap_err().kind, ErrorKind::BadRequest);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_workspace_starts_empty_and_dump_fails_clearly() {
        let dir = std::env::temp_dir().join("vector-indexer-does-not-exist");
        let mut ix = start(&dir, json!({}));
        assert_eq!(ix.index.len(), 0);
        ix.index(docs(), &Params::default()).unwrap();
        let err = ix.dump().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.contains(SNAPSHOT_FILE), "{}", err.message);
    }

    #[test]
    fn snapshot_of_100k_docs_is_one_buffer() {
        let mut ix = Index::default();
        for i in 0..100_000 {
            let embedding = (0..128).map(|j| ((i * 31 + j) % 97) as f32).collect();
            ix.upsert(Entry {
                id: format!("doc-{i}"),
                text: None,
                tags: None,
                embedding,
            });
        }
        let started = std::time::Instant::now();
        let bytes = codec::encode_snapshot(&ix);
        let encoded = started.elapsed();
        let id_bytes: usize = (0..100_000).map(|i| format!("doc-{i}").len()).sum();
        assert_eq!(
            bytes.len(),
            16 + 100_000 * 12 + id_bytes + 100_000 * 128 * 4 + 4
        );
        let back = codec::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.len(), 100_000);
        eprintln!(
            "encode {encoded:?}, decode {:?}",
            started.elapsed() - encoded
        );
    }
}
