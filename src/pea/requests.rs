//! A Pea's data path: a message from its input (checked, refused, skipped or
//! handed to the executor), its route entry and failure status, and the credit
//! it grants upstream and takes from downstream.

use super::*;
use std::collections::HashMap;

/// The IDLE message that grants one credit upstream, with the shard count
/// the Pea was given (`with.jina.shards`), so a Head refuses a shard of a Pod
/// of another size. It goes with every request, so it is made once (its
/// envelope's id is the same each time: nothing answers or keys an IDLE).
pub(super) fn idle_frames(config: &PeaConfig) -> Vec<Bytes> {
    let mut body = json!({"credit": 1, "pea": config.name});
    if let Some(shards) = config.executor.config.pointer("/jina/shards") {
        body["shards"] = shards.clone();
    }
    control::frames("IDLE", body)
}

/// The most credit the Pea holds from all its downstream connections
/// together (64 Ki answers, 2 MiB of slots).
const MAX_CREDITS: usize = 1 << 16;

/// The most credit one downstream connection holds: what one IDLE may
/// grant (a Pea asks for one at a time).
const MAX_CREDIT: usize = crate::control::MAX_CREDIT as usize;

/// Credit from the downstream DEALERs on the Pea's ROUTER output: the
/// identity of the connection each answer goes to, in the order granted,
/// and how many each connection holds (so an IDLE costs the same however
/// much is held: counting by scanning cost 65,536 comparisons an IDLE).
#[derive(Default)]
pub(super) struct Credits {
    queue: VecDeque<Bytes>,
    held: HashMap<Bytes, usize>,
}

impl Credits {
    /// The connection the next answer goes to.
    pub(super) fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Uses the next credit.
    pub(super) fn pop_front(&mut self) -> Option<Bytes> {
        let identity = self.queue.pop_front()?;
        if let Some(n) = self.held.get_mut(&identity) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&identity);
            }
        }
        Some(identity)
    }

    /// Drops what connection `identity` held (a CANCEL, or it went away).
    pub(super) fn withdraw(&mut self, identity: &Bytes) {
        if self.held.remove(identity).is_some() {
            self.queue.retain(|id| id != identity);
        }
    }

    /// Credit `credit` from connection `identity` (an IDLE): one answer
    /// each, up to [`MAX_CREDIT`] held by that connection and
    /// [`MAX_CREDITS`] by all; past them an IDLE grants nothing more (each
    /// credit is a slot kept until an answer takes it).
    pub(super) fn take(&mut self, identity: &Bytes, credit: u64) {
        let held = self.held.get(identity).copied().unwrap_or(0);
        let room = MAX_CREDIT
            .saturating_sub(held)
            .min(MAX_CREDITS.saturating_sub(self.queue.len()));
        let credit = usize::try_from(credit).unwrap_or(usize::MAX).min(room);
        if credit == 0 {
            return;
        }
        *self.held.entry(identity.clone()).or_default() += credit;
        self.queue
            .extend(std::iter::repeat_n(identity.clone(), credit));
    }
}

impl Pea {
    /// Tells the upstream ROUTER (our DEALER input) we can take one more
    /// request: [`idle_frames`], made once.
    pub(super) async fn grant_credit(&self) {
        let _ = self.input.send(self.idle.clone()).await;
    }

    /// One message from the input socket.
    pub(super) async fn take_input(&mut self, frames: Vec<Bytes>) {
        let before = self.outbox.len();
        self.on_input(frames).await;
        // Nothing came of it (dropped): the credit it used is free again.
        if self.busy.is_none()
            && self.outbox.len() == before
            && self.config.socket_in.kind == SocketType::Dealer
        {
            self.grant_credit().await;
        }
    }

