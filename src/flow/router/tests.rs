//! The router's logic in one process with paused time: its Pods are fakes
//! on real `inproc://` sockets (a PULL input and a PUSH output each, as a Pod
//! binds them), which the test drives by hand.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::{Call, call, route};
use crate::flow::Flow;
use crate::transport::{Link, SocketSpec, inproc};
use crate::wire::{AfterError, Envelope, ErrorKind, Message, Status};

/// A Pod as the router sees it: what it was sent, and where it answers.
struct FakePod {
    input: Link,
    output: Link,
}

impl FakePod {
    async fn start(name: &str) -> FakePod {
        let input = Link::open(SocketSpec::PULL_BIND, &inproc::address(name), name)
            .await
            .unwrap();
        let output = Link::open(SocketSpec::PUSH_BIND, &inproc::address(name), name)
            .await
            .unwrap();
        FakePod { input, output }
    }

    /// The next request the router sent this Pod.
    async fn request(&mut self) -> Message {
        Message::from_frames(&self.input.recv().await.unwrap()).unwrap()
    }

    async fn answer(&self, message: &Message) {
        self.output.send(message.frames().to_vec()).await.unwrap();
    }
}

/// A Flow `a -> b` (a 1-second timeout) with fake Pods, and its router.
async fn chain() -> (super::Running, FakePod, FakePod) {
    let yaml = "with:\n  timeout: 1s\npods:\n  - name: a\n    uses: a.wasm\n  - name: b\n    uses: b.wasm\n    needs: a\n";
    let flow = Flow::parse(yaml, Path::new("flow.yml"), |_| None).unwrap();
    let (a, b) = (FakePod::start("a").await, FakePod::start("b").await);
    let addresses = [&a, &b]
        .map(|p| (p.input.endpoint.clone(), p.output.endpoint.clone()))
        .to_vec();
    let running = route(&flow, &addresses).await.unwrap();
    (running, a, b)
}

fn request() -> Message {
    Message::new(Envelope::request("/", ""), Bytes::new())
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

/// Sends a request into the Flow without waiting: the answer comes on the receiver.
async fn send(
    running: &super::Running,
    message: Message,
) -> tokio::sync::oneshot::Receiver<Message> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    running
        .calls
        .send(Call {
            message,
            reply,
            target: None,
        })
        .await
        .unwrap();
    answer
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_names_the_pod_that_did_not_answer() {
    let (running, mut a, mut b) = chain().await;
    let answer = send(&running, request()).await;
    let at_a = a.request().await;
    a.answer(&at_a).await;
    // `b` gets the request and never answers.
    let at_b = b.request().await;
    let started = tokio::time::Instant::now();
    let answer = answer.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (pod, kind, why) = error_of(&answer);
    assert_eq!((pod.as_str(), kind), ("b", ErrorKind::Timeout), "{why}");
    assert!(why.contains("pod `b` did not answer"), "{why}");
    assert_eq!(answer.envelope.request_id, at_b.envelope.request_id);
    assert_eq!(answer.envelope.after_error, AfterError::Abort);
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_after_the_request_ended_is_dropped() {
    let (running, mut a, mut b) = chain().await;
    let first = send(&running, request()).await;
    let at_a = a.request().await;
    a.answer(&at_a).await;
    let late = b.request().await;
    assert!(first.await.unwrap().envelope.is_error(), "timed out");
    // The late answer comes; the router drops it and goes on serving.
    b.answer(&late).await;
    let second = send(&running, request()).await;
    let at_a = a.request().await;
    a.answer(&at_a).await;
    let at_b = b.request().await;
    assert_ne!(at_b.envelope.request_id, late.envelope.request_id);
    b.answer(&at_b).await;
    let answer = second.await.unwrap();
    assert!(!answer.envelope.is_error(), "{:?}", answer.envelope.status);
    assert_eq!(answer.envelope.request_id, at_b.envelope.request_id);
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_second_request_with_the_id_of_one_in_flight_is_refused() {
    let (running, mut a, mut b) = chain().await;
    let message = request();
    let first = send(&running, message.clone()).await;
    let at_a = a.request().await;
    let duplicate = send(&running, message.clone()).await.await.unwrap();
    let (pod, kind, why) = error_of(&duplicate);
    assert_eq!((pod.as_str(), kind), ("gateway", ErrorKind::BadRequest));
    assert!(why.contains("already in the Flow"), "{why}");
    // The first goes on as if nothing happened.
    a.answer(&at_a).await;
    let at_b = b.request().await;
    b.answer(&at_b).await;
    let answer = first.await.unwrap();
    assert!(!answer.envelope.is_error(), "{:?}", answer.envelope.status);
    assert!(
        a.input.try_recv().is_none(),
        "the duplicate never reached a Pod"
    );
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_abort_answers_at_once_and_goes_no_further() {
    let (running, mut a, mut b) = chain().await;
    let started = tokio::time::Instant::now();
    let answer = send(&running, request()).await;
    let mut at_a = a.request().await;
    at_a.envelope
        .fail("a", ErrorKind::Panic, "the executor panicked");
    at_a.envelope.after_error = AfterError::Abort;
    a.answer(&at_a).await;
    let answer = answer.await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "no time passed");
    assert_eq!(error_of(&answer).0, "a");
    assert!(b.input.try_recv().is_none(), "`b` never got the request");
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn call_returns_the_answer_of_the_last_pod() {
    let (running, mut a, mut b) = chain().await;
    let calls = running.calls.clone();
    let client = tokio::spawn(async move { call(&calls, request()).await });
    let at_a = a.request().await;
    a.answer(&at_a).await;
    let at_b = b.request().await;
    b.answer(&at_b).await;
    let answer = client.await.unwrap().unwrap();
    // The gateway's route entries, in and out, around the Pods' own.
    assert_eq!(answer.envelope.routes.len(), 2);
    running.stop().await.unwrap();
}
