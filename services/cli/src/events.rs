//! `wasmbed events tail`: the event log, as text or JSON lines.

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt;
use wasmbed_schemas::event::EventEnvelope;
use wasmbed_schemas::subject;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Print events as they are appended (or the whole log with --from-start).
    Tail {
        /// The NATS server.
        #[arg(
            long = "nats",
            env = "NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// Start at the first event instead of the next new one.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// How to print each event.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// One readable line per event.
    Text,
    /// One JSON object per line: {"sequence": N, "envelope": {...}}.
    Json,
}

pub async fn run(command: EventsCommand) -> Result<()> {
    let EventsCommand::Tail {
        nats_url,
        from_start,
        limit,
        output,
    } = command;
    let client = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("connecting to {nats_url}"))?;
    let stream = jetstream::new(client)
        .get_stream(subject::EVENTS_STREAM)
        .await
        .context("opening the event log (is `wasmbed up` running?)")?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: if from_start {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ..Default::default()
        })
        .await
        .context("creating a consumer on the event log")?;
    let mut messages = consumer.messages().await.context("reading the event log")?;
    let mut printed = 0;
    while limit.is_none_or(|l| printed < l) {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.context("reading the event log")?;
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match EventEnvelope::from_json(&message.payload) {
            Ok(envelope) => println!("{}", render(sequence, &envelope, output)?),
            Err(e) => eprintln!("wasmbed: event {sequence} does not decode: {e}"),
        }
        printed += 1;
    }
    Ok(())
}

fn render(sequence: u64, envelope: &EventEnvelope, output: Output) -> Result<String> {
    Ok(match output {
        Output::Json => {
            serde_json::json!({ "sequence": sequence, "envelope": envelope }).to_string()
        }
        Output::Text => {
            let data = serde_json::to_value(&envelope.event)?;
            format!(
                "{sequence:>8} {} {:<22} {} {}",
                envelope.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                envelope.event.type_name(),
                subject::event(&envelope.aggregate),
                data.get("data").unwrap_or(&data)
            )
        }
    })
}