    pub(super) async fn on_input(&mut self, mut frames: Vec<Bytes>) {
        if self.config.socket_in.kind == SocketType::Router && !frames.is_empty() {
            frames.remove(0);
        }
        let mut message = match Message::from_frames(&frames) {
            Ok(message) => message,
            Err(e) => {
                self.counters.dropped += 1;
                tracing::warn!(pea = %self.config.name, "dropped a message that is not a jina-wasm message: {e}");
                return;
            }
        };
        if message.envelope.kind != Kind::Data {
            tracing::warn!(pea = %self.config.name, command = %message.envelope.endpoint, "ignored a control message on the data input");
            return;
        }
        self.counters.requests += 1;
        if let Some(m) = &mut self.metrics {
            m.request(&message.envelope.endpoint);
        }
        let received = now_us();
        let envelope = &mut message.envelope;
        if envelope.is_error() {
            match envelope.after_error {
                AfterError::Continue => {}
                AfterError::SkipExecutor => {
                    self.route(&mut message, received, Outcome::Skipped);
                    self.outbox.push_back(message.frames().to_vec());
                    return;
                }
                AfterError::SkipHandle | AfterError::Abort => {
                    self.outbox.push_back(message.frames().to_vec());
                    return;
                }
            }
        }
        if envelope.expired() {
            envelope.fail(
                &self.config.name,
                ErrorKind::Deadline,
                "the request's deadline passed before the executor could run it",
            );
            envelope.after_error = AfterError::Abort;
            message.body = Bytes::new();
            if let Some(m) = &mut self.metrics {
                m.error(ErrorKind::Deadline);
            }
            self.route(&mut message, received, Outcome::Failed);
            self.outbox.push_back(message.frames().to_vec());
            return;
        }
        let write = !self.is_read(&envelope.endpoint);
        if write && let Some(refusal) = self.write_refusal() {
            self.fail(&mut message, received, &refusal);
            self.outbox.push_back(message.frames().to_vec());
            return;
        }
        let timeout = (envelope.deadline_ms != 0)
            .then(|| Duration::from_millis(envelope.deadline_ms.saturating_sub(now_us() / 1000)));
        let (reply, rx) = oneshot::channel();
        let job = Job::Handle {
            endpoint: envelope.endpoint.clone(),
            body: message.body.clone(),
            parameters: envelope.parameters.clone(),
            timeout,
            reply,
        };
        self.running.push(self.worker.run(job));
        let number = self.counters.requests;
        self.busy = Some(Busy::Request {
            message,
            started: received,
            number,
            write,
            reply: rx,
        });
    }

    /// Records a failure of this Pea's executor on `message`.
    pub(super) fn fail(&mut self, message: &mut Message, started: u64, failure: &Failure) {
        self.counters.failed += 1;
        if let Some(m) = &mut self.metrics {
            m.error(failure.kind);
        }
        let name = &self.config.name;
        if self.config.quiet_error {
            tracing::warn!(pea = %name, request = %message.envelope.request_id, kind = %failure.kind, "request failed");
        } else {
            tracing::warn!(pea = %name, request = %message.envelope.request_id, kind = %failure.kind, "request failed: {}", failure.message);
        }
        let envelope = &mut message.envelope;
        envelope.fail(name, failure.kind, &failure.message);
        // A body that did not decode cannot go on; otherwise the strategy decides.
        let strategy = if failure.kind == ErrorKind::Malformed {
            OnError::ThrowEarly
        } else {
            self.config.on_error
        };
        if envelope.after_error == AfterError::Continue {
            envelope.after_error = strategy.after_error();
        }
        if strategy == OnError::ThrowEarly {
            message.body = Bytes::new();
        }
        self.route(message, started, Outcome::Failed);
    }

    pub(super) fn route(&self, message: &mut Message, start_us: u64, outcome: Outcome) {
        message.envelope.routes.push(Route {
            pea: self.config.name.clone(),
            start_us,
            end_us: now_us(),
            outcome,
        });
    }

