//! A running Pod's own loop: its control socket (STATUS gathers every Pea's;
//! DUMP, RELOAD and ACCEPT-LOSS go to every Pea) and its stop.

use super::status::{MemberAnswer, MemberStatus, PodStatus};
use super::*;
use crate::pea::PeaStatus;

/// The Pod's control socket and its ordered shutdown.
pub(super) struct PodTask {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) ctrl: Link,
    /// The Peas as they are now (a restarted child has a new control address).
    pub(super) roster: Roster,
    /// The Peas, the Head, the Tail and their sockets.
    pub(super) rest: Opened,
    pub(super) head_stats: Arc<HeadStats>,
    pub(super) tail_stats: Arc<TailStats>,
    pub(super) grace: Duration,
    /// How long DUMP, RELOAD and ACCEPT-LOSS wait for each Pea's answer.
    pub(super) ask_timeout: Duration,
    /// DUMP, RELOAD and ACCEPT-LOSS waiting for the Peas ([`MAX_FAN_OUTS`]).
    pub(super) fan_outs: Arc<tokio::sync::Semaphore>,
    /// Which members have connected to the Head, their names, and how many
    /// make the Pod healthy (every one; for open replicas, one; for open
    /// shards × replicas, one of each shard).
    pub(super) connected: (watch::Receiver<Vec<bool>>, Members, usize),
    pub(super) layout: Layout,
    /// Its Peas run elsewhere and join as they come.
    pub(super) open: bool,
    /// The task that owns the Peas for rolling updates; it hands them back.
    pub(super) replica_set: Option<(
        CancellationToken,
        tokio::task::JoinHandle<update::HandedBack>,
    )>,
    /// The component the Pod serves.
    pub(super) current: update::Current,
    /// Keeps the Pod on /metrics while it runs.
    pub(super) _metrics: Option<Arc<crate::metrics::PodSource>>,
}

