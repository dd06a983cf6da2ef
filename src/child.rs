//! Child processes of this one (a Pod's Peas with `--runtime-backend
//! process`, the daemon's Peas, Pods and Flows): started so that they die
//! with their parent, their ready line read, and stopped as TERMINATE asks
//! (a kill after the grace). The Pod restarts its children
//! (src/pod/supervise.rs); the daemon records how they ended
//! (src/daemon/child.rs); both start and stop them here.

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use crate::control;

/// If the parent process dies without stopping the child (SIGKILL), the kernel
/// kills the child too: no orphan Peas.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child's ready line: the first line of its stdout, one JSON object
/// (docs/protocol.md: its addresses, and a Pod's Peas). `None` when it closed
/// its stdout (it exited) or the line is not JSON: the caller says why with
/// its exit status and log.
///
/// # Errors
/// Reading its stdout failed.
pub async fn ready_line(child: &mut Child) -> std::io::Result<Option<Value>> {
    let Some(stdout) = child.stdout.take() else {
        return Ok(None);
    };
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?;
    Ok(line.and_then(|l| {
        serde_json::from_str::<Value>(&l)
            .ok()
            .filter(Value::is_object)
    }))
}

/// The control address in a ready line (empty when it has none: a Flow).
pub fn ctrl_of(ready: &Value) -> String {
    ready["ctrl"].as_str().unwrap_or_default().to_string()
}

/// How a stopped child ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    /// Still running after three times the grace: killed.
    Killed,
}

/// Stops `child` as TERMINATE does (it finishes its request, dumps and
/// closes): TERMINATE on its control socket `ctrl`, or SIGTERM when it has
/// none (a Flow stops on it), waiting `grace` for the answer and twice
/// `grace` for the exit; then SIGKILL.
pub async fn stop(mut child: Child, ctrl: &str, grace: Duration) -> Ended {
    if ctrl.is_empty() {
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    } else {
        let _ = tokio::time::timeout(grace, control::ask(ctrl, control::Command::Terminate)).await;
    }
    match tokio::time::timeout(grace * 2, child.wait()).await {
        Ok(Ok(status)) => Ended::Exited(status),
        _ => {
            let _ = child.kill().await;
            Ended::Killed
        }
    }
}
