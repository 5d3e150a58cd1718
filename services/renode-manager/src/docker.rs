//! The container backend: one container per device through the Docker Engine API (bollard).
//!
//! In production the image is Renode's and the command runs the generated `.resc`; the tests
//! give it a locally built image with QEMU and a QEMU command line. Either way the manager
//! uploads the device's files (the `.resc` for Renode, the provisioning block for both) to
//! [`DEVICE_DIR`] and the board's firmware image under [`FIRMWARE_DIR`] into the created
//! container through the engine's archive API, streams the container's output as the UART,
//! waits for it to end, and stops and removes it on request. A serial-link board's link UART
//! listens on a TCP port of the host the container shares (network mode `host`) — Renode's
//! socket terminal, or QEMU's `-serial tcp:…,server=on` — which the manager's
//! [`crate::bridge`] dials.
//!
//! Nothing is bind-mounted: the engine may be on another host than the manager (a shared
//! engine that every instance of the manager reaches, so the lease's next holder can see and
//! replace the emulators of one that died).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use tracing::warn;

use crate::backend::Launch;
use crate::catalogue::{BackendKind, Mcu, Unsupported};
use crate::emulator::{Control, Emulator, Exit};
use crate::firmware::GatewayLink;
use crate::provision::ProvisionError;
use crate::resc::{self, RescError};
use crate::uart::UartLog;

/// Where the device's own files are in the container.
pub const DEVICE_DIR: &str = "/wasmbed/device";
/// Where the firmware image is in the container (under its target's directory).
pub const FIRMWARE_DIR: &str = "/wasmbed/firmware";
/// The label every emulator container carries (its value is the device id).
pub const DEVICE_LABEL: &str = "io.wasmbed.device";

/// Which emulator the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEmulator {
    /// Renode, driven by the generated `.resc`.
    Renode,
    /// QEMU, given the image and the block on its command line.
    Qemu,
}

/// The container backend's settings.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The engine: its socket (`unix:///var/run/docker.sock`) or its address
    /// (`tcp://renode-engine:2375`).
    pub docker_host: String,
    /// The emulator image (never pulled: it must be present on the engine).
    pub image: String,
    /// The command; `{device}`, `{script}`, `{block}`, `{firmware}`, `{machine}` and
    /// `{address}` are replaced by the device id, the `.resc`, the block, the ELF (paths in the
    /// container), the QEMU machine and where the board's firmware reads its block. An
    /// argument that is exactly `{network}` becomes QEMU's network arguments for the board:
    /// a LAN9118 on the user network, or for a serial board its link UART listening on a
    /// loopback port the manager dials (and no NIC).
    pub command: Vec<String>,
    /// What the image runs.
    pub emulator: ContainerEmulator,
    /// The manager's directory of the firmware images (`firmware/target`).
    pub firmware_dir: PathBuf,
    /// The container network (`host` reaches a gateway on the host's loopback).
    pub network_mode: String,
    /// Container names are this prefix plus the device id.
    pub name_prefix: String,
}

impl ContainerConfig {
    /// Renode in Docker, as in production: `renode --disable-xwt --console -e "include @script"`.
    pub fn renode(docker_host: String, image: String, firmware_dir: PathBuf) -> Self {
        Self {
            docker_host,
            image,
            command: [
                "renode",
                "--disable-xwt",
                "--console",
                "-e",
                "include @{script}",
            ]
            .map(String::from)
            .to_vec(),
            emulator: ContainerEmulator::Renode,
            firmware_dir,
            network_mode: "host".into(),
            name_prefix: "wasmbed-emulator-".into(),
        }
    }

    /// QEMU in a container: the same backend with QEMU's command line.
    pub fn qemu(docker_host: String, image: String, firmware_dir: PathBuf) -> Self {
        Self {
            command: [
                "qemu-system-arm",
                "-M",
                "{machine}",
                "-nographic",
                "-monitor",
                "none",
                "-serial",
                "stdio",
                "-kernel",
                "{firmware}",
                "{network}",
                "-device",
                "loader,file={block},addr={address},force-raw=on",
            ]
            .map(String::from)
            .to_vec(),
            emulator: ContainerEmulator::Qemu,
            ..Self::renode(docker_host, image, firmware_dir)
        }
    }
}

