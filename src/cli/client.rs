//! `jina-wasm client`: send documents to a Pea and print what comes back.

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

/// Send documents (JSON lines or plain text lines) straight to a Pea's input
/// socket and print the documents that come out of its output socket, in input
/// order.
///
/// A request that an executor failed on is reported on stderr with the
/// executor's name and reason; its documents (if the Pea's error strategy
/// forwarded them) are still printed. Exits 1 if any request failed.
#[derive(Debug, Args)]
pub struct ClientCommand {
    /// The Pea's input address (`in` in its ready line): HOST:PORT or tcp://HOST:PORT.
    #[arg(long = "in", value_name = "ADDRESS")]
    pub input_address: String,

    /// The Pea's output address (`out` in its ready line).
    #[arg(long = "out", value_name = "ADDRESS")]
    pub output_address: String,

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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(self.run())
    }

    async fn run(self) -> anyhow::Result<ExitCode> {
        let target = Target {
            input: endpoint(&self.input_address),
            socket_in: self.socket_in,
            output: endpoint(&self.output_address),
            socket_out: self.socket_out,
        };
        let mut client = Client::open(&target).await?;
        client.window = self.prefetch as usize;
        client.timeout = self.timeout;
        let request = &self.request;
        let parameters = request.parameters.as_ref().map(Value::to_string).unwrap_or_default();
        let mut read_error = None;
        let messages = request.batches()?.map_while(|batch| match batch {
            Ok(docs) => Some(Message::data(Envelope::request(&request.endpoint, &parameters), &Body::from_documents(&docs))),
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
                    eprintln!("request {}: {}", reply.envelope.request_id, reply.envelope.status);
                }
                let docs = reply.decode_body()?.into_documents().map_err(anyhow::Error::msg)?;
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
        Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    }
}