impl PodTask {
    pub(super) async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                frames = self.ctrl.recv() => {
                    let Some(frames) = frames else { break };
                    if self.on_control(frames, started).await {
                        break;
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        tracing::info!(pod = %self.name, "stopping: the head takes no more work, in-flight requests finish");
        if let Some((stop, task)) = self.replica_set.take() {
            stop.cancel();
            match task.await {
                Ok(back) => {
                    self.rest.members.extend(back.members);
                    self.rest.checked = Some(back.checked);
                }
                Err(e) => tracing::error!(pod = %self.name, "the Pod's updater panicked: {e}"),
            }
        }
        let failures = std::mem::take(&mut self.rest).undo(self.grace).await;
        self.ctrl.close(self.grace).await;
        tracing::info!(pod = %self.name, "stopped");
        if failures.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(failures.join("; ")))
        }
    }

    /// Answers one control request; true when the Pod should stop.
    pub(super) async fn on_control(&self, frames: Vec<Bytes>, started: std::time::Instant) -> bool {
        let (prefix, request, command) = match control::read(frames, &Command::ALL) {
            Incoming::Gone => return false,
            Incoming::Refused(refusal) => {
                let _ = self.ctrl.send(refusal.answer(&self.name)).await;
                return false;
            }
            Incoming::Command {
                prefix,
                request,
                command,
            } => (prefix, request, command),
        };
        let prefix = prefix.as_slice();
        match command {
            Command::Status => {
                let status = self.status(started).await;
                let status = serde_json::to_value(status).expect("a STATUS serialises");
                self.reply(prefix, &request, Status::Success, status).await;
                false
            }
            Command::Terminate => {
                self.reply(
                    prefix,
                    &request,
                    Status::Success,
                    json!({"state": "terminating"}),
                )
                .await;
                true
            }
            Command::Dump | Command::Reload | Command::AcceptLoss => {
                // Off the control loop: STATUS and TERMINATE are answered
                // while the Peas dump, and one Pea that never answers (stopped,
                // or its control socket flooded) fails only this command.
                // A few at a time: each holds a connection to every Pea for
                // up to `ask_timeout`, so a flood of them against a silent
                // Pea must not pile up tasks and descriptors.
                let Ok(running) = self.fan_outs.clone().try_acquire_owned() else {
                    let status = Status::Error {
                        executor: self.name.clone(),
                        kind: ErrorKind::Unavailable,
                        message: format!(
                            "{MAX_FAN_OUTS} DUMP, RELOAD or ACCEPT-LOSS commands are already waiting for the Peas: send this one when they are done"
                        ),
                    };
                    self.reply(prefix, &request, status, json!({})).await;
                    return false;
                };
                let infos = self.infos();
                let (name, wait) = (self.name.clone(), self.ask_timeout);
                let (ctrl, prefix) = (self.ctrl.sender(), prefix.to_vec());
                tokio::spawn(async move {
                    let _running = running;
                    let body = fan_out(&name, &infos, command, wait).await;
                    let (status, body) = match body {
                        Ok(body) => (Status::Success, body),
                        Err((status, body)) => (status, body),
                    };
                    let _ = ctrl
                        .send(control::reply(prefix, &request, status, &body))
                        .await;
                });
                false
            }
        }
    }

    /// The Peas' names, roles and control addresses as they are now.
    pub(super) fn infos(&self) -> Vec<MemberInfo> {
        self.roster
            .read()
            .expect("roster")
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.info.clone())
            .collect()
    }

    /// The Pod's health: every Pea's STATUS, plus the Head's and Tail's counters.
    pub(super) async fn status(&self, started: std::time::Instant) -> PodStatus {
        let slots: Vec<Slot> = self
            .roster
            .read()
            .expect("roster")
            .iter()
            .filter(|s| !s.retired)
            .cloned()
            .collect();
        let asks = slots.iter().map(|s| async move {
            if !s.running {
                return Err("its process died; the Pod is restarting it".to_string());
            }
            control::ask_within::<PeaStatus>(&s.info.ctrl, Command::Status, Duration::from_secs(2))
                .await
                .map_err(|e| format!("{e:#}"))
        });
        let answers = futures::future::join_all(asks).await;
        let peas: Vec<MemberStatus> = answers
            .into_iter()
            .zip(&slots)
            .map(|(answer, slot)| MemberStatus {
                role: slot.info.role.clone(),
                ctrl: slot.info.ctrl.clone(),
                process_restarts: slot.restarts,
                answer: match answer {
                    Ok(mut status) => {
                        status.pea.clone_from(&slot.info.pea);
                        MemberAnswer::Status(Box::new(status))
                    }
                    Err(error) => MemberAnswer::Missing {
                        pea: slot.info.pea.clone(),
                        healthy: false,
                        error,
                    },
                },
            })
            .collect();
        let (registered, members, expected) = &self.connected;
        let connected: Vec<String> = {
            let names = members.read().expect("members");
            registered
                .borrow()
                .iter()
                .zip(names.iter())
                .filter(|(r, _)| **r)
                .map(|(_, n)| n.clone())
                .collect()
        };
        // An open Pod of shards × replicas needs one replica of each shard.
        let covered = match self.layout {
            Layout::ShardReplicas { .. } if self.open => connected
                .iter()
                .filter_map(|n| self.layout.shard_of_member(&self.name, 0, n))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            _ => connected.len(),
        };
        let healthy = peas.iter().all(MemberStatus::healthy) && covered >= *expected;
        let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        PodStatus {
            pea: self.name.clone(),
            pod: self.name.clone(),
            description: self.description.clone(),
            state: "ready".into(),
            healthy,
            requests: count(&self.head_stats.requests),
            dropped: count(&self.head_stats.dropped),
            failed: count(&self.tail_stats.timed_out),
            pending: count(&self.tail_stats.pending),
            completed: count(&self.tail_stats.completed),
            timed_out: count(&self.tail_stats.timed_out),
            late_parts: count(&self.tail_stats.late),
            uptime_ms: started.elapsed().as_millis() as u64,
            process_restarts: slots.iter().map(|s| s.restarts).sum(),
            peas,
            connected,
            expected: *expected,
            component: self.current.read().expect("current").clone(),
        }
    }

    pub(super) async fn reply(
        &self,
        prefix: &[Bytes],
        request: &Envelope,
        status: Status,
        body: Value,
    ) {
        let _ = self
            .ctrl
            .send(control::reply(prefix.to_vec(), request, status, &body))
            .await;
    }
}

/// The most DUMP, RELOAD and ACCEPT-LOSS commands a Pod keeps waiting for
/// its Peas; past it one is answered `unavailable` at once.
pub(super) const MAX_FAN_OUTS: usize = 4;

/// Sends `command` to every Pea, each answer awaited at most `wait`: the
/// answers in order (`null` for a Pea that failed), or an error status naming
/// each Pea that failed or did not answer, with the same body.
async fn fan_out(
    pod: &str,
    peas: &[MemberInfo],
    command: Command,
    wait: Duration,
) -> Result<Value, (Status, Value)> {
    let asks = peas.iter().map(|m| async move {
        control::ask_within::<Value>(&m.ctrl, command, wait)
            .await
            .map_err(|e| format!("{}: {e:#}", m.pea))
    });
    let results = futures::future::join_all(asks).await;
    let errors: Vec<&str> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    let status = (!errors.is_empty()).then(|| Status::Error {
        executor: pod.to_string(),
        kind: ErrorKind::Host,
        message: errors.join("; "),
    });
    let answers: Vec<Value> = results
        .into_iter()
        .map(|r| r.unwrap_or(Value::Null))
        .collect();
    let body = json!({"peas": answers});
    match status {
        None => Ok(body),
        Some(status) => Err((status, body)),
    }
}
