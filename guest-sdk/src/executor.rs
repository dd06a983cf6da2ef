//! The [`Executor`] trait, its [`Routes`], and the two JSON objects it reads:
//! [`Config`] (the `with:` block) and [`Params`] (a request's parameters).

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
}

impl<E> Routes<E> {
    /// No endpoints: every request passes through.
    // No `Default` impl: `Routes::default(handler)` is the builder method below.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Routes {
            endpoints: Vec::new(),
            default: None,
        }
    }

    /// Handle `endpoint` (for example `"/index"`) with `handler`. A second `on`
    /// for the same endpoint replaces the first.
    pub fn on(mut self, endpoint: impl Into<String>, handler: Handler<E>) -> Self {
        let endpoint = endpoint.into();
        self.endpoints.retain(|(e, _)| *e != endpoint);
        self.endpoints.push((endpoint, handler));
        self
    }

    /// Handle every endpoint without its own handler.
    pub fn default(mut self, handler: Handler<E>) -> Self {
        self.default = Some(handler);
        self
    }

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
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|err| Error::new(kind, format!("{what}.{key} = {value}: {err}"))),
        }
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

macro_rules! json_object {
    ($name:ident, $kind:expr, $what:literal) => {
        impl $name {
            /// Parse from JSON text; empty text is `{}`.
            ///
            /// # Errors
            ///
            /// Text that is not a JSON object.
            pub fn parse(text: &str) -> Result<Self> {
                Object::parse(text, $kind, $what).map($name)
            }

            /// Wrap an existing object.
            pub fn from_map(map: Map<String, Value>) -> Self {
                $name(Object { map })
            }

            /// `key` as `T`; `None` when absent or `null`.
            ///
            /// # Errors
            ///
            /// The value does not deserialize as `T`; the message names the key.
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config(Object);

/// A request's parameters, a JSON object (`{}` when absent). Getter errors are
/// [`ErrorKind::BadRequest`] and name the key (`parameters.top_k`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(Object);

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
