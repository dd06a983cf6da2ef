//! The Tail: collects the parts of each request from the Pod's Peas, keyed by
//! the id the Head minted for it, and sends one merged message on the Pod's
//! output, under the id the request came in with.
//!
//! It knows what to expect from the Head ([`Expect`]): which Peas answer each
//! request and by when. A part that does not come in time, or a Pea that is
//! down, ends the request with an error naming that Pea; a part that aborts
//! (`THROW_EARLY`) ends it at once. State of a finished request is forgotten;
//! late parts of it are dropped with a log line.
//!
//! A Pea that leaves with a part in flight ([`TailInput::Departed`]) does not
//! hold the request up until its deadline: the Tail hands the part back to the
//! Head ([`Resend`]), which sends it to another connection of that Pea's name
//! or another replica of its shard ([`TailInput::Rerouted`]), or, when no Pea
//! can take it, the request fails at once, naming the Pea that left.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::TailStats;
use crate::pea::Failure;
use crate::transport::Link;
use crate::wire::{AfterError, Body, ErrorKind, Message, Outcome, Route, now_us};

/// What the Head tells the Tail about a request before sending its parts.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The id the Head minted for the request: the Tail's key.
    pub request_id: String,
    /// The id the request came in with, put back on the answer. Two senders
    /// may use the same one, so it never keys anything (docs/sandbox.md).
    pub client_id: String,
    /// Member indices that will each send one part.
    pub targets: Vec<usize>,
    /// Of those, the ones the Head knows are gone.
    pub down: Vec<usize>,
    pub deadline: tokio::time::Instant,
    pub top_k: Option<usize>,
    /// The trace context the request came in with (src/trace.rs): the Tail
    /// puts it back on the merged answer, so the next Pod's spans hang
    /// under the same parent as this Pod's Head.
    pub trace: Option<crate::wire::TraceContext>,
    /// The Head's span for the request, when recorded: the Tail's span (the
    /// merge, or the failure) is its child.
    pub head_span: Option<crate::wire::TraceContext>,
    /// Each target's part as sent, in target order: what is sent again if
    /// the connection it went through leaves before answering.
    pub sent: Vec<Sent>,
}

/// One part as the Head sends it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The connection it goes through (its ROUTER identity); none when its
    /// Pea is not connected (the request then fails at once).
    pub via: Option<Bytes>,
    /// Its frames (shared bytes, not copies).
    pub frames: [Bytes; 2],
}

/// Which parts of a Pea that left will never be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Its connection dropped (a crash, a kill): every part it had not
    /// answered. One it answered just before may still be on its way; the
    /// first answer to come is taken.
    Unanswered,
    /// It stopped (`CANCEL`) and named the requests it took and will not
    /// answer; the rest it answered before it stopped.
    Only(HashSet<String>),
}

/// A part the Tail hands back to the Head: the Pea it went to left before
/// answering.
#[derive(Debug)]
pub struct Resend {
    pub request_id: String,
    /// The part's place in the request's [`Expect::targets`].
    pub slot: usize,
    /// The member that left, and the connection that went.
    pub member: usize,
    pub via: Bytes,
    /// The request's targets: a replacement is not one of them (with
    /// `polling all` each replica already has its own copy).
    pub targets: Vec<usize>,
    pub frames: [Bytes; 2],
}

pub enum TailInput {
    Expect(Expect),
    /// A request the Head does not fan out (skipped after an error, or failed
    /// in the Head): straight to the output.
    Forward(Message),
    /// How many requests in flight still wait for a part from `member` (a
    /// rolling update drains a replica before stopping it).
    Outstanding {
        member: usize,
        reply: oneshot::Sender<usize>,
    },
    /// Connection `via` of `member` closed or withdrew (sent after the
    /// [`Expect`] of every part sent through it): the parts sent through it
    /// that are `lost` go back to the Head ([`Resend`]).
    Departed {
        member: usize,
        via: Bytes,
        lost: Lost,
    },
    /// The Head's answer to a [`Resend`]: the member and connection the part
    /// went to instead, or none (the request then fails at once).
    Rerouted {
        request_id: String,
        slot: usize,
        to: Option<(usize, Bytes)>,
    },
}

