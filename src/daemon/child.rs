//! A hosted object's process: `jina-wasm pea|pod` started as a child of the
//! daemon, its stderr copied into a capped log file (rotated once), its ready
//! line awaited, and a task that supervises it until it is stopped or exits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::objects::{Live, State};

/// Resident memory of a process, from /proc (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts `jina-wasm <args>` with stderr appended to `log`, waits for its
/// ready line, and leaves a task supervising it until `stop` is cancelled or
/// it exits.
///
/// # Errors
/// The process cannot start, or exits or stays silent before it is ready: the
/// reason with the end of its log.
pub async fn spawn(
    exe: &Path,
    args: &[String],
    log: &Path,
    timeout_ready: Duration,
    live: Arc<Mutex<Live>>,
    stop: CancellationToken,
    max_log: u64,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        // Nothing of the daemon's environment: a Flow file's `${{ ENV.X }}`
        // must not read it (flows.rs refuses them; this makes sure).
        .env_clear()
        .env("JINA_WASM_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Through the daemon, which caps and rotates it (`copy_log`).
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    crate::child::die_with_parent(&mut command);
    let mut child = command.spawn().context("cannot start a process")?;
    let mut copier = tokio::spawn(copy_log(
        child.stderr.take().expect("piped"),
        log.to_path_buf(),
        max_log,
    ));
    live.lock().expect("live").pid = child.id();
    let ready =
        match tokio::time::timeout(timeout_ready, crate::child::ready_line(&mut child)).await {
            Ok(ready) => ready.ok().flatten(),
            Err(_) => {
                let _ = child.kill().await;
                settle(&mut copier).await;
                anyhow::bail!(
                    "not ready within {timeout_ready:?} (timeout_ready); its log ends with:\n{}",
                    log_tail(log, 20)
                );
            }
        };
    let Some(ready) = ready else {
        let status = child.wait().await?;
        settle(&mut copier).await;
        anyhow::bail!(
            "its process exited with {status} before it was ready; its log ends with:\n{}",
            log_tail(log, 20)
        );
    };
    let ctrl = crate::child::ctrl_of(&ready);
    {
        let mut live = live.lock().expect("live");
        live.ready = ready;
        live.state = State::Running;
    }
    Ok(tokio::spawn(supervise(child, ctrl, stop, live)))
}

/// Waits for the child to exit or for `stop`; then stops it as TERMINATE
/// does (a Flow, which has no control socket, on SIGTERM), SIGKILL if it
/// takes too long. Records how it ended.
async fn supervise(
    mut child: tokio::process::Child,
    ctrl: String,
    stop: CancellationToken,
    live: Arc<Mutex<Live>>,
) {
    const GRACE: Duration = Duration::from_secs(5);
    let exit = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown: {e}"),
        },
        () = stop.cancelled() => match crate::child::stop(child, &ctrl, GRACE).await {
            crate::child::Ended::Exited(status) => status.to_string(),
            crate::child::Ended::Killed => format!("killed: still running {:?} after it was asked to stop", GRACE * 3),
        },
    };
    let mut live = live.lock().expect("live");
    live.state = State::Exited;
    live.exit = Some(exit);
}

/// Waits (briefly) for the log copy to catch up: what a process wrote before
/// failing is then in its log.
async fn settle(copier: &mut tokio::task::JoinHandle<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), copier).await;
}

/// Where a log's previous part goes when it is rotated.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

/// Copies a child's stderr into `log`, appending; past `cap` bytes the log
/// becomes `<log>.1` (replacing an older one) and a new one starts. Ends when
/// the child (and every process sharing its stderr) has closed it.
async fn copy_log(mut from: impl tokio::io::AsyncRead + Unpin, log: PathBuf, cap: u64) {
    use std::io::Write as _;
    use tokio::io::AsyncReadExt as _;
    let open = |truncate: bool| {
        let mut options = std::fs::OpenOptions::new();
        options.create(true);
        if truncate {
            options.write(true).truncate(true)
        } else {
            options.append(true)
        };
        options.open(&log)
    };
    let mut file = match open(false) {
        Ok(file) => file,
        Err(e) => {
            tracing::error!(log = %log.display(), "cannot open the log: {e}; the object's output is discarded");
            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
            return;
        }
    };
    let mut written = file.metadata().map_or(0, |m| m.len());
    // Never more than the cap at once, so one part never passes it.
    let mut buffer = vec![0u8; cap.clamp(1, 64 << 10) as usize];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if written > 0 && written + n as u64 > cap {
            let _ = std::fs::rename(&log, rotated(&log));
            match open(true) {
                Ok(new) => file = new,
                Err(e) => tracing::error!(log = %log.display(), "cannot rotate the log: {e}"),
            }
            written = 0;
        }
        if file.write_all(&buffer[..n]).is_ok() {
            written += n as u64;
        }
    }
}

/// The last `n` lines of a log file (read from its last 64 KiB at most).
pub fn log_tail(log: &Path, n: usize) -> String {
    use std::io::{Read as _, Seek as _};
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 << 10)));
        let _ = file.take(64 << 10).read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_rotate_past_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("o.log");
        let lines: String = (0..100).map(|i| format!("line {i:04}\n")).collect();
        copy_log(lines.as_bytes(), log.clone(), 300).await;
        let (current, previous) = (
            std::fs::read_to_string(&log).unwrap(),
            std::fs::read_to_string(rotated(&log)).unwrap(),
        );
        assert!(
            current.len() <= 300 && previous.len() <= 300,
            "{} {}",
            current.len(),
            previous.len()
        );
        assert!(current.ends_with("line 0099\n"), "{current}");
        assert!(log_tail(&log, 1).contains("line 0099"));
        // A second run appends to what is there, rotating again.
        copy_log(&b"more\n"[..], log.clone(), 300).await;
        assert!(std::fs::read_to_string(&log).unwrap().ends_with("more\n"));
    }
}
