//! Section `hnsw1m` (issue 19; only when named: `BENCH_SECTIONS=hnsw1m make
//! bench`; 22-24 minutes on two shared cores): hnsw-indexer at a million 384-d
//! vectors (MiniLM's size) across shards, against vector-indexer (exact,
//! brute force) on the same data and the same shards.
//!
//! Each shard is an executor of its own (one instance, its own workspace and
//! `memory_hwm`) on a thread of its own, as the Peas of a Pod are; a search
//! goes to every shard at once and the answers are merged by score, highest
//! first, as the Pod's default merge does with `polling: {/search: all}`
//! (the ZeroMQ hops a real Pod adds are measured in the `pod` section, not
//! here). Document `i` goes to shard `i % shards`.
//!
//! Knobs (environment): `HNSW1M_DOCUMENTS` (1,000,000), `HNSW1M_SHARDS` (4),
//! `HNSW1M_MEMORY` (bytes per shard, 1.5 GiB), `HNSW1M_QUERIES` (1,000,
//! for the latency of hnsw-indexer), `HNSW1M_EXACT_QUERIES` (200: queries
//! searched by vector-indexer too, whose answers are the exact truth for
//! recall), `HNSW1M_EF_CONSTRUCTION` (200), `HNSW1M_GUEST` (the
//! hnsw_indexer.wasm to run; default the built one: a copy lets a long run
//! go on while the guest is rebuilt).
//!
//! Restart alone, again and again (`HNSW1M_KEEP=DIR`): a run with it keeps
//! its workspaces (the shards' snapshots) and the exact answers in `DIR`;
//! a later run with the same `DIR` and knobs builds nothing and only
//! restarts the shards from those snapshots, `HNSW1M_RESTARTS` times (3),
//! alternating with `HNSW1M_BASELINE_GUEST` when set (another
//! hnsw_indexer.wasm: the same snapshots loaded by two guests in alternate
//! rounds, so a loaded machine weighs on both alike); recall is checked
//! after every restart.

use std::sync::mpsc;

use super::*;

const DIM: usize = 384;
const K: usize = 10;
const M: usize = 16;
const EFS: [usize; 4] = [32, 64, 128, 256];
const DEFAULT_EF: usize = 64;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a good 64-bit hash, so vector `i` is the same whatever order
/// (or thread) makes it.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Standard normal numbers from a seed (Box-Muller).
struct Gauss(u64);

