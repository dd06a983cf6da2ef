//! Starting one member of a Pod: a Pea in this process or as a child process
//! (supervised), and the side workers that run `--uses-before` and
//! `--uses-after` in the Head and the Tail.

use super::*;

pub(super) async fn close_worker(worker: Worker) {
    let (tx, rx) = oneshot::channel();
    worker.submit(Job::Close { reply: tx }).await;
    let _ = rx.await;
}

/// Starts one member of a Pod (a Pea thread, or a supervised child process)
/// and puts it in the roster at `index`.
pub(super) async fn start_member(
    runtime: &Arc<Runtime>,
    config: &PodConfig,
    member: PeaConfig,
    roster: &Roster,
    index: usize,
    info: MemberInfo,
) -> anyhow::Result<Member> {
    let slot = |ctrl: String| Slot {
        info: MemberInfo {
            ctrl,
            ..info.clone()
        },
        restarts: 0,
        running: true,
        retired: false,
    };
    Ok(match config.backend {
        Backend::Thread => {
            let pea = crate::pea::start(runtime.clone(), member).await?;
            set_slot(roster, index, slot(pea.addresses.ctrl.clone()));
            Member::Thread(pea)
        }
        Backend::Process => {
            let (child, ctrl) = spawn_child(&member, &config.child_args).await?;
            // In the roster before its supervisor can look for it there.
            set_slot(roster, index, slot(ctrl));
            let stop = CancellationToken::new();
            let supervision = Supervision {
                config: member,
                extra: config.child_args.clone(),
                roster: roster.clone(),
                index,
                grace: config.pea.timeout_ctrl,
                timeout_ready: config.timeout_ready,
                stop: stop.clone(),
            };
            Member::Process {
                stop: stop.drop_guard(),
                supervisor: tokio::spawn(supervise(supervision, child)),
            }
        }
    })
}

/// Starts the executor of a Head (`--uses-before`) or Tail (`--uses-after`):
/// the Pod's limits, no workspace.
pub(super) async fn start_side_worker(
    runtime: &Arc<Runtime>,
    path: &std::path::Path,
    name: &str,
    pod: &PeaConfig,
) -> anyhow::Result<Worker> {
    let spec = ExecutorSpec {
        name: name.to_string(),
        config: Value::Null,
        sandbox: Sandbox {
            workspace: None,
            volumes: Vec::new(),
            read_only: true,
            ..pod.executor.sandbox.clone()
        },
    };
    Worker::start(runtime.clone(), path.to_path_buf(), None, spec).await
}

/// Serves `handle` calls to a Head's or Tail's executor from a channel.
pub(super) fn serve(worker: Worker, opened: &mut Opened) -> Reducer {
    let (tx, mut rx) = mpsc::channel::<(
        String,
        Bytes,
        String,
        oneshot::Sender<Result<Bytes, crate::pea::Failure>>,
    )>(1);
    let jobs = worker.clone();
    opened.workers.push(worker);
    // This task makes the calls itself (`Worker::run`).
    tokio::spawn(async move {
        while let Some((endpoint, body, parameters, reply)) = rx.recv().await {
            jobs.submit(Job::Handle {
                endpoint,
                body,
                parameters,
                timeout: None,
                reply,
            })
            .await;
        }
    });
    tx
}
