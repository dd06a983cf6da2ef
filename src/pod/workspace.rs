//! Shard workspaces: `<workspace>/<pod>/shard-<i>/`, each holding an identity
//! file that says whose it is. docs/pods.md documents the layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The identity file in every shard directory.
pub const IDENTITY_FILE: &str = ".jina-wasm-shard.json";

/// Who a shard directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIdentity {
    pub pod: String,
    pub shard: usize,
    pub shards: usize,
    /// The executor's name (its file stem unless `--name` says otherwise).
    pub executor: String,
}

/// The directory of shard `shard` of pod `pod` under `root`.
pub fn shard_dir(root: &Path, pod: &str, shard: usize) -> PathBuf {
    root.join(pod).join(format!("shard-{shard}"))
}

/// Creates the shard's directory, or checks that an existing one is this
/// shard's: same pod, same shard index, same number of shards, same executor.
/// A directory without an identity file is claimed only if it is empty.
///
/// # Errors
/// A directory that belongs to someone else, or that cannot be written.
pub fn claim(root: &Path, identity: &ShardIdentity) -> anyhow::Result<PathBuf> {
    let dir = shard_dir(root, &identity.pod, identity.shard);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create shard workspace {}: {e}", dir.display()))?;
    let file = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let found: ShardIdentity = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a shard identity file: {e}", file.display()))?;
            if found != *identity {
                anyhow::bail!(
                    "shard workspace {} belongs to shard {} of {} of pod `{}` running `{}`, not to shard {} of {} of \
                     pod `{}` running `{}`; refusing to start on another shard's data (to change the number of \
                     shards, stop the Pod and run `jina-wasm reshard`: docs/stateful.md)",
                    dir.display(),
                    found.shard,
                    found.shards,
                    found.pod,
                    found.executor,
                    identity.shard,
                    identity.shards,
                    identity.pod,
                    identity.executor
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::read_dir(&dir)?.next().is_some() {
                anyhow::bail!(
                    "shard workspace {} already holds files but no {IDENTITY_FILE}: refusing to adopt data of unknown origin",
                    dir.display()
                );
            }
            let text = serde_json::to_string_pretty(identity)?;
            std::fs::write(&file, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_directory_is_claimed_once_and_checked_after() {
        let root = tempfile::tempdir().unwrap();
        let me = ShardIdentity { pod: "idx".into(), shard: 1, shards: 2, executor: "vector_indexer".into() };
        let dir = claim(root.path(), &me).unwrap();
        assert_eq!(dir, root.path().join("idx/shard-1"));
        assert_eq!(claim(root.path(), &me).unwrap(), dir);
        let resharded = ShardIdentity { shards: 3, ..me.clone() };
        assert!(claim(root.path(), &resharded).unwrap_err().to_string().contains("jina-wasm reshard"));
        let other = ShardIdentity { executor: "other".into(), ..me.clone() };
        assert!(claim(root.path(), &other).is_err());
        // A tampered identity file: another shard's data was copied in.
        std::fs::write(dir.join(IDENTITY_FILE), serde_json::to_string(&ShardIdentity { shard: 0, ..me.clone() }).unwrap()).unwrap();
        assert!(claim(root.path(), &me).unwrap_err().to_string().contains("belongs to shard 0"));
        // Files without an identity are not adopted.
        let stray = shard_dir(root.path(), "idx", 0);
        std::fs::create_dir_all(&stray).unwrap();
        std::fs::write(stray.join("data"), "x").unwrap();
        let zero = ShardIdentity { shard: 0, ..me };
        assert!(claim(root.path(), &zero).unwrap_err().to_string().contains("unknown origin"));
    }
}
