//! Shard workspaces. docs/pods.md documents the layout:
//!
//! ```text
//! <workspace>/<pod>/shard-<i>/        shard i's data: the guest's /workspace
//! <workspace>/<pod>/shard-<i>.json    shard i's identity: whose data it is
//! <workspace>/.jina-wasm-volume.json  only for `pea --shard-id`: the one shard
//!                                     this workspace (a volume) holds
//! ```
//!
//! A guest sees only its `shard-<i>/`; the directory above it is the host's,
//! so the identity lives there, where no guest can write it. Every access goes
//! through directory handles (`cap-std`) that cannot leave the workspace, never
//! follows a link (a link where a directory or identity is expected is
//! refused), and reads an identity with a size cap. Identities written inside
//! the shard directory by earlier versions ([`LEGACY_IDENTITY_FILE`]) are
//! checked the same way and moved out on first use.

use std::path::{Path, PathBuf};

use cap_fs_ext::DirExt as _;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use crate::host_file;

/// Where earlier versions kept a shard's identity: inside its directory, where
/// its guest could rewrite it.
pub const LEGACY_IDENTITY_FILE: &str = ".jina-wasm-shard.json";
/// The identity of the one shard a `pea --shard-id` workspace holds.
pub const VOLUME_FILE: &str = ".jina-wasm-volume.json";
/// An identity is a few lines of JSON; anything longer is not one (a link to
/// `/dev/zero` is never even opened: links are not followed).
pub const MAX_IDENTITY_BYTES: u64 = 64 << 10;

/// Who a shard directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIdentity {
    pub pod: String,
    pub shard: usize,
    pub shards: usize,
    /// The executor's name (its file stem unless `--name` says otherwise).
    pub executor: String,
}

/// Who claims a shard: the Pod that owns all its shards under one workspace,
/// or a Pea started alone with `--shard-id`, whose workspace is its own volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pod,
    Alone,
}

/// The directory of shard `shard` of pod `pod` under `root`.
pub fn shard_dir(root: &Path, pod: &str, shard: usize) -> PathBuf {
    root.join(pod).join(format!("shard-{shard}"))
}

/// The name of shard `shard`'s identity file in its Pod's directory.
pub fn identity_name(shard: usize) -> String {
    format!("shard-{shard}.json")
}

/// Creates the shard's directory, or checks that an existing one is this
/// shard's: same pod, same shard index, same number of shards, same executor.
/// A directory without an identity is claimed only if it is empty. With
/// [`Scope::Alone`] the whole workspace is checked too: it must hold no other
/// shard's data, whatever directory it is mounted as.
///
/// # Errors
/// A directory that belongs to someone else, a link where a directory or an
/// identity was expected, or one that cannot be written.
pub fn claim(root: &Path, identity: &ShardIdentity, scope: Scope) -> anyhow::Result<PathBuf> {
    let shown = shard_dir(root, &identity.pod, identity.shard);
    std::fs::create_dir_all(root)
        .map_err(|e| anyhow::anyhow!("cannot create workspace {}: {e}", root.display()))?;
    let root_dir = Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| anyhow::anyhow!("cannot open workspace {}: {e}", root.display()))?;
    if scope == Scope::Alone {
        claim_volume(&root_dir, root, identity)?;
    }
    let pod_dir = open_or_create_dir(&root_dir, &identity.pod, &root.join(&identity.pod))?;
    let name = format!("shard-{}", identity.shard);
    let shard = open_or_create_dir(&pod_dir, &name, &shown)?;
    let id_name = identity_name(identity.shard);
    let id_shown = root.join(&identity.pod).join(&id_name);
    let legacy_shown = shown.join(LEGACY_IDENTITY_FILE);
    let (found, legacy) = match read_identity(&pod_dir, &id_name, &id_shown)? {
        Some(found) => (Some(found), false),
        None => (
            read_identity(&shard, LEGACY_IDENTITY_FILE, &legacy_shown)?,
            true,
        ),
    };
    match found {
        Some(found) if found != *identity => anyhow::bail!(
            "shard workspace {} belongs to shard {} of {} of pod `{}` running `{}`, not to shard {} of {} of pod `{}` \
             running `{}`; refusing to start on another shard's data (to change the number of shards, stop the Pod and \
             run `jina-wasm reshard`: docs/stateful.md)",
            shown.display(),
            found.shard,
            found.shards,
            found.pod,
            found.executor,
            identity.shard,
            identity.shards,
            identity.pod,
            identity.executor
        ),
        Some(_) => {
            if legacy {
                write_identity(&pod_dir, &id_name, &id_shown, identity)?;
                shard.remove_file(LEGACY_IDENTITY_FILE).map_err(|e| {
                    anyhow::anyhow!("cannot remove {}: {e}", legacy_shown.display())
                })?;
            }
        }
        None => {
            let mut entries = shard
                .entries()
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", shown.display()))?;
            if entries.next().is_some() {
                anyhow::bail!(
                    "shard workspace {} already holds files but no identity ({}): refusing to adopt data of unknown origin",
                    shown.display(),
                    id_shown.display()
                );
            }
            write_identity(&pod_dir, &id_name, &id_shown, identity)?;
        }
    }
    Ok(shown)
}

