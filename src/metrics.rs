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

// ---------------------------------------------------------------- gateway

/// One protocol's gateway metrics; requests of an endpoint seen before touch
/// only its handles.
pub struct GatewayMetrics {
    metrics: &'static Metrics,
    protocol: &'static str,
    endpoints: std::sync::RwLock<HashMap<String, Arc<GatewayEndpoint>>>,
    in_flight: Gauge,
    received: Counter,
    sent: Counter,
}

struct GatewayEndpoint {
    label: String,
    success: Counter,
    duration: Histogram,
    documents: Counter,
}

/// What the access log line and the metrics take from one answered request.
pub struct Served<'a> {
    pub request_id: &'a str,
    pub endpoint: &'a str,
    /// Documents in the request.
    pub docs: usize,
    /// `success`, or the error kind.
    pub status: &'a str,
    pub elapsed: Duration,
    pub received: u64,
    pub sent: u64,
}

impl GatewayMetrics {
    /// The gateway metrics of `protocol` (`http`, `grpc`), when metrics are on.
    pub fn new(protocol: &'static str) -> Option<Arc<GatewayMetrics>> {
        let metrics = get()?;
        let g = &metrics.gateway;
        let by_protocol = labels(&[("protocol", protocol)]);
        Some(Arc::new(GatewayMetrics {
            metrics,
            protocol,
            endpoints: Default::default(),
            in_flight: g.in_flight.get_or_create_owned(&by_protocol),
            received: g.received.get_or_create_owned(&by_protocol),
            sent: g.sent.get_or_create_owned(&by_protocol),
        }))
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    fn endpoint(&self, endpoint: &str) -> Arc<GatewayEndpoint> {
        if let Some(e) = self.endpoints.read().expect("endpoints lock").get(endpoint) {
            return e.clone();
        }
        let label = self.metrics.endpoint(endpoint);
        let g = &self.metrics.gateway;
        let by_endpoint = labels(&[("protocol", self.protocol), ("endpoint", label.as_str())]);
        let mut with_status = by_endpoint.clone();
        with_status.push(("status", "success".into()));
        let handles = Arc::new(GatewayEndpoint {
            success: g.requests.get_or_create_owned(&with_status),
            duration: g.duration.get_or_create_owned(&by_endpoint),
            documents: g.documents.get_or_create_owned(&by_endpoint),
            label,
        });
        let mut endpoints = self.endpoints.write().expect("endpoints lock");
        // Past the bound, more names would only grow this map: they share `other`'s.
        if endpoints.len() < MAX_LABEL_VALUES {
            endpoints.insert(endpoint.to_string(), handles.clone());
        }
        handles
    }

    fn record(&self, served: &Served) {
        let e = self.endpoint(served.endpoint);
        if served.status == "success" {
            e.success.inc();
        } else {
            let kind = self.metrics.kind(served.status);
            self.metrics
                .gateway
                .requests
                .get_or_create(&labels(&[
                    ("protocol", self.protocol),
                    ("endpoint", e.label.as_str()),
                    ("status", kind.as_str()),
                ]))
                .inc();
        }
        e.duration.observe(served.elapsed.as_secs_f64());
        e.documents.inc_by(served.docs as u64);
        self.received.inc_by(served.received);
        self.sent.inc_by(served.sent);
    }
}

/// Decrements the in-flight gauge when dropped (an answer sent, or a client gone).
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Records one answered request: the access log line (`info`, target
/// `access`) whether metrics are on or not, and the gateway's metrics when
/// they are.
pub fn served(metrics: Option<&GatewayMetrics>, protocol: &'static str, served: &Served) {
    tracing::info!(
        target: "access",
        protocol,
        request = served.request_id,
        endpoint = served.endpoint,
        docs = served.docs,
        status = served.status,
        duration_ms = served.elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    if let Some(metrics) = metrics {
        metrics.record(served);
    }
}

// ---------------------------------------------------------------- pea

/// One Pea's metrics, labelled `pod` and `pea`. Its series are removed when
/// it is dropped (a Pea that stopped, a replaced replica).
pub struct PeaMetrics {
    metrics: &'static Metrics,
    base: Labels,
    endpoints: HashMap<String, PeaEndpoint>,
    errors: HashMap<ErrorKind, Counter>,
    pending: Gauge,
    restarts: Counter,
    traps: Counter,
    memory: Gauge,
    memory_limit: Gauge,
    dumps_ok: Counter,
    dumps_failed: Counter,
    dump_seconds: Histogram,
    last_dump: Gauge,
    state_lost: Gauge,
    unsaved: Gauge,
    workspace: Gauge,
    workspace_quota: Gauge,
    /// The executor's counts at the last look: counters move by the difference.
    seen_restarts: u64,
    seen_traps: u64,
}

struct PeaEndpoint {
    labels: Labels,
    requests: Counter,
    handle: Histogram,
}

impl PeaMetrics {
    /// The metrics of Pea `name` (`pod/role` inside a Pod: `pod` is the part
    /// before the slash), when metrics are on.
    pub fn new(name: &str, memory_limit: u64, quota: Option<u64>) -> Option<PeaMetrics> {
        let metrics = get()?;
        let pod = name.split('/').next().unwrap_or(name);
        let base = labels(&[("pod", pod), ("pea", name)]);
        *metrics
            .peas
            .lock()
            .expect("peas lock")
            .entry(base.clone())
            .or_default() += 1;
        let p = &metrics.pea;
        let with = |key: &'static str, value: &str| {
            let mut l = base.clone();
            l.push((key, value.to_string()));
            l
        };
        let m = PeaMetrics {
            pending: p.pending.get_or_create_owned(&base),
            restarts: p.restarts.get_or_create_owned(&base),
            traps: p.traps.get_or_create_owned(&base),
            memory: p.memory.get_or_create_owned(&base),
            memory_limit: p.memory_limit.get_or_create_owned(&base),
            dumps_ok: p.dumps.get_or_create_owned(&with("result", "ok")),
            dumps_failed: p.dumps.get_or_create_owned(&with("result", "failed")),
            dump_seconds: p.dump_seconds.get_or_create_owned(&base),
            last_dump: p.last_dump.get_or_create_owned(&base),
            state_lost: p.state_lost.get_or_create_owned(&base),
            unsaved: p.unsaved.get_or_create_owned(&base),
            workspace: p.workspace.get_or_create_owned(&base),
            workspace_quota: p.workspace_quota.get_or_create_owned(&base),
            metrics,
            base,
            endpoints: HashMap::new(),
            errors: HashMap::new(),
            seen_restarts: 0,
            seen_traps: 0,
        };
        m.memory_limit
            .set(i64::try_from(memory_limit).unwrap_or(i64::MAX));
        if let Some(quota) = quota {
            m.workspace_quota
                .set(i64::try_from(quota).unwrap_or(i64::MAX));
        }
        Some(m)
    }

    fn endpoint(&mut self, endpoint: &str) -> &PeaEndpoint {
        if !self.endpoints.contains_key(endpoint) {
            let label = self.metrics.endpoint(endpoint);
            // Past the bound every name is `other`: keep one entry for it.
            let key = if label == OTHER { OTHER } else { endpoint };
            if !self.endpoints.contains_key(key) {
                let mut labels = self.base.clone();
                labels.push(("endpoint", label));
                let p = &self.metrics.pea;
                let handles = PeaEndpoint {
                    requests: p.requests.get_or_create_owned(&labels),
                    handle: p.handle.get_or_create_owned(&labels),
                    labels,
                };
                self.endpoints.insert(key.to_string(), handles);
            }
            return &self.endpoints[key];
        }
        &self.endpoints[endpoint]
    }

    /// A data request taken in.
    pub fn request(&mut self, endpoint: &str) {
        self.endpoint(endpoint).requests.inc();
    }

    /// The executor answered a request of `endpoint` after `elapsed`.
    pub fn handled(&mut self, endpoint: &str, elapsed: Duration) {
        self.endpoint(endpoint)
            .handle
            .observe(elapsed.as_secs_f64());
    }

    /// A request failed here with `kind` (a closed list: one label each).
    pub fn error(&mut self, kind: ErrorKind) {
        if let Some(counter) = self.errors.get(&kind) {
            counter.inc();
            return;
        }
        let mut labels = self.base.clone();
        labels.push(("kind", kind.as_str().to_string()));
        let counter = self.metrics.pea.errors.get_or_create_owned(&labels);
        counter.inc();
        self.errors.insert(kind, counter);
    }

    /// The Pea's state, each turn of its loop (a few atomic stores).
    pub fn state(&self, pending: usize, state_lost: bool, unsaved_writes: u64) {
        self.pending.set(pending as i64);
        self.state_lost.set(i64::from(state_lost));
        self.unsaved
            .set(i64::try_from(unsaved_writes).unwrap_or(i64::MAX));
    }

    /// A dump (or RELOAD, or durable commit) ended.
    pub fn dumped(&self, ok: bool, elapsed: Duration) {
        self.dump_seconds.observe(elapsed.as_secs_f64());
        if ok {
            self.dumps_ok.inc();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.last_dump.set(now as i64);
        } else {
            self.dumps_failed.inc();
        }
    }

    /// The executor's counts as its thread last published them.
    pub fn executor(&mut self, stats: &crate::executor::ExecutorStats) {
        self.restarts
            .inc_by(stats.restarts.saturating_sub(self.seen_restarts));
        self.traps
            .inc_by(stats.traps.saturating_sub(self.seen_traps));
        // A RELOAD's fresh executor counts from zero again.
        self.seen_restarts = stats.restarts;
        self.seen_traps = stats.traps;
        self.memory
            .set(i64::try_from(stats.memory_bytes).unwrap_or(i64::MAX));
        if let Some(bytes) = stats.workspace_bytes {
            self.workspace.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

impl Drop for PeaMetrics {
    fn drop(&mut self) {
        {
            let mut peas = self.metrics.peas.lock().expect("peas lock");
            let live = peas.entry(self.base.clone()).or_default();
            *live = live.saturating_sub(1);
            if *live > 0 {
                return;
            }
            peas.remove(&self.base);
        }
        let p = &self.metrics.pea;
        for e in self.endpoints.values() {
            p.requests.remove(&e.labels);
            p.handle.remove(&e.labels);
        }
        for kind in self.errors.keys() {
            let mut labels = self.base.clone();
            labels.push(("kind", kind.as_str().to_string()));
            p.errors.remove(&labels);
        }
        for result in ["ok", "failed"] {
            let mut labels = self.base.clone();
            labels.push(("result", result.to_string()));
            p.dumps.remove(&labels);
        }
        for family in [
            &p.pending,
            &p.memory,
            &p.memory_limit,
            &p.last_dump,
            &p.state_lost,
            &p.unsaved,
            &p.workspace,
            &p.workspace_quota,
        ] {
            family.remove(&self.base);
        }
        for family in [&p.restarts, &p.traps] {
            family.remove(&self.base);
        }
        p.dump_seconds.remove(&self.base);
    }
}

// ---------------------------------------------------------------- pod

/// A Pod head's counters, for STATUS and the metrics.
#[derive(Debug, Default)]
pub struct HeadStats {
    pub requests: AtomicU64,
    pub dropped: AtomicU64,
    /// Parts sent to the Pod's Peas.
    pub parts: AtomicU64,
    /// Requests failed `unavailable` here (no Pea connected).
    pub unavailable: AtomicU64,
}

/// A Pod tail's counters, for STATUS and the metrics.
#[derive(Debug, Default)]
pub struct TailStats {
    pub pending: AtomicU64,
    pub completed: AtomicU64,
    pub timed_out: AtomicU64,
    pub late: AtomicU64,
    /// Parts received from the Pod's Peas.
    pub parts: AtomicU64,
    /// Requests failed `unavailable` (a Pea they needed is not connected).
    pub unavailable: AtomicU64,
}

/// What a Pod's head and tail count, read at scrape time.
#[derive(Debug)]
pub struct PodSource {
    pub pod: String,
    pub head: Arc<HeadStats>,
    pub tail: Arc<TailStats>,
    /// Which Peas are connected to the head now.
    pub connected: tokio::sync::watch::Receiver<Vec<bool>>,
    /// How many make the Pod healthy.
    pub expected: usize,
}

/// Adds a Pod's head and tail to the metrics (when on) for as long as the
/// returned handle lives.
pub fn watch_pod(source: PodSource) -> Option<Arc<PodSource>> {
    let metrics = get()?;
    let source = Arc::new(source);
    let mut pods = metrics.pods.pods.lock().expect("pods lock");
    pods.retain(|p| p.strong_count() > 0);
    pods.push(Arc::downgrade(&source));
    Some(source)
}

#[derive(Debug, Default)]
struct PodCollector {
    pods: Mutex<Vec<Weak<PodSource>>>,
}

impl Collector for PodCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pods: Vec<Arc<PodSource>> = self
            .pods
            .lock()
            .expect("pods lock")
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        if pods.is_empty() {
            return Ok(());
        }
        type Read = fn(&PodSource) -> u64;
        let counters: [(&str, &str, Read); 7] = [
            ("jina_pod_requests", "Requests the head took in", |p| {
                p.head.requests.load(Ordering::Relaxed)
            }),
            (
                "jina_pod_parts_sent",
                "Parts the head sent to the Pod's Peas (one per shard or replica asked)",
                |p| p.head.parts.load(Ordering::Relaxed),
            ),
            (
                "jina_pod_parts_received",
                "Parts the tail received from the Pod's Peas",
                |p| p.tail.parts.load(Ordering::Relaxed),
            ),
            (
                "jina_pod_completed",
                "Requests whose parts all came, merged and sent on by the tail",
                |p| p.tail.completed.load(Ordering::Relaxed),
            ),
            (
                "jina_pod_timeouts",
                "Requests the tail ended because a part did not come in time",
                |p| p.tail.timed_out.load(Ordering::Relaxed),
            ),
            (
                "jina_pod_unavailable",
                "Requests failed `unavailable`: no Pea (or not every shard) was connected",
                |p| {
                    p.head.unavailable.load(Ordering::Relaxed)
                        + p.tail.unavailable.load(Ordering::Relaxed)
                },
            ),
            (
                "jina_pod_late_parts",
                "Parts that came after their request had ended (dropped)",
                |p| p.tail.late.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for pod in &pods {
                ConstCounter::new(read(pod))
                    .encode(metric.encode_family(&[("pod", pod.pod.as_str())])?)?;
            }
        }
        let gauges: [(&str, &str, Read); 3] = [
            (
                "jina_pod_pending_requests",
                "Requests the tail is collecting parts for",
                |p| p.tail.pending.load(Ordering::Relaxed),
            ),
            (
                "jina_pod_peas_connected",
                "The Pod's Peas (shards, replicas) connected to the head now",
                |p| p.connected.borrow().iter().filter(|c| **c).count() as u64,
            ),
            (
                "jina_pod_peas_expected",
                "Connected Peas the Pod needs to be healthy (every shard; one replica)",
                |p| p.expected as u64,
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for pod in &pods {
                ConstGauge::new(i64::try_from(read(pod)).unwrap_or(i64::MAX))
                    .encode(metric.encode_family(&[("pod", pod.pod.as_str())])?)?;
            }
        }
        Ok(())
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
