//! The Flow's router: it carries each request along the `needs` graph,
//! joining branches.
//!
//! Every Pod binds its input (PULL) and output (PUSH) on loopback (a remote
//! Pod on its daemon's address, [`super::remote`]); the router,
//! in the Flow's process, connects to both. A request from the gateway goes to
//! every Pod that needs `gateway`; a Pod's output goes to every Pod that needs
//! it; a Pod that needs several Pods (a join) gets one message per request,
//! merged once every branch has answered; the outputs of the Pods nobody needs
//! are joined the same way into the gateway's answer.
//!
//! Part counting is per request and per join, so a branch that fails still
//! arrives (Peas always forward, with the failure in the status); a branch that
//! aborts (`THROW_EARLY`) answers the request at once; a branch that never
//! answers is caught by the request's deadline, which ends it with an error
//! naming the Pod that did not answer. Nothing waits forever.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::run::Running;
use super::spec::Flow;
use crate::transport::{Link, SocketSpec};
use crate::wire::{AfterError, Body, ErrorKind, Message, Outcome, Route, now_us};

/// A request from the gateway and where its answer goes.
pub struct Call {
    pub message: Message,
    pub reply: oneshot::Sender<Message>,
    /// Jina's `target_executor`: only the Pods it names handle the request.
    pub target: Option<TargetExecutor>,
}

/// Jina's `target_executor`: a regular expression matched, as Python's
/// `re.match` does, at the start of each Pod's name. Pods it does not match
/// pass the request on as they received it (Jina's gateway does the same), so
/// a client can send `/dump` or `/search` to one Pod of a Flow.
#[derive(Debug, Clone)]
pub struct TargetExecutor(regex::Regex);

impl TargetExecutor {
    /// The largest compiled pattern a client may send: the regex crate's
    /// matching is linear in the input, and this bounds what compiling one
    /// pattern may cost.
    const SIZE_LIMIT: usize = 256 << 10;

    /// Reads a client's pattern; empty means every Pod.
    ///
    /// # Errors
    /// A pattern that is not a regular expression, or too large, named.
    pub fn parse(pattern: &str) -> Result<Option<TargetExecutor>, String> {
        if pattern.is_empty() {
            return Ok(None);
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})"))
            .size_limit(Self::SIZE_LIMIT)
            .dfa_size_limit(Self::SIZE_LIMIT)
            .build()
            .map(|r| Some(TargetExecutor(r)))
            .map_err(|e| {
                let reason = e.to_string();
                let reason = reason.lines().last().unwrap_or_default().trim();
                format!("`target_executor` is not a regular expression: {reason}")
            })
    }

    /// Whether the Pod called `name` handles the request.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// The router alone, for Pods that run elsewhere (`jina-wasm gateway`): it
/// connects to each Pod's input and output, given in file order as
/// `(input, output)` addresses (`tcp://host:port`; a host name is looked up
/// again on every reconnect).
///
/// # Errors
/// An address that cannot be used, or a bad `with.timeout`.
///
/// # Panics
/// When `addresses` does not have one pair per Pod (a caller's bug: both come
/// from the same Flow).
pub async fn route(flow: &Flow, addresses: &[(String, String)]) -> anyhow::Result<Running> {
    assert_eq!(addresses.len(), flow.pods.len(), "one address pair per Pod");
    let mut to_pods = Vec::new();
    let mut from_pods = Vec::new();
    for (i, (input, output)) in addresses.iter().enumerate() {
        let name = &flow.pods[i].name;
        to_pods.push(
            Link::open(
                SocketSpec::PUSH_CONNECT,
                input,
                &format!("flow router to `{name}`"),
            )
            .await?,
        );
        from_pods.push(
            Link::open(
                SocketSpec::PULL_CONNECT,
                output,
                &format!("flow router from `{name}`"),
            )
            .await?,
        );
    }
    let (calls, calls_rx) = mpsc::channel(flow.with.prefetch.unwrap_or(8).max(1));
    let stop = CancellationToken::new();
    let router = Router {
        names: flow.pods.iter().map(|p| p.name.clone()).collect(),
        needs: flow.needs.clone(),
        leaves: flow.leaves.clone(),
        timeout: flow.timeout().map_err(anyhow::Error::msg)?,
        to_pods,
        from_pods,
        requests: HashMap::new(),
    };
    let router = tokio::spawn(router.run(calls_rx, stop.clone()));
    Ok(Running {
        pods: Vec::new(),
        calls,
        stop,
        router,
    })
}

/// One request on its way through the Flow.
struct InFlight {
    reply: oneshot::Sender<Message>,
    deadline: Instant,
    /// Per join Pod: the message of each of its needs, in `needs` order.
    joins: HashMap<usize, Vec<Option<Message>>>,
    /// The leaves' outputs, in `leaves` order.
    leaves: Vec<Option<Message>>,
    /// Pods that have answered.
    answered: Vec<bool>,
    /// Pods the request's `target_executor` leaves out.
    skipped: Vec<bool>,
}

