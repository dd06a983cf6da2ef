//! The Tail in process, over real `inproc://` links: parts past the
//! deadline, a late part after the request ended, a part sent twice, a Pea
//! that leaves with a part in flight.
//!
//! Real time with short deadlines. The Tail driven by the real Head, in
//! paused time, is src/pod/head/tests.rs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::document::{Document, NamedScore};
use crate::transport::{SocketSpec, inproc};
use crate::wire::{Envelope, Status};

/// A running Tail of two shards, the socket its parts come in on, the one
/// its answers go out on, and what it is told.
struct Rig {
    pea: Link,
    answers: Link,
    inbox: mpsc::Sender<TailInput>,
    /// What the Tail hands back to the Head.
    resends: mpsc::UnboundedReceiver<Resend>,
    stats: Arc<TailStats>,
    stop: CancellationToken,
}

/// Two shards, and a second replica of shard 1 (no request targets it
/// until a part is rerouted to it).
const MEMBERS: [&str; 3] = ["p/shard-0", "p/shard-1", "p/shard-1-b"];

async fn rig() -> Rig {
    let (parts_at, output_at) = (inproc::address("tail-parts"), inproc::address("tail-out"));
    let parts = Link::open(SocketSpec::PULL_BIND, &parts_at, "tail parts")
        .await
        .unwrap();
    let output = Link::open(SocketSpec::PUSH_BIND, &output_at, "tail out")
        .await
        .unwrap();
    let pea = Link::open(SocketSpec::PUSH_CONNECT, &parts_at, "pea")
        .await
        .unwrap();
    let answers = Link::open(SocketSpec::PULL_CONNECT, &output_at, "gateway")
        .await
        .unwrap();
    let (inbox, rx) = mpsc::channel(16);
    let (resend, resends) = mpsc::unbounded_channel();
    let stats = Arc::new(TailStats::default());
    let stop = CancellationToken::new();
    let tail = Tail {
        name: "p/tail".into(),
        members: Arc::new(std::sync::RwLock::new(
            MEMBERS.iter().map(|m| m.to_string()).collect(),
        )),
        parts,
        output,
        inbox: rx,
        reducer: None,
        stats: stats.clone(),
        resend,
    };
    tokio::spawn(tail.run(stop.clone()));
    Rig {
        pea,
        answers,
        inbox,
        resends,
        stats,
        stop,
    }
}

fn expect(id: &str, deadline: Duration) -> TailInput {
    TailInput::Expect(Expect {
        request_id: id.into(),
        client_id: format!("client-{id}"),
        targets: vec![0, 1],
        down: Vec::new(),
        deadline: Instant::now() + deadline,
        top_k: Some(3),
        trace: None,
        head_span: None,
        sent: (0..2)
            .map(|i| Sent {
                via: Some(via(i)),
                frames: [Bytes::from(format!("envelope {i}")), Bytes::new()],
            })
            .collect(),
    })
}

/// The connection member `i`'s parts go through.
fn via(i: usize) -> Bytes {
    Bytes::from(format!("connection {i}"))
}

/// Shard `member`'s answer to request `id`: the query `q` with one match.
fn part(id: &str, member: usize, hit: (&str, f64)) -> Vec<Bytes> {
    let mut found = Document {
        id: hit.0.into(),
        ..Default::default()
    };
    found.scores.insert(
        "cosine".into(),
        NamedScore {
            value: hit.1,
            ..Default::default()
        },
    );
    let q = Document {
        id: "q".into(),
        matches: vec![found].into(),
        ..Default::default()
    };
    let mut envelope = Envelope::request("/search", "{}");
    envelope.request_id = id.into();
    envelope.parts.push(2);
    envelope.routes.push(Route {
        pea: MEMBERS[member].into(),
        start_us: 0,
        end_us: 0,
        outcome: Outcome::Routed,
    });
    Message::data(envelope, &Body::from_documents(&[q]))
        .frames()
        .to_vec()
}

