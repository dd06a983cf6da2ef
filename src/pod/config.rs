//! How a Pod is configured: its layout (shards, replicas, both), how the Head
//! picks Peas (polling, balance), where its Peas run (backend), and the
//! config each Pea is given, by its place in the Pod.

use super::*;

/// Shards partition state; replicas share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Shards,
    Replicas,
    /// Shards, each a set of replicas (Jina 3's shards × replicas): member
    /// `i` is replica `i % replicas` of shard `i / replicas`.
    ShardReplicas {
        replicas: usize,
    },
}

impl Layout {
    /// The shard member `index` (named `name`) of a Pod named `pod` serves:
    /// its own index for shards, 0 for replicas; for shards × replicas, the
    /// shard its name says (`<pod>/shard-<i>/replica-<j>`), so a replica that
    /// joins a head-only Pod or replaces another in a rolling update lands in
    /// its shard whatever its index.
    pub fn shard_of_member(self, pod: &str, index: usize, name: &str) -> Option<usize> {
        match self {
            Layout::Shards => Some(index),
            Layout::Replicas => Some(0),
            Layout::ShardReplicas { .. } => name
                .strip_prefix(pod)?
                .strip_prefix("/shard-")?
                .split_once('/')?
                .0
                .parse()
                .ok(),
        }
    }
}

/// How a Head picks a replica for `polling any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    /// The replica that asked for work (sent IDLE) and has not been given any since.
    #[default]
    Credit,
    /// Each connected replica in turn, busy or not.
    RoundRobin,
}

/// Where the Peas of a Pod run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Backend {
    /// Tasks and threads of the Pod's process.
    #[default]
    Thread,
    /// One `jina-wasm pea` child process each.
    Process,
}

/// `any` (one Pea per request, or its part for shards) or `all` (every Pea),
/// for every endpoint or per endpoint (`/index:any,/search:all,*:any`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Polling {
    default_all: bool,
    endpoints: Vec<(String, bool)>,
}

impl Polling {
    pub const ANY: Polling = Polling {
        default_all: false,
        endpoints: Vec::new(),
    };

    pub fn is_all(&self, endpoint: &str) -> bool {
        self.endpoints
            .iter()
            .find(|(e, _)| e == endpoint)
            .map_or(self.default_all, |(_, all)| *all)
    }

    /// Every endpoint is `all`.
    pub fn always_all(&self) -> bool {
        self.default_all && self.endpoints.iter().all(|(_, all)| *all)
    }
}

impl std::fmt::Display for Polling {
    /// The form [`FromStr`] reads back: `any`, `all`, or `/index:any,*:all`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = |all: bool| if all { "all" } else { "any" };
        if self.endpoints.is_empty() {
            return f.write_str(mode(self.default_all));
        }
        let mut items: Vec<String> = self
            .endpoints
            .iter()
            .map(|(e, all)| format!("{e}:{}", mode(*all)))
            .collect();
        items.push(format!("*:{}", mode(self.default_all)));
        f.write_str(&items.join(","))
    }
}

impl FromStr for Polling {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mode = |m: &str| match m.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(false),
            "all" => Ok(true),
            other => Err(format!("polling `{other}` is neither `any` nor `all`")),
        };
        // Jina 3's form: a JSON object of endpoint to `ANY`/`ALL`, `*` the rest.
        if text.trim_start().starts_with('{') {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
                .map_err(|e| {
                    format!("`{text}` is not a JSON object of ENDPOINT to \"any\" or \"all\" ({e}); or write /index:any,/search:all,*:any")
                })?;
            let mut polling = Polling::ANY;
            for (endpoint, m) in map {
                let m = m.as_str().ok_or_else(|| {
                    format!("polling of `{endpoint}`: `{m}` is not \"any\" or \"all\"")
                })?;
                let all = mode(m).map_err(|e| format!("polling of `{endpoint}`: {e}"))?;
                match endpoint.as_str() {
                    "*" => polling.default_all = all,
                    _ => polling.endpoints.push((endpoint, all)),
                }
            }
            return Ok(polling);
        }
        if !text.contains(':') {
            return Ok(Polling {
                default_all: mode(text)?,
                endpoints: Vec::new(),
            });
        }
        let mut polling = Polling::ANY;
        for item in text.split(',').filter(|i| !i.trim().is_empty()) {
            let (endpoint, m) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("`{item}` is not ENDPOINT:any or ENDPOINT:all"))?;
            match endpoint.trim() {
                "*" => polling.default_all = mode(m)?,
                e => polling.endpoints.push((e.to_string(), mode(m)?)),
            }
        }
        Ok(polling)
    }
}

