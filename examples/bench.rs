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

use jina_wasm::executor::{Executor, ExecutorSpec, Runtime, RuntimeOptions, Sandbox};
use jina_wasm::Document;
use serde_json::Value;

fn wasm(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    let path = target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: run `make guests` first", path.display());
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
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
    if us >= 10_000.0 { format!("{:.1} ms", us / 1e3) } else { format!("{us:.1} µs") }
}

fn start(runtime: &Arc<Runtime>, name: &str, config: Value) -> Executor {
    let component = runtime.load(&wasm(name)).unwrap();
    let spec = ExecutorSpec { name: name.into(), config, sandbox: Sandbox::default() };
    Executor::start(runtime.clone(), component, spec).unwrap()
}

/// A document like the workload: 64 bytes of text and a 128-dim embedding.
fn workload_doc(i: usize) -> Document {
    Document {
        id: format!("doc-{i:06}"),
        text: Some(format!("{:064}", i)),
        embedding: Some((0..128).map(|j| ((i * 31 + j) % 97) as f32 / 97.0).collect()),
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
    let cache = tempfile::tempdir().unwrap();
    let cached = Runtime::new(RuntimeOptions { cache_dir: Some(cache.path().into()) }).unwrap();
    let uncached = Runtime::new(RuntimeOptions { cache_dir: None }).unwrap();
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
    let spec = ExecutorSpec { name: "passthrough".into(), config: Value::Null, sandbox: Sandbox::default() };
    let instantiate = median(500, || drop(Executor::start(cached.clone(), passthrough.clone(), spec.clone()).unwrap()));
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
    let mut executor = start(&cached, "passthrough", Value::Null);
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
    let texts: Vec<String> = (0..1000).map(|i| format!("{} #{i}", SENTENCES[i % SENTENCES.len()])).collect();
    let docs: Vec<Document> = texts.iter().enumerate().map(|(i, t)| Document { id: i.to_string(), text: Some(t.clone()), ..Default::default() }).collect();
    let mut encoder = start(&cached, "text-encoder", Value::Null);
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
    let mut native_encoder = text_encoder::TextEncoder::init(jina_guest_sdk::Config::parse("{}").unwrap()).unwrap();
    let handler = text_encoder::TextEncoder::routes().find("/").unwrap();
    let no_params = jina_guest_sdk::Params::parse("{}").unwrap();
    let sdk_docs: Vec<jina_guest_sdk::Document> =
        texts.iter().enumerate().map(|(i, t)| jina_guest_sdk::Document::new(i.to_string()).with_text(t.clone())).collect();
    let handler_time = median(20, || {
        for batch in sdk_docs.chunks(100) {
            std::hint::black_box(handler(&mut native_encoder, batch.to_vec(), &no_params).unwrap());
        }
    });
    let wasm_rate = 1000.0 / wasm_time.as_secs_f64();
    for (versus, baseline, native_time) in
        [("its handler native", "native handler", handler_time), ("bare hashing", "native feature_hash", native_time)]
    {
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
    let idle: Vec<Executor> = (0..200).map(|_| Executor::start(cached.clone(), passthrough.clone(), spec.clone()).unwrap()).collect();
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

    println!("| benchmark | value | baseline (same run) | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
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
