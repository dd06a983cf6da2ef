//! Where a request goes: polling, partitions, replicas, credit, `top_k`,
//! and where a lost part goes.

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

/// What a Head of a Pod of two shards (`idx/shard-0`, `idx/shard-1`) knows
/// of its Peas, fed by [`on_peer`]; none connected at first.
struct TwoShards {
    members: crate::pod::Members,
    peers: Vec<Peer>,
    by_identity: HashMap<Bytes, usize>,
    /// Whether the Pod's Peas must say the shard count (`on_peer`'s seat).
    counted: bool,
}

impl TwoShards {
    fn new(counted: bool) -> TwoShards {
        TwoShards {
            members: Arc::new(std::sync::RwLock::new(vec![
                "idx/shard-0".to_string(),
                "idx/shard-1".to_string(),
            ])),
            peers: vec![Peer::default(), Peer::default()],
            by_identity: HashMap::new(),
            counted,
        }
    }

    fn offer(&mut self, frames: Vec<Bytes>) -> Option<TailInput> {
        on_peer(
            "idx/head",
            &self.members,
            (self.counted, Layout::Shards, 2),
            &mut self.peers,
            &mut self.by_identity,
            frames,
        )
    }

    /// The member connection `identity` was let in as.
    fn member(&self, identity: &str) -> Option<usize> {
        self.by_identity
            .get(&Bytes::from(identity.to_string()))
            .copied()
    }

    fn credits(&self) -> Vec<u32> {
        self.peers.iter().map(|p| p.credit).collect()
    }
}

#[test]
fn a_pea_of_a_pod_of_another_size_is_not_let_in() {
    let mut head = TwoShards::new(true);
    head.offer(idle(
        "wrong",
        serde_json::json!({"credit": 1, "pea": "idx/shard-1", "shards": 3}),
    ));
    head.offer(idle(
        "right",
        serde_json::json!({"credit": 1, "pea": "idx/shard-0", "shards": 2}),
    ));
    // Without a count (a Pea of an earlier version) the name decides.
    head.offer(idle(
        "old",
        serde_json::json!({"credit": 1, "pea": "idx/shard-1"}),
    ));
    assert_eq!(
        (head.member("wrong"), head.member("right")),
        (None, Some(0))
    );
    assert_eq!(head.member("old"), Some(1));
    assert_eq!(head.credits(), [1, 1]);
}

/// However many IDLEs a Pea sends, the Head believes it holds at most the
/// credit one IDLE may grant (1,024), not the sum: it would be sent parts
/// that wait in its socket while the other Peas sit idle.
#[test]
fn an_idle_flood_grants_no_more_than_one_idle_may() {
    let mut head = TwoShards::new(false);
    for credit in [1, 5000, 1024, 1024, 1] {
        head.offer(idle(
            "pea",
            serde_json::json!({"credit": credit, "pea": "idx/shard-0"}),
        ));
    }
    assert_eq!(head.credits(), [1024, 0]);
}

/// JSON is UTF-8: an IDLE whose body has bytes that are not (here in a
/// field the Head does not read, which serde skips without checking) is
/// not JSON and registers nobody, as one that is not JSON at all.
#[test]
fn an_idle_that_is_not_utf8_registers_nobody() {
    let mut head = TwoShards::new(false);
    let frames = |identity: &str, note: &[u8]| {
        let mut body = br#"{"credit": 1, "pea": "idx/shard-0", "note": ""#.to_vec();
        body.extend_from_slice(note);
        body.extend_from_slice(br#""}"#);
        let envelope = crate::wire::Envelope::control("IDLE").encode();
        vec![identity.to_string().into(), envelope.into(), body.into()]
    };
    head.offer(frames("stranger", b"\xff\xfe not UTF-8"));
    // The same body in UTF-8 is read: the test is about the bytes.
    head.offer(frames("pea", "caf\u{e9}".as_bytes()));
    assert_eq!(head.member("stranger"), None);
    assert_eq!(head.member("pea"), Some(0));
    assert_eq!(head.credits(), [1, 0]);
}

/// A message may be 1 GiB. A CANCEL (or IDLE) body of that size with an
/// array of numbers in a field would be built as a JSON tree sixteen times
/// that size (32 bytes a number written in 2), which kills the process and
/// every Pod in it: the Head skips what it does not keep, and keeps at
/// most the ids it believes.
#[test]
fn a_huge_cancel_is_read_without_building_it() {
    let mut head = TwoShards::new(false);
    head.offer(idle(
        "pea",
        serde_json::json!({"credit": 1, "pea": "idx/shard-0"}),
    ));
    assert_eq!(head.member("pea"), Some(0));

    // 32 MiB: a number, 5,000 ids, a nested array, then 16 Mi numbers.
    const NUMBERS: usize = 16 << 20;
    let mut body = String::with_capacity(2 * NUMBERS + (64 << 10));
    body.push_str(r#"{"pea": "idx/shard-0", "unanswered": [7"#);
    for i in 0..5000 {
        body.push_str(&format!(r#","r{i}""#));
    }
    body.push_str(r#",[[1, "x"]]"#);
    for _ in 0..NUMBERS {
        body.push_str(",0");
    }
    body.push_str("]}");
    let envelope = crate::wire::Envelope::control("CANCEL").encode();
    let frames = vec![Bytes::from("pea"), envelope.into(), body.into()];
    let before = crate::test_support::peak_rss(true);
    let departed = head.offer(frames);
    let grew = crate::test_support::peak_rss(false).saturating_sub(before);
    let Some(TailInput::Departed {
        member: 0,
        lost: crate::pod::Lost::Only(ids),
        ..
    }) = departed
    else {
        panic!("the CANCEL of member 0 is a departure");
    };
    // The first 4,096 ids (MAX_UNANSWERED): a Pea holds no more.
    assert_eq!(ids.len(), 4096);
    assert!(ids.contains("r0") && ids.contains("r4095") && !ids.contains("r4096"));
    // 256 MiB, not less: the peak is the process's, and other tests run
    // beside this one; built as a tree, the body took 512 MiB.
    assert!(
        grew < 256 << 20,
        "reading a 32 MiB CANCEL took {} MiB more",
        grew >> 20
    );
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
            format!("parameter `top_k` is {shown}: expected a whole number from 0 to 4294967295")
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
