//! A tenant's files on the daemon: content-addressed blobs and named workspaces.
//!
//! ```text
//! <data-dir>/tenants/<tenant>/
//!   blobs/<sha256>                 every uploaded content, stored once per tenant
//!   workspaces/<id>/manifest.json  file name -> sha256
//!   workspaces/<id>/files/<name>   a hard link to its blob
//!   workspaces/<id>/objects/<object id>/  an object's own state (`"state": true`),
//!                                  removed with the object
//!   workspaces/<id>/state/<name>/  a named state (`"state": "<name>"`), kept
//!   tmp/                           uploads being received
//!   logs/<object id>.log[.1]       each Pea's or Pod's stderr (rotated; removed
//!                                  with the object)
//! ```
//!
//! Names come from tenants, so every one is checked: ids are plain names, file
//! names are relative paths of plain components (no `..`, no absolute path, no
//! backslash, no NUL, at most 255 bytes). Every tenant-named path is then
//! reached through directory handles from the tenant's root, one component at
//! a time, none followed if it is a symbolic link ([`TenantDirs::open_beneath`]),
//! at the moment of use: uploads are stored and linked, downloads read, state
//! directories checked when an object starts. Links cannot be made by guests
//! (docs/sandbox.md) nor by the daemon; one an operator made is refused, never
//! followed. What executors leave is measured and removed through handles too
//! (`executor::quota`), whatever its names or depth.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::Dir;
use sha2::Digest as _;

use crate::client_daemon::{FileEntry, is_safe_id};

/// What an error about a link on the way says.
const LINK_REFUSED: &str = "is a symbolic link";