impl Gauss {
    fn uniform(&mut self) -> f64 {
        self.0 = mix(self.0);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// Clustered Gaussian vectors, normalised: 1,000 cluster centres in a
/// 32-d latent space (each point its centre plus Gaussian spread), projected
/// to 384-d by one fixed Gaussian matrix, plus a little isotropic noise, then
/// scaled to length 1 (as sentence embeddings are). A low intrinsic
/// dimension, as real embeddings have; isotropic 384-d noise would be a case
/// no approximate index is built for. `base` separates the data (0) from
/// the queries (1 << 40); the matrix and centres are shared.
struct Generator {
    projection: Vec<f32>,
    centres: Vec<f32>,
}

const LATENT: usize = 32;
const CLUSTERS: usize = 1000;

impl Generator {
    fn new() -> Self {
        let mut g = Gauss(7);
        let scale = 1.0 / (LATENT as f32).sqrt();
        Generator {
            projection: (0..LATENT * DIM).map(|_| g.next() * scale).collect(),
            centres: (0..CLUSTERS * LATENT).map(|_| g.next()).collect(),
        }
    }

    fn vector(&self, key: u64, out: &mut [f32]) {
        let mut g = Gauss(mix(key ^ 0x5151_5151));
        let c = (mix(key) % CLUSTERS as u64) as usize;
        let latent: Vec<f32> = self.centres[c * LATENT..(c + 1) * LATENT]
            .iter()
            .map(|x| x + 0.6 * g.next())
            .collect();
        out.fill(0.0);
        for (l, x) in latent.iter().enumerate() {
            for (o, p) in out.iter_mut().zip(&self.projection[l * DIM..(l + 1) * DIM]) {
                *o += x * p;
            }
        }
        for o in out.iter_mut() {
            *o += 0.1 * g.next();
        }
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.iter_mut().for_each(|x| *x /= norm);
    }

    /// `n` vectors from `base`, flat, on two threads.
    fn many(&self, base: u64, n: usize) -> Vec<f32> {
        let mut flat = vec![0.0f32; n * DIM];
        let half = n.div_ceil(2) * DIM;
        std::thread::scope(|s| {
            for (part, rows) in flat.chunks_mut(half.max(DIM)).enumerate() {
                s.spawn(move || {
                    for (r, out) in rows.chunks_mut(DIM).enumerate() {
                        self.vector(base + (part * half / DIM + r) as u64, out);
                    }
                });
            }
        });
        flat
    }
}

type Job = Box<dyn FnOnce(&mut Executor) + Send>;

/// Shards as executors, each on a thread of its own.
struct Shards {
    workers: Vec<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
}

impl Shards {
    /// Starts one executor per directory, all at once; returns when every
    /// one has initialised (loaded its snapshot, if any).
    fn start(
        runtime: &Arc<Runtime>,
        guest: &std::path::Path,
        dirs: &[PathBuf],
        config: Value,
        memory: u64,
    ) -> Shards {
        let component = runtime.load(guest).unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let workers = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let (tx, rx) = mpsc::channel::<Job>();
                let (runtime, component, config, ready) = (
                    runtime.clone(),
                    component.clone(),
                    config.clone(),
                    ready_tx.clone(),
                );
                let dir = dir.clone();
                let thread = std::thread::spawn(move || {
                    let sandbox = Sandbox {
                        workspace: Some(dir),
                        memory_limit: memory,
                        call_timeout: Duration::from_secs(3600),
                        init_timeout: Duration::from_secs(3600),
                        ..Sandbox::default()
                    };
                    let spec = ExecutorSpec {
                        name: format!("shard-{i}"),
                        config,
                        sandbox,
                    };
                    let mut ex = match Executor::start(runtime, component, spec) {
                        Ok(ex) => ex,
                        Err(e) => panic!("shard {i} did not start: {e:#}"),
                    };
                    ready.send(()).unwrap();
                    for job in rx {
                        job(&mut ex);
                    }
                });
                (tx, thread)
            })
            .collect::<Vec<_>>();
        drop(ready_tx);
        for _ in 0..dirs.len() {
            ready_rx.recv().expect("a shard failed to start");
        }
        Shards { workers }
    }

    /// `f(shard, executor)` on every shard at once; the results in shard order.
    fn each<T: Send + 'static>(
        &self,
        f: impl Fn(usize, &mut Executor) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for (i, (jobs, _)) in self.workers.iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            jobs.send(Box::new(move |ex: &mut Executor| {
                let _ = tx.send((i, f(i, ex)));
            }))
            .unwrap();
        }
        drop(tx);
        let mut out: Vec<(usize, T)> = rx.iter().collect();
        assert_eq!(out.len(), self.workers.len(), "a shard's thread died");
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, t)| t).collect()
    }

    /// One query on every shard; the merged top `K` ids (row numbers).
    fn search(&self, query: &Arc<Document>, params: &Value) -> Vec<usize> {
        let (q, p) = (query.clone(), params.clone());
        let answers = self.each(move |i, ex| {
            ex.handle("/search", std::slice::from_ref(&*q), &p)
                .unwrap_or_else(|e| panic!("shard {i} /search: {e:#}"))
                .remove(0)
                .matches
                .iter()
                .map(|m| {
                    let score = m.scores.values().next().map_or(f64::NAN, |s| s.value);
                    (score, m.id[1..].parse::<usize>().unwrap())
                })
                .collect::<Vec<_>>()
        });
        let mut all: Vec<(f64, usize)> = answers.into_iter().flatten().collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        // Shards hold distinct ids, but a kept DIR may hold copies of one
        // shard (`copies_of` in restart_rows): one match per id.
        all.dedup_by_key(|m| m.1);
        all.into_iter().take(K).map(|(_, id)| id).collect()
    }

    fn stop(self) {
        for (jobs, thread) in self.workers {
            drop(jobs);
            thread.join().unwrap();
        }
    }
}

fn document(id: String, v: &[f32]) -> Document {
    Document {
        id,
        embedding: Some(v.to_vec()),
        ..Default::default()
    }
}

