//! The Flow's endpoints, as its executors declare them (contract 0.2.0's
//! `endpoints`): what the HTTP gateway's `GET /openapi.json` lists and what
//! the gRPC `endpoint_discovery` answers (docs/gateway.md, docs/grpc.md).
//!
//! [`discover`] asks each local Pod's component once, when the Flow has
//! started, and the answer travels in the gateway's `info` under
//! `endpoints` (so `GET /status` and the ready line show it too). A Pod that
//! cannot say (a 0.1.0 component, a Pod on a daemon, a standalone `jina-wasm
//! gateway`, which has no components) counts as taking every endpoint.
//! Nothing is refused for being undeclared: a request to any endpoint still
//! runs through the Flow, and executors without a handler for it pass the
//! documents on (docs/wit-contract.md, "Endpoints follow Jina").

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Flow;
use crate::executor::{DEFAULT_ENDPOINT, EndpointInfo, Executor, Runtime};

/// Asks every local Pod's executor what it declares, in file order:
/// `[{"pod": NAME, "endpoints": [{"name", "doc"}] | null}]`, `null` when
/// the Pod cannot say (see the module doc; a failure is logged, not fatal:
/// the Pods are running and take every endpoint regardless).
pub async fn discover(runtime: Arc<Runtime>, flow: &Flow) -> Value {
    let mut pods = Vec::new();
    for pod in &flow.pods {
        let declared = if pod.host.is_some() {
            None
        } else {
            let asked = match runtime.load_async(&pod.uses).await {
                Ok(component) => {
                    Executor::declared_endpoints_async(runtime.clone(), component, &pod.name)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match asked {
                Ok(declared) => declared,
                Err(e) => {
                    tracing::warn!(pod = %pod.name, "cannot ask the executor for its endpoints: {e}");
                    None
                }
            }
        };
        pods.push(json!({"pod": pod.name, "endpoints": declared}));
    }
    Value::Array(pods)
}

/// What the Flow as a whole serves, read back from `info["endpoints"]`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlowEndpoints {
    /// Each declared endpoint (not `__default__`), first declaration's doc,
    /// with the Pods that declare it; in the order first declared.
    pub declared: Vec<(EndpointInfo, Vec<String>)>,
    /// Some Pod takes every endpoint: it declares `__default__`, or cannot
    /// declare at all (or `info` has no `endpoints`).
    pub takes_any: bool,
}

impl FlowEndpoints {
    /// From the gateway's `info` (see [`discover`]). Without `endpoints`
    /// (a standalone gateway), nothing is declared and anything is taken.
    pub fn from_info(info: &Value) -> FlowEndpoints {
        let Some(pods) = info.get("endpoints").and_then(Value::as_array) else {
            return FlowEndpoints {
                declared: Vec::new(),
                takes_any: true,
            };
        };
        let mut out = FlowEndpoints::default();
        for pod in pods {
            let name = pod["pod"].as_str().unwrap_or_default().to_string();
            let Some(list) = pod["endpoints"].as_array() else {
                out.takes_any = true;
                continue;
            };
            for entry in list {
                let Ok(info) = serde_json::from_value::<EndpointInfo>(entry.clone()) else {
                    continue;
                };
                if info.name == DEFAULT_ENDPOINT {
                    out.takes_any = true;
                } else if let Some((_, pods)) =
                    out.declared.iter_mut().find(|(e, _)| e.name == info.name)
                {
                    pods.push(name.clone());
                } else {
                    out.declared.push((info, vec![name.clone()]));
                }
            }
        }
        out
    }

    /// Jina's `endpoint_discovery` answer: every declared endpoint, then
    /// `__default__` when some executor takes any.
    pub fn discovery(&self) -> Vec<String> {
        let mut names: Vec<String> = self.declared.iter().map(|(e, _)| e.name.clone()).collect();
        if self.takes_any {
            names.push(DEFAULT_ENDPOINT.to_string());
        }
        names
    }

    /// An OpenAPI 3 document of the gateway: `POST /<endpoint>` for every
    /// declared endpoint, `POST /post` for any endpoint, and the `GET`
    /// routes. `/default` is never listed: Jina's client would then send
    /// every undeclared endpoint there.
    pub fn openapi(&self, title: &str) -> Value {
        let mut paths = Map::new();
        for (info, pods) in &self.declared {
            // A path must be `/...` and `{` `}` would read as a template.
            if !info.name.starts_with('/')
                || info.name.contains(['{', '}'])
                || ["/post", "/dry_run", "/status", "/openapi.json"].contains(&info.name.as_str())
            {
                continue;
            }
            let summary = if info.doc.is_empty() {
                format!("Request to {}", info.name)
            } else {
                info.doc.clone()
            };
            paths.insert(
                info.name.clone(),
                json!({"post": request_operation(
                    &summary,
                    &format!("Declared by {}. The path is the endpoint (`exec_endpoint` in the body is ignored).", pods.join(", ")),
                    &operation_id(&info.name),
                )}),
            );
        }
        let any = if self.takes_any {
            "Any endpoint: `exec_endpoint` in the body (default `/`). Some executor of this Flow takes every endpoint."
        } else {
            "Any endpoint: `exec_endpoint` in the body (default `/`). Executors pass the documents of an endpoint they do not declare on unchanged."
        };
        paths.insert(
            "/post".into(),
            json!({"post": request_operation("Request to the endpoint the body names", any, "post")}),
        );
        paths.insert(
            "/dry_run".into(),
            json!({"get": {
                "summary": "Is the Flow up",
                "operationId": "dry_run",
                "responses": {"200": {"description": "`code` 0: ready; 1: stopping", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}),
        );
        paths.insert(
            "/status".into(),
            json!({"get": {
                "summary": "The Flow's Pods and their declared endpoints",
                "operationId": "status",
                "responses": {"200": {"description": "The Flow", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}),
        );
        paths.insert(
            "/openapi.json".into(),
            json!({"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}),
        );
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Jina's HTTP interface in front of a jina-wasm Flow (docs/gateway.md)."
            },
            "paths": paths,
            "components": {"schemas": schemas()}
        })
    }
}

/// `/index` -> `post_index`; other characters become `_`.
fn operation_id(endpoint: &str) -> String {
    let mut id = String::from("post");
    for c in endpoint.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '_' });
    }
    id
}

fn request_operation(summary: &str, description: &str, id: &str) -> Value {
    let failure = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Failure"}}}});
    json!({
        "summary": summary,
        "description": description,
        "operationId": id,
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Request"}}}
        },
        "responses": {
            "200": {"description": "The documents after the Flow", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}},
            "422": failure("The body is not a JSON request"),
            "500": failure("An executor failed"),
            "503": failure("The Flow is stopping or a Pod is unavailable"),
            "507": failure("An executor is full (error kind `capacity`)")
        }
    })
}

fn schemas() -> Value {
    json!({
        "Document": {
            "type": "object",
            "description": "Jina's document; `chunks` and `matches` nest documents.",
            "properties": {
                "id": {"type": "string"},
                "text": {"type": "string"},
                "blob": {"type": "string", "description": "base64"},
                "uri": {"type": "string"},
                "mime_type": {"type": "string"},
                "embedding": {"type": "array", "items": {"type": "number"}},
                "tags": {"type": "object"},
                "scores": {"type": "object"},
                "chunks": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}},
                "matches": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}}
            }
        },
        "Request": {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"oneOf": [{"$ref": "#/components/schemas/Document"}, {"type": "string"}]}},
                "exec_endpoint": {"type": "string"},
                "parameters": {"type": "object"},
                "header": {"type": "object", "properties": {"request_id": {"type": "string"}}}
            }
        },
        "Status": {
            "type": "object",
            "properties": {
                "code": {"type": "integer"},
                "description": {"type": "string"},
                "exception": {"type": "object", "properties": {
                    "name": {"type": "string", "description": "the error kind"},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "executor": {"type": "string"}
                }}
            }
        },
        "Answer": {
            "type": "object",
            "properties": {
                "header": {"type": "object", "properties": {
                    "requestId": {"type": "string"},
                    "execEndpoint": {"type": "string"},
                    "status": {"$ref": "#/components/schemas/Status"}
                }},
                "parameters": {"type": "object"},
                "routes": {"type": "array", "items": {"type": "object"}},
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}}
            }
        },
        "Failure": {
            "type": "object",
            "properties": {
                "code": {"type": "integer"},
                "description": {"type": "string"},
                "header": {"type": "object"},
                "routes": {"type": "array", "items": {"type": "object"}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Value {
        json!({"endpoints": [
            {"pod": "seg", "endpoints": [{"name": "/index", "doc": "Split"}, {"name": "/search", "doc": ""}]},
            {"pod": "idx", "endpoints": [{"name": "/index", "doc": "Store"}, {"name": "__default__", "doc": ""}]},
        ]})
    }

    #[test]
    fn the_flow_serves_the_union_of_its_pods_endpoints() {
        let e = FlowEndpoints::from_info(&info());
        assert_eq!(e.discovery(), ["/index", "/search", "__default__"]);
        assert_eq!(e.declared[0].1, ["seg", "idx"]);
        assert_eq!(e.declared[0].0.doc, "Split");
        // A Pod that cannot declare takes every endpoint.
        let e = FlowEndpoints::from_info(&json!({"endpoints": [
            {"pod": "a", "endpoints": [{"name": "/x", "doc": ""}]}, {"pod": "old", "endpoints": null}]}));
        assert_eq!(e.discovery(), ["/x", "__default__"]);
        let e = FlowEndpoints::from_info(
            &json!({"endpoints": [{"pod": "a", "endpoints": [{"name": "/x", "doc": ""}]}]}),
        );
        assert_eq!(e.discovery(), ["/x"]);
        // A standalone gateway knows nothing: anything goes.
        assert_eq!(
            FlowEndpoints::from_info(&json!({})).discovery(),
            ["__default__"]
        );
    }

    #[test]
    fn openapi_lists_declared_endpoints_and_never_default() {
        let doc = FlowEndpoints::from_info(&info()).openapi("flow.yml");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        let mut keys: Vec<&str> = paths.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "/dry_run",
                "/index",
                "/openapi.json",
                "/post",
                "/search",
                "/status"
            ]
        );
        assert_eq!(paths["/index"]["post"]["summary"], "Split");
        assert_eq!(paths["/index"]["post"]["operationId"], "post_index");
        assert!(
            paths["/index"]["post"]["description"]
                .as_str()
                .unwrap()
                .contains("seg, idx")
        );
        assert!(doc["components"]["schemas"]["Document"].is_object());
    }
}
