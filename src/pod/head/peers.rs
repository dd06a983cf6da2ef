//! What the Head hears from its Peas and how it reaches them: credit,
//! registration and departures ([`on_peer`]), who is connected
//! ([`publish`]), and sending one part to one Pea ([`deliver`]).

use super::*;
use crate::control::{MAX_CREDIT, Says};
use crate::pod::Lost;

/// The most stopped connections of one member the Head watches for their
/// close (a Pea has one; more are Peas restarted under one name).
pub(super) const MAX_STOPPED: usize = 8;

/// The most members a head-only Pod (`--role head`) lets join under new
/// names.
const MAX_OPEN_MEMBERS: usize = 1024;

/// What [`deliver`] needs to read the Peas' messages as the Head's loop does:
/// the Head's name, the members, (open, layout, shards), and where to
/// publish who is connected.
pub(super) type Shared<'a> = (
    &'a str,
    &'a crate::pod::Members,
    (bool, Layout, usize),
    &'a watch::Sender<Vec<bool>>,
);

/// Sends one part to Pea `i` through the connection the Tail was told
/// (nothing, if that connection went: the Tail has been or will be told). While it waits for room on the Pea's
/// queue it reads what the Peas send meanwhile (their IDLE credit): a Pea
/// waiting to send its IDLE into a full head queue, while the head waits for
/// room on the Pea's, would hold both forever (in-process links have no
/// socket buffers between); a departure it reads, it tells the Tail. `Err`
/// when the fan-out socket or the Tail closed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deliver(
    sender: &crate::transport::Sender,
    fanout: &mut Link,
    peers: &mut Vec<Peer>,
    by_identity: &mut HashMap<Bytes, usize>,
    (name, members, seen, registered): Shared<'_>,
    (stats, tail): (&HeadStats, &mpsc::Sender<TailInput>),
    i: usize,
    Sent { via, frames }: Sent,
) -> Result<(), ()> {
    let Some(identity) = via.filter(|via| by_identity.get(via) == Some(&i)) else {
        return Ok(());
    };
    let [envelope, body] = frames;
    peers[i].credit = peers[i].credit.saturating_sub(1);
    stats.parts.fetch_add(1, Ordering::Relaxed);
    let permit = loop {
        tokio::select! {
            permit = sender.reserve(Some(&identity)) => break permit,
            frames = fanout.recv() => match frames {
                Some(frames) => {
                    let departed = on_peer(name, members, seen, peers, by_identity, frames);
                    publish(registered, peers);
                    if let Some(departed) = departed {
                        tail.send(departed).await.map_err(drop)?;
                    }
                }
                None => return Err(()),
            },
        }
    };
    permit.map_err(drop)?.send(vec![identity, envelope, body]);
    Ok(())
}

pub(super) fn member_name(members: &crate::pod::Members, i: usize) -> String {
    let names = members.read().expect("members");
    names
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("member {i}"))
}

