//! Prometheus metrics: what the gateway, each Pea and each Pod's head and tail
//! count, served as Prometheus text (version 0.0.4) on the gateway's
//! `GET /metrics` and on `--port-monitoring`. docs/operations.md lists every
//! metric, its labels and its meaning.
//!
//! The registry and the encoding are the `prometheus-client` crate's (the
//! Prometheus project's own Rust client); nothing here writes exposition text.
//!
//! Metrics are off until a command turns them on ([`enable`]: `--monitoring`,
//! `--port-monitoring`, a Flow's `with: {monitoring: true}`). Off, each hook
//! is a `None` and costs one branch. On, the hot path touches handles made
//! once: a counter is an atomic add, a histogram a short uncontended lock;
//! label sets are built on the first request of an endpoint, not per request.
//! The head's and tail's counters are atomics they keep anyway, read at
//! scrape time ([`watch_pod`]). Endpoint and error-kind label values come from
//! clients and remote peers, so each is bounded ([`MAX_LABEL_VALUES`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::ErrorKind;

mod gateway;
mod pea;
mod pod;

pub use gateway::{GatewayMetrics, InFlight, Served, served};
pub use pea::PeaMetrics;
use pod::PodCollector;
pub use pod::{HeadStats, PodSource, TailStats, watch_pod};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Distinct values one process keeps series for, per label (`endpoint`,
/// `kind`): a client may send any endpoint name, and each new one would
/// otherwise add series without end. Past it, values are counted as
/// [`OTHER`].
pub const MAX_LABEL_VALUES: usize = 64;

/// The label value that stands for every value past [`MAX_LABEL_VALUES`].
pub const OTHER: &str = "other";

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Request latencies: 0.5 ms to 16 s, doubling.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Dump durations: 1 ms to 32 s, doubling.
fn dump_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The process's metrics: every family, registered once.
pub struct Metrics {
    registry: Registry,
    gateway: GatewayFamilies,
    pea: PeaFamilies,
    pods: Arc<PodCollector>,
    /// Endpoint and error-kind label values in use (see [`MAX_LABEL_VALUES`]).
    endpoints: Mutex<HashSet<String>>,
    kinds: Mutex<HashSet<String>>,
    /// Live [`PeaMetrics`] per `(pod, pea)`: a replacement may run beside the
    /// Pea it replaces, under the same name; the series go with the last.
    peas: Mutex<HashMap<Labels, usize>>,
}

struct GatewayFamilies {
    requests: Counters,
    duration: Histograms,
    documents: Counters,
    in_flight: Gauges,
    received: Counters,
    sent: Counters,
}

struct PeaFamilies {
    requests: Counters,
    errors: Counters,
    handle: Histograms,
    pending: Gauges,
    restarts: Counters,
    traps: Counters,
    memory: Gauges,
    memory_limit: Gauges,
    dumps: Counters,
    dump_seconds: Histograms,
    last_dump: Gauges,
    state_lost: Gauges,
    unsaved: Gauges,
    workspace: Gauges,
    workspace_quota: Gauges,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns metrics on for this process (idempotent); what starts afterwards
/// (gateways, Peas, Pods) records into them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The process's metrics, when on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Everything as Prometheus text, when metrics are on.
pub fn render() -> Option<String> {
    let metrics = get()?;
    let mut text = String::with_capacity(16 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry)
        .expect("writing to a String does not fail");
    Some(text)
}

/// The answer to `GET /metrics`: the text, or 404 saying how to turn
/// metrics on.
pub fn response() -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    match render() {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are off: run with --monitoring (or `monitoring: true` under the Flow's `with:`)\n",
        )
            .into_response(),
    }
}

/// Serves `GET /metrics` on `host:port` (`--port-monitoring`; 0: the OS
/// picks) until `stop`; returns the bound address. Turns metrics on.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    host: &str,
    port: u16,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SocketAddr> {
    enable();
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| anyhow::anyhow!("the monitoring port cannot bind {host}:{port}: {e}"))?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { response() }));
    tokio::spawn(async move {
        let limits = crate::http_server::HttpLimits::default();
        if let Err(e) =
            crate::http_server::serve(listener, app, limits, stop.cancelled_owned()).await
        {
            tracing::error!("the monitoring port stopped: {e}");
        }
    });
    let _ = SERVING.set(format!("http://{address}/metrics"));
    tracing::info!(address = %format!("http://{address}/metrics"), "serving metrics");
    Ok(address)
}

static SERVING: OnceLock<String> = OnceLock::new();

