//! The Head and the Tail in one process, wired as `pod::assemble` wires them,
//! over real `inproc://` links: fake Peas register with IDLE on the Head's
//! fan-out ROUTER and answer on the Tail's parts socket, as a Pea does. Credit,
//! deadlines, aborting and late parts, a reused client id, and the part of a
//! Pea that leaves sent again.
//!
//! Time is tokio's paused clock: it moves only when every task waits, so a
//! deadline passes without waiting for it, and [`settle`] returns once the
//! Head and the Tail have done all they can with what they were given.

use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::document::Document;
use crate::metrics::TailStats;
use crate::pod::tail::Tail;
use crate::transport::{SocketSpec, inproc};
use crate::wire::{AfterError, Status};

const REPLICAS: [&str; 2] = ["p/replica-0", "p/replica-1"];
const SHARDS: [&str; 2] = ["p/shard-0", "p/shard-1"];
/// Long enough that no test reaches it unless it is about it.
const LONG: Duration = Duration::from_secs(60);

/// A running Head and Tail of Pod `p`, the sockets a client reaches them
/// on, and where fake Peas connect.
struct Rig {
    members: Vec<String>,
    /// The Pod's input (the Head reads it) and output (the Tail writes it).
    input: Link,
    answers: Link,
    fanout_at: String,
    parts_at: String,
    registered: watch::Receiver<Vec<bool>>,
    head: Arc<HeadStats>,
    tail: Arc<TailStats>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A Head and Tail for `members` (replicas or shards as `layout` says),
/// credit balancing, `polling` and the Pod's time limit `timeout`.
async fn rig(members: [&str; 2], layout: Layout, polling: &str, timeout: Duration) -> Rig {
    let at = |what: &str| inproc::address(&format!("head-test-{what}"));
    let (input_at, output_at, fanout_at, parts_at) =
        (at("in"), at("out"), at("fanout"), at("parts"));
    let open = |spec, address: &str| {
        let address = address.to_string();
        async move { Link::open(spec, &address, "head test").await.unwrap() }
    };
    let head_input = open(SocketSpec::PULL_BIND, &input_at).await;
    let output = open(SocketSpec::PUSH_BIND, &output_at).await;
    let fanout = open(SocketSpec::ROUTER_BIND, &fanout_at).await;
    let parts = open(SocketSpec::PULL_BIND, &parts_at).await;
    let names: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    let shared: crate::pod::Members = Arc::new(std::sync::RwLock::new(names.clone()));
    let (tail_tx, tail_rx) = mpsc::channel(1024);
    let (resend_tx, resend_rx) = mpsc::unbounded_channel();
    // No rolling update here: a closed command channel.
    let (_, commands) = mpsc::channel(1);
    let (registered_tx, registered) = watch::channel(vec![false; names.len()]);
    let (head, tail) = (
        Arc::new(HeadStats::default()),
        Arc::new(TailStats::default()),
    );
    let stop = CancellationToken::new();
    let tail_task = Tail {
        name: "p/tail".into(),
        members: shared.clone(),
        parts,
        output,
        inbox: tail_rx,
        reducer: None,
        stats: tail.clone(),
        resend: resend_tx,
    }
    .run(stop.clone());
    let head_task = Head {
        name: "p/head".into(),
        layout,
        shards: if layout == Layout::Shards { 2 } else { 1 },
        polling: polling.parse().unwrap(),
        balance: Balance::Credit,
        members: shared,
        open: false,
        input: head_input,
        fanout,
        tail: tail_tx,
        timeout,
        registered: registered_tx,
        stats: head.clone(),
        before: None,
        on_error: crate::pea::OnError::Ignore,
        commands,
        resends: resend_rx,
    }
    .run(stop.clone());
    let tasks = vec![
        tokio::spawn(async move { drop(tail_task.await) }),
        tokio::spawn(async move { drop(head_task.await) }),
    ];
    Rig {
        members: names,
        input: open(SocketSpec::PUSH_CONNECT, &input_at).await,
        answers: open(SocketSpec::PULL_CONNECT, &output_at).await,
        fanout_at,
        parts_at,
        registered,
        head,
        tail,
        stop,
        tasks,
    }
}

impl Rig {
    /// Member `i`, connected and registered with one credit.
    async fn pea(&mut self, i: usize) -> FakePea {
        let input = Link::open(SocketSpec::DEALER_CONNECT, &self.fanout_at, "fake pea in");
        let parts = Link::open(SocketSpec::PUSH_CONNECT, &self.parts_at, "fake pea out");
        let pea = FakePea {
            name: self.members[i].clone(),
            input: input.await.unwrap(),
            parts: parts.await.unwrap(),
        };
        pea.idle().await;
        self.until_registered(i, true).await;
        pea
    }

