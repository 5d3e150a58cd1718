//! Emulated boards for `wasmbed up`: the firmware in QEMU, provisioned for this system, its
//! UART published on `wasmbed.emulator.v1.uart.<device>` (the dashboard's console).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use wasmbed_renode_manager::firmware::Board;
use wasmbed_renode_manager::provision;
use wasmbed_renode_manager::qemu::{QemuConfig, QemuDevice};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::subject;

/// What `up` was asked to boot.
pub struct BoardsRequest<'a> {
    /// How many boards.
    pub count: usize,
    /// The firmware image (mps2-an385).
    pub image: PathBuf,
    /// The gateway on the host.
    pub gateway: SocketAddr,
    /// The CA certificate, PEM.
    pub ca_pem: &'a str,
    /// Where the device keys are kept.
    pub state: &'a std::path::Path,
}

/// Boots the boards; returns the running ones and a line for the summary.
pub async fn start(
    client: &async_nats::Client,
    request: BoardsRequest<'_>,
) -> Result<(Vec<(DeviceId, QemuDevice)>, String)> {
    if request.count == 0 {
        return Ok((Vec::new(), "none (--emulated 0)".into()));
    }
    if !request.image.is_file() {
        return Ok((
            Vec::new(),
            format!(
                "none: no firmware image at {} (scripts/firmware builds it)",
                request.image.display()
            ),
        ));
    }
    let config = QemuConfig {
        qemu: "qemu-system-arm".into(),
        board: Board::Mps2An385,
        image: request.image.clone(),
    };
    let mut boards = Vec::new();
    for n in 1..=request.count {
        let id = DeviceId::new(format!("qemu-{n}"))?;
        let key = crate::up::device_key(request.state, &id)?;
        crate::up::register(client, &id, &key, "Mps2An385").await?;
        let provisioning = provision::for_local_gateway(
            request.gateway,
            key.to_bytes(),
            id.as_str(),
            request.ca_pem,
        )?;
        let qemu = match QemuDevice::start(&config, &provisioning).await {
            Ok(qemu) => qemu,
            Err(e) => return Ok((boards, format!("none: {e}"))),
        };
        forward_uart(client.clone(), &id, &qemu);
        boards.push((id, qemu));
    }
    let mut enrolled = 0;
    for (id, qemu) in &boards {
        match qemu
            .wait_for_line("enrolled:", Duration::from_secs(30))
            .await
        {
            Ok(_) => enrolled += 1,
            Err(e) => tracing::warn!(device = %id, "emulated board did not enroll: {e}"),
        }
    }
    let names: Vec<&str> = boards.iter().map(|(id, _)| id.as_str()).collect();
    let line = format!(
        "{enrolled} of {} QEMU mps2-an385 boards enrolled ({})",
        boards.len(),
        names.join(", ")
    );
    Ok((boards, line))
}

fn forward_uart(client: async_nats::Client, id: &DeviceId, qemu: &QemuDevice) {
    let subject = subject::emulator_uart(id);
    let mut lines = qemu.subscribe();
    let earlier = qemu.lines();
    tokio::spawn(async move {
        for line in earlier {
            let _ = client.publish(subject.clone(), line.into()).await;
        }
        loop {
            match lines.recv().await {
                Ok(line) => {
                    let _ = client.publish(subject.clone(), line.into()).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
