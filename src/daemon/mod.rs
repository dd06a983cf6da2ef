//! `jina-wasm daemon`: remote and multi-tenant hosting (Jina's JinaD).
//!
//! An HTTP (JSON) API through which tenants upload files into workspaces and
//! start Peas, Pods and Flows from them; a Flow uses it to run a Pod on another host
//! (`host:` in its YAML, [`crate::flow::remote`]). docs/daemon.md documents
//! every route.
//!
//! - [`tenants`]: the tenants file; every call carries a bearer token, and the
//!   token is the tenant. A tenant's objects live in its own map and its files
//!   in its own directory, so another tenant's ids are simply not found (404).
//! - [`workspace`]: uploads, content-addressed (sha256) per tenant, linked into
//!   named workspaces; names that escape are refused.
//! - [`request`]: what a tenant asks for (a Pea, Pod or Flow): a Flow file's
//!   Pod and the daemon's own keys, checked and planned against its quota.
//! - [`objects`]: the record of each Pea, Pod or Flow a tenant started;
//! - [`child`]: each one's child process of the daemon (killed with it:
//!   PR_SET_PDEATHSIG), its stderr in a log file, stopped on delete, on lease
//!   expiry and on daemon shutdown.
//! - [`flows`]: a Flow YAML from a workspace, rewritten to stay inside it.
//! - [`api`]: the routes.
//!
//! The client side (for Flows, tests and the benchmark) is [`crate::client_daemon`].

pub mod api;
pub mod bounds;
pub mod child;
pub mod flows;
pub mod objects;
pub mod request;
pub mod tenants;
pub mod workspace;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use objects::{Object, State};
use tenants::Tenant;

/// Everything the daemon is started with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The address the API and every started Pea's input and output bind.
    pub host: String,
    pub port: u16,
    /// Absolute; holds `tenants/` (and `cache/` by default).
    pub data_dir: PathBuf,
    pub tenants: Vec<Tenant>,
    /// The compiled-component cache of every started Pea.
    pub cache_dir: PathBuf,
    /// The largest single uploaded file.
    pub max_upload: u64,
    /// Each object's log is rotated past this many bytes (one older part kept).
    pub max_log: u64,
    /// The `jina-wasm` executable the children run.
    pub exe: PathBuf,
    /// The API's header-read and idle timeouts and connection cap.
    pub http: crate::http_server::HttpLimits,
}

/// The daemon's state, shared by every request.
pub struct Daemon {
    pub config: DaemonConfig,
    /// Per tenant name: its objects by id.
    objects: Mutex<HashMap<String, BTreeMap<String, Object>>>,
    /// Per tenant name: held while an upload is checked against the disk quota.
    upload_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Per tenant name: one permit per call it may have open (`quota.requests`).
    pub(crate) open_calls: HashMap<String, Arc<tokio::sync::Semaphore>>,
}

impl Daemon {
    pub fn new(config: DaemonConfig) -> Arc<Daemon> {
        let objects = Mutex::new(
            config
                .tenants
                .iter()
                .map(|t| (t.name.clone(), BTreeMap::new()))
                .collect(),
        );
        let upload_locks = config
            .tenants
            .iter()
            .map(|t| (t.name.clone(), Arc::default()))
            .collect();
        let open_calls = config
            .tenants
            .iter()
            .map(|t| {
                let permits = t.quota.requests.min(tokio::sync::Semaphore::MAX_PERMITS);
                (
                    t.name.clone(),
                    Arc::new(tokio::sync::Semaphore::new(permits)),
                )
            })
            .collect();
        Arc::new(Daemon {
            config,
            objects,
            upload_locks,
            open_calls,
        })
    }

    /// The tenant a bearer token belongs to.
    pub fn tenant_of(&self, token: &str) -> Option<&Tenant> {
        self.config
            .tenants
            .iter()
            .find(|t| tenants::same_token(&t.token, token))
    }

    pub fn dirs(&self, tenant: &Tenant) -> workspace::TenantDirs {
        workspace::TenantDirs::new(&self.config.data_dir, &tenant.name)
    }

    fn upload_lock(&self, tenant: &Tenant) -> Arc<tokio::sync::Mutex<()>> {
        self.upload_locks[&tenant.name].clone()
    }

