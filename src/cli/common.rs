//! Flag groups shared by the commands that run executors (`run`, and later
//! `pea`, `pod`). The same names serve Flow YAML.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use crate::document::Document;
use crate::executor::sandbox::{self, Quota};
use crate::executor::{
    ComponentCache, ExecutorSpec, Runtime, RuntimeOptions, Sandbox, TenantSpec, Volume,
};
use crate::units::{limit_duration_flag, parse_duration, parse_limit_size, parse_size};

/// Pool slots of a process that runs one executor: its instance, the one
/// that replaces it after a trap or a reload, and room for an instance whose
/// drop is still under way.
pub const POOL_SLOTS: u32 = 4;

/// Process-wide runtime settings.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Directory for compiled components [default: $JINA_WASM_CACHE_DIR, else
    /// $XDG_CACHE_HOME/jina-wasm, else ~/.cache/jina-wasm].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component from scratch; don't read or write the cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Executor instances the pooling allocator keeps slots for. An instance
    /// then takes its memories from slots mapped once, and a dropped one's are
    /// reset rather than unmapped: fewer system calls per start and per
    /// restart after a trap (docs/benchmarks.md). Each slot reserves (but does
    /// not use) 16 GiB of address space; 0 allocates on demand
    /// [default: 4 for `pea` and `run`, 0 for commands that run many
    /// executors in one process]
    #[arg(long, value_name = "N")]
    pub pool_slots: Option<u32>,
}

impl RuntimeArgs {
    /// The same settings as `jina-wasm pea` arguments, for child processes.
    pub fn child_args(&self) -> Vec<String> {
        match (&self.cache_dir, self.no_cache) {
            (_, true) => vec!["--no-cache".into()],
            (Some(dir), false) => vec!["--cache-dir".into(), dir.display().to_string()],
            (None, false) => Vec::new(),
        }
    }

    /// The process's runtime; `default_slots` unless `--pool-slots` says
    /// otherwise (see [`POOL_SLOTS`]).
    pub fn runtime(&self, default_slots: u32) -> anyhow::Result<Arc<Runtime>> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(ComponentCache::default_dir)
        };
        Runtime::new(RuntimeOptions {
            cache_dir,
            pool_slots: Some(self.pool_slots.unwrap_or(default_slots)),
        })
    }
}

/// Prometheus metrics (docs/operations.md).
#[derive(Debug, Clone, Args)]
pub struct MonitoringArgs {
    /// Count requests, errors, latencies, dumps and the Pods' parts, and serve
    /// them as Prometheus text: on the gateway's `GET /metrics` (`flow`,
    /// `gateway`; a Flow's `with: {monitoring: true}` too) and on
    /// --port-monitoring. Off, nothing is counted.
    #[arg(long)]
    pub monitoring: bool,

    /// Serve the metrics on `GET /metrics` of this port (0: the OS picks;
    /// implies --monitoring). A Pod's Peas in processes of their own
    /// (--runtime-backend PROCESS) each serve theirs on a port the OS picks,
    /// shown in their STATUS (`monitoring`).
    #[arg(long, value_name = "PORT")]
    pub port_monitoring: Option<u16>,

    /// The interface --port-monitoring binds (0.0.0.0 in a container).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host_monitoring: String,
}