/// Finished request ids remembered, to tell a late part from an unknown one.
const REMEMBERED: usize = 4096;

/// A reducer executor (`--uses-after`): the merged documents go through it.
pub type Reducer = mpsc::Sender<(
    String,
    Bytes,
    String,
    oneshot::Sender<Result<Bytes, Failure>>,
)>;

pub struct Tail {
    pub name: String,
    /// Member names by index, shared with the Head.
    pub members: super::Members,
    pub parts: Link,
    pub output: Link,
    pub inbox: mpsc::Receiver<TailInput>,
    pub reducer: Option<Reducer>,
    pub stats: Arc<TailStats>,
    /// Parts handed back to the Head to send again. Unbounded: it holds at
    /// most one entry per part in flight, and the Head, which also sends to
    /// the Tail, must never wait on it.
    pub resend: mpsc::UnboundedSender<Resend>,
}

/// The requests a Tail holds.
#[derive(Default)]
struct Book {
    pending: HashMap<String, Pending>,
    /// Finished request ids, the oldest first, to tell a late part from an
    /// unknown one ([`REMEMBERED`]).
    finished: (VecDeque<Arc<str>>, HashSet<Arc<str>>),
    /// Parts handed back to the Head and not yet rerouted (request id,
    /// slot): a second departure does not send one twice.
    rerouting: HashSet<(String, usize)>,
}

struct Pending {
    expect: Expect,
    /// One slot per target, in target order.
    received: Vec<Option<Message>>,
}

impl Tail {
    /// Runs until `stop` and every request in flight has ended; returns its two
    /// sockets still open (the Pod closes them after its Peas have stopped).
    pub async fn run(mut self, stop: CancellationToken) -> (Link, Link) {
        let mut book = Book::default();
        let mut check = tokio::time::interval(Duration::from_millis(50));
        let mut stopping = false;
        loop {
            tokio::select! {
                input = self.inbox.recv() => match input {
                    Some(input) => self.on_input(input, &mut book).await,
                    None => stopping = true,
                },
                frames = self.parts.recv() => {
                    let Some(frames) = frames else { break };
                    // The Head sends expectations before parts: read them first.
                    while let Ok(input) = self.inbox.try_recv() {
                        self.on_input(input, &mut book).await;
                    }
                    self.on_part(frames, &mut book).await;
                }
                _ = check.tick() => {
                    let now = Instant::now();
                    let expired: Vec<String> = book.pending.iter().filter(|(_, p)| p.expect.deadline <= now).map(|(id, _)| id.clone()).collect();
                    for id in expired {
                        let p = book.pending.remove(&id).expect("listed");
                        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        let missing: Vec<String> = Tail::missing(&p).iter().map(|&i| format!("`{}`", self.member(i))).collect();
                        let reason = format!("no answer within the Pod's time limit from {}", missing.join(", "));
                        self.fail(p, &reason, ErrorKind::Timeout, &mut book).await;
                    }
                }
                () = stop.cancelled(), if !stopping => stopping = true,
            }
            self.stats
                .pending
                .store(book.pending.len() as u64, Ordering::Relaxed);
            if stopping && book.pending.is_empty() {
                break;
            }
        }
        (self.parts, self.output)
    }