    /// Runs `f` on the tenant's objects.
    fn with_objects<R>(
        &self,
        tenant: &Tenant,
        f: impl FnOnce(&mut BTreeMap<String, Object>) -> R,
    ) -> R {
        let mut all = self.objects.lock().expect("objects");
        f(all.entry(tenant.name.clone()).or_default())
    }

    /// Peas and memory the tenant's live objects hold.
    fn usage(objects: &BTreeMap<String, Object>) -> (usize, u64) {
        objects
            .values()
            .filter(|o| o.holds_resources())
            .fold((0, 0), |(peas, memory), o| {
                (peas + o.plan.peas, memory + o.plan.memory)
            })
    }

    /// Removes an object from its tenant and stops it.
    async fn delete(&self, tenant: &str, id: &str) -> bool {
        let object = self
            .objects
            .lock()
            .expect("objects")
            .get_mut(tenant)
            .and_then(|o| o.remove(id));
        match object {
            Some(object) => {
                tracing::info!(tenant, id, name = %object.name, "stopping");
                let (state, log) = (object.state.clone(), object.log.clone());
                object.stop().await;
                self.forget_files(tenant, id, state, &log);
                true
            }
            None => false,
        }
    }

    /// Removes what a deleted (or never started) object leaves behind: its
    /// own state directory and its log. A named state stays.
    fn forget(&self, tenant: &str, object: &Object) {
        self.forget_files(tenant, &object.id, object.state.clone(), &object.log);
    }

    fn forget_files(
        &self,
        tenant: &str,
        id: &str,
        state: Option<(std::path::PathBuf, bool)>,
        log: &std::path::Path,
    ) {
        let dirs = workspace::TenantDirs::new(&self.config.data_dir, tenant);
        if let Some((relative, true)) = state
            && let Err(e) = dirs.remove_tree(&relative)
        {
            tracing::warn!(
                tenant,
                id,
                "cannot remove the object's state {}: {e}",
                relative.display()
            );
        }
        for file in [child::rotated(log), log.to_path_buf()] {
            let _ = std::fs::remove_file(file);
        }
    }

    /// Deletes every object whose lease has expired: the Flow that renewed it is gone.
    async fn reap(&self) {
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let all = self.objects.lock().expect("objects");
            all.iter()
                .flat_map(|(tenant, objects)| {
                    objects
                        .values()
                        .filter(|o| o.expires.is_some_and(|e| e <= now))
                        .map(|o| (tenant.clone(), o.id.clone()))
                })
                .collect()
        };
        for (tenant, id) in expired {
            tracing::warn!(%tenant, %id, "lease expired: deleting");
            self.delete(&tenant, &id).await;
        }
    }

    /// Stops everything every tenant started.
    pub async fn stop_all(&self) {
        let all: Vec<Object> = {
            let mut all = self.objects.lock().expect("objects");
            all.values_mut()
                .flat_map(|objects| std::mem::take(objects).into_values())
                .collect()
        };
        futures::future::join_all(all.into_iter().map(Object::stop)).await;
    }

    /// Whether a live object uses the workspace.
    fn workspace_in_use(&self, tenant: &Tenant, id: &str) -> Option<String> {
        self.with_objects(tenant, |objects| {
            objects
                .values()
                .find(|o| o.workspace == id && o.live.lock().expect("live").state != State::Exited)
                .map(|o| o.id.clone())
        })
    }
}

/// A fresh id: a random (version 4) UUID as 32 hex digits.
pub fn random_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Serves the API until `shutdown` resolves, then stops every object.
///
/// `ready` gets the bound address once the socket listens.
///
/// # Errors
/// The address cannot be bound, or the data directory cannot be created.
pub async fn serve(
    config: DaemonConfig,
    ready: impl FnOnce(std::net::SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for dir in [&config.data_dir, &config.cache_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("daemon: cannot bind {}:{}", config.host, config.port))?;
    let address = listener.local_addr()?;
    let daemon = Daemon::new(config);
    let reaper = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                daemon.reap().await;
            }
        })
    };
    ready(address);
    let app = api::router(daemon.clone());
    // Objects stop first: their log streams then end, so the server's
    // graceful drain does not wait on them.
    let stopper = daemon.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("daemon stopping: stopping every Pea and Pod it started");
        stopper.stop_all().await;
    };
    let limits = daemon.config.http.clone();
    let served = crate::http_server::serve(listener, app, limits, shutdown).await;
    reaper.abort();
    daemon.stop_all().await;
    served.context("daemon: the HTTP server failed")
}
