//! Section 21, the floor (issue 17): what the Flow's HTTP path serves against
//! the least an HTTP server can do with the same request. The floor is an axum
//! server in its own process (this binary again; two Tokio workers, as the
//! Flow process has) that parses the request's JSON body into a `serde_json::Value` and writes
//! it back; the Flow is `jina-wasm flow` in its own process with one
//! passthrough Pea (and, for the last rows, a Pod of two passthrough shards
//! with `polling: all`). One client drives both the same way: the same
//! request bytes, made once, 8 requests in flight over kept-alive
//! connections, the answer read whole and its status checked. The two are
//! measured in alternating rounds (each first in every other round) and the
//! median round of each is compared; beside it, each process's CPU time per
//! request over all rounds, which holds steady when the machine is loaded.
//!
//! Every answer is checked once before timing: the Flow's must carry the
//! documents sent, the floor's must be the request.

use axum::body::Bytes;

use super::*;

/// Rounds per row, and requests per round by documents per request.
const ROUNDS: usize = 15;
fn requests(docs: usize) -> usize {
    if docs == 1 { 2_000 } else { 300 }
}

/// A document of 64 bytes of text, as the text rows send.
fn text_doc(i: usize) -> Document {
    Document {
        id: format!("doc-{i:06}"),
        text: Some(format!("{i:064}")),
        ..Default::default()
    }
}

/// The floor server, run as its own process (the bench binary again, with
/// `BENCH_FLOOR_SERVER` set) so that its CPU time is its own, as the Flow's
/// is: parse the JSON, write it back. Prints its port, then serves until
/// killed.
pub fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/post",
            axum::routing::post(|body: Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/json")],
                        serde_json::to_vec(&v).unwrap(),
                    ),
                    Err(e) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        e.to_string().into_bytes(),
                    ),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app).await.unwrap();
    });
}

/// The floor server's process, killed on drop.
struct Floor(std::process::Child, u16);

impl Floor {
    fn start() -> Floor {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_FLOOR_SERVER", "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Floor(child, port)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The request body both servers get, as Jina's HTTP client sends it.
fn body(docs: &[Document]) -> Bytes {
    serde_json::to_vec(&serde_json::json!({
        "data": docs,
        "execEndpoint": "/",
        "parameters": {},
    }))
    .unwrap()
    .into()
}

/// Documents per second: `n` requests of `body`, 8 in flight.
async fn rate(client: &reqwest::Client, url: &str, body: &Bytes, docs: usize, n: usize) -> f64 {
    use futures::StreamExt;
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| async {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            response.bytes().await.unwrap().len()
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
    (n * docs) as f64 / start.elapsed().as_secs_f64()
}

/// Checks once that both answer as they should, then times them in
/// alternating rounds; returns [flow, floor].
async fn flow_and_floor(flow: &FlowProcess, floor: &Floor, docs: &[Document]) -> [Side; 2] {
    let client = reqwest::Client::new();
    let flow_url = format!("http://127.0.0.1:{}/post", flow.1);
    let floor_url = format!("http://127.0.0.1:{}/post", floor.1);
    let body = body(docs);

    let answer = jina_wasm::client_http::post(
        "127.0.0.1",
        flow.1,
        "/",
        &serde_json::json!({}),
        docs,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(answer.error.is_none(), "{:?}", answer.error);
    let ids = |d: &[Document]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&answer.documents),
        ids(docs),
        "the Flow lost or reordered documents"
    );
    let echoed = client
        .post(&floor_url)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&echoed).unwrap(),
        serde_json::from_slice::<Value>(&body).unwrap()
    );

    let n = requests(docs.len());
    // Warm both (connections, the Flow's first-seen endpoint).
    rate(&client, &flow_url, &body, docs.len(), n / 10).await;
    rate(&client, &floor_url, &body, docs.len(), n / 10).await;
    let urls = [&flow_url, &floor_url];
    alternate([flow.0.id(), floor.0.id()], ROUNDS, n, |side, n| {
        rate(&client, urls[side], &body, docs.len(), n)
    })
    .await
}

pub async fn floor_rows() -> Vec<Row> {
    let floor = Floor::start();
    let mut rows = Vec::new();
    let cases: [(&str, &str, Vec<Document>, Option<f64>); 5] = [
        ("one passthrough Pea", "1-doc", vec![text_doc(0)], Some(0.5)),
        (
            "one passthrough Pea",
            "100-doc (64-byte texts)",
            (0..100).map(text_doc).collect(),
            Some(0.5),
        ),
        (
            "one passthrough Pea",
            "100-doc (64-byte texts, 128-d embeddings)",
            (0..100).map(workload_doc).collect(),
            None,
        ),
        (
            "a 2-shard `polling: all` Pod",
            "1-doc",
            vec![text_doc(0)],
            Some(0.35),
        ),
        (
            "a 2-shard `polling: all` Pod",
            "100-doc (64-byte texts)",
            (0..100).map(text_doc).collect(),
            Some(0.35),
        ),
    ];
    let single = "pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n";
    let sharded =
        "pods:\n  - name: echo\n    uses: {W}/passthrough.wasm\n    shards: 2\n    polling: all\n";
    let mut flow: Option<(&str, FlowProcess)> = None;
    for (path, size, docs, target) in cases {
        let yaml = if path.starts_with("one") {
            single
        } else {
            sharded
        };
        if flow.as_ref().is_none_or(|(y, _)| *y != yaml) {
            drop(flow.take()); // stop the last Flow before the next one starts
            flow = Some((yaml, FlowProcess::start(yaml)));
        }
        let [flow, floor] = flow_and_floor(&flow.as_ref().unwrap().1, &floor, &docs).await;
        let ratio = flow.rate / floor.rate;
        let unit = if docs.len() == 1 { "req/s" } else { "docs/s" };
        rows.push(Row {
            name: format!("floor: gateway -> {path} -> gateway, {size} requests, 8 in flight"),
            value: format!(
                "{:.0} {unit}; CPU {:.0} µs, {:.1} thread sleeps, {:.0} µs run-queue wait per request",
                flow.rate, flow.cpu, flow.sleeps, flow.queued
            ),
            baseline: format!(
                "bare axum JSON echo {:.0} {unit}; CPU {:.0} µs ({:.2}x the Flow's), {:.1} thread sleeps, {:.0} µs run-queue wait per request",
                floor.rate,
                floor.cpu,
                floor.cpu / flow.cpu,
                floor.sleeps,
                floor.queued
            ),
            ratio,
            ratio_label: "x floor",
            target: target.map_or("reported".into(), |t| format!(">= {t}x")),
            met: target.is_none_or(|t| ratio >= t),
        });
    }
    rows
}
