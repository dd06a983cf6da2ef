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
                        let mut frames = vec![identity];
                        frames.extend(message.frames());
                        if fanout.send(frames).await.is_err() {
                            break;
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

/// Which Pea gets which message. Errors are requests that cannot be sent
/// (a body to partition that does not decode), returned failed (the
/// message itself, by value, as the Tail takes it).
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
fn plan(
    name: &str,
    layout: &Layout,
    polling: &Polling,
    balance: Balance,
    open: bool,
    peers: &mut [Peer],
    next: &mut usize,
    message: Message,
) -> Result<Vec<(usize, Message)>, Message> {
    let n = peers.len();
    let all = polling.is_all(&message.envelope.endpoint);
    let unavailable = |mut failed: Message| {
        failed.envelope.fail(
            name,
            ErrorKind::Unavailable,
            "no Pea of the Pod is connected",
        );
        failed.envelope.after_error = crate::wire::AfterError::Abort;
        failed.body = Bytes::new();
        failed
    };
    let split = |parts: Vec<(usize, Bytes)>, message: &Message| -> Vec<(usize, Message)> {
        let count = parts.len() as u32;
        parts
            .into_iter()
            .map(|(i, body)| {
                let mut envelope = message.envelope.clone();
                envelope.parts.push(count);
                (i, Message::new(envelope, body))
            })
            .collect()
    };
    if all && open {
        // Open replicas: the ones connected now are the Pod (a departed
        // replica of a scaled-down Deployment is not missing).
        let parts: Vec<(usize, Bytes)> = (0..n)
            .filter(|&i| peers[i].alive && peers[i].serving())
            .map(|i| (i, message.body.clone()))
            .collect();
        if parts.is_empty() {
            return Err(unavailable(message));
        }
        return Ok(split(parts, &message));
    }
    if all || (*layout == Layout::Shards && message.body.len() <= 8) {
        let parts: Vec<(usize, Bytes)> = (0..n)
            .filter(|&i| peers[i].serving())
            .map(|i| (i, message.body.clone()))
            .collect();
        if parts.is_empty() {
            return Err(unavailable(message));
        }
        return Ok(split(parts, &message));
    }
    match layout {
        Layout::Replicas => {
            // One shard (0) of replicas: the same choice as for each shard
            // of a shards × replicas Pod. With credit balancing the Head
            // reads a request only while some replica has credit.
            let Some(i) = pick(peers, 0, balance, next) else {
                return Err(unavailable(message));
            };
            Ok(split(vec![(i, message.body.clone())], &message))
        }
        // (Shards × replicas are planned by `plan_grid`.)
        Layout::Shards | Layout::ShardReplicas { .. } => {
            let body = match message
                .decode_body()
                .map_err(|e| e.to_string())
                .and_then(|b| super::reduce::partition(b, n))
            {
                Ok(parts) => parts,
                Err(reason) => {
                    let mut failed = message;
                    failed.envelope.fail(name, ErrorKind::Malformed, &reason);
                    failed.envelope.after_error = crate::wire::AfterError::Abort;
                    failed.body = Bytes::new();
                    return Err(failed);
                }
            };
            let parts = body
                .into_iter()
                .enumerate()
                .filter_map(|(i, part)| {
                    part.map(|b: Body| {
                        let mut bytes = Vec::new();
                        b.encode(&mut bytes);
                        (i, Bytes::from(bytes))
                    })
                })
                .collect();
            Ok(split(parts, &message))
        }
    }
}

/// Shards × replicas: each shard that has a live replica has one with credit
/// (a shard with none fails the request at once, so it holds nothing up).
fn every_shard_has_credit(peers: &[Peer]) -> bool {
    let mut live: Vec<(bool, bool)> = Vec::new();
    for peer in peers.iter().filter(|p| p.alive && !p.retired) {
        if live.len() <= peer.shard {
            live.resize(peer.shard + 1, (false, false));
        }
        let shard = &mut live[peer.shard];
        shard.0 = true;
        shard.1 |= peer.credit > 0;
    }
    live.iter().all(|&(alive, credit)| !alive || credit)
}

/// One live replica of `shard`, as `polling any` picks a replica: with
/// `credit`, the one with the most (ties round the shard's ring from
/// `cursor`), else (none has asked yet) the next live one; with
/// `round-robin`, the next live one. None when no replica of it is live.
fn pick(peers: &[Peer], shard: usize, balance: Balance, cursor: &mut usize) -> Option<usize> {
    let n = peers.len();
    let start = *cursor;
    let live = || {
        (0..n)
            .map(move |k| (start + k) % n)
            .filter(|&i| peers[i].shard == shard && peers[i].alive && !peers[i].retired)
    };
    let credited = match balance {
        Balance::Credit => live()
            .filter(|&i| peers[i].credit > 0)
            .max_by_key(|&i| (peers[i].credit, std::cmp::Reverse((i + n - start) % n))),
        Balance::RoundRobin => None,
    };
    let i = credited.or_else(|| live().next())?;
    *cursor = (i + 1) % n;
    Some(i)
}

/// Shards × replicas: the request split over the shards by document id as
/// for shards (every shard gets it whole with `polling all` or without
/// documents), and each shard's part sent to one replica of that shard
/// ([`pick`]). A shard with no live replica fails the request `unavailable`,
/// naming the shard; one live replica of several is enough.
// A request that cannot be sent is handed back whole, failed, as by `plan`.
#[allow(clippy::result_large_err)]
fn plan_grid(
    pod: &str,
    shards: usize,
    polling: &Polling,
    balance: Balance,
    peers: &mut [Peer],
    cursors: &mut Vec<usize>,
    message: Message,
) -> Result<Vec<(usize, Message)>, Message> {
    let fail = |mut failed: Message, executor: &str, kind: ErrorKind, reason: &str| {
        failed.envelope.fail(executor, kind, reason);
        failed.envelope.after_error = crate::wire::AfterError::Abort;
        failed.body = Bytes::new();
        failed
    };
    let all = polling.is_all(&message.envelope.endpoint);
    let parts: Vec<(usize, Bytes)> = if all || message.body.len() <= 8 {
        (0..shards).map(|s| (s, message.body.clone())).collect()
    } else {
        match message
            .decode_body()
            .map_err(|e| e.to_string())
            .and_then(|b| super::reduce::partition(b, shards))
        {
            Ok(parts) => parts
                .into_iter()
                .enumerate()
                .filter_map(|(s, part)| {
                    part.map(|b: Body| {
                        let mut bytes = Vec::new();
                        b.encode(&mut bytes);
                        (s, Bytes::from(bytes))
                    })
                })
                .collect(),
            Err(reason) => {
                return Err(fail(
                    message,
                    &format!("{pod}/head"),
                    ErrorKind::Malformed,
                    &reason,
                ));
            }
        }
    };
    let mut sends = Vec::with_capacity(parts.len());
    let mut down = Vec::new();
    for (s, body) in parts {
        if cursors.len() <= s {
            cursors.resize(s + 1, 0);
        }
        match pick(peers, s, balance, &mut cursors[s]) {
            Some(i) => sends.push((i, body)),
            None => down.push(format!("`{pod}/shard-{s}`")),
        }
    }
    if let Some(first) = down.first() {
        let reason = format!("no replica of {} is connected to the Pod", down.join(", "));
        let executor = first.trim_matches('`').to_string();
        return Err(fail(message, &executor, ErrorKind::Unavailable, &reason));
    }
    let count = sends.len() as u32;
    Ok(sends
        .into_iter()
        .map(|(i, body)| {
            let mut envelope = message.envelope.clone();
            envelope.parts.push(count);
            (i, Message::new(envelope, body))
        })
        .collect())
}

/// How long the Tail waits: the request's own deadline if it has one, else the
/// Pod's timeout.
fn deadline_of(envelope: &Envelope, timeout: Duration) -> Duration {
    if envelope.deadline_ms == 0 {
        return timeout;
    }
    Duration::from_millis(envelope.deadline_ms.saturating_sub(now_us() / 1000)).min(timeout)
}

/// The request's `top_k` parameter: none, or a whole number of 0 or more
/// (Jina's client sends `3` as `3.0`, accepted; `null` is none). Anything
/// else is refused, naming the value.
fn top_k(parameters: &str) -> Result<Option<usize>, String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(parameters) else {
        return Ok(None);
    };
    let Some(value) = map.get("top_k") else {
        return Ok(None);
    };
    let whole = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    whole
        .and_then(|k| usize::try_from(k).ok())
        .map(Some)
        .ok_or_else(|| {
            let mut shown = value.to_string();
            if shown.len() > 64 {
                shown.truncate(shown.floor_char_boundary(64));
                shown.push('…');
            }
            format!("parameter `top_k` is {shown}: expected a whole number, 0 or more")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Document;
    use crate::wire::Status;

    #[test]
    fn polling_reads_jinas_json_form_and_names_what_is_wrong() {
        use crate::pod::Polling;
        let polling: Polling = r#"{"/search": "ALL", "/index": "any", "*": "all"}"#
            .parse()
            .unwrap();
        assert!(polling.is_all("/search") && !polling.is_all("/index") && polling.is_all("/x"));
        // What the Pod passes on to its Peas' processes reads back the same.
        assert_eq!(polling.to_string().parse::<Polling>().unwrap(), polling);
        for (text, says) in [
            (r#"{"/search": 1}"#, "polling of `/search`: `1` is not"),
            (
                r#"{"/search": "some"}"#,
                "polling of `/search`: polling `some`",
            ),
            (r#"{"/search": "all""#, "is not a JSON object"),
        ] {
            let e = text.parse::<Polling>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    /// Two shards of two replicas, every replica connected with one credit.
    fn grid() -> Vec<Peer> {
        (0..4)
            .map(|i| Peer {
                identity: Some(Bytes::from(vec![i as u8])),
                credit: 1,
                alive: true,
                shard: i / 2,
                ..Peer::default()
            })
            .collect()
    }

    fn request(endpoint: &str, ids: &[&str]) -> Message {
        let docs: Vec<Document> = ids
            .iter()
            .map(|id| Document {
                id: (*id).to_string(),
                ..Default::default()
            })
            .collect();
        Message::data(
            Envelope::request(endpoint, "{}"),
            &Body::from_documents(&docs),
        )
    }

    /// Ids that land in shard 0 and shard 1 of two.
    fn one_each() -> [&'static str; 2] {
        let ids = ["a", "b", "c", "d", "e", "f"];
        let zero = ids.iter().find(|id| super::super::shard_of(id, 2) == 0);
        let one = ids.iter().find(|id| super::super::shard_of(id, 2) == 1);
        [zero.unwrap(), one.unwrap()]
    }

    fn targets(planned: &Result<Vec<(usize, Message)>, Message>) -> Vec<usize> {
        planned.as_ref().unwrap().iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn each_shard_gets_one_replica_taking_turns_by_credit() {
        let mut peers = grid();
        let mut cursors = vec![0; 2];
        let ids = one_each();
        let any = Polling::ANY;
        let mut picked = Vec::new();
        for _ in 0..4 {
            let planned = plan_grid(
                "idx",
                2,
                &any,
                Balance::Credit,
                &mut peers,
                &mut cursors,
                request("/index", &ids),
            );
            let t = targets(&planned);
            assert_eq!(t.len(), 2, "one part per shard");
            assert!(t[0] < 2 && t[1] >= 2, "{t:?}");
            picked.extend(t);
        }
        // Equal credit: the replicas of each shard take turns.
        assert_eq!(picked, [0, 2, 1, 3, 0, 2, 1, 3]);
        // Only a replica with credit, while another has some.
        peers[0].credit = 0;
        peers[1].credit = 0;
        peers[2].credit = 0;
        assert!(!every_shard_has_credit(&peers));
        peers[1].credit = 2;
        assert!(every_shard_has_credit(&peers));
        let planned = plan_grid(
            "idx",
            2,
            &any,
            Balance::Credit,
            &mut peers,
            &mut cursors,
            request("/index", &ids),
        );
        assert_eq!(targets(&planned), [1, 3]);
    }

    #[test]
    fn polling_all_and_no_documents_reach_one_replica_of_every_shard() {
        let mut peers = grid();
        let mut cursors = vec![0; 2];
        let all: Polling = "/search:all".parse().unwrap();
        let [zero, _] = one_each();
        for message in [request("/search", &[zero]), request("/index", &[])] {
            let planned = plan_grid(
                "idx",
                2,
                &all,
                Balance::RoundRobin,
                &mut peers,
                &mut cursors,
                message,
            );
            let t = targets(&planned);
            assert_eq!(t.len(), 2, "{t:?}");
            assert!(t[0] < 2 && t[1] >= 2, "{t:?}");
            for (_, part) in planned.unwrap() {
                assert_eq!(part.envelope.parts, [2]);
            }
        }
    }

    #[test]
    fn a_shard_with_no_live_replica_fails_naming_it_and_one_live_replica_serves() {
        let mut peers = grid();
        let mut cursors = vec![0; 2];
        let ids = one_each();
        peers[2].alive = false;
        let planned = plan_grid(
            "idx",
            2,
            &Polling::ANY,
            Balance::Credit,
            &mut peers,
            &mut cursors,
            request("/index", &ids),
        );
        assert_eq!(targets(&planned)[1], 3, "the live replica of shard 1");
        peers[3].alive = false;
        assert!(
            every_shard_has_credit(&peers),
            "a dead shard holds nothing up"
        );
        let failed = plan_grid(
            "idx",
            2,
            &Polling::ANY,
            Balance::Credit,
            &mut peers,
            &mut cursors,
            request("/index", &ids),
        )
        .unwrap_err();
        match &failed.envelope.status {
            Status::Error {
                executor,
                kind,
                message,
            } => {
                assert_eq!(
                    (executor.as_str(), kind.as_str()),
                    ("idx/shard-1", "unavailable")
                );
                assert!(message.contains("`idx/shard-1`"), "{message}");
            }
            Status::Success => panic!("a shard with no replica served"),
        }
        // A request only for shard 0 is still served.
        let planned = plan_grid(
            "idx",
            2,
            &Polling::ANY,
            Balance::Credit,
            &mut peers,
            &mut cursors,
            request("/index", &ids[..1]),
        );
        assert_eq!(targets(&planned).len(), 1);
    }

    #[test]
    fn top_k_is_a_whole_number_or_refused_by_name() {
        assert_eq!(top_k(r#"{"top_k":3}"#), Ok(Some(3)));
        assert_eq!(top_k(r#"{"top_k":3.0}"#), Ok(Some(3)));
        assert_eq!(top_k(r#"{"top_k":null}"#), Ok(None));
        assert_eq!(top_k(r#"{"other":1}"#), Ok(None));
        assert_eq!(top_k(""), Ok(None));
        for bad in ["-1", "\"x\"", "1e300", "2.5", "true", "[1]", "{}", "-0.5"] {
            let e = top_k(&format!(r#"{{"top_k":{bad}}}"#)).unwrap_err();
            let shown: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert_eq!(
                e,
                format!("parameter `top_k` is {shown}: expected a whole number, 0 or more")
            );
        }
        let e = top_k(&format!(r#"{{"top_k":"{}"}}"#, "x".repeat(1000))).unwrap_err();
        assert!(e.len() < 160, "{e}");
    }
}