/// Everything a Pod needs to start.
#[derive(Debug, Clone)]
pub struct PodConfig {
    /// The Pod's name, executor and outer sockets; its Peas derive from it.
    pub pea: PeaConfig,
    pub shards: usize,
    pub replicas: usize,
    pub polling: Polling,
    pub balance: Balance,
    pub uses_before: Option<PathBuf>,
    pub uses_after: Option<PathBuf>,
    pub backend: Backend,
    pub timeout_ready: Duration,
    /// How long the Tail waits for the parts of a request without a deadline
    /// ([`parts_timeout`] of the Peas' call timeout).
    pub timeout_parts: Duration,
    /// Extra `jina-wasm pea` arguments for child processes (`--cache-dir`...).
    pub child_args: Vec<String>,
    /// The Peas run elsewhere (`jina-wasm pod --role head`, one container of a
    /// Kubernetes or Compose export): bind the Head's and Tail's sockets here
    /// and start no Peas.
    pub external: Option<ExternalPeas>,
}

/// How long a Pod (a Flow's, or `jina-wasm pea|pod`) may take to be ready
/// unless it says otherwise (`timeout_ready`, `--timeout-ready`).
pub const DEFAULT_TIMEOUT_READY: Duration = Duration::from_secs(600);

/// How long a Tail waits for a request's parts when its Peas' calls may
/// take `call_timeout`: that, and a little more for the way there and back.
pub fn parts_timeout(call_timeout: Duration) -> Duration {
    call_timeout.saturating_add(Duration::from_secs(5))
}

/// Where a head-only Pod binds the sockets its remote Peas connect to.
#[derive(Debug, Clone)]
pub struct ExternalPeas {
    /// The Head's ROUTER (each Pea's DEALER input connects here).
    pub fanout: String,
    /// The Tail's PULL (each Pea's PUSH output connects here).
    pub parts: String,
}

/// A Pea's place in its Pod: what it is called, what its executor is told
/// (Jina's `runtime_args`), and which shard workspace it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Shard {
        id: usize,
        shards: usize,
    },
    /// `id` is an index inside one process, or any unique name (a Kubernetes
    /// pod's) for replicas that join a head-only Pod.
    Replica {
        id: String,
        replicas: Option<usize>,
    },
    /// Replica `replica` of shard `shard`: the shard's workspace, shared
    /// with the shard's other replicas.
    ShardReplica {
        shard: usize,
        shards: usize,
        replica: String,
        replicas: Option<usize>,
    },
}

impl Place {
    pub fn role(&self) -> String {
        match self {
            Place::Shard { id, .. } => format!("shard-{id}"),
            Place::Replica { id, .. } => format!("replica-{id}"),
            Place::ShardReplica { shard, replica, .. } => {
                format!("shard-{shard}/replica-{replica}")
            }
        }
    }

    /// The shard this place serves (0 for a replica of an unsharded Pod).
    pub fn shard(&self) -> usize {
        match self {
            Place::Shard { id, .. } => *id,
            Place::Replica { .. } => 0,
            Place::ShardReplica { shard, .. } => *shard,
        }
    }
}

impl PodConfig {
    pub(super) fn layout(&self) -> Layout {
        match (self.shards > 1, self.replicas > 1) {
            (true, true) => Layout::ShardReplicas {
                replicas: self.replicas,
            },
            (true, false) => Layout::Shards,
            _ => Layout::Replicas,
        }
    }

    /// The Peas: shards × replicas.
    pub(super) fn count(&self) -> usize {
        self.shards.max(1) * self.replicas.max(1)
    }

    pub fn is_singleton(&self) -> bool {
        self.count() == 1
            && self.uses_before.is_none()
            && self.uses_after.is_none()
            && self.external.is_none()
    }
}

