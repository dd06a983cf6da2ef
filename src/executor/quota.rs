//! The workspace disk quota. WASI has no notion of one and wasmtime-wasi
//! writes through to the host filesystem, so the host accounts the workspace
//! itself: it measures the directory tree before a call, during it (from the
//! epoch callback, see `mod.rs`) and after it.
//!
//! What counts: every entry under the workspace (files, directories, symlinks)
//! against the file-count cap, and the length of every regular file against the
//! byte quota. Lengths are apparent sizes, so a sparse file counts in full, and
//! a file with two hard links inside the workspace counts twice: the quota is
//! never smaller than the space the guest could make the host copy.
//!
//! The walk goes through directory handles (`cap-std`), one level at a time,
//! never through paths: no name length, path length or link hides anything.
//! Symlinks are counted, never followed. An entry the walk cannot open or
//! measure (a directory without read permission, one nested deeper than
//! [`MAX_DEPTH`]) is counted in [`Usage::unreadable`], which is itself a
//! violation: what cannot be measured is not allowed to grow.
//!
//! The rule: a call that leaves the workspace over a limit **and larger than it
//! found it** fails with `disk-quota`. So a guest whose workspace was filled by
//! its owner on the host still serves reads, and a guest over its quota can
//! delete files to get back under it. What a failed call wrote is **rolled
//! back** ([`Snapshot::roll_back`]): every entry it created is removed and every
//! file it made longer is cut back to its length before the call, so a
//! workspace does not grow with each failing call. docs/limits.md states the
//! window: how much a guest can write before it is stopped.
//!
//! The daemon measures a tenant's disk with the same walker.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use cap_fs_ext::DirExt as _;
use cap_std::fs::{Dir, MetadataExt as _};

/// Directories nested deeper than this under the measured root are not
/// walked (each open level holds a file descriptor); one is counted as
/// unreadable, so it is a violation, never a hiding place.
pub const MAX_DEPTH: usize = 256;

/// The most entries a walk of a workspace visits on a tokio worker's other
/// tasks' time: a few milliseconds at about 2 µs an entry (90,000 took 0.2 s
/// on a loaded machine). A larger one is walked aside ([`aside`]).
pub const INLINE_WALK: u64 = 2_000;

/// Runs `walk`, a walk of a workspace that held `entries` entries when last
/// measured. A guest call and what the host does around it may run on a
/// tokio worker (`offload.rs`), and a large workspace takes a tenth of a
/// second or more to walk (the default `--max-files` is 100,000): so past
/// [`INLINE_WALK`] the worker first hands its other tasks to another thread
/// (`block_in_place`). Inline elsewhere: off any runtime, and on a
/// current-thread one, which cannot hand them over.
pub fn aside<R>(entries: u64, walk: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if entries > INLINE_WALK && multi_thread {
        tokio::task::block_in_place(walk)
    } else {
        walk()
    }
}

/// The size of a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the lengths of the regular files.
    pub bytes: u64,
    /// Entries of any kind (files, directories, symlinks), the root excluded.
    pub files: u64,
    /// Entries that could not be opened or measured (see the module doc).
    pub unreadable: u64,
}

/// Limits on a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries.
    pub files: u64,
}

/// A tree's usage and what each of its entries was, to undo a call's growth.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub usage: Usage,
    /// (device, inode) of every entry, with the length of a regular file.
    entries: HashMap<(u64, u64), u64>,
}

/// Opens `dir` (a host-given path: the root itself may be reached through a
/// link its owner made) as a handle the walk cannot leave.
///
/// # Errors
/// `dir` cannot be opened as a directory.
pub fn open_root(dir: &Path) -> io::Result<Dir> {
    Dir::open_ambient_dir(dir, cap_std::ambient_authority())
}

