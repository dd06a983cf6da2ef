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
        let zero = ids.iter().find(|id| crate::pod::shard_of(id, 2) == 0);
        let one = ids.iter().find(|id| crate::pod::shard_of(id, 2) == 1);
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

    /// IDLE from `identity`, as a Pea sends it.
    fn idle(identity: &str, body: serde_json::Value) -> Vec<Bytes> {
        let mut frames = vec![Bytes::from(identity.to_string())];
        frames.extend(crate::control::frames("IDLE", body));
        frames
    }

    #[test]
    fn a_pea_of_a_pod_of_another_size_is_not_let_in() {
        let members: crate::pod::Members = Arc::new(std::sync::RwLock::new(vec![
            "idx/shard-0".to_string(),
            "idx/shard-1".to_string(),
        ]));
        let mut peers = vec![Peer::default(), Peer::default()];
        let mut by_identity = HashMap::new();
        let mut offer = |identity: &str, body| {
            on_peer(
                "idx/head",
                &members,
                (true, Layout::Shards, 2),
                &mut peers,
                &mut by_identity,
                idle(identity, body),
            );
        };
        offer(
            "wrong",
            serde_json::json!({"credit": 1, "pea": "idx/shard-1", "shards": 3}),
        );
        offer(
            "right",
            serde_json::json!({"credit": 1, "pea": "idx/shard-0", "shards": 2}),
        );
        // Without a count (a Pea of an earlier version) the name decides.
        offer(
            "old",
            serde_json::json!({"credit": 1, "pea": "idx/shard-1"}),
        );
        assert_eq!(
            (
                by_identity.get(&Bytes::from("wrong")),
                by_identity.get(&Bytes::from("right"))
            ),
            (None, Some(&0))
        );
        assert_eq!(by_identity.get(&Bytes::from("old")), Some(&1));
        assert_eq!(peers.iter().map(|p| p.credit).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn top_k_is_a_whole_number_or_refused_by_name() {
        assert_eq!(top_k(r#"{"top_k":3}"#), Ok(Some(3)));
        assert_eq!(top_k(r#"{"top_k":3.0}"#), Ok(Some(3)));
        assert_eq!(top_k(r#"{"top_k":null}"#), Ok(None));
        assert_eq!(top_k(r#"{"other":1}"#), Ok(None));
        assert_eq!(top_k(""), Ok(None));
        assert_eq!(top_k(r#"{"top_k":4294967295}"#), Ok(Some(4_294_967_295)));
        for bad in [
            "-1",
            "\"x\"",
            "1e300",
            "2.5",
            "true",
            "[1]",
            "{}",
            "-0.5",
            "4294967296",
            "18446744073709551615",
        ] {
            let e = top_k(&format!(r#"{{"top_k":{bad}}}"#)).unwrap_err();
            let shown: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert_eq!(
                e,
                format!(
                    "parameter `top_k` is {shown}: expected a whole number from 0 to 4294967295"
                )
            );
        }
        let e = top_k(&format!(r#"{{"top_k":"{}"}}"#, "x".repeat(1000))).unwrap_err();
        assert!(e.len() < 160, "{e}");
    }

    /// A part whose connection left goes to another connection of the same
    /// name, else another live replica of its shard the request has not gone
    /// to; never back through the connection that left, never to another
    /// shard (a shard replaced by a rolling update keeps its shard).
    #[test]
    fn a_lost_part_stays_in_its_shard_and_leaves_the_connection_that_went() {
        let peer = |shard: usize, id: Option<&str>| Peer {
            identity: id.map(|id| Bytes::from(id.to_string())),
            alive: id.is_some(),
            credit: 1,
            shard,
            ..Peer::default()
        };
        let gone = Bytes::from("b");
        // Shards: shard 1's Pea went, shard 0's must not take its part.
        let shards = [peer(0, Some("a")), peer(1, None)];
        assert_eq!(replacement(&shards, 1, &gone, &[1], Balance::Credit), None);
        // Two replicas of one shard: the other takes it, unless the request
        // went there already (`polling all`).
        let replicas = [peer(0, Some("a")), peer(0, None)];
        assert_eq!(
            replacement(&replicas, 1, &gone, &[1], Balance::Credit),
            Some(0)
        );
        assert_eq!(
            replacement(&replicas, 1, &gone, &[0, 1], Balance::Credit),
            None
        );
        // A second connection of the name serves on: it takes the part; the
        // connection that went (still the member's, the departure not yet
        // read) does not.
        let twin = [peer(0, None), peer(0, Some("b2"))];
        assert_eq!(
            replacement(&twin, 1, &gone, &[1], Balance::RoundRobin),
            Some(1)
        );
        let same = [peer(0, None), peer(0, Some("b"))];
        assert_eq!(
            replacement(&same, 1, &gone, &[1], Balance::RoundRobin),
            None
        );
    }
}
