//! A Pea's metrics, labelled `pod` and `pea`.

use super::*;

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
