//! The [`Executor`] trait, its [`Routes`], the two JSON objects it reads:
//! [`Config`] (the `with:` block) and [`Params`] (a request's parameters), and
//! the host's facts about the instance, [`RuntimeArgs`].

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Document, Error, ErrorKind, Result};

/// A Jina executor: built once per instance, then called per request.
///
/// The host calls [`init`](Executor::init) once, then [`routes`](Executor::routes)
/// once (the table is cached), then any number of requests and
/// [`dump`](Executor::dump)s, then [`close`](Executor::close).
pub trait Executor: Sized + 'static {
    /// Build the executor from its `with:` configuration. A stateful executor
    /// loads its workspace here. Return [`Error::bad_config`] for invalid config.
    fn init(config: Config) -> Result<Self>;

    /// Which method handles which endpoint.
    fn routes() -> Routes<Self>;

    /// Persist state into the workspace so a later `init` finds it.
    fn dump(&mut self) -> Result<()> {
        Ok(())
    }

    /// The instance is about to be dropped; nothing is called afterwards.
    fn close(&mut self) {}
}

/// A request handler: a method taking the request's documents and parameters.
pub type Handler<E> = fn(&mut E, Vec<Document>, &Params) -> Result<Vec<Document>>;

/// The endpoint table of an executor.
///
/// ```ignore
/// Routes::new().on("/index", Self::index).on("/search", Self::search).default(Self::other)
/// ```
///
/// A request goes to the handler of its exact endpoint, else to the default
/// handler, else nowhere: its documents are returned unchanged (without even
/// being decoded), as in Jina.
pub struct Routes<E> {
    endpoints: Vec<(String, Handler<E>)>,
    default: Option<Handler<E>>,
    /// One line per endpoint (and `None` for the default), from [`Routes::doc`].
    docs: Vec<(Option<String>, String)>,
    /// What the last `on` or `default` named, for `doc`.
    last: Option<Option<String>>,
}

impl<E> Routes<E> {
    /// No endpoints: every request passes through.
    // No `Default` impl: `Routes::default(handler)` is the builder method below.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Routes {
            endpoints: Vec::new(),
            default: None,
            docs: Vec::new(),
            last: None,
        }
    }

    /// Handle `endpoint` (for example `"/index"`) with `handler`. A second `on`
    /// for the same endpoint replaces the first.
    pub fn on(mut self, endpoint: impl Into<String>, handler: Handler<E>) -> Self {
        let endpoint = endpoint.into();
        self.endpoints.retain(|(e, _)| *e != endpoint);
        self.endpoints.push((endpoint.clone(), handler));
        self.last = Some(Some(endpoint));
        self
    }

    /// Handle every endpoint without its own handler.
    pub fn default(mut self, handler: Handler<E>) -> Self {
        self.default = Some(handler);
        self.last = Some(None);
        self
    }

    /// Describe the endpoint the last [`on`](Self::on) (or
    /// [`default`](Self::default)) named, in one line: `jina-wasm inspect`
    /// and the gateway's `/openapi.json` show it.
    ///
    /// ```ignore
    /// Routes::new().on("/index", Self::index).doc("Add documents to the index")
    /// ```
    /// Only the first line is kept, without control characters, cut to
    /// 1024 bytes (what the host accepts).
    pub fn doc(mut self, line: impl Into<String>) -> Self {
        let text: String = line.into();
        let mut line: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let mut end = line.len().min(1024);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        if let Some(last) = self.last.clone() {
            self.docs.retain(|(e, _)| *e != last);
            self.docs.push((last, line.trim().to_string()));
        }
        self
    }

    /// What the executor declares to the host (contract 0.2.0's
    /// `endpoints`): each endpoint with its doc, in registration order, then
    /// `__default__` when there is a default handler.
    pub fn declared(&self) -> Vec<(String, String)> {
        let doc = |key: Option<&str>| {
            self.docs
                .iter()
                .find(|(e, _)| e.as_deref() == key)
                .map_or_else(String::new, |(_, d)| d.clone())
        };
        let mut out: Vec<(String, String)> = self
            .endpoints
            .iter()
            .map(|(e, _)| (e.clone(), doc(Some(e))))
            .collect();
        if self.default.is_some() {
            out.push((Self::DEFAULT.to_string(), doc(None)));
        }
        out
    }

    /// The name [`declared`](Self::declared) gives the default handler.
    pub const DEFAULT: &'static str = "__default__";

    /// The handler for `endpoint`, if any.
    pub fn find(&self, endpoint: &str) -> Option<Handler<E>> {
        self.endpoints
            .iter()
            .find(|(e, _)| e == endpoint)
            .map(|(_, h)| *h)
            .or(self.default)
    }

    /// The endpoints with their own handler, in registration order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().map(|(e, _)| e.as_str())
    }
}

