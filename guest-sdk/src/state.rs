//! Crash-safe files for stateful executors.
//!
//! - [`write_atomic`]: replace a file so a crash leaves the old or the new
//!   version, never a mix (snapshots).
//! - [`read_if_exists`]: a file's bytes, `None` when it does not exist.
//! - [`AppendLog`]: an append-only log of checksummed records; [`AppendLog::replay`]
//!   returns the records up to the first torn or corrupt one (write-ahead logs).
//!
//! Errors from writes say whether the workspace refused them
//! ([`ErrorKind::ReadOnly`]) or failed ([`ErrorKind::Io`]), and name the path.
//!
//! [`ErrorKind::ReadOnly`]: crate::ErrorKind::ReadOnly
//! [`ErrorKind::Io`]: crate::ErrorKind::Io

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// An error from writing `path`: a refusal (read-only filesystem, permission
/// denied) is [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly), anything else
/// [`ErrorKind::Io`](crate::ErrorKind::Io).
pub fn write_error(path: &Path, err: io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
            Error::read_only(format!(
                "cannot write {}: the workspace is read-only ({err})",
                path.display()
            ))
        }
        _ => Error::io(format!("cannot write {}: {err}", path.display())),
    }
}

fn read_error(path: &Path, err: io::Error) -> Error {
    Error::io(format!("cannot read {}: {err}", path.display()))
}

/// Replace `path` with `bytes` atomically and durably.
///
/// Writes `<path>.tmp-<n>` next to it, fsyncs it, renames it over `path`, then
/// fsyncs the directory (skipped where directories cannot be synced). A crash
/// at any point leaves either the old or the new content at `path`; at worst a
/// stale `.tmp-*` file, which the next call for `path` removes first. A write
/// that fails (a full disk) leaves its temporary file too, until that next
/// call: the host looks at the disk after a failed call to name the cause
/// ("no space left on device"), which a guest cannot see itself (WASI reports
/// a failed file write as a generic I/O error).
///
/// # Errors
///
/// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly) when the workspace refuses
/// the write, [`ErrorKind::Io`](crate::ErrorKind::Io) otherwise; both name the path.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    remove_stale_temps(path);

    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        return Err(write_error(path, err));
    }
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(path, err));
    }
    sync_dir(path);
    Ok(())
}

/// Removes `<path>.tmp-*` files left by a crash or a failed write.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_owned();
    prefix.push(".tmp-");
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Make a rename in `path`'s directory durable, where the platform allows it.
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Not every filesystem (nor every WASI host) can open or sync a directory;
    // the rename itself already happened, so this is best effort.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// The content of `path`, or `None` when it does not exist.
///
/// # Errors
///
/// [`ErrorKind::Io`](crate::ErrorKind::Io) for any other failure, naming the path.
pub fn read_if_exists(path: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
    let path = path.as_ref();
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(read_error(path, err)),
    }
}

/// An append-only log of records, for write-ahead logging.
///
/// Each record is `len: u32 LE | crc32(payload): u32 LE | payload` (CRC-32/ISO-HDLC,
/// the zlib one). A crash mid-append leaves a torn tail, which
/// [`replay`](AppendLog::replay) ignores and [`open`](AppendLog::open) cuts off.
///
/// ```no_run
/// use jina_guest_sdk::state::AppendLog;
/// # fn main() -> jina_guest_sdk::Result<()> {
/// for record in AppendLog::replay("/workspace/ops.log")? { /* apply it */ }
/// let mut log = AppendLog::open("/workspace/ops.log")?;
/// log.append(b"op")?;
/// log.sync()?; // durable from here
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AppendLog {
    file: File,
    path: PathBuf,
    /// Bytes in the log (valid records only).
    size: u64,
    /// A write or sync failed (a full disk): the host closes a file's write
    /// stream after a failed write, so the handle is opened again (cutting
    /// any torn record) before the next append. Writes then work again once
    /// the disk has space, without restarting the executor.
    broken: bool,
}

/// Bytes before each payload: length and checksum.
const RECORD_HEADER: usize = 8;

