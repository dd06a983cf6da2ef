//! What the crate's unit tests share (compiled for tests only).

/// The process's peak resident memory (`VmHWM`) in bytes, reset to what it
/// holds now first when `reset`. The peak is the whole test process's:
/// other tests run beside the one that reads it, so a bound on it needs
/// room for them.
pub(crate) fn peak_rss(reset: bool) -> u64 {
    if reset {
        // `5`: reset the peak (Linux 4.0 and later).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A FIFO named `name` in `dir` (made with `mkfifo`): a path that a plain
/// open or read waits on for a writer, forever.
pub(crate) fn fifo(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let fifo = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    fifo
}

/// `future`, given 10 s; `None` if it is still waiting then, after a
/// writer opened and closed `fifo` so that a read blocked on it ends (a
/// runtime waits for its blocking threads when dropped).
pub(crate) async fn within_10s<T>(
    fifo: &std::path::Path,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    use std::os::unix::fs::OpenOptionsExt;
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), future).await;
    if done.is_err() {
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo);
        drop(writer);
    }
    done.ok()
}

/// A log written to memory, for a test's tracing subscriber
/// (`.with_writer(move || sink.clone())`): every clone writes to the same
/// bytes.
#[derive(Clone, Default)]
pub(crate) struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogSink {
    /// What was written, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
