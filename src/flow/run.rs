//! Running a Flow: its Pods, started in dependency order, and the router that
//! carries each request along the `needs` graph, joining branches.
//!
//! Every Pod binds its input (PULL) and output (PUSH) on loopback (a remote
//! Pod on its daemon's address, [`super::remote`]); the router,
//! in the Flow's process, connects to both. A request from the gateway goes to
//! every Pod that needs `gateway`; a Pod's output goes to every Pod that needs
//! it; a Pod that needs several Pods (a join) gets one message per request,
//! merged once every branch has answered; the outputs of the Pods nobody needs
//! are joined the same way into the gateway's answer.
//!
//! Part counting is per request and per join, so a branch that fails still
//! arrives (Peas always forward, with the failure in the status); a branch that
//! aborts (`THROW_EARLY`) answers the request at once; a branch that never
//! answers is caught by the request's deadline, which ends it with an error
//! naming the Pod that did not answer. Nothing waits forever.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::spec::{Flow, PodSpec};
use crate::executor::{ExecutorSpec, Runtime, Sandbox};
use crate::pea::{DumpPolicy, OnError, PeaConfig};
use crate::pod::{Backend, Balance, PodConfig, PodHandle};
use crate::transport::{Link, SocketSpec};
use crate::wire::{AfterError, Body, ErrorKind, Message, Outcome, Route, now_us};

/// How the Flow's Pods run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub backend: Backend,
    /// Extra `jina-wasm pea` arguments for child processes.
    pub child_args: Vec<String>,
    /// Pods with `host:`, on a daemon.
    pub remote: super::remote::RemoteOptions,
    /// The most Peas the Flow may start (`--max-peas`; `None`: the file's
    /// `with.max_peas`, else [`super::spec::DEFAULT_MAX_PEAS`]).
    pub max_peas: Option<usize>,
}

/// A request from the gateway and where its answer goes.
pub struct Call {
    pub message: Message,
    pub reply: oneshot::Sender<Message>,
    /// Jina's `target_executor`: only the Pods it names handle the request.
    pub target: Option<TargetExecutor>,
}

/// Jina's `target_executor`: a regular expression matched, as Python's
/// `re.match` does, at the start of each Pod's name. Pods it does not match
/// pass the request on as they received it (Jina's gateway does the same), so
/// a client can send `/dump` or `/search` to one Pod of a Flow.
#[derive(Debug, Clone)]
pub struct TargetExecutor(regex::Regex);

impl TargetExecutor {
    /// The largest compiled pattern a client may send: the regex crate's
    /// matching is linear in the input, and this bounds what compiling one
    /// pattern may cost.
    const SIZE_LIMIT: usize = 256 << 10;

    /// Reads a client's pattern; empty means every Pod.
    ///
    /// # Errors
    /// A pattern that is not a regular expression, or too large, named.
    pub fn parse(pattern: &str) -> Result<Option<TargetExecutor>, String> {
        if pattern.is_empty() {
            return Ok(None);
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})"))
            .size_limit(Self::SIZE_LIMIT)
            .dfa_size_limit(Self::SIZE_LIMIT)
            .build()
            .map(|r| Some(TargetExecutor(r)))
            .map_err(|e| {
                let reason = e.to_string();
                let reason = reason.lines().last().unwrap_or_default().trim();
                format!("`target_executor` is not a regular expression: {reason}")
            })
    }

    /// Whether the Pod called `name` handles the request.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

/// The running Pods and the router between them.
pub struct Running {
    pub pods: Vec<(String, PodHandle)>,
    pub calls: mpsc::Sender<Call>,
    stop: CancellationToken,
    router: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the router, then every Pod, last started first.
    ///
    /// # Errors
    /// A Pod that did not stop cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let _ = self.router.await;
        stop_pods(self.pods).await
    }
}