    async fn until_registered(&mut self, i: usize, connected: bool) {
        let wait = self.registered.wait_for(|r| r[i] == connected);
        wait.await.expect("the Head runs");
    }

    async fn send(&self, message: &Message) {
        self.input.send(message.frames().to_vec()).await.unwrap();
    }

    /// The Pod's next answer (failing the test if none comes in ten
    /// minutes of the paused clock, rather than hanging).
    async fn answer(&mut self) -> Message {
        let frames = tokio::time::timeout(Duration::from_secs(600), self.answers.recv());
        let frames = frames.await.expect("an answer").expect("the output open");
        Message::from_frames(&frames).unwrap()
    }

    /// Stops the Head and the Tail (every request has ended) and waits for them.
    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("no panic");
        }
    }
}

/// Lets the Head and the Tail do all they can: the paused clock moves on
/// only once every task waits.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A Pea as the Head and the Tail see it: a DEALER on the fan-out and a
/// PUSH to the parts socket.
struct FakePea {
    name: String,
    input: Link,
    parts: Link,
}

impl FakePea {
    /// Asks for one more request, as a Pea does after each answer.
    async fn idle(&self) {
        let idle = crate::control::frames("IDLE", json!({"credit": 1, "pea": self.name}));
        self.input.send(idle).await.unwrap();
    }

    /// The next part the Head sent it.
    async fn part(&mut self) -> Message {
        let frames = tokio::time::timeout(Duration::from_secs(600), self.input.recv());
        let frames = frames.await.expect("a part").expect("the fan-out open");
        Message::from_frames(&frames).unwrap()
    }

    /// Whether the Head has sent it nothing more.
    fn got_nothing(&mut self) -> bool {
        self.input.try_recv().is_none()
    }

    /// Answers `part` with its own documents.
    async fn answer(&self, part: &Message) {
        self.reply(part.envelope.clone(), part.body.clone()).await;
    }

    /// Fails `part`, ending the request (`THROW_EARLY`).
    async fn abort(&self, part: &Message) {
        let mut envelope = part.envelope.clone();
        envelope.fail(&self.name, ErrorKind::Panic, "the guest panicked");
        envelope.after_error = AfterError::Abort;
        self.reply(envelope, Bytes::new()).await;
    }

    async fn reply(&self, mut envelope: Envelope, body: Bytes) {
        let outcome = if envelope.is_error() {
            Outcome::Failed
        } else {
            Outcome::Handled
        };
        let pea = self.name.clone();
        envelope.routes.push(Route {
            pea,
            start_us: 0,
            end_us: 0,
            outcome,
        });
        let frames = Message::new(envelope, body).frames().to_vec();
        self.parts.send(frames).await.unwrap();
    }

    /// Stops as a Pea does: CANCEL, naming the requests it will not answer.
    async fn cancel(&self, unanswered: &[&str]) {
        let cancel = crate::control::frames("CANCEL", json!({ "unanswered": unanswered }));
        self.input.send(cancel).await.unwrap();
    }
}

/// A request `id` for documents `docs`.
fn request(id: &str, docs: &[&str]) -> Message {
    let docs: Vec<Document> = docs
        .iter()
        .map(|d| Document {
            id: (*d).to_string(),
            ..Default::default()
        })
        .collect();
    let mut envelope = Envelope::request("/index", "{}");
    envelope.request_id = id.into();
    Message::data(envelope, &Body::from_documents(&docs))
}

