//! The body of `POST /pods`, `POST /peas` and `POST /flows`: a Flow file's
//! Pod ([`PodSpec`]) and the daemon's own keys, read with unknown keys
//! refused, checked and planned against the tenant's quota, resolved into
//! the Pod's config and rendered as its `jina-wasm pea|pod` arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::objects::Kind;
use super::tenants::Quota;
use crate::flow::spec::{FLOW_ONLY, POD_ONLY, PodSpec};
use crate::pod::{PodConfig, Polling};
use crate::units::{parse_duration, parse_limit_duration};

/// The `state` of a request: `true`/`false`, or the name of a named state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StateRequest {
    Own(bool),
    Named(String),
}

/// The body of `POST /pods`, `POST /peas` and `POST /flows`
/// (docs/daemon.md): the daemon's own keys (`workspace`, `state`, `lease`)
/// and the Pea's or Pod's, which are a Flow file's Pod's ([`PodSpec`], the
/// one declaration of a Pod's settings) but for [`FLOW_ONLY`]. File names
/// (`uses`, `uses_before`, `uses_after`) are names in the tenant's workspace
/// `workspace`; nothing of the daemon's own filesystem can be named.
/// Unknown keys are refused, named.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateRequest {
    /// The workspace holding the files (uploaded before).
    pub workspace: String,
    /// Give the executor a workspace directory: `true`, its own
    /// (`<workspace>/objects/<object id>/`, removed with the object); a name,
    /// the named state `<workspace>/state/<name>/`, kept across runs that use
    /// the same workspace id and name, used by one live object at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRequest>,
    /// Delete the object unless the lease is renewed within this time (`10s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// The executor (`uses`: a `.wasm` file name in the workspace), its name
    /// [default: the file's stem] and its settings.
    #[serde(flatten)]
    pub pod: PodSpec,
}

/// The keys of a request that are the daemon's own, not a Pod's.
const OWN_KEYS: [&str; 3] = ["workspace", "state", "lease"];

impl<'de> Deserialize<'de> for CreateRequest {
    /// By hand: serde's `flatten` cannot refuse unknown keys, and loses the
    /// name of a field whose value is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, Value>::deserialize(d)?;
        CreateRequest::from_map(map).map_err(serde::de::Error::custom)
    }
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
    /// Each Pea's disk quota and file cap (`bounds::disk_and_files`).
    pub disk_quota: u64,
    pub max_files: u64,
    pub lease: Option<Duration>,
    pub timeout_ready: Duration,
}

