//! A Pea's data path: a message from its input (checked, refused, skipped or
//! handed to the executor), its route entry and failure status, and the credit
//! it grants upstream and takes from downstream.

use super::*;

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
            self.credits.retain(|id| id != identity);
            return;
        }
        let Ok(message) = Message::from_frames(rest) else {
            tracing::warn!(pea = %self.config.name, "dropped a malformed message from downstream");
            return;
        };
        match message.envelope.endpoint.as_str() {
            "IDLE" => {
                let credit = serde_json::from_slice::<Value>(&message.body)
                    .ok()
                    .and_then(|v| v.get("credit").and_then(Value::as_u64))
                    .unwrap_or(1)
                    .min(1024);
                self.credits
                    .extend(std::iter::repeat_n(identity.clone(), credit as usize));
            }
            "CANCEL" => self.credits.retain(|id| id != identity),
            other => tracing::warn!(pea = %self.config.name, "ignored `{other}` from downstream"),
        }
    }
}
