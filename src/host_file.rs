//! Small files the host keeps where a guest could have left something in its
//! way (a shard's identity above its workspace, a Pea's record of unsaved
//! writes): read and replaced through a directory handle (`cap-std`), never
//! through a link, never more than the caller's cap, never blocking on a FIFO.

use std::io::Read as _;
use std::path::Path;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};

/// Reads the host-owned file `name` of `dir`, of at most `max` bytes. `None`
/// when it is absent. `shown` is how errors name it.
///
/// # Errors
/// A link, a non-regular file (a FIFO, a device), a file over `max` bytes, or
/// a read error; each names `shown`.
pub fn read(dir: &Dir, name: &str, shown: &Path, max: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .follow(FollowSymlinks::No)
        .custom_flags(libc::O_NONBLOCK);
    let file = match dir.open_with(name, &options) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            if dir
                .symlink_metadata(name)
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                anyhow::bail!(
                    "{} is a symbolic link: refusing to follow it",
                    shown.display()
                );
            }
            anyhow::bail!("cannot open {}: {e}", shown.display());
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", shown.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file", shown.display());
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", shown.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{} is larger than {max} bytes: not a file this host wrote",
        shown.display()
    );
    Ok(Some(bytes))
}

/// Replaces the host-owned file `name` in `dir` atomically: a synced
/// temporary renamed over it, which replaces a link there rather than writing
/// through it.
///
/// # Errors
/// Any step failing, naming `shown`.
pub fn replace(dir: &Dir, name: &str, shown: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = format!(".{name}.tmp");
    let write = || -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create(true)
            .truncate(true)
            .follow(FollowSymlinks::No);
        let mut file = dir.open_with(&tmp, &options)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        dir.rename(&tmp, dir, name)
    };
    write().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", shown.display()))
}
