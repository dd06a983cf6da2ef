//! A Pod's head and tail counters, read at scrape time.

use super::*;

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
pub(super) struct PodCollector {
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