async fn stop_pods(pods: Vec<(String, PodHandle)>) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (name, pod) in pods.into_iter().rev() {
        pod.terminate();
        if let Err(e) = pod.wait().await {
            failures.push(format!("pod `{name}`: {e:#}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(failures.join("; ")))
    }
}

/// Starts the Pods in dependency order and the router. `configs` are the
/// Pods' settings from [`resolve`] (file order): every one is known before
/// the first Pod starts. On any failure every Pod already started is stopped,
/// and the error names the Pod.
///
/// # Errors
/// A Pod that does not start.
///
/// # Panics
/// When `configs` does not hold one config per Pod (a caller's bug).
pub async fn start(
    runtime: Arc<Runtime>,
    flow: &Flow,
    configs: Vec<PodConfig>,
    options: &RunOptions,
) -> anyhow::Result<Running> {
    assert_eq!(configs.len(), flow.pods.len(), "one config per Pod");
    let mut configs: Vec<Option<PodConfig>> = configs.into_iter().map(Some).collect();
    let mut started: Vec<(String, PodHandle)> = Vec::new();
    for &i in &flow.order {
        let spec = &flow.pods[i];
        let mut config = configs[i]
            .take()
            .expect("one config per Pod, each started once");
        // A Pod whose Peas are threads of this process is reached by the
        // router in-process, not over loopback TCP (the ready line shows its
        // `inproc://` input and output; its control socket stays on TCP).
        if config.backend == crate::pod::Backend::Thread {
            let name = &spec.name;
            config.pea.address_in = crate::transport::inproc::address(&format!("{name}-in"));
            config.pea.address_out = crate::transport::inproc::address(&format!("{name}-out"));
        }
        let result = if spec.host.is_some() {
            super::remote::start(flow, i, &options.remote).await
        } else {
            crate::pod::start(runtime.clone(), config).await
        };
        match result {
            Ok(pod) => started.push((spec.name.clone(), pod)),
            Err(e) => {
                let _ = stop_pods(started).await;
                return Err(e.context(format!(
                    "{}: pod `{}` did not start",
                    flow.file.display(),
                    spec.name
                )));
            }
        }
    }
    // Back in file order, for the router's indices.
    started.sort_by_key(|(name, _)| flow.pods.iter().position(|p| &p.name == name));
    let addresses: Vec<(String, String)> = started
        .iter()
        .map(|(_, pod)| (pod.addresses.input.clone(), pod.addresses.output.clone()))
        .collect();
    match route(flow, &addresses).await {
        Ok(running) => Ok(Running {
            pods: started,
            ..running
        }),
        Err(e) => {
            let _ = stop_pods(started).await;
            Err(e)
        }
    }
}

/// The router alone, for Pods that run elsewhere (`jina-wasm gateway`): it
/// connects to each Pod's input and output, given in file order as
/// `(input, output)` addresses (`tcp://host:port`; a host name is looked up
/// again on every reconnect).
///
/// # Errors
/// An address that cannot be used, or a bad `with.timeout`.
///
/// # Panics
/// When `addresses` does not have one pair per Pod (a caller's bug: both come
/// from the same Flow).
pub async fn route(flow: &Flow, addresses: &[(String, String)]) -> anyhow::Result<Running> {
    assert_eq!(addresses.len(), flow.pods.len(), "one address pair per Pod");
    let mut to_pods = Vec::new();
    let (out_tx, out_rx) = mpsc::channel::<(usize, Vec<Bytes>)>(64);
    let mut readers = Vec::new();
    for (i, (input, output)) in addresses.iter().enumerate() {
        let name = &flow.pods[i].name;
        to_pods.push(
            Link::open(
                SocketSpec::PUSH_CONNECT,
                input,
                &format!("flow router to `{name}`"),
            )
            .await?,
        );
        let mut from = Link::open(
            SocketSpec::PULL_CONNECT,
            output,
            &format!("flow router from `{name}`"),
        )
        .await?;
        let tx = out_tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(frames) = from.recv().await {
                if tx.send((i, frames)).await.is_err() {
                    break;
                }
            }
            from.close(Duration::from_millis(200)).await;
        }));
    }
    let (calls, calls_rx) = mpsc::channel(flow.with.prefetch.unwrap_or(8).max(1));
    let stop = CancellationToken::new();
    let router = Router {
        names: flow.pods.iter().map(|p| p.name.clone()).collect(),
        needs: flow.needs.clone(),
        leaves: flow.leaves.clone(),
        timeout: flow.timeout().map_err(anyhow::Error::msg)?,
        to_pods,
        requests: HashMap::new(),
    };
    drop(out_tx);
    let token = stop.clone();
    let router = tokio::spawn(async move {
        router.run(calls_rx, out_rx, token).await;
        for reader in readers {
            reader.abort();
        }
    });
    Ok(Running {
        pods: Vec::new(),
        calls,
        stop,
        router,
    })
}

