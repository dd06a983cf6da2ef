//! The record of unsaved writes, kept beside the workspace so a killed
//! process's loss is reported by the next one (docs/stateful.md, "When state
//! is lost").
//!
//! In interval and `never` modes the writes acknowledged since the last good
//! dump live only in the instance. A trap is seen by the Pea and reported, but
//! `kill -9`, the kernel's OOM killer or a host crash take the Pea with them.
//! So when the first write after a dump is acknowledged, the Pea writes a
//! record and removes it after the next good dump. A shard keeps it beside its
//! identity, in its Pod's directory, which its guest cannot see
//! (`<workspace>/<pod>/shard-<i>.unsaved.json`); any other Pea inside its
//! workspace (`.jina-wasm-unsaved.<pea>.json`), where its guest could delete
//! it, hiding only a loss of its own state, which it could cause anyway. A Pea that starts and finds the file knows the previous process
//! ended holding writes no dump has: it reports `state_lost` and refuses
//! writes until ACCEPT-LOSS or RELOAD, as after a trap.
//!
//! The record costs one synced write when the first unsaved write is
//! acknowledged and then at most one a second while writes keep coming (so
//! its count is a lower bound, said as "at least"), and one removal per dump.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use super::{StateLost, Unsaved};
use crate::host_file;

/// A record is a few lines of JSON; a larger file is not one (and is read as a loss).
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// How often the record's count is brought up to date while writes come in.
const REFRESH: Duration = Duration::from_secs(1);

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The writes acknowledged since the last good dump, as of `updated_ms`
    /// (numbered by the process that wrote the record).
    #[serde(flatten)]
    window: Unsaved,
    /// That process's `dumped_through`.
    dumped_through: u64,
    /// The process that wrote it.
    pid: u32,
    /// When it was last written (milliseconds since the Unix epoch).
    updated_ms: u64,
    /// A loss already reported (a trap) and not yet accepted.
    #[serde(default)]
    lost: Option<StateLost>,
}

/// The unsaved-writes record of one workspace.
pub(super) struct Ledger {
    dir: Dir,
    name: String,
    shown: PathBuf,
    /// Whether the file exists (as far as this process knows).
    present: bool,
    written_at: Option<Instant>,
}

impl Ledger {
    /// The record beside `workspace`; `None` (with a warning) when the
    /// directory above it cannot be opened.
    pub(super) fn open(pea: &str, workspace: &Path) -> Option<Ledger> {
        let base = workspace
            .file_name()
            .map_or_else(String::new, |b| b.to_string_lossy().into_owned());
        // Replicas may share one workspace: each keeps its own record.
        let own: String = pea
            .rsplit('/')
            .next()
            .unwrap_or(pea)
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // A shard's directory has its identity beside it, in a directory that
        // is the host's; any other workspace keeps the record inside.
        let (place, name) = match workspace.parent() {
            Some(parent)
                if !base.is_empty()
                    && std::fs::symlink_metadata(parent.join(format!("{base}.json")))
                        .is_ok_and(|m| m.is_file()) =>
            {
                let name = if own == base {
                    format!("{base}.unsaved.json")
                } else {
                    format!("{base}.{own}.unsaved.json")
                };
                (parent, name)
            }
            _ => (workspace, format!(".jina-wasm-unsaved.{own}.json")),
        };
        let shown = place.join(&name);
        match Dir::open_ambient_dir(place, cap_std::ambient_authority()) {
            Ok(dir) => Some(Ledger {
                dir,
                name,
                shown,
                present: true,
                written_at: None,
            }),
            Err(e) => {
                tracing::warn!(
                    pea,
                    "cannot open {} ({e}): a killed process's unsaved writes would go unreported",
                    place.display()
                );
                None
            }
        }
    }

    /// What an earlier process left: the loss it stands for, if any.
    pub(super) fn recover(&mut self) -> Option<StateLost> {
        let bytes = match host_file::read(&self.dir, &self.name, &self.shown, MAX_RECORD_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.present = false;
                return None;
            }
            Err(e) => {
                return Some(StateLost {
                    window: Unsaved::default(),
                    dumped_through: 0,
                    reason: format!(
                        "the record of unsaved writes cannot be read ({e:#}): assume a loss"
                    ),
                    at_ms: now_ms(),
                });
            }
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(record) => record,
            Err(e) => {
                return Some(StateLost {
                    window: Unsaved::default(),
                    dumped_through: 0,
                    reason: format!(
                        "{} is not a record of unsaved writes ({e}): assume a loss",
                        self.shown.display()
                    ),
                    at_ms: now_ms(),
                });
            }
        };
        if let Some(lost) = record.lost {
            return Some(lost);
        }
        Some(StateLost {
            window: record.window,
            dumped_through: record.dumped_through,
            reason: format!(
                "the previous process (pid {}) ended without saving them (killed, out of memory, or a crash; or another writable replica shares this workspace); \
                 at least this many, numbered as it counted, as of {} ms since the epoch",
                record.pid, record.updated_ms
            ),
            at_ms: now_ms(),
        })
    }

    /// A write was acknowledged: the first since the last dump is recorded
    /// before anything else happens; later ones at most once per second.
    pub(super) fn note(&mut self, window: Unsaved, dumped_through: u64) {
        if self.present && self.written_at.is_some_and(|at| at.elapsed() < REFRESH) {
            return;
        }
        self.write(window, dumped_through, None);
    }

    /// Brings the record up to date now, whenever it was last written (a
    /// graceful stop, before its final dump).
    pub(super) fn refresh(&mut self, window: Unsaved, dumped_through: u64) {
        self.write(window, dumped_through, None);
    }

    /// A loss was reported in this process: keep it for the next one.
    pub(super) fn lost(&mut self, lost: &StateLost) {
        self.write(Unsaved::default(), lost.dumped_through, Some(lost.clone()));
    }

    fn write(&mut self, window: Unsaved, dumped_through: u64, lost: Option<StateLost>) {
        let record = Record {
            window,
            dumped_through,
            pid: std::process::id(),
            updated_ms: now_ms(),
            lost,
        };
        let text = serde_json::to_vec_pretty(&record).expect("a record serialises");
        match host_file::replace(&self.dir, &self.name, &self.shown, &text) {
            Ok(()) => {
                self.present = true;
                self.written_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!("{e:#}: if this process is killed, its unsaved writes go unreported")
            }
        }
    }

    /// Every write is saved (a good dump) or the loss is accepted.
    pub(super) fn clear(&mut self) {
        if !self.present {
            return;
        }
        match self.dir.remove_file(&self.name) {
            Ok(()) => self.present = false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.present = false,
            Err(e) => tracing::warn!("cannot remove {}: {e}", self.shown.display()),
        }
        self.written_at = None;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
