//! Where guest calls run (`executor::offload`): a call is a future polled by
//! the executor's task, and one that runs long moves to a thread of its own,
//! so guests never hold the process's reactor (its two tokio workers) for
//! long, whatever they do and however many executors share the process.

use std::time::{Duration, Instant};

use crate::pea::{error_kind, request};
use crate::pod::{client, pod};
use crate::util::{control, text_doc};

/// Two CPU-bound calls in one Pod process (THREAD backend), as many as it
/// has tokio workers, with `--background-after 0` (no demotion, so the
/// epoch callback has nothing of its own to wake up for before the
/// deadline): the Pod's and its Peas' control sockets still answer at once,
/// and each call ends at its own time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_calls_leave_the_reactor_to_control_requests() {
    let p = pod(
        "misbehave",
        &[
            "--name",
            "spin",
            "--parallel",
            "2",
            "--timeout-request",
            "4s",
            "--background-after",
            "0",
        ],
    );
    let mut client = client(&p).await;
    client.window = 2;
    let calls = tokio::spawn(async move {
        let requests = (0..2).map(|i| request("/loop", &[text_doc(&i.to_string(), "x")]));
        let mut replies = Vec::new();
        client
            .stream(requests, |reply| {
                replies.push(reply);
                Ok(())
            })
            .await
            .unwrap();
        client.close().await;
        replies
    });
    let mut ctrls = vec![p.addr("ctrl")];
    for pea in p.ready["peas"].as_array().unwrap() {
        ctrls.push(pea["ctrl"].as_str().unwrap().to_string());
    }
    // The calls have started: every reply below is asked while both run
    // (each for 4 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asking = Instant::now();
    for round in 0..3 {
        for (i, ctrl) in ctrls.iter().enumerate() {
            let asked = Instant::now();
            let status = control(ctrl, "STATUS").await.unwrap();
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "round {round}: STATUS at {ctrl} took {:?} while guests computed: {status}",
                asked.elapsed()
            );
            if i > 0 {
                assert_eq!(status["state"], "busy", "round {round}: {status}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(asking.elapsed() < Duration::from_secs(3));
    let replies = calls.await.unwrap();
    for reply in &replies {
        let (executor, kind) = error_kind(reply);
        assert!(executor.starts_with("spin/replica-"), "{executor}");
        assert_eq!(kind, "timeout");
        assert!(
            format!("{:?}", reply.envelope.status).contains("ran past its time limit of 4s"),
            "{:?}",
            reply.envelope.status
        );
    }
    control(&p.addr("ctrl"), "TERMINATE").await.unwrap();
}

/// A workspace of 90,000 files (under the default `--max-files`), shared by
/// a Pod's two replicas: the walks that measure it around every call (the
/// disk quota) take a tenth of a second or more each, and run where they
/// cannot hold the reactor, so control requests are still answered at once
/// while both replicas take requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_a_large_workspace_leaves_the_reactor_to_control_requests() {
    let ws = tempfile::tempdir().unwrap();
    let many = ws.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..90_000 {
        std::fs::File::create(many.join(i.to_string())).unwrap();
    }
    let p = pod(
        "misbehave",
        &[
            "--name",
            "walk",
            "--parallel",
            "2",
            "--workspace",
            ws.path().to_str().unwrap(),
        ],
    );
    let mut client = client(&p).await;
    client.window = 4;
    let calls = tokio::spawn(async move {
        let requests = (0..24).map(|i| request("/echo", &[text_doc(&i.to_string(), "x")]));
        let mut served = 0;
        client
            .stream(requests, |reply| {
                assert_eq!(crate::pod::documents(&reply).len(), 1);
                served += 1;
                Ok(())
            })
            .await
            .unwrap();
        client.close().await;
        served
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    while !calls.is_finished() {
        let asked = Instant::now();
        control(&p.addr("ctrl"), "STATUS").await.unwrap();
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.await.unwrap(), 24);
    // A walk takes 0.2-0.5 s here: a Pea whose loop waited for one (its
    // calls are polled by that loop) answered in 0.45-1 s; 7 ms measured now.
    assert!(
        slowest < Duration::from_millis(300),
        "STATUS took {slowest:?} while the replicas walked their workspace"
    );
    control(&p.addr("ctrl"), "TERMINATE").await.unwrap();
}

/// TERMINATE while a call that moved to its own thread sleeps (the guest
/// sleeps 5 ms at a time, so it moves after its first): the Pea stops
/// after `--timeout-ctrl` without the call, and the process's runtime
/// shutting down under the sleep is no panic on the call's thread.
#[test]
fn terminate_while_a_moved_call_sleeps_prints_no_panic() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4 {
        let mut pea = crate::pea::PeaProcess::start(
            "misbehave",
            &[
                "--name",
                "sleeper",
                "--timeout-request",
                "20s",
                "--timeout-ctrl",
                "300ms",
            ],
        );
        let ctrl = pea.addr("ctrl");
        rt.block_on(async {
            let mut client = crate::pea::client(&pea).await;
            client.timeout = Duration::from_secs(2);
            let call = tokio::spawn(async move {
                let _ = client
                    .call(request("/sleep-loop", &[text_doc("s", "x")]))
                    .await;
            });
            crate::pea::status_until(&ctrl, "the call started", |s| s["state"] == "busy").await;
            tokio::time::sleep(Duration::from_millis(100 + 50 * round)).await;
            control(&ctrl, "TERMINATE").await.unwrap();
            call.abort();
        });
        let status = pea.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: {status:?}"
        );
        let log = pea.log();
        assert!(!log.contains("panicked"), "round {round}:\n{log}");
    }
}