struct Router {
    names: Vec<String>,
    needs: Vec<Vec<usize>>,
    leaves: Vec<usize>,
    timeout: Duration,
    to_pods: Vec<Link>,
    /// Each Pod's output, read by the router itself (no task in between).
    from_pods: Vec<Link>,
    requests: HashMap<String, InFlight>,
}

impl Router {
    async fn run(mut self, mut calls: mpsc::Receiver<Call>, stop: CancellationToken) {
        let mut check = tokio::time::interval(Duration::from_millis(50));
        // The Pod output read first next time (each in turn, so none starves).
        let mut first = 0;
        loop {
            tokio::select! {
                call = calls.recv() => match call {
                    Some(call) => self.on_call(call).await,
                    None => break,
                },
                (pod, frames) = next_output(&mut self.from_pods, &mut first) => match frames {
                    Some(frames) => self.on_output(pod, frames).await,
                    None => {
                        tracing::warn!(pod = %self.names[pod], "the flow router's link from the pod closed; stopping");
                        break;
                    }
                },
                _ = check.tick() => self.expire(),
                () = stop.cancelled() => break,
            }
        }
        for (_, request) in self.requests.drain() {
            drop(request.reply);
        }
        for link in self.to_pods {
            link.close(Duration::from_millis(500)).await;
        }
        for link in self.from_pods {
            link.close(Duration::from_millis(200)).await;
        }
    }

    async fn on_call(&mut self, call: Call) {
        let Call {
            mut message,
            reply,
            target,
        } = call;
        let now = now_us();
        let mut deadline = Instant::now() + self.timeout;
        if message.envelope.deadline_ms == 0 {
            message.envelope.deadline_ms = now / 1000 + self.timeout.as_millis() as u64;
        } else {
            let left =
                Duration::from_millis(message.envelope.deadline_ms.saturating_sub(now / 1000));
            deadline = Instant::now() + left.min(self.timeout);
        }
        message.envelope.routes.push(Route {
            pea: "gateway".into(),
            start_us: now,
            end_us: now,
            outcome: Outcome::Routed,
        });
        let id = message.envelope.request_id.clone();
        // Ids are the gateway's own (minted per request), so this never meets
        // another request's; refuse rather than let two share one slot.
        if self.requests.contains_key(&id) {
            let mut envelope = message.envelope;
            envelope.fail(
                "gateway",
                ErrorKind::BadRequest,
                &format!("request id `{id}` is already in the Flow"),
            );
            envelope.after_error = AfterError::Abort;
            let _ = reply.send(Message::new(envelope, Bytes::new()));
            return;
        }
        let joins = (0..self.names.len())
            .filter(|&j| self.needs[j].len() > 1)
            .map(|j| (j, vec![None; self.needs[j].len()]))
            .collect();
        let request = InFlight {
            reply,
            deadline,
            joins,
            leaves: vec![None; self.leaves.len()],
            answered: vec![false; self.names.len()],
            skipped: self
                .names
                .iter()
                .map(|name| target.as_ref().is_some_and(|t| !t.matches(name)))
                .collect(),
        };
        // A copy for each root but the last, which takes the message itself.
        let roots: Vec<usize> = (0..self.names.len())
            .filter(|&j| self.needs[j].is_empty())
            .collect();
        let mut sends = Vec::with_capacity(roots.len());
        if let Some((&last, rest)) = roots.split_last() {
            sends.extend(rest.iter().map(|&j| (j, message.clone())));
            sends.push((last, message));
        }
        self.requests.insert(id, request);
        self.send(sends).await;
    }

    async fn on_output(&mut self, pod: usize, frames: Vec<Bytes>) {
        let Ok(message) = Message::from_frames(&frames) else {
            tracing::warn!(pod = %self.names[pod], "the flow router dropped a malformed message");
            return;
        };
        let sends = self.advance(pod, message);
        self.send(sends).await;
    }

    /// Sends each message to its Pod; a Pod the request's `target_executor`
    /// leaves out answers at once with what it was sent.
    async fn send(&mut self, mut sends: Vec<(usize, Message)>) {
        while let Some((j, message)) = sends.pop() {
            let skipped = self
                .requests
                .get(&message.envelope.request_id)
                .is_some_and(|r| r.skipped[j]);
            if skipped {
                sends.extend(self.advance(j, message));
            } else {
                let _ = self.to_pods[j].send(message.frames().to_vec()).await;
            }
        }
    }

