//! The Head: takes requests on the Pod's input and fans them out to the Pod's
//! Peas over one ROUTER socket, which each Pea's DEALER input connects to.
//!
//! - `polling any` with replicas: one Pea per request, one with credit (it sent
//!   `IDLE` and has not been given work since), or round-robin with
//!   `--load-balancing round-robin`. A busy replica gets nothing new.
//! - `polling any` with shards: the documents are partitioned by id
//!   ([`super::reduce::shard_of`]); each shard gets its part (a request without
//!   documents goes to every shard).
//! - `polling all`: every Pea gets the request.
//! - Shards × replicas: the request is split (or broadcast, for `polling
//!   all` or a request without documents) over the shards as for shards, and
//!   each shard's part goes to one replica of that shard, picked as `polling
//!   any` picks a replica ([`plan_grid`]).
//!
//! Before sending, the Head tells the Tail which Peas will answer the request
//! (an [`Expect`]), and pushes the number of parts on the envelope's `parts`.
//! When a Pea's connection goes, the Head tells the Tail
//! ([`TailInput::Departed`]); the Tail hands back the parts that Pea had not
//! answered ([`Resend`]) and the Head sends each to another Pea that can
//! take it ([`choose::replacement`]), or tells the Tail none can.
//!
//! Inside the Pod a request travels under an id the Head mints (a prefix drawn
//! when the Head starts, and a counter): whoever sends to the Pod's input may
//! reuse an id, or send another sender's, and the Tail must still give each
//! request its own parts. The Tail puts the sender's id back on the answer.

mod choose;
mod peers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Balance, Expect, Layout, Polling, Sent, TailInput, tail::Resend};
use crate::metrics::HeadStats;
use crate::transport::Link;
use crate::wire::{Body, Envelope, ErrorKind, Kind, Message, Outcome, Route, now_us};
use choose::{deadline_of, every_shard_has_credit, plan, plan_grid, replacement, top_k};
use peers::{deliver, member_name, on_peer, publish};

/// A Pea of the Pod as the Head sees it.
#[derive(Debug, Clone, Default)]
struct Peer {
    identity: Option<Bytes>,
    credit: u32,
    alive: bool,
    /// A replica added by a rolling update that has not registered yet: not
    /// part of the Pod's fan-out (`polling all`) until it has.
    joining: bool,
    /// Replaced by a rolling update: gets no new work, finishes what it holds.
    retired: bool,
    /// The shard it serves (0 for a replica of an unsharded Pod).
    shard: usize,
    /// Its connections that stopped (`CANCEL`) and have not closed yet: a
    /// part that reached the Pea after it named what it would not answer is
    /// lost when the connection closes (at most [`peers::MAX_STOPPED`]).
    stopped: Vec<Bytes>,
}

impl Peer {
    /// Takes part in the Pod's fan-out (not joining, not retired).
    fn serving(&self) -> bool {
        !self.joining && !self.retired
    }
}

/// What a rolling update ([`super::update`]) asks of a running Head; each
/// command is answered once the Head has applied it, so every request the
/// Head sent before is already announced to the Tail.
#[derive(Debug)]
pub enum HeadCommand {
    /// A new member named `name` will connect: its index, with no work until
    /// it registers (sends IDLE).
    Add {
        name: String,
        /// The shard it serves (0 for a replica of an unsharded Pod).
        shard: usize,
        reply: oneshot::Sender<usize>,
    },
    /// No new work for member `index`.
    Retire {
        index: usize,
        reply: oneshot::Sender<()>,
    },
    /// Member `index` is being replaced in place (a shard): forget its
    /// connection; the next Pea of that name that registers takes the slot.
    Reset {
        index: usize,
        reply: oneshot::Sender<()>,
    },
    /// Take no request from the Pod's input (they wait upstream, held, not
    /// failed) until `Resume`.
    Pause {
        reply: oneshot::Sender<()>,
    },
    Resume {
        reply: oneshot::Sender<()>,
    },
}

