//! `make bench`: every speed and memory figure beside its baseline, measured in
//! the same run, with the ratio and the target. The table goes to stdout;
//! docs/benchmarks.md keeps the latest one.
//!
//! Runs on the dev profile's artifacts (dependencies at opt-level 3, this crate
//! at 2, guests built --release) so the machine compiles wasmtime once. Medians
//! over many iterations; the machine is shared and noisy, so compare ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jina_wasm::Document;
use jina_wasm::client::{Client, Target};
use jina_wasm::executor::{Executor, ExecutorSpec, Runtime, RuntimeOptions, Sandbox};
use jina_wasm::pea::{OnError, PeaConfig};
use jina_wasm::pod::{Backend, Balance, PodConfig, PodHandle};
use jina_wasm::transport::SocketSpec;
use jina_wasm::wire::{Body, Envelope, Message};
use serde_json::Value;

/// The `jina-wasm` binary's allocator (src/main.rs): the floor server, the
/// client and the in-process rows run on what the product runs on, so no
/// figure is a comparison of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn wasm(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let path = target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    assert!(
        path.exists(),
        "{} is missing: run `make guests` first",
        path.display()
    );
    path
}

/// Median wall time of `f` over `iterations` runs, after a warm-up.
fn median(iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations.min(10) {
        f();
    }
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn rss_bytes() -> u64 {
    process_rss(std::process::id())
}

struct Row {
    name: String,
    value: String,
    baseline: String,
    ratio: f64,
    ratio_label: &'static str,
    target: String,
    met: bool,
}

fn fmt_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn start(runtime: &Arc<Runtime>, name: &str, config: Value) -> Executor {
    let component = runtime.load(&wasm(name)).unwrap();
    let spec = ExecutorSpec {
        name: name.into(),
        config,
        sandbox: Sandbox::default(),
    };
    Executor::start(runtime.clone(), component, spec).unwrap()
}

/// A document like the issue's workload: 64 bytes of text and a 128-dim embedding.
fn workload_doc(i: usize) -> Document {
    Document {
        id: format!("doc-{i:06}"),
        text: Some(format!("{:064}", i)),
        embedding: Some(
            (0..128)
                .map(|j| ((i * 31 + j) % 97) as f32 / 97.0)
                .collect(),
        ),
        ..Default::default()
    }
}

const SENTENCES: [&str; 4] = [
    "WebAssembly components give every executor its own sandbox and memory limit.",
    "ZeroMQ carries requests between peas, heads and tails without a broker.",
    "Shards keep their part of the index in a workspace that survives restarts.",
    "The gateway turns HTTP requests from clients into messages for the flow.",
];

fn main() {
    if std::env::var_os("BENCH_FLOOR_SERVER").is_some() {
        return floor::serve();
    }
    let cache = tempfile::tempdir().unwrap();
    let cached = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    })
    .unwrap();
    let uncached = Runtime::new(RuntimeOptions {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let mut rows = Vec::new();
    if section("executor") {
        rows.extend(executor_rows(&cached, &uncached));
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 6. Peas over ZeroMQ.
    if section("pea") {
        rows.extend(tokio.block_on(pea_rows(cached.clone())));
    }
    // 7. Pods (`headtail`: only the head + tail round trip, to profile it).
    if section("pod") || section("headtail") {
        rows.extend(tokio.block_on(pod_rows(cached.clone())));
    }
    // 8. Flows through the HTTP gateway, the Flow in its own process.
    if section("flow") {
        rows.extend(tokio.block_on(flow_rows()));
    }
    // 9. Stateful executors: durability modes, dump and restart of a large index.
    if section("state") {
        rows.extend(tokio.block_on(state_rows(cached.clone())));
    }
    // 10. The same executor in Rust, Python and JavaScript.
    if section("polyglot") {
        // The same cache, with the pooling allocator `jina-wasm pea` uses.
        let pooled = Runtime::new(RuntimeOptions {
            cache_dir: Some(cache.path().into()),
            pool_slots: Some(jina_wasm::cli::POOL_SLOTS),
        })
        .unwrap();
        rows.extend(polyglot_rows(&cached, &uncached, &pooled));
    }
    // 11. The demo Flow exported to Kubernetes, its units run as processes.
    if section("export") {
        rows.extend(tokio.block_on(export_rows()));
    }
    // 12. The daemon: starting a remote Pod, and a remote hop against a local one.
    if section("daemon") {
        rows.extend(tokio.block_on(daemon_rows()));
    }
    // 13. Tenants: a well-behaved Pea beside another tenant's runaway.
    if section("tenants") {
        rows.extend(tokio.block_on(tenant_rows(cached.clone())));
    }
    // 14. The HNSW indexer at 100k vectors, against exact search and hnswlib.
    if section("hnsw") {
        rows.extend(hnsw_rows(&cached));
    }
    // 15. The MiniLM sentence encoder with the real model (docs/minilm.md).
    if section("minilm") {
        rows.extend(tokio.block_on(minilm_rows(&cached, &uncached)));
    }
    // 16. The gRPC gateway against the HTTP one (docs/grpc.md).
    if section("grpc") {
        rows.extend(tokio.block_on(grpc_rows()));
    }
    // 17. The soak of issue 22, only when named (about ten minutes).
    if named("soak") {
        rows.extend(tokio.block_on(soak::soak_rows()));
    }
    // 18. What Prometheus metrics cost a request (docs/operations.md).
    if section("metrics") {
        rows.extend(tokio.block_on(metrics_rows()));
    }
    // 19. What OpenTelemetry traces cost a request (docs/operations.md).
    if section("tracing") {
        rows.extend(tokio.block_on(tracing_rows()));
    }
    // 20. hnsw-indexer at a million 384-d vectors across shards, only when named.
    if named("hnsw1m") {
        rows.extend(hnsw1m::hnsw1m_rows(&cached));
    }
    // 21. The Flow's HTTP path against a bare JSON echo server (issue 17).
    if section("floor") {
        rows.extend(tokio.block_on(floor::floor_rows()));
    }
    print_table(&rows);
}

#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/soak.rs"]
mod soak;

#[path = "bench/hnsw1m.rs"]
mod hnsw1m;

/// Sections too long for every `make bench`: only `BENCH_SECTIONS=NAME`.
fn named(name: &str) -> bool {
    std::env::var("BENCH_SECTIONS").is_ok_and(|s| s.split(',').any(|x| x.trim() == name))
}

/// `n` documents with 128-dim embeddings, ids from `first`.
fn vectors(first: usize, n: usize) -> Vec<Document> {
    (first..first + n)
        .map(|i| Document {
            id: format!("v-{i}"),
            embedding: Some(
                (0..128)
                    .map(|j| ((i * 31 + j * 7) % 101) as f32 / 101.0 - 0.5)
                    .collect(),
            ),
            ..Default::default()
        })
        .collect()
}

/// Indexes `docs` into the Pea at `addresses`, 1,000 per request.
async fn preload(addresses: &jina_wasm::pea::Addresses, docs: &[Document]) {
    let mut client = Client::open(&Target::pea(&addresses.input, &addresses.output))
        .await
        .unwrap();
    let requests: Vec<Message> = docs
        .chunks(1000)
        .map(|c| Message::data(Envelope::request("/index", ""), &Body::from_documents(c)))
        .collect();
    client.stream(requests, |_| Ok(())).await.unwrap();
    client.close().await;
}

async fn state_rows(runtime: Arc<Runtime>) -> Vec<Row> {
    use jina_wasm::pea::DumpPolicy;
    let mut rows = Vec::new();
    let indexer_with = |dump: DumpPolicy, dir: &tempfile::TempDir, with: Value| {
        let mut config = pea_config("vector-indexer", "idx", Some(dir.path().to_path_buf()));
        config.dump = dump;
        config.executor.config = with;
        jina_wasm::pea::start(runtime.clone(), config)
    };
    let indexer = |dump: DumpPolicy, dir: &tempfile::TempDir| indexer_with(dump, dir, Value::Null);
    // Indexing: 100-doc requests (128-dim), durable vs interval mode.
    let batch = vectors(0, 100);
    let (interval_dir, durable_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let interval = indexer(DumpPolicy::DEFAULT, &interval_dir).await.unwrap();
    let durable = indexer(DumpPolicy::Durable, &durable_dir).await.unwrap();
    let (a, b) = (&interval.addresses, &durable.addresses);
    let interval_rate = doc_rate(&a.input, &a.output, "/index", &batch, 400).await;
    let durable_rate = doc_rate(&b.input, &b.output, "/index", &batch, 400).await;
    rows.push(Row {
        name: "vector-indexer /index, durable mode (`--dump-interval 0`: append, one fsync per group commit), 100-doc requests, 8 in flight".into(),
        value: format!("{durable_rate:.0} docs/s"),
        baseline: format!("interval mode {interval_rate:.0} docs/s"),
        ratio: durable_rate / interval_rate,
        ratio_label: "x interval",
        target: "no target: the cost of durability".into(),
        met: true,
    });
    // The same without incremental persistence: every dump rewrites the whole
    // index (here 10,000 documents, a 5 MiB snapshot), as an executor that only
    // knows snapshots would.
    let rewrite_dir = tempfile::tempdir().unwrap();
    let rewrite = indexer_with(
        DumpPolicy::Durable,
        &rewrite_dir,
        serde_json::json!({"compact_log_bytes": 0}),
    )
    .await
    .unwrap();
    let r = &rewrite.addresses;
    preload(r, &vectors(1_000_000, 10_000)).await;
    let rewrite_rate = doc_rate(&r.input, &r.output, "/index", &batch, 100).await;
    rows.push(Row {
        name: "same, durable by rewriting the whole index per commit (10k docs, `compact_log_bytes: 0`)".into(),
        value: format!("{rewrite_rate:.0} docs/s"),
        baseline: format!("append + fsync {durable_rate:.0} docs/s"),
        ratio: rewrite_rate / durable_rate,
        ratio_label: "x incremental",
        target: "no target: why executors should log".into(),
        met: true,
    });
    for pea in [interval, durable, rewrite] {
        pea.terminate();
        pea.wait().await.unwrap();
    }

    // 100,000 documents: dump time, then restart (load) time vs an empty start.
    let dir = tempfile::tempdir().unwrap();
    let pea = indexer(DumpPolicy::Never, &dir).await.unwrap();
    preload(&pea.addresses, &vectors(0, 100_000)).await;
    let ctrl = pea.addresses.ctrl.clone();
    let started = Instant::now();
    jina_wasm::control::ask(&ctrl, jina_wasm::control::Command::Dump)
        .await
        .unwrap();
    let dump = started.elapsed();
    pea.terminate();
    pea.wait().await.unwrap();
    let snapshot =
        std::fs::metadata(dir.path().join("vector-index.snapshot")).map_or(0, |m| m.len());
    let empty = tempfile::tempdir().unwrap();
    let time_start = |dir: &tempfile::TempDir| {
        let start = indexer(DumpPolicy::Never, dir);
        async move {
            let t = Instant::now();
            let pea = start.await.unwrap();
            let took = t.elapsed();
            pea.terminate();
            pea.wait().await.unwrap();
            took
        }
    };
    let (load, fresh) = (time_start(&dir).await, time_start(&empty).await);
    rows.push(Row {
        name: format!(
            "vector-indexer DUMP of 100k docs x 128 dims ({} snapshot)",
            mib(snapshot)
        ),
        value: fmt_time(dump),
        baseline: "-".into(),
        ratio: dump.as_secs_f64() * 1e6 / 100_000.0,
        ratio_label: "µs/doc",
        target: "no target".into(),
        met: true,
    });
    rows.push(Row {
        name: "vector-indexer restart (Pea start + init load) with 100k docs x 128 dims".into(),
        value: fmt_time(load),
        baseline: format!("empty workspace {}", fmt_time(fresh)),
        ratio: load.as_secs_f64() / fresh.as_secs_f64(),
        ratio_label: "x empty",
        target: "no target".into(),
        met: true,
    });
    rows
}

/// `BENCH_SECTIONS=pea,pod make bench` runs only those sections (executor,
/// pea, pod, flow, state, polyglot, export, daemon, tenants, hnsw, minilm,
/// grpc, metrics, tracing, floor; `headtail` is the part of `pod` that
/// times the head and tail alone); the default is all of them but `soak` and
/// `hnsw1m` (`named`).
fn section(name: &str) -> bool {
    std::env::var("BENCH_SECTIONS").map_or(true, |s| s.split(',').any(|x| x.trim() == name))
}

fn executor_rows(cached: &Arc<Runtime>, uncached: &Arc<Runtime>) -> Vec<Row> {
    let mut rows = Vec::new();
    // 1. Cold compile vs cached load of a component (text-encoder).
    let encoder_path = wasm("text-encoder");
    let cold = median(5, || drop(uncached.load(&encoder_path).unwrap()));
    cached.load(&encoder_path).unwrap();
    let warm = median(50, || drop(cached.load(&encoder_path).unwrap()));
    let speedup = cold.as_secs_f64() / warm.as_secs_f64();
    rows.push(Row {
        name: "load text-encoder: cached artifact".into(),
        value: fmt_time(warm),
        baseline: format!("cold compile {}", fmt_time(cold)),
        ratio: speedup,
        ratio_label: "x faster",
        target: ">= 20x faster".into(),
        met: speedup >= 20.0,
    });

    // 2. Instantiate + init of passthrough (a fresh Store, WASI context, instance).
    let passthrough = cached.load(&wasm("passthrough")).unwrap();
    let spec = ExecutorSpec {
        name: "passthrough".into(),
        config: Value::Null,
        sandbox: Sandbox::default(),
    };
    let instantiate = median(500, || {
        drop(Executor::start(cached.clone(), passthrough.clone(), spec.clone()).unwrap())
    });
    rows.push(Row {
        name: "instantiate + init (passthrough)".into(),
        value: fmt_time(instantiate),
        baseline: "-".into(),
        ratio: instantiate.as_secs_f64() * 1e6 / 50.0,
        ratio_label: "of target",
        target: "< 50 µs".into(),
        met: instantiate < Duration::from_micros(50),
    });

    // 3. handle() through passthrough: 1 and 100 documents (64 B text + 128-dim
    // embedding), against the host-only cost of cloning the same documents. `/`
    // has no handler, so the guest returns the batch as received: the host and the
    // boundary, nothing else. `/roundtrip` adds the SDK decoding the batch into
    // Document trees and encoding it back, as any real handler does.
    let mut executor = start(cached, "passthrough", Value::Null);
    for (endpoint, n) in [("/", 1usize), ("/", 100), ("/roundtrip", 100)] {
        let docs: Vec<Document> = (0..n).map(workload_doc).collect();
        let call = median(2000, || {
            let out = executor.handle(endpoint, &docs, &Value::Null).unwrap();
            assert_eq!(out.len(), n);
        });
        let clone = median(2000, || drop(std::hint::black_box(docs.clone())));
        let (target, met) = if endpoint == "/" && n == 100 {
            ("< 40 µs".to_string(), call < Duration::from_micros(40))
        } else {
            ("-".to_string(), true)
        };
        rows.push(Row {
            name: format!("handle() passthrough `{endpoint}`, {n} doc(s)"),
            value: fmt_time(call),
            baseline: format!("host clone {}", fmt_time(clone)),
            ratio: call.as_secs_f64() / clone.as_secs_f64(),
            ratio_label: "x clone",
            target,
            met,
        });
    }

    // 4. text-encoder in wasm vs the same code natively: documents per second.
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("{} #{i}", SENTENCES[i % SENTENCES.len()]))
        .collect();
    let docs: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Document {
            id: i.to_string(),
            text: Some(t.clone()),
            ..Default::default()
        })
        .collect();
    let mut encoder = start(cached, "text-encoder", Value::Null);
    let wasm_time = median(20, || {
        for batch in docs.chunks(100) {
            encoder.handle("/", batch, &Value::Null).unwrap();
        }
    });
    let native_time = median(20, || {
        for text in &texts {
            std::hint::black_box(jina_guest_sdk::embedding::feature_hash(text, 256));
        }
    });
    // The same code natively, read two ways: the executor's own handler (SDK
    // documents in, a copy as the handler owns them; embeddings out), and the
    // bare hash kernel over the strings alone (stricter).
    use jina_guest_sdk::Executor as _;
    let mut native_encoder =
        text_encoder::TextEncoder::init(jina_guest_sdk::Config::parse("{}").unwrap()).unwrap();
    let handler = text_encoder::TextEncoder::routes().find("/").unwrap();
    let no_params = jina_guest_sdk::Params::parse("{}").unwrap();
    let sdk_docs: Vec<jina_guest_sdk::Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| jina_guest_sdk::Document::new(i.to_string()).with_text(t.clone()))
        .collect();
    let handler_time = median(20, || {
        for batch in sdk_docs.chunks(100) {
            std::hint::black_box(handler(&mut native_encoder, batch.to_vec(), &no_params).unwrap());
        }
    });
    let wasm_rate = 1000.0 / wasm_time.as_secs_f64();
    for (versus, baseline, native_time) in [
        ("its handler native", "native handler", handler_time),
        ("bare hashing", "native feature_hash", native_time),
    ] {
        let native_rate = 1000.0 / native_time.as_secs_f64();
        rows.push(Row {
            name: format!("text-encoder (wasm, 100-doc calls) vs {versus}"),
            value: format!("{wasm_rate:.0} docs/s"),
            baseline: format!("{baseline} {native_rate:.0} docs/s"),
            ratio: wasm_rate / native_rate,
            ratio_label: "x native",
            target: ">= 0.5x native".into(),
            met: wasm_rate / native_rate >= 0.5,
        });
    }

    // 5. Memory: resident memory of one more idle executor instance.
    drop(executor);
    drop(encoder);
    let before = rss_bytes();
    let idle: Vec<Executor> = (0..200)
        .map(|_| Executor::start(cached.clone(), passthrough.clone(), spec.clone()).unwrap())
        .collect();
    let per_instance = (rss_bytes().saturating_sub(before)) as f64 / idle.len() as f64;
    rows.push(Row {
        name: "RSS per idle passthrough instance (200 live)".into(),
        value: format!("{:.1} KiB", per_instance / 1024.0),
        baseline: format!("process RSS {:.1} MiB", before as f64 / (1 << 20) as f64),
        ratio: per_instance * 1000.0 / (2u64 << 30) as f64,
        ratio_label: "of 2 GiB per 1000",
        target: "1000 idle < 2 GiB".into(),
        met: per_instance * 1000.0 < (2u64 << 30) as f64,
    });
    drop(idle);
    rows
}

