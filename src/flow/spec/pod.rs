//! One Pod as a Flow file describes it ([`PodSpec`]): the one declaration of
//! a Pod's settings. A Flow file's `pods:` entries are read into it, and so
//! is the body of a daemon's `POST /pods` and `POST /peas` (all its keys but
//! [`FLOW_ONLY`]), which a Flow's remote Pods send; `flow::resolve::pod_settings`
//! turns it into the typed `PodConfig`, which `pod::pod_args` renders as the
//! `jina-wasm pod` flags of the same names. docs/flow-yaml.md documents every field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checked;
use crate::pod::Polling;

/// One Pod of a Flow. A new setting is a field here (checked as it is read,
/// see `checked`), its place in `flow::resolve::pod_settings` and its flag;
/// the daemon takes it with no change of its own.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    /// A `.wasm` path, relative to the YAML file.
    pub uses: PathBuf,
    /// The executor's configuration (`uses_with` is Jina's name for it).
    #[serde(default, alias = "uses_with", skip_serializing_if = "Option::is_none")]
    pub with: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    #[serde(default, alias = "replicas", skip_serializing_if = "Option::is_none")]
    pub parallel: Option<usize>,
    /// `any`, `all`, or a map of endpoint to `any`/`all` (`*` for the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_before: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_after: Option<PathBuf>,
    /// What this Pod reads from: `gateway`, a Pod's name, or several (a join).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `240s`, `5m` (interval mode); `0` (durable mode); `never`.
    #[serde(
        default,
        deserialize_with = "checked::dump_interval",
        skip_serializing_if = "Option::is_none"
    )]
    pub dump_interval: Option<Value>,
    /// `64MiB`, `1GiB`, or a bare number of GiB; `-1`: no limit.
    #[serde(
        default,
        deserialize_with = "checked::limit_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hwm: Option<Value>,
    /// A duration; `-1`: no limit.
    #[serde(
        default,
        deserialize_with = "checked::limit_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ready: Option<String>,
    /// A duration; `-1`: no limit.
    #[serde(
        default,
        deserialize_with = "checked::limit_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_request: Option<String>,
    /// Time limit for `init` (`120s`; `-1`: no limit).
    #[serde(
        default,
        deserialize_with = "checked::limit_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_init: Option<String>,
    /// Workspace disk quota: a size (`4GiB`) or a bare number of GiB; `-1`: no limit.
    #[serde(
        default,
        deserialize_with = "checked::limit_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_quota: Option<Value>,
    /// Most entries in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    /// Most documents one call may return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_docs: Option<usize>,
    /// Most bytes of documents one call may return: a size; `-1`: no limit.
    #[serde(
        default,
        deserialize_with = "checked::limit_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_result_bytes: Option<Value>,
    /// Output lines per second per instance that reach the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_rate: Option<u32>,
    /// Frozen wall clock, fixed random seed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deterministic: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A `jina-wasm daemon` to run this Pod on (`host:port`): docs/daemon.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `IGNORE`, `SKIP_EXECUTOR`, `SKIP_HANDLE`, `THROW_EARLY` (any case).
    #[serde(
        default,
        deserialize_with = "checked::on_error_strategy",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_error_strategy: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The keys of a [`PodSpec`] only a Flow file gives: what the Pod reads
/// from, the daemon it runs on, and a directory of this machine. A daemon
/// refuses them (its objects' state is `state`, inside the tenant's workspace).
pub const FLOW_ONLY: [&str; 3] = ["needs", "host", "workspace"];

/// The keys of a [`PodSpec`] that only a Pod (not a lone Pea) takes.
pub const POD_ONLY: [&str; 6] = [
    "shards",
    "parallel",
    "replicas",
    "polling",
    "uses_before",
    "uses_after",
];

impl PodSpec {
    /// Every key a Pod takes, aliases included, in declaration order: the
    /// field list serde itself reads, so it cannot drift from the struct.
    pub fn keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let mut keys = Fields(&[]);
            let _ = PodSpec::deserialize(&mut keys);
            keys.0
        })
    }

    /// The keys this spec sets (those [`Serialize`] writes), in declaration order.
    pub fn given(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => {
                let mut keys: Vec<String> = map.keys().cloned().collect();
                let order = |k: &String| Self::keys().iter().position(|f| f == k);
                keys.sort_by_key(order);
                keys
            }
            _ => Vec::new(),
        }
    }
}

