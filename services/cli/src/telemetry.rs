//! `wasmbed telemetry tail`: telemetry history and live messages from the telemetry stream.

use anyhow::Result;
use clap::Subcommand;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::subject::{self, header};

use crate::tail::{Output, TailArgs, deliver_policy, tail};

#[derive(Subcommand)]
pub enum TelemetryCommand {
    /// Print telemetry as it arrives, or from a while ago with --since.
    Tail {
        /// Only this device.
        device: Option<DeviceId>,
        #[command(flatten)]
        tail: TailArgs,
        /// Start this long ago (`30s`, `10m`, `2h`, `1d`), from the telemetry stream's history.
        #[arg(long)]
        since: Option<String>,
    },
}

pub async fn run(command: TelemetryCommand) -> Result<()> {
    let TelemetryCommand::Tail {
        device,
        tail: args,
        since,
    } = command;
    let output = args.output;
    let filter = match &device {
        Some(device) => subject::telemetry_of_device(device),
        None => subject::TELEMETRY_ALL.to_owned(),
    };
    let deliver = deliver_policy(false, since.as_deref())?;
    tail(
        &args,
        subject::TELEMETRY_STREAM,
        filter,
        deliver,
        |message, sequence| {
            let get = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let payload = String::from_utf8_lossy(&message.payload);
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "sequence": sequence,
                        "subject": message.subject.as_str(),
                        "device": get(header::DEVICE),
                        "app": get(header::APP),
                        "seq": get(header::SEQUENCE),
                        "topic": get(header::TOPIC),
                        "payload": payload,
                    })
                ),
                Output::Text => println!(
                    "{sequence:>8} {}/{} #{} {}: {payload}",
                    get(header::DEVICE),
                    get(header::APP),
                    get(header::SEQUENCE),
                    get(header::TOPIC),
                ),
            }
            Ok(())
        },
    )
    .await
}
