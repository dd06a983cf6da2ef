//! Child processes of this one (a Pod's Peas with `--runtime-backend
//! process`, the daemon's Peas, Pods and Flows): started so that they die
//! with their parent, their ready line read, and stopped as TERMINATE asks
//! (a kill after the grace). The Pod restarts its children
//! (src/pod/supervise.rs); the daemon records how they ended
//! (src/daemon/child.rs); both start and stop them here.

use std::collections::VecDeque;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
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

/// A child's stderr copied to this process's stderr, line by line as it
/// comes (the child's log stays in the parent's, as when inherited), with
/// the last lines kept: what a child that did not start said, for the
/// error that reports it (a caller that does not see the parent's log, such
/// as a rolling update's client, reads it there).
pub struct StderrCopy {
    tail: Arc<Mutex<VecDeque<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StderrCopy {
    /// Lines kept.
    const LINES: usize = 16;
    /// The longest line copied: a longer one is cut to this, marked
    /// [`StderrCopy::CUT`], and the rest of it skipped, so a child never
    /// makes the parent hold more. Past what a guest can make a Pea write:
    /// its 4 KiB message and 4 KiB of fields, each byte escaped to at most
    /// six in JSON logs (`\u001b`), about 48 KiB.
    const MAX_LINE: usize = 64 << 10;
    /// What ends a line that was cut.
    const CUT: &[u8] = " … (cut: the line is longer than 64 KiB)\n".as_bytes();
    /// The most of a line [`StderrCopy::finish`] quotes (it goes into
    /// answers, such as a rolling update's).
    pub const MAX_QUOTE: usize = 1024;

    /// Starts copying `child`'s stderr (which must be piped) to this
    /// process's; `None` when it is not piped.
    pub fn start(child: &mut Child) -> Option<StderrCopy> {
        // Written from tokio's blocking threads: a slow or full stderr holds
        // the copy's task, never a runtime thread.
        Self::start_to(child, tokio::io::stderr())
    }

    /// [`StderrCopy::start`], copying to `to`.
    fn start_to(
        child: &mut Child,
        mut to: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
    ) -> Option<StderrCopy> {
        let stderr = child.stderr.take()?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let kept = tail.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut from = tokio::io::BufReader::new(stderr);
            let mut writable = true;
            let mut line = Vec::new();
            loop {
                line.clear();
                let read = (&mut from)
                    .take(Self::MAX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .await;
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let cut = line.len() > Self::MAX_LINE && !line.ends_with(b"\n");
                if cut {
                    line.truncate(Self::MAX_LINE);
                }
                // Kept as it would be quoted: 16 lines of a few KiB at most.
                let text = String::from_utf8_lossy(&line);
                let text = crate::wire::cut_reason(text.trim_end(), Self::MAX_QUOTE).into_owned();
                {
                    let mut tail = kept
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if tail.len() == Self::LINES {
                        tail.pop_front();
                    }
                    tail.push_back(text);
                }
                // A line goes out whole, in one write (tokio's stderr makes it
                // one locked write to this process's): nothing another Pea or
                // this process writes lands inside it, so no part of a line a
                // guest shaped starts a line of the Pod's log. A cut line
                // says so; a last line without its end is ended, so the next
                // line written is not glued onto it.
                if cut {
                    line.extend_from_slice(Self::CUT);
                } else if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                // A stderr that fails (closed by its reader) stops the
                // copying, not the reading: the child never waits on a full pipe.
                if writable {
                    writable = to.write_all(&line).await.is_ok() && to.flush().await.is_ok();
                }
                if cut && !skip_line(&mut from, &mut line).await {
                    break;
                }
            }
        });
        Some(StderrCopy { tail, task })
    }

    /// Waits (at most `within`) until the child and whatever shares its
    /// stderr have closed it, so that its last lines are copied; then what
    /// it said last: its `error: ` line (how `jina-wasm` reports a failure)
    /// when it has one, else its last line; at most [`Self::MAX_QUOTE`]
    /// bytes of it.
    pub async fn finish(mut self, within: Duration) -> Option<String> {
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.iter()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .or_else(|| {
                // A line `jina-wasm`'s error report quoted (`cli::report`)
                // goes without its mark, as the report's first line would.
                tail.iter()
                    .rev()
                    .find(|l| !l.is_empty())
                    .map(|l| l.strip_prefix("  | ").unwrap_or(l))
            })
            .map(str::to_owned)
    }
}

