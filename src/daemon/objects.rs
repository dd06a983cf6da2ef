//! Peas and Pods a tenant asks for: the request, checked and planned against
//! the tenant's quota, its `jina-wasm pea|pod` arguments, and the record of
//! each one started (its process in [`super::child`]: a supervising task
//! stops it, TERMINATE then SIGKILL after the grace, and records how it
//! ended), with an optional lease after which the daemon deletes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::flow::spec::PodSpec;
use crate::pod::{PodConfig, Polling};
use crate::units::{parse_duration, parse_limit_duration};

/// The `state` of a request: `true`/`false`, or the name of a named state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StateRequest {
    Own(bool),
    Named(String),
}

/// An object's log is rotated past this many bytes by default (`daemon
/// --max-log`; the previous part kept as `<id>.log.1`), so one object holds
/// at most twice this on disk; it counts in the tenant's `disk`.
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// What was asked for: a Pea (one executor) or a Pod (shards, replicas or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pea,
    Pod,
    Flow,
}

impl Kind {
    pub fn command(self) -> &'static str {
        match self {
            Kind::Pea => "pea",
            Kind::Pod => "pod",
            Kind::Flow => "flow",
        }
    }

    /// The route prefix, `/peas` or `/pods`.
    pub fn route(self) -> &'static str {
        match self {
            Kind::Pea => "/peas",
            Kind::Pod => "/pods",
            Kind::Flow => "/flows",
        }
    }
}

/// The body of `POST /pods` and `POST /peas` (docs/daemon.md). File names are
/// names in the tenant's workspace `workspace`; nothing of the daemon's own
/// filesystem can be named.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The workspace holding the files (uploaded before).
    pub workspace: String,
    /// The executor: a `.wasm` file name in the workspace.
    pub uses: String,
    /// The Pod's name in logs and errors [default: the file's stem].
    #[serde(default)]
    pub name: Option<String>,
    /// The executor's `with:` parameters (`uses_with` is Jina's name for it).
    #[serde(default, alias = "uses_with")]
    pub with: Option<Value>,
    #[serde(default)]
    pub shards: Option<usize>,
    #[serde(default, alias = "replicas")]
    pub parallel: Option<usize>,
    /// As `--polling`: `any`, `all`, or `/index:any,/search:all`.
    #[serde(default)]
    pub polling: Option<String>,
    #[serde(default)]
    pub uses_before: Option<String>,
    #[serde(default)]
    pub uses_after: Option<String>,
    /// Memory per Pea [default: the tenant's `memory_per_pea`]; `-1`: no
    /// limit (wasm32's 4 GiB, which is what it counts against the quota).
    #[serde(default)]
    pub memory_hwm: Option<String>,
    #[serde(default)]
    pub timeout_request: Option<String>,
    /// How long the Pod may take to be ready [default 120s].
    #[serde(default)]
    pub timeout_ready: Option<String>,
    #[serde(default)]
    pub dump_interval: Option<String>,
    #[serde(default)]
    pub on_error_strategy: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Give the executor a workspace directory: `true`, its own
    /// (`<workspace>/objects/<object id>/`, removed with the object); a name,
    /// the named state `<workspace>/state/<name>/`, kept across runs that use
    /// the same workspace id and name, used by one live object at a time.
    #[serde(default)]
    pub state: Option<StateRequest>,
    #[serde(default)]
    pub read_only: bool,
    /// Delete the object unless the lease is renewed within this time (`10s`).
    #[serde(default)]
    pub lease: Option<String>,
}

/// A checked request: everything parsed, the Peas and memory it will take.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub peas: usize,
    /// The largest memory_hwm of its Peas.
    pub memory_per_pea: u64,
    /// The sum of its Peas' memory_hwm.
    pub memory: u64,
    pub lease: Option<Duration>,
    pub timeout_ready: Duration,
}

