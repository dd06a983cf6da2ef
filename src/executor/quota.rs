//! The workspace disk quota. WASI has no notion of one and wasmtime-wasi
//! writes through to the host filesystem, so the host accounts the workspace
//! itself: it measures the directory tree before a call, during it (from the
//! epoch callback, see `mod.rs`) and after it.
//!
//! What counts: every entry under the workspace (files, directories, symlinks)
//! against the file-count cap, and the length of every regular file against the
//! byte quota. Lengths are apparent sizes, so a sparse file counts in full, and
//! a file with two hard links inside the workspace counts twice: the quota is
//! never smaller than the space the guest could make the host copy. Symlinks
//! are not followed.
//!
//! The rule: a call that leaves the workspace over a limit **and larger than it
//! found it** fails with `disk-quota`. So a guest whose workspace was filled by
//! its owner on the host still serves reads, a guest over its quota can delete
//! files to get back under it, and nothing is deleted by the host. docs/limits.md
//! states the window: how much a guest can write before it is stopped.

use std::io;
use std::path::Path;

/// The size of a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the lengths of the regular files.
    pub bytes: u64,
    /// Entries of any kind (files, directories, symlinks), the root excluded.
    pub files: u64,
}

/// Limits on a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries.
    pub files: u64,
}

impl Usage {
    /// Measures the tree under `dir` without following symlinks. Entries that
    /// vanish while it is read (the guest deleting them) are skipped.
    ///
    /// # Errors
    /// When `dir` itself cannot be read.
    pub fn of(dir: &Path) -> io::Result<Usage> {
        let mut usage = Usage::default();
        let mut pending = vec![dir.to_path_buf()];
        let mut first = true;
        while let Some(path) = pending.pop() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if first => return Err(e),
                Err(_) => continue,
            };
            first = false;
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                usage.files += 1;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file()
                    && let Ok(meta) = entry.metadata()
                {
                    usage.bytes += meta.len();
                }
            }
        }
        Ok(usage)
    }

    /// Why `self` (measured after or during a call that started at `before`)
    /// breaks `quota`, or `None`. Only growth past a limit counts.
    pub fn exceeds(&self, before: &Usage, quota: &Quota) -> Option<String> {
        if self.bytes > quota.bytes && self.bytes > before.bytes {
            return Some(format!(
                "its workspace grew to {} (from {}), over its disk quota of {} (--disk-quota)",
                crate::units::format_size(self.bytes),
                crate::units::format_size(before.bytes),
                crate::units::format_size(quota.bytes)
            ));
        }
        if self.files > quota.files && self.files > before.files {
            return Some(format!(
                "its workspace grew to {} files and directories (from {}), over its limit of {} (--max-files)",
                self.files, before.files, quota.files
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_bytes_and_only_growth_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Usage::of(dir.path()).unwrap(), Usage::default());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![0; 1000]).unwrap();
        std::fs::write(dir.path().join("b"), vec![0; 24]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let usage = Usage::of(dir.path()).unwrap();
        assert_eq!(usage.bytes, 1024);
        assert_eq!(usage.files, if cfg!(unix) { 4 } else { 3 });
        let quota = Quota { bytes: 1000, files: 10 };
        let smaller = Usage { bytes: 10, files: 1 };
        assert!(usage.exceeds(&smaller, &quota).unwrap().contains("--disk-quota"));
        // Over the quota but not grown: allowed (reads, deletes).
        assert_eq!(usage.exceeds(&usage, &quota), None);
        let few = Quota { bytes: u64::MAX, files: 2 };
        assert!(usage.exceeds(&smaller, &few).unwrap().contains("--max-files"));
        assert!(Usage::of(&dir.path().join("missing")).is_err());
    }
}