/// The sentence-segmenter in Rust and its Python (componentize-py) and
/// JavaScript (componentize-js) ports, which give the same output (tests/all/
/// polyglot.rs): cold start (compile, instantiate, init), cached start
/// (compiled artifact from the cache, instantiate, init), and documents per
/// second through `handle` in 100-document requests. Ratios against Rust, from
/// this run.
fn polyglot_rows(
    cached: &Arc<Runtime>,
    uncached: &Arc<Runtime>,
    pooled: &Arc<Runtime>,
) -> Vec<Row> {
    let docs: Vec<Document> = (0..100)
        .map(|i| Document {
            id: format!("p{i}"),
            text: Some(SENTENCES.join(" ")),
            ..Default::default()
        })
        .collect();
    let spec = |name: &str| ExecutorSpec {
        name: name.into(),
        config: Value::Null,
        sandbox: Sandbox::default(),
    };
    let mut measured = Vec::new();
    let mut pool_rows = Vec::new();
    for name in [
        "sentence-segmenter",
        "py-sentence-segmenter",
        "js-sentence-segmenter",
    ] {
        let lang = name
            .split('-')
            .next()
            .filter(|l| *l == "py" || *l == "js")
            .unwrap_or("rust");
        let path = wasm(name);
        let size = std::fs::metadata(&path).unwrap().len();
        // Cold: once (a Python component takes seconds to compile).
        let started = Instant::now();
        let component = uncached.load(&path).unwrap();
        drop(Executor::start(uncached.clone(), component, spec(name)).unwrap());
        let cold = started.elapsed();
        cached.load(&path).unwrap();
        // The cached start (load and start), and a restart (what follows a
        // trap: instantiate and init from the loaded component); each on
        // demand (`cached`) and pooled.
        let cached_start = |runtime: &Arc<Runtime>| {
            median(10, || {
                let component = runtime.load(&path).unwrap();
                drop(Executor::start(runtime.clone(), component, spec(name)).unwrap());
            })
        };
        let restart = |runtime: &Arc<Runtime>| {
            let component = runtime.load(&path).unwrap();
            median(20, || {
                drop(Executor::start(runtime.clone(), component.clone(), spec(name)).unwrap())
            })
        };
        let warm = cached_start(cached);
        let (pooled_warm, demand_restart, pooled_restart) =
            (cached_start(pooled), restart(cached), restart(pooled));
        for (what, with_pool, demand) in [
            ("cached start", pooled_warm, warm),
            (
                "restart (instantiate + init)",
                pooled_restart,
                demand_restart,
            ),
        ] {
            pool_rows.push(Row {
                name: format!("{lang} segmenter: {what}, pooled (--pool-slots 4) vs on demand"),
                value: fmt_time(with_pool),
                baseline: format!("on demand {}", fmt_time(demand)),
                ratio: demand.as_secs_f64() / with_pool.as_secs_f64(),
                ratio_label: "x faster",
                target: "-".into(),
                met: true,
            });
        }
        let mut executor = start(cached, name, Value::Null);
        let call = median(50, || {
            let out = executor.handle("/", &docs, &Value::Null).unwrap();
            assert_eq!(out[0].chunks.len(), SENTENCES.len());
        });
        measured.push((lang, size, cold, warm, 100.0 / call.as_secs_f64()));
    }
    let (_, _, rust_cold, rust_warm, rust_rate) = measured[0];
    let mut rows = Vec::new();
    for &(lang, size, cold, warm, rate) in &measured {
        rows.push(Row {
            name: format!("{lang} segmenter ({}): cached start vs cold", mib(size)),
            value: fmt_time(warm),
            baseline: format!("cold {}", fmt_time(cold)),
            ratio: cold.as_secs_f64() / warm.as_secs_f64(),
            ratio_label: "x faster",
            target: "-".into(),
            met: true,
        });
        if lang == "rust" {
            rows.push(Row {
                name: "rust segmenter: 100-doc requests".into(),
                value: format!("{rate:.0} docs/s"),
                baseline: "-".into(),
                ratio: 1.0,
                ratio_label: "x rust",
                target: "-".into(),
                met: true,
            });
            continue;
        }
        rows.push(Row {
            name: format!("{lang} segmenter: cold / cached start vs rust"),
            value: format!("{} / {}", fmt_time(cold), fmt_time(warm)),
            baseline: format!("rust {} / {}", fmt_time(rust_cold), fmt_time(rust_warm)),
            ratio: warm.as_secs_f64() / rust_warm.as_secs_f64(),
            ratio_label: "x rust (cached)",
            target: "-".into(),
            met: true,
        });
        rows.push(Row {
            name: format!("{lang} segmenter: 100-doc requests"),
            value: format!("{rate:.0} docs/s"),
            baseline: format!("rust {rust_rate:.0} docs/s"),
            ratio: rate / rust_rate,
            ratio_label: "x rust",
            target: "-".into(),
            met: true,
        });
    }
    rows.extend(pool_rows);
    rows
}

fn print_table(rows: &[Row]) {
    println!("| benchmark | value | baseline (same run) | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} {} | {} | {} |",
            r.name,
            r.value,
            r.baseline,
            r.ratio,
            r.ratio_label,
            r.target,
            if r.met { "yes" } else { "NO" }
        );
    }
}

/// A passthrough Pea started in this process with default sockets.
async fn passthrough_pea(runtime: Arc<Runtime>, name: &str) -> jina_wasm::pea::PeaHandle {
    jina_wasm::pea::start(runtime, pea_config("passthrough", name, None))
        .await
        .unwrap()
}

/// A Pea of `guest` with default sockets on OS-assigned ports.
fn pea_config(guest: &str, name: &str, workspace: Option<PathBuf>) -> PeaConfig {
    let sandbox = Sandbox {
        workspace,
        ..Sandbox::default()
    };
    let executor = ExecutorSpec {
        name: name.into(),
        config: Value::Null,
        sandbox,
    };
    PeaConfig {
        name: name.into(),
        description: String::new(),
        uses: wasm(guest),
        uses_sha256: None,
        executor,
        socket_in: SocketSpec::PULL_BIND,
        address_in: "tcp://127.0.0.1:0".into(),
        socket_out: SocketSpec::PUSH_BIND,
        address_out: "tcp://127.0.0.1:0".into(),
        address_ctrl: "tcp://127.0.0.1:0".into(),
        on_error: OnError::Ignore,
        dump: jina_wasm::pea::DumpPolicy::Never,
        load_interval: None,
        timeout_ctrl: Duration::from_secs(1),
        quiet_error: false,
        read_endpoints: jina_wasm::pea::default_read_endpoints(),
    }
}

