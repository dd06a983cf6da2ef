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
//! backslash, no NUL), and no existing component on the way may be a symbolic
//! link (the daemon never makes one, and guests cannot: docs/sandbox.md).
//! Directories executors write in (state) are reached through handles that
//! cannot leave the tenant's root ([`TenantDirs::beneath`]), checked when an
//! object starts; they are measured and removed through handles too
//! (`executor::quota`), whatever a guest left in them.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

/// A workspace id, tenant name or object name: 1-64 of `A-Za-z0-9._-`, not starting with `.`.
pub fn is_safe_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

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

/// `root/relative`, refusing it if any existing component below `root` is a
/// symbolic link (or `root` itself is).
///
/// # Errors
/// Why, naming the link.
pub fn resolve_inside(root: &Path, relative: &Path) -> Result<PathBuf, String> {
    let mut at = root.to_path_buf();
    let mut parts = vec![at.clone()];
    for part in relative.components() {
        at.push(part);
        parts.push(at.clone());
    }
    for path in parts {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let shown = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                return Err(format!(
                    "`{shown}` is a symbolic link: links out of a workspace are refused"
                ));
            }
            _ => {}
        }
    }
    Ok(at)
}

/// One file of a workspace, as listed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
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

    pub fn manifest(&self, id: &str) -> BTreeMap<String, FileEntry> {
        std::fs::read(self.workspace(id).join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write_manifest(
        &self,
        id: &str,
        manifest: &BTreeMap<String, FileEntry>,
    ) -> std::io::Result<()> {
        let path = self.workspace(id).join("manifest.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(manifest)?)?;
        std::fs::rename(tmp, path)
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
        use cap_fs_ext::DirExt as _;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("cannot create the tenant's directory: {e}"))?;
        let mut dir = cap_std::fs::Dir::open_ambient_dir(&self.root, cap_std::ambient_authority())
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
            match dir.create_dir(part) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create `{}`: {e}", at.display())),
            }
            dir = dir.open_dir_nofollow(part).map_err(|e| {
                if dir.symlink_metadata(part).is_ok_and(|m| m.file_type().is_symlink()) {
                    format!("`{}` is a symbolic link: refusing to follow it out of the tenant's directory", at.display())
                } else {
                    format!("cannot open `{}`: {e}", at.display())
                }
            })?;
        }
        Ok(self.root.join(relative))
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

    /// Moves a received upload (`tmp`, with its digest and size) into the blob
    /// store and links it into workspace `id` as `name`.
    ///
    /// # Errors
    /// A name that escapes, or a filesystem failure.
    pub fn commit(
        &self,
        id: &str,
        name: &str,
        tmp: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<FileEntry, String> {
        let relative = safe_relative(name)?;
        let files = self.workspace(id).join("files");
        std::fs::create_dir_all(&files)
            .map_err(|e| format!("cannot create workspace `{id}`: {e}"))?;
        std::fs::create_dir_all(self.blobs())
            .map_err(|e| format!("cannot create the blob store: {e}"))?;
        let target = resolve_inside(&files, &relative)?;
        let blob = self.blobs().join(sha256);
        if blob.exists() {
            let _ = std::fs::remove_file(tmp);
        } else {
            std::fs::rename(tmp, &blob).map_err(|e| format!("cannot store `{name}`: {e}"))?;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create the folder of `{name}`: {e}"))?;
        }
        // Replace, never write through: the old name may be a link to a blob
        // another workspace shares.
        let _ = std::fs::remove_file(&target);
        std::fs::hard_link(&blob, &target)
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

    /// The path of file `name` in workspace `id`, if the tenant uploaded it.
    ///
    /// # Errors
    /// A name that escapes, or a file that is not there.
    pub fn file(&self, id: &str, name: &str) -> Result<PathBuf, String> {
        let relative = safe_relative(name)?;
        let path = resolve_inside(&self.workspace(id).join("files"), &relative)?;
        if !self
            .manifest(id)
            .contains_key(relative.to_string_lossy().as_ref())
            || !path.is_file()
        {
            return Err(format!(
                "workspace `{id}` has no file `{name}`: upload it first"
            ));
        }
        Ok(path)
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

/// The sha256 of a file, in hex (the Flow checks what a daemon already has).
///
/// # Errors
/// The file cannot be read.
pub fn sha256_of(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
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
