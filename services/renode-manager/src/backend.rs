//! Backends: what runs an emulated device, chosen by configuration.
//!
//! - `qemu` (the local default): `qemu-system-arm` with the firmware image, the provisioning
//!   block preloaded ([`crate::qemu`]).
//! - `container` (production: Renode in Docker): one container per device through the Docker
//!   Engine API ([`crate::docker`]); image and command are configuration, so the same code runs
//!   Renode in a cluster and a locally built QEMU image in the tests.
//! - `sim` (scale): the host device simulator, one task per device.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_schemas::{DeviceId, PublicKey};

use crate::catalogue::{BackendKind, Mcu, Unsupported};
use crate::docker::{ContainerBackend, ContainerError};
use crate::emulator::{Control, Emulator, Exit};
use crate::firmware;
use crate::provision::{self, ProvisionError};
use crate::qemu::{QemuConfig, QemuDevice, QemuError};
use crate::uart::UartLog;

/// What one start needs to know.
pub struct Launch<'a> {
    /// The device.
    pub device: &'a DeviceId,
    /// Its MCU type.
    pub mcu: &'a Mcu,
    /// Its Ed25519 secret.
    pub secret: [u8; 32],
    /// The gateways it may dial, `host:port` as they announced themselves.
    pub gateways: &'a [String],
    /// The CA to verify them against, PEM.
    pub ca_pem: &'a str,
    /// The name their certificate carries.
    pub server_name: &'a str,
    /// The publisher keys it trusts (the fleet's, now); empty: it runs unsigned modules.
    pub publishers: &'a [PublicKey],
    /// The serial of the last trust rotation `publishers` includes.
    pub trust_serial: u32,
}

impl Launch<'_> {
    /// The provisioning block for a board on an emulator's user network (QEMU's, or Renode's
    /// TAP in a container sharing the host's network): the host's loopback is `10.0.2.2`.
    pub fn guest_block(&self) -> Result<Provisioning, ProvisionError> {
        let mut block = provision::block(
            provision::guest_endpoints(self.gateways),
            self.secret,
            self.device.as_str(),
            self.ca_pem,
            self.server_name,
        )?;
        block.publishers = self.publishers.to_vec();
        block.trust_serial = self.trust_serial;
        Ok(block)
    }
}

/// Why a start failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The board cannot run here.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The provisioning block could not be made.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The firmware image is missing.
    #[error("no firmware image at {0} (scripts/firmware builds it)")]
    NoFirmware(String),
    /// QEMU could not be started.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// The container engine refused or failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The simulator could not be set up.
    #[error("simulator: {0}")]
    Sim(String),
}

/// The QEMU backend's settings.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    /// The emulator binary.
    pub qemu: PathBuf,
    /// The firmware images directory (`firmware/target` of a checkout).
    pub images: PathBuf,
}

/// The configured backend.
#[derive(Clone)]
pub enum Backend {
    /// Local QEMU processes.
    Qemu(QemuBackend),
    /// Containers through the Docker Engine API.
    Container(Arc<ContainerBackend>),
    /// Host-simulated devices.
    Sim,
}

impl Backend {
    /// Its name in events.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// What kind of backend it is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Qemu(_) => BackendKind::Qemu,
            Backend::Container(c) => c.kind(),
            Backend::Sim => BackendKind::Sim,
        }
    }

    /// Whether this backend can run `mcu`, and why not.
    pub fn check(&self, mcu: &Mcu) -> Result<(), Unsupported> {
        mcu.runs_on(self.kind())
    }

    /// Starts the device.
    pub async fn start(&self, launch: &Launch<'_>) -> Result<Emulator, StartError> {
        self.check(launch.mcu)?;
        match self {
            Backend::Qemu(qemu) => start_qemu(qemu, launch).await,
            Backend::Container(c) => Ok(c.start(launch).await?),
            Backend::Sim => start_sim(launch).await,
        }
    }
}

async fn start_qemu(config: &QemuBackend, launch: &Launch<'_>) -> Result<Emulator, StartError> {
    let board = launch.mcu.firmware()?;
    let image = firmware::image_in(&config.images, board);
    if !image.is_file() {
        return Err(StartError::NoFirmware(image.display().to_string()));
    }
    let block = launch.guest_block()?;
    let qemu = QemuDevice::start(
        &QemuConfig {
            qemu: config.qemu.clone(),
            board,
            image,
        },
        &block,
    )
    .await?;
    Ok(qemu.into_emulator())
}

async fn start_sim(launch: &Launch<'_>) -> Result<Emulator, StartError> {
    let mut gateways = Vec::new();
    for endpoint in launch.gateways {
        let addrs = tokio::net::lookup_host(endpoint.as_str())
            .await
            .map_err(|e| StartError::Sim(format!("resolving {endpoint}: {e}")))?;
        gateways.extend(addrs);
    }
    let connector = wasmbed_sim::Connector::new(launch.ca_pem, launch.server_name)
        .map_err(|e| StartError::Sim(e.to_string()))?;
    let mut config = wasmbed_sim::SimConfig::new(gateways);
    config.agent.mcu = launch.mcu.name.clone();
    config.agent.publishers = launch.publishers.to_vec();
    config.agent.trust_serial = launch.trust_serial;
    let mut device = wasmbed_sim::SimDevice::spawn(
        connector,
        Arc::new(config),
        SigningKey::from_bytes(&launch.secret),
    );
    let uart = Arc::new(UartLog::default());
    uart.push(format!(
        "sim: {} ({}) dialling {}",
        launch.device,
        launch.mcu.name,
        launch.gateways.join(",")
    ));
    let (emulator, control) = Emulator::new(uart.clone(), format!("sim {}", launch.device));
    tokio::spawn(async move {
        let Control { mut stop, exit } = control;
        let mut last = device.status();
        // The simulator has no UART; its session changes are its console.
        loop {
            tokio::select! {
                _ = &mut stop => break,
                status = device.wait_for(|s| s != &last, Duration::from_secs(3600)) => {
                    let Ok(status) = status else { continue };
                    if status.connected && !last.connected {
                        let id = status.device_id.as_ref().map_or("?", |d| d.as_str());
                        uart.push(format!("enrolled: {id} (session {})", status.sessions));
                    } else if !status.connected && last.connected {
                        uart.push(format!("reconnecting: {:?}", status.last_close));
                    } else if status.last_error != last.last_error
                        && let Some(error) = &status.last_error
                    {
                        uart.push(format!("connect failed: {error}"));
                    }
                    last = status;
                }
            }
        }
        device.stop().await;
        let _ = exit.send(Some(Exit {
            code: Some(0),
            requested: true,
            note: None,
        }));
    });
    Ok(emulator)
}