fn doc_ids(message: &Message) -> Vec<String> {
    let docs = message.decode_body().unwrap().into_documents().unwrap();
    docs.into_iter().map(|d| d.id).collect()
}

fn error_of(message: &Message) -> (String, ErrorKind, String) {
    match &message.envelope.status {
        Status::Error {
            executor,
            kind,
            message,
        } => (executor.clone(), *kind, message.clone()),
        Status::Success => panic!("expected an error, got success"),
    }
}

/// `polling any` over two replicas, credit balancing: each takes the one
/// request its credit allows; the third waits upstream, unread, until a
/// replica asks again, and goes to that one, not to the one without credit.
#[tokio::test(start_paused = true)]
async fn a_replica_without_credit_gets_nothing_and_input_waits_for_credit() {
    let mut rig = rig(REPLICAS, Layout::Replicas, "any", LONG).await;
    let (mut a, mut b) = (rig.pea(0).await, rig.pea(1).await);
    for id in ["r1", "r2", "r3"] {
        rig.send(&request(id, &[id])).await;
    }
    let (first, second) = (a.part().await, b.part().await);
    assert_eq!(
        (doc_ids(&first), doc_ids(&second)),
        (vec!["r1".to_string()], vec!["r2".to_string()])
    );
    settle().await;
    assert_eq!(
        rig.head.requests.load(Ordering::Relaxed),
        2,
        "the third is held"
    );
    assert!(a.got_nothing() && b.got_nothing());

    // `a` answers and asks for more: the third is read, and goes to `a`.
    a.answer(&first).await;
    a.idle().await;
    let third = a.part().await;
    assert_eq!(doc_ids(&third), ["r3"]);
    settle().await;
    assert!(b.got_nothing(), "`b` has no credit");
    b.answer(&second).await;
    a.answer(&third).await;
    let mut answered = Vec::new();
    for _ in 0..3 {
        let answer = rig.answer().await;
        assert_eq!(answer.envelope.status, Status::Success);
        assert_eq!(
            doc_ids(&answer),
            std::slice::from_ref(&answer.envelope.request_id)
        );
        answered.push(answer.envelope.request_id);
    }
    assert_eq!(answered, ["r1", "r2", "r3"]);
    assert_eq!(rig.head.parts.load(Ordering::Relaxed), 3);
    rig.stop().await;
}

