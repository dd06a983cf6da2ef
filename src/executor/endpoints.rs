//! What an executor is given and declares: the runtime arguments the host
//! puts into its config, and the endpoints it says it handles (contract
//! 0.2.0), checked before anyone routes by them.

use super::*;

/// Sets `with.jina.<key>`: what the host tells an executor about how it runs
/// (as Jina's `runtime_args`): `shard_id`/`shards`, `replica_id`/`replicas`,
/// `read_only`, `durable`, `memory_limit`. docs/wit-contract.md lists them,
/// and which the host always decides itself. A `with` that is not a map is
/// left alone (`start` refuses it).
pub fn set_runtime_arg(config: &mut Value, key: &str, value: Value) {
    if config.is_null() {
        *config = Value::Object(serde_json::Map::new());
    }
    let Value::Object(with) = config else { return };
    let jina = with
        .entry("jina")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Value::Object(jina) = jina {
        jina.insert(key.to_string(), value);
    }
}

/// Removes `with.jina.<key>` (and `jina` when nothing is left in it): for a
/// fact the host decides itself, so a value the user wrote under `jina` is
/// not taken for the host's.
pub fn unset_runtime_arg(config: &mut Value, key: &str) {
    let Value::Object(with) = config else { return };
    if let Some(Value::Object(jina)) = with.get_mut("jina") {
        jina.remove(key);
        if jina.is_empty() {
            with.remove("jina");
        }
    }
}

/// One endpoint a component declares (contract 0.2.0's `endpoint-info`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointInfo {
    /// As requests name it (`/index`), or [`DEFAULT_ENDPOINT`].
    pub name: String,
    /// One line for people; may be empty.
    pub doc: String,
}

/// The declared name of "every endpoint without its own entry" (Jina's
/// default handler, `@requests` without `on`).
pub const DEFAULT_ENDPOINT: &str = "__default__";

/// The most endpoints a component may declare.
pub const MAX_ENDPOINTS: usize = 256;

/// The longest endpoint name, in bytes.
pub const MAX_ENDPOINT_NAME: usize = 256;

/// The longest endpoint doc, in bytes.
pub const MAX_ENDPOINT_DOC: usize = 1024;

/// Checks what a guest declared (untrusted): at most [`MAX_ENDPOINTS`], each
/// name non-empty, at most [`MAX_ENDPOINT_NAME`] bytes, without whitespace or
/// control characters; each doc one line of at most [`MAX_ENDPOINT_DOC`]
/// bytes. A name given twice keeps its first entry.
///
/// # Errors
/// A message naming the entry and what is wrong with it.
pub fn check_endpoints(declared: Vec<(String, String)>) -> Result<Vec<EndpointInfo>, String> {
    if declared.len() > MAX_ENDPOINTS {
        return Err(format!(
            "declared {} endpoints, over the limit of {MAX_ENDPOINTS}",
            declared.len()
        ));
    }
    let mut out: Vec<EndpointInfo> = Vec::with_capacity(declared.len());
    for (i, (name, doc)) in declared.into_iter().enumerate() {
        let shown: String = name.chars().take(40).collect();
        if name.is_empty() || name.len() > MAX_ENDPOINT_NAME {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): a name must have 1 to {MAX_ENDPOINT_NAME} bytes, not {}",
                name.len()
            ));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): a name must not contain whitespace or control characters"
            ));
        }
        if doc.len() > MAX_ENDPOINT_DOC || doc.chars().any(char::is_control) {
            return Err(format!(
                "endpoints[{i}] ({shown:?}): the doc must be one line of at most {MAX_ENDPOINT_DOC} bytes"
            ));
        }
        if !out.iter().any(|e| e.name == name) {
            out.push(EndpointInfo { name, doc });
        }
    }
    Ok(out)
}