/// A manifest is at most this long (10,000 files of 255-byte names take
/// about 4 MiB); a longer one is not read.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Checks a file name a tenant gave and returns it as a relative path.
///
/// # Errors
/// Why the name is refused, quoting it.
pub fn safe_relative(name: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| {
        Err(format!(
            "file name `{}` is refused: {why}",
            name.escape_debug()
        ))
    };
    if name.is_empty() || name.len() > 255 {
        return refuse("a name has 1 to 255 bytes");
    }
    if name.contains('\0') || name.contains('\\') {
        return refuse("NUL and backslash are not allowed");
    }
    let path = Path::new(name);
    if path.is_absolute() {
        return refuse("an absolute path escapes the workspace");
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return refuse("`..` escapes the workspace"),
            Component::RootDir | Component::Prefix(_) => {
                return refuse("an absolute path escapes the workspace");
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return refuse("it names no file");
    }
    Ok(clean)
}

/// The directories of one tenant.
#[derive(Debug, Clone)]
pub struct TenantDirs {
    pub root: PathBuf,
}

impl TenantDirs {
    pub fn new(data_dir: &Path, tenant: &str) -> TenantDirs {
        TenantDirs {
            root: data_dir.join("tenants").join(tenant),
        }
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.root.join("workspaces").join(id)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The workspace ids, sorted.
    pub fn workspace_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.root.join("workspaces"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| is_safe_id(id))
            .collect();
        ids.sort();
        ids
    }

    /// The files of workspace `id` (empty when it has none, or its manifest
    /// cannot be read: through handles, not through a link, at most
    /// [`MAX_MANIFEST_BYTES`]).
    pub fn manifest(&self, id: &str) -> BTreeMap<String, FileEntry> {
        use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
        use cap_std::fs::OpenOptionsExt as _;
        use std::io::Read as _;
        let Ok(dir) = self.open_beneath(&Path::new("workspaces").join(id), false) else {
            return BTreeMap::new();
        };
        let mut options = cap_std::fs::OpenOptions::new();
        options
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(libc::O_NONBLOCK);
        let mut bytes = Vec::new();
        match dir.open_with("manifest.json", &options) {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                let _ = file.take(MAX_MANIFEST_BYTES).read_to_end(&mut bytes);
            }
            _ => return BTreeMap::new(),
        }
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    fn write_manifest(
        &self,
        id: &str,
        manifest: &BTreeMap<String, FileEntry>,
    ) -> Result<(), String> {
        let dir = self.open_beneath(&Path::new("workspaces").join(id), false)?;
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
        dir.write("manifest.json.tmp", bytes)
            .and_then(|()| dir.rename("manifest.json.tmp", &dir, "manifest.json"))
            .map_err(|e| e.to_string())
    }

    /// Uploaded file names over all the tenant's workspaces (the `files` quota).
    pub fn file_count(&self) -> u64 {
        self.workspace_ids()
            .iter()
            .map(|id| self.manifest(id).len() as u64)
            .sum()
    }

    /// The own state directory of object `object` in workspace `id`.
    pub fn object_state(&self, id: &str, object: &str) -> PathBuf {
        self.workspace(id).join("objects").join(object)
    }

    /// Bytes on disk: every blob once, every workspace's states (named and
    /// objects' own), and the logs. Measured with the quota's walker: a
    /// directory it cannot open makes the usage unknown, counted as
    /// `u64::MAX` (a full disk: nothing more is accepted).
    pub fn disk_usage(&self) -> u64 {
        let mut total = dir_size(&self.blobs()).saturating_add(dir_size(&self.logs()));
        for id in self.workspace_ids() {
            for part in ["state", "objects"] {
                total = total.saturating_add(dir_size(&self.workspace(&id).join(part)));
            }
        }
        total
    }

    /// `root/relative`, made if missing, after checking at this moment that
    /// every component is a directory beneath the tenant's root, none a link:
    /// the directory an object is about to be given.
    ///
    /// # Errors
    /// Why, naming the component.
    pub fn beneath(&self, relative: &Path) -> Result<PathBuf, String> {
        self.open_beneath(relative, true)?;
        Ok(self.root.join(relative))
    }

    /// A handle on the directory `root/relative` (made if missing and
    /// `create`), reached one component at a time from the tenant's root, none
    /// of them followed if it is a link: whatever is later done through the
    /// handle stays beneath the tenant's root.
    ///
    /// # Errors
    /// Why, naming the component (`NotFound` text when absent and not `create`).
    pub fn open_beneath(&self, relative: &Path, create: bool) -> Result<Dir, String> {
        use cap_fs_ext::DirExt as _;
        if create {
            std::fs::create_dir_all(&self.root)
                .map_err(|e| format!("cannot create the tenant's directory: {e}"))?;
        }
        let mut dir = Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())
            .map_err(|e| format!("cannot open the tenant's directory: {e}"))?;
        let mut at = PathBuf::new();
        for part in relative.components() {
            let Component::Normal(part) = part else {
                return Err(format!(
                    "`{}` is not a plain relative path",
                    relative.display()
                ));
            };
            at.push(part);
            if create {
                match dir.create_dir(part) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("cannot create `{}`: {e}", at.display())),
                }
            }
            dir = dir.open_dir_nofollow(part).map_err(|e| {
                if dir
                    .symlink_metadata(part)
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    format!(
                        "`{}` {LINK_REFUSED}: refusing to follow it out of the tenant's directory",
                        at.display()
                    )
                } else {
                    format!("cannot open `{}`: {e}", at.display())
                }
            })?;
        }
        Ok(dir)
    }

    /// Removes the tree at `relative` (made by executors: through handles,
    /// whatever its depth or links); absent is fine.
    ///
    /// # Errors
    /// A filesystem failure.
    pub fn remove_tree(&self, relative: &Path) -> std::io::Result<()> {
        let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
            return Ok(());
        };
        let dir = match crate::executor::quota::open_root(&self.root.join(parent)) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match crate::executor::quota::remove_tree(&dir, name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Moves a received upload (`tmp`, a file [`Receiving`] made in
    /// [`TenantDirs::tmp`], with its digest and size) into the blob store and
    /// links it into workspace `id` as `name`. Every step goes through
    /// directory handles reached from the tenant's root without following a
    /// link ([`TenantDirs::open_beneath`]): the folders of `name` are made one
    /// at a time, and a name already there is replaced, never written through.
    ///
    /// # Errors
    /// A name that escapes, a folder of it that is a link or a file, or a
    /// filesystem failure.
    pub fn commit(
        &self,
        id: &str,
        name: &str,
        tmp: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<FileEntry, String> {
        let relative = safe_relative(name)?;
        let (Some(folder), Some(leaf)) = (relative.parent(), relative.file_name()) else {
            return Err(format!("file name `{}` names no file", name.escape_debug()));
        };
        let workspace = Path::new("workspaces").join(id);
        let blobs = self.open_beneath(Path::new("blobs"), true)?;
        let holder = self
            .open_beneath(&workspace.join("files").join(folder), true)
            .map_err(|e| format!("cannot store `{name}`: {e}"))?;
        if blobs.symlink_metadata(sha256).is_ok() {
            let _ = std::fs::remove_file(tmp);
        } else {
            let received = tmp
                .file_name()
                .ok_or_else(|| format!("cannot store `{name}`: no upload"))?;
            let incoming = self.open_beneath(Path::new("tmp"), false)?;
            incoming
                .rename(received, &blobs, sha256)
                .map_err(|e| format!("cannot store `{name}`: {e}"))?;
        }
        // Replace, never write through: the old name may be a link to a blob
        // another workspace shares (a link or a folder there is not followed:
        // removing a link removes the link; a folder stays and fails below).
        let _ = holder.remove_file(leaf);
        blobs
            .hard_link(sha256, &holder, leaf)
            .map_err(|e| format!("cannot link `{name}` into workspace `{id}`: {e}"))?;
        let entry = FileEntry {
            sha256: sha256.to_string(),
            size,
        };
        let mut manifest = self.manifest(id);
        manifest.insert(relative.to_string_lossy().into_owned(), entry.clone());
        self.write_manifest(id, &manifest)
            .map_err(|e| format!("cannot write the manifest of workspace `{id}`: {e}"))?;
        // A replaced name may have been the last link to its old content.
        self.collect_garbage();
        Ok(entry)
    }

    /// File `name` of workspace `id`, if the tenant uploaded it: opened
    /// through handles from the tenant's root, no link followed on the way or
    /// at the end, and only if it is a regular file.
    ///
    /// # Errors
    /// A name that escapes, a link, or a file that is not there.
    pub fn open_file(&self, id: &str, name: &str) -> Result<cap_std::fs::File, String> {
        use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt as _};
        use cap_std::fs::OpenOptionsExt as _;
        let relative = safe_relative(name)?;
        let missing = || format!("workspace `{id}` has no file `{name}`: upload it first");
        let (Some(folder), Some(leaf)) = (relative.parent(), relative.file_name()) else {
            return Err(missing());
        };
        let known = self
            .manifest(id)
            .contains_key(relative.to_string_lossy().as_ref());
        // A link on the way is named as one, uploaded name or not.
        let holder = match self.open_beneath(
            &Path::new("workspaces").join(id).join("files").join(folder),
            false,
        ) {
            Ok(holder) if known => holder,
            Err(e) if known || e.contains(LINK_REFUSED) => return Err(format!("`{name}`: {e}")),
            _ => return Err(missing()),
        };
        let mut options = cap_std::fs::OpenOptions::new();
        options
            .read(true)
            .follow(FollowSymlinks::No)
            .custom_flags(libc::O_NONBLOCK);
        let file = holder.open_with(leaf, &options).map_err(|e| {
            if holder
                .symlink_metadata(leaf)
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                format!("`{name}` is a symbolic link: links out of a workspace are refused")
            } else if e.kind() == std::io::ErrorKind::NotFound {
                missing()
            } else {
                format!("cannot open `{name}`: {e}")
            }
        })?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(missing());
        }
        Ok(file)
    }

    /// The path of file `name` in workspace `id`, if the tenant uploaded it,
    /// checked as [`TenantDirs::open_file`] does, for a child process's
    /// `--uses`. Only the daemon writes a workspace's `files/` (no object is
    /// given it), so what is checked here is what the child opens.
    ///
    /// # Errors
    /// A name that escapes, a link, or a file that is not there.
    pub fn file(&self, id: &str, name: &str) -> Result<PathBuf, String> {
        self.open_file(id, name)?;
        let relative = safe_relative(name)?;
        Ok(self.workspace(id).join("files").join(relative))
    }

    /// Removes workspace `id` and the blobs no other workspace links to.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        self.remove_tree(&Path::new("workspaces").join(id))?;
        self.collect_garbage();
        Ok(())
    }

    /// Deletes blobs whose only link is the store's own.
    fn collect_garbage(&self) {
        use std::os::unix::fs::MetadataExt as _;
        for entry in std::fs::read_dir(self.blobs())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.metadata().is_ok_and(|m| m.nlink() <= 1) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Streams an upload into a temporary file, hashing it and counting its bytes.
pub struct Receiving {
    pub path: PathBuf,
    file: std::fs::File,
    hasher: sha2::Sha256,
    pub size: u64,
}

impl Receiving {
    pub fn new(dir: &Path) -> std::io::Result<Receiving> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("upload-{}", super::random_id()));
        let file = std::fs::File::create(&path)?;
        Ok(Receiving {
            path,
            file,
            hasher: sha2::Sha256::new(),
            size: 0,
        })
    }

    pub fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk)
    }

    /// The hex digest; the file is complete and closed.
    pub fn finish(self) -> std::io::Result<(PathBuf, String, u64)> {
        self.file.sync_all()?;
        let digest = self.hasher.finalize();
        Ok((self.path, hex::encode(digest), self.size))
    }

    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bytes of every regular file under `dir`, measured by the quota's walker