/// A Pod of `guest` in this process (threads): `shards` or `replicas` Peas.
async fn pod(
    runtime: &Arc<Runtime>,
    guest: &str,
    shards: usize,
    replicas: usize,
    polling: &str,
    workspace: Option<PathBuf>,
) -> PodHandle {
    let config = PodConfig {
        pea: pea_config(guest, &format!("{guest}-{shards}x{replicas}"), workspace),
        shards,
        replicas,
        polling: polling.parse().unwrap(),
        balance: Balance::Credit,
        uses_before: None,
        uses_after: None,
        backend: Backend::Thread,
        timeout_ready: Duration::from_secs(60),
        timeout_parts: Duration::from_secs(60),
        child_args: Vec::new(),
        external: None,
    };
    jina_wasm::pod::start(runtime.clone(), config)
        .await
        .unwrap()
}

/// Documents per second through a Pod: `requests` requests of `docs`, 8 in flight.
async fn pod_rate(p: &PodHandle, endpoint: &str, docs: &[Document], requests: usize) -> f64 {
    doc_rate(
        &p.addresses.input,
        &p.addresses.output,
        endpoint,
        docs,
        requests,
    )
    .await
}

/// Documents per second through a Pea or Pod at `input`/`output`.
async fn doc_rate(
    input: &str,
    output: &str,
    endpoint: &str,
    docs: &[Document],
    requests: usize,
) -> f64 {
    let mut client = Client::open(&Target::pea(input, output)).await.unwrap();
    let mut bytes = Vec::new();
    Body::from_documents(docs).encode(&mut bytes);
    let body = bytes::Bytes::from(bytes);
    let make = |n: usize| {
        (0..n)
            .map(|_| Message::new(Envelope::request(endpoint, ""), body.clone()))
            .collect::<Vec<_>>()
    };
    client.stream(make(10), |_| Ok(())).await.unwrap();
    let start = Instant::now();
    client.stream(make(requests), |_| Ok(())).await.unwrap();
    let rate = (requests * docs.len()) as f64 / start.elapsed().as_secs_f64();
    client.close().await;
    rate
}

async fn pod_rows(runtime: Arc<Runtime>) -> Vec<Row> {
    let mut rows = Vec::new();
    let all = section("pod");
    if all {
        // Replicas: text-encoder, one vs two.
        let texts: Vec<Document> = (0..100)
            .map(|i| Document {
                id: i.to_string(),
                text: Some(format!("{} #{i}", SENTENCES[i % SENTENCES.len()])),
                ..Default::default()
            })
            .collect();
        let one = pod(&runtime, "text-encoder", 1, 1, "any", None).await;
        let two = pod(&runtime, "text-encoder", 1, 2, "any", None).await;
        let (rate1, rate2) = (
            pod_rate(&one, "/", &texts, 300).await,
            pod_rate(&two, "/", &texts, 300).await,
        );
        rows.push(Row {
            name: "text-encoder docs/s, `--parallel 2` (100-doc requests, 8 in flight)".into(),
            value: format!("{rate2:.0} docs/s"),
            baseline: format!("`--parallel 1` {rate1:.0} docs/s"),
            ratio: rate2 / rate1,
            ratio_label: "x parallel 1",
            target: "close to 2x on 2 cores".into(),
            met: rate2 / rate1 >= 1.5,
        });
        for p in [one, two] {
            p.terminate();
            p.wait().await.unwrap();
        }
    }

    // Head + Tail overhead: one-document round trips through two replicas of
    // passthrough vs a singleton.
    let message = Message::data(
        Envelope::request("/", ""),
        &Body::from_documents(&[workload_doc(1)]),
    );
    let single = pod(&runtime, "passthrough", 1, 1, "any", None).await;
    let pair = pod(&runtime, "passthrough", 1, 2, "any", None).await;
    // Rounds that alternate which goes first, so the machine's drift falls
    // on both; the process's thread sleeps (the client's too) per round trip.
    let mut times = [Vec::new(), Vec::new()];
    let mut sleeps = [0u64; 2];
    const ROUNDS: usize = 6;
    const TRIPS: usize = 500;
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let p = [&single, &pair][side];
            let before = process_waits(std::process::id()).0;
            times[side].extend(
                round_trip_times(&p.addresses.input, &p.addresses.output, &message, TRIPS).await,
            );
            sleeps[side] += process_waits(std::process::id()).0 - before;
        }
    }
    let [s50, p50] = times.map(|mut t| {
        t.sort();
        t[t.len() / 2]
    });
    // Every round trip made, the warm-up ones too, slept.
    let trips = ROUNDS * (TRIPS + WARM_UP_TRIPS);
    let per_trip = sleeps.map(|n| n as f64 / trips as f64);
    let added = p50.as_secs_f64() * 1e6 - s50.as_secs_f64() * 1e6;
    rows.push(Row {
        name: "round trip p50 through a Pod with head and tail (`--parallel 2`, passthrough), in one process"
            .into(),
        value: format!("{}, {:.1} thread sleeps", fmt_time(p50), per_trip[1]),
        baseline: format!(
            "singleton Pod {}, {:.1} thread sleeps (+{added:.1} µs)",
            fmt_time(s50),
            per_trip[0]
        ),
        ratio: p50.as_secs_f64() / s50.as_secs_f64(),
        ratio_label: "x singleton",
        target: "head + tail <= +30 µs".into(),
        met: added <= 30.0,
    });
    for p in [single, pair] {
        p.terminate();
        p.wait().await.unwrap();
    }

    if all {
        // Search over 100k documents (128 dims), one shard vs two.
        let corpus: Vec<Document> = (0..100_000).map(workload_doc).collect();
        let queries: Vec<Document> = (0..50).map(|i| workload_doc(i * 1999 + 7)).collect();
        let mut latencies = Vec::new();
        for shards in [1usize, 2] {
            let workspace = tempfile::tempdir().unwrap();
            let p = pod(
                &runtime,
                "vector-indexer",
                shards,
                1,
                "/index:any,/search:all",
                Some(workspace.path().to_path_buf()),
            )
            .await;
            let mut client = Client::open(&Target::pea(&p.addresses.input, &p.addresses.output))
                .await
                .unwrap();
            let requests = corpus
                .chunks(1000)
                .map(|c| Message::data(Envelope::request("/index", ""), &Body::from_documents(c)));
            client.stream(requests, |_| Ok(())).await.unwrap();
            let mut times = Vec::new();
            for q in &queries {
                let start = Instant::now();
                client
                    .call(Message::data(
                        Envelope::request("/search", r#"{"top_k":10}"#),
                        &Body::from_documents(std::slice::from_ref(q)),
                    ))
                    .await
                    .unwrap();
                times.push(start.elapsed());
            }
            times.sort();
            latencies.push(times[times.len() / 2]);
            client.close().await;
            p.terminate();
            p.wait().await.unwrap();
        }
        rows.push(Row {
            name: "search p50 over 100k docs (128 dims, top 10), `--shards 2`".into(),
            value: fmt_time(latencies[1]),
            baseline: format!("`--shards 1` {}", fmt_time(latencies[0])),
            ratio: latencies[1].as_secs_f64() / latencies[0].as_secs_f64(),
            ratio_label: "x shards 1",
            target: "-".into(),
            met: true,
        });
    }
    rows
}

/// The baseline: a raw zeromq PULL -> PUSH echo, no Pea, no codec.
async fn raw_echo() -> (String, String, tokio::task::JoinHandle<()>) {
    use zeromq::{Socket, SocketRecv, SocketSend};
    let mut pull = zeromq::PullSocket::new();
    let mut push = zeromq::PushSocket::new();
    let input = pull.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let output = push.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok(mut message) = pull.recv().await {
            // The crate fails a send while the reader is still connecting:
            // retry, as jina-wasm's own sockets do.
            loop {
                match push.send(message).await {
                    Ok(()) => break,
                    Err(zeromq::ZmqError::ReturnToSender { message: back, .. }) => {
                        message = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => return,
                }
            }
        }
    });
    (input, output, task)
}

/// Sequential round trips of `message` through (input, output) with raw
/// zeromq sockets: (p50, p99).
async fn round_trips(
    input: &str,
    output: &str,
    message: &Message,
    n: usize,
) -> (Duration, Duration) {
    let mut times = round_trip_times(input, output, message, n).await;
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

/// Round trips made before [`round_trip_times`] starts timing.
const WARM_UP_TRIPS: usize = 200;

/// The times of `n` sequential round trips, after [`WARM_UP_TRIPS`] not timed.
async fn round_trip_times(input: &str, output: &str, message: &Message, n: usize) -> Vec<Duration> {
    use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};
    let mut push = zeromq::PushSocket::new();
    push.connect(input).await.unwrap();
    let mut pull = zeromq::PullSocket::new();
    pull.connect(output).await.unwrap();
    let frames = message.frames().to_vec();
    let mut times = Vec::with_capacity(n);
    for i in 0..n + WARM_UP_TRIPS {
        let start = Instant::now();
        push.send(ZmqMessage::try_from(frames.clone()).unwrap())
            .await
            .unwrap();
        pull.recv().await.unwrap();
        if i >= WARM_UP_TRIPS {
            times.push(start.elapsed());
        }
    }
    times
}

/// Documents per second through (input, output) with 100-document requests,
/// 8 in flight.
async fn throughput(input: &str, output: &str, requests: usize) -> f64 {
    let mut client = Client::open(&Target::pea(input, output)).await.unwrap();
    let docs: Vec<Document> = (0..100).map(workload_doc).collect();
    let mut body = Vec::new();
    Body::from_documents(&docs).encode(&mut body);
    let body = bytes::Bytes::from(body);
    let make = |n: usize| {
        (0..n)
            .map(|_| Message::new(Envelope::request("/", ""), body.clone()))
            .collect::<Vec<_>>()
    };
    client.stream(make(50), |_| Ok(())).await.unwrap();
    let start = Instant::now();
    client.stream(make(requests), |_| Ok(())).await.unwrap();
    let rate = (requests * 100) as f64 / start.elapsed().as_secs_f64();
    client.close().await;
    rate
}

fn process_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The `jina-wasm` binary `make bench` built (target/debug), or the one
/// `BENCH_JINA_BIN` names: two builds compared in one sitting.
fn jina_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BENCH_JINA_BIN") {
        return bin.into();
    }
    wasm("passthrough")
        .parent()
        .unwrap()
        .join("../../debug/jina-wasm")
}

/// `jina-wasm pea` as its own process, with the addresses it printed.
struct PeaProcess(std::process::Child, Value);

impl PeaProcess {
    fn start(cache: &std::path::Path) -> PeaProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(jina_bin())
            .args(["pea", "--uses"])
            .arg(wasm("passthrough"))
            .env("JINA_WASM_CACHE_DIR", cache)
            .env("JINA_WASM_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("target/debug/jina-wasm: run `cargo build` first (make bench does)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        PeaProcess(child, serde_json::from_str(&line).unwrap())
    }

    fn addr(&self, key: &str) -> String {
        self.1[key].as_str().unwrap().to_string()
    }
}

impl Drop for PeaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn pea_rows(runtime: Arc<Runtime>) -> Vec<Row> {
    let mut rows = Vec::new();
    let (raw_in, raw_out, echo) = raw_echo().await;
    let pea = passthrough_pea(runtime.clone(), "bench").await;
    let (pea_in, pea_out) = (pea.addresses.input.clone(), pea.addresses.output.clone());

    // Round trip of a one-document request (64 B text + 128-dim embedding).
    let message = Message::data(
        Envelope::request("/", ""),
        &Body::from_documents(&[workload_doc(1)]),
    );
    let (raw50, raw99) = round_trips(&raw_in, &raw_out, &message, 3000).await;
    let (pea50, pea99) = round_trips(&pea_in, &pea_out, &message, 3000).await;
    for (label, pea_t, raw_t) in [("p50", pea50, raw50), ("p99", pea99, raw99)] {
        let ratio = pea_t.as_secs_f64() / raw_t.as_secs_f64();
        rows.push(Row {
            name: format!("round trip through a passthrough Pea, {label}"),
            value: fmt_time(pea_t),
            baseline: format!("raw zeromq echo {}", fmt_time(raw_t)),
            ratio,
            ratio_label: "x raw",
            target: "<= 2x raw".into(),
            met: ratio <= 2.0,
        });
    }