/// A workspace claimed by one shard alone: refused if it records another
/// shard, or (written before the record existed) holds another shard's data.
fn claim_volume(root: &Dir, shown: &Path, identity: &ShardIdentity) -> anyhow::Result<()> {
    let file = shown.join(VOLUME_FILE);
    if let Some(found) = read_identity(root, VOLUME_FILE, &file)? {
        anyhow::ensure!(
            found == *identity,
            "workspace {} is the volume of shard {} of {} of pod `{}` running `{}`, not of shard {} of {} of pod `{}` \
             running `{}` (its {VOLUME_FILE} says so): refusing to start on another shard's volume, whatever it is \
             mounted as",
            shown.display(),
            found.shard,
            found.shards,
            found.pod,
            found.executor,
            identity.shard,
            identity.shards,
            identity.pod,
            identity.executor
        );
        return Ok(());
    }
    if let Ok(pod) = root.open_dir_nofollow(&identity.pod) {
        for entry in pod.entries()?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let other = name
                .strip_prefix("shard-")
                .map(|rest| rest.strip_suffix(".json").unwrap_or(rest))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n != identity.shard);
            if let Some(other) = other {
                anyhow::bail!(
                    "workspace {} holds shard {other} of pod `{}` ({}): refusing to start shard {} on another shard's \
                     volume (a Pea started with --shard-id owns its workspace; give each shard its own)",
                    shown.display(),
                    identity.pod,
                    shown.join(&identity.pod).join(&name).display(),
                    identity.shard
                );
            }
        }
    }
    write_identity(root, VOLUME_FILE, &file, identity)
}

/// Opens directory `name` of `parent`, creating it if missing; a link there is
/// refused, not followed.
fn open_or_create_dir(parent: &Dir, name: &str, shown: &Path) -> anyhow::Result<Dir> {
    match parent.create_dir(name) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create {}: {e}", shown.display()),
    }
    parent.open_dir_nofollow(name).map_err(|e| {
        let link = parent
            .symlink_metadata(name)
            .is_ok_and(|m| m.file_type().is_symlink());
        if link {
            anyhow::anyhow!(
                "{} is a symbolic link, not a directory: refusing to follow it",
                shown.display()
            )
        } else {
            anyhow::anyhow!("cannot open {}: {e}", shown.display())
        }
    })
}

/// Reads and parses an identity file (see [`host_file::read`]).
///
/// # Errors
/// As [`host_file::read`], or a file that is not an identity.
pub fn read_identity(dir: &Dir, name: &str, shown: &Path) -> anyhow::Result<Option<ShardIdentity>> {
    let Some(bytes) = host_file::read(dir, name, shown, MAX_IDENTITY_BYTES)? else {
        return Ok(None);
    };
    let found = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a shard identity file: {e}", shown.display()))?;
    Ok(Some(found))
}

