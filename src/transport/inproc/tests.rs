//! The in-process sockets' ZeroMQ semantics, through [`Link`]s as their users
//! see them.

use std::time::Duration;

use bytes::Bytes;

use super::super::{Link, SocketSpec, SocketType};
use super::{CAPACITY, address};

fn frames(s: &str) -> Vec<Bytes> {
    vec![Bytes::from(s.to_string())]
}

fn spec(kind: SocketType, bind: bool) -> SocketSpec {
    SocketSpec { kind, bind }
}

async fn open(kind: SocketType, bind: bool, name: &str) -> Link {
    Link::open(spec(kind, bind), name, "test").await.unwrap()
}

/// The next message, failing the test after a second.
async fn next(link: &mut Link) -> Vec<Bytes> {
    tokio::time::timeout(Duration::from_secs(1), link.recv())
        .await
        .expect("a message within a second")
        .expect("the link is open")
}

#[tokio::test]
async fn push_sends_round_robin_to_its_peers() {
    let name = address("round-robin");
    let push = open(SocketType::Push, true, &name).await;
    let mut a = open(SocketType::Pull, false, &name).await;
    let mut b = open(SocketType::Pull, false, &name).await;
    for i in 0..4 {
        push.send(frames(&i.to_string())).await.unwrap();
    }
    let (a1, b1) = (next(&mut a).await, next(&mut b).await);
    assert_ne!(a1, b1, "one message to each in turn");
    let (a2, b2) = (next(&mut a).await, next(&mut b).await);
    assert_ne!(a2, b2);
    assert!(a.try_recv().is_none() && b.try_recv().is_none());
}

#[tokio::test]
async fn what_is_sent_before_a_peer_connects_waits_and_keeps_its_order() {
    let name = address("early");
    // Nothing is bound at the name yet: the PUSH keeps trying to connect.
    let push = open(SocketType::Push, false, &name).await;
    for i in 0..3 {
        push.send(frames(&i.to_string())).await.unwrap();
    }
    let mut pull = open(SocketType::Pull, true, &name).await;
    push.send(frames("3")).await.unwrap();
    for i in 0..4 {
        assert_eq!(next(&mut pull).await, frames(&i.to_string()));
    }
}

#[tokio::test]
async fn a_full_queue_makes_the_sender_wait() {
    let name = address("full");
    let mut pull = open(SocketType::Pull, true, &name).await;
    let push = open(SocketType::Push, false, &name).await;
    for i in 0..CAPACITY {
        push.send(frames(&i.to_string())).await.unwrap();
    }
    let blocked = tokio::time::timeout(Duration::from_millis(50), push.send(frames("more")));
    assert!(
        blocked.await.is_err(),
        "the sender waits while the queue is full"
    );
    assert_eq!(next(&mut pull).await, frames("0"));
    tokio::time::timeout(Duration::from_secs(1), push.send(frames("more")))
        .await
        .expect("room again")
        .unwrap();
}

#[tokio::test]
async fn router_addresses_by_identity_and_reports_departures() {
    let name = address("router");
    let mut router = open(SocketType::Router, true, &name).await;
    let mut dealer = open(SocketType::Dealer, false, &name).await;
    dealer.send(frames("hello")).await.unwrap();
    let got = next(&mut router).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], "hello");
    let identity = got[0].clone();
    router
        .send(vec![identity.clone(), Bytes::from("answer")])
        .await
        .unwrap();
    assert_eq!(next(&mut dealer).await, frames("answer"));
    // A peer that is not connected: the message is dropped, as ZeroMQ does.
    router
        .send(vec![Bytes::from("nobody"), Bytes::from("x")])
        .await
        .unwrap();
    drop(dealer);
    assert_eq!(next(&mut router).await, vec![identity]);
}

#[tokio::test]
async fn a_connecting_socket_connects_again_when_its_binder_returns() {
    let name = address("again");
    let first = open(SocketType::Pull, true, &name).await;
    let push = open(SocketType::Push, false, &name).await;
    let mut reconnects = push.reconnects();
    let taken = Link::open(spec(SocketType::Pull, true), &name, "test")
        .await
        .err()
        .expect("a name is bound once");
    assert!(taken.to_string().contains("already bound"), "{taken}");
    first.close(Duration::from_secs(1)).await;
    let mut second = open(SocketType::Pull, true, &name).await;
    tokio::time::timeout(Duration::from_secs(5), reconnects.changed())
        .await
        .expect("connected again")
        .unwrap();
    push.send(frames("again")).await.unwrap();
    assert_eq!(next(&mut second).await, frames("again"));
}

#[tokio::test]
async fn pub_drops_what_a_full_subscriber_cannot_take() {
    let name = address("pub");
    let publisher = open(SocketType::Pub, true, &name).await;
    let mut sub = open(SocketType::Sub, false, &name).await;
    for i in 0..CAPACITY + 5 {
        tokio::time::timeout(
            Duration::from_secs(1),
            publisher.send(frames(&i.to_string())),
        )
        .await
        .expect("a PUB never waits")
        .unwrap();
    }
    let mut got = 0;
    while sub.try_recv().is_some() {
        got += 1;
    }
    assert_eq!(got, CAPACITY);
}

#[tokio::test]
async fn close_frees_the_name_and_later_sends_fail() {
    let name = address("close");
    let push = open(SocketType::Push, true, &name).await;
    let sender = push.sender();
    // A message no peer ever takes does not hold the close up.
    push.send(frames("lost")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), push.close(Duration::from_secs(30)))
        .await
        .expect("closed at once");
    let error = sender.send(frames("late")).await.unwrap_err();
    assert!(error.contains("is closed"), "{error}");
    open(SocketType::Push, true, &name).await;
    assert!(
        Link::open(SocketSpec::PULL_BIND, "inproc://", "test")
            .await
            .is_err()
    );
}