/// A JSON object with typed getters; `Config` and `Params` differ only in the
/// error kind and the name in messages.
#[derive(Clone, Debug, Default, PartialEq)]
struct Object {
    map: Map<String, Value>,
}

impl Object {
    fn parse(text: &str, kind: ErrorKind, what: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Object::default());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Object { map }),
            Ok(other) => Err(Error::new(
                kind,
                format!("{what} must be a JSON object, got {other}"),
            )),
            Err(err) => Err(Error::new(kind, format!("{what} is not valid JSON: {err}"))),
        }
    }

    fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        kind: ErrorKind,
        what: &str,
    ) -> Result<Option<T>> {
        let value = match self.map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value,
        };
        let err = match T::deserialize(value) {
            Ok(v) => return Ok(Some(v)),
            Err(err) => err,
        };
        // Jina's Python client sends every number as a double (`top_k: 3.0`):
        // a whole double is the integer it stands for. Only tried after the
        // value as it is failed, so `f64` targets still get `3.0` unchanged.
        if let Some(f) = value.as_f64().filter(|_| value.is_f64()) {
            if let Some(whole) = whole_number(f)
                && let Ok(v) = T::deserialize(&whole)
            {
                return Ok(Some(v));
            }
            if f.fract() != 0.0 && T::deserialize(&Value::from(f.trunc() as i64)).is_ok() {
                return Err(Error::new(
                    kind,
                    format!("{what}.{key} = {value}: expected a whole number"),
                ));
            }
        }
        Err(Error::new(kind, format!("{what}.{key} = {value}: {err}")))
    }

    fn count(&self, key: &str, kind: ErrorKind, what: &str) -> Result<Option<usize>> {
        let value = match self.map.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => value,
        };
        let count = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                // Jina's Python client sends numbers as doubles (`top_k: 3.0`).
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        count
            .and_then(|c| usize::try_from(c).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::new(
                    kind,
                    format!("{what}.{key} = {value}: expected a non-negative whole number"),
                )
            })
    }

    fn deserialize<T: DeserializeOwned>(&self, kind: ErrorKind, what: &str) -> Result<T> {
        T::deserialize(Value::Object(self.map.clone()))
            .map_err(|err| Error::new(kind, format!("{what}: {err}")))
    }
}

/// `f` as a JSON integer when it is a whole number within `i64`/`u64`.
fn whole_number(f: f64) -> Option<Value> {
    if !f.is_finite() || f.fract() != 0.0 {
        None
    } else if f >= 0.0 && f <= u64::MAX as f64 {
        Some(Value::from(f as u64))
    } else if f < 0.0 && f >= i64::MIN as f64 {
        Some(Value::from(f as i64))
    } else {
        None
    }
}

macro_rules! json_object {
    ($name:ident, $kind:expr, $what:literal) => {
        impl $name {
            /// Parse from JSON text; empty text is `{}`.
            ///
            /// # Errors
            ///
            /// Text that is not a JSON object.
            pub fn parse(text: &str) -> Result<Self> {
                Object::parse(text, $kind, $what).map($name::wrap)
            }

            /// Wrap an existing object.
            pub fn from_map(map: Map<String, Value>) -> Self {
                $name::wrap(Object { map })
            }

            /// `key` as `T`; `None` when absent or `null`. Where `T` is an
            /// integer, a whole double (`3.0`, as Jina's Python client sends
            /// every number) is accepted as that integer.
            ///
            /// # Errors
            ///
            /// The value does not deserialize as `T` (`3.5` for an integer:
            /// "expected a whole number"); the message names the key.
            pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
                self.0.get(key, $kind, $what)
            }

            /// `key` as `T`, or `default` when absent or `null`.
            ///
            /// # Errors
            ///
            /// As [`get`](Self::get).
            pub fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
                Ok(self.get(key)?.unwrap_or(default))
            }

            /// `key` as a count (`top_k`, `limit`): a non-negative whole
            /// number, also when written as a double (`3.0`, as Jina's Python
            /// client sends every number); `None` when absent or `null`.
            ///
            /// # Errors
            ///
            /// Anything else (`-1`, `2.5`, `"3"`); the message names the key.
            pub fn get_count(&self, key: &str) -> Result<Option<usize>> {
                self.0.count(key, $kind, $what)
            }

            /// [`get_count`](Self::get_count), or `default` when absent or `null`.
            ///
            /// # Errors
            ///
            /// As [`get_count`](Self::get_count).
            pub fn get_count_or(&self, key: &str, default: usize) -> Result<usize> {
                Ok(self.get_count(key)?.unwrap_or(default))
            }

            /// The whole object as `T` (a `#[derive(Deserialize)]` struct).
            ///
            /// # Errors
            ///
            /// The object does not deserialize as `T`.
            pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
                self.0.deserialize($kind, $what)
            }

            /// Whether `key` is present (even as `null`).
            pub fn contains(&self, key: &str) -> bool {
                self.0.map.contains_key(key)
            }

            /// The raw object.
            pub fn as_map(&self) -> &Map<String, Value> {
                &self.0.map
            }
        }
    };
}

