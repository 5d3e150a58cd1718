//! `wasmbed device register|list|show`: devices, over the bus (commands) and the log (reads).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use wasmbed_bus::call;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_fleet::Fleet;
use wasmbed_schemas::command::RegisterDevice;
use wasmbed_schemas::rest::{DeploymentView, DeviceView};
use wasmbed_schemas::{DeviceId, PublicKey};

use crate::table::Table;
use crate::tail::Output;

/// Where the system is.
#[derive(Args, Clone)]
pub struct Bus {
    /// The NATS server.
    #[arg(
        long = "nats",
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// How long to wait for a service to answer.
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    pub timeout: Duration,
}

/// Parses `10s`, `2m`, `500ms`.
pub fn humantime_secs(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: use ms, s or m")),
    }
}

impl Bus {
    /// A connection to the system's NATS server (as the user in the URL, if it names one).
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let options = async_nats::ConnectOptions::new().name("wasmbed-cli");
        wasmbed_local_nats::with_url_credentials(options, &self.nats_url)
            .connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to {}", self.nats_url))
    }
}

/// The fleet as the log tells it (the same read model the api serves).
pub async fn fleet(client: &async_nats::Client) -> Result<Fleet> {
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .context("opening the event log")?;
    let mut view = Fleet::default();
    let mut after = 0;
    loop {
        let page = log
            .page(None, after, 1000)
            .await
            .context("reading the event log")?;
        let Some(last) = page.last() else { break };
        after = last.sequence;
        for event in &page {
            view.apply(event);
        }
    }
    Ok(view)
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a device's Ed25519 public key under an id.
    Register {
        #[command(flatten)]
        bus: Bus,
        /// The id to know it by.
        device_id: DeviceId,
        /// Its public key, 64 hex digits.
        public_key: String,
        /// MCU type from the catalogue.
        #[arg(long)]
        mcu: Option<String>,
        /// Labels for targeting, KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Every device with its state.
    List {
        #[command(flatten)]
        bus: Bus,
        /// How to print.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// One device in full (JSON).
    Show {
        #[command(flatten)]
        bus: Bus,
        /// The device.
        device_id: DeviceId,
    },
}

pub fn labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    raw.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("label {l:?} is not KEY=VALUE"))
        })
        .collect()
}

/// A deployment's phase as a person should read it: what the device says now, or, when it is not
/// online, its last report and how old that is (`running` is only said of a device that says so).
pub fn phase_text(dep: &DeploymentView, now: DateTime<Utc>) -> String {
    let phase = format!("{:?}", dep.phase).to_lowercase();
    if dep.current {
        return phase;
    }
    let age = (now - dep.since).to_std().unwrap_or_default().as_secs();
    let age = match age {
        0..60 => format!("{age}s"),
        60..3600 => format!("{}m", age / 60),
        3600..86_400 => format!("{}h", age / 3600),
        _ => format!("{}d", age / 86_400),
    };
    format!("{phase}? (last report {age} ago)")
}

fn row(d: &DeviceView, now: DateTime<Utc>) -> Vec<String> {
    let apps: Vec<String> = d
        .apps
        .iter()
        .map(|(app, dep)| format!("{app}@{}:{}", dep.version, phase_text(dep, now)))
        .collect();
    vec![
        d.device_id.to_string(),
        format!("{:?}", d.state).to_lowercase(),
        d.gateway_id.as_ref().map_or("-", |g| g.as_str()).to_owned(),
        d.mcu.as_deref().unwrap_or("-").to_owned(),
        if apps.is_empty() {
            "-".to_owned()
        } else {
            apps.join(",")
        },
    ]
}

pub async fn run(command: DeviceCommand) -> Result<()> {
    match command {
        DeviceCommand::Register {
            bus,
            device_id,
            public_key,
            mcu,
            labels: raw,
        } => {
            let key = wasmbed_schemas::bytes::parse_hex::<32>(public_key.trim())
                .context("public_key: 64 hex digits")?;
            let client = bus.connect().await?;
            let command = RegisterDevice {
                device_id: device_id.clone(),
                public_key: PublicKey(key),
                mcu,
                labels: labels(&raw)?,
            };
            let accepted = call(&client, &command, bus.timeout).await?;
            println!("registered {device_id} (event {})", accepted.sequence);
        }
        DeviceCommand::List { bus, output } => {
            let view = fleet(&bus.connect().await?).await?;
            match output {
                Output::Json => {
                    for d in view.device_views() {
                        println!("{}", serde_json::to_string(&d)?);
                    }
                }
                Output::Text => {
                    let mut table = Table::new(&["DEVICE", "STATE", "GATEWAY", "MCU", "APPS"]);
                    let now = Utc::now();
                    for d in view.device_views() {
                        table.row(row(&d, now));
                    }
                    table.print();
                }
            }
        }
        DeviceCommand::Show { bus, device_id } => {
            let view = fleet(&bus.connect().await?).await?;
            let Some(d) = view.device_view(&device_id) else {
                bail!("no device {device_id}");
            };
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmbed_schemas::rest::DeploymentPhase;

    #[test]
    fn a_phase_is_said_plainly_only_while_the_device_reports_it() {
        let now = Utc::now();
        let cases = [
            (true, 5, "running"),
            (false, 5, "running? (last report 5s ago)"),
            (false, 125, "running? (last report 2m ago)"),
            (false, 7_300, "running? (last report 2h ago)"),
            (false, 200_000, "running? (last report 2d ago)"),
        ];
        for (current, age, said) in cases {
            let dep = DeploymentView {
                version: 1,
                phase: DeploymentPhase::Running,
                reason: None,
                since: now - chrono::Duration::seconds(age),
                current,
            };
            assert_eq!(phase_text(&dep, now), said);
        }
    }
}
