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
//!
//! Inside the Pod a request travels under an id the Head mints (a prefix drawn
//! when the Head starts, and a counter): whoever sends to the Pod's input may
//! reuse an id, or send another sender's, and the Tail must still give each
//! request its own parts. The Tail puts the sender's id back on the answer.

mod choose;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Balance, Expect, Layout, Polling, TailInput};
use crate::metrics::HeadStats;
use crate::transport::Link;
use crate::wire::{Body, Envelope, ErrorKind, Kind, Message, Outcome, Route, now_us};
use choose::{deadline_of, every_shard_has_credit, plan, plan_grid, top_k};

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
                    on_peer(&name, &members, (open, layout, shards), &mut peers, &mut by_identity, frames);
                    // Credit comes with every request; registration changes rarely.
                    publish(&registered, &peers);
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
                                *peer = Peer::default();
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
                    let first = &sends[0].1.envelope;
                    let expect = Expect {
                        request_id: internal,
                        client_id,
                        targets: sends.iter().map(|(i, _)| *i).collect(),
                        down: sends.iter().filter(|(i, _)| !peers[*i].alive).map(|(i, _)| *i).collect(),
                        deadline: tokio::time::Instant::now() + deadline_of(first, timeout),
                        top_k,
                        trace: upstream,
                        head_span: span.as_ref().map(crate::trace::Span::context),
                    };
                    if tail.send(TailInput::Expect(expect)).await.is_err() {
                        break;
                    }
                    for (i, message) in sends {
                        let Some(identity) = peers[i].identity.clone().filter(|_| peers[i].alive) else { continue };
                        peers[i].credit = peers[i].credit.saturating_sub(1);
                        stats.parts.fetch_add(1, Ordering::Relaxed);
                        let mut frames = vec![identity.clone()];
                        frames.extend(message.frames());
                        // Room on the Pea's queue, reading what the Peas send
                        // meanwhile (their IDLE credit): a Pea waiting to send
                        // its IDLE into a full head queue, while the head waits
                        // for room on the Pea's, would hold both forever
                        // (in-process links have no socket buffers between).
                        let permit = loop {
                            tokio::select! {
                                permit = sender.reserve(Some(&identity)) => break permit,
                                frames = fanout.recv() => match frames {
                                    Some(frames) => {
                                        on_peer(&name, &members, (open, layout, shards), &mut peers, &mut by_identity, frames);
                                        publish(&registered, &peers);
                                    }
                                    None => break Err("the fanout socket closed".to_string()),
                                },
                            }
                        };
                        match permit {
                            Ok(permit) => permit.send(frames),
                            Err(_) => break,
                        }
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        input.close(grace).await;
        fanout
    }
}