/// The executor's `with:` configuration, a JSON object (`{}` when absent).
/// Getter errors are [`ErrorKind::BadConfig`] and name the key (`with.dim`).
///
/// The host's facts about the instance travel in the same object under the
/// key `jina` (docs/wit-contract.md); they are taken out when the config is
/// parsed, so the getters and [`deserialize`](Config::deserialize) see only
/// the user's parameters, and [`runtime_args`](Config::runtime_args) holds
/// the facts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config(Object, RuntimeArgs);

/// A request's parameters, a JSON object (`{}` when absent). Getter errors are
/// [`ErrorKind::BadRequest`] and name the key (`parameters.top_k`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(Object);

impl Params {
    fn wrap(object: Object) -> Self {
        Params(object)
    }
}

impl Config {
    /// Splits the host's `jina` key off the user's parameters.
    fn wrap(mut object: Object) -> Self {
        let runtime = match object.map.remove(RuntimeArgs::KEY) {
            Some(Value::Object(facts)) => RuntimeArgs::from_map(&facts),
            _ => RuntimeArgs::default(),
        };
        Config(object, runtime)
    }

    /// What the host says about this instance (Jina's `runtime_args`): its
    /// shard or replica, read-only and durable modes, memory limit.
    pub fn runtime_args(&self) -> &RuntimeArgs {
        &self.1
    }
}

/// The host's facts about one executor instance, as Jina's `runtime_args`.
///
/// Every field has a default for a host that does not say (a Pea alone, not
/// read-only, not durable). They inform the executor; the host enforces what
/// matters on its own side (a read-only workspace is mounted read-only, each
/// shard gets its own workspace, the memory limit traps), so an executor that
/// trusts a wrong value harms only itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeArgs {
    /// This instance's shard (0-based) when it is a shard of a Pod.
    pub shard_id: Option<usize>,
    /// How many shards the Pod has (with `shard_id`).
    pub shards: Option<usize>,
    /// This instance's replica id when it is a replica of a Pod (a number
    /// as text, or a name given with `jina-wasm pea --replica-id`).
    pub replica_id: Option<String>,
    /// How many replicas the Pod has, when known.
    pub replicas: Option<usize>,
    /// The workspace is read-only and `dump` is never called: refuse writes
    /// with [`ErrorKind::ReadOnly`].
    pub read_only: bool,
    /// `dump` runs after every request before it is answered: make it cheap.
    pub durable: bool,
    /// The instance's memory limit in bytes (given to executors with a
    /// workspace): past it the instance traps and loses its memory.
    pub memory_limit: Option<u64>,
}

impl RuntimeArgs {
    /// The key of `with:` the host's facts travel under.
    pub const KEY: &'static str = "jina";

    /// Reads the facts leniently: an unknown key (a newer host's) or a value
    /// of another type is ignored, so no fact can make `init` fail.
    pub fn from_map(facts: &Map<String, Value>) -> Self {
        let count = |key: &str| {
            facts.get(key).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_f64().and_then(whole_number)?.as_u64())
            })
        };
        let flag = |key: &str| facts.get(key).and_then(Value::as_bool).unwrap_or(false);
        RuntimeArgs {
            shard_id: count("shard_id").and_then(|n| usize::try_from(n).ok()),
            shards: count("shards").and_then(|n| usize::try_from(n).ok()),
            replica_id: facts.get("replica_id").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            replicas: count("replicas").and_then(|n| usize::try_from(n).ok()),
            read_only: flag("read_only"),
            durable: flag("durable"),
            memory_limit: count("memory_limit"),
        }
    }
}