impl MonitoringArgs {
    /// Turns metrics on when asked here or by a Flow file (`on`, `port`:
    /// its `with.monitoring`, `with.port_monitoring`), before anything that
    /// records them starts, and serves the monitoring port if one is given.
    /// Returns whether metrics are on and the port's URL.
    ///
    /// # Errors
    /// The monitoring port cannot be bound.
    pub async fn start(
        &self,
        on: bool,
        port: Option<u16>,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<(bool, Option<String>)> {
        let port = self.port_monitoring.or(port);
        if !(self.monitoring || on || port.is_some()) {
            return Ok((false, None));
        }
        crate::metrics::enable();
        let Some(port) = port else {
            return Ok((true, None));
        };
        let address = crate::metrics::serve(&self.host_monitoring, port, stop).await?;
        Ok((true, Some(format!("http://{address}/metrics"))))
    }

    /// The `jina-wasm pea` arguments of a child process when metrics are on:
    /// its own port, picked by the OS.
    pub fn child_args(&self) -> Vec<String> {
        vec![
            "--port-monitoring".into(),
            "0".into(),
            "--host-monitoring".into(),
            self.host_monitoring.clone(),
        ]
    }
}

/// OpenTelemetry traces (docs/operations.md, "Traces").
#[derive(Debug, Clone, Args)]
pub struct TracingArgs {
    /// Record one trace per request (a span for the gateway, each Pod's head
    /// and tail, and each executor call) and send the spans over OTLP/HTTP to
    /// this collector: `http://HOST:4318` (Jaeger, the OpenTelemetry
    /// collector), or a URL with its path. A Flow's `with: {tracing: true,
    /// traces_endpoint: ...}` does the same; this overrides it. A client's W3C
    /// `traceparent` header is continued. Spans the collector does not take
    /// in time are dropped (never waited for); a Pod's Peas in processes of
    /// their own export theirs too. Off when not given: no span is built.
    #[arg(long, value_name = "URL")]
    pub traces_endpoint: Option<String>,
}

impl TracingArgs {
    /// Starts the exporter for this flag or, without it, `from_file` (a Flow
    /// file's `with:`), as service `service`; the guard flushes on drop.
    /// Returns the endpoint, for child processes.
    ///
    /// # Errors
    /// An endpoint that is not a URL.
    pub fn start(
        &self,
        from_file: Option<String>,
        service: &str,
    ) -> anyhow::Result<(Option<String>, Option<crate::trace::Flush>)> {
        let Some(endpoint) = self.traces_endpoint.clone().or(from_file) else {
            return Ok((None, None));
        };
        let flush =
            crate::trace::enable(&endpoint, service).map_err(|e| e.context("--traces-endpoint"))?;
        Ok((Some(endpoint.clone()), Some(flush)))
    }

    /// The `jina-wasm pea` arguments of a child process that exports to
    /// `endpoint`.
    pub fn child_args(endpoint: &str) -> Vec<String> {
        vec!["--traces-endpoint".into(), endpoint.into()]
    }
}

/// Which executor to run, with which parameters, inside which sandbox.
#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// The executor: a WebAssembly component (`.wasm`) implementing jina:executor.
    #[arg(long, value_name = "FILE.wasm")]
    pub uses: PathBuf,

    /// The executor's `with:` parameters, as a JSON or YAML map
    /// (for example `{"dim": 128}` or `dim: 128`), passed to its `init`.
    #[arg(long, value_name = "MAP", value_parser = parse_map)]
    pub uses_with: Option<Value>,

    /// Name used in logs and error messages [default: the file's stem].
    #[arg(long)]
    pub name: Option<String>,

    /// Host directory preopened to the executor at /workspace (created if
    /// missing). Without it the executor sees no filesystem at all.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Preopen the workspace read-only: the executor can read its state but not
    /// change it, and `dump` is never called.
    #[arg(long)]
    pub read_only: bool,

    /// Extra host directories for the executor, as HOST_DIR:/GUEST_DIR[:ro]
    /// (repeatable).
    #[arg(long = "volumes", value_name = "HOST:GUEST[:ro]")]
    pub volumes: Vec<Volume>,

    /// Environment variables the executor sees, as KEY=VALUE (repeatable, or
    /// several after one flag as in Jina: `--env A=1 B=2`). Nothing else of
    /// the host's environment is visible.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env, num_args = 1..)]
    pub env: Vec<(String, String)>,

    /// Memory limit per executor instance: a size such as 64MiB or 1GiB; a bare
    /// number means GiB, as in Jina; -1: no limit (wasm32's 4 GiB).
    #[arg(long, value_name = "SIZE", value_parser = crate::executor::parse_memory_hwm, allow_negative_numbers = true, default_value = "1GiB")]
    pub memory_hwm: u64,

    /// Time limit for one request (`handle`), a `dump` or `close`: 500ms, 2s, 1m
    /// (a bare number is seconds); -1: no limit (365 days).
    #[arg(long, value_name = "DURATION", value_parser = limit_duration_flag, allow_negative_numbers = true, default_value = "30s")]
    pub timeout_request: Duration,

    /// Time limit for the executor's `init` (loading its state); -1: no limit.
    #[arg(long, value_name = "DURATION", value_parser = limit_duration_flag, allow_negative_numbers = true, default_value = "120s")]
    pub timeout_init: Duration,

    /// Disk quota of a writable workspace: the total length of its files
    /// (64MiB, 4GiB). A call that grows the workspace past it fails with
    /// `disk-quota`; checked every 100ms during a call and after it. -1: no
    /// limit (1 PiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_limit_size, allow_negative_numbers = true, default_value = "4GiB")]
    pub disk_quota: u64,

