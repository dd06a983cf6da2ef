//! Section 17, the soak of issue 22 (run only when named: `BENCH_SECTIONS=soak make
//! bench`; about ten minutes): a million short texts through the demo Flow
//! as shipped, in one `jina-wasm flow` process, with its resident memory
//! sampled; a graceful stop; a restart on the same workspace, whose shards
//! report how many documents they loaded (the vector-indexer's `vector index
//! loaded` log line), which must equal the number acknowledged; then searches
//! for acknowledged texts chosen across the whole run must find them.
//!
//! The Flow is text-search-hashing.yml, the demo Flow with the hashing
//! encoder: the MiniLM one (text-search.yml) encodes about 30 sentences a
//! second on this machine, so a million would take nine hours; the Pods and
//! the index (what this soak is about) are the same, at 256 dimensions
//! instead of 384.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;

use super::*;

/// Texts indexed (`SOAK_DOCUMENTS`, default a million); each is one
/// sentence, so one chunk in the index.
fn documents() -> usize {
    std::env::var("SOAK_DOCUMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}
/// Texts per `/index` request, and requests in flight.
const BATCH: usize = 1_000;
const IN_FLIGHT: usize = 4;

/// One sentence, unique to `i` (no sentence-ending punctuation inside, so the
/// segmenter makes exactly one chunk of it).
fn text(i: usize) -> String {
    const WORDS: [&str; 8] = [
        "sandbox",
        "shard",
        "gateway",
        "replica",
        "workspace",
        "dump",
        "vector",
        "socket",
    ];
    format!(
        "soak sentence {i} about the {} and the {}",
        WORDS[i % 8],
        WORDS[(i / 8) % 8]
    )
}

/// `jina-wasm flow` on `file`, its stderr read by a thread that counts the
/// documents each shard reports loading.
struct Flow {
    child: Child,
    port: u16,
    loaded: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Flow {
    fn start(file: &std::path::Path, cache: &std::path::Path) -> Flow {
        let mut child = Command::new(jina_bin())
            .args(["flow", "--uses"])
            .arg(file)
            .env("JINA_WASM_CACHE_DIR", cache)
            .env("JINA_WASM_LOG", "warn,guest=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let loaded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = loaded.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("vector index loaded") {
                    let count = line
                        .split("documents=")
                        .nth(1)
                        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                        .and_then(|s| s.parse().ok());
                    sink.lock().unwrap().push(count.unwrap_or(usize::MAX));
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("soak: flow: {line}");
                }
            }
        });
        let ready = ready_line(&mut child);
        Flow {
            child,
            port: ready["port"].as_u64().unwrap() as u16,
            loaded,
        }
    }

    /// SIGTERM, as Ctrl-C would: the shards dump. Returns how long it took
    /// and whether the process exited 0.
    fn stop(mut self) -> (Duration, bool) {
        let started = Instant::now();
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        (started.elapsed(), status.success())
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn soak_rows() -> Vec<Row> {
    let documents = documents();
    let dir = tempfile::tempdir().unwrap();
    let guests = wasm("passthrough").parent().unwrap().to_path_buf();
    let file = dir.path().join("flow.yml");
    std::fs::write(&file, demo_yaml().replace("{W}", guests.to_str().unwrap())).unwrap();
    let cache = dir.path().join("cache");

    let flow = Flow::start(&file, &cache);
    let pid = flow.child.id();
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // RSS once a second, with the count acknowledged at that moment.
    let sampler = {
        let (acked, done) = (acked.clone(), done.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                samples.push((acked.load(Ordering::Relaxed), process_rss(pid)));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let (host, port) = ("127.0.0.1", flow.port);
    let params = serde_json::json!({});
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    futures::stream::iter((0..documents).step_by(BATCH))
        .map(|first| {
            let docs: Vec<Document> = (first..(first + BATCH).min(documents))
                .map(|i| Document {
                    id: format!("s{i}"),
                    text: Some(text(i)),
                    ..Default::default()
                })
                .collect();
            let params = &params;
            async move {
                let answer = jina_wasm::client_http::post(
                    host,
                    port,
                    "/index",
                    params,
                    &docs,
                    Duration::from_secs(120),
                )
                .await;
                (docs.len(), answer)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|(n, answer)| {
            match answer {
                Ok(a) if a.error.is_none() => {
                    let total = acked.fetch_add(n, Ordering::Relaxed) + n;
                    if total.is_multiple_of(100_000) {
                        eprintln!(
                            "soak: {total} acknowledged, {:.0} s, RSS {}",
                            started.elapsed().as_secs_f64(),
                            mib(process_rss(pid))
                        );
                    }
                }
                Ok(a) => {
                    failed.fetch_add(n, Ordering::Relaxed);
                    eprintln!("soak: a request failed: {:?}", a.error);
                }
                Err(e) => {
                    failed.fetch_add(n, Ordering::Relaxed);
                    eprintln!("soak: a request failed: {e:#}");
                }
            }
            futures::future::ready(())
        })
        .await;
    let indexing = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let rss_at = |n: usize| {
        samples
            .iter()
            .find(|s| s.0 >= n)
            .map_or_else(|| "-".to_string(), |s| mib(s.1))
    };
    let (stop_time, stopped_ok) = flow.stop();

    // Restart on the same workspace: each shard logs what it loaded.
    let restarted = Instant::now();
    let flow = Flow::start(&file, &cache);
    let ready = restarted.elapsed();
    // The shards log their count during start; the reader thread may still be
    // behind the ready line.
    let deadline = Instant::now() + Duration::from_secs(30);
    while flow.loaded.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let loaded: Vec<usize> = flow.loaded.lock().unwrap().clone();
    let rss_restarted = process_rss(flow.child.id());
    // Searches for acknowledged texts across the run: each must come back as
    // its own best match (the hashing encoder maps a text to one vector).
    let probes: Vec<usize> = (0..100)
        .map(|k| (k * (documents / 100) + k * 7) % documents)
        .collect();
    let mut found = 0;
    for &i in &probes {
        let query = [Document {
            id: format!("q{i}"),
            text: Some(text(i)),
            ..Default::default()
        }];
        let answer = jina_wasm::client_http::post(
            host,
            flow.port,
            "/search",
            &serde_json::json!({"top_k": 1}),
            &query,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let best = answer.documents.first().and_then(|d| d.matches.0.first());
        if best.is_some_and(|m| m.text.as_deref() == Some(text(i).as_str())) {
            found += 1;
        }
    }
    let (_, second_stop_ok) = flow.stop();
    let total_loaded: usize = loaded.iter().sum();
    eprintln!("soak: RSS samples (acknowledged, bytes): {samples:?}");
    vec![
        Row {
            name: format!(
                "soak: {documents} texts ({BATCH} per request, {IN_FLIGHT} in flight) into the demo Flow (hashing encoder, 2 shards, memory_hwm as shipped); failed requests' texts: {failed}"
            ),
            value: format!("{acked} acknowledged"),
            baseline: format!(
                "{:.0} texts/s over {:.0} s",
                acked as f64 / indexing.as_secs_f64(),
                indexing.as_secs_f64()
            ),
            ratio: acked as f64 / documents as f64,
            ratio_label: "of sent",
            target: "every text acknowledged".into(),
            met: acked == documents,
        },
        Row {
            name: format!(
                "soak: Flow process RSS at 250k / 500k / 750k acknowledged: {} / {} / {}; after restart {}",
                rss_at(250_000),
                rss_at(500_000),
                rss_at(750_000),
                mib(rss_restarted)
            ),
            value: format!("peak {}", mib(peak)),
            baseline: format!("{acked} texts"),
            ratio: peak as f64 / acked.max(1) as f64,
            ratio_label: "bytes/text",
            target: "no target".into(),
            met: true,
        },
        Row {
            name: format!(
                "soak: graceful stop (exit 0: {stopped_ok}, {}), restart ready in {}; shards loaded {loaded:?}; {found} of {} probe texts found after restart",
                fmt_time(stop_time),
                fmt_time(ready),
                probes.len()
            ),
            value: format!("{total_loaded} loaded"),
            baseline: format!("{acked} acknowledged"),
            ratio: total_loaded as f64 / acked.max(1) as f64,
            ratio_label: "x acknowledged",
            target: "= acknowledged, every probe found".into(),
            met: total_loaded == acked && found == probes.len() && stopped_ok && second_stop_ok,
        },
    ]
}