    // Throughput with 100-document requests, 8 in flight.
    let raw_rate = throughput(&raw_in, &raw_out, 1000).await;
    let pea_rate = throughput(&pea_in, &pea_out, 1000).await;
    rows.push(Row {
        name: "documents/s through a passthrough Pea (100-doc requests, 8 in flight)".into(),
        value: format!("{pea_rate:.0} docs/s"),
        baseline: format!("raw zeromq echo {raw_rate:.0} docs/s"),
        ratio: pea_rate / raw_rate,
        ratio_label: "x raw",
        target: ">= 100,000 docs/s".into(),
        met: pea_rate >= 100_000.0,
    });
    pea.terminate();
    pea.wait().await.unwrap();
    echo.abort();

    // An idle Pea process, beside the same binary idle without an executor
    // (`ping` waiting for an answer that never comes).
    // First with an empty cache (the Pea compiles the component), then as a Pea
    // normally starts: from the cache.
    let cache = tempfile::tempdir().unwrap();
    let compiling = PeaProcess::start(cache.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cold_rss = process_rss(compiling.0.id());
    drop(compiling);
    let process = PeaProcess::start(cache.path());
    let mut idle_bin = std::process::Command::new(jina_bin())
        .args(["ping", "127.0.0.1:9", "--timeout", "30s"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (pea_rss, bin_rss) = (process_rss(process.0.id()), process_rss(idle_bin.id()));
    let _ = idle_bin.kill();
    let _ = idle_bin.wait();
    rows.push(Row {
        name: "RSS of an idle `jina-wasm pea` that compiled its component (empty cache)".into(),
        value: mib(cold_rss),
        baseline: format!("idle `jina-wasm ping` {}", mib(bin_rss)),
        ratio: cold_rss as f64 / bin_rss as f64,
        ratio_label: "x ping",
        target: "-".into(),
        met: true,
    });
    rows.push(Row {
        name: "RSS of an idle `jina-wasm pea` (passthrough, cached component)".into(),
        value: mib(pea_rss),
        baseline: format!("idle `jina-wasm ping` {}", mib(bin_rss)),
        ratio: pea_rss as f64 / (20 << 20) as f64,
        ratio_label: "of target",
        target: "< 20 MiB".into(),
        met: pea_rss < 20 << 20,
    });

    // RSS under sustained load: the same process around 500 and around
    // 3,000 100-document requests. Each figure is the median of five
    // samples 60 requests apart: the allocator gives pages back in bursts,
    // so one sample lands anywhere in a swing of several percent, and two
    // single samples compared that swing, not growth (1.06-1.11x before,
    // 1.05x in three runs of this).
    let (p_in, p_out) = (process.addr("in"), process.addr("out"));
    let pid = process.0.id();
    // One client throughout, so what is measured is requests, not
    // connections opened and closed.
    let mut client = Client::open(&Target::pea(&p_in, &p_out)).await.unwrap();
    let mut body = Vec::new();
    Body::from_documents(&(0..100).map(workload_doc).collect::<Vec<_>>()).encode(&mut body);
    let body = bytes::Bytes::from(body);
    let mut rss = [0u64; 2];
    // Samples at 260-500 requests, then at 2,760-3,000.
    for (phase, before) in [(0, 200), (1, 2_200)] {
        let mut samples = Vec::new();
        for step in 0..6 {
            let n = if step == 0 { before } else { 60 };
            let requests = (0..n).map(|_| Message::new(Envelope::request("/", ""), body.clone()));
            client
                .stream(requests.collect::<Vec<_>>(), |_| Ok(()))
                .await
                .unwrap();
            if step > 0 {
                samples.push(process_rss(pid));
            }
        }
        samples.sort_unstable();
        rss[phase] = samples[2];
    }
    client.close().await;
    let [warm, after] = rss;
    rows.push(Row {
        name: "RSS of that Pea after 3,000 100-doc requests (median of 5 samples, 2,760-3,000)"
            .into(),
        value: mib(after),
        baseline: format!("after 500 (median of 5 samples, 260-500): {}", mib(warm)),
        ratio: after as f64 / warm as f64,
        ratio_label: "x",
        target: "flat (< 1.1x)".into(),
        met: (after as f64) < warm as f64 * 1.1,
    });
    drop(process);

    // 1,000 idle Peas in this process: three bound sockets, an executor thread
    // and an instance each.
    let before = rss_bytes();
    let mut peas = Vec::new();
    for i in 0..1000 {
        peas.push(passthrough_pea(runtime.clone(), &format!("idle-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes().saturating_sub(before);
    rows.push(Row {
        name: "RSS of 1,000 idle passthrough Peas in one process".into(),
        value: mib(grown),
        baseline: format!("process before {}", mib(before)),
        ratio: grown as f64 / (2u64 << 30) as f64,
        ratio_label: "of target",
        target: "< 2 GiB".into(),
        met: grown < 2 << 30,
    });
    for pea in &peas {
        pea.terminate();
    }
    for pea in peas {
        pea.wait().await.unwrap();
    }
    rows
}

/// `jina-wasm flow` as its own process, with its gateway port.
/// (The temp dir holds the Flow file and its cache; kept until the drop.)
struct FlowProcess(
    std::process::Child,
    u16,
    #[allow(dead_code)] tempfile::TempDir,
);

impl FlowProcess {
    fn start(yaml: &str) -> FlowProcess {
        let dir = tempfile::tempdir().unwrap();
        let guests = wasm("passthrough").parent().unwrap().to_path_buf();
        let file = dir.path().join("flow.yml");
        std::fs::write(&file, yaml.replace("{W}", guests.to_str().unwrap())).unwrap();
        let mut child = std::process::Command::new(jina_bin())
            .args(["flow", "--uses"])
            .arg(&file)
            .env("JINA_WASM_CACHE_DIR", dir.path().join("cache"))
            .env("JINA_WASM_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let ready = ready_line(&mut child);
        FlowProcess(child, ready["port"].as_u64().unwrap() as u16, dir)
    }
}

impl Drop for FlowProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sequential requests: (p50, p99).
async fn http_latency(
    host: &str,
    port: u16,
    endpoint: &str,
    docs: &[Document],
    n: usize,
) -> (Duration, Duration) {
    let params = serde_json::json!({});
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let start = Instant::now();
        let answer = jina_wasm::client_http::post(
            host,
            port,
            endpoint,
            &params,
            docs,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(answer.error.is_none(), "{:?}", answer.error);
        if i >= 50 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

/// Documents per second with 8 requests in flight.
async fn http_rate(port: u16, endpoint: &str, docs: &[Document], requests: usize) -> f64 {
    use futures::StreamExt;
    let params = serde_json::json!({});
    let start = Instant::now();
    futures::stream::iter(0..requests)
        .map(|_| {
            jina_wasm::client_http::post(
                "127.0.0.1",
                port,
                endpoint,
                &params,
                docs,
                Duration::from_secs(60),
            )
        })
        .buffer_unordered(8)
        .for_each(|answer| async move {
            assert!(answer.unwrap().error.is_none());
        })
        .await;
    (requests * docs.len()) as f64 / start.elapsed().as_secs_f64()
}

async fn flow_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let flow = FlowProcess::start("pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n");
    for size in [1usize, 100] {
        let docs: Vec<Document> = (0..size).map(workload_doc).collect();
        let (p50, p99) = http_latency("127.0.0.1", flow.1, "/", &docs, 500).await;
        let rate = http_rate(flow.1, "/", &docs, if size == 1 { 2000 } else { 200 }).await;
        rows.push(Row {
            name: format!(
                "gateway -> passthrough -> gateway, {size}-doc requests: docs/s (8 in flight)"
            ),
            value: format!("{rate:.0} docs/s"),
            baseline: format!("latency p50 {} / p99 {}", fmt_time(p50), fmt_time(p99)),
            ratio: p99.as_secs_f64() / p50.as_secs_f64(),
            ratio_label: "p99/p50",
            target: "-".into(),
            met: true,
        });
    }
    drop(flow);

    // The demo Flow: index 1,200 texts (the corpus 100 times), then search.
    let flow = FlowProcess::start(&demo_yaml());
    let (index_rate, p50, p99) = demo_workload("127.0.0.1", flow.1).await;
    rows.push(Row {
        name: "demo Flow (segment, encode x2, index in 2 shards): index 1,200 texts, then search"
            .into(),
        value: format!("{index_rate:.0} texts/s indexed"),
        baseline: format!("search p50 {} / p99 {}", fmt_time(p50), fmt_time(p99)),
        ratio: p99.as_secs_f64() / p50.as_secs_f64(),
        ratio_label: "p99/p50",
        target: "-".into(),
        met: true,
    });
    rows
}

/// The demo Flow file, its executors and workspace pointing at this build;
/// with the hashing encoder (text-search-hashing.yml), so that these rows
/// measure the host's hops, not MiniLM (section 14 has MiniLM's figures).
fn demo_yaml() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/flows/text-search-hashing.yml"),
    )
    .unwrap()
    .replace("../../target/wasm32-wasip2/release", "{W}")
    .replace("../../target/demo-workspace", "workspace")
}

/// Through the demo Flow's gateway: index 1,200 texts (the corpus 100 times,
/// 100 per request, all at once), then sequential searches. Returns texts
/// indexed per second and the search latency (p50, p99).
async fn demo_workload(host: &str, port: u16) -> (f64, Duration, Duration) {
    let corpus = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/corpus.txt"),
    )
    .unwrap();
    let texts: Vec<Document> = (0..100)
        .flat_map(|round| {
            corpus.lines().enumerate().map(move |(i, t)| Document {
                id: format!("t{round}-{i}"),
                text: Some(t.to_string()),
                ..Default::default()
            })
        })
        .collect();
    let params = serde_json::json!({});
    let start = Instant::now();
    let answers = futures::future::join_all(texts.chunks(100).map(|c| {
        jina_wasm::client_http::post(host, port, "/index", &params, c, Duration::from_secs(60))
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|a| a.error.is_none())),
        "an index request failed"
    );
    let index_rate = texts.len() as f64 / start.elapsed().as_secs_f64();
    let query = [Document {
        id: "q".into(),
        text: Some("what makes writes survive a crash".into()),
        ..Default::default()
    }];
    let (p50, p99) = http_latency(host, port, "/search", &query, 200).await;
    (index_rate, p50, p99)
}

#[path = "../tests/support/local_cluster.rs"]
mod local_cluster;

/// Section 11: The demo Flow exported to Kubernetes, every unit its own process on its
/// own loopback address (as tests/all/export.rs runs it), beside the same
/// Flow in one `jina-wasm flow` process: what the extra process hops cost.
async fn export_rows() -> Vec<Row> {
    let flow = FlowProcess::start(&demo_yaml());
    let (flow_rate, flow_p50, _) = demo_workload("127.0.0.1", flow.1).await;
    drop(flow);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    let guests = wasm("passthrough").parent().unwrap().to_path_buf();
    std::fs::write(&file, demo_yaml().replace("{W}", guests.to_str().unwrap())).unwrap();
    let manifests = dir.path().join("k8s");
    let out = std::process::Command::new(jina_bin())
        .args(["export", "kubernetes"])
        .arg(&file)
        .arg(&manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let cluster = local_cluster::LocalCluster::kubernetes(
        &manifests,
        &jina_bin(),
        &guests,
        &dir.path().join("cache"),
    );
    let ready = started.elapsed();
    let (rate, p50, p99) = demo_workload(&cluster.hosts["gateway"], 8080).await;
    vec![
        Row {
            name: "exported demo Flow, 6 units in 8 processes: index 1,200 texts".into(),
            value: format!("{rate:.0} texts/s indexed"),
            baseline: format!("{flow_rate:.0} texts/s in one `flow` process"),
            ratio: rate / flow_rate,
            ratio_label: "x of flow",
            target: "-".into(),
            met: true,
        },
        Row {
            name: "exported demo Flow: search latency".into(),
            value: format!("p50 {} / p99 {}", fmt_time(p50), fmt_time(p99)),
            baseline: format!("p50 {} in one `flow` process", fmt_time(flow_p50)),
            ratio: p50.as_secs_f64() / flow_p50.as_secs_f64(),
            ratio_label: "x of flow",
            target: "-".into(),
            met: true,
        },
        Row {
            name: "exported demo Flow: all units started and ready (cold compile cache)".into(),
            value: fmt_time(ready),
            baseline: "-".into(),
            ratio: 1.0,
            ratio_label: "-",
            target: "-".into(),
            met: true,
        },
    ]
}

/// A `jina-wasm daemon` on 127.0.0.2 with one tenant (`bench-token-1`).
struct DaemonProcess(
    std::process::Child,
    String,
    #[allow(dead_code)] tempfile::TempDir,
);

impl DaemonProcess {
    fn start() -> DaemonProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tenants.yml"),
            "tenants:\n  - name: bench\n    token: bench-token-1\n",
        )
        .unwrap();
        let mut child = std::process::Command::new(jina_bin())
            .args(["daemon", "--host", "127.0.0.2", "--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--tenants")
            .arg(dir.path().join("tenants.yml"))
            .env("JINA_WASM_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let ready = ready_line(&mut child);
        DaemonProcess(child, format!("127.0.0.2:{}", ready["port"]), dir)
    }
}

/// The JSON line a `jina-wasm` command prints once it is ready.
fn ready_line(child: &mut std::process::Child) -> Value {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("no ready line ({e}): {line}"))
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }
}

/// Upload (into a fresh workspace) plus create, until the Pod is ready; then delete it.
async fn remote_pod_start(
    client: &jina_wasm::client_daemon::DaemonClient,
    workspace: &str,
) -> Duration {
    use hyper::Method;
    let file = wasm("passthrough");
    let start = Instant::now();
    client
        .upload(
            workspace,
            &[("passthrough.wasm".to_string(), file.as_path())],
        )
        .await
        .unwrap();
    let pod = client
        .json(
            Method::POST,
            "/pods",
            &serde_json::json!({"workspace": workspace, "uses": "passthrough.wasm"}),
        )
        .await
        .unwrap();
    let took = start.elapsed();
    client
        .json(
            Method::DELETE,
            &format!("/pods/{}", pod["id"].as_str().unwrap()),
            &Value::Null,
        )
        .await
        .unwrap();
    took
}

async fn daemon_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let daemon = DaemonProcess::start();
    let client = jina_wasm::client_daemon::DaemonClient::new(&daemon.1, "bench-token-1");
    // The first start compiles the component into the daemon's (empty) cache.
    let cold = remote_pod_start(&client, "cold").await;
    let mut warm: Vec<Duration> = Vec::new();
    for i in 0..7 {
        warm.push(remote_pod_start(&client, &format!("warm-{i}")).await);
    }
    warm.sort();
    // Baseline: a local `jina-wasm pea` process, from spawn to its ready line.
    let cache = tempfile::tempdir().unwrap();
    drop(PeaProcess::start(cache.path()));
    let local = median(7, || drop(PeaProcess::start(cache.path())));
    let remote = warm[warm.len() / 2];
    rows.push(Row {
        name: "remote Pod start on a daemon: upload 208 KiB .wasm + create, until ready (compiled cache warm)".into(),
        value: fmt_time(remote),
        baseline: format!("local `jina-wasm pea` start {}; first remote start (compiling) {}", fmt_time(local), fmt_time(cold)),
        ratio: remote.as_secs_f64() / local.as_secs_f64(),
        ratio_label: "remote/local",
        target: "-".into(),
        met: true,
    });

    // Added latency of a remote hop: the same one-Pod Flow, its Pod here or on the daemon.
    let docs = [workload_doc(1)];
    let local_flow = FlowProcess::start("pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n");
    let (local50, local99) = http_latency("127.0.0.1", local_flow.1, "/", &docs, 500).await;
    drop(local_flow);
    let remote_flow = FlowProcess::start(&format!(
        "with:\n  daemon_token: bench-token-1\npods:\n  - name: echo\n    uses: {{W}}/passthrough.wasm\n    host: {}\n",
        daemon.1
    ));
    let (remote50, remote99) = http_latency("127.0.0.1", remote_flow.1, "/", &docs, 500).await;
    drop(remote_flow);
    rows.push(Row {
        name: "gateway -> passthrough -> gateway, 1-doc requests, the Pod on a daemon (127.0.0.2) vs local".into(),
        value: format!("p50 {} / p99 {}", fmt_time(remote50), fmt_time(remote99)),
        baseline: format!("local p50 {} / p99 {}; added p50 {}", fmt_time(local50), fmt_time(local99), fmt_time(remote50.saturating_sub(local50))),
        ratio: remote50.as_secs_f64() / local50.as_secs_f64(),
        ratio_label: "remote/local p50",
        target: "-".into(),
        met: true,
    });
    rows
}

/// A Pea of `guest` owned by `tenant`, in this process.
async fn tenant_pea(
    runtime: &Arc<Runtime>,
    guest: &str,
    tenant: &str,
    sandbox: Sandbox,
) -> jina_wasm::pea::PeaHandle {
    let mut config = pea_config(guest, tenant, None);
    config.executor.sandbox = Sandbox {
        tenant: Some(jina_wasm::executor::TenantSpec {
            name: tenant.into(),
            memory: 1 << 30,
        }),
        ..sandbox
    };
    jina_wasm::pea::start(runtime.clone(), config)
        .await
        .unwrap()
}

/// Keeps another tenant's Pea busy with `endpoint` (each request runs until
/// its limit stops it) until the returned flag is set.
fn runaway(
    pea: &jina_wasm::pea::PeaHandle,
    endpoint: &'static str,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<u64>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let target = Target::pea(&pea.addresses.input, &pea.addresses.output);
    let task = tokio::spawn(async move {
        let mut client = Client::open(&target).await.unwrap();
        client.timeout = Duration::from_secs(60);
        let mut calls = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let message = Message::data(
                Envelope::request(endpoint, ""),
                &Body::from_documents(&[workload_doc(0)]),
            );
            let reply = client.call(message).await.unwrap();
            assert!(
                reply.envelope.is_error(),
                "the runaway's call was stopped by a limit"
            );
            calls += 1;
        }
        client.close().await;
        calls
    });
    (stop, task)
}

/// The noisy-neighbour figure: round trips of a well-behaved tenant's
/// text-encoder Pea (10 documents a request) alone, then beside another
/// tenant's Pea that spins until its time limit stops it, request after
/// request, then beside one that allocates until its memory limit stops it.
/// All Peas in this one process, sharing the runtime and the machine.
async fn tenant_rows(runtime: Arc<Runtime>) -> Vec<Row> {
    let mut rows = Vec::new();
    let good = tenant_pea(
        &runtime,
        "text-encoder",
        "good-tenant",
        Sandbox {
            background_after: Some(jina_wasm::executor::DEMOTE_AFTER),
            ..Sandbox::default()
        },
    )
    .await;
    let (input, output) = (good.addresses.input.clone(), good.addresses.output.clone());
    let docs: Vec<Document> = (0..10)
        .map(|i| Document::from_text(SENTENCES[i % 4]))
        .collect();
    let message = Message::data(Envelope::request("/", ""), &Body::from_documents(&docs));
    let (alone50, alone99) = round_trips(&input, &output, &message, 3000).await;
    // Runaway calls of 500 ms: each spends its first 100 ms at normal priority
    // (--background-after), so the measurement covers both phases.
    let lowered = Sandbox {
        background_after: Some(jina_wasm::executor::DEMOTE_AFTER),
        ..Sandbox::default()
    };
    let cpu_hog = Sandbox {
        call_timeout: Duration::from_millis(500),
        ..lowered.clone()
    };
    let memory_hog = Sandbox {
        memory_limit: 256 << 20,
        ..lowered.clone()
    };
    let unlowered = Sandbox {
        background_after: None,
        ..cpu_hog.clone()
    };
    let cases = [
        ("a CPU runaway (/loop, 500ms limit)", "/loop", cpu_hog, 8.0),
        (
            "a memory hog (/alloc to 256 MiB)",
            "/alloc",
            memory_hog,
            f64::INFINITY,
        ),
        (
            "a CPU runaway never lowered (--background-after 0)",
            "/loop",
            unlowered,
            f64::INFINITY,
        ),
    ];
    for (what, endpoint, sandbox, p99_bound) in cases {
        let bad = tenant_pea(&runtime, "misbehave", "bad-tenant", sandbox).await;
        let (stop, task) = runaway(&bad, endpoint);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (beside50, beside99) = round_trips(&input, &output, &message, 3000).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let calls = task.await.unwrap();
        bad.terminate();
        let _ = bad.wait().await;
        // The bound docs/limits.md states ("Noisy neighbours"): p50 within
        // 1.5x, p99 within 8x, on a shared two-core machine.
        for (label, beside, alone, bound) in [
            ("p50", beside50, alone50, 1.5),
            ("p99", beside99, alone99, p99_bound),
        ] {
            let ratio = beside.as_secs_f64() / alone.as_secs_f64();
            rows.push(Row {
                name: format!(
                    "text-encoder Pea (10 docs) beside {what}, {label} ({calls} runaway calls)"
                ),
                value: fmt_time(beside),
                baseline: format!("alone {}", fmt_time(alone)),
                ratio,
                ratio_label: "x alone",
                target: if bound.is_finite() {
                    format!("<= {bound}x alone")
                } else {
                    "(comparison)".into()
                },
                met: ratio <= bound,
            });
        }
    }
    good.terminate();
    let _ = good.wait().await;
    rows
}

// ---------------------------------------------------------------------------
// 14. hnsw-indexer (docs/hnsw.md): recall, latency and memory at 100k vectors,
// against vector-indexer (exact) and hnswlib (native) on the same data.

/// Vectors like sentence embeddings: 100 clusters in a 24-dimensional latent
/// space, projected to `dim` by one fixed random matrix, plus a little noise
/// in every dimension. (Real embeddings have a low intrinsic dimension;
/// isotropic noise in all 128 would be a worst case no index is built for.)
fn embeddings(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    const LATENT: usize = 24;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    // The projection and the centres are the same for every call.
    let projection: Vec<f32> = (0..LATENT * dim).map(|_| uniform()).collect();
    let centres: Vec<f32> = (0..100 * LATENT).map(|_| uniform()).collect();
    let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    (0..n)
        .map(|i| {
            let c = &centres[(i % 100) * LATENT..(i % 100 + 1) * LATENT];
            let latent: Vec<f32> = c.iter().map(|x| x + 0.5 * uniform()).collect();
            (0..dim)
                .map(|j| {
                    latent
                        .iter()
                        .enumerate()
                        .map(|(l, x)| x * projection[l * dim + j])
                        .sum::<f32>()
                        + 0.05 * uniform()
                })
                .collect()
        })
        .collect()
}

/// A Python with hnswlib, in a virtualenv under the target directory made
/// by the bench itself (once); `Err` says why there is none.
fn hnswlib_python() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let requirements = root.join("examples/executors/hnsw-indexer/bench/hnswlib-requirements.txt");
    let venv = wasm("passthrough")
        .parent()
        .unwrap()
        .join("../../bench-hnswlib-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".installed");
    let wanted = std::fs::read_to_string(&requirements).map_err(|e| e.to_string())?;
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let run = |cmd: &mut std::process::Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string())
        }
    };
    eprintln!("hnsw: installing hnswlib into {} (once)", venv.display());
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&marker, wanted).map_err(|e| e.to_string())?;
    Ok(python)
}