/// One Pea of a Pod, as `STATUS` and the ready line show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    pub pea: String,
    pub role: String,
    pub ctrl: String,
}

/// The place of member `i` of a Pod started here.
pub(super) fn place_of(config: &PodConfig, layout: Layout, i: usize) -> Place {
    match layout {
        Layout::Shards => Place::Shard {
            id: i,
            shards: config.shards,
        },
        Layout::Replicas => Place::Replica {
            id: i.to_string(),
            replicas: Some(config.count()),
        },
        Layout::ShardReplicas { replicas } => Place::ShardReplica {
            shard: i / replicas,
            shards: config.shards,
            replica: (i % replicas).to_string(),
            replicas: Some(replicas),
        },
    }
}

/// The PeaConfig of member `i`: its place, a DEALER input to the Head, a PUSH
/// output to the Tail.
pub(super) fn member_config(
    config: &PodConfig,
    layout: Layout,
    i: usize,
    head: &str,
    tail: &str,
) -> anyhow::Result<PeaConfig> {
    let place = place_of(config, layout, i);
    let mut pea = placed(&config.pea, &place, workspace::Scope::Pod)?;
    pea.socket_in = SocketSpec::DEALER_CONNECT;
    pea.address_in = head.to_string();
    pea.socket_out = SocketSpec::PUSH_CONNECT;
    pea.address_out = tail.to_string();
    pea.address_ctrl = "tcp://127.0.0.1:0".into();
    Ok(pea)
}

/// The Pod's Pea config made into one of its members: named `<pod>/<role>`,
/// its place in the executor's `with.jina`, and for a shard its own workspace
/// (`<workspace>/<pod>/shard-<i>/`, claimed; each replica of a shard claims
/// the same one, which its identity accepts). Sockets are left as they are:
/// the Pod's own members get theirs from `member_config`, a remote Pea
/// (`jina-wasm pea --shard-id`) from its flags.
///
/// `scope` says who claims a shard's workspace: the Pod, for all its shards,
/// or a Pea alone (`--shard-id`), whose workspace is then its own volume.
///
/// # Errors
/// A shard workspace that belongs to another shard or Pod.
pub fn placed(
    pod: &PeaConfig,
    place: &Place,
    scope: workspace::Scope,
) -> anyhow::Result<PeaConfig> {
    let name = format!("{}/{}", pod.name, place.role());
    let mut executor = pod.executor.clone();
    executor.name = name.clone();
    // Executors learn their place, as Jina's `runtime_args`.
    let mut with = match &pod.executor.config {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let replica_args = |id: &String, replicas: &Option<usize>| {
        let id = id
            .parse::<u64>()
            .map_or_else(|_| Value::from(id.clone()), Value::from);
        let mut args = vec![("replica_id", id)];
        args.extend(replicas.map(|n| ("replicas", json!(n))));
        args
    };
    let runtime_args: Vec<(&str, Value)> = match place {
        Place::Shard { id, shards } => vec![("shard_id", json!(id)), ("shards", json!(shards))],
        Place::Replica { id, replicas } => replica_args(id, replicas),
        Place::ShardReplica {
            shard,
            shards,
            replica,
            replicas,
        } => {
            let mut args = vec![("shard_id", json!(shard)), ("shards", json!(shards))];
            args.extend(replica_args(replica, replicas));
            args
        }
    };
    with.remove("jina");
    executor.config = Value::Object(with);
    for (key, value) in runtime_args {
        crate::executor::set_runtime_arg(&mut executor.config, key, value);
    }
    let shard = match place {
        Place::Shard { id, shards } => Some((*id, *shards)),
        Place::ShardReplica { shard, shards, .. } => Some((*shard, *shards)),
        Place::Replica { .. } => None,
    };
    if let Some((id, shards)) = shard
        && let Some(root) = &pod.executor.sandbox.workspace
    {
        let identity = workspace::ShardIdentity {
            pod: pod.name.clone(),
            shard: id,
            shards,
            executor: pod.executor.name.clone(),
        };
        executor.sandbox.workspace = Some(
            workspace::claim(root, &identity, scope).with_context(|| format!("pea `{name}`"))?,
        );
    }
    Ok(PeaConfig {
        name,
        executor,
        ..pod.clone()
    })
}
