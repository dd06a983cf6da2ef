//! Moving a sharded Pod's data from N shards to M: `jina-wasm reshard`.
//!
//! The host cannot read an executor's files (their format is the executor's),
//! so the data moves through the executor itself, by two endpoints an executor
//! that supports re-sharding implements (docs/stateful.md):
//!
//! - `/export` with parameters `{"offset": o, "limit": n}`: up to `n` of its
//!   stored documents from position `o`; fewer than `n` means the end;
//! - `/import`: store the given documents as they are.
//!
//! Each old shard is opened read-only and paged through; every document goes
//! to the new shard the Pod's head would send its id to ([`shard_of`]). The new
//! shards are built in a staging directory, dumped, counted, and only then
//! swapped in; the old shards are kept beside them until the user deletes them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;

use super::shard_of;
use super::workspace::{self, LEGACY_IDENTITY_FILE, Scope, ShardIdentity};
use crate::document::Document;
use crate::executor::quota::remove_tree;
use crate::executor::{Executor, ExecutorSpec, Runtime, set_runtime_arg};

/// Documents per `/export` page and per `/import` request.
pub const PAGE: usize = 1000;

/// What `reshard` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReshardReport {
    pub pod: String,
    pub from: usize,
    pub to: usize,
    /// Documents exported from the old shards (and found in the new ones).
    pub documents: usize,
    /// Documents in each new shard.
    pub per_shard: Vec<usize>,
    /// Where the old shards are now.
    pub previous: PathBuf,
}