impl CreateRequest {
    /// Every key a request takes: the daemon's own, then a Pod's.
    pub fn keys() -> Vec<&'static str> {
        let pod = PodSpec::keys().iter().filter(|k| !FLOW_ONLY.contains(k));
        OWN_KEYS.iter().chain(pod).copied().collect()
    }

    /// The request in `map`: unknown keys refused, `name` the stem of `uses`
    /// when not given, each value checked as a Flow file's is.
    fn from_map(mut map: serde_json::Map<String, Value>) -> Result<Self, String> {
        let keys = Self::keys();
        if let Some(key) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            let expected: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            let whose = if FLOW_ONLY.contains(&key.as_str()) {
                " (a Flow file's key, not a daemon's)"
            } else {
                ""
            };
            return Err(format!(
                "unknown field `{key}`{whose}, expected one of {}",
                expected.join(", ")
            ));
        }
        fn field<T: serde::de::DeserializeOwned>(key: &str, value: Value) -> Result<T, String> {
            serde_json::from_value(value).map_err(|e| format!("{key}: {e}"))
        }
        let workspace = match map.remove("workspace") {
            Some(value) => field("workspace", value)?,
            None => return Err("missing field `workspace`".into()),
        };
        let state = field("state", map.remove("state").unwrap_or(Value::Null))?;
        let lease = field("lease", map.remove("lease").unwrap_or(Value::Null))?;
        if map.get("name").is_none_or(Value::is_null)
            && let Some(Value::String(uses)) = map.get("uses")
        {
            let stem = Path::new(uses)
                .file_stem()
                .map(|s| s.to_string_lossy().replace(' ', "_"))
                .unwrap_or_default();
            map.insert("name".into(), Value::String(stem));
        }
        let pod = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => e.inner().to_string(),
                path => format!("{path}: {}", e.inner()),
            }
        })?;
        Ok(CreateRequest {
            workspace,
            state,
            lease,
            pod,
        })
    }

    /// Checks the fields a child process would otherwise refuse late (each
    /// value was checked as it was read; here: ranges and names).
    ///
    /// `quota` gives the defaults: `memory_per_pea`, and the disk and files
    /// a Pea gets unless asked ([`super::bounds`]).
    ///
    /// # Errors
    /// The field and why, for a 400 answer.
    pub fn plan(&self, kind: Kind, quota: &Quota) -> Result<Plan, String> {
        let name = self.object_name()?;
        let pod = &self.pod;
        if kind == Kind::Pea
            && let Some(field) = self
                .settings()
                .into_iter()
                .find(|f| POD_ONLY.contains(&f.as_str()))
        {
            return Err(format!(
                "`{field}` is a Pod setting: create a Pod (POST /pods) instead of a Pea"
            ));
        }
        let shards = pod.shards.unwrap_or(1);
        let parallel = pod.parallel.unwrap_or(1);
        for (field, n) in [("shards", shards), ("parallel", parallel)] {
            if !(1..=256).contains(&n) {
                return Err(format!("`{field}` is {n}: use 1 to 256"));
            }
        }
        if let Some(polling) = &pod.polling {
            polling.polling().map_err(|e| format!("polling: {e}"))?;
        }
        let memory_per_pea = match &pod.memory_hwm {
            Some(size) => crate::executor::memory_limit(&text(size))
                .map_err(|e| format!("memory_hwm: {e}"))?,
            None => quota.memory_per_pea,
        };
        // Time limits take Jina's `-1` (no limit); a lease is ours and has none.
        let timeout_ready = pod
            .timeout_ready
            .as_deref()
            .map(parse_limit_duration)
            .transpose()
            .map_err(|e| format!("timeout_ready: {e}"))?
            .unwrap_or(Duration::from_secs(120));
        let lease = self.lease()?;
        if let Some(StateRequest::Named(state)) = &self.state
            && !crate::client_daemon::is_safe_id(state)
        {
            return Err(format!(
                "state `{state}`: a state's name is 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`"
            ));
        }
        if pod
            .with
            .as_ref()
            .is_some_and(|w| !w.is_object() && !w.is_null())
        {
            return Err("with: a map of the executor's parameters".into());
        }
        super::bounds::check_body(pod)?;
        let (disk_quota, max_files) = super::bounds::disk_and_files(pod, quota)?;
        // Head and tail executors run with the Pod's memory limit too.
        let sides = usize::from(pod.uses_before.is_some()) + usize::from(pod.uses_after.is_some());
        let peas = shards * parallel + sides;
        Ok(Plan {
            name,
            peas,
            memory_per_pea,
            memory: peas as u64 * memory_per_pea,
            disk_quota,
            max_files,
            lease,
            timeout_ready,
        })
    }

    /// The lease, checked.
    ///
    /// # Errors
    /// Not a duration, or under 500ms.
    pub fn lease(&self) -> Result<Option<Duration>, String> {
        let lease = self
            .lease
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("lease: {e}"))?;
        if lease.is_some_and(|l| l < Duration::from_millis(500)) {
            return Err("lease: at least 500ms".into());
        }
        Ok(lease)
    }

    /// The object's name (`name`, else the file's stem), checked.
    ///
    /// # Errors
    /// A name that is not 1-64 of `A-Za-z0-9._-`.
    pub fn object_name(&self) -> Result<String, String> {
        let name = &self.pod.name;
        if !crate::client_daemon::is_safe_id(name) {
            return Err(format!(
                "name `{name}`: 1-64 of A-Z a-z 0-9 . _ - , not starting with `.`"
            ));
        }
        Ok(name.clone())
    }

    /// The executor (`uses`) as the file name in the workspace it is.
    pub fn uses(&self) -> String {
        self.pod.uses.to_string_lossy().into_owned()
    }

    /// The executor and Pod settings given, by key: every key of the Pod's
    /// but `name`, `uses` and `timeout_ready` (which a Flow takes too), and
    /// `state` when it asks for one.
    pub fn settings(&self) -> Vec<String> {
        let mut given: Vec<String> = self
            .pod
            .given()
            .into_iter()
            .filter(|k| !["name", "uses", "timeout_ready"].contains(&k.as_str()))
            .collect();
        if self
            .state
            .as_ref()
            .is_some_and(|s| *s != StateRequest::Own(false))
        {
            given.push("state".into());
        }
        given
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
            with: self.pod.with.clone().filter(Value::is_object),
            uses_before: files.uses_before.clone(),
            uses_after: files.uses_after.clone(),
            workspace: state_dir.map(Path::to_path_buf),
            memory_hwm: Some(Value::String(format!("{}B", plan.memory_per_pea))),
            timeout_ready: Some(format!("{}ms", plan.timeout_ready.as_millis())),
            disk_quota: Some(Value::String(format!("{}B", plan.disk_quota))),
            max_files: Some(plan.max_files),
            needs: None,
            host: None,
            ..self.pod.clone()
        };
        let polling = match &spec.polling {
            Some(polling) => polling.polling().map_err(|e| format!("polling: {e}"))?,
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

/// A size or duration as written: text, or a bare number.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The files of a request, resolved inside the workspace.
#[derive(Debug, Clone)]
pub struct Files {
    pub uses: PathBuf,
    pub uses_before: Option<PathBuf>,
    pub uses_after: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::spec::every_setting;
    use serde_json::json;

    fn request(json: Value) -> CreateRequest {
        serde_json::from_value(json).unwrap()
    }

    /// The default quota, but `memory_per_pea`.
    pub(super) fn quota(memory_per_pea: u64) -> Quota {
        Quota {
            memory_per_pea,
            ..Quota::default()
        }
    }

    #[test]
    fn state_is_own_unless_named_and_names_are_checked() {
        let own = request(json!({"workspace": "w", "uses": "a.wasm", "state": true}));
        assert_eq!(own.state, Some(StateRequest::Own(true)));
        let named = request(json!({"workspace": "w", "uses": "a.wasm", "state": "index"}));
        assert_eq!(named.state, Some(StateRequest::Named("index".into())));
        assert!(named.plan(Kind::Pea, &quota(64)).is_ok());
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "state": "../x"}))
            .plan(Kind::Pea, &quota(64))
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
        assert_eq!(r.pod.with, Some(json!({"dim": 3})));
        let plan = r.plan(Kind::Pod, &quota(64)).unwrap();
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
        .plan(Kind::Pod, &quota(64))
        .unwrap();
        assert_eq!(
            (plan.name.as_str(), plan.peas, plan.memory_per_pea),
            ("idx", 4, 64)
        );
        // Shards × replicas: every replica of every shard is a Pea.
        let plan =
            request(json!({"workspace": "w", "uses": "idx.wasm", "shards": 2, "parallel": 3}))
                .plan(Kind::Pod, &quota(64))
                .unwrap();
        assert_eq!((plan.peas, plan.memory), (6, 6 * 64));
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "shards": 2}))
            .plan(Kind::Pea, &quota(64))
            .unwrap_err();
        assert!(e.contains("`shards` is a Pod setting"), "{e}");
        // A value not of its kind is refused as it is read, named.
        let e = serde_json::from_value::<CreateRequest>(
            json!({"workspace": "w", "uses": "a.wasm", "memory_hwm": "lots"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("memory_hwm: "), "{e}");
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "memory_hwm": "0"}))
            .plan(Kind::Pod, &quota(64))
            .unwrap_err();
        assert!(
            e.starts_with("memory_hwm: `0` is 0 B, less than the 1 MiB"),
            "{e}"
        );
        let e = request(json!({"workspace": "w", "uses": "a.wasm", "name": "../up"}))
            .plan(Kind::Pod, &quota(64))
            .unwrap_err();
        assert!(e.starts_with("name `../up`"), "{e}");
        assert!(
            serde_json::from_value::<CreateRequest>(
                json!({"workspace": "w", "uses": "a", "volumes": ["/:/host"]})
            )
            .is_err()
        );
    }

    /// The one-declaration property: every key of a Flow file's Pod but the
    /// Flow's own is a request key, read into the same [`PodSpec`] with the
    /// same meaning, and resolved by the same parser into the same config.
    #[test]
    fn every_setting_of_a_pod_is_a_request_key() {
        let settings = every_setting();
        for key in PodSpec::keys().iter().filter(|k| !FLOW_ONLY.contains(k)) {
            assert!(CreateRequest::keys().contains(key), "`{key}`");
        }
        let mut body = settings.clone();
        body["workspace"] = json!("w");
        body["uses"] = json!("a.wasm");
        let r = request(body.clone());
        let mut yaml = settings.clone();
        yaml["name"] = json!("a");
        yaml["uses"] = json!("a.wasm");
        let spec: PodSpec = serde_yaml::from_str(&yaml.to_string()).unwrap();
        assert_eq!(format!("{:?}", r.pod), format!("{spec:?}"));
        // All but `timeout_ready`, which a Flow takes too.
        let count = settings.as_object().unwrap().len();
        assert_eq!(r.settings().len(), count - 1, "{:?}", r.settings());
        let plan = r.plan(Kind::Pod, &quota(1 << 30)).unwrap();
        assert_eq!((plan.peas, plan.memory_per_pea), (8, 64 << 20));
        let files = Files {
            uses: "a.wasm".into(),
            uses_before: Some("b.wasm".into()),
            uses_after: Some("m.wasm".into()),
        };
        let from_request = r.pod_config(&plan, "127.0.0.1", &files, None).unwrap();
        let polling = spec.polling.as_ref().unwrap().polling().unwrap();
        let options = crate::flow::resolve::RunOptions::default();
        let from_flow =
            crate::flow::resolve::pod_settings(&spec, Vec::new(), polling, &options).unwrap();
        let mut from_request = format!("{from_request:?}");
        from_request = from_request.replace("tcp://127.0.0.1:0", "ADDRESS");
        assert_eq!(
            from_request,
            format!("{from_flow:?}").replace("tcp://127.0.0.1:0", "ADDRESS")
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let refused = |body: Value| {
            serde_json::from_value::<CreateRequest>(body)
                .unwrap_err()
                .to_string()
        };
        let e = refused(json!({"workspace": "w", "uses": "a", "volumes": ["/:/host"]}));
        assert!(e.starts_with("unknown field `volumes`, expected one of `workspace`, `state`, `lease`, `name`, `uses`"), "{e}");
        let e = refused(json!({"workspace": "w", "uses": "a", "host": "10.0.0.1:8000"}));
        assert!(
            e.starts_with("unknown field `host` (a Flow file's key"),
            "{e}"
        );
        let e = refused(json!({"uses": "a"}));
        assert_eq!(e, "missing field `workspace`");
        let e = refused(json!({"workspace": "w", "uses": "a", "timeout_init": "soon"}));
        assert!(e.starts_with("timeout_init: "), "{e}");
        let e = refused(json!({"workspace": "w", "uses": "a", "env": {"A": 1}}));
        assert!(e.starts_with("env.A: "), "{e}");
        assert_eq!(
            request(json!({"workspace": "w", "uses": "x/my idx.wasm", "name": null}))
                .pod
                .name,
            "my_idx"
        );
    }

    /// What a Flow sends a daemon for a remote Pod is read back into the
    /// Flow file's own spec: no setting is lost on the way.
    #[test]
    fn a_remote_pods_body_is_its_spec() {
        let mut pod = every_setting();
        pod["name"] = json!("idx");
        pod["uses"] = json!("dir/idx.wasm");
        pod["host"] = json!("10.0.0.1:8000");
        pod["workspace"] = json!("state");
        let yaml = format!("version: 1\nwith: {{env: {{B: \"2\"}}}}\npods: [{pod}]\n");
        let flow =
            crate::flow::spec::Flow::parse(&yaml, Path::new("/f/flow.yml"), |_| None).unwrap();
        let body =
            crate::flow::remote::pod_request(&flow, 0, "ws", Duration::from_secs(10)).unwrap();
        let r = request(body);
        assert_eq!(
            (r.workspace.as_str(), r.lease.as_deref()),
            ("ws", Some("10000ms"))
        );
        assert_eq!(r.state, Some(StateRequest::Named("idx".into())));
        let mut sent = flow.pods[0].clone();
        sent.uses = "idx.wasm".into();
        sent.uses_before = Some("b.wasm".into());
        sent.uses_after = Some("m.wasm".into());
        sent.env.insert("B".into(), "2".into());
        (sent.host, sent.workspace) = (None, None);
        assert_eq!(format!("{:?}", r.pod), format!("{sent:?}"));
    }
}