async fn answer(rig: &mut Rig) -> Message {
    let frames = tokio::time::timeout(Duration::from_secs(5), rig.answers.recv())
        .await
        .expect("an answer in time")
        .expect("the output open");
    Message::from_frames(&frames).unwrap()
}

/// A request whose second part never comes fails `timeout` naming that
/// shard, and says the other part was applied; the part that comes after
/// is counted late and dropped, with no second answer.
#[tokio::test]
async fn parts_past_the_deadline_end_the_request_and_late_ones_are_dropped() {
    let mut rig = rig().await;
    rig.inbox
        .send(expect("r1", Duration::from_millis(150)))
        .await
        .unwrap();
    rig.pea.send(part("r1", 0, ("a", 0.5))).await.unwrap();
    let failed = answer(&mut rig).await;
    assert_eq!(failed.envelope.request_id, "client-r1");
    let Status::Error {
        executor,
        kind,
        message,
    } = &failed.envelope.status
    else {
        panic!("{:?}", failed.envelope.status)
    };
    assert_eq!(
        (executor.as_str(), *kind),
        ("p/shard-1", ErrorKind::Timeout)
    );
    assert!(
        message.contains("no answer within the Pod's time limit from `p/shard-1`"),
        "{message}"
    );
    assert!(
        message.contains("1 of 2 parts of this request succeeded, on p/shard-0"),
        "{message}"
    );
    assert_eq!(rig.stats.timed_out.load(Ordering::Relaxed), 1);

    rig.pea.send(part("r1", 1, ("b", 0.9))).await.unwrap();
    // The next request's answer comes next: nothing came out for the late part.
    rig.inbox
        .send(expect("r2", Duration::from_secs(5)))
        .await
        .unwrap();
    rig.pea.send(part("r2", 0, ("a", 0.5))).await.unwrap();
    rig.pea.send(part("r2", 1, ("b", 0.9))).await.unwrap();
    let merged = answer(&mut rig).await;
    assert_eq!(merged.envelope.request_id, "client-r2");
    assert_eq!(rig.stats.late.load(Ordering::Relaxed), 1);
    rig.stop.cancel();
}