impl AppendLog {
    /// Open (or create) the log at `path` for appending. A torn or corrupt tail
    /// left by a crash is truncated first, so new records follow the last good one.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        // The log is read through its own read-only handle and a torn tail is
        // cut by rewriting the valid prefix atomically, not by seeking and
        // `set_len` on the append handle: under WASI a file opened for
        // appending reads from its end, so that cut never happened and every
        // record appended after a crash hid behind the torn bytes at replay
        // (faults::records_after_a_torn_log_tail_are_replayed).
        let bytes = read_if_exists(&path)?.unwrap_or_default();
        let (_, valid) = scan(&bytes);
        if valid < bytes.len() {
            write_atomic(&path, &bytes[..valid])?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|err| write_error(&path, err))?;
        Ok(AppendLog {
            file,
            path,
            size: valid as u64,
            broken: false,
        })
    }

    /// Append one record (buffered by the OS: call [`sync`](Self::sync) to make
    /// it durable). Records longer than `u32::MAX` bytes are refused.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        self.append_all([payload])
    }

    /// Append several records with one write call: a guest's every file
    /// operation crosses into the host, so one write for a request's changes
    /// is much cheaper than one per change. A crash can tear the batch
    /// anywhere; replay keeps the records before the tear.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    pub fn append_all<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        let mut records = Vec::new();
        for payload in payloads {
            let len = u32::try_from(payload.len()).map_err(|_| {
                Error::internal(format!(
                    "log record of {} bytes is too large",
                    payload.len()
                ))
            })?;
            records.reserve(RECORD_HEADER + payload.len());
            records.extend_from_slice(&len.to_le_bytes());
            records.extend_from_slice(&crc32(payload).to_le_bytes());
            records.extend_from_slice(payload);
        }
        self.repair()?;
        if let Err(err) = self.file.write_all(&records) {
            self.broken = true;
            return Err(write_error(&self.path, err));
        }
        self.size += records.len() as u64;
        Ok(())
    }

    /// After a failed write or sync: open the log again (see `broken`) and
    /// cut it back to the last record that was appended whole, so what the
    /// failed call wrote in part (it returned an error: not acknowledged)
    /// does not hide the records that follow from replay.
    fn repair(&mut self) -> Result<()> {
        if !self.broken {
            return Ok(());
        }
        let reopened = (|| {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)?;
            file.set_len(self.size)?;
            file.sync_all()?;
            Ok(file)
        })();
        self.file = reopened.map_err(|err| write_error(&self.path, err))?;
        self.broken = false;
        Ok(())
    }

    /// Bytes in the log: what [`replay`](Self::replay) would read. Lets an
    /// executor decide when to fold the log into a snapshot.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flush appended records to stable storage.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn sync(&mut self) -> Result<()> {
        self.repair()?;
        self.file.sync_all().map_err(|err| {
            self.broken = true;
            write_error(&self.path, err)
        })
    }

    /// Drop every record (after a snapshot made them redundant), durably.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`].
    pub fn truncate(&mut self) -> Result<()> {
        self.repair()?;
        (|| {
            self.file.set_len(0)?;
            self.file.sync_all()
        })()
        .map_err(|err| write_error(&self.path, err))?;
        self.size = 0;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records of the log at `path`, oldest first, up to the first torn or
    /// corrupt record. A missing log has no records.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when the file exists but cannot be read.
    pub fn replay(path: impl AsRef<Path>) -> Result<Vec<Vec<u8>>> {
        Ok(match read_if_exists(path)? {
            Some(bytes) => scan(&bytes).0,
            None => Vec::new(),
        })
    }
}

/// The valid records of `bytes` and the length of the valid prefix.
fn scan(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let start = at + RECORD_HEADER;
        let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            break; // torn: the payload did not make it
        };
        if crc32(payload) != crc {
            break; // corrupt
        }
        records.push(payload.to_vec());
        at = start + len;
    }
    (records, at)
}

