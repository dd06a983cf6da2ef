//! The gateway's protocols, as Jina 3 configures them: `with: {protocol:
//! [http, grpc], port: [8080, 8081]}` in the Flow file or `--protocol
//! http,grpc --port 8080,8081` on `flow` and `gateway`; one protocol and one
//! port as before. Each protocol gets its own port, and [`Gateways`] runs them
//! all in front of the same Flow.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::sync::mpsc;

use super::gateway::Gateway;
use super::grpc::GrpcGateway;
use super::router::Call;
use super::spec::FlowWith;

/// A protocol the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Jina's HTTP interface (src/flow/gateway.rs).
    Http,
    /// Jina's gRPC services, its client's default (src/flow/grpc/).
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One value or a list of them (`protocol: grpc`, `protocol: [http, grpc]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(d)?;
        let one = |v: serde_yaml::Value| serde_yaml::from_value::<T>(v);
        match value {
            serde_yaml::Value::Sequence(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| one(v).map_err(|e| serde::de::Error::custom(format!("[{i}]: {e}"))))
                .collect::<Result<Vec<T>, D::Error>>()
                .map(OneOrMany),
            value => one(value)
                .map(|v| OneOrMany(vec![v]))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Each protocol the gateway serves with its port (0: the OS picks). The
/// command line's `--protocol` and `--port` win over the file's `with:`;
/// without either, HTTP alone.
///
/// # Errors
/// A protocol given twice, or ports that do not pair with the protocols
/// (one port per protocol; a single `0` stands for all).
pub fn listeners(
    with: &FlowWith,
    protocols: &[Protocol],
    ports: &[u16],
) -> Result<Vec<(Protocol, u16)>, String> {
    let protocols: Vec<Protocol> = if !protocols.is_empty() {
        protocols.to_vec()
    } else {
        with.protocol
            .as_ref()
            .map_or_else(|| vec![Protocol::Http], |p| p.0.clone())
    };
    let ports: Vec<u16> = if !ports.is_empty() {
        ports.to_vec()
    } else if let Some(port) = &with.port {
        port.0.clone()
    } else {
        with.port_expose.into_iter().collect()
    };
    if protocols.is_empty() {
        return Err("`protocol` lists no protocol (http, grpc)".into());
    }
    for (i, p) in protocols.iter().enumerate() {
        if protocols[..i].contains(p) {
            return Err(format!("protocol `{}` is listed twice", p.name()));
        }
    }
    match ports.as_slice() {
        [] | [0] => Ok(protocols.into_iter().map(|p| (p, 0)).collect()),
        ports if ports.len() == protocols.len() => {
            Ok(protocols.into_iter().zip(ports.iter().copied()).collect())
        }
        ports => Err(format!(
            "{} ports ({ports:?}) for {} protocols ({}): give one port per protocol, in the same order",
            ports.len(),
            protocols.len(),
            protocols
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The running gateways of a Flow, one per protocol.
pub struct Gateways {
    http: Option<Gateway>,
    grpc: Option<GrpcGateway>,
    /// In the order given, for the ready line.
    order: Vec<Protocol>,
}

impl Gateways {
    /// Starts a gateway per listener on `host`; if one cannot start, those
    /// already started are stopped again.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub async fn start(
        host: &str,
        listeners: &[(Protocol, u16)],
        calls: &mpsc::Sender<Call>,
        prefetch: usize,
        info: &Value,
        limits: &crate::http_server::HttpLimits,
        admin: Option<std::sync::Arc<super::update::Admin>>,
    ) -> anyhow::Result<Gateways> {
        let mut gateways = Gateways {
            http: None,
            grpc: None,
            order: Vec::new(),
        };
        for &(protocol, port) in listeners {
            let started = match protocol {
                Protocol::Http => Gateway::start(
                    host,
                    port,
                    calls.clone(),
                    prefetch,
                    info.clone(),
                    limits.clone(),
                    admin.clone(),
                )
                .await
                .map(|g| gateways.http = Some(g)),
                Protocol::Grpc => {
                    GrpcGateway::start(host, port, calls.clone(), prefetch, info.clone(), limits)
                        .await
                        .map(|g| gateways.grpc = Some(g))
                }
            };
            if let Err(e) = started {
                gateways.stop().await;
                return Err(e);
            }
            gateways.order.push(protocol);
        }
        Ok(gateways)
    }

    /// Adds every protocol's address to the ready line: `gateway` and `port`
    /// are the first protocol's (as before), `gateways` and `ports` name each
    /// (`{"http": "http://127.0.0.1:8080", "grpc": "grpc://127.0.0.1:8081"}`).
    pub fn describe(&self, ready: &mut Value) {
        let mut addresses = serde_json::Map::new();
        let mut ports = serde_json::Map::new();
        for &protocol in &self.order {
            let address = match protocol {
                Protocol::Http => self.http.as_ref().map(|g| g.address),
                Protocol::Grpc => self.grpc.as_ref().map(|g| g.address),
            };
            if let Some(address) = address {
                addresses.insert(
                    protocol.name().into(),
                    format!("{}://{address}", protocol.name()).into(),
                );
                ports.insert(protocol.name().into(), address.port().into());
            }
        }
        if let Some(first) = self.order.first() {
            ready["gateway"] = addresses[first.name()].clone();
            ready["port"] = ports[first.name()].clone();
        }
        ready["gateways"] = addresses.into();
        ready["ports"] = ports.into();
    }

    /// Stops every gateway, each finishing the requests it is answering.
    pub async fn stop(self) {
        if let Some(g) = self.http {
            g.stop().await;
        }
        if let Some(g) = self.grpc {
            g.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(yaml: &str) -> FlowWith {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn protocols_pair_with_ports() {
        use Protocol::{Grpc, Http};
        assert_eq!(listeners(&with("{}"), &[], &[]).unwrap(), [(Http, 0)]);
        assert_eq!(
            listeners(&with("{protocol: grpc, port: 9}"), &[], &[]).unwrap(),
            [(Grpc, 9)]
        );
        assert_eq!(
            listeners(&with("{protocol: [http, grpc], port: [8, 9]}"), &[], &[]).unwrap(),
            [(Http, 8), (Grpc, 9)]
        );
        assert_eq!(
            listeners(&with("{protocol: [grpc, http], port: 0}"), &[], &[]).unwrap(),
            [(Grpc, 0), (Http, 0)]
        );
        // The command line wins.
        assert_eq!(
            listeners(&with("{protocol: http, port: 8}"), &[Grpc], &[7]).unwrap(),
            [(Grpc, 7)]
        );
        assert_eq!(
            listeners(&with("{port_expose: 5}"), &[], &[]).unwrap(),
            [(Http, 5)]
        );
        let error = listeners(&with("{protocol: [http, grpc], port: 8}"), &[], &[]).unwrap_err();
        assert!(error.contains("give one port per protocol"), "{error}");
        let error = listeners(&with("{protocol: [grpc, grpc]}"), &[], &[]).unwrap_err();
        assert_eq!(error, "protocol `grpc` is listed twice");
        let error = serde_yaml::from_str::<FlowWith>("{protocol: [http, websocket]}")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("[1]: unknown variant `websocket`"),
            "{error}"
        );
    }
}