/// A deserializer that only records the field list `deserialize_struct` is
/// given (serde's own list of the keys a struct takes).
struct Fields(&'static [&'static str]);

impl<'de> serde::Deserializer<'de> for &mut Fields {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom(
            "only a struct's field list is read",
        ))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(serde::de::Error::custom(
            "only a struct's field list is read",
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// `polling:` as written: one mode, or a map of endpoint to mode.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PollingSpec {
    One(String),
    PerEndpoint(BTreeMap<String, String>),
}

impl PollingSpec {
    /// The polling it says.
    ///
    /// # Errors
    /// A mode that is neither `any` nor `all`, or an endpoint without one.
    pub fn polling(&self) -> Result<Polling, String> {
        match self {
            PollingSpec::One(mode) => mode.parse(),
            PollingSpec::PerEndpoint(map) => {
                // Joined as `endpoint:mode,...` below: a `:` or `,` in a name
                // would be read as another endpoint or mode.
                if let Some(endpoint) = map.keys().find(|e| e.contains([':', ','])) {
                    return Err(format!(
                        "endpoint `{endpoint}`: an endpoint's name cannot hold `:` or `,`"
                    ));
                }
                let text: Vec<String> = map.iter().map(|(e, m)| format!("{e}:{m}")).collect();
                text.join(",").parse()
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Needs {
    One(String),
    Many(Vec<String>),
}

impl Needs {
    pub(super) fn names(&self) -> Vec<String> {
        match self {
            Needs::One(name) => vec![name.clone()],
            Needs::Many(names) => names.clone(),
        }
    }
}

/// Every setting a Pod takes (all keys but `name`, `uses`, [`FLOW_ONLY`]
/// and aliases), each set to something other than its default, for the
/// tests that pin that the daemon and the CLI take them all alike.
#[cfg(test)]
pub(crate) fn every_setting() -> Value {
    serde_json::json!({
        "with": {"dim": 3}, "shards": 2, "parallel": 3,
        "polling": {"/search": "all", "*": "any"},
        "uses_before": "b.wasm", "uses_after": "m.wasm", "read_only": true,
        "dump_interval": "0", "memory_hwm": "64MiB", "timeout_ready": "7s",
        "timeout_request": "3s", "timeout_init": "4s", "disk_quota": "2GiB",
        "max_files": 9, "max_result_docs": 11, "max_result_bytes": "5MiB",
        "log_rate": 13, "deterministic": true, "env": {"A": "1"},
        "on_error_strategy": "THROW_EARLY",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new field of [`PodSpec`] fails here until [`every_setting`] sets
    /// it, and so until the daemon's and the CLI's tests have checked it.
    #[test]
    fn every_setting_sets_every_setting() {
        let mut keys: Vec<&str> = PodSpec::keys()
            .iter()
            .copied()
            .filter(|k| !FLOW_ONLY.contains(k))
            .filter(|k| !["name", "uses", "uses_with", "replicas"].contains(k))
            .collect();
        keys.sort_unstable();
        let setting = every_setting();
        let set: Vec<&str> = setting
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, set);
        assert_eq!(PodSpec::keys()[..3], ["name", "uses", "uses_with"]);
    }

    /// Hostile pass 4 (H4-6): `{"/a:all,/b": "any"}` was joined and read
    /// back as `/a:all,/b:any`; such names are refused, in a Flow file too.
    #[test]
    fn endpoints_holding_a_separator_are_refused_by_name() {
        for endpoint in ["/a:all,/b", "/a,/b", "/x:y"] {
            let map = BTreeMap::from([(endpoint.to_string(), "any".to_string())]);
            let e = PollingSpec::PerEndpoint(map).polling().unwrap_err();
            assert_eq!(
                e,
                format!("endpoint `{endpoint}`: an endpoint's name cannot hold `:` or `,`")
            );
        }
        let yaml = "version: 1\npods:\n  - {name: p, uses: p.wasm, shards: 2, polling: {\"/a:all,/b\": any}}\n";
        let e = crate::flow::spec::Flow::parse(yaml, std::path::Path::new("/f/flow.yml"), |_| None)
            .unwrap_err();
        assert!(e.message.contains("endpoint `/a:all,/b`"), "{}", e.message);
    }
}
