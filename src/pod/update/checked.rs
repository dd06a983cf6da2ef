//! Copies of the executor files a Pod runs: what its Peas (and a `PROCESS`
//! Pea the Pod restarts after a crash) are started from, so a path the
//! operator changes in place never starts a version nobody checked, and a
//! rollback always finds the version it puts back (docs/operations.md,
//! "Rolling updates"). A Pod keeps its copies in a directory of its own in
//! the temp dir, named by digest and read-only, removed when the Pod stops;
//! a later Pod removes those of processes that were killed first.
//!
//! Whether a directory's owner still runs is told by a lock the owner holds
//! for as long as it keeps the directory (`flock`, released by the kernel
//! when the process ends), not by its pid: a pid names another process in
//! another pid namespace (two containers sharing `/tmp`), or a new process
//! once the old one is gone.

use std::fs::File;
use std::path::{Path, PathBuf};

/// What the directories of checked files are called in the temp dir, then
/// the pid of the process that made them.
const CHECKED_PREFIX: &str = "jina-wasm-checked-";

/// The file in each directory its owner holds locked.
const LOCK: &str = ".lock";

/// What a directory is called while it is made: no pid follows, so a sweep
/// judges it by its lock alone, and leaves it while it has none yet.
const MAKING: &str = "new-";

/// How old a directory still being made, with no lock file, must be before
/// a sweep takes its owner for killed.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(60);

/// A Pod's directory of checked files, removed on drop.
#[derive(Debug)]
pub(in crate::pod) struct CheckedDir {
    path: PathBuf,
    /// Held locked while `path` is in use: dropped after it is removed
    /// (`drop` runs before the fields drop), so the directory is never seen
    /// unlocked before it is gone.
    _lock: File,
}

impl Drop for CheckedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl CheckedDir {
    /// A new directory for a Pod's checked files, in the temp dir. Those that
    /// processes no longer running left there (killed before they could
    /// remove them) are removed first.
    pub(in crate::pod) fn new() -> std::io::Result<CheckedDir> {
        CheckedDir::new_in(&std::env::temp_dir())
    }

    /// [`CheckedDir::new`] in `base`.
    fn new_in(base: &Path) -> std::io::Result<CheckedDir> {
        CheckedDir::new_as(base, std::process::id())
    }

    /// [`CheckedDir::new_in`], named with `pid` (in tests, the pid of a
    /// process in another pid namespace).
    fn new_as(base: &Path, pid: u32) -> std::io::Result<CheckedDir> {
        sweep(base);
        use std::os::unix::fs::PermissionsExt;
        // Made under a name with no pid, its lock held, then renamed to its
        // own: a directory named with a pid always has its lock (a pid alone
        // would misjudge an owner in another pid namespace as ended).
        // Its owner's alone: not even listed by others.
        let making = tempfile::Builder::new()
            .prefix(&format!("{CHECKED_PREFIX}{MAKING}"))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)?;
        // Locked under another name, then renamed: a sweep never finds a
        // lock file its live owner does not hold yet.
        let part = tempfile::NamedTempFile::new_in(making.path())?;
        part.as_file().lock()?;
        let lock = part.persist(making.path().join(LOCK))?;
        // Its own name has a random part of its own: every user of the temp
        // dir sees the `new-` name, so a name made from it could be taken
        // first by another user, and the Pod would not start. Renamed never
        // over what is there (a plain rename replaces an empty directory of
        // ours, and fails on anything else with an error `make_in` does not
        // retry): a name taken gives `AlreadyExists`, and another is tried.
        let path = rename_fresh(making.path(), base, &format!("{CHECKED_PREFIX}{pid}-"), 12)?;
        let _ = making.keep();
        Ok(CheckedDir { path, _lock: lock })
    }

    pub(in crate::pod) fn path(&self) -> &Path {
        &self.path
    }
}

/// Renames `from` to `prefix` and `random` random characters in `base`,
/// never over what is there: a name taken is passed over for another.
fn rename_fresh(from: &Path, base: &Path, prefix: &str, random: usize) -> std::io::Result<PathBuf> {
    let named = tempfile::Builder::new()
        .prefix(prefix)
        .rand_bytes(random)
        .make_in(base, |path| {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            renameat_with(CWD, from, CWD, path, RenameFlags::NOREPLACE)
                .map_err(std::io::Error::from)
        })?;
    Ok(named.keep().map_err(|e| e.error)?.1)
}