/// Walks the tree under `root`, depth first, through handles; calls `visit`
/// with each entry's directory, name and metadata (never following a link).
/// Entries that vanish during the walk (the guest deleting them) are skipped;
/// what cannot be opened or measured is counted in `unreadable`.
fn walk(
    root: &Dir,
    mut visit: impl FnMut(&Dir, &OsString, &cap_std::fs::Metadata),
) -> io::Result<u64> {
    let mut unreadable = 0;
    let names = |dir: &Dir, unreadable: &mut u64| -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in dir.entries()? {
            match entry {
                Ok(entry) => names.push(entry.file_name()),
                Err(_) => *unreadable += 1,
            }
        }
        Ok(names)
    };
    let first = names(root, &mut unreadable)?;
    // One open directory per level, with the names still to visit in it.
    let mut stack: Vec<(Dir, Vec<OsString>)> = vec![(root.try_clone()?, first)];
    loop {
        let depth = stack.len();
        let Some((dir, pending)) = stack.last_mut() else {
            break;
        };
        let Some(name) = pending.pop() else {
            stack.pop();
            continue;
        };
        let meta = match dir.symlink_metadata(&name) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        visit(dir, &name, &meta);
        if !meta.is_dir() {
            continue;
        }
        if depth >= MAX_DEPTH {
            unreadable += 1;
            continue;
        }
        let child = match dir.open_dir_nofollow(&name) {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        match names(&child, &mut unreadable) {
            Ok(names) => stack.push((child, names)),
            Err(_) => unreadable += 1,
        }
    }
    Ok(unreadable)
}

impl Usage {
    /// Measures the tree under `dir` (see the module doc).
    ///
    /// # Errors
    /// When `dir` itself cannot be read.
    pub fn of(dir: &Path) -> io::Result<Usage> {
        Usage::of_dir(&open_root(dir)?)
    }

    /// Measures the tree under an open directory.
    ///
    /// # Errors
    /// When `root` itself cannot be read.
    pub fn of_dir(root: &Dir) -> io::Result<Usage> {
        let (mut bytes, mut files) = (0, 0);
        let unreadable = walk(root, |_, _, meta| {
            files += 1;
            if meta.is_file() {
                bytes += meta.len();
            }
        })?;
        Ok(Usage {
            bytes,
            files,
            unreadable,
        })
    }