/// CRC-32/ISO-HDLC (zlib's `crc32`, polynomial `0xEDB88320` reflected).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// What [`Journal::load`] finds: the snapshot's bytes (`None` before the
/// first) and the log's records after it.
pub type Loaded = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// The durability policy of an indexer (docs/stateful.md): the whole state
/// in a snapshot written by `dump`, and the changes since then in an
/// [`AppendLog`] beside it.
///
/// - [`record`](Self::record) takes a request's changes, already encoded.
///   Durable ones are appended (one write) and fsynced before it returns,
///   unless the host runs in durable mode (`RuntimeArgs::durable`): then `dump`,
///   which the host calls before answering, makes one fsync for every request
///   it commits. Other changes only mark the snapshot stale.
/// - [`dump`](Self::dump) syncs the log, then writes a new snapshot and empties
///   the log when a change is only in memory, when the log has grown past
///   `compact_log_bytes`, or when the executor asks (`force`). A crash between
///   the two replays changes the snapshot already holds: records must be
///   idempotent (an upsert, a delete).
/// - [`load`](Self::load) gives `init` the snapshot and the log's records.
///
/// The log is opened at the first durable change or dump, so a read-only
/// workspace only fails when something must be written.
#[derive(Debug)]
pub struct Journal {
    snapshot_path: PathBuf,
    log_path: PathBuf,
    log: Option<AppendLog>,
    /// Log changes durably unless a request says otherwise.
    pub durable: bool,
    /// The host's durable mode: `dump` (before every answer) syncs the log,
    /// so a change does not sync it itself.
    sync_in_dump: bool,
    /// Some change since the last snapshot is only in memory (not logged).
    unlogged: bool,
    /// Appended to the log but not yet synced.
    unsynced: bool,
    /// `dump` rewrites the snapshot once the log is larger than this.
    compact_log_bytes: u64,
}

impl Journal {
    /// A journal of `snapshot_file` and `log_file` in `workspace`, configured
    /// from `with:`: `durable` (default: the host's durable mode,
    /// `config.runtime_args().durable`) and `compact_log_bytes` (default `default_compact`).
    ///
    /// # Errors
    ///
    /// A `with:` value of the wrong type ([`ErrorKind::BadConfig`](crate::ErrorKind::BadConfig)).
    pub fn new(
        workspace: &Path,
        snapshot_file: &str,
        log_file: &str,
        config: &crate::Config,
        default_compact: u64,
    ) -> Result<Self> {
        let host_durable = config.runtime_args().durable;
        Ok(Journal {
            snapshot_path: workspace.join(snapshot_file),
            log_path: workspace.join(log_file),
            log: None,
            durable: config.get_or("durable", host_durable)?,
            sync_in_dump: host_durable,
            unlogged: false,
            unsynced: false,
            compact_log_bytes: config.get_or("compact_log_bytes", default_compact)?,
        })
    }

    /// The snapshot's path, for messages.
    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    /// The log's path, for messages.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The snapshot's bytes (`None` when there is none yet) and the log's
    /// records after it, oldest first, up to the first torn one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when a file exists but cannot be read.
    pub fn load(&self) -> Result<Loaded> {
        Ok((
            read_if_exists(&self.snapshot_path)?,
            AppendLog::replay(&self.log_path)?,
        ))
    }