/// Resolves the whole Flow into the typed settings of its Pods (file order),
/// before anything starts: what `flow` runs and what `flow check` checks, so
/// a file that `flow check` passes is one `flow` does not refuse for its
/// settings. Checks, beyond what [`Flow::load`] read (each value is already
/// of its kind there, with its line): the Peas against `max_peas`; each
/// `uses` (and `uses_before`/`uses_after`) is a file holding a WebAssembly
/// component (its header only: compiling is for start); every value turned
/// into its setting. Logs a warning for each
/// bare number of 1000 or more given as seconds (Jina read milliseconds).
///
/// # Errors
/// The first problem, naming the file, the line and the key.
pub fn resolve(flow: &Flow, options: &RunOptions) -> anyhow::Result<Vec<PodConfig>> {
    flow.check_peas(options.max_peas)?;
    flow.timeout().map_err(|e| super::spec::FlowError {
        file: flow.file.display().to_string(),
        message: format!("with.timeout: {e}"),
    })?;
    if let Some(warning) = flow
        .with
        .timeout
        .as_deref()
        .and_then(|t| crate::units::millisecond_warning("with.timeout", t))
    {
        tracing::warn!("{}: {warning}", flow.file.display());
    }
    let mut configs = Vec::with_capacity(flow.pods.len());
    for (i, spec) in flow.pods.iter().enumerate() {
        let files = [
            ("uses", Some(&spec.uses)),
            ("uses_before", spec.uses_before.as_ref()),
            ("uses_after", spec.uses_after.as_ref()),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                component_file(path).map_err(|e| flow.pod_error(i, key, &e))?;
            }
        }
        for (key, value) in [
            ("timeout_ready", &spec.timeout_ready),
            ("timeout_request", &spec.timeout_request),
            ("timeout_init", &spec.timeout_init),
        ] {
            if let Some(warning) = value
                .as_deref()
                .and_then(|v| crate::units::millisecond_warning(key, v))
            {
                tracing::warn!("{}: pod `{}`: {warning}", flow.file.display(), spec.name);
            }
        }
        let config = pod_config(flow, i, options).map_err(|e| {
            let text = format!("{e:#}");
            match text.split_once(": ") {
                Some((key, reason)) if flow.line_of(Some(i), key).is_some() => {
                    anyhow::Error::from(flow.pod_error(i, key, reason))
                }
                _ => anyhow::Error::from(flow.pod_error(i, "", &text)),
            }
        })?;
        configs.push(config);
    }
    Ok(configs)
}

/// `path` exists and starts as a WebAssembly component does (the header
/// check of the executor loader, on the first 8 bytes).
pub(crate) fn component_file(path: &std::path::Path) -> Result<(), String> {
    use std::io::Read as _;
    let mut header = Vec::with_capacity(8);
    match std::fs::File::open(path) {
        Ok(file) => {
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "{} is a directory, not a component",
                    path.display()
                ));
            }
            file.take(8)
                .read_to_end(&mut header)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", path.display()));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    crate::executor::check_header(path, &header).map_err(|e| e.to_string())
}