/// Why the container backend could not start a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The engine refused or could not be reached.
    #[error("docker engine at {host}: {source}")]
    Engine {
        /// The socket.
        host: String,
        /// What it said.
        source: bollard::errors::Error,
    },
    /// The device's files could not be read or packed.
    #[error("{path}: {source}")]
    Files {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The script could not be made.
    #[error(transparent)]
    Script(#[from] RescError),
    /// No port could be had for a serial board's link.
    #[error("a port for the serial link: {0}")]
    LinkPort(#[source] std::io::Error),
    /// The block could not be made.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The board cannot run here.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

/// Runs devices as containers.
pub struct ContainerBackend {
    config: ContainerConfig,
}

impl ContainerBackend {
    /// A backend with `config`; the engine is first contacted on the first start.
    pub fn new(config: ContainerConfig) -> Self {
        Self { config }
    }

    /// Its name in events.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// What kind of backend it is.
    pub fn kind(&self) -> BackendKind {
        match self.config.emulator {
            ContainerEmulator::Renode => BackendKind::RenodeDocker,
            ContainerEmulator::Qemu => BackendKind::QemuDocker,
        }
    }

    /// Whether it can run `mcu`.
    pub fn check(&self, mcu: &Mcu) -> Result<(), Unsupported> {
        mcu.runs_on(self.kind())
    }

    /// The engine, speaking the highest API version both sides know (Debian's dockerd 20.10
    /// stops at 1.41; bollard would ask for newer).
    async fn engine(&self) -> Result<Docker, ContainerError> {
        let host = &self.config.docker_host;
        let version = bollard::API_DEFAULT_VERSION;
        let connected = if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, 120, version)
        } else {
            Docker::connect_with_unix(host, 120, version)
        };
        connected
            .map_err(|source| self.engine_error(source))?
            .negotiate_version()
            .await
            .map_err(|source| self.engine_error(source))
    }

    fn engine_error(&self, source: bollard::errors::Error) -> ContainerError {
        ContainerError::Engine {
            host: self.config.docker_host.clone(),
            source,
        }
    }

    /// Creates the device's container, uploads its files, starts it, and follows it.
    pub async fn start(&self, launch: &Launch<'_>) -> Result<Emulator, ContainerError> {
        let board = launch.mcu.firmware()?;
        let serial = board.gateway_link() == GatewayLink::Serial;
        // A serial board's link UART listens on a port of the host the container shares.
        let link_port = if serial { free_port()? } else { 0 };
        let elf = board.image_name();
        let firmware = format!("{FIRMWARE_DIR}/{elf}");
        let image_path = self.config.firmware_dir.join(&elf);
        let image = tokio::fs::read(&image_path)
            .await
            .map_err(|source| ContainerError::Files {
                path: image_path.display().to_string(),
                source,
            })?;
        // The container shares the host's network, so the guest sees the host as QEMU's does.
        let block = launch.guest_block()?;
        let mut files = vec![
            (
                format!("{DEVICE_DIR}/provisioning.bin"),
                block.encode().map_err(RescError::from)?,
            ),
            (firmware.clone(), image),
        ];
        if self.config.emulator == ContainerEmulator::Renode {
            let script = resc::render(
                launch.mcu,
                launch.device.as_str(),
                &firmware,
                &block,
                link_port,
            )?;
            files.push((format!("{DEVICE_DIR}/device.resc"), script.into_bytes()));
        }
        let archive = archive(&files)?;
        let machine = launch.mcu.qemu_machine.clone().unwrap_or_default();
        let network: Vec<String> = if serial {
            vec![
                "-serial".into(),
                format!("tcp:127.0.0.1:{link_port},server=on,wait=off"),
                "-nic".into(),
                "none".into(),
            ]
        } else {
            vec!["-nic".into(), "user,model=lan9118".into()]
        };
        let command = self
            .config
            .command
            .iter()
            .flat_map(|arg| match arg.as_str() {
                "{network}" => network.clone(),
                _ => vec![arg.clone()],
            })
            .map(|arg| {
                arg.replace("{device}", launch.device.as_str())
                    .replace("{script}", &format!("{DEVICE_DIR}/device.resc"))
                    .replace("{block}", &format!("{DEVICE_DIR}/provisioning.bin"))
                    .replace("{firmware}", &firmware)
                    .replace("{machine}", &machine)
                    .replace("{address}", &format!("{:#x}", board.provisioning_address()))
            })
            .collect();

        let docker = self.engine().await?;
        let name = format!("{}{}", self.config.name_prefix, launch.device);
        // A container left behind by an earlier run of the manager would block the name.
        let _ = docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let body = ContainerCreateBody {
            image: Some(self.config.image.clone()),
            cmd: Some(command),
            labels: Some(HashMap::from([(
                DEVICE_LABEL.to_owned(),
                launch.device.to_string(),
            )])),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                network_mode: Some(self.config.network_mode.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| self.engine_error(e))?;
        let upload = UploadToContainerOptionsBuilder::new().path("/").build();
        let body = bollard::body_full(archive.into());
        let started = async {
            docker
                .upload_to_container(&created.id, Some(upload), body)
                .await?;
            docker.start_container(&created.id, None).await
        }
        .await;
        if let Err(e) = started {
            let _ = docker
                .remove_container(
                    &created.id,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
            return Err(self.engine_error(e));
        }
        let uart = Arc::new(UartLog::default());
        if serial {
            tokio::spawn(bridge_when_listening(
                link_port,
                block.endpoints.clone(),
                uart.clone(),
            ));
        }
        let short: String = created.id.chars().take(12).collect();
        let (emulator, control) = Emulator::new(uart.clone(), format!("container {short}"));
        tokio::spawn(follow(docker, created.id, uart, control));
        Ok(emulator)
    }
}

/// A port free on this host now, for the emulator to listen on.
fn free_port() -> Result<u16, ContainerError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(ContainerError::LinkPort)
}

/// Dials the board's link UART once the emulator listens (Renode takes seconds to start),
/// and bridges it to the gateways.
async fn bridge_when_listening(port: u16, allowed: Vec<String>, uart: Arc<UartLog>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                crate::bridge::run(socket, allowed, uart).await;
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                uart.push(format!(
                    "bridge: the emulator never listened on {port}: {e}"
                ));
                return;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// A tar archive of `files` (absolute paths in the container), readable by everyone: the
/// emulator image may run as any user.
fn archive(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, ContainerError> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o444);
        // append_data sets the path and the checksum.
        tar.append_data(&mut header, path.trim_start_matches('/'), bytes.as_slice())
            .map_err(|source| ContainerError::Files {
                path: path.clone(),
                source,
            })?;
    }
    tar.into_inner().map_err(|source| ContainerError::Files {
        path: "the archive".into(),
        source,
    })
}

async fn follow(docker: Docker, id: String, uart: Arc<UartLog>, control: Control) {
    let Control { stop, exit } = control;
    let logs = docker.logs(
        &id,
        Some(
            LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let streaming = tokio::spawn(stream_lines(logs, uart));
    let mut waiting = docker.wait_container(
        &id,
        Some(
            WaitContainerOptionsBuilder::new()
                .condition("not-running")
                .build(),
        ),
    );
    let ended = tokio::select! {
        end = waiting.next() => exit_of(end, false),
        _ = stop => {
            if let Err(e) = docker
                .stop_container(&id, Some(StopContainerOptionsBuilder::new().t(5).build()))
                .await
            {
                warn!(container = %id, error = %e, "stopping the container");
            }
            let mut waiting = docker.wait_container(
                &id,
                Some(WaitContainerOptionsBuilder::new().condition("not-running").build()),
            );
            exit_of(waiting.next().await, true)
        }
    };
    // The last lines are in before the end is reported.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), streaming).await;
    if let Err(e) = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
    {
        warn!(container = %id, error = %e, "removing the container");
    }
    let _ = exit.send(Some(ended));
}

async fn stream_lines<S>(mut logs: S, uart: Arc<UartLog>)
where
    S: futures::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Unpin,
{
    let mut partial = Vec::new();
    while let Some(Ok(chunk)) = logs.next().await {
        partial.extend_from_slice(&chunk.into_bytes());
        while let Some(at) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=at).collect();
            let text = String::from_utf8_lossy(&line);
            uart.push(text.trim_end_matches(['\r', '\n']).to_owned());
        }
    }
    if !partial.is_empty() {
        uart.push(String::from_utf8_lossy(&partial).into_owned());
    }
}

fn exit_of(
    end: Option<Result<bollard::models::ContainerWaitResponse, bollard::errors::Error>>,
    requested: bool,
) -> Exit {
    match end {
        Some(Ok(response)) => Exit {
            code: i32::try_from(response.status_code).ok(),
            requested,
            note: None,
        },
        // bollard reports a non-zero exit code as an error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { error, code })) => Exit {
            code: i32::try_from(code).ok(),
            requested,
            note: (!error.is_empty()).then_some(error),
        },
        Some(Err(e)) => Exit {
            code: None,
            requested,
            note: Some(format!("lost the container: {e}")),
        },
        None => Exit {
            code: None,
            requested,
            note: Some("the engine closed the wait".into()),
        },
    }
}