/// Indexes shard `i`'s rows (`i`, `i + shards`, ...) in 1,000-doc requests.
fn index_shards(shards: &Shards, data: &Arc<Vec<f32>>, label: &'static str) {
    let n = data.len() / DIM;
    let count = shards.workers.len();
    let data = data.clone();
    let started = Instant::now();
    shards.each(move |i, ex| {
        let rows: Vec<usize> = (i..n).step_by(count).collect();
        for (c, chunk) in rows.chunks(1000).enumerate() {
            let docs: Vec<Document> = chunk
                .iter()
                .map(|&r| document(format!("d{r}"), &data[r * DIM..(r + 1) * DIM]))
                .collect();
            ex.handle("/index", &docs, &Value::Null)
                .unwrap_or_else(|e| panic!("{label} shard {i} /index: {e:#}"));
            if i == 0 && c % 50 == 49 {
                eprintln!(
                    "hnsw1m: {label} shard 0 at {} of {} documents, {:.0} s",
                    (c + 1) * 1000,
                    rows.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
}

fn stats(shards: &Shards) -> Vec<serde_json::Map<String, Value>> {
    shards.each(|i, ex| {
        ex.handle("/stats", &[], &Value::Null)
            .unwrap_or_else(|e| panic!("shard {i} /stats: {e:#}"))
            .remove(0)
            .tags
    })
}

fn tag(stats: &[serde_json::Map<String, Value>], key: &str) -> Vec<f64> {
    stats
        .iter()
        .map(|s| s.get(key).and_then(Value::as_f64).unwrap_or(0.0))
        .collect()
}

pub fn hnsw1m_rows(runtime: &Arc<Runtime>) -> Vec<Row> {
    let n = knob("HNSW1M_DOCUMENTS", 1_000_000);
    let shard_count = knob("HNSW1M_SHARDS", 4);
    let memory = knob("HNSW1M_MEMORY", 3 << 29) as u64;
    let queries = knob("HNSW1M_QUERIES", 1000);
    let exact_queries = knob("HNSW1M_EXACT_QUERIES", 200).min(queries);
    let ef_construction = knob("HNSW1M_EF_CONSTRUCTION", 200);
    let guest =
        std::env::var_os("HNSW1M_GUEST").map_or_else(|| wasm("hnsw-indexer"), PathBuf::from);
    let tag_line = format!(
        "{n} x {DIM}, {shard_count} shards at memory_hwm {}",
        mib(memory)
    );
    let mut rows = Vec::new();
    let started = Instant::now();
    let generator = Generator::new();
    let query_docs: Vec<Arc<Document>> = generator
        .many(1 << 40, queries)
        .chunks(DIM)
        .enumerate()
        .map(|(i, v)| Arc::new(document(format!("q{i}"), v)))
        .collect();
    let keep = std::env::var_os("HNSW1M_KEEP").map(PathBuf::from);
    let config = serde_json::json!({"dim": DIM, "m": M, "ef_construction": ef_construction, "ef_search": DEFAULT_EF});
    if let Some(root) = &keep
        && root.join("truth.json").exists()
    {
        return restart_rows(
            runtime,
            root,
            &guest,
            &config,
            memory,
            &query_docs,
            (n, shard_count),
            &tag_line,
        );
    }
    let data = Arc::new(generator.many(0, n));
    eprintln!(
        "hnsw1m: {tag_line}: data made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let temp = tempfile::tempdir().unwrap();
    let root = keep.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let dirs = |name: &str| -> Vec<PathBuf> {
        (0..shard_count)
            .map(|i| {
                let d = root.join(format!("{name}-{i}"));
                std::fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    };
    let latency = |shards: &Shards, qs: &[Arc<Document>], params: &Value| {
        let mut found = Vec::with_capacity(qs.len());
        let mut times = Vec::with_capacity(qs.len());
        for q in qs {
            let t = Instant::now();
            found.push(shards.search(q, params));
            times.push(t.elapsed());
        }
        times.sort();
        (found, times)
    };

    // Exact: vector-indexer on the same shards.
    let exact_dirs = dirs("exact");
    let exact = Shards::start(
        runtime,
        &wasm("vector-indexer"),
        &exact_dirs,
        Value::Null,
        memory,
    );
    let t = Instant::now();
    index_shards(&exact, &data, "vector-indexer");
    eprintln!(
        "hnsw1m: vector-indexer indexed in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let (truth, exact_times) = latency(
        &exact,
        &query_docs[..exact_queries],
        &serde_json::json!({"top_k": K}),
    );
    eprintln!(
        "hnsw1m: exact p50 {}",
        fmt_time(percentile(&exact_times, 0.5))
    );
    exact.stop();
    for d in &exact_dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let recall = |found: &[Vec<usize>]| -> f64 {
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
            .sum();
        hits as f64 / (truth.len() * K) as f64
    };

    // Build.
    let hnsw_dirs = dirs("hnsw");
    let shards = Shards::start(runtime, &guest, &hnsw_dirs, config.clone(), memory);
    let t = Instant::now();
    index_shards(&shards, &data, "hnsw-indexer");
    let build = t.elapsed();
    let build_rate = n as f64 / build.as_secs_f64();
    eprintln!(
        "hnsw1m: hnsw-indexer built in {:.0} s ({build_rate:.0} docs/s)",
        build.as_secs_f64()
    );
    let built = stats(&shards);

    // The curve over ef, one query per call across the shards.
    let mut curve = Vec::new();
    for ef in EFS {
        let params = serde_json::json!({"top_k": K, "ef": ef});
        let (found, times) = latency(&shards, &query_docs, &params);
        let r = recall(&found[..exact_queries]);
        eprintln!(
            "hnsw1m: ef {ef}: recall {r:.3}, p50 {}",
            fmt_time(percentile(&times, 0.5))
        );
        curve.push((ef, r, percentile(&times, 0.5), percentile(&times, 0.99)));
    }

    // Dump, then restart every shard at once from its snapshot.
    let t = Instant::now();
    let dumps = shards.each(|i, ex| {
        let t = Instant::now();
        ex.dump()
            .unwrap_or_else(|e| panic!("shard {i} dump: {e:#}"));
        t.elapsed()
    });
    let dump = t.elapsed();
    shards.stop();
    let snapshot: u64 = hnsw_dirs
        .iter()
        .map(|d| std::fs::metadata(d.join("hnsw-index.snapshot")).map_or(0, |m| m.len()))
        .sum();
    let t = Instant::now();
    let back = Shards::start(runtime, &guest, &hnsw_dirs, config, memory);
    let load = t.elapsed();
    let (again, _) = latency(
        &back,
        &query_docs[..exact_queries],
        &serde_json::json!({"top_k": K}),
    );
    let reloaded = stats(&back);
    back.stop();
    let reloaded_recall = recall(&again);
    if let Some(root) = &keep {
        // Last, so a run stopped before here leaves no half-made DIR that
        // looks reusable.
        let kept = serde_json::json!({"documents": n, "shards": shard_count, "truth": truth});
        std::fs::write(root.join("truth.json"), kept.to_string()).unwrap();
    }
    eprintln!(
        "hnsw1m: dump {} restart {} (recall after {reloaded_recall:.3}); total {:.0} s",
        fmt_time(dump),
        fmt_time(load),
        started.elapsed().as_secs_f64()
    );

    let exact_p50 = percentile(&exact_times, 0.5);
    let exact_p99 = percentile(&exact_times, 0.99);
    let &(_, default_recall, p50, p99) = curve.iter().find(|c| c.0 == DEFAULT_EF).unwrap();
    rows.push(Row {
        name: format!("hnsw1m: recall@10 vs exact (vector-indexer), {tag_line}, {exact_queries} queries, ef_search {DEFAULT_EF} (m {M}, ef_construction {ef_construction})"),
        value: format!("{default_recall:.3}"),
        baseline: "exact 1.000".into(),
        ratio: default_recall,
        ratio_label: "x exact",
        target: ">= 0.95".into(),
        met: default_recall >= 0.95,
    });
    rows.push(Row {
        name: format!("hnsw1m: search p50 / p99, {tag_line}, ef {DEFAULT_EF}, one query per call to every shard at once ({queries} queries; vector-indexer {exact_queries})"),
        value: format!("{} / {}", fmt_time(p50), fmt_time(p99)),
        baseline: format!("vector-indexer {} / {}", fmt_time(exact_p50), fmt_time(exact_p99)),
        ratio: exact_p50.as_secs_f64() / p50.as_secs_f64(),
        ratio_label: "x faster (p50)",
        target: ">= 20x".into(),
        met: exact_p50.as_secs_f64() / p50.as_secs_f64() >= 20.0,
    });
    for &(ef, r, p50, p99) in &curve {
        rows.push(Row {
            name: format!(
                "hnsw1m: ef {ef}: recall@10 {r:.3}, p50 (p99 {})",
                fmt_time(p99)
            ),
            value: fmt_time(p50),
            baseline: format!("vector-indexer p50 {}", fmt_time(exact_p50)),
            ratio: exact_p50.as_secs_f64() / p50.as_secs_f64(),
            ratio_label: "x faster",
            target: "the curve: no target".into(),
            met: true,
        });
    }
    rows.push(Row {
        name: format!(
            "hnsw1m: /index build rate, {tag_line}, 1,000-doc requests, shards in parallel"
        ),
        value: format!("{build_rate:.0} docs/s"),
        baseline: "-".into(),
        ratio: build.as_secs_f64(),
        ratio_label: "s total",
        target: "no target".into(),
        met: true,
    });
    let raw = (DIM * 4) as f64;
    let index_bytes: f64 = tag(&built, "index_bytes").iter().sum();
    let linear_built = tag(&built, "linear_memory_bytes");
    let linear_loaded = tag(&reloaded, "linear_memory_bytes");
    let linear: f64 = linear_built.iter().sum();
    // Linear memory never shrinks: its size is the shard's high-water mark.
    let peak = linear_built
        .iter()
        .chain(&linear_loaded)
        .fold(0.0f64, |a, &b| a.max(b));
    let per_shard = (n / shard_count) as f64;
    let peak_per_vector = peak / per_shard;
    let fits = (4u64 << 30) as f64 / peak_per_vector;
    rows.push(Row {
        name: format!("hnsw1m: memory per vector, {tag_line}: index structures (guest linear memory after build {:.0} B/vector)", linear / n as f64),
        value: format!("{:.0} B", index_bytes / n as f64),
        baseline: format!("raw vector {raw:.0} B"),
        ratio: index_bytes / n as f64 / raw,
        ratio_label: "x raw",
        target: "no target".into(),
        met: true,
    });
    rows.push(Row {
        name: format!("hnsw1m: memory_hwm a shard needs: its largest linear memory (build or load) {}, {peak_per_vector:.0} B/vector; so wasm32's 4 GiB holds", mib(peak as u64)),
        value: format!("{:.0}k vectors", fits / 1000.0),
        baseline: format!("{:.0}k per shard here", per_shard / 1000.0),
        ratio: fits / per_shard,
        ratio_label: "x this shard",
        target: "no target".into(),
        met: true,
    });
    rows.push(Row {
        name: format!(
            "hnsw1m: on disk per vector ({} of snapshots)",
            mib(snapshot)
        ),
        value: format!("{:.0} B", snapshot as f64 / n as f64),
        baseline: format!("raw vector {raw:.0} B"),
        ratio: snapshot as f64 / n as f64 / raw,
        ratio_label: "x raw",
        target: "no target".into(),
        met: true,
    });
    let slowest_dump = dumps.iter().max().copied().unwrap_or_default();
    rows.push(Row {
        name: format!("hnsw1m: DUMP (all shards at once; slowest shard {}) / restart (every shard started and its snapshot loaded, at once; recall after {reloaded_recall:.3}), {tag_line}", fmt_time(slowest_dump)),
        value: format!("{} / {}", fmt_time(dump), fmt_time(load)),
        baseline: "-".into(),
        ratio: load.as_secs_f64(),
        ratio_label: "s to restart",
        target: "restart <= 5 s".into(),
        met: load.as_secs_f64() <= 5.0,
    });
    rows
}

/// `HNSW1M_KEEP` with a kept run in `root`: restart its shards from their
/// snapshots `HNSW1M_RESTARTS` times, alternating with
/// `HNSW1M_BASELINE_GUEST` when set; the restart time per guest (median and
/// range) and the recall after every restart.
#[allow(clippy::too_many_arguments)]
fn restart_rows(
    runtime: &Arc<Runtime>,
    root: &std::path::Path,
    guest: &std::path::Path,
    config: &Value,
    memory: u64,
    query_docs: &[Arc<Document>],
    (n, shard_count): (usize, usize),
    tag_line: &str,
) -> Vec<Row> {
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("truth.json")).unwrap()).unwrap();
    assert_eq!(
        (kept["documents"].as_u64(), kept["shards"].as_u64()),
        (Some(n as u64), Some(shard_count as u64)),
        "{} was kept by a run with other HNSW1M_DOCUMENTS / HNSW1M_SHARDS",
        root.display()
    );
    let truth: Vec<Vec<usize>> = serde_json::from_value(kept["truth"].clone()).unwrap();
    // A DIR made by hand from one shard's kept run, its snapshot copied into
    // every shard's workspace: the same bytes to load as distinct shards of
    // that size, and the one shard's answers as the truth.
    let copies = kept["copies_of"]
        .as_str()
        .map_or(String::new(), |c| format!(", each shard a copy of {c}"));
    let restarts = knob("HNSW1M_RESTARTS", 3);
    let shard_dirs = |root: &std::path::Path| -> Vec<PathBuf> {
        (0..shard_count)
            .map(|i| root.join(format!("hnsw-{i}")))
            .collect()
    };
    let dirs = shard_dirs(root);
    if std::env::var_os("HNSW1M_REWRITE").is_some() {
        // Have this guest write its own snapshot format: a change (a probe
        // document indexed and deleted, not logged) makes a snapshot due,
        // and the dump compacts the probe away.
        let shards = Shards::start(runtime, guest, &dirs, config.clone(), memory);
        shards.each(|i, ex| {
            let probe = document("rewrite-probe".into(), &[1.0 / (DIM as f32).sqrt(); DIM]);
            let quiet = serde_json::json!({"durable": false});
            for endpoint in ["/index", "/delete"] {
                ex.handle(endpoint, std::slice::from_ref(&probe), &quiet)
                    .unwrap_or_else(|e| panic!("shard {i} {endpoint}: {e:#}"));
            }
            ex.dump()
                .unwrap_or_else(|e| panic!("shard {i} dump: {e:#}"));
        });
        shards.stop();
        eprintln!(
            "hnsw1m: snapshots in {} rewritten by this guest",
            root.display()
        );
    }
    let mut guests = vec![("this guest", guest.to_path_buf(), dirs.clone())];
    if let Some(base) = std::env::var_os("HNSW1M_BASELINE_GUEST") {
        // The baseline's own snapshots (another format, say) may be elsewhere.
        let base_root =
            std::env::var_os("HNSW1M_BASELINE_KEEP").map_or(root.to_path_buf(), PathBuf::from);
        guests.insert(
            0,
            (
                "baseline guest",
                PathBuf::from(base),
                shard_dirs(&base_root),
            ),
        );
    }
    // Compiled once before the clock (the full run's restart finds the
    // guest compiled by its build too).
    for (_, g, _) in &guests {
        runtime.load(g).unwrap();
    }
    let mut times = vec![Vec::new(); guests.len()];
    let mut peaks = vec![0.0f64; guests.len()];
    let mut worst_recall = vec![1.0f64; guests.len()];
    for round in 0..restarts {
        for (g, (label, path, dirs)) in guests.iter().enumerate() {
            let t = Instant::now();
            let back = Shards::start(runtime, path, dirs, config.clone(), memory);
            let load = t.elapsed();
            let (mut hits, mut asked) = (0, 0);
            for (q, t) in query_docs.iter().zip(&truth) {
                let found = back.search(q, &serde_json::json!({"top_k": K}));
                hits += found.iter().filter(|id| t.contains(id)).count();
                asked += K;
            }
            let r = hits as f64 / asked.max(1) as f64;
            let linear = tag(&stats(&back), "linear_memory_bytes");
            back.stop();
            eprintln!(
                "hnsw1m: restart round {round}, {label}: {} (recall after {r:.3})",
                fmt_time(load)
            );
            times[g].push(load);
            peaks[g] = linear.iter().fold(peaks[g], |a, &b| a.max(b));
            worst_recall[g] = worst_recall[g].min(r);
        }
    }
    let mut rows = Vec::new();
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    for (g, (label, path, dirs)) in guests.iter().enumerate() {
        let t = &times[g];
        let snapshot: u64 = dirs
            .iter()
            .map(|d| std::fs::metadata(d.join("hnsw-index.snapshot")).map_or(0, |m| m.len()))
            .sum();
        let base = (guests.len() > 1 && g > 0).then_some(medians[0]);
        rows.push(Row {
            name: format!(
                "hnsw1m: restart from kept snapshots ({}, {}{copies}), {label} {}: every shard started and its snapshot loaded at once, median of {restarts} (range {}-{}; recall after >= {:.3}; a shard's linear memory after load {})",
                mib(snapshot),
                dirs[0].parent().unwrap_or(root).display(),
                path.display(),
                fmt_time(t[0]),
                fmt_time(t[t.len() - 1]),
                worst_recall[g],
                mib(peaks[g] as u64)
            ),
            value: fmt_time(medians[g]),
            baseline: base.map_or("-".into(), |b| format!("baseline guest {}", fmt_time(b))),
            ratio: medians[g].as_secs_f64(),
            ratio_label: "s to restart",
            target: format!("restart <= 5 s ({tag_line})"),
            met: medians[g].as_secs_f64() <= 5.0,
        });
    }
    rows
}