/// Publishes which members are connected (registered, not gone since).
pub(super) fn publish(registered: &watch::Sender<Vec<bool>>, peers: &[Peer]) {
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

/// Registers credit, withdrawals and departures from the Pod's Peas. `open`:
/// whether unknown replicas of the Pod may join, the layout and the number of
/// shards they join (a replica of shards × replicas joins the shard its name
/// says). When a member's serving connection went, returns what the Tail is
/// told ([`TailInput::Departed`]): the member, the connection, and which of
/// the parts sent through it are lost.
pub(super) fn on_peer(
    name: &str,
    members: &crate::pod::Members,
    (open, layout, shards): (bool, Layout, usize),
    peers: &mut Vec<Peer>,
    by_identity: &mut HashMap<Bytes, usize>,
    frames: Vec<Bytes>,
) -> Option<TailInput> {
    let (identity, rest) = frames.split_first()?;
    if rest.is_empty() {
        let Some(i) = by_identity.remove(identity) else {
            // A connection that stopped before it closed: what was sent
            // through it and is still unanswered reached the Pea after it
            // drained its queue, and is lost now.
            let i = peers.iter().position(|p| p.stopped.contains(identity))?;
            peers[i].stopped.retain(|s| s != identity);
            return Some(TailInput::Departed {
                member: i,
                via: identity.clone(),
                lost: Lost::Unanswered,
            });
        };
        let member = members.read().expect("members")[i].clone();
        let reason = "disconnected";
        let gone = connection_gone(
            name,
            &member,
            &mut peers[i],
            by_identity,
            identity,
            i,
            reason,
        );
        return gone.then(|| TailInput::Departed {
            member: i,
            via: identity.clone(),
            lost: Lost::Unanswered,
        });
    }
    let message = Message::from_frames(rest).ok()?;
    let body = Says::read(&message.body);
    // A Pea that says the Pod has another number of shards (`--shard-count`
    // of a Pea started on its own) would index by another modulus than this
    // Head routes by: it is not let in, whatever its name.
    let counted = body.shards.as_u64();
    if let Some(count) = counted.filter(|&n| n != shards as u64)
        && !by_identity.contains_key(identity)
    {
        let pea = body.pea_name().unwrap_or("(no name)");
        tracing::warn!(
            pea = %name, member = %pea,
            "ignored Pea `{pea}`: it was started with --shard-count {count}, and this Pod has {shards} shards"
        );
        return None;
    }
    let index = by_identity.get(identity).copied().or_else(|| {
        let pea = body.pea_name()?;
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
                // A member is never forgotten (pending requests name it by
                // index), and every choice walks them all: names are capped.
                if members.len() >= MAX_OPEN_MEMBERS {
                    tracing::warn!(pea = %name, member = %pea, "ignored Pea `{pea}`: the Pod has {MAX_OPEN_MEMBERS} members, the most a head-only Pod takes (a replica that comes back under its old name takes its old place)");
                    return None;
                }
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
        let pea = body.pea_name().unwrap_or("(no name)");
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
        return None;
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
            let credit = body.credit().min(MAX_CREDIT.into()) as u32;
            peer.credit = peer.credit.saturating_add(credit).min(MAX_CREDIT);
        }
        "CANCEL" => {
            by_identity.remove(identity);
            if peer.stopped.len() == MAX_STOPPED {
                peer.stopped.remove(0);
            }
            peer.stopped.push(identity.clone());
            let member = members.read().expect("members")[i].clone();
            let gone = connection_gone(name, &member, peer, by_identity, identity, i, "stopped");
            // The requests it took and will not answer (a Pea of an older
            // version names none: those wait for the Pod's time limit). A
            // Pea holds at most its credit (1,024) and the call it runs:
            // more is not believed.
            let ids = body.unanswered.into_texts().into_iter().collect();
            return gone.then(|| TailInput::Departed {
                member: i,
                via: identity.clone(),
                lost: Lost::Only(ids),
            });
        }
        _ => {}
    }
    None
}

/// A connection of member `index` closed or withdrew (`identity`, already
/// out of `by_identity`). If it was not the one the member is served
/// through (an older Pea of the same name, replaced while it hung), nothing
/// changes. If it was, and another Pea of that name is still connected (a
/// second Pea started with the same name), that one serves on: it asked for
/// work when it registered, so it gets one credit. Otherwise the member is
/// down. True when the connection was the one the member is served through
/// (what was sent through it and not answered is lost with it).
fn connection_gone(
    name: &str,
    member: &str,
    peer: &mut Peer,
    by_identity: &HashMap<Bytes, usize>,
    identity: &Bytes,
    index: usize,
    reason: &str,
) -> bool {
    if peer.identity.as_ref() != Some(identity) {
        tracing::info!(pea = %name, member = %member, "an older connection of a Pea of the Pod {reason}; the newer one serves on");
        return false;
    }
    if let Some((other, _)) = by_identity.iter().find(|&(_, &i)| i == index) {
        tracing::warn!(pea = %name, member = %member, "a Pea of the Pod {reason}; another Pea of that name, still connected, takes its place");
        peer.identity = Some(other.clone());
        peer.credit = 1;
        return true;
    }
    tracing::warn!(pea = %name, member = %member, "a Pea of the Pod {reason}");
    peer.alive = false;
    peer.credit = 0;
    true
}