fn write_f32s(path: &std::path::Path, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn hnsw_rows(runtime: &Arc<Runtime>) -> Vec<Row> {
    // `HNSW_DOCUMENTS` shrinks the run (a quick check); the figures are at 100k.
    let n = std::env::var("HNSW_DOCUMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000usize);
    const DIM: usize = 128;
    const QUERIES: usize = 1000;
    const K: usize = 10;
    const EFS: [usize; 9] = [10, 16, 24, 32, 48, 64, 96, 128, 256];
    const DEFAULT_EF: usize = 64;
    // Interleaved rounds against hnswlib, each of PASSES passes over the queries.
    const ROUNDS: usize = 9;
    const PASSES: usize = 3;
    let mut rows = Vec::new();
    let data = embeddings(n, DIM, 1);
    let queries = embeddings(QUERIES, DIM, 2);
    let docs: Vec<Document> = data
        .iter()
        .enumerate()
        .map(|(i, v)| Document {
            id: format!("d{i}"),
            embedding: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    let query_docs: Vec<Document> = queries
        .iter()
        .enumerate()
        .map(|(i, v)| Document {
            id: format!("q{i}"),
            embedding: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    // `HNSW_GUEST`: another hnsw_indexer.wasm (say, an older build) to compare.
    let guest = |name: &str| match std::env::var_os("HNSW_GUEST") {
        Some(path) if name == "hnsw-indexer" => PathBuf::from(path),
        _ => wasm(name),
    };
    let start_wasm = |wasm: &std::path::Path, name: &str, dir: &std::path::Path, config: Value| {
        let component = runtime.load(wasm).unwrap();
        let sandbox = Sandbox {
            workspace: Some(dir.to_path_buf()),
            ..Sandbox::default()
        };
        Executor::start(
            runtime.clone(),
            component,
            ExecutorSpec {
                name: name.into(),
                config,
                sandbox,
            },
        )
        .unwrap()
    };
    let start_in = |name: &str, dir: &std::path::Path, config: Value| {
        start_wasm(&guest(name), name, dir, config)
    };
    // One query per call: the latency a client sees from the executor.
    let one_by_one = |ix: &mut Executor, params: &Value| -> (Vec<Vec<String>>, Vec<Duration>) {
        let mut found = Vec::with_capacity(QUERIES);
        let mut times = Vec::with_capacity(QUERIES);
        for q in &query_docs {
            let t = Instant::now();
            let out = ix
                .handle("/search", std::slice::from_ref(q), params)
                .unwrap();
            times.push(t.elapsed());
            found.push(out[0].matches.iter().map(|m| m.id.clone()).collect());
        }
        times.sort();
        (found, times)
    };

    // The exact answers, from vector-indexer (brute force, cosine).
    let exact_dir = tempfile::tempdir().unwrap();
    let mut exact = start_in("vector-indexer", exact_dir.path(), Value::Null);
    for chunk in docs.chunks(1000) {
        exact.handle("/index", chunk, &Value::Null).unwrap();
    }
    let (truth, exact_times) = one_by_one(&mut exact, &serde_json::json!({"top_k": K}));
    drop(exact);
    let recall = |found: &[Vec<String>]| -> f64 {
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
            .sum();
        hits as f64 / (QUERIES * K) as f64
    };

    // Build.
    let dir = tempfile::tempdir().unwrap();
    let mut ix = start_in("hnsw-indexer", dir.path(), serde_json::json!({"dim": DIM}));
    let t = Instant::now();
    for chunk in docs.chunks(1000) {
        ix.handle("/index", chunk, &Value::Null).unwrap();
    }
    let build = t.elapsed();
    let build_rate = n as f64 / build.as_secs_f64();
    // `HNSW_BASELINE_GUEST`: another hnsw_indexer.wasm (main's, say) built on
    // the same data, and searched in the same interleaved rounds below.
    let base_dir = tempfile::tempdir().unwrap();
    let mut base_ix = std::env::var_os("HNSW_BASELINE_GUEST").map(|path| {
        let mut base = start_wasm(
            std::path::Path::new(&path),
            "hnsw-indexer",
            base_dir.path(),
            serde_json::json!({"dim": DIM}),
        );
        for chunk in docs.chunks(1000) {
            base.handle("/index", chunk, &Value::Null).unwrap();
        }
        base
    });
    let stats = ix
        .handle("/stats", &[], &Value::Null)
        .unwrap()
        .remove(0)
        .tags;
    let stat = |key: &str| stats.get(key).and_then(Value::as_u64).unwrap_or(0) as f64;

    // The recall/latency curve, one query per call; and batched throughput.
    let mut curve = Vec::new();
    for ef in EFS {
        let params = serde_json::json!({"top_k": K, "ef": ef});
        let (found, times) = one_by_one(&mut ix, &params);
        let t = Instant::now();
        for batch in query_docs.chunks(100) {
            ix.handle("/search", batch, &params).unwrap();
        }
        let qps = QUERIES as f64 / t.elapsed().as_secs_f64();
        curve.push((
            ef,
            recall(&found),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            qps,
        ));
    }
    let (exact_p50, exact_p99) = (
        percentile(&exact_times, 0.5),
        percentile(&exact_times, 0.99),
    );
    let &(_, default_recall, p50, p99, _) = curve.iter().find(|c| c.0 == DEFAULT_EF).unwrap();
    rows.push(Row {
        name: format!("hnsw-indexer recall@10 vs exact (vector-indexer), {n} x {DIM}, {QUERIES} queries, default ef_search {DEFAULT_EF} (m 16, ef_construction 200)"),
        value: format!("{default_recall:.3}"),
        baseline: "exact 1.000".into(),
        ratio: default_recall,
        ratio_label: "x exact",
        target: ">= 0.95".into(),
        met: default_recall >= 0.95,
    });
    for &(ef, r, p50, p99, qps) in &curve {
        rows.push(Row {
            name: format!("hnsw-indexer ef {ef}: recall@10 {r:.3}, one query per call p50 (p99 {}), batched {qps:.0} queries/s", fmt_time(p99)),
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
            "hnsw-indexer search p50 / p99 at {n} x {DIM}, default ef (one query per call)"
        ),
        value: format!("{} / {}", fmt_time(p50), fmt_time(p99)),
        baseline: format!(
            "vector-indexer {} / {}",
            fmt_time(exact_p50),
            fmt_time(exact_p99)
        ),
        ratio: exact_p99.as_secs_f64() / p99.as_secs_f64(),
        ratio_label: "x faster (p99)",
        target: "no target at 100k (>= 20x at 1M)".into(),
        met: true,
    });
    rows.push(Row {
        name: format!("hnsw-indexer /index build rate, {n} x {DIM} in 1,000-doc requests (ef_construction 200)"),
        value: format!("{build_rate:.0} docs/s"),
        baseline: "-".into(),
        ratio: build.as_secs_f64(),
        ratio_label: "s total",
        target: "no target".into(),
        met: true,
    });
    let raw = (DIM * 4) as f64;
    rows.push(Row {
        name: format!("hnsw-indexer memory per vector at {n} x {DIM}: index structures (guest linear memory {:.0} B/vector)", stat("linear_memory_bytes") / n as f64),
        value: format!("{:.0} B", stat("index_bytes") / n as f64),
        baseline: format!("raw vector {raw:.0} B"),
        ratio: stat("index_bytes") / n as f64 / raw,
        ratio_label: "x raw",
        target: "no target".into(),
        met: true,
    });

    // hnswlib on the same data and answers, one thread.
    match hnswlib_python() {
        Ok(python) => {
            let tmp = tempfile::tempdir().unwrap();
            write_f32s(&tmp.path().join("data.f32"), &data);
            write_f32s(&tmp.path().join("queries.f32"), &queries);
            let truth_rows: Vec<u8> = truth
                .iter()
                .flat_map(|t| t.iter().map(|id| id[1..].parse::<u32>().unwrap()))
                .flat_map(u32::to_le_bytes)
                .collect();
            std::fs::write(tmp.path().join("truth.u32"), truth_rows).unwrap();
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("examples/executors/hnsw-indexer/bench/hnswlib_peer.py");
            let mut child = std::process::Command::new(python)
                .arg(script)
                .arg(tmp.path())
                .args([DIM, 16, 200].map(|x| x.to_string()))
                .args(EFS.map(|x| x.to_string()))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut to_peer = child.stdin.take().unwrap();
            let mut from_peer = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut read_line = || -> Value {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut from_peer, &mut line).unwrap();
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("hnswlib_peer.py failed ({e}): {line:?}"))
            };
            let peer = read_line();
            let peer_curve: Vec<(u64, f64, f64)> = peer["curve"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["ef"].as_u64().unwrap(),
                        c["recall"].as_f64().unwrap(),
                        c["qps"].as_f64().unwrap(),
                    )
                })
                .collect();
            // Equal recall: hnswlib's cheapest ef that reaches ours (else its best).
            let &(peer_ef, peer_recall, _) = peer_curve
                .iter()
                .find(|c| c.1 >= default_recall)
                .unwrap_or(peer_curve.last().unwrap());
            // Interleaved rounds at the matched ef (ours, hnswlib, ours, ...),
            // so both see the same neighbours on a shared machine; the
            // median of the per-round ratios.
            let params = serde_json::json!({"top_k": K, "ef": DEFAULT_EF});
            let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let (mut base_qps, mut base_ratios) = (Vec::new(), Vec::new());
            let passes = |ix: &mut Executor| {
                let t = Instant::now();
                for _ in 0..PASSES {
                    for batch in query_docs.chunks(100) {
                        ix.handle("/search", batch, &params).unwrap();
                    }
                }
                (PASSES * QUERIES) as f64 / t.elapsed().as_secs_f64()
            };
            for _ in 0..ROUNDS {
                let q = passes(&mut ix);
                if let Some(base) = &mut base_ix {
                    let b = passes(base);
                    base_qps.push(b);
                    base_ratios.push(q / b);
                }
                std::io::Write::write_all(&mut to_peer, format!("{peer_ef} {PASSES}\n").as_bytes())
                    .unwrap();
                let p = read_line()["qps"].as_f64().unwrap();
                ours.push(q);
                theirs.push(p);
                ratios.push(q / p);
            }
            drop(to_peer);
            let _ = child.wait();
            let mid = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (qps, peer_qps, ratio) = (mid(&mut ours), mid(&mut theirs), mid(&mut ratios));
            let spread = format!("{:.2}-{:.2}x", ratios[0], ratios[ratios.len() - 1]);
            if !base_qps.is_empty() {
                let (b, r) = (mid(&mut base_qps), mid(&mut base_ratios));
                rows.push(Row {
                    name: format!(
                        "hnsw-indexer batched queries/s at ef {DEFAULT_EF}: this guest vs HNSW_BASELINE_GUEST on the same data, in the same {ROUNDS} rounds (baseline vs hnswlib {:.2}x; per-round ratios {:.2}-{:.2}x)",
                        b / peer_qps,
                        base_ratios[0],
                        base_ratios[base_ratios.len() - 1]
                    ),
                    value: format!("{qps:.0} q/s"),
                    baseline: format!("baseline guest {b:.0} q/s"),
                    ratio: r,
                    ratio_label: "x baseline",
                    target: "no target".into(),
                    met: true,
                });
            }
            rows.push(Row {
                name: format!(
                    "hnsw-indexer batched queries/s, ef {DEFAULT_EF} (recall {default_recall:.3}), vs hnswlib {} native at equal recall (ef {peer_ef}, recall {peer_recall:.3}), one thread each, {ROUNDS} interleaved rounds of {PASSES} passes: medians (per-round ratios {spread})",
                    peer["hnswlib"].as_str().unwrap_or("?")
                ),
                value: format!("{qps:.0} q/s"),
                baseline: format!("hnswlib {peer_qps:.0} q/s"),
                ratio,
                ratio_label: "x native",
                target: ">= 0.5x".into(),
                met: ratio >= 0.5,
            });
            let peer_build = n as f64 / peer["build_s"].as_f64().unwrap();
            rows.push(Row {
                name: "hnsw-indexer build rate vs hnswlib add_items (m 16, ef_construction 200, one thread)".into(),
                value: format!("{build_rate:.0} docs/s"),
                baseline: format!("hnswlib {peer_build:.0} docs/s"),
                ratio: build_rate / peer_build,
                ratio_label: "x native",
                target: "no target".into(),
                met: true,
            });
            eprintln!("hnswlib curve (ef, recall, q/s): {peer_curve:?}");
        }
        Err(why) => rows.push(Row {
            name: "hnsw-indexer vs hnswlib".into(),
            value: "not run".into(),
            baseline: format!("hnswlib could not be installed: {why}"),
            ratio: 0.0,
            ratio_label: "",
            target: ">= 0.5x".into(),
            met: false,
        }),
    }
    // Dump, then restart (load) from the snapshot.
    let t = Instant::now();
    ix.dump().unwrap();
    let dump = t.elapsed();
    drop(ix);
    let snapshot = std::fs::metadata(dir.path().join("hnsw-index.snapshot")).map_or(0, |m| m.len());
    let t = Instant::now();
    let mut back = start_in("hnsw-indexer", dir.path(), serde_json::json!({"dim": DIM}));
    let load = t.elapsed();
    let again = back
        .handle(
            "/search",
            &query_docs[..1],
            &serde_json::json!({"top_k": K}),
        )
        .unwrap();
    assert_eq!(again[0].matches.len(), K, "the reloaded index answers");
    drop(back);
    rows.push(Row {
        name: format!(
            "hnsw-indexer on disk per vector ({} snapshot for {n} x {DIM})",
            mib(snapshot)
        ),
        value: format!("{:.0} B", snapshot as f64 / n as f64),
        baseline: format!("raw vector {raw:.0} B"),
        ratio: snapshot as f64 / n as f64 / raw,
        ratio_label: "x raw",
        target: "no target".into(),
        met: true,
    });
    rows.push(Row {
        name: format!(
            "hnsw-indexer DUMP / restart (executor start + snapshot load) at {n} x {DIM}"
        ),
        value: format!("{} / {}", fmt_time(dump), fmt_time(load)),
        baseline: "-".into(),
        ratio: load.as_secs_f64() * 1e6 / n as f64,
        ratio_label: "µs/doc to load",
        target: "load <= 5 s at 1M (not run here)".into(),
        met: true,
    });

    rows
}

// ---------------------------------------------------------------------------
// 15. minilm-encoder

/// The model `make models` installs (`make bench` runs it first).
fn minilm_model() -> PathBuf {
    let dir = wasm("passthrough")
        .parent()
        .unwrap()
        .join("../../models/all-MiniLM-L6-v2");
    assert!(
        dir.join(".installed").exists(),
        "{} is missing: run `make models`",
        dir.display()
    );
    dir.canonicalize().unwrap()
}

/// 256 sentences: the demo corpus split at full stops, numbered to differ.
fn minilm_sentences() -> Vec<String> {
    let corpus = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/corpus.txt"),
    )
    .unwrap();
    let pool: Vec<String> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|d| {
            d["text"]
                .as_str()
                .unwrap_or_default()
                .split(". ")
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    (0..256)
        .map(|i| format!("{} ({i})", pool[i % pool.len()]))
        .collect()
}

/// `jina-wasm pod --parallel N` of the MiniLM encoder as its own process.
fn minilm_pod(cache: &std::path::Path, replicas: usize) -> PeaProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(jina_bin())
        .args(["pod", "--uses"])
        .arg(wasm("minilm-encoder"))
        .args([
            "--parallel",
            &replicas.to_string(),
            "--volumes",
            &format!("{}:/model:ro", minilm_model().display()),
        ])
        .env("JINA_WASM_CACHE_DIR", cache)
        .env("JINA_WASM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("target/debug/jina-wasm: run `cargo build` first (make bench does)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    PeaProcess(child, serde_json::from_str(&line).unwrap())
}

/// Sentences per second through a Pod process: `requests` requests of `docs`.
async fn minilm_rate(pod: &PeaProcess, docs: &[Document], requests: usize) -> f64 {
    let mut client = Client::open(&Target::pea(&pod.addr("in"), &pod.addr("out")))
        .await
        .unwrap();
    client.timeout = Duration::from_secs(600);
    let make = |n: usize| {
        (0..n)
            .map(|_| {
                Message::data(
                    Envelope::request("/encode", ""),
                    &Body::from_documents(docs),
                )
            })
            .collect::<Vec<_>>()
    };
    client.stream(make(2), |_| Ok(())).await.unwrap();
    let start = Instant::now();
    client.stream(make(requests), |_| Ok(())).await.unwrap();
    let rate = (requests * docs.len()) as f64 / start.elapsed().as_secs_f64();
    client.close().await;
    rate
}

/// The reference implementation's sentences per second (NumPy, float32,
/// batches of 32, one BLAS thread as the guest has one), in its own virtualenv.
fn minilm_python_rate(texts: &[String]) -> Option<f64> {
    use std::io::Write;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = wasm("passthrough")
        .parent()
        .unwrap()
        .join("../../minilm-reference-venv");
    let requirements =
        std::fs::read_to_string(root.join("tests/interop/minilm/requirements.txt")).unwrap();
    if std::fs::read_to_string(venv.join(".installed"))
        .ok()
        .as_deref()
        != Some(requirements.as_str())
    {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .ok()?
            .success()
            && std::process::Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(root.join("tests/interop/minilm/requirements.txt"))
                .status()
                .ok()?
                .success();
        if !ok {
            return None;
        }
        std::fs::write(venv.join(".installed"), requirements).ok()?;
    }
    let mut child = std::process::Command::new(venv.join("bin/python"))
        .arg(root.join("tests/interop/minilm/reference.py"))
        .arg(minilm_model())
        .args(["--bench", "3"])
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()?
        .write_all(serde_json::json!({"texts": texts}).to_string().as_bytes())
        .ok()?;
    let out = child.wait_with_output().ok()?;
    serde_json::from_slice::<Value>(&out.stdout).ok()?["sentences_per_s"].as_f64()
}

/// Section 15: all-MiniLM-L6-v2 in the sandbox: sentences per second of the wasm
/// encoder in batches of 32 against the same crate built natively (one
/// thread, as the guest) and the NumPy reference; replicas on two cores;
/// start time from the compiled-component cache; component size; resident
/// memory per replica.
async fn minilm_rows(cached: &Arc<Runtime>, uncached: &Arc<Runtime>) -> Vec<Row> {
    use jina_guest_sdk::Executor as _;
    let mut rows = Vec::new();
    let model = minilm_model();
    let path = wasm("minilm-encoder");
    let size = std::fs::metadata(&path).unwrap().len();
    let sandbox = Sandbox {
        volumes: vec![jina_wasm::executor::Volume {
            host: model.clone(),
            guest: "/model".into(),
            read_only: true,
        }],
        ..Sandbox::default()
    };
    let spec = ExecutorSpec {
        name: "minilm-encoder".into(),
        config: Value::Null,
        sandbox,
    };

    let texts = minilm_sentences();
    let docs: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Document {
            id: i.to_string(),
            text: Some(t.clone()),
            ..Default::default()
        })
        .collect();
    // Executors are driven synchronously (they block on their own calls):
    // off the async reactor, as the Pea does.
    tokio::task::block_in_place(|| {
        // Start: compile (uncached) or load the cached artifact, instantiate, init
        // (which reads the 87 MiB of weights and the tokenizer).
        let cold_start = Instant::now();
        drop(
            Executor::start(
                uncached.clone(),
                uncached.load(&path).unwrap(),
                spec.clone(),
            )
            .unwrap(),
        );
        let cold = cold_start.elapsed();
        cached.load(&path).unwrap();
        let warm = median(5, || {
            drop(
                Executor::start(cached.clone(), cached.load(&path).unwrap(), spec.clone()).unwrap(),
            )
        });
        rows.push(Row {
            name: "minilm-encoder start from the cache (load, instantiate, init with the model)"
                .into(),
            value: fmt_time(warm),
            baseline: format!("cold compile + start {}", fmt_time(cold)),
            ratio: cold.as_secs_f64() / warm.as_secs_f64(),
            ratio_label: "x faster",
            target: format!("(component {})", mib(size)),
            met: true,
        });

        // Throughput, batches of 32: wasm (the host's sgemm through
        // jina:linalg, the default, and the component's own simd128 sgemm)
        // vs the same handler native.
        let encode_all = |spec: &ExecutorSpec| {
            let mut encoder =
                Executor::start(cached.clone(), cached.load(&path).unwrap(), spec.clone()).unwrap();
            median(3, || {
                for batch in docs.chunks(32) {
                    encoder.handle("/encode", batch, &Value::Null).unwrap();
                }
            })
        };
        let wasm_time = encode_all(&spec);
        let wasm_kernel_time = encode_all(&ExecutorSpec {
            config: serde_json::json!({"kernel": "wasm"}),
            ..spec.clone()
        });
        let config =
            jina_guest_sdk::Config::parse(&serde_json::json!({"model_dir": model}).to_string())
                .unwrap();
        let mut native = minilm_encoder::MinilmEncoder::init(config).unwrap();
        let handler = minilm_encoder::MinilmEncoder::routes()
            .find("/encode")
            .unwrap();
        let no_params = jina_guest_sdk::Params::parse("{}").unwrap();
        let sdk_docs: Vec<jina_guest_sdk::Document> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| jina_guest_sdk::Document::new(i.to_string()).with_text(t.clone()))
            .collect();
        let native_time = median(3, || {
            for batch in sdk_docs.chunks(32) {
                std::hint::black_box(handler(&mut native, batch.to_vec(), &no_params).unwrap());
            }
        });
        let wasm_rate = texts.len() as f64 / wasm_time.as_secs_f64();
        let wasm_kernel_rate = texts.len() as f64 / wasm_kernel_time.as_secs_f64();
        let native_rate = texts.len() as f64 / native_time.as_secs_f64();
        rows.push(Row {
            name: "minilm-encoder (wasm, host sgemm via jina:linalg, batches of 32) vs the same crate native, 1 thread".into(),
            value: format!("{wasm_rate:.0} sentences/s"),
            baseline: format!("native {native_rate:.0} sentences/s"),
            ratio: wasm_rate / native_rate,
            ratio_label: "x native",
            target: ">= 0.5x native".into(),
            met: wasm_rate / native_rate >= 0.5,
        });
        rows.push(Row {
            name: "minilm-encoder (wasm, its own simd128 sgemm: kernel: wasm) vs the same crate native, 1 thread".into(),
            value: format!("{wasm_kernel_rate:.0} sentences/s"),
            baseline: format!("native {native_rate:.0} sentences/s"),
            ratio: wasm_kernel_rate / native_rate,
            ratio_label: "x native",
            target: ">= 0.5x native".into(),
            met: wasm_kernel_rate / native_rate >= 0.5,
        });
        match minilm_python_rate(&texts) {
            Some(python_rate) => rows.push(Row {
                name: "minilm-encoder (wasm, host sgemm) vs the NumPy reference (float32, 1 BLAS thread)"
                    .into(),
                value: format!("{wasm_rate:.0} sentences/s"),
                baseline: format!("NumPy {python_rate:.0} sentences/s"),
                ratio: wasm_rate / python_rate,
                ratio_label: "x NumPy",
                target: "(comparison)".into(),
                met: true,
            }),
            None => {
                eprintln!("minilm: the NumPy reference could not run (no python3 venv or PyPI)")
            }
        }
        drop(native);
    });

    // Replicas: one Pod process with 1, then 2 replicas; 32 sentences a
    // request. Resident memory after serving, per replica by difference.
    let cache = tempfile::tempdir().unwrap();
    let batch = &docs[..32];
    let mut rates = Vec::new();
    let mut rss = Vec::new();
    for replicas in [1usize, 2] {
        let pod = minilm_pod(cache.path(), replicas);
        rates.push(minilm_rate(&pod, batch, 8 * replicas).await);
        rss.push(process_rss(pod.0.id()));
    }
    rows.push(Row {
        name: "minilm-encoder Pod --parallel 2 vs 1 replica (2 cores, 32 sentences a request)"
            .into(),
        value: format!("{:.0} sentences/s", rates[1]),
        baseline: format!("1 replica {:.0} sentences/s", rates[0]),
        ratio: rates[1] / rates[0],
        ratio_label: "x one replica",
        target: ">= 1.5x".into(),
        met: rates[1] / rates[0] >= 1.5,
    });
    let per_replica = rss[1].saturating_sub(rss[0]);
    rows.push(Row {
        name: "minilm-encoder RSS per replica (Pod process, after serving)".into(),
        value: mib(per_replica),
        baseline: format!("Pod with 1 replica {}", mib(rss[0])),
        ratio: per_replica as f64
            / std::fs::metadata(model.join("model.safetensors"))
                .unwrap()
                .len() as f64,
        ratio_label: "x the weights file",
        target: "(each replica holds its own copy)".into(),
        met: true,
    });
    rows
}