/// The PodConfig of Flow Pod `i`: what `flow` starts, and what `export`
/// turns into containers (one source of truth for both).
///
/// # Errors
/// A field whose value is not valid (a duration, a size, a strategy).
pub fn pod_config(flow: &Flow, i: usize, options: &RunOptions) -> anyhow::Result<PodConfig> {
    let spec: &PodSpec = &flow.pods[i];
    let duration =
        |field: &str, value: &Option<String>, default: Duration| -> anyhow::Result<Duration> {
            value.as_deref().map_or(Ok(default), |v| {
                crate::units::parse_limit_duration(v).map_err(|e| anyhow::anyhow!("{field}: {e}"))
            })
        };
    let size = |field: &str,
                value: &Option<serde_json::Value>,
                default: u64|
     -> anyhow::Result<u64> {
        match value {
            None => Ok(default),
            Some(serde_json::Value::Number(n)) => crate::units::parse_limit_size(&n.to_string())
                .map_err(|e| anyhow::anyhow!("{field}: {e}")),
            Some(serde_json::Value::String(s)) => {
                crate::units::parse_limit_size(s).map_err(|e| anyhow::anyhow!("{field}: {e}"))
            }
            Some(other) => anyhow::bail!("{field}: `{other}` is not a size"),
        }
    };
    use crate::executor::sandbox as limits;
    let memory_limit = size("memory_hwm", &spec.memory_hwm, limits::DEFAULT_MEMORY_LIMIT)?;
    crate::executor::check_memory_hwm(memory_limit)
        .map_err(|e| anyhow::anyhow!("memory_hwm {e}"))?;
    let quota = limits::Quota {
        bytes: size("disk_quota", &spec.disk_quota, limits::DEFAULT_DISK_QUOTA)?,
        files: spec.max_files.unwrap_or(limits::DEFAULT_MAX_FILES),
    };
    let max_result_bytes = size(
        "max_result_bytes",
        &spec.max_result_bytes,
        limits::DEFAULT_MAX_RESULT_BYTES,
    )?;
    let call_timeout = duration(
        "timeout_request",
        &spec.timeout_request,
        crate::executor::sandbox::DEFAULT_CALL_TIMEOUT,
    )?;
    let mut env: Vec<(String, String)> = flow
        .with
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let sandbox = Sandbox {
        workspace: spec.workspace.clone(),
        read_only: spec.read_only,
        env,
        memory_limit,
        call_timeout,
        init_timeout: duration(
            "timeout_init",
            &spec.timeout_init,
            limits::DEFAULT_INIT_TIMEOUT,
        )?,
        quota,
        max_result_docs: spec
            .max_result_docs
            .unwrap_or(limits::DEFAULT_MAX_RESULT_DOCS),
        max_result_bytes,
        log_rate: spec.log_rate.unwrap_or(limits::DEFAULT_LOG_RATE),
        deterministic: spec.deterministic,
        background_after: Some(crate::executor::DEMOTE_AFTER),
        ..Sandbox::default()
    };
    let on_error = match &spec.on_error_strategy {
        None => OnError::Ignore,
        Some(s) => <OnError as clap::ValueEnum>::from_str(s, true)
            .map_err(|e| anyhow::anyhow!("on_error_strategy: {e}"))?,
    };
    let dump = match &spec.dump_interval {
        None => Ok(DumpPolicy::DEFAULT),
        Some(serde_json::Value::Number(n)) => n.to_string().parse(),
        Some(serde_json::Value::String(s)) => s.parse(),
        Some(other) => Err(format!("`{other}` is not a duration, 0 or never")),
    }
    .map_err(|e| anyhow::anyhow!("dump_interval: {e}"))?;
    let pea = PeaConfig {
        name: spec.name.clone(),
        description: String::new(),
        uses: spec.uses.clone(),
        executor: ExecutorSpec {
            name: spec.name.clone(),
            config: spec.with.clone().unwrap_or(serde_json::Value::Null),
            sandbox,
        },
        socket_in: SocketSpec::PULL_BIND,
        address_in: "tcp://127.0.0.1:0".into(),
        socket_out: SocketSpec::PUSH_BIND,
        address_out: "tcp://127.0.0.1:0".into(),
        address_ctrl: "tcp://127.0.0.1:0".into(),
        on_error,
        dump,
        load_interval: None,
        timeout_ctrl: Duration::from_secs(5),
        quiet_error: false,
        read_endpoints: crate::pea::default_read_endpoints(),
    };
    Ok(PodConfig {
        pea,
        shards: spec.shards.unwrap_or(1),
        replicas: spec.parallel.unwrap_or(1),
        polling: flow.polling[i].clone(),
        balance: Balance::Credit,
        uses_before: spec.uses_before.clone(),
        uses_after: spec.uses_after.clone(),
        backend: options.backend,
        timeout_ready: duration(
            "timeout_ready",
            &spec.timeout_ready,
            Duration::from_secs(600),
        )?,
        timeout_parts: call_timeout + Duration::from_secs(5),
        child_args: options.child_args.clone(),
        external: None,
    })
}

/// One request on its way through the Flow.
struct InFlight {
    reply: oneshot::Sender<Message>,
    deadline: Instant,
    /// Per join Pod: the message of each of its needs, in `needs` order.
    joins: HashMap<usize, Vec<Option<Message>>>,
    /// The leaves' outputs, in `leaves` order.
    leaves: Vec<Option<Message>>,
    /// Pods that have answered.
    answered: Vec<bool>,
    /// Pods the request's `target_executor` leaves out.
    skipped: Vec<bool>,
}

struct Router {
    names: Vec<String>,
    needs: Vec<Vec<usize>>,
    leaves: Vec<usize>,
    timeout: Duration,
    to_pods: Vec<Link>,
    requests: HashMap<String, InFlight>,
}