    async fn on_input(&mut self, input: TailInput, book: &mut Book) {
        match input {
            TailInput::Forward(mut message) => {
                self.route(&mut message, now_us());
                self.send(message).await;
            }
            TailInput::Outstanding { member, reply } => {
                let holding = book
                    .pending
                    .values()
                    .filter(|p| {
                        p.expect
                            .targets
                            .iter()
                            .zip(&p.received)
                            .any(|(&t, got)| t == member && got.is_none())
                    })
                    .count();
                let _ = reply.send(holding);
            }
            TailInput::Expect(expect) => {
                let id = expect.request_id.clone();
                let slots = expect.targets.len();
                let p = Pending {
                    expect,
                    received: (0..slots).map(|_| None).collect(),
                };
                if !p.expect.down.is_empty() {
                    let down: Vec<String> = p.expect.down.iter().map(|&i| self.member(i)).collect();
                    let reason = format!(
                        "{} {} not connected to the Pod",
                        down.join(", "),
                        if down.len() == 1 { "is" } else { "are" }
                    );
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    return self.fail(p, &reason, ErrorKind::Unavailable, book).await;
                }
                book.pending.insert(id, p);
            }
            TailInput::Departed { member, via, lost } => {
                for (id, p) in book.pending.iter() {
                    if let Lost::Only(ids) = &lost
                        && !ids.contains(id)
                    {
                        continue;
                    }
                    // Its parts sent through that connection, not answered.
                    let slots = p.expect.targets.iter().zip(&p.received).zip(&p.expect.sent);
                    let lost = slots.enumerate().filter(|(_, ((t, got), sent))| {
                        **t == member && got.is_none() && sent.via.as_ref() == Some(&via)
                    });
                    for (slot, (_, sent)) in lost {
                        if !book.rerouting.insert((id.clone(), slot)) {
                            continue;
                        }
                        let _ = self.resend.send(Resend {
                            request_id: id.clone(),
                            slot,
                            member,
                            via: via.clone(),
                            targets: p.expect.targets.clone(),
                            frames: sent.frames.clone(),
                        });
                    }
                }
            }
            TailInput::Rerouted {
                request_id,
                slot,
                to,
            } => {
                let key = (request_id, slot);
                book.rerouting.remove(&key);
                let (request_id, slot) = key;
                // Ended meanwhile (an answer after all, an abort, the deadline).
                let Some(p) = book.pending.get_mut(&request_id) else {
                    return;
                };
                let (Some(target), Some(sent)) =
                    (p.expect.targets.get_mut(slot), p.expect.sent.get_mut(slot))
                else {
                    return;
                };
                match to {
                    Some((to, via)) => (*target, sent.via) = (to, Some(via)),
                    None => {
                        let gone = *target;
                        let mut p = book.pending.remove(&request_id).expect("present");
                        p.expect.down.insert(0, gone);
                        let reason = format!(
                            "`{}` left the Pod before answering its part, and no other Pea of its shard is connected to take it",
                            self.member(gone)
                        );
                        self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        self.fail(p, &reason, ErrorKind::Unavailable, book).await;
                    }
                }
            }
        }
    }