/// What a connection says in its IDLE is read field by field: a body that
/// is not one JSON object of those fields (not JSON, an array, a name that
/// is not a string, a key given twice) registers nobody, and the Head goes
/// on serving the Peas that say who they are.
#[tokio::test(start_paused = true)]
async fn an_idle_that_does_not_say_who_it_is_registers_nobody() {
    let mut rig = rig(REPLICAS, Layout::Replicas, "any", LONG).await;
    let stranger = Link::open(SocketSpec::DEALER_CONNECT, &rig.fanout_at, "stranger");
    let stranger = stranger.await.unwrap();
    let name = &rig.members[0];
    let bodies = [
        "not json".to_string(),
        format!("[\"{name}\"]"),
        r#"{"credit": 1, "pea": 7}"#.to_string(),
        format!(r#"{{"credit": 1, "pea": "{name}", "pea": "{name}"}}"#),
    ];
    for body in bodies {
        let envelope: Bytes = Envelope::control("IDLE").encode().into();
        stranger.send(vec![envelope, body.into()]).await.unwrap();
    }
    settle().await;
    assert_eq!(*rig.registered.borrow(), [false, false]);

    let mut a = rig.pea(0).await;
    rig.send(&request("r1", &["r1"])).await;
    let part = a.part().await;
    a.answer(&part).await;
    let answer = rig.answer().await;
    assert_eq!(answer.envelope.status, Status::Success);
    assert_eq!(doc_ids(&answer), ["r1"]);
    rig.stop().await;
}

/// A shard that never answers: the request ends `timeout`, naming it, when
/// the Pod's time limit passes, or the request's own deadline if sooner.
#[tokio::test(start_paused = true)]
async fn a_silent_pea_times_the_request_out_at_its_deadline_naming_it() {
    let limit = Duration::from_secs(2);
    let mut rig = rig(SHARDS, Layout::Shards, "all", limit).await;
    let (mut s0, mut s1) = (rig.pea(0).await, rig.pea(1).await);
    for (id, deadline) in [("r1", None), ("r2", Some(Duration::from_millis(300)))] {
        let mut message = request(id, &["a"]);
        if let Some(deadline) = deadline {
            message.envelope.deadline_ms = now_us() / 1000 + deadline.as_millis() as u64;
        }
        let started = Instant::now();
        rig.send(&message).await;
        let part = s0.part().await;
        s0.answer(&part).await;
        let _silent = s1.part().await;
        let failed = rig.answer().await;
        let waited = started.elapsed();
        let expected = deadline.unwrap_or(limit);
        assert!(
            waited + Duration::from_millis(60) >= expected
                && waited < expected + Duration::from_millis(200),
            "{id}: {waited:?}"
        );
        assert_eq!(failed.envelope.request_id, id);
        assert_eq!(failed.envelope.after_error, AfterError::Abort);
        let (executor, kind, why) = error_of(&failed);
        assert_eq!(
            (executor.as_str(), kind),
            ("p/shard-1", ErrorKind::Timeout),
            "{why}"
        );
        assert!(
            why.contains("no answer within the Pod's time limit from `p/shard-1`"),
            "{why}"
        );
        assert!(
            why.contains("1 of 2 parts of this request succeeded, on p/shard-0"),
            "{why}"
        );
    }
    assert_eq!(rig.tail.timed_out.load(Ordering::Relaxed), 2);
    rig.stop().await;
}

/// A part that fails with `THROW_EARLY` ends the request at once, without
/// waiting for the other shard.
#[tokio::test(start_paused = true)]
async fn an_aborting_part_ends_the_request_at_once() {
    let mut rig = rig(SHARDS, Layout::Shards, "all", LONG).await;
    let (mut s0, mut s1) = (rig.pea(0).await, rig.pea(1).await);
    let started = Instant::now();
    rig.send(&request("r1", &["a"])).await;
    let (part, _pending) = (s0.part().await, s1.part().await);
    s0.abort(&part).await;
    let failed = rig.answer().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(failed.envelope.request_id, "r1");
    assert_eq!(failed.envelope.after_error, AfterError::Abort);
    assert!(failed.body.is_empty());
    let (executor, kind, why) = error_of(&failed);
    assert_eq!(
        (executor.as_str(), kind, why.as_str()),
        ("p/shard-0", ErrorKind::Panic, "the guest panicked")
    );
    assert_eq!(rig.tail.pending.load(Ordering::Relaxed), 0);
    rig.stop().await;
}

/// The other shard's part, after the request ended, is dropped and counted
/// late; the next request is answered as usual, and nothing else comes out.
#[tokio::test(start_paused = true)]
async fn a_late_part_after_the_end_is_dropped_and_counted() {
    let mut rig = rig(SHARDS, Layout::Shards, "all", LONG).await;
    let (mut s0, mut s1) = (rig.pea(0).await, rig.pea(1).await);
    rig.send(&request("r1", &["a"])).await;
    let (part, late) = (s0.part().await, s1.part().await);
    s0.abort(&part).await;
    assert!(rig.answer().await.envelope.is_error());
    s1.answer(&late).await;
    rig.send(&request("r2", &["b"])).await;
    let (p0, p1) = (s0.part().await, s1.part().await);
    s0.answer(&p0).await;
    s1.answer(&p1).await;
    let next = rig.answer().await;
    assert_eq!(
        (next.envelope.request_id.as_str(), &next.envelope.status),
        ("r2", &Status::Success)
    );
    assert_eq!(rig.tail.late.load(Ordering::Relaxed), 1);
    assert_eq!(rig.tail.parts.load(Ordering::Relaxed), 4);
    settle().await;
    assert!(
        rig.answers.try_recv().is_none(),
        "an answer for the late part"
    );
    rig.stop().await;
}

/// Two requests under one client id travel under ids the Head mints, so
/// each gets its own answer, under the client's id, whatever the order.
#[tokio::test(start_paused = true)]
async fn two_requests_with_one_client_id_each_get_their_own_answer() {
    let mut rig = rig(REPLICAS, Layout::Replicas, "any", LONG).await;
    let (mut a, mut b) = (rig.pea(0).await, rig.pea(1).await);
    rig.send(&request("same", &["x"])).await;
    rig.send(&request("same", &["y"])).await;
    let (x, y) = (a.part().await, b.part().await);
    let (xid, yid) = (&x.envelope.request_id, &y.envelope.request_id);
    assert!(xid != yid && xid != "same" && yid != "same", "{xid} {yid}");
    b.answer(&y).await;
    a.answer(&x).await;
    for docs in [["y"], ["x"]] {
        let answer = rig.answer().await;
        assert_eq!(
            (answer.envelope.request_id.as_str(), &answer.envelope.status),
            ("same", &Status::Success)
        );
        assert_eq!(doc_ids(&answer), docs);
    }
    assert_eq!(rig.tail.completed.load(Ordering::Relaxed), 2);
    rig.stop().await;
}

/// How a fake Pea leaves with a part in flight.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Its connection drops (a crash, a kill).
    Drop,
    /// It stops and names the request it will not answer.
    Cancel,
    /// It stops naming nothing (the part reached it after it drained its
    /// queue), then closes.
    CancelMissing,
}