pub struct Head {
    pub name: String,
    pub layout: Layout,
    /// How many shards the Pod has (1 for replicas).
    pub shards: usize,
    pub polling: Polling,
    pub balance: Balance,
    /// Member names, by index, shared with the Tail. Grows when `open`.
    pub members: super::Members,
    /// Replicas that run elsewhere (`pod --role head`): any Pea that sends
    /// IDLE becomes a member, so a Deployment can be scaled without telling
    /// the Head; a departed one just gets no more work.
    pub open: bool,
    pub input: Link,
    pub fanout: Link,
    pub tail: mpsc::Sender<TailInput>,
    /// How long the Tail waits for a request's parts.
    pub timeout: Duration,
    /// Which Peas are connected (registered with IDLE, not gone since).
    pub registered: watch::Sender<Vec<bool>>,
    pub stats: Arc<HeadStats>,
    /// `--uses-before`: runs on each request before it is fanned out.
    pub before: Option<super::Reducer>,
    pub on_error: crate::pea::OnError,
    /// Rolling updates' commands ([`HeadCommand`]).
    pub commands: mpsc::Receiver<HeadCommand>,
    /// Parts the Tail hands back: their Pea left before answering.
    pub resends: mpsc::UnboundedReceiver<Resend>,
}

impl Head {
    /// Runs until `stop`; returns the fan-out socket still open, so the Peas can
    /// still withdraw their credit while they stop.
    pub async fn run(self, stop: CancellationToken) -> Link {
        let Head {
            name,
            layout,
            shards,
            polling,
            balance,
            members,
            open,
            mut input,
            mut fanout,
            tail,
            timeout,
            registered,
            stats,
            before,
            on_error,
            mut commands,
            mut resends,
        } = self;
        let pod = name.strip_suffix("/head").unwrap_or(&name).to_string();
        // Sends to the Peas, while `fanout` itself keeps reading from them.
        let sender = fanout.sender();
        let mut peers: Vec<Peer> = {
            let names = members.read().expect("members");
            names
                .iter()
                .enumerate()
                .map(|(i, member)| Peer {
                    shard: layout.shard_of_member(&pod, i, member).unwrap_or(0),
                    ..Peer::default()
                })
                .collect()
        };
        // Shards × replicas: where each shard's round of its replicas is.
        let mut cursors = vec![0usize; shards.max(1)];
        let mut by_identity: HashMap<Bytes, usize> = HashMap::new();
        let mut next = 0usize;
        // A new prefix each start: a part a Pea answers after a restart of the
        // Head matches no request of the new one.
        let prefix = uuid::Uuid::new_v4().simple().to_string();
        let mut minted = 0u64;
        let grace = Duration::from_secs(1);
        let mut paused = false;
        let mut commands_open = true;
        let mut resends_open = true;
        loop {
            let any_credit = match balance {
                Balance::Credit => peers.iter().any(|p| p.alive && p.credit > 0 && !p.retired),
                Balance::RoundRobin => peers.iter().any(|p| p.alive && !p.retired),
            };
            // Replicas with `any` wait for a Pea that can take the request;
            // everything else is sent at once (a missing shard is the Tail's to report).
            let ready = !paused
                && match layout {
                    // Each shard's part waits for a replica of that shard that can take it.
                    Layout::ShardReplicas { .. } => {
                        balance == Balance::RoundRobin || every_shard_has_credit(&peers)
                    }
                    _ => layout == Layout::Shards || any_credit || polling.always_all(),
                };
            tokio::select! {
                frames = fanout.recv() => {
                    let Some(frames) = frames else { break };
                    let departed = on_peer(&name, &members, (open, layout, shards), &mut peers, &mut by_identity, frames);
                    // Credit comes with every request; registration changes rarely.
                    publish(&registered, &peers);
                    if let Some(departed) = departed && tail.send(departed).await.is_err() {
                        break;
                    }
                }
                resend = resends.recv(), if resends_open => {
                    let Some(resend) = resend else {
                        resends_open = false;
                        continue;
                    };
                    let to = replacement(&peers, resend.member, &resend.via, &resend.targets, balance);
                    let to = to.and_then(|j| Some((j, peers[j].identity.clone()?)));
                    let rerouted = TailInput::Rerouted { request_id: resend.request_id, slot: resend.slot, to: to.clone() };
                    if tail.send(rerouted).await.is_err() {
                        break;
                    }
                    let Some((to, via)) = to else { continue };
                    tracing::info!(pea = %name, from = %member_name(&members, resend.member), to = %member_name(&members, to), "sent again a part whose Pea left before answering");
                    let shared = (name.as_str(), &members, (open, layout, shards), &registered);
                    if deliver(&sender, &mut fanout, &mut peers, &mut by_identity, shared, (&stats, &tail), to, Sent { via: Some(via), frames: resend.frames }).await.is_err() {
                        break;
                    }
                }
                command = commands.recv(), if commands_open => {
                    let Some(command) = command else {
                        commands_open = false;
                        continue;
                    };
                    match command {
                        HeadCommand::Add { name: member, shard, reply } => {
                            let mut names = members.write().expect("members");
                            names.push(member);
                            peers.push(Peer { joining: true, shard, ..Peer::default() });
                            let _ = reply.send(names.len() - 1);
                        }
                        HeadCommand::Retire { index, reply } => {
                            if let Some(peer) = peers.get_mut(index) {
                                peer.retired = true;
                            }
                            let _ = reply.send(());
                        }
                        HeadCommand::Reset { index, reply } => {
                            by_identity.retain(|_, i| *i != index);
                            if let Some(peer) = peers.get_mut(index) {
                                // Still of its shard: a part it loses goes to no other.
                                *peer = Peer { shard: peer.shard, ..Peer::default() };
                            }
                            let _ = reply.send(());
                        }
                        HeadCommand::Pause { reply } => {
                            paused = true;
                            let _ = reply.send(());
                        }
                        HeadCommand::Resume { reply } => {
                            paused = false;
                            let _ = reply.send(());
                        }
                    }
                    publish(&registered, &peers);
                }
                frames = input.recv(), if ready => {
                    let Some(frames) = frames else { break };
                    let Ok(mut message) = Message::from_frames(&frames) else {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pea = %name, "dropped a message that is not a jina-wasm message");
                        continue;
                    };
                    if message.envelope.kind != Kind::Data {
                        continue;
                    }
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    let received = now_us();
                    message.envelope.routes.push(Route { pea: name.clone(), start_us: received, end_us: received, outcome: Outcome::Routed });
                    // The fan-out's span (traces on, a traced request): the
                    // parts go out under it; it ends with this iteration.
                    let upstream = message.envelope.trace;
                    let mut span = upstream.as_ref().and_then(|t| crate::trace::start("head", crate::trace::Kind::Internal, Some(t), Some(received)));
                    if let Some(span) = &mut span {
                        span.set("pea", name.clone());
                        span.set("endpoint", message.envelope.endpoint.clone());
                        span.set("request.id", message.envelope.request_id.clone());
                    }
                    if message.envelope.is_error() && message.envelope.after_error != crate::wire::AfterError::Continue {
                        // An earlier failure says skip: straight through to the Tail.
                        let _ = tail.send(TailInput::Forward(message)).await;
                        continue;
                    }
                    if let Some(before) = &before {
                        message = run_before(&name, before, on_error, message).await;
                        if message.envelope.is_error() && message.envelope.after_error != crate::wire::AfterError::Continue {
                            let _ = tail.send(TailInput::Forward(message)).await;
                            continue;
                        }
                    }
                    // The Tail's merge keeps `top_k` matches: one it cannot
                    // read fails here, named, rather than being merged to
                    // some other number.
                    let top_k = match top_k(&message.envelope.parameters) {
                        Ok(top_k) => top_k,
                        Err(reason) => {
                            message.envelope.fail(&name, ErrorKind::BadRequest, &reason);
                            message.envelope.after_error = crate::wire::AfterError::Abort;
                            message.body = Bytes::new();
                            let _ = tail.send(TailInput::Forward(message)).await;
                            continue;
                        }
                    };
                    let client_id = message.envelope.request_id.clone();
                    let planned = match layout {
                        Layout::ShardReplicas { .. } => plan_grid(&pod, shards, &polling, balance, &mut peers, &mut cursors, message),
                        _ => plan(&name, &layout, &polling, balance, open, &mut peers, &mut next, message),
                    };
                    let mut sends = match planned {
                        Ok(sends) => sends,
                        Err(failed) => {
                            if matches!(&failed.envelope.status, crate::wire::Status::Error { kind: crate::wire::ErrorKind::Unavailable, .. }) {
                                stats.unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = tail.send(TailInput::Forward(failed)).await;
                            continue;
                        }
                    };
                    minted += 1;
                    let internal = format!("{}-{minted}", &prefix[..12]);
                    let hop = span.as_ref().map(crate::trace::Span::context).or(upstream);
                    if let Some(span) = &mut span {
                        span.set("parts", sends.len() as i64);
                    }
                    for (_, message) in &mut sends {
                        message.envelope.request_id.clone_from(&internal);
                        message.envelope.trace = hop;
                    }
                    let deadline = tokio::time::Instant::now() + deadline_of(&sends[0].1.envelope, timeout);
                    // Each part goes through the Pea's connection of now.
                    let via = |i: usize| peers[i].identity.clone().filter(|_| peers[i].alive);
                    let sends: Vec<(usize, Sent)> = sends.into_iter().map(|(i, message)| (i, Sent { via: via(i), frames: message.frames() })).collect();
                    let expect = Expect {
                        request_id: internal,
                        client_id,
                        targets: sends.iter().map(|(i, _)| *i).collect(),
                        down: sends.iter().filter(|(i, _)| !peers[*i].alive).map(|(i, _)| *i).collect(),
                        deadline,
                        top_k,
                        trace: upstream,
                        head_span: span.as_ref().map(crate::trace::Span::context),
                        sent: sends.iter().map(|(_, sent)| sent.clone()).collect(),
                    };
                    if tail.send(TailInput::Expect(expect)).await.is_err() {
                        break;
                    }
                    let mut closed = false;
                    for (i, sent) in sends {
                        let shared = (name.as_str(), &members, (open, layout, shards), &registered);
                        closed = deliver(&sender, &mut fanout, &mut peers, &mut by_identity, shared, (&stats, &tail), i, sent).await.is_err();
                        if closed {
                            break;
                        }
                    }
                    if closed {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        input.close(grace).await;
        fanout
    }
}

/// Runs the Head's executor on a request; a failure is recorded as a Pea's
/// would be, under the Pod's error strategy.
async fn run_before(
    name: &str,
    before: &super::Reducer,
    on_error: crate::pea::OnError,
    mut message: Message,
) -> Message {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let job = (
        message.envelope.endpoint.clone(),
        message.body.clone(),
        message.envelope.parameters.clone(),
        reply,
    );
    let result = match before.send(job).await {
        Ok(()) => rx.await.unwrap_or_else(|_| {
            Err(crate::pea::Failure {
                kind: ErrorKind::Host,
                message: "the executor's task ended".into(),
            })
        }),
        Err(_) => Err(crate::pea::Failure {
            kind: ErrorKind::Host,
            message: "the executor's task ended".into(),
        }),
    };
    match result {
        Ok(body) => message.body = body,
        Err(failure) => {
            tracing::warn!(pea = %name, kind = %failure.kind, "uses-before failed: {}", failure.message);
            message.envelope.fail(name, failure.kind, &failure.message);
            if message.envelope.after_error == crate::wire::AfterError::Continue {
                message.envelope.after_error = on_error.after_error();
            }
            if on_error == crate::pea::OnError::ThrowEarly {
                message.body = Bytes::new();
            }
        }
    }
    message
}

#[cfg(test)]
mod tests;