/// Re-shards pod `spec.name` under `root` (the Pod's `--workspace`) into
/// `shards` shards, with the executor `spec` describes (its `with:` as the Pod
/// has it). The Pod must be stopped.
///
/// # Errors
/// No shards there, shards of another executor or of mixed counts, an
/// executor without `/export`/`/import`, a count that does not add up; the
/// workspace is unchanged in each case.
pub fn reshard(
    runtime: &Arc<Runtime>,
    uses: &Path,
    spec: &ExecutorSpec,
    root: &Path,
    shards: usize,
) -> anyhow::Result<ReshardReport> {
    anyhow::ensure!(shards >= 1, "--shards must be at least 1");
    let pod = spec.name.clone();
    // Every access to the workspace goes through this handle: the shard
    // directories are the guests', and nothing in them is followed.
    let root_dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .with_context(|| format!("no shards of pod `{pod}` in {}", root.display()))?;
    let from = existing_shards(&root_dir, root, &pod, &spec.name)?;
    anyhow::ensure!(
        from != shards,
        "pod `{pod}` in {} already has {shards} shards",
        root.display()
    );
    let previous_name = format!("{pod}.{from}-shards");
    let previous = root.join(&previous_name);
    anyhow::ensure!(
        root_dir.symlink_metadata(&previous_name).is_err(),
        "{} is in the way (the old shards of an earlier re-sharding?): move or delete it first",
        previous.display()
    );
    let staging_name = format!(".{pod}.reshard");
    let staging = root.join(&staging_name);
    if root_dir.symlink_metadata(&staging_name).is_ok() {
        // Only an earlier, interrupted run of ours makes it (its guests wrote
        // in it: removed through handles, whatever they left).
        remove_tree(&root_dir, staging_name.as_ref())
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let component = runtime.load(uses).map_err(anyhow::Error::from)?;
    let open =
        |dir: PathBuf, shard: usize, count: usize, read_only: bool| -> anyhow::Result<Executor> {
            let mut spec = spec.clone();
            spec.name = format!("{pod}/shard-{shard}");
            spec.sandbox.workspace = Some(dir);
            spec.sandbox.read_only = read_only;
            set_runtime_arg(&mut spec.config, "shard_id", json!(shard));
            set_runtime_arg(&mut spec.config, "shards", json!(count));
            Ok(Executor::start(runtime.clone(), component.clone(), spec)?)
        };

    let mut targets = (0..shards)
        .map(|j| {
            let identity = ShardIdentity {
                pod: pod.clone(),
                shard: j,
                shards,
                executor: spec.name.clone(),
            };
            open(
                workspace::claim(&staging, &identity, Scope::Pod)?,
                j,
                shards,
                false,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut documents = 0;
    for i in 0..from {
        let mut source = open(workspace::shard_dir(root, &pod, i), i, from, true)?;
        let mut pending: Vec<Vec<Document>> = vec![Vec::new(); shards];
        let exported = export_all(&mut source, |doc| {
            let j = shard_of(&doc.id, shards);
            pending[j].push(doc);
            if pending[j].len() >= PAGE {
                import(&mut targets[j], std::mem::take(&mut pending[j]))?;
            }
            Ok(())
        })?;
        for (j, docs) in pending.into_iter().enumerate() {
            import(&mut targets[j], docs)?;
        }
        source.close()?;
        tracing::info!(pod = %pod, shard = i, documents = exported, "exported");
        documents += exported;
    }
    anyhow::ensure!(
        documents > 0,
        "the old shards exported no documents (does the executor implement /export?); the workspace is unchanged"
    );
    let mut per_shard = Vec::with_capacity(shards);
    for mut target in targets {
        target.dump()?;
        per_shard.push(export_all(&mut target, |_| Ok(()))?);
        target.close()?;
    }
    let found: usize = per_shard.iter().sum();
    anyhow::ensure!(
        found == documents,
        "the new shards hold {found} documents but {documents} were exported (does the executor's /import store every \
         document /export returns?); the workspace is unchanged, the new shards are in {}",
        staging.display()
    );

    // The swap: two renames in one directory. Between them the Pod has no
    // data directory, and both copies exist (docs/stateful.md says how to finish).
    let current = root.join(&pod);
    root_dir
        .rename(&pod, &root_dir, &previous_name)
        .with_context(|| format!("cannot move {} aside", current.display()))?;
    root_dir
        .rename(Path::new(&staging_name).join(&pod), &root_dir, &pod)
        .with_context(|| format!("cannot move the new shards to {}", current.display()))?;
    let _ = root_dir.remove_dir(&staging_name);
    Ok(ReshardReport {
        pod,
        from,
        to: shards,
        documents,
        per_shard,
        previous,
    })
}

/// The number of shards of `pod` under `root`, after checking that every shard
/// directory belongs to it and to `executor`. Read through handles: a link in
/// the Pod's directory or in place of an identity is refused, never followed.
fn existing_shards(
    root_dir: &cap_std::fs::Dir,
    root: &Path,
    pod: &str,
    executor: &str,
) -> anyhow::Result<usize> {
    use cap_fs_ext::DirExt as _;
    let dir = root.join(pod);
    let pod_dir = root_dir
        .open_dir_nofollow(pod)
        .with_context(|| format!("no shards of pod `{pod}` in {}", root.display()))?;
    let mut shards = Vec::new();
    for entry in pod_dir
        .entries()
        .with_context(|| format!("cannot read {}", dir.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        let Some(index) = name.strip_prefix("shard-") else {
            anyhow::bail!("{} is not a shard directory", path.display());
        };
        if index.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let index: usize = index
            .parse()
            .map_err(|_| anyhow::anyhow!("{} is not a shard directory", path.display()))?;
        let meta = pod_dir.symlink_metadata(&name)?;
        anyhow::ensure!(
            meta.is_dir(),
            "{} is not a shard directory (a link or a file)",
            path.display()
        );
        let id_name = workspace::identity_name(index);
        let identity = match workspace::read_identity(&pod_dir, &id_name, &dir.join(&id_name))? {
            Some(identity) => identity,
            None => {
                let shard = pod_dir
                    .open_dir_nofollow(&name)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                workspace::read_identity(
                    &shard,
                    LEGACY_IDENTITY_FILE,
                    &path.join(LEGACY_IDENTITY_FILE),
                )?
                .with_context(|| {
                    format!("{} is not a shard directory (no {id_name})", path.display())
                })?
            }
        };
        anyhow::ensure!(
            identity.pod == pod && identity.executor == executor,
            "{} belongs to pod `{}` running `{}`, not to `{pod}` running `{executor}`",
            path.display(),
            identity.pod,
            identity.executor
        );
        shards.push(identity);
    }
    let count = shards.len();
    anyhow::ensure!(count > 0, "no shards of pod `{pod}` in {}", dir.display());
    shards.sort_by_key(|s| s.shard);
    for (i, s) in shards.iter().enumerate() {
        anyhow::ensure!(
            s.shard == i && s.shards == count,
            "{} holds shard {} of {}, but {count} shard directories are there: the shards are incomplete",
            dir.display(),
            s.shard,
            s.shards
        );
    }
    Ok(count)
}

/// Pages through `/export`, handing every document to `each`; returns the count.
fn export_all(
    executor: &mut Executor,
    mut each: impl FnMut(Document) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut offset = 0;
    loop {
        let page = executor
            .handle("/export", &[], &json!({"offset": offset, "limit": PAGE}))
            .context("exporting a shard (does the executor implement /export?)")?;
        let n = page.len();
        anyhow::ensure!(
            n <= PAGE,
            "`{}` returned {n} documents from /export when asked for {PAGE}",
            executor.name()
        );
        for doc in page {
            each(doc)?;
        }
        offset += n;
        if n < PAGE {
            return Ok(offset);
        }
    }
}

fn import(executor: &mut Executor, docs: Vec<Document>) -> anyhow::Result<()> {
    if !docs.is_empty() {
        executor
            .handle("/import", &docs, &json!({}))
            .context("importing into a new shard (does the executor implement /import?)")?;
    }
    Ok(())
}
