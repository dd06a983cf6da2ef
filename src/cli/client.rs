//! `jina-wasm client`: send documents to a Flow's gateway (HTTP) or straight to
//! a Pea or Pod (ZeroMQ), and print what comes back.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::common::{RequestArgs, write_document};
use super::ping::endpoint;
use crate::client::{Client, Target};
use crate::transport::SocketSpec;
use crate::units::parse_duration;
use crate::wire::printable;
use crate::wire::{Body, Envelope, Message, Status};

/// Send documents (JSON lines or plain text lines) and print the result
/// documents as JSON lines, in input order.
///
/// To a Flow: `--host http://HOST:PORT` (the `gateway` URL of the Flow's ready
/// line) or `--host H --port P`, its HTTP gateway. Straight to a Pea or Pod:
/// `--in ADDR --out ADDR`, its input and output sockets. Requests of
/// --request-size documents, --prefetch of them in flight. On a terminal a
/// progress line is shown on stderr; a summary (documents, requests, errors,
/// documents/s) ends the run, also when it is interrupted with Ctrl-C (exit
/// 130). A request that an executor failed on is reported on stderr with the
/// executor's name and reason; exits 1 if any request failed. An address
/// where nothing listens is reported within 5 s (the connect deadline), and
/// a ZeroMQ port given where the gateway's HTTP port is expected is named as
/// such.
#[derive(Debug, Args)]
pub struct ClientCommand {
    /// The Flow gateway: its URL as the Flow's ready line prints it
    /// (`http://127.0.0.1:PORT`), or a host name or address with --port.
    #[arg(long, value_name = "URL|HOST", default_value = "127.0.0.1", conflicts_with_all = ["input_address", "output_address"])]
    pub host: String,

    /// The Flow gateway's port (the `port` in the Flow's ready line); not
    /// needed when --host is a URL with a port.
    #[arg(long, conflicts_with_all = ["input_address", "output_address"])]
    pub port: Option<u16>,

    /// A Pea's or Pod's input address (`in` in its ready line): HOST:PORT or tcp://HOST:PORT.
    #[arg(long = "in", value_name = "ADDRESS", requires = "output_address")]
    pub input_address: Option<String>,

    /// Its output address (`out` in its ready line).
    #[arg(long = "out", value_name = "ADDRESS", requires = "input_address")]
    pub output_address: Option<String>,

    /// The client's socket to the input: PUSH_CONNECT for a PULL_BIND input,
    /// PUSH_BIND for a PULL_CONNECT input.
    #[arg(long, default_value = "PUSH_CONNECT")]
    pub socket_in: SocketSpec,

    /// The client's socket from the output: PULL_CONNECT for a PUSH_BIND output,
    /// PULL_BIND for a PUSH_CONNECT output.
    #[arg(long, default_value = "PULL_CONNECT")]
    pub socket_out: SocketSpec,

    #[command(flatten)]
    pub request: RequestArgs,

    /// Requests in flight at most: the client sends the next one when a reply
    /// comes back, which bounds every queue on the way.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub prefetch: u32,