/// (through handles, links not followed); 0 when `dir` is absent, `u64::MAX`
/// when part of it cannot be measured.
pub fn dir_size(dir: &Path) -> u64 {
    match crate::executor::quota::Usage::of(dir) {
        Ok(usage) if usage.unreadable > 0 => u64::MAX,
        Ok(usage) => usage.bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            ".",
            "./",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?} passed");
        }
        assert_eq!(safe_relative("a/./b.wasm").unwrap(), Path::new("a/b.wasm"));
        assert!(
            is_safe_id("flow-1.a_b")
                && !is_safe_id("..")
                && !is_safe_id("a/b")
                && !is_safe_id(".hidden")
                && !is_safe_id("")
        );
    }

    #[test]
    fn content_is_stored_once_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = TenantDirs::new(dir.path(), "t");
        for (ws, name) in [("one", "x.bin"), ("two", "sub/y.bin")] {
            let mut up = Receiving::new(&dirs.tmp()).unwrap();
            up.write(b"same bytes").unwrap();
            let (tmp, sha, size) = up.finish().unwrap();
            dirs.commit(ws, name, &tmp, &sha, size).unwrap();
        }
        assert_eq!(std::fs::read_dir(dirs.blobs()).unwrap().count(), 1);
        assert_eq!(dirs.disk_usage(), 10);
        assert_eq!(
            std::fs::read(dirs.file("two", "sub/y.bin").unwrap()).unwrap(),
            b"same bytes"
        );
        assert!(
            dirs.file("two", "x.bin")
                .unwrap_err()
                .contains("no file `x.bin`")
        );
        std::os::unix::fs::symlink("/etc", dirs.workspace("one").join("files/etc")).unwrap();
        assert!(
            dirs.file("one", "etc/passwd")
                .unwrap_err()
                .contains("symbolic link")
        );
        dirs.remove("one").unwrap();
        assert_eq!(
            std::fs::read_dir(dirs.blobs()).unwrap().count(),
            1,
            "still linked from `two`"
        );
        dirs.remove("two").unwrap();
        assert_eq!(std::fs::read_dir(dirs.blobs()).unwrap().count(), 0);
    }
}
