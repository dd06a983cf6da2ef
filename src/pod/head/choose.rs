//! Where one request goes: the Peas it is split among (shards, replicas,
//! both), chosen by polling, balance and credit, its deadline and `top_k`;
//! or the failure that names what is missing.

use super::*;

/// Which Pea gets which message. Errors are requests that cannot be sent
/// (a body to partition that does not decode), returned failed (the
/// message itself, by value, as the Tail takes it).
#[allow(clippy::too_many_arguments, clippy::result_large_err)]
pub(super) fn plan(
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
                .and_then(|b| crate::pod::reduce::partition(b, n))
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
pub(super) fn every_shard_has_credit(peers: &[Peer]) -> bool {
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
pub(super) fn pick(
    peers: &[Peer],
    shard: usize,
    balance: Balance,
    cursor: &mut usize,
) -> Option<usize> {
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

/// Who takes a part whose connection `gone` (of `member`) left before
/// answering: the same member, if another connection of its name serves it
/// now, else another live replica of its shard that the request has not gone
/// to already (with `polling all` each replica has its own copy), as
/// [`pick`] picks one. Never the connection that went, never another shard.
/// None when no Pea can take it.
pub(super) fn replacement(
    peers: &[Peer],
    member: usize,
    gone: &Bytes,
    targets: &[usize],
    balance: Balance,
) -> Option<usize> {
    let peer = peers.get(member)?;
    if peer.alive && peer.identity.as_ref().is_some_and(|now| now != gone) && !peer.retired {
        return Some(member);
    }
    let others: Vec<Peer> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| Peer {
            alive: p.alive && !targets.contains(&i),
            ..p.clone()
        })
        .collect();
    pick(&others, peer.shard, balance, &mut 0)
}

/// Shards × replicas: the request split over the shards by document id as
/// for shards (every shard gets it whole with `polling all` or without
/// documents), and each shard's part sent to one replica of that shard
/// ([`pick`]). A shard with no live replica fails the request `unavailable`,
/// naming the shard; one live replica of several is enough.
// A request that cannot be sent is handed back whole, failed, as by `plan`.
#[allow(clippy::result_large_err)]
pub(super) fn plan_grid(
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
            .and_then(|b| crate::pod::reduce::partition(b, shards))
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
pub(super) fn deadline_of(envelope: &Envelope, timeout: Duration) -> Duration {
    if envelope.deadline_ms == 0 {
        return timeout;
    }
    Duration::from_millis(envelope.deadline_ms.saturating_sub(now_us() / 1000)).min(timeout)
}

/// The request's `top_k` parameter: none, or a whole number of 0 or more
/// (Jina's client sends `3` as `3.0`, accepted; `null` is none). Anything
/// else is refused, naming the value.
pub(super) fn top_k(parameters: &str) -> Result<Option<usize>, String> {
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
    // Executors are wasm32: a `top_k` past u32::MAX reaches none of them.
    whole
        .and_then(|k| u32::try_from(k).ok())
        .map(|k| Some(k as usize))
        .ok_or_else(|| {
            let mut shown = value.to_string();
            if shown.len() > 64 {
                shown.truncate(shown.floor_char_boundary(64));
                shown.push('…');
            }
            format!(
                "parameter `top_k` is {shown}: expected a whole number from 0 to {}",
                u32::MAX
            )
        })
}

#[cfg(test)]
mod tests;