/// A Flow serving HTTP and gRPC; returns it with its (HTTP, gRPC) ports.
fn grpc_flow(yaml: &str) -> (std::process::Child, u16, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let guests = wasm("passthrough").parent().unwrap().to_path_buf();
    let file = dir.path().join("flow.yml");
    std::fs::write(&file, yaml.replace("{W}", guests.to_str().unwrap())).unwrap();
    let mut child = std::process::Command::new(jina_bin())
        .args(["flow", "--protocol", "http,grpc", "--uses"])
        .arg(&file)
        .env("JINA_WASM_CACHE_DIR", dir.path().join("cache"))
        .env("JINA_WASM_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = ready_line(&mut child);
    let port = |p: &str| ready["ports"][p].as_u64().unwrap() as u16;
    (child, port("http"), port("grpc"), dir)
}

#[path = "../tests/support/grpc_request.rs"]
mod grpc_request;
use grpc_request::grpc_request;

async fn grpc_channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

/// The request of [`grpc_request`] with its documents encoded once, as a
/// load generator (or Jina's client, which serializes each request once)
/// sends the same request again: cloning it clones a reference.
fn grpc_lean_request(docs: &[Document]) -> jina_wasm::flow::grpc::lean::DataRequest {
    use prost::Message;
    let request = grpc_request("bench", docs);
    jina_wasm::flow::grpc::lean::DataRequest::new(
        request.header,
        None,
        Vec::new(),
        Some(request.data.unwrap().encode_to_vec().into()),
    )
}

/// Checks an answer: success, and `sent` documents back (each answer's
/// documents are read into a body, as the gateway reads a request's).
fn grpc_check(mut reply: jina_wasm::flow::grpc::lean::DataRequest, sent: usize) {
    let status = reply.header.as_ref().unwrap().status.as_ref().unwrap();
    assert_eq!(status.code, 0, "{status:?}");
    let (body, count) = reply.take_docs();
    assert_eq!((count, body.unwrap().len()), (sent, sent));
}

/// Documents per second through one `Call` stream (as Jina's client sends),
/// the gateway keeping its `prefetch` (8) requests in flight.
async fn grpc_rate(port: u16, docs: &[Document], requests: usize) -> f64 {
    use futures::StreamExt;
    use jina_wasm::flow::grpc::lean_pb::jina_rpc_client::JinaRpcClient;
    let mut client =
        JinaRpcClient::new(grpc_channel(port).await).max_decoding_message_size(64 << 20);
    let request = grpc_lean_request(docs);
    let start = Instant::now();
    let outgoing = futures::stream::iter((0..requests).map(move |_| {
        jina_wasm::flow::grpc::lean::DataRequest::new(
            request.header.clone(),
            None,
            Vec::new(),
            request.data.clone(),
        )
    }));
    let mut replies = client.call(outgoing).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(reply) = replies.next().await {
        grpc_check(reply.unwrap(), docs.len());
        n += 1;
    }
    assert_eq!(n, requests);
    (requests * docs.len()) as f64 / start.elapsed().as_secs_f64()
}

/// `rate`'s result with the CPU time per document it cost the Flow's
/// process (`pid`) and this one (the client): (docs/s, Flow µs, client µs).
async fn grpc_costs(
    pid: u32,
    docs: usize,
    rate: impl std::future::Future<Output = f64>,
) -> (f64, f64, f64) {
    let (flow, client) = (process_cpu(pid), process_cpu(std::process::id()));
    let rate = rate.await;
    let per_doc =
        |before: Duration, after: Duration| (after - before).as_secs_f64() * 1e6 / docs as f64;
    (
        rate,
        per_doc(flow, process_cpu(pid)),
        per_doc(client, process_cpu(std::process::id())),
    )
}

/// Sequential one-request streams' worth of latency: unary
/// `process_single_data` calls, one after another: (p50, p99).
async fn grpc_latency(port: u16, docs: &[Document], n: usize) -> (Duration, Duration) {
    let mut client =
        jina_wasm::flow::grpc::lean_pb::jina_single_data_request_rpc_client::JinaSingleDataRequestRpcClient::new(grpc_channel(port).await);
    let request = grpc_lean_request(docs);
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let start = Instant::now();
        let reply = client
            .process_single_data(jina_wasm::flow::grpc::lean::DataRequest::new(
                request.header.clone(),
                None,
                Vec::new(),
                request.data.clone(),
            ))
            .await
            .unwrap()
            .into_inner();
        grpc_check(reply, docs.len());
        if i >= 50 {
            times.push(start.elapsed());
        }
    }
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

/// Section 16: The gRPC gateway against the HTTP one, on the same Flow (a
/// passthrough Pod) in one run: 100-doc requests with 128-d embeddings
/// (packed float32 over gRPC, JSON numbers over HTTP), and 1-doc requests.
async fn grpc_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let (mut child, http, grpc, _dir) =
        grpc_flow("pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n");
    let docs: Vec<Document> = (0..100).map(workload_doc).collect();
    // Warm both paths (compiled guest, connections).
    let _ = grpc_rate(grpc, &docs, 20).await;
    let _ = http_rate(http, "/", &docs, 20).await;
    let pid = child.id();
    let (grpc_docs, grpc_flow_us, grpc_client_us) =
        grpc_costs(pid, 30_000, grpc_rate(grpc, &docs, 300)).await;
    let (http_docs, http_flow_us, http_client_us) =
        grpc_costs(pid, 30_000, http_rate(http, "/", &docs, 300)).await;
    let ratio = grpc_docs / http_docs;
    rows.push(Row {
        name: "gateway -> passthrough, 100-doc requests (128-d embeddings): gRPC stream vs HTTP JSON, 8 in flight".into(),
        value: format!("gRPC {grpc_docs:.0} docs/s"),
        baseline: format!("HTTP {http_docs:.0} docs/s"),
        ratio,
        ratio_label: "gRPC/HTTP",
        target: ">= 3x".into(),
        met: ratio >= 3.0,
    });
    // What each document cost, whatever else the machine ran meanwhile: the
    // Flow's process (gateway, Pea, executor) and the client's (this one).
    rows.push(Row {
        name: "the same, CPU per document: Flow process (client process)".into(),
        value: format!("gRPC {grpc_flow_us:.1} µs ({grpc_client_us:.1} µs)"),
        baseline: format!("HTTP {http_flow_us:.1} µs ({http_client_us:.1} µs)"),
        ratio: http_flow_us / grpc_flow_us,
        ratio_label: "x less Flow CPU over gRPC",
        target: "-".into(),
        met: true,
    });
    let one = &docs[..1];
    let grpc_rps = grpc_rate(grpc, one, 3000).await;
    let http_rps = http_rate(http, "/", one, 3000).await;
    let (grpc_p50, grpc_p99) = grpc_latency(grpc, one, 500).await;
    let (http_p50, http_p99) = http_latency("127.0.0.1", http, "/", one, 500).await;
    rows.push(Row {
        name:
            "gateway -> passthrough, 1-doc requests: requests/s (8 in flight), sequential p50/p99"
                .into(),
        value: format!(
            "gRPC {grpc_rps:.0} req/s, p50 {} / p99 {}",
            fmt_time(grpc_p50),
            fmt_time(grpc_p99)
        ),
        baseline: format!(
            "HTTP {http_rps:.0} req/s, p50 {} / p99 {}",
            fmt_time(http_p50),
            fmt_time(http_p99)
        ),
        ratio: grpc_rps / http_rps,
        ratio_label: "gRPC/HTTP",
        target: "-".into(),
        met: true,
    });
    let _ = child.kill();
    let _ = child.wait();
    rows
}