    /// Why `self` (measured after or during a call that started at `before`)
    /// breaks `quota`, or `None`. Only growth past a limit counts.
    pub fn exceeds(&self, before: &Usage, quota: &Quota) -> Option<String> {
        let grew = self.bytes > before.bytes
            || self.files > before.files
            || self.unreadable > before.unreadable;
        if self.unreadable > 0 && grew {
            return Some(format!(
                "its workspace holds {} entries the host cannot measure (unreadable, or nested deeper than {MAX_DEPTH} \
                 directories) and grew: growth that cannot be measured counts as over its disk quota (--disk-quota)",
                self.unreadable
            ));
        }
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

impl Snapshot {
    /// Measures the tree under `dir` and remembers its entries.
    ///
    /// # Errors
    /// When `dir` itself cannot be read.
    pub fn take(dir: &Path) -> io::Result<Snapshot> {
        let root = open_root(dir)?;
        let (mut bytes, mut files) = (0, 0);
        let mut entries = HashMap::new();
        let unreadable = walk(&root, |_, _, meta| {
            files += 1;
            let len = if meta.is_file() { meta.len() } else { 0 };
            bytes += len;
            entries.insert((meta.dev(), meta.ino()), len);
        })?;
        Ok(Snapshot {
            usage: Usage {
                bytes,
                files,
                unreadable,
            },
            entries,
        })
    }

    /// Undoes the growth of the tree under `dir` since the snapshot: removes
    /// every entry that was not there (a new directory with all it holds) and
    /// cuts every regular file that grew back to its earlier length. Content
    /// rewritten in place, renames and deletions stay as they are. Returns the
    /// usage after.
    ///
    /// # Errors
    /// When `dir` itself cannot be read.
    pub fn roll_back(&self, dir: &Path) -> io::Result<Usage> {
        let root = open_root(dir)?;
        walk(&root, |parent, name, meta| {
            match self.entries.get(&(meta.dev(), meta.ino())) {
                // The walk then finds it gone and does not descend.
                None => {
                    let _ = remove_tree(parent, name);
                }
                Some(&len) if meta.is_file() && meta.len() > len => {
                    let mut options = cap_std::fs::OpenOptions::new();
                    cap_fs_ext::OpenOptionsFollowExt::follow(
                        options.write(true),
                        cap_fs_ext::FollowSymlinks::No,
                    );
                    if let Ok(file) = parent.open_with(name, &options) {
                        let _ = file.set_len(len);
                    }
                }
                Some(_) => {}
            }
        })?;
        Usage::of_dir(&root)
    }
}

/// Removes entry `name` of `parent` and, if it is a directory, everything
/// under it, through handles and without recursion: never following a link,
/// never leaving `parent`, whatever the depth (directories deeper than
/// [`MAX_DEPTH`] are first moved up into `parent`, so at most that many
/// handles are open at once). `std::fs::remove_dir_all` recurses once per
/// level, which a guest-built tree turns into a stack overflow.
///
/// # Errors
/// The first entry that cannot be removed.
pub fn remove_tree(parent: &Dir, name: &OsStr) -> io::Result<()> {
    if !parent.symlink_metadata(name)?.is_dir() {
        return parent.remove_file(name);
    }
    let names = |dir: &Dir| -> io::Result<Vec<OsString>> {
        dir.entries()?.map(|e| e.map(|e| e.file_name())).collect()
    };
    let mut moved = 0u64;
    let mut trees: Vec<OsString> = vec![name.to_os_string()];
    while let Some(tree) = trees.pop() {
        let top = parent.open_dir_nofollow(&tree)?;
        let first = names(&top)?;
        // Each open level: its handle, the names left in it, its own name.
        let mut stack: Vec<(Dir, Vec<OsString>, OsString)> = vec![(top, first, tree.clone())];
        loop {
            let depth = stack.len();
            let Some((dir, pending, _)) = stack.last_mut() else {
                break;
            };
            let Some(child) = pending.pop() else {
                let (_, _, own) = stack.pop().expect("not empty");
                match stack.last() {
                    Some((up, _, _)) => up.remove_dir(&own)?,
                    None => parent.remove_dir(&own)?,
                }
                continue;
            };
            let meta = match dir.symlink_metadata(&child) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_dir() {
                dir.remove_file(&child)?;
            } else if depth >= MAX_DEPTH {
                let to = OsString::from(format!(
                    ".jina-wasm-removing-{}-{moved}",
                    std::process::id()
                ));
                moved += 1;
                dir.rename(&child, parent, &to)?;
                trees.push(to);
            } else {
                let sub = dir.open_dir_nofollow(&child)?;
                let inner = names(&sub)?;
                stack.push((sub, inner, child));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large walk goes aside where it can, and runs inline (no panic)
    /// off any runtime and on a current-thread one.
    #[test]
    fn a_walk_runs_on_any_runtime() {
        assert_eq!(aside(u64::MAX, || 1), 1);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { aside(u64::MAX, || 2) }), 2);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let on_worker = multi.block_on(async {
            tokio::spawn(async { aside(u64::MAX, || 3) + aside(0, || 4) })
                .await
                .unwrap()
        });
        assert_eq!(on_worker, 7);
        assert_eq!(multi.block_on(async { aside(u64::MAX, || 5) }), 5);
    }

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
        let quota = Quota {
            bytes: 1000,
            files: 10,
        };
        let smaller = Usage {
            bytes: 10,
            files: 1,
            unreadable: 0,
        };
        assert!(
            usage
                .exceeds(&smaller, &quota)
                .unwrap()
                .contains("--disk-quota")
        );
        // Over the quota but not grown: allowed (reads, deletes).
        assert_eq!(usage.exceeds(&usage, &quota), None);
        let few = Quota {
            bytes: u64::MAX,
            files: 2,
        };
        assert!(
            usage
                .exceeds(&smaller, &few)
                .unwrap()
                .contains("--max-files")
        );
        assert!(Usage::of(&dir.path().join("missing")).is_err());
    }
}