/// Gauges with one label set, as Prometheus text (the daemon's per-tenant
/// usage, computed per scrape): `(name, help, value)`.
pub fn render_gauges(labels: &[(&'static str, &str)], gauges: &[(&str, &str, u64)]) -> String {
    let mut registry = Registry::default();
    let labels = self::labels(labels);
    for (name, help, value) in gauges {
        let family = Gauges::default();
        family
            .get_or_create(&labels)
            .set(i64::try_from(*value).unwrap_or(i64::MAX));
        registry.register(*name, *help, family);
    }
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

/// Where this process serves its metrics (`--port-monitoring`), for STATUS.
pub fn serving() -> Option<String> {
    SERVING.get().cloned()
}

/// `value` if it is one of the first [`MAX_LABEL_VALUES`] seen in `seen`, else [`OTHER`].
fn bounded(seen: &Mutex<HashSet<String>>, value: &str) -> String {
    let mut seen = seen.lock().expect("label values lock");
    if seen.contains(value) {
        return value.to_string();
    }
    if seen.len() < MAX_LABEL_VALUES {
        seen.insert(value.to_string());
        return value.to_string();
    }
    OTHER.to_string()
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let gateway = GatewayFamilies {
            requests: Counters::default(),
            duration: Histograms::new_with_constructor(request_buckets),
            documents: Counters::default(),
            in_flight: Gauges::default(),
            received: Counters::default(),
            sent: Counters::default(),
        };
        let pea = PeaFamilies {
            requests: Counters::default(),
            errors: Counters::default(),
            handle: Histograms::new_with_constructor(request_buckets),
            pending: Gauges::default(),
            restarts: Counters::default(),
            traps: Counters::default(),
            memory: Gauges::default(),
            memory_limit: Gauges::default(),
            dumps: Counters::default(),
            dump_seconds: Histograms::new_with_constructor(dump_buckets),
            last_dump: Gauges::default(),
            state_lost: Gauges::default(),
            unsaved: Gauges::default(),
            workspace: Gauges::default(),
            workspace_quota: Gauges::default(),
        };
        let g = &gateway;
        registry.register(
            "jina_gateway_requests",
            "Requests answered by the gateway, by protocol, endpoint and status (`success` or the error kind)",
            g.requests.clone(),
        );
        registry.register(
            "jina_gateway_request_duration_seconds",
            "Time from a request's arrival at the gateway to its answer, by protocol and endpoint",
            g.duration.clone(),
        );
        registry.register(
            "jina_gateway_documents",
            "Documents received in requests, by protocol and endpoint",
            g.documents.clone(),
        );
        registry.register(
            "jina_gateway_requests_in_flight",
            "Requests being answered now, by protocol",
            g.in_flight.clone(),
        );
        registry.register(
            "jina_gateway_received_bytes",
            "Bytes of request bodies (HTTP) or messages (gRPC) received, by protocol",
            g.received.clone(),
        );
        registry.register(
            "jina_gateway_sent_bytes",
            "Bytes of answer bodies (HTTP) or messages (gRPC) sent, by protocol",
            g.sent.clone(),
        );
        let p = &pea;
        registry.register(
            "jina_pea_requests",
            "Data requests a Pea took in, by pod, pea and endpoint",
            p.requests.clone(),
        );
        registry.register(
            "jina_pea_errors",
            "Requests that failed in this Pea (its executor's error, a trap, a limit, a refused write), by kind",
            p.errors.clone(),
        );
        registry.register(
            "jina_pea_handle_seconds",
            "Time of the executor's handle() for one request (queueing in the Pea included), by endpoint",
            p.handle.clone(),
        );
        registry.register(
            "jina_pea_pending_requests",
            "Requests taken in and not yet sent on: in the executor, awaiting a durable commit, or the output socket",
            p.pending.clone(),
        );
        registry.register(
            "jina_pea_instance_restarts",
            "Executor instances made after the first (after a trap, a memory-limit kill, a failed commit)",
            p.restarts.clone(),
        );
        registry.register(
            "jina_pea_traps",
            "Calls that ended in a trap (the instance was discarded)",
            p.traps.clone(),
        );
        registry.register(
            "jina_pea_memory_bytes",
            "Linear memory of the executor's instance after its last call",
            p.memory.clone(),
        );
        registry.register(
            "jina_pea_memory_limit_bytes",
            "The instance's memory limit (--memory-hwm)",
            p.memory_limit.clone(),
        );
        registry.register(
            "jina_pea_dumps",
            "Dumps (periodic, DUMP, RELOAD, durable commits), by result (`ok`, `failed`)",
            p.dumps.clone(),
        );
        registry.register(
            "jina_pea_dump_seconds",
            "Time of one dump",
            p.dump_seconds.clone(),
        );
        registry.register(
            "jina_pea_last_dump_success_timestamp_seconds",
            "Unix time of the last successful dump (0: none yet)",
            p.last_dump.clone(),
        );
        registry.register(
            "jina_pea_state_lost",
            "1 while acknowledged writes were lost with a discarded instance and no one has accepted it (STATUS state_lost)",
            p.state_lost.clone(),
        );
        registry.register(
            "jina_pea_unsaved_writes",
            "Acknowledged writes no successful dump holds yet (interval and never modes)",
            p.unsaved.clone(),
        );
        registry.register(
            "jina_pea_workspace_bytes",
            "Bytes of files in the writable workspace, measured before the last call (with a disk quota)",
            p.workspace.clone(),
        );
        registry.register(
            "jina_pea_workspace_quota_bytes",
            "The workspace's disk quota (--disk-quota)",
            p.workspace_quota.clone(),
        );
        let pods = Arc::new(PodCollector::default());
        registry.register_collector(Box::new(pods.clone()));
        Metrics {
            registry,
            gateway,
            pea,
            pods,
            endpoints: Mutex::default(),
            kinds: Mutex::default(),
            peas: Mutex::default(),
        }
    }

    fn endpoint(&self, endpoint: &str) -> String {
        bounded(&self.endpoints, endpoint)
    }

    fn kind(&self, kind: &str) -> String {
        bounded(&self.kinds, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_bounded() {
        let seen = Mutex::default();
        for i in 0..MAX_LABEL_VALUES {
            assert_eq!(bounded(&seen, &format!("/e{i}")), format!("/e{i}"));
        }
        assert_eq!(bounded(&seen, "/one-more"), OTHER);
        assert_eq!(bounded(&seen, "/e3"), "/e3");
    }
}