/// Publishes which members are connected (registered, not gone since).
fn publish(registered: &watch::Sender<Vec<bool>>, peers: &[Peer]) {
    registered.send_if_modified(|seen| {
        let mut changed = seen.len() != peers.len();
        seen.resize(peers.len(), false);
        for (seen, peer) in seen.iter_mut().zip(peers) {
            let now = peer.identity.is_some() && peer.alive;
            changed |= *seen != now;
            *seen = now;
        }
        changed
    });
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
                message: "the executor thread ended".into(),
            })
        }),
        Err(_) => Err(crate::pea::Failure {
            kind: ErrorKind::Host,
            message: "the executor thread ended".into(),
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

/// Registers credit, withdrawals and departures from the Pod's Peas. `open`:
/// whether unknown replicas of the Pod may join, the layout and the number of
/// shards they join (a replica of shards × replicas joins the shard its name
/// says).
fn on_peer(
    name: &str,
    members: &super::Members,
    (open, layout, shards): (bool, Layout, usize),
    peers: &mut Vec<Peer>,
    by_identity: &mut HashMap<Bytes, usize>,
    frames: Vec<Bytes>,
) {
    let Some((identity, rest)) = frames.split_first() else {
        return;
    };
    if rest.is_empty() {
        if let Some(i) = by_identity.remove(identity) {
            let member = members.read().expect("members")[i].clone();
            let reason = "disconnected";
            connection_gone(
                name,
                &member,
                &mut peers[i],
                by_identity,
                identity,
                i,
                reason,
            );
        }
        return;
    }
    let Ok(message) = Message::from_frames(rest) else {
        return;
    };
    let body: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
    // A Pea that says the Pod has another number of shards (`--shard-count`
    // of a Pea started on its own) would index by another modulus than this
    // Head routes by: it is not let in, whatever its name.
    let counted = body.get("shards").and_then(Value::as_u64);
    if let Some(count) = counted.filter(|&n| n != shards as u64)
        && !by_identity.contains_key(identity)
    {
        let pea = body
            .get("pea")
            .and_then(Value::as_str)
            .unwrap_or("(no name)");
        tracing::warn!(
            pea = %name, member = %pea,
            "ignored Pea `{pea}`: it was started with --shard-count {count}, and this Pod has {shards} shards"
        );
        return;
    }
    let index = by_identity.get(identity).copied().or_else(|| {
        let pea = body.get("pea").and_then(Value::as_str)?;
        // A rolling update gives a new replica the name of the one it
        // replaces: the live member of that name not yet connected comes first.
        let known = {
            let names = members.read().expect("members");
            (0..names.len().min(peers.len()))
                .filter(|&i| names[i] == pea && !peers[i].retired)
                .min_by_key(|&i| peers[i].identity.is_some())
                .or_else(|| names.iter().position(|m| m == pea))
        };
        let i = match known {
            Some(i) => i,
            // Only this Pod's replicas (`<pod>/...`), not a stray Pea of another.
            None if open
                && name.strip_suffix("/head").is_some_and(|pod| {
                    pea.strip_prefix(pod).is_some_and(|r| r.starts_with('/'))
                }) =>
            {
                let pod = name.strip_suffix("/head").unwrap_or(name);
                let shard = layout
                    .shard_of_member(pod, 0, pea)
                    .filter(|&s| s < shards)?;
                let mut members = members.write().expect("members");
                members.push(pea.to_string());
                peers.push(Peer {
                    shard,
                    ..Peer::default()
                });
                tracing::info!(pea = %name, member = %pea, "a new replica joined the Pod");
                members.len() - 1
            }
            None => return None,
        };
        by_identity.insert(identity.clone(), i);
        Some(i)
    });
    let Some(i) = index else {
        let pea = body
            .get("pea")
            .and_then(Value::as_str)
            .unwrap_or("(no name)");
        let members = members.read().expect("members");
        let shown: Vec<&str> = members.iter().take(4).map(String::as_str).collect();
        tracing::warn!(
            pea = %name, member = %pea,
            "ignored Pea `{pea}`: it is no member of this Pod ({} members: {}{}); check its --name{} and --replica-id",
            members.len(),
            shown.join(", "),
            if members.len() > shown.len() { ", ..." } else { "" },
            if shards > 1 {
                format!(", --shard-id (below {shards}), --shard-count ({shards})")
            } else {
                String::new()
            },
        );
        return;
    };
    let peer = &mut peers[i];
    match message.envelope.endpoint.as_str() {
        "IDLE" => {
            if let Some(held) = &peer.identity
                && held != identity
                && by_identity.contains_key(held)
            {
                let member = members.read().expect("members")[i].clone();
                tracing::warn!(
                    pea = %name, member = %member,
                    "two Peas of the Pod connected under one name: the newer takes the work, the other stands by (two replicas need two replica ids)"
                );
            }
            peer.identity = Some(identity.clone());
            peer.alive = true;
            peer.joining = false;
            let credit = body
                .get("credit")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .min(1024) as u32;
            peer.credit = peer.credit.saturating_add(credit);
        }
        "CANCEL" => {
            by_identity.remove(identity);
            let member = members.read().expect("members")[i].clone();
            connection_gone(name, &member, peer, by_identity, identity, i, "stopped");
        }
        _ => {}
    }
}

/// A connection of member `index` closed or withdrew (`identity`, already
/// out of `by_identity`). If it was not the one the member is served
/// through (an older Pea of the same name, replaced while it hung), nothing
/// changes. If it was, and another Pea of that name is still connected (a
/// second Pea started with the same name), that one serves on: it asked for
/// work when it registered, so it gets one credit. Otherwise the member is
/// down.
fn connection_gone(
    name: &str,
    member: &str,
    peer: &mut Peer,
    by_identity: &HashMap<Bytes, usize>,
    identity: &Bytes,
    index: usize,
    reason: &str,
) {
    if peer.identity.as_ref() != Some(identity) {
        tracing::info!(pea = %name, member = %member, "an older connection of a Pea of the Pod {reason}; the newer one serves on");
        return;
    }
    if let Some((other, _)) = by_identity.iter().find(|&(_, &i)| i == index) {
        tracing::warn!(pea = %name, member = %member, "a Pea of the Pod {reason}; another Pea of that name, still connected, takes its place");
        peer.identity = Some(other.clone());
        peer.credit = 1;
        return;
    }
    tracing::warn!(pea = %name, member = %member, "a Pea of the Pod {reason}");
    peer.alive = false;
    peer.credit = 0;
}
