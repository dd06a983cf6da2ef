//! `jina-wasm pod`: one executor as shards, replicas or both behind a head and a tail.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::pea::{PeaCommand, stop_on_signal};
use crate::pod::{Balance, PodConfig, Polling};

/// Run an executor as a Pod: --shards N stateful partitions (each with its own
/// workspace directory, <workspace>/<name>/shard-<i>/), --parallel N
/// replicas, or both (each shard a set of replicas), behind a head that fans
/// requests out and a tail that collects and merges the results
/// (docs/pods.md).
///
/// With one Pea and no --uses-before/--uses-after the Pod is a singleton: a
/// plain Pea. Takes every `jina-wasm pea` option; the sockets and ports are the
/// Pod's outer ones (the head's input, the tail's output, the control socket).
/// Prints one JSON line with its addresses and Peas when every Pea is ready.
#[derive(Debug, Args)]
// A Pea's place in a Pod is the Pod's to give: not a `pod` flag.
#[command(mut_arg("shard_id", |a| a.hide(true)), mut_arg("shard_count", |a| a.hide(true)), mut_arg("replica_id", |a| a.hide(true)))]
pub struct PodCommand {
    #[command(flatten)]
    pub pea: PeaCommand,

    /// Stateful partitions: documents are spread by id (a stable hash), each
    /// shard keeps its own workspace. With --parallel, each shard is that
    /// many replicas sharing the shard's workspace.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: u32,

    /// Replicas, load-balanced (Jina 3 calls them replicas). With --shards,
    /// the replicas of each shard: a shard's part goes to one of them.
    #[arg(long, visible_alias = "replicas", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,

    /// `any` (replicas: one replica per request; shards: each shard gets the
    /// documents whose ids it owns), `all` (every Pea gets the request; with
    /// shards and replicas, one replica of every shard), or per endpoint:
    /// `/index:any,/search:all,*:any`, or as Jina 3 writes it,
    /// `'{"/index": "ANY", "/search": "ALL", "*": "ANY"}'`.
    #[arg(long, default_value = "any")]
    pub polling: Polling,

    /// How the head picks a replica for `any`: `credit` (only a replica that has
    /// asked for work; a busy one gets nothing new) or `round-robin`.
    #[arg(long, value_enum, ignore_case = true, default_value = "credit")]
    pub load_balancing: Balance,

    /// An executor the head runs on every request before fanning it out.
    #[arg(long, value_name = "FILE.wasm")]
    pub uses_before: Option<PathBuf>,

    /// An executor the tail runs on the concatenated parts instead of the default
    /// merge (which concatenates documents and merges the matches of a query
    /// answered by several shards, best first, keeping `top_k`).
    #[arg(long, value_name = "FILE.wasm")]
    pub uses_after: Option<PathBuf>,

    /// `pod`: the whole Pod in this process (Peas as threads or children).
    /// `head`: only the head and the tail (and --uses-before/--uses-after);
    /// the Peas run elsewhere as `jina-wasm pea --socket-in DEALER_CONNECT
    /// --port-in <port-fanout> --socket-out PUSH_CONNECT --port-out
    /// <port-parts>` with --shard-id or --replica-id (a Kubernetes or Compose
    /// export, docs/kubernetes.md). A head answers at once; its STATUS is
    /// healthy once every shard (or one replica) is connected. --uses is not
    /// loaded by a head; it names the executor in workspace checks only.
    #[arg(long, value_enum, ignore_case = true, default_value = "pod")]
    pub role: Role,

    /// With --role head: the interface the head's and tail's sockets for the
    /// Peas bind (0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host_peas: String,

    /// With --role head: the port the head's ROUTER binds; each Pea's DEALER
    /// input connects to it (0: the OS picks).
    #[arg(long, default_value_t = 0)]
    pub port_fanout: u16,

    /// With --role head: the port the tail's PULL binds; each Pea's PUSH
    /// output connects to it (0: the OS picks).
    #[arg(long, default_value_t = 0)]
    pub port_parts: u16,
}

/// What part of a Pod this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Pod,
    Head,
}