/// Reads past the rest of a line, `MAX_LINE` bytes at a time into
/// `scratch`; false when the input ended first.
async fn skip_line(
    from: &mut (impl tokio::io::AsyncBufRead + Unpin),
    scratch: &mut Vec<u8>,
) -> bool {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    loop {
        scratch.clear();
        match from
            .take(StderrCopy::MAX_LINE as u64)
            .read_until(b'\n', scratch)
            .await
        {
            Ok(n) if n > 0 => {
                if scratch.ends_with(b"\n") {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `script` said last ([`StderrCopy::finish`]), and the copy of its
    /// stderr.
    async fn said(script: &str) -> (Option<String>, String) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (to, mut copied) = tokio::io::duplex(1 << 20);
        let copy = StderrCopy::start_to(&mut child, to).expect("piped");
        child.wait().await.unwrap();
        let said = copy.finish(Duration::from_secs(10)).await;
        let mut copy = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut copied, &mut copy)
            .await
            .unwrap();
        (said, copy)
    }

    #[tokio::test]
    async fn a_childs_error_line_is_what_it_said() {
        let lines = "starting\nerror: pea `p` did not start: why\nbye\n";
        let (quote, copy) = said(&format!("printf '{lines}' >&2")).await;
        assert_eq!(quote.as_deref(), Some("pea `p` did not start: why"));
        assert_eq!(copy, lines);
        assert_eq!(said("true").await, (None, String::new()));
    }

    /// A child's last line that has no end (a process killed in the middle
    /// of a line, a `printf`) is ended in the copy: the parent's next line
    /// (or another child's) is not glued onto it, which with `--log-format
    /// json` makes neither line JSON.
    #[tokio::test]
    async fn an_unended_last_line_is_ended_in_the_copy() {
        let (quote, copy) = said("echo one >&2; printf 'last, unended' >&2").await;
        assert_eq!(quote.as_deref(), Some("last, unended"));
        assert_eq!(copy, "one\nlast, unended\n");
    }

    /// A line longer than [`StderrCopy::MAX_LINE`] is copied cut, in one
    /// write, and the rest of it skipped: no part of it starts a line of its
    /// own (where a guest that shaped it could forge the start of a line of
    /// the parent's log). It is quoted cut to [`StderrCopy::MAX_QUOTE`].
    #[tokio::test]
    async fn a_long_line_is_cut_and_its_rest_skipped() {
        let script = format!(
            "head -c {} /dev/zero | tr '\\0' x >&2; printf 'forged\\nnext\\n' >&2",
            3 * StderrCopy::MAX_LINE
        );
        let (quote, copy) = said(&script).await;
        let quoted = format!(
            "{}… ({} more bytes cut)",
            "x".repeat(StderrCopy::MAX_QUOTE),
            StderrCopy::MAX_LINE - StderrCopy::MAX_QUOTE
        );
        assert_eq!(quote.unwrap(), "next");
        let mut lines = copy.lines();
        let first = lines.next().unwrap();
        assert_eq!(
            first.as_bytes(),
            [
                "x".repeat(StderrCopy::MAX_LINE).as_bytes(),
                StderrCopy::CUT.strip_suffix(b"\n").unwrap()
            ]
            .concat()
        );
        assert_eq!(lines.collect::<Vec<_>>(), ["next"]);
        // Quoted cut, when it is the last line.
        let (quote, _) = said(&format!(
            "head -c {} /dev/zero | tr '\\0' x >&2",
            3 * StderrCopy::MAX_LINE
        ))
        .await;
        assert_eq!(quote.unwrap(), quoted);
    }

    /// Set in the process [`rerun`] starts: the test plays its scenario
    /// there, on that process's own stderr.
    const SCENARIO: &str = "JINA_WASM_TEST_STDERR_COPY_SCENARIO";

    /// This test binary started again for the test `name` (of this module)
    /// alone, to play its scenario with a stderr the caller holds.
    fn rerun(name: &str) -> std::process::Command {
        let module = module_path!().split_once("::").map_or("", |(_, m)| m);
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", &format!("{module}::{name}"), "--nocapture"])
            .env(SCENARIO, "1")
            .stdin(std::process::Stdio::null());
        command
    }

    /// The copy never blocks a runtime thread on this process's stderr: a
    /// Pod whose stderr is a full pipe (a log shipper that fell behind, a
    /// reader that stopped) goes on serving while its Peas' lines wait to be
    /// written. The scenario fills its stderr, copies one line of a child's,
    /// and then must still run a task on its one runtime thread.
    #[test]
    fn a_full_stderr_does_not_stall_the_runtime() {
        use std::io::{BufRead as _, Write as _};
        if std::env::var_os(SCENARIO).is_some() {
            // Fill this process's stderr, a pipe nobody reads: a blocking
            // write to it now waits.
            // SAFETY: fcntl and write on fd 2, with a buffer that outlives them.
            unsafe {
                let flags = libc::fcntl(2, libc::F_GETFL);
                assert!(flags >= 0);
                assert_eq!(libc::fcntl(2, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
                let chunk = [b'.'; 4096];
                while libc::write(2, chunk.as_ptr().cast(), chunk.len()) > 0 {}
                assert_eq!(
                    std::io::Error::last_os_error().kind(),
                    std::io::ErrorKind::WouldBlock
                );
                assert_eq!(libc::fcntl(2, libc::F_SETFL, flags), 0);
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut child = Command::new("sh")
                    .args(["-c", "echo 'a line to copy' >&2"])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let _copy = StderrCopy::start(&mut child).expect("piped");
                child.wait().await.unwrap();
                // The copy has its line to write: give it its turns.
                for _ in 0..100 {
                    tokio::task::yield_now().await;
                }
                tokio::spawn(async {}).await.unwrap();
            });
            let mut stdout = std::io::stdout();
            stdout.write_all(b"\nstill running\n").unwrap();
            stdout.flush().unwrap();
            // Not the runtime's drop: it would wait for a blocked write.
            std::process::exit(0);
        }
        let mut scenario = rerun("a_full_stderr_does_not_stall_the_runtime")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = scenario.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if line.is_ok_and(|l| l == "still running") {
                    let _ = tx.send(());
                }
            }
        });
        // A process that runs answers at once; one that hangs, never.
        let ran = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        let _ = scenario.kill();
        let _ = scenario.wait();
        reader.join().unwrap();
        assert!(
            ran,
            "the runtime stalled: the copy blocked its thread writing to a full stderr"
        );
    }
}
