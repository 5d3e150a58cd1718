//! Emulated boards for `wasmbed up`: the renode-manager service runs in this process (on its
//! own NATS connection, like every service), and `up` asks it over the bus to start each board.
//! With QEMU and the firmware image present the boards are the real firmware in QEMU
//! mps2-an385; otherwise the manager's simulator backend stands in and the summary says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use wasmbed_bus::{CallError, call};
use wasmbed_renode_manager::backend::{Backend, QemuBackend};
use wasmbed_renode_manager::catalogue::Catalogue;
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_renode_manager::{ManagerConfig, RestartPolicy};
use wasmbed_schemas::command::StartEmulator;
use wasmbed_schemas::{DeviceId, subject};

/// The MCU type `up` boots.
pub const MCU: &str = "Mps2An385";

/// The manager's configuration for `up`: QEMU when it can run the firmware, else simulated.
pub fn manager_config(
    state: &Path,
    images: PathBuf,
    qemu: &str,
) -> Result<(ManagerConfig, String)> {
    let image = firmware::image_in(&images, Board::Mps2An385);
    let (backend, note) = if !image.is_file() {
        (
            Backend::Sim,
            format!(
                "simulated: no firmware image at {} (scripts/firmware builds it)",
                image.display()
            ),
        )
    } else if !on_path(qemu) {
        (Backend::Sim, format!("simulated: {qemu} is not installed"))
    } else {
        (
            Backend::Qemu(QemuBackend {
                qemu: qemu.into(),
                images,
            }),
            "QEMU mps2-an385".to_owned(),
        )
    };
    let config = ManagerConfig {
        backend,
        catalogue: Catalogue::bundled()?,
        key_dir: state.join("devices"),
        server_name: "localhost".into(),
        restart: RestartPolicy::default(),
        runtime: Default::default(),
    };
    Ok((config, note))
}

fn on_path(program: &str) -> bool {
    let path = Path::new(program);
    if path.components().count() > 1 {
        return path.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Asks the manager to start `count` boards and waits for each to log its enrollment; returns
/// a line for the summary.
pub async fn start(
    client: &async_nats::Client,
    count: usize,
    prefix: &str,
    kind: &str,
) -> Result<String> {
    if count == 0 {
        return Ok("none (--emulated 0)".into());
    }
    let mut names = Vec::new();
    let mut enrolled = 0;
    for n in 1..=count {
        let id = DeviceId::new(format!("{prefix}-{n}"))?;
        let mut uart = client.subscribe(subject::emulator_uart(&id)).await?;
        start_one(client, &id).await?;
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = uart.next().await {
                if String::from_utf8_lossy(&line.payload).contains("enrolled:") {
                    return true;
                }
            }
            false
        })
        .await;
        match seen {
            Ok(true) => enrolled += 1,
            _ => tracing::warn!(device = %id, "emulated board did not enroll within 30 s"),
        }
        names.push(id.to_string());
    }
    Ok(format!(
        "{enrolled} of {count} {kind} boards enrolled ({})",
        names.join(", ")
    ))
}

/// Sends the start command, waiting for the manager to answer (it may still be starting).
async fn start_one(client: &async_nats::Client, id: &DeviceId) -> Result<()> {
    let command = StartEmulator {
        device_id: id.clone(),
        mcu: MCU.into(),
        simulated: false,
        labels: Default::default(),
    };
    for _ in 0..100 {
        match call(client, &command, Duration::from_secs(10)).await {
            Err(CallError::Transport { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                other.map_err(|e| anyhow::anyhow!("starting the emulator of {id}: {e}"))?;
                return Ok(());
            }
        }
    }
    anyhow::bail!("the renode-manager did not answer within 30 s")
}