json_object!(Config, ErrorKind::BadConfig, "with");
json_object!(Params, ErrorKind::BadRequest, "parameters");

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u32);

    impl Counter {
        fn count(&mut self, docs: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
            self.0 += 1;
            Ok(docs)
        }
        fn other(&mut self, _: Vec<Document>, _: &Params) -> Result<Vec<Document>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn exact_endpoint_then_default_then_nothing() {
        let routes = Routes::<Counter>::new().on("/count", Counter::count);
        assert!(routes.find("/count").is_some());
        assert!(routes.find("/other").is_none());

        let routes = routes.default(Counter::other);
        let mut c = Counter(0);
        let docs = vec![Document::new("a")];
        let out = routes.find("/count").unwrap()(&mut c, docs.clone(), &Params::default()).unwrap();
        assert_eq!((out, c.0), (docs.clone(), 1));
        let out = routes.find("/x").unwrap()(&mut c, docs, &Params::default()).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn routes_declare_their_endpoints_with_docs() {
        let routes = Routes::<Counter>::new()
            .on("/count", Counter::count)
            .doc("Count the request")
            .on("/other", Counter::other);
        assert_eq!(
            routes.declared(),
            [
                ("/count".to_string(), "Count the request".to_string()),
                ("/other".to_string(), String::new())
            ]
        );
        let routes = routes.default(Counter::other).doc("Anything else");
        assert_eq!(
            routes.declared().last().unwrap(),
            &("__default__".to_string(), "Anything else".to_string())
        );
    }

    #[test]
    fn typed_getters() {
        let config = Config::parse(r#"{"dim": 128, "name": "x", "none": null}"#).unwrap();
        assert_eq!(config.get::<u32>("dim").unwrap(), Some(128));
        assert_eq!(config.get::<u32>("missing").unwrap(), None);
        assert_eq!(config.get::<u32>("none").unwrap(), None);
        assert_eq!(config.get_or("missing", 7u32).unwrap(), 7);
        let err = config.get::<u32>("name").unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadConfig);
        assert!(err.message.contains("with.name"), "{}", err.message);

        #[derive(serde::Deserialize)]
        struct Whole {
            dim: usize,
        }
        assert_eq!(config.deserialize::<Whole>().unwrap().dim, 128);
    }

    #[test]
    fn counts_accept_integral_doubles_only() {
        let params =
            Params::parse(r#"{"a": 3, "b": 3.0, "c": 2.5, "d": -1, "e": "3", "f": null}"#).unwrap();
        assert_eq!(params.get_count("a").unwrap(), Some(3));
        assert_eq!(params.get_count("b").unwrap(), Some(3));
        assert_eq!(params.get_count("f").unwrap(), None);
        assert_eq!(params.get_count_or("missing", 7).unwrap(), 7);
        for key in ["c", "d", "e"] {
            let err = params.get_count(key).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadRequest);
            assert!(
                err.message.contains(&format!("parameters.{key}")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn getters_take_whole_doubles_as_integers_and_refuse_fractions() {
        let params = Params::parse(r#"{"k": 3.0, "half": 3.5, "neg": -2.0, "f": 1.0}"#).unwrap();
        assert_eq!(params.get::<usize>("k").unwrap(), Some(3));
        assert_eq!(params.get::<u32>("k").unwrap(), Some(3));
        assert_eq!(params.get::<i64>("neg").unwrap(), Some(-2));
        assert_eq!(params.get::<f64>("f").unwrap(), Some(1.0));
        let err = params.get::<usize>("half").unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadRequest);
        assert!(
            err.message
                .contains("parameters.half = 3.5: expected a whole number"),
            "{}",
            err.message
        );
        assert!(params.get::<u32>("neg").is_err());
    }

    #[test]
    fn the_hosts_facts_are_runtime_args_not_parameters() {
        let config = Config::parse(
            r#"{"dim": 4, "jina": {"shard_id": 1, "shards": 2, "read_only": true,
                "durable": true, "memory_limit": 1024, "replica_id": 3, "future": 1}}"#,
        )
        .unwrap();
        assert!(!config.contains("jina"));
        assert_eq!(config.as_map().len(), 1);
        let args = config.runtime_args();
        assert_eq!((args.shard_id, args.shards), (Some(1), Some(2)));
        assert_eq!(args.replica_id.as_deref(), Some("3"));
        assert!(args.read_only && args.durable);
        assert_eq!(args.memory_limit, Some(1024));

        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Strict {
            dim: usize,
        }
        assert!(config.deserialize::<Strict>().is_ok());
        // No facts: the defaults of a Pea alone.
        let alone = Config::parse(r#"{"jina": "not an object"}"#).unwrap();
        assert_eq!(alone.runtime_args(), &RuntimeArgs::default());
        assert!(alone.as_map().is_empty());
    }

    #[test]
    fn parse_rejects_non_objects() {
        assert_eq!(Params::parse("").unwrap(), Params::default());
        assert_eq!(
            Params::parse("[1]").unwrap_err().kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            Config::parse("nope").unwrap_err().kind,
            ErrorKind::BadConfig
        );
    }
}
