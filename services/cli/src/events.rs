//! `wasmbed events tail`: the event log, as text or JSON lines.

use anyhow::Result;
use clap::Subcommand;

use crate::tail::{Output, TailArgs, deliver_policy, tail};
use wasmbed_schemas::event::EventEnvelope;
use wasmbed_schemas::subject;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Print events as they are appended (or the whole log with --from-start).
    Tail {
        #[command(flatten)]
        tail: TailArgs,
        /// Start at the first event instead of the next new one.
        #[arg(long)]
        from_start: bool,
    },
}

pub async fn run(command: EventsCommand) -> Result<()> {
    let EventsCommand::Tail {
        tail: args,
        from_start,
    } = command;
    let deliver = deliver_policy(from_start, None)?;
    let filter = subject::EVENTS_ALL.to_owned();
    tail(
        &args,
        subject::EVENTS_STREAM,
        filter,
        deliver,
        |message, sequence| {
            match EventEnvelope::from_json(&message.payload) {
                Ok(envelope) => println!("{}", render(sequence, &envelope, args.output)?),
                Err(e) => eprintln!("wasmbed: event {sequence} does not decode: {e}"),
            }
            Ok(())
        },
    )
    .await
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
