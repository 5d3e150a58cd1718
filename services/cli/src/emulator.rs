//! `wasmbed emulator start|stop|restart|list`: emulated devices, through the renode-manager's
//! commands on the bus; the list is read from the log.

use anyhow::{Context, Result};
use clap::Subcommand;
use wasmbed_bus::call;
use wasmbed_schemas::command::{RestartEmulator, StartEmulator, StopEmulator};
use wasmbed_schemas::rest::{EmulatorState, EmulatorView};
use wasmbed_schemas::{DeviceId, subject};

use crate::device::Bus;

#[derive(Subcommand)]
pub enum EmulatorCommand {
    /// Start an emulated device of an MCU type from the catalogue (`renode/catalogue.toml`).
    Start {
        /// The device id.
        device: DeviceId,
        /// The MCU type.
        #[arg(long, default_value = "Mps2An385")]
        mcu: String,
        /// Run it in the host simulator whatever the manager's backend.
        #[arg(long)]
        simulated: bool,
        /// A label to register it with (`--label ring=canary`, repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[command(flatten)]
        bus: Bus,
    },
    /// Stop a device's emulator.
    Stop {
        /// The device id.
        device: DeviceId,
        #[command(flatten)]
        bus: Bus,
    },
    /// Stop and start a device's emulator again.
    Restart {
        /// The device id.
        device: DeviceId,
        #[command(flatten)]
        bus: Bus,
    },
    /// Emulators and their last lifecycle event, from the log.
    List {
        #[command(flatten)]
        bus: Bus,
        /// How to print.
        #[arg(long, value_enum, default_value_t = crate::tail::Output::Text)]
        output: crate::tail::Output,
    },
}

pub async fn run(command: EmulatorCommand) -> Result<()> {
    match command {
        EmulatorCommand::Start {
            device,
            mcu,
            simulated,
            labels,
            bus,
        } => {
            let client = bus.connect().await?;
            let command = StartEmulator {
                device_id: device.clone(),
                mcu: mcu.clone(),
                simulated,
                labels: crate::device::labels(&labels)?,
            };
            let accepted = call(&client, &command, bus.timeout)
                .await
                .with_context(|| format!("starting {device} ({mcu})"))?;
            println!(
                "{device}: started ({mcu}), event {}; its UART: nats sub '{}'",
                accepted.sequence,
                subject::emulator_uart(&device)
            );
        }
        EmulatorCommand::Stop { device, bus } => {
            let client = bus.connect().await?;
            let command = StopEmulator {
                device_id: device.clone(),
            };
            let accepted = call(&client, &command, bus.timeout)
                .await
                .with_context(|| format!("stopping {device}"))?;
            println!("{device}: stopped, event {}", accepted.sequence);
        }
        EmulatorCommand::Restart { device, bus } => {
            let client = bus.connect().await?;
            let command = RestartEmulator {
                device_id: device.clone(),
            };
            let accepted = call(&client, &command, bus.timeout)
                .await
                .with_context(|| format!("restarting {device}"))?;
            println!("{device}: restarted, event {}", accepted.sequence);
        }
        EmulatorCommand::List { bus, output } => {
            let client = bus.connect().await?;
            // The same read model the api serves.
            let fleet = crate::device::fleet(&client).await?;
            let mut table = crate::table::Table::new(&["DEVICE", "EMULATOR"]);
            for (device, e) in &fleet.emulators {
                match output {
                    crate::tail::Output::Json => println!("{}", serde_json::to_string(e)?),
                    crate::tail::Output::Text => {
                        table.row(vec![device.to_string(), emulator_line(e)]);
                    }
                }
            }
            if let crate::tail::Output::Text = output {
                table.print();
            }
        }
    }
    Ok(())
}

/// One emulator as `emulator list` prints it.
fn emulator_line(e: &EmulatorView) -> String {
    match e.state {
        EmulatorState::Running => format!(
            "running  {} on {} ({}, start {})",
            e.mcu,
            e.backend,
            e.instance.as_deref().unwrap_or("-"),
            e.attempt
        ),
        EmulatorState::Refused => {
            format!("refused  {}: {}", e.mcu, e.detail.as_deref().unwrap_or("-"))
        }
        other => format!(
            "{:<8} exit code {}",
            format!("{other:?}").to_lowercase(),
            e.exit_code.map_or("-".to_owned(), |c| c.to_string())
        ),
    }
}