impl CreateRequest {
    /// Checks the fields a child process would otherwise refuse late.
    ///
    /// # Errors
    /// The field and why, for a 400 answer.
    pub fn plan(&self, kind: Kind, default_memory: u64) -> Result<Plan, String> {
        let name = self.object_name()?;
        if kind == Kind::Pea
            && let Some(field) = self.settings().into_iter().find(|f| {
                ["shards", "parallel", "polling", "uses_before", "uses_after"].contains(f)
            })
        {
            return Err(format!(
                "`{field}` is a Pod setting: create a Pod (POST /pods) instead of a Pea"
            ));
        }
        let shards = self.shards.unwrap_or(1);
        let parallel = self.parallel.unwrap_or(1);
        for (field, n) in [("shards", shards), ("parallel", parallel)] {
            if !(1..=256).contains(&n) {
                return Err(format!("`{field}` is {n}: use 1 to 256"));
            }
        }
        if let Some(polling) = &self.polling {
            polling
                .parse::<Polling>()
                .map_err(|e| format!("polling: {e}"))?;
        }
        let memory_per_pea = match &self.memory_hwm {
            Some(size) => {
                crate::executor::memory_limit(size).map_err(|e| format!("memory_hwm: {e}"))?
            }
            None => default_memory,
        };
        // Time limits take Jina's `-1` (no limit); a lease is ours and has none.
        let duration = |field: &str,
                        value: &Option<String>,
                        parse: fn(&str) -> Result<Duration, String>|
         -> Result<Option<Duration>, String> {
            value
                .as_deref()
                .map(parse)
                .transpose()
                .map_err(|e| format!("{field}: {e}"))
        };
        duration(
            "timeout_request",
            &self.timeout_request,
            parse_limit_duration,
        )?;
        let timeout_ready = duration("timeout_ready", &self.timeout_ready, parse_limit_duration)?
            .unwrap_or(Duration::from_secs(120));
        let lease = duration("lease", &self.lease, parse_duration)?;
        if lease.is_some_and(|l| l < Duration::from_millis(500)) {
            return Err("lease: at least 500ms".into());
        }
        if let Some(StateRequest::Named(state)) = &self.state
            && !crate::client_daemon::is_safe_id(state)
        {
            return Err(format!(
                "state `{state}`: a state's name is 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`"
            ));
        }
        if let Some(dump) = &self.dump_interval {
            dump.parse::<crate::pea::DumpPolicy>()
                .map_err(|e| format!("dump_interval: {e}"))?;
        }
        if let Some(strategy) = &self.on_error_strategy {
            <crate::pea::OnError as clap::ValueEnum>::from_str(strategy, true)
                .map_err(|e| format!("on_error_strategy: {e}"))?;
        }
        if self
            .with
            .as_ref()
            .is_some_and(|w| !w.is_object() && !w.is_null())
        {
            return Err("with: a map of the executor's parameters".into());
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(format!("env: `{key}` is not a variable name"));
            }
        }
        // Head and tail executors run with the Pod's memory limit too.
        let sides =
            usize::from(self.uses_before.is_some()) + usize::from(self.uses_after.is_some());
        let peas = shards * parallel + sides;
        Ok(Plan {
            name,
            peas,
            memory_per_pea,
            memory: peas as u64 * memory_per_pea,
            lease,
            timeout_ready,
        })
    }

    /// The object's name: `name`, else the file's stem; checked.
    ///
    /// # Errors
    /// A name that is not 1-64 of `A-Za-z0-9._-`.
    pub fn object_name(&self) -> Result<String, String> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => Path::new(&self.uses)
                .file_stem()
                .map(|s| s.to_string_lossy().replace(' ', "_"))
                .unwrap_or_default(),
        };
        if !crate::client_daemon::is_safe_id(&name) {
            return Err(format!(
                "name `{name}`: 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`"
            ));
        }
        Ok(name)
    }

    /// The executor and Pod settings given, by field name.
    pub fn settings(&self) -> Vec<&'static str> {
        let given = [
            ("with", self.with.is_some()),
            ("shards", self.shards.is_some()),
            ("parallel", self.parallel.is_some()),
            ("polling", self.polling.is_some()),
            ("uses_before", self.uses_before.is_some()),
            ("uses_after", self.uses_after.is_some()),
            ("memory_hwm", self.memory_hwm.is_some()),
            ("timeout_request", self.timeout_request.is_some()),
            ("dump_interval", self.dump_interval.is_some()),
            ("on_error_strategy", self.on_error_strategy.is_some()),
            ("env", !self.env.is_empty()),
            (
                "state",
                self.state
                    .as_ref()
                    .is_some_and(|s| *s != StateRequest::Own(false)),
            ),
            ("read_only", self.read_only),
        ];
        given
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| field)
            .collect()
    }

    /// The settings of the Pea or Pod to start, resolved as a Flow's Pod is
    /// ([`crate::flow::resolve::pod_settings`]: one parser for both): `files`
    /// are the workspace's files the request names, `state_dir` its
    /// workspace. Its input and output bind on `host` (so a Flow on another
    /// host can connect); its control socket stays on loopback: only the
    /// daemon, and so only through its API, controls it.
    ///
    /// # Errors
    /// A field that is not valid, named (for a 400 answer).
    pub fn pod_config(
        &self,
        plan: &Plan,
        host: &str,
        files: &Files,
        state_dir: Option<&Path>,
    ) -> Result<PodConfig, String> {
        let spec = PodSpec {
            name: plan.name.clone(),
            uses: files.uses.clone(),
            with: self.with.clone().filter(Value::is_object),
            shards: self.shards,
            parallel: self.parallel,
            uses_before: files.uses_before.clone(),
            uses_after: files.uses_after.clone(),
            workspace: state_dir.map(Path::to_path_buf),
            read_only: self.read_only,
            dump_interval: self.dump_interval.clone().map(Value::String),
            memory_hwm: Some(Value::String(format!("{}B", plan.memory_per_pea))),
            timeout_ready: Some(format!("{}ms", plan.timeout_ready.as_millis())),
            timeout_request: self.timeout_request.clone(),
            on_error_strategy: self.on_error_strategy.clone(),
            env: self.env.clone(),
            ..PodSpec::default()
        };
        let polling = match &self.polling {
            Some(polling) => polling.parse().map_err(|e| format!("polling: {e}"))?,
            None => Polling::ANY,
        };
        let mut config = crate::flow::resolve::pod_settings(
            &spec,
            Vec::new(),
            polling,
            &crate::flow::resolve::RunOptions::default(),
        )
        .map_err(|e| format!("{e:#}"))?;
        config.pea.address_in = format!("tcp://{host}:0");
        config.pea.address_out = format!("tcp://{host}:0");
        Ok(config)
    }

    /// The `jina-wasm pea|pod` arguments of `config` (from [`Self::pod_config`]):
    /// rendered by the same [`crate::pod::pea_args`] and
    /// [`crate::pod::pod_args`] a Pod uses for its child Peas and `export`
    /// for its units.
    pub fn args(kind: Kind, config: &PodConfig, cache_dir: &Path) -> Vec<String> {
        let mut args = vec![kind.command().to_string()];
        if kind == Kind::Pod {
            args.extend(crate::pod::pod_args(config));
        } else {
            args.extend(crate::pod::pea_args(&config.pea));
            args.extend([
                "--timeout-ready".into(),
                format!("{}ms", config.timeout_ready.as_millis()),
            ]);
        }
        args.extend(["--cache-dir".into(), cache_dir.display().to_string()]);
        args
    }
}