impl PodCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(self.run())
    }

    /// The Pod these flags describe, without the arguments of its child
    /// processes (which depend on what this process turns on).
    ///
    /// # Errors
    /// Flags that do not fit together.
    pub fn config(&self) -> anyhow::Result<PodConfig> {
        if self.pea.shard_id.is_some() || self.pea.replica_id.is_some() {
            anyhow::bail!(
                "--shard-id and --replica-id are `jina-wasm pea` flags (a Pea of a head-only Pod), not `pod` flags"
            );
        }
        let pea = self.pea.config()?;
        Ok(PodConfig {
            timeout_parts: crate::pod::parts_timeout(pea.executor.sandbox.call_timeout),
            pea,
            shards: self.shards as usize,
            replicas: self.parallel as usize,
            polling: self.polling.clone(),
            balance: self.load_balancing,
            uses_before: self.uses_before.as_deref().map(super::absolute),
            uses_after: self.uses_after.as_deref().map(super::absolute),
            backend: self.pea.runtime_backend,
            timeout_ready: self.pea.timeout_ready,
            child_args: Vec::new(),
            external: (self.role == Role::Head).then(|| crate::pod::ExternalPeas {
                fanout: format!("tcp://{}:{}", self.host_peas, self.port_fanout),
                parts: format!("tcp://{}:{}", self.host_peas, self.port_parts),
            }),
        })
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let mut config = self.config()?;
        let name = config.pea.name.clone();
        let runtime = self.pea.runtime.runtime(0)?;
        let mut child_args = self.pea.runtime.child_args();
        if self.pea.quiet {
            child_args.push("--quiet".to_string());
        }
        let served = tokio_util::sync::CancellationToken::new();
        let (metrics, monitoring) = self
            .pea
            .monitoring
            .start(false, None, served.clone())
            .await?;
        let _served = served.drop_guard();
        if metrics {
            child_args.extend(self.pea.monitoring.child_args());
        }
        // Flushes the last spans once the Pod has stopped; the Pod's Peas in
        // processes of their own export theirs.
        let (traces, _flush) = self.pea.tracing.start(None, &name)?;
        if let Some(endpoint) = &traces {
            child_args.extend(super::common::TracingArgs::child_args(endpoint));
        }
        config.child_args = child_args;
        let pod = crate::pod::start(runtime, config).await?;
        let mut ready = serde_json::to_value(&pod.addresses)?;
        let object = ready.as_object_mut().expect("an object");
        object.insert("pod".into(), name.clone().into());
        object.insert("peas".into(), serde_json::to_value(&pod.members)?);
        if let Some(external) = &pod.external {
            object.insert("fanout".into(), external.fanout.clone().into());
            object.insert("parts".into(), external.parts.clone().into());
        }
        if let Some(url) = monitoring {
            object.insert("monitoring".into(), url.into());
        }
        println!("{ready}");
        stop_on_signal(pod.stop_token());
        pod.wait().await.with_context(|| format!("pod `{name}`"))?;
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::spec::{Flow, PodSpec, every_setting};

    #[derive(clap::Parser)]
    struct Pod {
        #[command(flatten)]
        pod: PodCommand,
    }

    /// The one-declaration property on the command line: every setting of
    /// a Flow file's Pod is a `pod` flag of the same name (`with`:
    /// `--uses-with`), and the argv `pod_args` renders from a Flow's Pod
    /// parses back into the same config.
    #[test]
    fn every_setting_of_a_pod_is_a_flag_with_the_same_meaning() {
        let command = <PodCommand as clap::Args>::augment_args(clap::Command::new("pod"));
        let flags: Vec<&str> = command
            .get_arguments()
            .filter_map(clap::Arg::get_long_and_visible_aliases)
            .flatten()
            .collect();
        for key in PodSpec::keys() {
            let flag = match *key {
                "needs" | "host" => continue,
                "with" => "uses-with".to_string(),
                key => key.replace('_', "-"),
            };
            assert!(flags.contains(&flag.as_str()), "`{key}`: no --{flag}");
        }
        let mut pod = every_setting();
        pod["name"] = "idx".into();
        pod["uses"] = "idx.wasm".into();
        pod["workspace"] = "ws".into();
        let yaml = format!("version: 1\npods: [{pod}]\n");
        let flow = Flow::parse(&yaml, std::path::Path::new("/f/flow.yml"), |_| None).unwrap();
        let options = crate::flow::resolve::RunOptions::default();
        let config = crate::flow::resolve::resolve(&flow, &options)
            .unwrap()
            .remove(0);
        let argv = std::iter::once("pod".to_string()).chain(crate::pod::pod_args(&config));
        let parsed = <Pod as clap::Parser>::try_parse_from(argv).unwrap();
        let parsed = parsed.pod.config().unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{config:?}"));
    }
}