    async fn on_part(&mut self, frames: Vec<Bytes>, book: &mut Book) {
        let Ok(message) = Message::from_frames(&frames) else {
            tracing::warn!(pea = %self.name, "dropped a part that is not a jina-wasm message");
            return;
        };
        self.stats.parts.fetch_add(1, Ordering::Relaxed);
        let id = message.envelope.request_id.clone();
        let Some(p) = book.pending.get_mut(&id) else {
            if book.finished.1.contains(id.as_str()) {
                self.stats.late.fetch_add(1, Ordering::Relaxed);
                tracing::info!(pea = %self.name, request = %id, "dropped a part of a request that already ended");
            } else {
                tracing::warn!(pea = %self.name, request = %id, "dropped a part of a request the Head never sent");
            }
            return;
        };
        // By name among this request's targets: during a rolling update a
        // replica and the one replacing it share a name.
        let slot = message.envelope.routes.last().and_then(|r| {
            let names = self.members.read().expect("members");
            p.expect
                .targets
                .iter()
                .zip(&p.received)
                .position(|(&t, got)| got.is_none() && names.get(t) == Some(&r.pea))
        });
        let Some(slot) = slot else {
            tracing::warn!(pea = %self.name, request = %id, "dropped a part from an unexpected Pea");
            return;
        };
        let aborted =
            message.envelope.is_error() && message.envelope.after_error == AfterError::Abort;
        p.received[slot] = Some(message);
        if !aborted && p.received.iter().any(Option::is_none) {
            return;
        }
        let p = book.pending.remove(&id).expect("present");
        remember(&mut book.finished, id);
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        let started = now_us();
        let client_id = p.expect.client_id.clone();
        let succeeded = Tail::succeeded(&p);
        let upstream = p.expect.trace;
        // A child of the Head's span, beside the Pea calls it fanned out to.
        let head = p.expect.head_span;
        let parts = p.received.iter().flatten().count() as i64;
        let mut merged = match self.reduce(p).await {
            Ok(message) => message,
            Err(message) => message,
        };
        if let crate::wire::Status::Error { message, .. } = &mut merged.envelope.status {
            message.push_str(&self.applied(&succeeded));
        }
        merged.envelope.request_id = client_id;
        self.route(&mut merged, started);
        let envelope = &mut merged.envelope;
        // Failed here (the merge, the reducer), not upstream.
        let error = match &envelope.status {
            crate::wire::Status::Error {
                executor,
                kind,
                message,
            } if *executor == self.name => Some((kind.as_str(), message.as_str())),
            _ => None,
        };
        crate::trace::record("tail", head.as_ref(), (started, now_us()), error, |span| {
            span.set("pea", self.name.clone());
            span.set("endpoint", envelope.endpoint.clone());
            span.set("request.id", envelope.request_id.clone());
            span.set("parts", parts);
        });
        envelope.trace = upstream;
        self.send(merged).await;
    }