/// The files of a request, resolved inside the workspace.
#[derive(Debug, Clone)]
pub struct Files {
    pub uses: PathBuf,
    pub uses_before: Option<PathBuf>,
    pub uses_after: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Running,
    Exited,
}

/// What changes while the object lives.
#[derive(Debug, Clone)]
pub struct Live {
    pub state: State,
    pub pid: Option<u32>,
    /// The child's ready line: addresses and Peas.
    pub ready: Value,
    /// How the process ended, once it has.
    pub exit: Option<String>,
}

/// One Pea or Pod of one tenant.
pub struct Object {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub workspace: String,
    pub plan: Plan,
    pub created: std::time::SystemTime,
    pub expires: Option<Instant>,
    pub log: PathBuf,
    /// Its state directory, relative to the tenant's root, and whether it is
    /// the object's own (removed with it) rather than a named one.
    pub state: Option<(PathBuf, bool)>,
    pub live: Arc<Mutex<Live>>,
    pub stop: CancellationToken,
    pub supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl Object {
    /// Counts against the quota until its process has exited.
    pub fn holds_resources(&self) -> bool {
        self.live.lock().expect("live").state != State::Exited
    }

    pub fn renew(&mut self) {
        if let Some(lease) = self.plan.lease {
            self.expires = Some(Instant::now() + lease);
        }
    }

    /// The object as the API shows it.
    pub fn describe(&self) -> Value {
        let live = self.live.lock().expect("live").clone();
        let rss = live
            .pid
            .filter(|_| live.state == State::Running)
            .and_then(super::child::rss_bytes);
        json!({
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "workspace": self.workspace,
            "state": live.state,
            "pid": live.pid,
            "in": live.ready["in"],
            "out": live.ready["out"],
            "peas": live.ready["peas"],
            "gateway": live.ready["gateway"],
            "pods": live.ready["pods"],
            "pea_count": self.plan.peas,
            "memory_hwm": self.plan.memory_per_pea,
            "rss_bytes": rss,
            "lease_ms": self.plan.lease.map(|l| l.as_millis() as u64),
            "expires_in_ms": self.expires.map(|e| e.saturating_duration_since(Instant::now()).as_millis() as u64),
            "exit": live.exit,
            "created_unix_ms": self.created.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "log": format!("{}/{}/logs", self.kind.route(), self.id),
        })
    }

    /// Stops the process (TERMINATE, then SIGKILL) and waits until it is gone.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.supervisor.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> CreateRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn state_is_own_unless_named_and_names_are_checked() {
        let own = request(json!({"workspace": "w", "uses": "a.wasm", "state": true}));
        assert_eq!(own.state, Some(StateRequest::Own(true)));
        let named = request(json!({"workspace": "w", "uses": "a.wasm", "state": "index"}));
        assert_eq!(named.state, Some(StateRequest::Named("index".into())));
        assert!(named.plan(Kind::Pea, 64).is_ok());
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "state": "../x"}))
            .plan(Kind::Pea, 64)
            .unwrap_err();
        assert!(e.starts_with("state `../x`"), "{e}");
        assert_eq!(
            request(json!({"workspace": "w", "uses": "a.wasm", "state": null})).state,
            None
        );
    }

    #[test]
    fn jina_habits_are_taken_as_a_flow_file_takes_them() {
        let r = request(json!({
            "workspace": "w", "uses": "a.wasm", "uses_with": {"dim": 3},
            "memory_hwm": "-1", "timeout_request": "-1", "timeout_ready": "-1",
            "polling": "ALL", "on_error_strategy": "SKIP_HANDLE",
        }));
        assert_eq!(r.with, Some(json!({"dim": 3})));
        let plan = r.plan(Kind::Pod, 64).unwrap();
        assert_eq!(plan.memory_per_pea, crate::executor::WASM32_MAX_MEMORY);
        assert_eq!(plan.timeout_ready, crate::units::MAX_DURATION);
        let files = Files {
            uses: "a.wasm".into(),
            uses_before: None,
            uses_after: None,
        };
        let config = r.pod_config(&plan, "127.0.0.1", &files, None).unwrap();
        assert_eq!(
            config.pea.executor.sandbox.call_timeout,
            crate::units::MAX_DURATION
        );
        let args = CreateRequest::args(Kind::Pod, &config, Path::new("c"));
        let after = |flag: &str| &args[args.iter().position(|a| a == flag).unwrap() + 1];
        assert_eq!(after("--on-error-strategy"), "SKIP_HANDLE", "{args:?}");
        assert_eq!(after("--polling"), "all", "{args:?}");
        assert_eq!(after("--host-in"), "127.0.0.1", "{args:?}");
        // That the child's own parser takes these: tests/all/daemon.rs
        // (`the_argv_the_daemon_renders_parses_as_the_cli`), which may import
        // the CLI; the daemon does not.
    }

    #[test]
    fn plans_count_peas_and_refuse_bad_fields() {
        let plan = request(
            json!({"workspace": "w", "uses": "idx.wasm", "shards": 3, "uses_after": "m.wasm"}),
        )
        .plan(Kind::Pod, 64)
        .unwrap();
        assert_eq!(
            (plan.name.as_str(), plan.peas, plan.memory_per_pea),
            ("idx", 4, 64)
        );
        // Shards × replicas: every replica of every shard is a Pea.
        let plan =
            request(json!({"workspace": "w", "uses": "idx.wasm", "shards": 2, "parallel": 3}))
                .plan(Kind::Pod, 64)
                .unwrap();
        assert_eq!((plan.peas, plan.memory), (6, 6 * 64));
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "shards": 2}))
            .plan(Kind::Pea, 64)
            .unwrap_err();
        assert!(e.contains("`shards` is a Pod setting"), "{e}");
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "memory_hwm": "lots"}))
            .plan(Kind::Pod, 64)
            .unwrap_err();
        assert!(e.starts_with("memory_hwm: "), "{e}");
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "memory_hwm": "0"}))
            .plan(Kind::Pod, 64)
            .unwrap_err();
        assert!(
            e.starts_with("memory_hwm: `0` is 0 B, less than the 1 MiB"),
            "{e}"
        );
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "name": "../up"}))
            .plan(Kind::Pod, 64)
            .unwrap_err();
        assert!(e.starts_with("name `../up`"), "{e}");
        assert!(
            serde_json::from_value::<CreateRequest>(
                json!({"workspace": "w", "uses": "a", "volumes": ["/:/host"]})
            )
            .is_err()
        );
    }
}