    /// Most entries (files, directories, symlinks) a writable workspace may
    /// hold; growing past it fails the call with `disk-quota`.
    #[arg(long, value_name = "N", default_value_t = sandbox::DEFAULT_MAX_FILES)]
    pub max_files: u64,

    /// Most documents (roots, chunks and matches) one call may return; more
    /// fails the call with `result-too-large`.
    #[arg(long, value_name = "N", default_value_t = sandbox::DEFAULT_MAX_RESULT_DOCS)]
    pub max_result_docs: usize,

    /// Most bytes of documents (ids, texts, blobs, tags, embeddings, scores)
    /// one call may return; more fails the call with `result-too-large`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256MiB")]
    pub max_result_bytes: u64,

    /// Lines per second of the executor's output (stdout, stderr, log) that
    /// reach the host's log, per instance; the rest are dropped and counted.
    #[arg(long, value_name = "LINES", default_value_t = sandbox::DEFAULT_LOG_RATE)]
    pub log_rate: u32,

    /// Deny the executor the time and randomness: its wall clock reads
    /// 1970-01-01T00:00:00Z and its random bytes are the same fixed sequence in
    /// every instance (the monotonic clock still runs).
    #[arg(long)]
    pub deterministic: bool,

    /// The owner of this executor. Executors of one tenant in one process
    /// (a Pod's thread-backed Peas) share its --tenant-memory budget.
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,

    /// Memory all of the tenant's instances in this process may hold together,
    /// on top of each one's --memory-hwm [default: no budget beyond those].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "tenant")]
    pub tenant_memory: Option<u64>,

    /// A call that runs longer than this continues at background CPU priority
    /// (nice 19: it yields to any other thread at once, and gets a small share
    /// while they run), so it cannot delay short calls of other executors on
    /// the machine; 0 never. `run` never does.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "100ms")]
    pub background_after: Duration,
}

impl ExecutorArgs {
    /// The executor's name: `--name`, else the file stem.
    pub fn executor_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.uses
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "executor".into())
        })
    }

    pub fn spec(&self) -> ExecutorSpec {
        ExecutorSpec {
            name: self.executor_name(),
            config: self.uses_with.clone().unwrap_or(Value::Null),
            sandbox: Sandbox {
                workspace: self.workspace.as_deref().map(super::absolute),
                read_only: self.read_only,
                volumes: self.volumes.clone(),
                env: self.env.clone(),
                memory_limit: self.memory_hwm,
                call_timeout: self.timeout_request,
                init_timeout: self.timeout_init,
                quota: Quota {
                    bytes: self.disk_quota,
                    files: self.max_files,
                },
                max_result_docs: self.max_result_docs,
                max_result_bytes: self.max_result_bytes,
                log_rate: self.log_rate,
                deterministic: self.deterministic,
                tenant: self.tenant.clone().map(|name| TenantSpec {
                    name,
                    memory: self.tenant_memory.unwrap_or(u64::MAX),
                }),
                background_after: Some(self.background_after).filter(|d| !d.is_zero()),
            },
        }
    }
}

// The defaults above are spelled out for --help; keep them equal to the sandbox's.
const _: () = assert!(sandbox::DEFAULT_MEMORY_LIMIT == 1 << 30);
const _: () = assert!(sandbox::DEFAULT_CALL_TIMEOUT.as_secs() == 30);
const _: () = assert!(sandbox::DEFAULT_INIT_TIMEOUT.as_secs() == 120);
const _: () = assert!(sandbox::DEFAULT_DISK_QUOTA == 4 << 30);
const _: () = assert!(sandbox::DEFAULT_MAX_RESULT_BYTES == 256 << 20);
const _: () = assert!(crate::executor::DEMOTE_AFTER.as_millis() == 100);

/// A JSON or YAML map given on the command line.
pub fn parse_map(text: &str) -> Result<Value, String> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => serde_yaml::from_str(text).map_err(|e| format!("not a JSON or YAML map: {e}"))?,
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Default::default())),
        other => Err(format!(
            "expected a map such as {{\"key\": 1}}, got {other}"
        )),
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty name"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Reads a whole file or stdin (`-`) for commands that take `--input`.
pub fn open_input(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    match path {
        None => Ok(Box::new(std::io::BufReader::new(std::io::stdin()))),
        Some(p) if p.as_os_str() == "-" => Ok(Box::new(std::io::BufReader::new(std::io::stdin()))),
        Some(p) => {
            let file = std::fs::File::open(p)
                .with_context(|| format!("cannot open input {}", p.display()))?;
            Ok(Box::new(std::io::BufReader::new(file)))
        }
    }
}