/// One Flow (a Pod of two passthrough shards, then a singleton Pea) run
/// twice side by side, without and with `with_on` (a feature's `with:` keys),
/// driven by 1-doc requests, 8 in flight, in six rounds of 1,500, each side
/// first in every other round (whatever the first of a pair pays or gains
/// falls on both). Returns each side's median round (requests/s) and its
/// process's CPU time per request over the six rounds: what a request costs
/// the Flow whatever else the machine runs meanwhile (requests/s on a shared
/// machine swing by more than a feature costs).
async fn on_off(with_on: &str) -> OnOff {
    let pods = "pods:\n  - name: shards\n    uses: {W}/passthrough.wasm\n    shards: 2\n  - name: one\n    uses: {W}/passthrough.wasm\n";
    let on = FlowProcess::start(&format!("with:\n{with_on}{pods}"));
    let off = FlowProcess::start(pods);
    let docs: Vec<Document> = (0..1).map(workload_doc).collect();
    // Warm both (connections, first-seen endpoints), then measure.
    http_rate(off.1, "/", &docs, 200).await;
    http_rate(on.1, "/", &docs, 200).await;
    let ports = [off.1, on.1];
    let [without, with] = alternate([off.0.id(), on.0.id()], 6, 1500, |side, n| {
        http_rate(ports[side], "/", &docs, n)
    })
    .await;
    OnOff {
        rate_on: with.rate,
        rate_off: without.rate,
        cpu_on: with.cpu,
        cpu_off: without.cpu,
    }
}

