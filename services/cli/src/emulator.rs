//! `wasmbed emulator start|stop|restart|list|boards`: emulated devices, through the
//! renode-manager's commands on the bus; the list is read from the log, the boards from the
//! MCU catalogue.

use anyhow::{Context, Result};
use clap::Subcommand;
use wasmbed_bus::call;
use wasmbed_renode_manager::catalogue::{BackendKind, Catalogue};
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
    /// Every MCU type of the catalogue, which backends can run it, and why not.
    Boards {
        /// An MCU catalogue file instead of the built-in `renode/catalogue.toml`.
        #[arg(long)]
        catalogue: Option<std::path::PathBuf>,
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
        EmulatorCommand::Boards { catalogue } => {
            let catalogue = match catalogue {
                Some(path) => Catalogue::load(&path)?,
                None => Catalogue::bundled()?,
            };
            let mut header = vec!["TYPE", "CPU"];
            header.extend(BackendKind::ALL.map(BackendKind::name));
            header.push("WHY NOT");
            let mut table = crate::table::Table::new(&header);
            for row in board_rows(&catalogue) {
                table.row(row);
            }
            table.print();
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

/// One row per MCU type: its name, CPU, `yes` or `no` per backend kind, and the reasons of
/// the refusals (each once, without the type's name in front).
fn board_rows(catalogue: &Catalogue) -> Vec<Vec<String>> {
    catalogue
        .iter()
        .map(|mcu| {
            let mut row = vec![mcu.name.clone(), mcu.cpu.clone()];
            let mut reasons: Vec<String> = Vec::new();
            for kind in BackendKind::ALL {
                match mcu.runs_on(kind) {
                    Ok(()) => row.push("yes".into()),
                    Err(why) => {
                        row.push("no".into());
                        let why = why.to_string();
                        let why = why
                            .strip_prefix(&format!("{}: ", mcu.name))
                            .unwrap_or(&why)
                            .to_owned();
                        if !reasons.contains(&why) {
                            reasons.push(why);
                        }
                    }
                }
            }
            row.push(reasons.join("; "));
            row
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boards_table_has_every_type_with_each_backend_and_the_reasons() {
        let catalogue = Catalogue::bundled().unwrap_or_else(|e| panic!("{e}"));
        let rows = board_rows(&catalogue);
        assert_eq!(rows.len(), 13);
        let row = |name: &str| {
            rows.iter()
                .find(|r| r[0] == name)
                .unwrap_or_else(|| panic!("no row for {name}"))
                .clone()
        };
        assert_eq!(
            row("Mps2An505")[2..6],
            ["yes", "yes", "no", "yes"].map(String::from)
        );
        assert!(row("Mps2An505")[6].starts_with("Renode has no model"));
        assert_eq!(
            row("Esp32DevkitC")[2..6],
            ["no", "no", "no", "yes"].map(String::from)
        );
        // One reason, said once, though three backends refuse for it.
        assert!(row("Esp32DevkitC")[6].starts_with("its CPU (Xtensa LX6) is not a Cortex-M"));
        assert_eq!(
            row("Esp32DevkitC")[6].matches("is not a Cortex-M").count(),
            1
        );
    }
}
