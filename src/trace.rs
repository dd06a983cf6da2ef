//! OpenTelemetry traces (docs/operations.md, "Traces"): one request is one
//! trace, with a span per gateway request, Head fan-out, Pea executor call and
//! Tail merge, exported over OTLP when `--traces-endpoint` (or a Flow's
//! `with: {tracing: true, traces_endpoint: ...}`) is given.
//!
//! The trace context travels in the envelope ([`TraceContext`], src/wire), so
//! the spans of Peas in other processes join the same trace; every process
//! exports its own spans.
//!
//! Off by default at no cost: [`start`] returns `None` without building
//! anything until [`enable`] has run, and an envelope's `trace` is then an
//! empty `Option` of plain bytes.
//!
//! The OpenTelemetry API is used directly rather than through
//! `tracing-opentelemetry`: every span here has an explicit parent that comes
//! off the wire, not from the task it runs in, and a span must cost nothing
//! when traces are off, which a `tracing` span under a subscriber does not
//! guarantee.
//!
//! Export: the SDK's batch span processor (a thread of its own and a bounded
//! queue of [`QUEUE`] spans; a span that finds it full is dropped, never
//! waited for) with the OTLP HTTP/protobuf exporter and reqwest's blocking
//! client. HTTP rather than gRPC because that exporter needs no tokio runtime:
//! the batch thread sends on its own, so a slow or dead collector never
//! touches the runtime that serves requests, and the stop of a process can
//! flush without one. Jaeger and the OpenTelemetry collector both take
//! OTLP/HTTP (port 4318).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData,
};

pub use crate::wire::TraceContext;

/// Spans waiting for export, at most; more are dropped (and counted).
pub const QUEUE: usize = 4096;
/// Spans sent in one export request, at most.
const BATCH: usize = 512;
/// How often the queue is sent when it is not full.
const DELAY: Duration = Duration::from_millis(500);
/// How long one export may take before it counts as failed (a collector that
/// accepts connections but does not answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the stop of a process waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The process's exporter, once enabled.
struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
    /// Spans ended (handed to the queue).
    ended: AtomicU64,
    counts: Arc<Counts>,
}

/// What the exporter did with the spans it got.
#[derive(Default)]
struct Counts {
    exported: AtomicU64,
    failed: AtomicU64,
}

static TRACES: OnceLock<Traces> = OnceLock::new();

/// Whether spans are recorded in this process.
pub fn enabled() -> bool {
    TRACES.get().is_some()
}

/// The OTLP/HTTP URL of `endpoint`: given as is when it has a path, else
/// with the standard `/v1/traces`.
///
/// # Errors
/// Not an `http://` or `https://` URL.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("traces endpoint `{endpoint}` is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("traces endpoint `{endpoint}` has no host"));
    }
    let path = &rest[host.len()..];
    Ok(if path.is_empty() || path == "/" {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    } else {
        endpoint.to_string()
    })
}

/// Starts exporting this process's spans to `endpoint` (an OTLP/HTTP
/// collector: `http://HOST:4318`, or a URL with its path) as service
/// `service`. Returns a guard that flushes what is queued when dropped. A
/// second call (a process has one exporter) changes nothing and returns a
/// guard that does nothing.
///
/// # Errors
/// A URL that is not one, or an exporter that cannot be built.
pub fn enable(endpoint: &str, service: &str) -> anyhow::Result<Flush> {
    let url = traces_url(endpoint).map_err(anyhow::Error::msg)?;
    if let Some(traces) = TRACES.get() {
        if traces.endpoint != url {
            tracing::warn!(
                "traces already go to {}; not also to {url}",
                traces.endpoint
            );
        }
        return Ok(Flush(false));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("the traces exporter for {url}: {e}"))?;
    let counts = Arc::new(Counts::default());
    let exporter = Counted {
        inner: exporter,
        counts: counts.clone(),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE)
        .with_max_export_batch_size(BATCH)
        .with_scheduled_delay(DELAY)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(config)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "jina-wasm");
    let traces = Traces {
        provider,
        tracer,
        endpoint: url.clone(),
        ended: AtomicU64::new(0),
        counts,
    };
    if TRACES.set(traces).is_err() {
        return Ok(Flush(false));
    }
    tracing::info!(endpoint = %url, "exporting traces");
    Ok(Flush(true))
}

/// Flushes the queued spans when dropped (the end of a command), and logs
/// how many went out and how many were dropped.
#[must_use = "spans still queued are lost unless this is dropped at the end"]
pub struct Flush(bool);

impl Drop for Flush {
    fn drop(&mut self) {
        let Some(traces) = TRACES.get().filter(|_| self.0) else {
            return;
        };
        // Blocks until the batch thread has sent what it holds, or the time
        // is up (a collector that does not answer).
        if let Err(e) = traces.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!("traces: the last spans were not all sent: {e}");
        }
        let ended = traces.ended.load(Ordering::Relaxed);
        let exported = traces.counts.exported.load(Ordering::Relaxed);
        let failed = traces.counts.failed.load(Ordering::Relaxed);
        let dropped = ended.saturating_sub(exported + failed);
        if failed + dropped > 0 {
            tracing::warn!(
                ended,
                exported,
                failed,
                dropped,
                "traces: spans lost (the collector at {} was slow or down)",
                traces.endpoint
            );
        } else {
            tracing::debug!(ended, exported, "traces: every span sent");
        }
    }
}

