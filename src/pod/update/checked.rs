//! Copies of the executor files rolling updates checked: what the new Peas
//! (and a `PROCESS` Pea the Pod restarts after a crash) are started from, so
//! a path the operator changes in place never starts a version nobody
//! checked (docs/operations.md, "Rolling updates"). A Pod keeps its copies in
//! a directory of its own in the temp dir, named by digest and read-only,
//! removed when the Pod stops; a later Pod removes those of processes that
//! were killed first.

use std::path::{Path, PathBuf};

/// What the directories of checked files are called in the temp dir, then
/// the pid of the process that made them.
const CHECKED_PREFIX: &str = "jina-wasm-checked-";

/// A new directory for a Pod's checked files, in the temp dir. Those that
/// processes no longer running left there (killed before they could remove
/// them) are removed first.
pub(super) fn checked_dir() -> std::io::Result<tempfile::TempDir> {
    checked_dir_in(&std::env::temp_dir())
}

/// [`checked_dir`] in `base`.
fn checked_dir_in(base: &Path) -> std::io::Result<tempfile::TempDir> {
    if let Ok(entries) = std::fs::read_dir(base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(CHECKED_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new("/proc").join(pid.to_string()).exists()
            {
                // Never follows a link; another user's is left as it is.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{CHECKED_PREFIX}{}-", std::process::id()))
        .tempdir_in(base)
}

/// Copies `uses` into `dir` as `<sha256>.wasm`, read-only, unless a copy is
/// there already; refuses a file whose digest is not `sha256`.
pub(super) fn copy_checked(uses: &Path, sha256: &str, dir: &Path) -> Result<PathBuf, String> {
    use std::io::Write as _;
    let copy = dir.join(format!("{}.wasm", sha256.to_ascii_lowercase()));
    if copy.exists() {
        return Ok(copy);
    }
    let bytes = crate::executor::read_component(uses).map_err(|e| e.to_string())?;
    let found = crate::executor::cache::digest(&bytes);
    if !found.eq_ignore_ascii_case(sha256) {
        return Err(format!(
            "{} changed after it was checked: its SHA-256 is now {found}, not {sha256}",
            uses.display()
        ));
    }
    let failed =
        |e: std::io::Error| format!("cannot copy {} to {}: {e}", uses.display(), copy.display());
    // Written whole under another name, then renamed: a copy is never seen half made.
    let mut part = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    part.write_all(&bytes).map_err(failed)?;
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
        if kept.as_deref() != entry.file_name().to_str()
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(copy = %entry.path().display(), "cannot remove a checked file's copy: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_files_of_dead_processes_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let dead = ended.id();
        ended.wait().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let own = base
            .path()
            .join(format!("{CHECKED_PREFIX}{}-a", std::process::id()));
        let left = base.path().join(format!("{CHECKED_PREFIX}{dead}-b"));
        let link = base.path().join(format!("{CHECKED_PREFIX}{dead}-c"));
        let other = base.path().join(format!("{CHECKED_PREFIX}notes"));
        for dir in [&own, &left, &other] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(left.join("x.wasm"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        std::fs::write(outside.path().join("kept"), b"kept").unwrap();
        let made = checked_dir_in(base.path()).unwrap();
        assert!(!left.exists(), "a dead process's directory was left");
        assert!(!link.exists(), "a dead process's link was left");
        assert!(
            outside.path().join("kept").exists(),
            "the link was followed"
        );
        assert!(own.exists() && other.exists());
        let name = made
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            name.starts_with(&format!("{CHECKED_PREFIX}{}-", std::process::id())),
            "{name}"
        );
    }
}