/// One side of [`alternate`]: its median round (what `measure` returned:
/// requests or documents per second) and its process's CPU time per request
/// (µs) over all rounds, the steadier figure on a shared machine.
struct Side {
    rate: f64,
    cpu: f64,
    /// Times a thread of the process went to sleep (voluntary context
    /// switches), per request: each is a wake-up someone pays for later.
    sleeps: f64,
    /// Time its threads were runnable but waited for a CPU, µs per request
    /// (the run-queue delay of those wake-ups on a loaded host).
    queued: f64,
}

/// Two processes (`pids`) under the same load in `rounds` rounds of
/// `requests`: `measure(side, requests)` drives side 0 or 1 and returns its
/// rate. Each side goes first in every other round, so whatever the first of
/// a pair pays or gains falls on both.
async fn alternate<F: std::future::Future<Output = f64>>(
    pids: [u32; 2],
    rounds: usize,
    requests: usize,
    mut measure: impl FnMut(usize, usize) -> F,
) -> [Side; 2] {
    let before = pids.map(process_cpu);
    let waits = pids.map(process_waits);
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            rates[side].push(measure(side, requests).await);
        }
    }
    std::array::from_fn(|i| {
        let mut r = std::mem::take(&mut rates[i]);
        r.sort_by(f64::total_cmp);
        let n = (rounds * requests) as f64;
        let (sleeps, queued) = process_waits(pids[i]);
        Side {
            rate: r[r.len() / 2],
            cpu: (process_cpu(pids[i]) - before[i]).as_secs_f64() * 1e6 / n,
            sleeps: sleeps.saturating_sub(waits[i].0) as f64 / n,
            queued: queued.saturating_sub(waits[i].1).as_secs_f64() * 1e6 / n,
        }
    })
}

struct OnOff {
    rate_on: f64,
    rate_off: f64,
    /// CPU time of the Flow's process per request, µs.
    cpu_on: f64,
    cpu_off: f64,
}

impl OnOff {
    /// The CPU row (the one to compare on a shared machine) and the
    /// requests/s row, `what` naming the feature.
    fn rows(&self, what: &str, detail: &str, cpu_target: f64, rate_target: f64) -> Vec<Row> {
        let (cpu, rate) = (self.cpu_on / self.cpu_off, self.rate_on / self.rate_off);
        vec![
            Row {
                name: format!(
                    "{what} on vs off: CPU time of the Flow's process per 1-doc request (same runs)"
                ),
                value: format!("{:.0} µs on", self.cpu_on),
                baseline: format!("{:.0} µs off", self.cpu_off),
                ratio: cpu,
                ratio_label: "on/off",
                target: format!("<= {cpu_target}"),
                met: cpu <= cpu_target,
            },
            Row {
                name: format!(
                    "{what} on vs off: 1-doc requests/s through a Flow (2 shards, then 1 Pea; 8 in flight{detail})"
                ),
                value: format!("{:.0} req/s on", self.rate_on),
                baseline: format!("{:.0} req/s off", self.rate_off),
                ratio: rate,
                ratio_label: "on/off",
                target: format!(">= {rate_target}"),
                met: rate >= rate_target,
            },
        ]
    }
}

/// Section 18: what metrics cost ([`on_off`], `monitoring: true`).
async fn metrics_rows() -> Vec<Row> {
    on_off("  monitoring: true\n")
        .await
        .rows("metrics", "", 1.05, 0.95)
}

/// Section 19: what traces cost ([`on_off`], every span exported over
/// OTLP/HTTP to a sink in this process that reads each export and answers
/// 200).
async fn tracing_rows() -> Vec<Row> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let exports = std::sync::Arc::new(AtomicU64::new(0));
    let counted = exports.clone();
    let sink = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { (axum::http::StatusCode::OK, body.len().to_string()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, sink).await });
    let measured = on_off(&format!(
        "  tracing: true\n  traces_endpoint: http://127.0.0.1:{sink_port}\n"
    ))
    .await;
    let exports = exports.load(Ordering::Relaxed);
    let mut rows = measured.rows(
        "traces",
        &format!("; on: 5 spans a request to an OTLP/HTTP sink, {exports} exports received"),
        1.2,
        0.85,
    );
    // Spans that never reached the sink would make "on" look free.
    rows[1].met &= exports > 0;
    rows
}

/// Over the threads of process `pid` (Linux): how many times they went to
/// sleep (voluntary context switches) and how long they were runnable but
/// waiting for a CPU (`schedstat`'s run-queue time). Zero elsewhere.
fn process_waits(pid: u32) -> (u64, Duration) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, Duration::ZERO);
    };
    let (mut sleeps, mut queued_ns) = (0u64, 0u64);
    for task in tasks.flatten() {
        let path = task.path();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        sleeps += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        queued_ns += schedstat
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (sleeps, Duration::from_nanos(queued_ns))
}

/// User and system CPU time of process `pid` so far (Linux /proc).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}