/// A shard that sends its part twice: the second is dropped (its slot is
/// filled), and the request merges once both shards answered, the query
/// (the same id from both) once, with both matches by score.
#[tokio::test]
async fn a_part_sent_twice_counts_once_and_broadcast_answers_merge() {
    let mut rig = rig().await;
    rig.inbox
        .send(expect("r1", Duration::from_secs(5)))
        .await
        .unwrap();
    rig.pea.send(part("r1", 0, ("a", 0.5))).await.unwrap();
    rig.pea.send(part("r1", 0, ("a2", 0.7))).await.unwrap();
    rig.pea.send(part("r1", 1, ("b", 0.9))).await.unwrap();
    let merged = answer(&mut rig).await;
    assert_eq!(merged.envelope.status, Status::Success);
    let docs = merged.decode_body().unwrap().into_documents().unwrap();
    let ids: Vec<&str> = docs[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((docs.len(), ids), (1, vec!["b", "a"]));
    assert_eq!(rig.stats.parts.load(Ordering::Relaxed), 3);
    assert_eq!(rig.stats.completed.load(Ordering::Relaxed), 1);
    rig.stop.cancel();
}

/// Waits until the Tail has read everything sent to its inbox so far (it
/// answers `Outstanding` in order).
async fn settled(rig: &Rig) {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let ask = TailInput::Outstanding { member: 0, reply };
    rig.inbox.send(ask).await.unwrap();
    rx.await.unwrap();
}

/// A Pea that leaves with a part unanswered: the Tail hands that part back
/// to the Head once (a second notice of the same departure sends nothing;
/// nor does a Pea that answered, or that names other requests as lost),
/// and takes the answer of the Pea the Head rerouted it to.
#[tokio::test]
async fn a_part_whose_pea_left_is_handed_back_and_taken_from_its_replacement() {
    let mut rig = rig().await;
    rig.inbox
        .send(expect("r1", Duration::from_secs(5)))
        .await
        .unwrap();
    rig.pea.send(part("r1", 0, ("a", 0.5))).await.unwrap();
    // Shard 0 answered (the Tail has read it): its departure hands nothing
    // back. (A part still on the way when its Pea leaves is sent again; the
    // first answer to come is taken, the other dropped.)
    while rig.stats.parts.load(Ordering::Relaxed) < 1 {
        tokio::task::yield_now().await;
    }
    // Shard 1 stopping and naming another request as the one it will not
    // answer hands nothing back either, nor another connection of shard 1's
    // name going (its part did not go through that one).
    let departures = [
        (0, via(0), Lost::Unanswered),
        (1, via(1), Lost::Only(["r9".to_string()].into())),
        (1, Bytes::from("an older connection"), Lost::Unanswered),
        (1, via(1), Lost::Unanswered),
        (1, via(1), Lost::Unanswered),
    ];
    for (member, via, lost) in departures {
        rig.inbox
            .send(TailInput::Departed { member, via, lost })
            .await
            .unwrap();
    }
    settled(&rig).await;
    let resend = rig
        .resends
        .try_recv()
        .expect("the part of shard 1 handed back");
    assert_eq!(
        (resend.request_id.as_str(), resend.slot, resend.member),
        ("r1", 1, 1)
    );
    assert_eq!((resend.targets, resend.via), (vec![0, 1], via(1)));
    assert_eq!(resend.frames[0], Bytes::from("envelope 1"));
    assert!(rig.resends.try_recv().is_err(), "handed back twice");

    let to = Some((2, via(2)));
    let rerouted = TailInput::Rerouted {
        request_id: "r1".into(),
        slot: 1,
        to,
    };
    rig.inbox.send(rerouted).await.unwrap();
    // A late answer of the Pea that left is not the replacement's.
    rig.pea.send(part("r1", 1, ("gone", 0.1))).await.unwrap();
    rig.pea.send(part("r1", 2, ("b", 0.9))).await.unwrap();
    let merged = answer(&mut rig).await;
    assert_eq!(merged.envelope.status, Status::Success);
    let docs = merged.decode_body().unwrap().into_documents().unwrap();
    let ids: Vec<&str> = docs[0].matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    rig.stop.cancel();
}

/// A part whose Pea left and that no other Pea can take fails the request at
/// once (long before its deadline), `unavailable`, naming the Pea that left
/// and what the other part applied.
#[tokio::test]
async fn a_part_no_pea_can_take_fails_the_request_at_once() {
    let mut rig = rig().await;
    rig.inbox
        .send(expect("r1", Duration::from_secs(60)))
        .await
        .unwrap();
    rig.pea.send(part("r1", 0, ("a", 0.5))).await.unwrap();
    rig.inbox
        .send(TailInput::Departed {
            member: 1,
            via: via(1),
            lost: Lost::Only(["r1".to_string()].into()),
        })
        .await
        .unwrap();
    let resend = tokio::time::timeout(Duration::from_secs(5), rig.resends.recv())
        .await
        .expect("handed back in time")
        .unwrap();
    let rerouted = TailInput::Rerouted {
        request_id: resend.request_id,
        slot: resend.slot,
        to: None,
    };
    rig.inbox.send(rerouted).await.unwrap();
    let failed = answer(&mut rig).await;
    let Status::Error {
        executor,
        kind,
        message,
    } = &failed.envelope.status
    else {
        panic!("{:?}", failed.envelope.status)
    };
    assert_eq!(
        (executor.as_str(), *kind),
        ("p/shard-1", ErrorKind::Unavailable)
    );
    assert!(
        message.contains("`p/shard-1` left the Pod before answering its part, and no other Pea of its shard is connected to take it"),
        "{message}"
    );
    assert!(
        message.contains("1 of 2 parts of this request succeeded, on p/shard-0"),
        "{message}"
    );
    assert_eq!(rig.stats.unavailable.load(Ordering::Relaxed), 1);
    rig.stop.cancel();
}