    /// Give up when no reply arrives for this long; also each request's deadline,
    /// so Peas skip work nobody waits for.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

impl ClientCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.run())
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let (Some(input), Some(output)) = (&self.input_address, &self.output_address) else {
            return self.run_http().await;
        };
        // The endpoint goes on the wire, where a Pea refuses one no name may
        // be; the gateway's (`run_http`) checks it as it does any client's.
        crate::wire::check_name("--endpoint", &self.request.endpoint)
            .map_err(anyhow::Error::msg)?;
        // ZeroMQ connects in the background and waits for a peer forever: see
        // first that something listens where we connect.
        for (flag, address, spec) in [
            ("--in", input, self.socket_in),
            ("--out", output, self.socket_out),
        ] {
            if !spec.bind {
                listening(flag, &endpoint(address)).await?;
            }
        }
        let target = Target {
            input: endpoint(input),
            socket_in: self.socket_in,
            output: endpoint(output),
            socket_out: self.socket_out,
        };
        let mut client = Client::open(&target).await?;
        client.window = self.prefetch as usize;
        client.timeout = self.timeout;
        let request = &self.request;
        let parameters = request
            .parameters
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        let mut read_error = None;
        // Documents sent per request id, for the summary (an executor may
        // answer with more or fewer than it was sent).
        let sent = std::cell::RefCell::new(HashMap::new());
        let messages = request.batches()?.map_while(|batch| match batch {
            Ok(docs) => {
                let message = Message::data(
                    Envelope::request(&request.endpoint, &parameters),
                    &Body::from_documents(&docs),
                );
                sent.borrow_mut()
                    .insert(message.envelope.request_id.clone(), docs.len());
                Some(message)
            }
            Err(e) => {
                read_error = Some(e);
                None
            }
        });
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut progress = Progress::new();
        let mut interrupt = interrupt()?;
        let streamed = client.stream(messages, |reply| {
            let failed = matches!(&reply.envelope.status, Status::Error { .. });
            if failed {
                // What a server says is shown, never obeyed: no line end or
                // terminal control of its own (`printable`).
                eprintln!(
                    "\rrequest {}: {}",
                    printable(&reply.envelope.request_id),
                    printable(&reply.envelope.status.to_string())
                );
            }
            let docs = reply
                .decode_body()?
                .into_documents()
                .map_err(anyhow::Error::msg)?;
            for doc in &docs {
                write_document(&mut out, request.output, doc).context("cannot write output")?;
            }
            let count = sent.borrow_mut().remove(&reply.envelope.request_id);
            progress.add(count.unwrap_or(docs.len()), failed);
            Ok(())
        });
        let result = tokio::select! {
            result = streamed => Some(result),
            _ = interrupt.recv() => None,
        };
        client.close().await;
        out.flush().context("cannot write output")?;
        let interrupted = result.is_none();
        if !matches!(request.output, super::common::OutputFormat::Nothing) || interrupted {
            progress.finish(interrupted.then(|| sent.borrow().len()));
        }
        let Some(result) = result else {
            return Ok(ExitCode::from(130));
        };
        result?;
        if let Some(e) = read_error {
            return Err(e);
        }
        Ok(if progress.errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Ctrl-C, caught from now on (not from the first poll), so an interrupt while
/// the input is still being read is caught too.
fn interrupt() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot catch Ctrl-C")
}