/// Removes the directories of checked files in `base` whose owner has ended.
/// Never follows a link; another user's is left as it is.
fn sweep(base: &Path) {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(CHECKED_PREFIX)) else {
            continue;
        };
        // Ours, and a directory (a link is not followed): another user's
        // is theirs to remove, however its lock stands.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if !entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == unsafe { libc::geteuid() })
        {
            continue;
        }
        let path = entry.path();
        let lock = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path.join(LOCK));
        let ended = match &lock {
            // Held while its owner runs; free once the owner has ended.
            Ok(lock) => lock.try_lock().is_ok(),
            // No lock file, still being made (its owner locks it within
            // microseconds): ended once it is a minute old, as its owner
            // was killed before its lock was in.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rest.starts_with(MAKING) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|made| made.elapsed().is_ok_and(|age| age > ABANDONED)),
            // No lock file: made before directories had one, or by hand.
            // Its owner is gone if no process has its pid here (this
            // misjudges only a pid in another namespace, as before locks).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => rest
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists()),
            Err(_) => false,
        };
        if ended {
            // Removed while locked, so no second sweep judges it meanwhile.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Copies `bytes`, read from `uses` and of SHA-256 `sha256`, into `dir` as
/// `<sha256>.wasm`, read-only, unless a copy is there already.
pub(super) fn copy_checked(
    uses: &Path,
    bytes: &[u8],
    sha256: &str,
    dir: &Path,
) -> Result<PathBuf, String> {
    use std::io::Write as _;
    let copy = dir.join(format!("{}.wasm", sha256.to_ascii_lowercase()));
    if copy.exists() {
        return Ok(copy);
    }
    let failed =
        |e: std::io::Error| format!("cannot copy {} to {}: {e}", uses.display(), copy.display());
    // Written whole under another name, then renamed: a copy is never seen half made.
    let mut part = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    part.write_all(bytes).map_err(failed)?;
    let mut permissions = part.as_file().metadata().map_err(failed)?.permissions();
    permissions.set_readonly(true);
    part.as_file()
        .set_permissions(permissions)
        .map_err(failed)?;
    part.persist(&copy).map_err(|e| failed(e.error))?;
    Ok(copy)
}

/// Removes every copy in `dir` but that of `digest`.
pub(super) fn keep_only(dir: &Path, digest: Option<&str>) {
    let kept = digest.map(|d| format!("{}.wasm", d.to_ascii_lowercase()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name != LOCK
            && kept.as_deref() != name.to_str()
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(copy = %entry.path().display(), "cannot remove a checked file's copy: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name but one taken, by a file, a directory with something in
    /// it, an empty directory: the rename lands on the free one and
    /// replaces nothing (a plain rename failed on the first two and
    /// silently replaced the third).
    #[test]
    fn a_directory_is_renamed_past_names_taken() {
        let base = tempfile::tempdir().unwrap();
        let chars = ('a'..='z').chain('A'..='Z').chain('0'..='9');
        let free = 'q';
        for (i, c) in chars.filter(|&c| c != free).enumerate() {
            let taken = base.path().join(format!("x-{c}"));
            match i % 3 {
                0 => std::fs::write(&taken, "someone's").unwrap(),
                1 => {
                    std::fs::create_dir(&taken).unwrap();
                    std::fs::write(taken.join("f"), "someone's").unwrap();
                }
                _ => std::fs::create_dir(&taken).unwrap(),
            }
        }
        let from = base.path().join("making");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("ours"), "").unwrap();
        let to = rename_fresh(&from, base.path(), "x-", 1).unwrap();
        assert_eq!(to, base.path().join(format!("x-{free}")));
        assert!(to.join("ours").exists() && !from.exists());
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 62);
    }

    /// A directory is its owner's while the owner holds its lock, whatever
    /// pid its name says; one without a lock file goes by its pid.
    #[test]
    fn the_checked_files_of_ended_processes_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let dead = ended.id();
        ended.wait().unwrap();
        let live = std::process::id();
        let dir = |name: String| {
            let dir = base.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("x.wasm"), b"x").unwrap();
            dir
        };
        let locked = |dir: &Path| {
            let lock = File::create(dir.join(LOCK)).unwrap();
            lock.lock().unwrap();
            lock
        };
        // Another process's, held: kept, though no process has its pid here.
        let held = dir(format!("{CHECKED_PREFIX}{dead}-held"));
        let _held_lock = locked(&held);
        // Its lock free: its owner ended, whatever runs with its pid now.
        let freed = dir(format!("{CHECKED_PREFIX}{live}-freed"));
        drop(locked(&freed));
        // No lock file: by its pid.
        let unlocked_dead = dir(format!("{CHECKED_PREFIX}{dead}-old"));
        let unlocked_live = dir(format!("{CHECKED_PREFIX}{live}-old"));
        let other = dir(format!("{CHECKED_PREFIX}notes"));
        // Being made: kept while young, removed once abandoned.
        let making = dir(format!("{CHECKED_PREFIX}{MAKING}young"));
        let abandoned = dir(format!("{CHECKED_PREFIX}{MAKING}old"));
        let old = std::time::SystemTime::now() - 2 * ABANDONED;
        File::open(&abandoned).unwrap().set_modified(old).unwrap();
        // A link to a directory whose lock is free: neither followed nor removed.
        let outside = tempfile::tempdir().unwrap();
        drop(locked(outside.path()));
        let link = base.path().join(format!("{CHECKED_PREFIX}{dead}-link"));
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();

        let made = CheckedDir::new_in(base.path()).unwrap();
        assert!(held.join("x.wasm").exists(), "a held directory was removed");
        assert!(!freed.exists(), "an ended owner's directory was left");
        assert!(!unlocked_dead.exists(), "a dead pid's directory was left");
        assert!(unlocked_live.exists() && other.exists());
        assert!(making.exists(), "a directory being made was removed");
        assert!(!abandoned.exists(), "an abandoned directory was left");
        assert!(outside.path().join(LOCK).exists(), "the link was followed");
        assert!(link.symlink_metadata().is_ok());
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&made.path().metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        let name = made.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("{CHECKED_PREFIX}{live}-")),
            "{name}"
        );

        // The new directory is held: another sweep leaves it; once dropped,
        // it is gone.
        let second = CheckedDir::new_in(base.path()).unwrap();
        assert!(made.path().join(LOCK).exists());
        let path = made.path().to_path_buf();
        drop(made);
        assert!(!path.exists());
        drop(second);
    }

    /// Owners in another pid namespace (their pid names no process here)
    /// make directories while other Pods sweep: none is removed while it is
    /// made. Its pid named it before its lock was in: a sweep then judged it
    /// by that pid, as ended, and removed it under its owner.
    #[test]
    fn a_directory_made_in_another_pid_namespace_is_never_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let elsewhere = ended.id();
        ended.wait().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (stop, base) = (stop.clone(), base.path().to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep(&base);
                }
            })
        };
        let mut lost = 0;
        for _ in 0..2000 {
            match CheckedDir::new_as(base.path(), elsewhere) {
                Ok(made) if made.path().join(LOCK).exists() => {}
                _ => lost += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sweeper.join().unwrap();
        assert_eq!(lost, 0, "live owners' directories were swept");
    }

    /// A directory another user made under the prefix (world-writable, its
    /// `.lock` free) is not ours to judge: left as it is.
    #[test]
    fn another_users_directory_is_left_as_it_is() {
        // Only root can give a directory to another user.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let theirs = base.path().join(format!("{CHECKED_PREFIX}1-theirs"));
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join(LOCK), b"").unwrap();
        std::fs::write(theirs.join("notes"), b"kept").unwrap();
        for path in [theirs.join(LOCK), theirs.join("notes"), theirs.clone()] {
            std::os::unix::fs::lchown(&path, Some(65534), Some(65534)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();

        let _made = CheckedDir::new_in(base.path()).unwrap();
        assert!(
            theirs.join("notes").exists(),
            "another user's directory was removed"
        );
    }
}