/// Counts what the OTLP exporter sent and failed to send (the spans dropped
/// because the queue was full are the rest).
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts").finish_non_exhaustive()
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let counter = match &result {
            Ok(()) => &self.counts.exported,
            Err(_) => &self.counts.failed,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span being recorded; [`Span::end`] hands it to the exporter (dropping
/// it does too, at the time of the drop).
pub struct Span {
    inner: opentelemetry_sdk::trace::Span,
}

/// The kinds of span this host records.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A gateway request: a client's call (the root, or a child of the
    /// client's `traceparent`).
    Server,
    /// A hop inside the Flow (Head, Pea call, Tail).
    Internal,
}

/// Starts span `name` as a child of `parent` (a root when `None`), at
/// `start_us` (microseconds since the Unix epoch) or now. `None` when traces
/// are off or the parent's trace is not sampled: nothing is built then.
pub fn start(
    name: &'static str,
    kind: Kind,
    parent: Option<&TraceContext>,
    start_us: Option<u64>,
) -> Option<Span> {
    let traces = TRACES.get()?;
    if parent.is_some_and(|p| !p.sampled) {
        return None;
    }
    let context = match parent {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.parent_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        )),
        None => Context::new(),
    };
    let mut builder = traces.tracer.span_builder(name).with_kind(match kind {
        Kind::Server => SpanKind::Server,
        Kind::Internal => SpanKind::Internal,
    });
    if let Some(us) = start_us {
        builder = builder.with_start_time(UNIX_EPOCH + Duration::from_micros(us));
    }
    Some(Span {
        inner: builder.start_with_context(&traces.tracer, &context),
    })
}

impl Span {
    /// The context a child of this span is started under: what goes in the
    /// envelope of the messages this span sends.
    pub fn context(&self) -> TraceContext {
        let c = self.inner.span_context();
        TraceContext {
            trace_id: c.trace_id().to_bytes(),
            parent_id: c.span_id().to_bytes(),
            sampled: c.is_sampled(),
        }
    }

    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.inner.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed: `error.kind` is the failure's kind (`timeout`,
    /// `panic`...), the status carries the reason.
    pub fn fail(&mut self, kind: &str, message: &str) {
        self.set("error.kind", kind.to_string());
        self.inner.set_status(Status::error(message.to_string()));
    }

    /// Ends the span now (as dropping it does).
    pub fn end(self) {}

    /// Ends the span at `end_us` (microseconds since the Unix epoch).
    pub fn end_at(mut self, end_us: u64) {
        self.inner
            .end_with_timestamp(UNIX_EPOCH + Duration::from_micros(end_us));
    }
}

impl Drop for Span {
    /// The SDK's span ends itself when dropped (unless ended already); this
    /// counts it, to tell the spans dropped by a full queue at the end.
    fn drop(&mut self) {
        if let Some(traces) = TRACES.get() {
            traces.ended.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Records a span that already happened: `name` under `parent`, from
/// `start_us` to `end_us`, failed with `error` (its kind and reason) if
/// given, with `attributes`. Does nothing when traces are off or `parent` is
/// `None` (an untraced request).
pub fn record(
    name: &'static str,
    parent: Option<&TraceContext>,
    (start_us, end_us): (u64, u64),
    error: Option<(&str, &str)>,
    attributes: impl FnOnce(&mut Span),
) {
    let Some(parent) = parent else { return };
    let Some(mut span) = start(name, Kind::Internal, Some(parent), Some(start_us)) else {
        return;
    };
    attributes(&mut span);
    if let Some((kind, message)) = error {
        span.fail(kind, message);
    }
    span.end_at(end_us.max(start_us));
}

/// The context of a W3C `traceparent` header (`00-TRACEID-PARENTID-FLAGS`),
/// parsed by the SDK's W3C propagator; `None` when absent or invalid (the
/// gateway then starts a trace of its own, as the W3C spec asks).
pub fn from_traceparent(value: Option<&str>) -> Option<TraceContext> {
    use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    let value = value?;
    // The propagator takes ids shorter than the spec's fixed 32 and 16 hex
    // digits (and pads them); the W3C format does not.
    let mut fields = value.trim().split('-').map(str::len);
    if fields.by_ref().take(4).collect::<Vec<_>>() != [2, 32, 16, 2] {
        return None;
    }
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &One(value));
    let span = context.span();
    let c = span.span_context();
    c.is_valid().then(|| TraceContext {
        trace_id: c.trace_id().to_bytes(),
        parent_id: c.span_id().to_bytes(),
        sampled: c.is_sampled(),
    })
}

/// The number of documents of an encoded body (its first field), without
/// decoding it; 0 for an empty or short body.
pub fn documents(body: &[u8]) -> i64 {
    body.get(..4).map_or(0, |b| {
        i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_by_the_w3c_rules() {
        let c = from_traceparent(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ))
        .unwrap();
        assert_eq!(c.trace_id[0], 0x0a);
        assert_eq!(c.parent_id[7], 0x31);
        assert!(c.sampled);
        let unsampled = from_traceparent(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ))
        .unwrap();
        assert!(!unsampled.sampled);
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
        ] {
            assert_eq!(from_traceparent(Some(bad)), None, "{bad}");
        }
        assert_eq!(from_traceparent(None), None);
    }

    #[test]
    fn endpoints_get_the_standard_path() {
        assert_eq!(
            traces_url("http://localhost:4318").unwrap(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://localhost:4318/").unwrap(),
            "http://localhost:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/path").unwrap(),
            "https://otel.example/custom/path"
        );
        assert!(
            traces_url("localhost:4318")
                .unwrap_err()
                .contains("http://")
        );
        assert!(traces_url("http:///v1").unwrap_err().contains("no host"));
    }

    /// Off (no `enable` in the unit tests), nothing is built.
    #[test]
    fn off_builds_nothing() {
        assert!(!enabled());
        assert!(start("gateway", Kind::Server, None, None).is_none());
    }
}