    /// Takes Pod `pod`'s answer on: the messages for the Pods that need it,
    /// and the reply to the client once every leaf has answered.
    fn advance(&mut self, pod: usize, message: Message) -> Vec<(usize, Message)> {
        let id = message.envelope.request_id.clone();
        let Some(request) = self.requests.get_mut(&id) else {
            tracing::debug!(pod = %self.names[pod], request = %id, "a late answer to a request that already ended");
            return Vec::new();
        };
        request.answered[pod] = true;
        if message.envelope.is_error() && message.envelope.after_error == AfterError::Abort {
            let request = self.requests.remove(&id).expect("present");
            let _ = request.reply.send(message);
            return Vec::new();
        }
        let mut sends = Vec::new();
        for j in 0..self.names.len() {
            let Some(position) = self.needs[j].iter().position(|&n| n == pod) else {
                continue;
            };
            if self.needs[j].len() == 1 {
                sends.push((j, message.clone()));
                continue;
            }
            let slots = request.joins.get_mut(&j).expect("a join has slots");
            slots[position] = Some(message.clone());
            if slots.iter().all(Option::is_some) {
                let parts: Vec<Message> = slots.iter_mut().filter_map(Option::take).collect();
                sends.push((j, join(parts)));
            }
        }
        if let Some(position) = self.leaves.iter().position(|&l| l == pod) {
            request.leaves[position] = Some(message);
            if request.leaves.iter().all(Option::is_some) {
                let request = self.requests.remove(&id).expect("present");
                let parts: Vec<Message> = request.leaves.into_iter().flatten().collect();
                let mut answer = join(parts);
                let now = now_us();
                answer.envelope.routes.push(Route {
                    pea: "gateway".into(),
                    start_us: now,
                    end_us: now,
                    outcome: Outcome::Routed,
                });
                let _ = request.reply.send(answer);
            }
        }
        sends
    }

    /// Ends requests past their deadline, naming a Pod that has not answered.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let request = self.requests.remove(&id).expect("listed");
            // The first Pod that could have answered (everything it needs did) but did not.
            let stuck = (0..self.names.len())
                .find(|&p| {
                    !request.answered[p] && self.needs[p].iter().all(|&n| request.answered[n])
                })
                .map_or_else(|| "the flow".to_string(), |p| self.names[p].clone());
            let mut envelope = crate::wire::Envelope::request("", "");
            envelope.request_id = id;
            envelope.fail(
                &stuck,
                ErrorKind::Timeout,
                &format!("pod `{stuck}` did not answer before the request's deadline"),
            );
            envelope.after_error = AfterError::Abort;
            tracing::warn!(pod = %stuck, request = %envelope.request_id, "a request timed out in the Flow");
            let _ = request.reply.send(Message::new(envelope, Bytes::new()));
        }
    }
}

/// The next message from any Pod's output, with the Pod's index; the Pods
/// are tried in turn from `first`.
async fn next_output(links: &mut [Link], first: &mut usize) -> (usize, Option<Vec<Bytes>>) {
    std::future::poll_fn(|cx| {
        let n = links.len();
        for k in 0..n {
            let i = (*first + k) % n;
            if let std::task::Poll::Ready(frames) = links[i].poll_recv(cx) {
                *first = (i + 1) % n;
                return std::task::Poll::Ready((i, frames));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Joins the branches of one request: documents merged as a Pod's tail merges
/// shards (one copy per id, matches merged by score), the route and status of
/// every branch kept.
fn join(parts: Vec<Message>) -> Message {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let mut envelope = crate::pod::reduce::merge_envelopes(&parts);
    let bodies: Result<Vec<Body>, String> = parts
        .iter()
        .map(|m| m.decode_body().map_err(|e| e.to_string()))
        .collect();
    match bodies.and_then(|b| crate::pod::reduce::merge(b, None)) {
        Ok(body) => Message::data(envelope, &body),
        Err(reason) => {
            envelope.fail("gateway", ErrorKind::Malformed, &reason);
            Message::new(envelope, Bytes::new())
        }
    }
}

/// Sends one request through a running Flow and waits for its answer.
///
/// # Errors
/// The Flow stopped before answering.
pub async fn call(calls: &mpsc::Sender<Call>, message: Message) -> anyhow::Result<Message> {
    call_targeted(calls, message, None).await
}

/// [`call`], with Jina's `target_executor`: only the Pods it matches run.
///
/// # Errors
/// The Flow stopped before answering.
pub async fn call_targeted(
    calls: &mpsc::Sender<Call>,
    message: Message,
    target: Option<TargetExecutor>,
) -> anyhow::Result<Message> {
    let (reply, rx) = oneshot::channel();
    calls
        .send(Call {
            message,
            reply,
            target,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the Flow is stopping"))?;
    rx.await.context("the Flow stopped before answering")
}

#[cfg(test)]
mod tests;
