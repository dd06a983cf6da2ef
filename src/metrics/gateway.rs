//! The gateway's metrics: requests, durations, documents and bytes per protocol and endpoint.

use super::*;

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