    /// Take one request's changes: appended (and synced, see the type's docs)
    /// when `durable`, else kept for the next snapshot. Call it before applying
    /// them, so a failed write changes nothing.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`]: the change is then neither logged nor to be applied.
    pub fn record(&mut self, records: &[Vec<u8>], durable: bool) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if !durable {
            self.unlogged = true;
            return Ok(());
        }
        let log = match &mut self.log {
            Some(log) => log,
            None => self.log.insert(AppendLog::open(&self.log_path)?),
        };
        log.append_all(records.iter().map(Vec::as_slice))?;
        if self.sync_in_dump {
            self.unsynced = true;
        } else {
            log.sync()?;
        }
        Ok(())
    }

    /// Whether [`dump`](Self::dump) would write a snapshot without `force`.
    pub fn snapshot_due(&self) -> bool {
        self.unlogged
            || self
                .log
                .as_ref()
                .is_some_and(|log| log.size() > self.compact_log_bytes)
    }

    /// Make every recorded change durable: sync the log, and when a snapshot
    /// is due (or `force`), write `snapshot()` atomically and empty the log.
    /// Returns whether a snapshot was written.
    ///
    /// # Errors
    ///
    /// As [`write_atomic`], naming the file.
    pub fn dump(&mut self, force: bool, snapshot: impl FnOnce() -> Vec<u8>) -> Result<bool> {
        if self.unsynced
            && let Some(log) = &mut self.log
        {
            log.sync()?;
            self.unsynced = false;
        }
        if !force && !self.snapshot_due() {
            return Ok(false);
        }
        write_atomic(&self.snapshot_path, &snapshot())?;
        // Everything logged is in the snapshot now.
        if self.log.is_none() && self.log_path.exists() {
            self.log = Some(AppendLog::open(&self.log_path)?);
        }
        if let Some(log) = &mut self.log {
            log.truncate()?;
        }
        self.unlogged = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jina-guest-sdk-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_tmp() {
        let dir = temp_dir("atomic");
        let path = dir.join("snap");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        write_atomic(&path, b"one").unwrap();
        // A temporary left by a crash or a failed write is removed by the next.
        fs::write(dir.join("snap.tmp-99"), b"stale").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some(&b"two"[..]));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["snap"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn write_atomic_into_a_missing_dir_names_the_path() {
        let dir = temp_dir("missing");
        let err = write_atomic(dir.join("nope/snap"), b"x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Io);
        assert!(err.message.contains("nope/snap"), "{}", err.message);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn log_appends_replays_and_truncates() {
        let dir = temp_dir("log");
        let path = dir.join("ops.log");
        assert!(AppendLog::replay(&path).unwrap().is_empty());
        let mut log = AppendLog::open(&path).unwrap();
        log.append(b"first").unwrap();
        log.append(b"").unwrap();
        log.append_all([&[7u8; 1000][..]]).unwrap();
        log.sync().unwrap();
        assert_eq!(log.size(), 3 * 8 + 5 + 1000);
        assert_eq!(AppendLog::open(&path).unwrap().size(), log.size());
        let records = AppendLog::replay(&path).unwrap();
        assert_eq!(
            records,
            vec![b"first".to_vec(), Vec::new(), vec![7u8; 1000]]
        );
        log.truncate().unwrap();
        assert_eq!(log.size(), 0);
        assert!(AppendLog::replay(&path).unwrap().is_empty());
        log.append(b"after").unwrap();
        assert_eq!(AppendLog::replay(&path).unwrap(), vec![b"after".to_vec()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn replay_stops_at_a_torn_or_corrupt_record_and_open_repairs() {
        let dir = temp_dir("torn");
        let path = dir.join("ops.log");
        let mut log = AppendLog::open(&path).unwrap();
        log.append(b"good").unwrap();
        log.append(b"torn record").unwrap();
        drop(log);
        let full = fs::read(&path).unwrap();

        // Torn: the last record lost its final bytes.
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        assert_eq!(AppendLog::replay(&path).unwrap(), vec![b"good".to_vec()]);

        // Torn inside the header.
        fs::write(&path, &full[..12 + 5]).unwrap();
        assert_eq!(AppendLog::replay(&path).unwrap(), vec![b"good".to_vec()]);

        // Corrupt: a flipped payload bit.
        let mut corrupt = full.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        fs::write(&path, &corrupt).unwrap();
        assert_eq!(AppendLog::replay(&path).unwrap(), vec![b"good".to_vec()]);

        // Reopening cuts the bad tail, so new records are not hidden behind it.
        let mut log = AppendLog::open(&path).unwrap();
        log.append(b"new").unwrap();
        assert_eq!(
            AppendLog::replay(&path).unwrap(),
            vec![b"good".to_vec(), b"new".to_vec()]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn journal_logs_durable_changes_and_snapshots_the_rest() {
        let dir = temp_dir("journal");
        let config = crate::Config::parse(r#"{"compact_log_bytes": 20}"#).unwrap();
        let mut j = Journal::new(&dir, "snap", "log", &config, 0).unwrap();
        assert_eq!(j.load().unwrap(), (None, vec![]));
        j.record(&[b"a".to_vec()], true).unwrap();
        assert_eq!(
            j.load().unwrap().1,
            vec![b"a".to_vec()],
            "durable: logged at once"
        );
        assert!(
            !j.dump(false, || unreachable!()).unwrap(),
            "a small log is not folded"
        );
        j.record(&[b"b".to_vec()], false).unwrap();
        assert!(
            j.dump(false, || b"ab".to_vec()).unwrap(),
            "an unlogged change forces a snapshot"
        );
        assert_eq!(j.load().unwrap(), (Some(b"ab".to_vec()), vec![]));
        j.record(&[vec![1; 30]], true).unwrap();
        assert!(j.snapshot_due(), "past compact_log_bytes");
        assert!(j.dump(false, || b"abc".to_vec()).unwrap());
        assert!(j.dump(true, || b"forced".to_vec()).unwrap());
        assert_eq!(j.load().unwrap(), (Some(b"forced".to_vec()), vec![]));
        fs::remove_dir_all(dir).unwrap();
    }
}
