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