impl ClientCommand {
    /// Talks to a Flow's gateway: `--prefetch` requests in flight, answers
    /// printed in input order.
    async fn run_http(&self) -> anyhow::Result<ExitCode> {
        use futures::StreamExt;
        let (host, port) = gateway_address(&self.host, self.port)?;
        let request = &self.request;
        let parameters = request
            .parameters
            .clone()
            .unwrap_or(Value::Object(Default::default()));
        let mut batches = request.batches()?;
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut progress = Progress::new();
        let mut read_error = None;
        let mut interrupt = interrupt()?;
        let mut interrupted = false;
        loop {
            while in_flight.len() < self.prefetch as usize && read_error.is_none() {
                match batches.next() {
                    Some(Ok(docs)) => {
                        let (host, endpoint, parameters, timeout) = (
                            host.clone(),
                            request.endpoint.clone(),
                            parameters.clone(),
                            self.timeout,
                        );
                        in_flight.push_back(async move {
                            let count = docs.len();
                            (
                                count,
                                crate::client_http::post(
                                    &host,
                                    port,
                                    &endpoint,
                                    &parameters,
                                    &docs,
                                    timeout,
                                )
                                .await,
                            )
                        });
                    }
                    Some(Err(e)) => read_error = Some(e),
                    None => break,
                }
            }
            let next = tokio::select! {
                next = in_flight.next() => next,
                _ = interrupt.recv() => {
                    interrupted = true;
                    break;
                }
            };
            let Some((sent, answer)) = next else {
                break;
            };
            let answer = answer?;
            if let Some(error) = &answer.error {
                eprintln!("\rrequest {}: {}", progress.requests + 1, printable(error));
            }
            for doc in &answer.documents {
                write_document(&mut out, request.output, doc).context("cannot write output")?;
            }
            progress.add(sent, answer.error.is_some());
        }
        out.flush().context("cannot write output")?;
        if !matches!(request.output, super::common::OutputFormat::Nothing) || interrupted {
            progress.finish(interrupted.then_some(in_flight.len()));
        }
        if interrupted {
            return Ok(ExitCode::from(130));
        }
        if let Some(e) = read_error {
            return Err(e);
        }
        Ok(if progress.errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// A progress line on a terminal, a summary at the end.
struct Progress {
    started: std::time::Instant,
    documents: usize,
    requests: usize,
    errors: usize,
    terminal: bool,
}

impl Progress {
    fn new() -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Progress {
            started: std::time::Instant::now(),
            documents: 0,
            requests: 0,
            errors: 0,
            terminal,
        }
    }

    fn add(&mut self, documents: usize, failed: bool) {
        self.documents += documents;
        self.requests += 1;
        self.errors += usize::from(failed);
        if self.terminal {
            eprint!(
                "\r{} documents, {} requests, {} errors, {:.0} docs/s   ",
                self.documents,
                self.requests,
                self.errors,
                self.rate()
            );
        }
    }

    fn rate(&self) -> f64 {
        self.documents as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// The summary line; `interrupted`: how many requests were still in
    /// flight when Ctrl-C came (their answers are not counted).
    fn finish(&self, interrupted: Option<usize>) {
        if self.terminal {
            eprint!("\r");
        }
        let end = interrupted.map_or_else(String::new, |left| {
            format!("; interrupted, {left} requests in flight not counted")
        });
        eprintln!(
            "{} documents in {} requests, {} errors, {:.0} docs/s ({:.1} s){end}",
            self.documents,
            self.requests,
            self.errors,
            self.rate(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The gateway's host and port from `--host` (a URL as the Flow's ready line
/// prints it, `http://HOST:PORT[/]`, or a bare host) and `--port`.
///
/// # Errors
/// No port anywhere, two different ones, or a URL that is not a plain-HTTP
/// gateway address.
fn gateway_address(host: &str, port: Option<u16>) -> anyhow::Result<(String, u16)> {
    let rest = match host.split_once("://") {
        None => host,
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            anyhow::bail!("--host {host}: the gateway speaks plain HTTP (no TLS): use http://")
        }
        Some((scheme, _)) => anyhow::bail!(
            "--host {host}: `{scheme}://` is not the gateway's; give its URL (http://HOST:PORT) or --in/--out for a Pea's ZeroMQ sockets"
        ),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        anyhow::bail!(
            "--host {host}: give the gateway's address (http://HOST:PORT), without a path"
        );
    }
    // `HOST:PORT`, `[V6]:PORT`, or a host alone (a bare IPv6 address too).
    let split = if rest.starts_with('[') {
        rest.split_once("]:")
            .map(|(name, p)| (&rest[..=name.len()], p))
    } else if rest.matches(':').count() == 1 {
        rest.split_once(':')
    } else {
        None
    };
    let (name, in_url) = match split {
        Some((name, p)) => {
            let p: u16 = p
                .parse()
                .map_err(|_| anyhow::anyhow!("--host {host}: `{p}` is not a port"))?;
            (name, Some(p))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        anyhow::bail!("--host {host}: no host name");
    }
    let port = match (in_url, port) {
        (Some(a), Some(b)) if a != b => {
            anyhow::bail!("--host {host} says port {a} and --port says {b}: give one")
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => anyhow::bail!(
            "give the gateway's port: --host http://HOST:PORT (the `gateway` of the Flow's ready line) or --port PORT"
        ),
    };
    Ok((name.to_string(), port))
}

/// Fails at once, naming `flag` and `address`, when nothing accepts a TCP
/// connection at `address` (`tcp://HOST:PORT`) within
/// [`crate::client_http::CONNECT_TIMEOUT`].
async fn listening(flag: &str, address: &str) -> anyhow::Result<()> {
    if address.starts_with(crate::transport::inproc::SCHEME) {
        anyhow::bail!(
            "{flag} {address}: an in-process address (a Flow's Pod whose Peas are threads of the Flow's process) is reachable only inside that process: send through the Flow's gateway (--host), or run the Pod with `jina-wasm pod` or the Flow with `--runtime-backend PROCESS` for TCP ports"
        );
    }
    let Some(target) = address.strip_prefix("tcp://") else {
        return Ok(());
    };
    match tokio::time::timeout(
        crate::client_http::CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => anyhow::bail!(
            "{flag} {address}: nothing listens there ({e}): is the Pea or Pod running? its ready line gives its `in` and `out`"
        ),
        Err(_) => anyhow::bail!(
            "{flag} {address}: no connection within {:?}: is the address right and reachable?",
            crate::client_http::CONNECT_TIMEOUT
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::gateway_address;

    #[test]
    fn the_ready_lines_url_is_a_host() {
        let ok = |host: &str, port: Option<u16>| gateway_address(host, port).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:8080", None),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/", Some(8080)),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(ok("localhost", Some(1)), ("localhost".into(), 1));
        assert_eq!(ok("localhost:9", None), ("localhost".into(), 9));
        assert_eq!(ok("http://[::1]:7", None), ("[::1]".into(), 7));
        assert_eq!(ok("::1", Some(7)), ("::1".into(), 7));
        let error =
            |host: &str, port: Option<u16>| gateway_address(host, port).unwrap_err().to_string();
        assert!(error("127.0.0.1", None).contains("give the gateway's port"));
        assert!(error("http://h:1", Some(2)).contains("port 1 and --port says 2"));
        assert!(error("https://h:1", None).contains("plain HTTP"));
        assert!(error("tcp://h:1", None).contains("--in/--out"));
        assert!(error("http://h:1/post", None).contains("without a path"));
        assert!(error("http://h:x", None).contains("`x` is not a port"));
    }
}