    /// A message from a downstream DEALER on our ROUTER output: credit.
    pub(super) fn on_downstream(&mut self, frames: Vec<Bytes>) {
        let Some((identity, rest)) = frames.split_first() else {
            return;
        };
        if rest.is_empty() {
            // The peer went away without CANCEL.
            self.credits.withdraw(identity);
            return;
        }
        let Ok(message) = Message::from_frames(rest) else {
            tracing::warn!(pea = %self.config.name, "dropped a malformed message from downstream");
            return;
        };
        match message.envelope.endpoint.as_str() {
            "IDLE" => {
                self.credits
                    .take(identity, crate::control::Says::read(&message.body).credit());
            }
            "CANCEL" => self.credits.withdraw(identity),
            other => tracing::warn!(pea = %self.config.name, "ignored `{other}` from downstream"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Downstream DEALERs grant the Pea credit with IDLE, up to 1,024 in
    /// one. However many IDLEs one connection sends (a flood, or a Pea
    /// that resends its IDLE on every reconnect), it holds no more credit
    /// than one IDLE grants, and all of them together a bounded number:
    /// each credit is a slot in memory, never taken back unless answered.
    #[test]
    fn an_idle_flood_from_downstream_holds_bounded_credit() {
        let mut credits = Credits::default();
        let flooder = Bytes::from("flooder");
        for _ in 0..10_000 {
            credits.take(&flooder, u64::MAX);
        }
        assert_eq!(credits.len(), 1024);
        // Many connections: bounded in all, and one that asks for one
        // more still gets it while there is room.
        for i in 0..1_000 {
            credits.take(&Bytes::from(format!("c{i}")), 1024);
        }
        assert_eq!(credits.len(), MAX_CREDITS);
        // One answer sent (to the flooder, the first granted): room for one.
        assert_eq!(credits.pop_front(), Some(flooder.clone()));
        credits.take(&Bytes::from("pea"), 1);
        assert_eq!(credits.queue.back(), Some(&Bytes::from("pea")));
        assert_eq!(credits.len(), MAX_CREDITS);
        // The flooder's withdrawal drops its 1,023 left, and only those.
        credits.withdraw(&flooder);
        assert_eq!(credits.len(), MAX_CREDITS - 1023);
        assert!(!credits.queue.contains(&flooder) && !credits.held.contains_key(&flooder));
    }

    /// An IDLE says its credit as a whole number in an object; anything
    /// else grants one.
    #[test]
    fn an_idle_grants_its_credit_or_one() {
        for (body, credit) in [
            (&br#"{"credit": 7, "pea": "x"}"#[..], 7),
            (br#" {"pea": "x", "credit": 1024}"#, 1024),
            (br#"{"credit": -1}"#, 1),
            (br#"{"credit": 2.5}"#, 1),
            (br#"{"credit": "7"}"#, 1),
            (br#"[7]"#, 1),
            (br#"{"pea": "x"}"#, 1),
            (b"\xff", 1),
            (b"", 1),
        ] {
            assert_eq!(
                crate::control::Says::read(body).credit(),
                credit,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// A 32 MiB IDLE from downstream, its `credit` after an array of 16 Mi
    /// numbers: read without building the array (as a JSON tree, 512 MiB
    /// in the Pea's process, and every Pea of its Pod when THREAD-backed).
    #[test]
    fn a_huge_idle_is_read_without_building_it() {
        const NUMBERS: usize = 16 << 20;
        let mut body = String::with_capacity(2 * NUMBERS + 64);
        body.push_str(r#"{"note": [0"#);
        for _ in 0..NUMBERS {
            body.push_str(",0");
        }
        body.push_str(r#"], "credit": 3}"#);
        let before = crate::test_support::peak_rss(true);
        let credit = crate::control::Says::read(body.as_bytes()).credit();
        let grew = crate::test_support::peak_rss(false).saturating_sub(before);
        assert_eq!(credit, 3);
        // 256 MiB, not less: the peak is the process's, and other tests
        // run beside this one.
        assert!(
            grew < 256 << 20,
            "reading a 32 MiB IDLE took {} MiB more",
            grew >> 20
        );
    }

    /// An IDLE costs the same however much credit is held: 63 connections
    /// holding 1,024 each (64,512, just under the cap) and a 64th at its
    /// own cap sending IDLEs as fast as it can. Counting what it held by
    /// scanning every credit took 65,536 comparisons an IDLE (1.1 s for
    /// these 20,000 on the dev profile, 57 us each, 30 times the cost of
    /// reading the IDLE): the Pea's one task did little else.
    #[test]
    fn an_idle_costs_the_same_however_much_credit_is_held() {
        let mut credits = Credits::default();
        for i in 0..63 {
            credits.take(&Bytes::from(format!("c{i}")), 1024);
        }
        let flooder = Bytes::from("flooder");
        credits.take(&flooder, 1024);
        let started = Instant::now();
        for _ in 0..20_000 {
            credits.take(&flooder, 1);
        }
        let took = started.elapsed();
        assert_eq!(credits.len(), 64 * 1024);
        assert!(
            took < Duration::from_millis(200),
            "20,000 IDLEs took {took:?}"
        );
    }
}