/// What to send and how to print what comes back: shared by `run` and `client`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The endpoint to call, as Jina's `@requests(on=...)`.
    #[arg(long, default_value = "/")]
    pub endpoint: String,

    /// Request parameters, as a JSON or YAML map (for example `{"top_k": 5}`).
    #[arg(long, value_name = "MAP", value_parser = parse_map)]
    pub parameters: Option<Value>,

    /// Read documents from FILE instead of stdin (`-` is stdin).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Documents per request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub request_size: u32,

    /// How to print result documents: `jsonl` or `json` (one JSON document
    /// per line, for piping into the next command), `pretty` (text, tags and
    /// ranked matches, for people), `summary` (no documents: `client` prints
    /// only its summary line on stderr, for bulk indexing) or `none` (nothing
    /// but errors).
    #[arg(long, value_enum, ignore_case = true, default_value = "jsonl")]
    pub output: OutputFormat,
}

impl RequestArgs {
    /// The input documents, in requests of `--request-size`.
    ///
    /// # Errors
    /// An input file that cannot be opened.
    pub fn batches(&self) -> anyhow::Result<DocumentBatches> {
        Ok(DocumentBatches::new(
            open_input(self.input.as_deref())?,
            self.request_size as usize,
        ))
    }
}

/// Documents read as JSON lines (or plain text lines), in requests of `size`.
pub struct DocumentBatches {
    lines: std::iter::Enumerate<std::io::Lines<Box<dyn std::io::BufRead>>>,
    size: usize,
}

impl DocumentBatches {
    pub fn new(input: Box<dyn std::io::BufRead>, size: usize) -> Self {
        use std::io::BufRead as _;
        DocumentBatches {
            lines: input.lines().enumerate(),
            size: size.max(1),
        }
    }
}

impl Iterator for DocumentBatches {
    type Item = anyhow::Result<Vec<Document>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut batch = Vec::with_capacity(self.size);
        while batch.len() < self.size {
            let Some((number, line)) = self.lines.next() else {
                break;
            };
            let line = match line.context("cannot read input") {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            if line.trim().is_empty() {
                continue;
            }
            match Document::from_json_line(&line) {
                Ok(doc) => batch.push(doc),
                Err(e) => {
                    return Some(Err(anyhow::Error::from(e)
                        .context(format!("input line {} is not a document", number + 1))));
                }
            }
        }
        (!batch.is_empty()).then_some(Ok(batch))
    }
}

/// How commands print result documents.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON document per line, for piping into the next command.
    #[value(alias = "json")]
    Jsonl,
    /// Text, tags and ranked matches, for people.
    Pretty,
    /// No documents; `client` ends with its summary line on stderr.
    Summary,
    /// No documents and no summary: only errors are printed.
    #[value(name = "none")]
    Nothing,
}

pub fn write_document(
    out: &mut impl std::io::Write,
    format: OutputFormat,
    doc: &Document,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Jsonl => {
            serde_json::to_writer(&mut *out, doc)?;
            out.write_all(b"\n")
        }
        OutputFormat::Summary | OutputFormat::Nothing => Ok(()),
        // For people, one line a document or match: what the server sent
        // is shown, a line end or terminal control in it escaped.
        OutputFormat::Pretty => {
            use crate::wire::printable;
            let text = |t: &Option<String>| printable(t.as_deref().unwrap_or("")).into_owned();
            writeln!(out, "{}: {}", printable(&doc.id), text(&doc.text))?;
            if !doc.tags.is_empty() {
                let tags = serde_json::Value::Object(doc.tags.clone()).to_string();
                writeln!(out, "  tags: {}", printable(&tags))?;
            }
            for m in &doc.matches {
                let score = m
                    .scores
                    .values()
                    .next()
                    .map_or(String::from("     -"), |s| format!("{:6.3}", s.value));
                writeln!(out, "  {score}  {:<16} {}", printable(&m.id), text(&m.text))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_env() {
        assert_eq!(parse_map(r#"{"dim": 8}"#).unwrap()["dim"], 8);
        assert_eq!(parse_map("dim: 8").unwrap()["dim"], 8);
        assert!(parse_map("[1, 2]").is_err());
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("novalue").is_err());
    }
}