impl Leave {
    async fn leave(self, pea: FakePea, holding: &Message) {
        match self {
            Leave::Drop => drop(pea),
            Leave::Cancel => pea.cancel(&[&holding.envelope.request_id]).await,
            Leave::CancelMissing => {
                pea.cancel(&[]).await;
                settle().await;
                drop(pea);
            }
        }
    }
}

/// A replica that leaves with a part in flight: the part goes to the other
/// replica at once (credit or not), and the request succeeds.
#[tokio::test(start_paused = true)]
async fn a_part_whose_pea_leaves_goes_to_the_other_replica() {
    for how in [Leave::Drop, Leave::Cancel, Leave::CancelMissing] {
        let mut rig = rig(REPLICAS, Layout::Replicas, "any", LONG).await;
        let (mut a, mut b) = (rig.pea(0).await, rig.pea(1).await);
        let started = Instant::now();
        rig.send(&request("r1", &["x"])).await;
        let part = a.part().await;
        how.leave(a, &part).await;
        let again = b.part().await;
        assert_eq!(
            (&again.envelope, &again.body),
            (&part.envelope, &part.body),
            "{how:?}"
        );
        b.answer(&again).await;
        let answer = rig.answer().await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{how:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            (answer.envelope.request_id.as_str(), &answer.envelope.status),
            ("r1", &Status::Success),
            "{how:?}"
        );
        assert_eq!(doc_ids(&answer), ["x"]);
        rig.until_registered(0, false).await;
        rig.stop().await;
    }
}

/// A replica that leaves with a part in flight when the other has left
/// already: the request fails `unavailable` at once, naming the one that
/// left with it, not at the Pod's time limit.
#[tokio::test(start_paused = true)]
async fn a_part_no_other_replica_can_take_fails_unavailable_at_once() {
    for how in [Leave::Drop, Leave::Cancel, Leave::CancelMissing] {
        let mut rig = rig(REPLICAS, Layout::Replicas, "any", LONG).await;
        let (mut a, b) = (rig.pea(0).await, rig.pea(1).await);
        drop(b);
        rig.until_registered(1, false).await;
        let started = Instant::now();
        rig.send(&request("r1", &["x"])).await;
        let part = a.part().await;
        how.leave(a, &part).await;
        let failed = rig.answer().await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{how:?}: {:?}",
            started.elapsed()
        );
        assert_eq!(failed.envelope.request_id, "r1");
        let (executor, kind, why) = error_of(&failed);
        assert_eq!(
            (executor.as_str(), kind),
            ("p/replica-0", ErrorKind::Unavailable),
            "{how:?}: {why}"
        );
        assert!(
            why.contains("`p/replica-0` left the Pod before answering its part"),
            "{how:?}: {why}"
        );
        assert_eq!(rig.tail.unavailable.load(Ordering::Relaxed), 1);
        rig.stop().await;
    }
}