    fn member(&self, i: usize) -> String {
        self.members
            .read()
            .expect("members")
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("member {i}"))
    }

    /// The members of a request that have not answered, by index.
    fn missing(p: &Pending) -> Vec<usize> {
        p.expect
            .targets
            .iter()
            .zip(&p.received)
            .filter(|(_, r)| r.is_none())
            .map(|(&t, _)| t)
            .collect()
    }

    /// The members whose part of `p` came back successful, and how many
    /// parts it had: taken before every merge (cheap), worded by
    /// [`Tail::applied`] only for a request that fails.
    fn succeeded(p: &Pending) -> (Vec<usize>, usize) {
        let done = p
            .expect
            .targets
            .iter()
            .zip(&p.received)
            .filter(|(_, got)| got.as_ref().is_some_and(|m| !m.envelope.is_error()))
            .map(|(&t, _)| t)
            .collect();
        (done, p.expect.targets.len())
    }

    /// For a request that fails after it was split: which of its parts
    /// succeeded ([`Tail::succeeded`]), so whoever sent a write knows part
    /// of it was applied (a failed `/index` on one shard of two has stored
    /// the other shard's documents). Empty for a request that went to one
    /// Pea, or of which no part succeeded.
    fn applied(&self, (done, parts): &(Vec<usize>, usize)) -> String {
        if *parts < 2 || done.is_empty() {
            return String::new();
        }
        let done: Vec<String> = done.iter().map(|&t| self.member(t)).collect();
        format!(
            " ({} of {parts} parts of this request succeeded, on {}: what they wrote is stored; \
             resending the whole request is safe where the executor writes by id, as vector-indexer does)",
            done.len(),
            done.join(", ")
        )
    }

    /// Merges the received parts (all of them, or an aborting one).
    async fn reduce(&self, p: Pending) -> Result<Message, Message> {
        let top_k = p.expect.top_k;
        let parts: Vec<Message> = p.received.into_iter().flatten().collect();
        let mut envelope = super::reduce::merge_envelopes(&parts);
        envelope.parts.pop();
        if envelope.after_error == AfterError::Abort {
            return Ok(Message::new(envelope, Bytes::new()));
        }
        // One part and nothing to merge it with: its bytes are the answer.
        if parts.len() == 1 && self.reducer.is_none() {
            return Ok(Message::new(envelope, parts[0].body.clone()));
        }
        let bodies: Result<Vec<Body>, String> = parts
            .iter()
            .map(|m| m.decode_body().map_err(|e| e.to_string()))
            .collect();
        let body = bodies.and_then(|bodies| match &self.reducer {
            // The reducer gets every part's documents, concatenated, and merges them itself.
            Some(_) => super::reduce::concat(bodies),
            None => super::reduce::merge(bodies, top_k),
        });
        let body = match body {
            Ok(body) => body,
            Err(reason) => {
                envelope.fail(&self.name, ErrorKind::Malformed, &reason);
                envelope.after_error = AfterError::Abort;
                return Err(Message::new(envelope, Bytes::new()));
            }
        };
        let mut bytes = Vec::new();
        body.encode(&mut bytes);
        let Some(reducer) = &self.reducer else {
            return Ok(Message::new(envelope, bytes.into()));
        };
        let (reply, rx) = oneshot::channel();
        let _ = reducer
            .send((
                envelope.endpoint.clone(),
                bytes.clone().into(),
                envelope.parameters.clone(),
                reply,
            ))
            .await;
        match rx.await {
            Ok(Ok(reduced)) => Ok(Message::new(envelope, reduced)),
            Ok(Err(failure)) => {
                envelope.fail(&self.name, failure.kind, &failure.message);
                Err(Message::new(envelope, bytes.into()))
            }
            Err(_) => {
                envelope.fail(&self.name, ErrorKind::Host, "the reducer's thread ended");
                Err(Message::new(envelope, bytes.into()))
            }
        }
    }

    /// Ends a request with an error naming what is missing.
    /// The status names the first Pea that is down, else the first that did not answer.
    async fn fail(&mut self, p: Pending, reason: &str, kind: ErrorKind, book: &mut Book) {
        let culprit = p
            .expect
            .down
            .first()
            .copied()
            .or_else(|| Tail::missing(&p).first().copied());
        let culprit = culprit.map_or_else(|| self.name.clone(), |i| self.member(i));
        let reason = format!("{reason}{}", self.applied(&Tail::succeeded(&p)));
        let received: Vec<&Message> = p.received.iter().flatten().collect();
        let mut envelope = match received.first() {
            Some(part) => part.envelope.clone(),
            None => crate::wire::Envelope::request("", ""),
        };
        envelope.request_id.clone_from(&p.expect.client_id);
        envelope.parts.pop();
        envelope.fail(&culprit, kind, &reason);
        envelope.trace = p.expect.trace;
        let now = now_us();
        crate::trace::record(
            "tail",
            p.expect.head_span.as_ref(),
            (now, now),
            Some((kind.as_str(), reason.as_str())),
            |span| {
                span.set("pea", self.name.clone());
                span.set("endpoint", envelope.endpoint.clone());
                span.set("request.id", p.expect.client_id.clone());
                span.set("parts", received.len() as i64);
            },
        );
        envelope.after_error = AfterError::Abort;
        remember(&mut book.finished, p.expect.request_id.clone());
        tracing::warn!(pea = %self.name, request = %p.expect.client_id, "{reason}");
        let mut message = Message::new(envelope, Bytes::new());
        self.route(&mut message, now_us());
        self.send(message).await;
    }

    fn route(&self, message: &mut Message, start_us: u64) {
        message.envelope.routes.push(Route {
            pea: self.name.clone(),
            start_us,
            end_us: now_us(),
            outcome: Outcome::Routed,
        });
    }

    async fn send(&self, message: Message) {
        let _ = self.output.send(message.frames().to_vec()).await;
    }
}

/// One shared copy of each id, in both the order and the set.
fn remember(finished: &mut (VecDeque<Arc<str>>, HashSet<Arc<str>>), id: String) {
    if finished.0.len() >= REMEMBERED
        && let Some(old) = finished.0.pop_front()
    {
        finished.1.remove(&old);
    }
    let id: Arc<str> = id.into();
    finished.1.insert(id.clone());
    finished.0.push_back(id);
}

#[cfg(test)]
mod tests;
