//! `jina-wasm client`: send documents to a Flow's gateway (HTTP) or straight to
//! a Pea or Pod (ZeroMQ), and print what comes back.

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
use crate::wire::{Body, Envelope, Message, Status};

/// Send documents (JSON lines or plain text lines) and print the result
/// documents as JSON lines, in input order.
///
/// To a Flow: `--host H --port P`, its HTTP gateway. Straight to a Pea or Pod:
/// `--in ADDR --out ADDR`, its input and output sockets. Requests of
/// --request-size documents, --prefetch of them in flight. On a terminal a
/// progress line is shown on stderr; a summary (documents, requests, errors,
/// documents/s) ends the run. A request that an executor failed on is reported
/// on stderr with the executor's name and reason; exits 1 if any request failed.
#[derive(Debug, Args)]
pub struct ClientCommand {
    /// The Flow gateway's host.
    #[arg(long, default_value = "127.0.0.1", conflicts_with_all = ["input_address", "output_address"])]
    pub host: String,

    /// The Flow gateway's port (the `port` in the Flow's ready line).
    #[arg(long, required_unless_present_all = ["input_address", "output_address"], conflicts_with_all = ["input_address", "output_address"])]
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
        let messages = request.batches()?.map_while(|batch| match batch {
            Ok(docs) => Some(Message::data(
                Envelope::request(&request.endpoint, &parameters),
                &Body::from_documents(&docs),
            )),
            Err(e) => {
                read_error = Some(e);
                None
            }
        });
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut failed = 0usize;
        let result = client
            .stream(messages, |reply| {
                if let Status::Error { .. } = &reply.envelope.status {
                    failed += 1;
                    eprintln!(
                        "request {}: {}",
                        reply.envelope.request_id, reply.envelope.status
                    );
                }
                let docs = reply
                    .decode_body()?
                    .into_documents()
                    .map_err(anyhow::Error::msg)?;
                for doc in &docs {
                    write_document(&mut out, request.output, doc).context("cannot write output")?;
                }
                Ok(())
            })
            .await;
        client.close().await;
        result?;
        out.flush().context("cannot write output")?;
        if let Some(e) = read_error {
            return Err(e);
        }
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

impl ClientCommand {
    /// Talks to a Flow's gateway: `--prefetch` requests in flight, answers
    /// printed in input order.
    async fn run_http(&self) -> anyhow::Result<ExitCode> {
        use futures::StreamExt;
        let port = self.port.expect("clap requires --port without --in/--out");
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
        loop {
            while in_flight.len() < self.prefetch as usize && read_error.is_none() {
                match batches.next() {
                    Some(Ok(docs)) => {
                        let (host, endpoint, parameters, timeout) = (
                            self.host.clone(),
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
            let Some((sent, answer)) = in_flight.next().await else {
                break;
            };
            let answer = answer?;
            if let Some(error) = &answer.error {
                eprintln!("\rrequest {}: {error}", progress.requests + 1);
            }
            for doc in &answer.documents {
                write_document(&mut out, request.output, doc).context("cannot write output")?;
            }
            progress.add(sent, answer.error.is_some());
        }
        out.flush().context("cannot write output")?;
        progress.finish();
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

    fn finish(&self) {
        if self.terminal {
            eprint!("\r");
        }
        eprintln!(
            "{} documents in {} requests, {} errors, {:.0} docs/s ({:.1} s)",
            self.documents,
            self.requests,
            self.errors,
            self.rate(),
            self.started.elapsed().as_secs_f64()
        );
    }
}