impl Router {
    async fn run(
        mut self,
        mut calls: mpsc::Receiver<Call>,
        mut outputs: mpsc::Receiver<(usize, Vec<Bytes>)>,
        stop: CancellationToken,
    ) {
        let mut check = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                call = calls.recv() => match call {
                    Some(call) => self.on_call(call).await,
                    None => break,
                },
                output = outputs.recv() => match output {
                    Some((pod, frames)) => self.on_output(pod, frames).await,
                    None => break,
                },
                _ = check.tick() => self.expire(),
                () = stop.cancelled() => break,
            }
        }
        for (_, request) in self.requests.drain() {
            drop(request.reply);
        }
        for link in self.to_pods {
            link.close(Duration::from_millis(500)).await;
        }
    }

    async fn on_call(&mut self, call: Call) {
        let Call {
            mut message,
            reply,
            target,
        } = call;
        let now = now_us();
        let mut deadline = Instant::now() + self.timeout;
        if message.envelope.deadline_ms == 0 {
            message.envelope.deadline_ms = now / 1000 + self.timeout.as_millis() as u64;
        } else {
            let left =
                Duration::from_millis(message.envelope.deadline_ms.saturating_sub(now / 1000));
            deadline = Instant::now() + left.min(self.timeout);
        }
        message.envelope.routes.push(Route {
            pea: "gateway".into(),
            start_us: now,
            end_us: now,
            outcome: Outcome::Routed,
        });
        let id = message.envelope.request_id.clone();
        // Ids are the gateway's own (minted per request), so this never meets
        // another request's; refuse rather than let two share one slot.
        if self.requests.contains_key(&id) {
            let mut envelope = message.envelope;
            envelope.fail(
                "gateway",
                ErrorKind::BadRequest,
                &format!("request id `{id}` is already in the Flow"),
            );
            envelope.after_error = AfterError::Abort;
            let _ = reply.send(Message::new(envelope, Bytes::new()));
            return;
        }
        let joins = (0..self.names.len())
            .filter(|&j| self.needs[j].len() > 1)
            .map(|j| (j, vec![None; self.needs[j].len()]))
            .collect();
        let request = InFlight {
            reply,
            deadline,
            joins,
            leaves: vec![None; self.leaves.len()],
            answered: vec![false; self.names.len()],
            skipped: self
                .names
                .iter()
                .map(|name| target.as_ref().is_some_and(|t| !t.matches(name)))
                .collect(),
        };
        let roots = (0..self.names.len()).filter(|&j| self.needs[j].is_empty());
        let sends = roots.map(|j| (j, message.clone())).collect();
        self.requests.insert(id, request);
        self.send(sends).await;
    }

    async fn on_output(&mut self, pod: usize, frames: Vec<Bytes>) {
        let Ok(message) = Message::from_frames(&frames) else {
            tracing::warn!(pod = %self.names[pod], "the flow router dropped a malformed message");
            return;
        };
        let sends = self.advance(pod, message);
        self.send(sends).await;
    }

    /// Sends each message to its Pod; a Pod the request's `target_executor`
    /// leaves out answers at once with what it was sent.
    async fn send(&mut self, mut sends: Vec<(usize, Message)>) {
        while let Some((j, message)) = sends.pop() {
            let skipped = self
                .requests
                .get(&message.envelope.request_id)
                .is_some_and(|r| r.skipped[j]);
            if skipped {
                sends.extend(self.advance(j, message));
            } else {
                let _ = self.to_pods[j].send(message.frames().to_vec()).await;
            }
        }
    }

    /// Takes Pod `pod`'s answer on: the messages for the Pods that need it,
    /// and the reply to the client once every leaf has answered.
    fn advance(&mut self, pod: usize, message: Message) -> Vec<(usize, Message)> {
        let id = message.envelope.request_id.clone();
        let Some(request) = self.requests.get_mut(&id) else {
            tracing::debug!(pod = %self.names[pod], request = %id, "a late answer to a request that already ended");
            return Vec::new();
        };
        request.answered[pod] = true;
        if message.envelope.is_error() && message.envelope.after_error == AfterError::Abort {
            let request = self.requests.remove(&id).expect("present");
            let _ = request.reply.send(message);
            return Vec::new();
        }
        let mut sends = Vec::new();
        for j in 0..self.names.len() {
            let Some(position) = self.needs[j].iter().position(|&n| n == pod) else {
                continue;
            };
            if self.needs[j].len() == 1 {
                sends.push((j, message.clone()));
                continue;
            }
            let slots = request.joins.get_mut(&j).expect("a join has slots");
            slots[position] = Some(message.clone());
            if slots.iter().all(Option::is_some) {
                let parts: Vec<Message> = slots.iter_mut().filter_map(Option::take).collect();
                sends.push((j, join(parts)));
            }
        }
        if let Some(position) = self.leaves.iter().position(|&l| l == pod) {
            request.leaves[position] = Some(message);
            if request.leaves.iter().all(Option::is_some) {
                let request = self.requests.remove(&id).expect("present");
                let parts: Vec<Message> = request.leaves.into_iter().flatten().collect();
                let mut answer = join(parts);
                let now = now_us();
                answer.envelope.routes.push(Route {
                    pea: "gateway".into(),
                    start_us: now,
                    end_us: now,
                    outcome: Outcome::Routed,
                });
                let _ = request.reply.send(answer);
            }
        }
        sends
    }

    /// Ends requests past their deadline, naming a Pod that has not answered.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let request = self.requests.remove(&id).expect("listed");
            // The first Pod that could have answered (everything it needs did) but did not.
            let stuck = (0..self.names.len())
                .find(|&p| {
                    !request.answered[p] && self.needs[p].iter().all(|&n| request.answered[n])
                })
                .map_or_else(|| "the flow".to_string(), |p| self.names[p].clone());
            let mut envelope = crate::wire::Envelope::request("", "");
            envelope.request_id = id;
            envelope.fail(
                &stuck,
                ErrorKind::Timeout,
                &format!("pod `{stuck}` did not answer before the request's deadline"),
            );
            envelope.after_error = AfterError::Abort;
            tracing::warn!(pod = %stuck, request = %envelope.request_id, "a request timed out in the Flow");
            let _ = request.reply.send(Message::new(envelope, Bytes::new()));
        }
    }
}