/// Writes an identity: a temporary file, then a rename over the name (which
/// replaces a link there rather than writing through it).
fn write_identity(
    dir: &Dir,
    name: &str,
    shown: &Path,
    identity: &ShardIdentity,
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(identity)? + "\n";
    host_file::replace(dir, name, shown, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_directory_is_claimed_once_and_checked_after() {
        let root = tempfile::tempdir().unwrap();
        let me = ShardIdentity {
            pod: "idx".into(),
            shard: 1,
            shards: 2,
            executor: "vector_indexer".into(),
        };
        let dir = claim(root.path(), &me, Scope::Pod).unwrap();
        assert_eq!(dir, root.path().join("idx/shard-1"));
        assert!(
            root.path().join("idx/shard-1.json").is_file()
                && !dir.join(LEGACY_IDENTITY_FILE).exists()
        );
        assert_eq!(claim(root.path(), &me, Scope::Pod).unwrap(), dir);
        let resharded = ShardIdentity {
            shards: 3,
            ..me.clone()
        };
        assert!(
            claim(root.path(), &resharded, Scope::Pod)
                .unwrap_err()
                .to_string()
                .contains("jina-wasm reshard")
        );
        let other = ShardIdentity {
            executor: "other".into(),
            ..me.clone()
        };
        assert!(claim(root.path(), &other, Scope::Pod).is_err());
        // A tampered identity file: another shard's identity was copied in.
        let zero = ShardIdentity {
            shard: 0,
            ..me.clone()
        };
        std::fs::write(
            root.path().join("idx/shard-1.json"),
            serde_json::to_string(&zero).unwrap(),
        )
        .unwrap();
        assert!(
            claim(root.path(), &me, Scope::Pod)
                .unwrap_err()
                .to_string()
                .contains("belongs to shard 0")
        );
        // Files without an identity are not adopted.
        let stray = shard_dir(root.path(), "idx", 0);
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("data"), "x").unwrap();
        assert!(
            claim(root.path(), &zero, Scope::Pod)
                .unwrap_err()
                .to_string()
                .contains("unknown origin")
        );
    }

    #[test]
    fn links_and_huge_identities_are_refused_and_legacy_ones_moved_out() {
        let root = tempfile::tempdir().unwrap();
        let me = ShardIdentity {
            pod: "idx".into(),
            shard: 0,
            shards: 1,
            executor: "e".into(),
        };
        // An identity of the old layout (inside the shard) is checked and moved out.
        let dir = shard_dir(root.path(), "idx", 0);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data"), "x").unwrap();
        std::fs::write(
            dir.join(LEGACY_IDENTITY_FILE),
            serde_json::to_string(&me).unwrap(),
        )
        .unwrap();
        claim(root.path(), &me, Scope::Pod).unwrap();
        assert!(
            !dir.join(LEGACY_IDENTITY_FILE).exists()
                && root.path().join("idx/shard-0.json").is_file()
        );
        // A link in place of the identity is never followed.
        std::fs::remove_file(root.path().join("idx/shard-0.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.path().join("idx/shard-0.json")).unwrap();
        let e = claim(root.path(), &me, Scope::Pod).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(root.path().join("idx/shard-0.json")).unwrap();
        std::fs::write(
            root.path().join("idx/shard-0.json"),
            vec![b' '; MAX_IDENTITY_BYTES as usize + 1],
        )
        .unwrap();
        assert!(
            claim(root.path(), &me, Scope::Pod)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        // A link in place of a shard directory is refused.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), root.path().join("idx/shard-1")).unwrap();
        let e = claim(
            root.path(),
            &ShardIdentity {
                shard: 1,
                shards: 2,
                ..me
            },
            Scope::Pod,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(
            std::fs::read_dir(other.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
    }

    #[test]
    fn a_volume_holds_one_shard_whatever_it_is_mounted_as() {
        let volume = tempfile::tempdir().unwrap();
        let zero = ShardIdentity {
            pod: "idx".into(),
            shard: 0,
            shards: 2,
            executor: "e".into(),
        };
        claim(volume.path(), &zero, Scope::Alone).unwrap();
        assert!(volume.path().join(VOLUME_FILE).is_file());
        let one = ShardIdentity {
            shard: 1,
            ..zero.clone()
        };
        let e = claim(volume.path(), &one, Scope::Alone)
            .unwrap_err()
            .to_string();
        assert!(e.contains("volume of shard 0 of 2"), "{e}");
        let renamed = ShardIdentity {
            pod: "other".into(),
            ..zero.clone()
        };
        assert!(claim(volume.path(), &renamed, Scope::Alone).is_err());
        assert!(
            !volume.path().join("idx/shard-1").exists() && !volume.path().join("other").exists()
        );
        // A volume from before the record: its shard directories say it.
        std::fs::remove_file(volume.path().join(VOLUME_FILE)).unwrap();
        let e = claim(volume.path(), &one, Scope::Alone)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds shard 0"), "{e}");
        claim(volume.path(), &zero, Scope::Alone).unwrap();
    }
}