/// Joins the branches of one request: documents merged as a Pod's tail merges
/// shards (one copy per id, matches merged by score), the route and status of
/// every branch kept.
fn join(parts: Vec<Message>) -> Message {
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let mut envelope = crate::pod::reduce::merge_envelopes(&parts);
    let bodies: Result<Vec<Body>, String> = parts
        .iter()
        .map(|m| m.decode_body().map_err(|e| e.to_string()))
        .collect();
    match bodies.and_then(|b| crate::pod::reduce::merge(b, None)) {
        Ok(body) => Message::data(envelope, &body),
        Err(reason) => {
            envelope.fail("gateway", ErrorKind::Malformed, &reason);
            Message::new(envelope, Bytes::new())
        }
    }
}

/// Sends one request through a running Flow and waits for its answer.
///
/// # Errors
/// The Flow stopped before answering.
pub async fn call(calls: &mpsc::Sender<Call>, message: Message) -> anyhow::Result<Message> {
    call_targeted(calls, message, None).await
}

/// [`call`], with Jina's `target_executor`: only the Pods it matches run.
///
/// # Errors
/// The Flow stopped before answering.
pub async fn call_targeted(
    calls: &mpsc::Sender<Call>,
    message: Message,
    target: Option<TargetExecutor>,
) -> anyhow::Result<Message> {
    let (reply, rx) = oneshot::channel();
    calls
        .send(Call {
            message,
            reply,
            target,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the Flow is stopping"))?;
    rx.await.context("the Flow stopped before answering")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy, or the error: from reading the file (a value not of its
    /// kind, with its line) or from resolving it.
    fn dump_of(value: &str) -> Result<DumpPolicy, String> {
        let yaml = format!(
            "version: 1\nexecutors:\n  - name: idx\n    uses: idx.wasm\n    dump_interval: {value}\n"
        );
        let flow = Flow::parse(&yaml, std::path::Path::new("flow.yml"), |_| None)
            .map_err(|e| e.to_string())?;
        let options = RunOptions::default();
        pod_config(&flow, 0, &options)
            .map(|config| config.pea.dump)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn dump_interval_chooses_the_durability_mode() {
        assert_eq!(dump_of("0").unwrap(), DumpPolicy::Durable);
        assert_eq!(dump_of("\"0\"").unwrap(), DumpPolicy::Durable);
        assert_eq!(dump_of("never").unwrap(), DumpPolicy::Never);
        assert_eq!(
            dump_of("5m").unwrap(),
            DumpPolicy::Every(Duration::from_secs(300))
        );
        assert_eq!(
            dump_of("30").unwrap(),
            DumpPolicy::Every(Duration::from_secs(30))
        );
        let error = dump_of("soon").unwrap_err();
        assert!(
            error.starts_with("flow.yml: line 5 column 20: executors[0].dump_interval: `soon`"),
            "{error}"
        );
    }
}
