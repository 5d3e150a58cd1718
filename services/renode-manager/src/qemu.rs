//! The QEMU backend: one `qemu-system-arm` process per device.
//!
//! The provisioning block is written to a file and preloaded into guest RAM at
//! the board's [`Board::provisioning_address`] with `-device loader` before the CPU starts. The NIC is a
//! LAN9118 on QEMU's user-mode network: the guest gets an address by DHCP and reaches the
//! host's loopback as `10.0.2.2`. A board without Ethernet (the STM32F405 of netduinoplus2)
//! has its second UART on a TCP socket to this process instead, where [`crate::bridge`] plays
//! its network co-processor, with the same view of the network. The (first) UART is the
//! process's stdout, kept as lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::broadcast;
use wasmbed_schemas::provisioning::{Provisioning, ProvisioningError};

use crate::emulator::{Control, Emulator, Exit};
use crate::firmware::{Board, GatewayLink};
use crate::uart::{LineTimeout, UartLog};

/// The host's loopback as the guest sees it on QEMU's user-mode network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// How long QEMU may take to dial the serial link's socket.
const LINK_ACCEPT: Duration = Duration::from_secs(30);

/// How a device is started.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The emulator binary.
    pub qemu: PathBuf,
    /// The board.
    pub board: Board,
    /// The firmware image (ELF).
    pub image: PathBuf,
}

/// Why a device could not be started or did not do what was awaited.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// The provisioning block could not be encoded.
    #[error(transparent)]
    Provisioning(#[from] ProvisioningError),
    /// The emulator could not be started.
    #[error("starting {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// Writing the provisioning file failed.
    #[error("writing the provisioning block: {0}")]
    Io(#[source] std::io::Error),
    /// The awaited UART line did not come.
    #[error(transparent)]
    Timeout(#[from] LineTimeout),
    /// QEMU has no model of the board.
    #[error("QEMU has no model of the {0:?} board")]
    NoMachine(Board),
    /// The serial link's socket could not be set up.
    #[error("the serial link's socket: {0}")]
    Link(#[source] std::io::Error),
}

/// A running emulated device.
pub struct QemuDevice {
    child: Child,
    uart: Arc<UartLog>,
    _block: tempfile::NamedTempFile,
}

impl QemuDevice {
    /// Boots `config.image` with `provisioning` preloaded.
    pub async fn start(
        config: &QemuConfig,
        provisioning: &Provisioning,
    ) -> Result<Self, QemuError> {
        let block = provisioning.encode()?;
        let mut file = tempfile::NamedTempFile::new().map_err(QemuError::Io)?;
        std::io::Write::write_all(&mut file, &block).map_err(QemuError::Io)?;
        let loader = format!(
            "loader,file={},addr={:#x},force-raw=on",
            file.path().display(),
            config.board.provisioning_address()
        );
        let machine = config
            .board
            .qemu_machine()
            .ok_or(QemuError::NoMachine(config.board))?;
        let mut command = Command::new(&config.qemu);
        command
            .args(["-M", machine, "-nographic", "-monitor", "none"])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&config.image)
            .arg("-device")
            .arg(loader);
        let link = match config.board.gateway_link() {
            GatewayLink::Ethernet => {
                command.args(["-nic", "user,model=lan9118"]);
                None
            }
            GatewayLink::Serial => {
                // QEMU dials this socket for the second UART when it starts.
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(QemuError::Link)?;
                let port = listener.local_addr().map_err(QemuError::Link)?.port();
                command
                    .args(["-serial", &format!("tcp:127.0.0.1:{port}")])
                    .args(["-nic", "none"]);
                Some(listener)
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| QemuError::Spawn(config.qemu.display().to_string(), e))?;
        let uart = Arc::new(UartLog::default());
        if let Some(stdout) = child.stdout.take() {
            let uart = uart.clone();
            tokio::spawn(async move { uart.collect(stdout, "").await });
        }
        if let Some(stderr) = child.stderr.take() {
            let uart = uart.clone();
            tokio::spawn(async move { uart.collect(stderr, "qemu: ").await });
        }
        if let Some(listener) = link {
            let (uart, allowed) = (uart.clone(), provisioning.endpoints.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(LINK_ACCEPT, listener.accept()).await {
                    Ok(Ok((socket, _))) => {
                        let _ = socket.set_nodelay(true);
                        crate::bridge::run(socket, allowed, uart).await;
                    }
                    Ok(Err(e)) => uart.push(format!("bridge: accepting qemu's uart: {e}")),
                    Err(_) => uart.push("bridge: qemu never connected its uart".into()),
                }
            });
        }
        Ok(Self {
            child,
            uart,
            _block: file,
        })
    }

    /// The UART lines so far (the most recent few thousand).
    pub fn lines(&self) -> Vec<String> {
        self.uart.lines()
    }

    /// UART lines from now on, as they come (a slow reader loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.uart.subscribe()
    }

    /// The device's UART.
    pub fn uart(&self) -> Arc<UartLog> {
        self.uart.clone()
    }

    /// Waits for a UART line containing `needle` (or returns one already seen).
    pub async fn wait_for_line(
        &self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, QemuError> {
        self.wait_for_nth_line(needle, 1, timeout).await
    }

    /// Waits until `n` UART lines contain `needle`; returns the n-th.
    pub async fn wait_for_nth_line(
        &self,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<String, QemuError> {
        Ok(self.uart.wait_for_nth_line(needle, n, timeout).await?)
    }

    /// The emulator's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the emulator process ends.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops the emulator.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Runs the device as an [`Emulator`]: the process is watched, killed on request, and its
    /// end reported.
    pub fn into_emulator(mut self) -> Emulator {
        let instance = self
            .pid()
            .map_or_else(|| "qemu".to_owned(), |pid| format!("pid {pid}"));
        let (emulator, control) = Emulator::new(self.uart.clone(), instance);
        tokio::spawn(async move {
            // QEMU reads the block file at reset: it lives as long as the process.
            let _block = &self._block;
            let Control { stop, exit } = control;
            let ended = tokio::select! {
                status = self.child.wait() => exit_of(status, false),
                _ = stop => {
                    let _ = self.child.start_kill();
                    exit_of(self.child.wait().await, true)
                }
            };
            let _ = exit.send(Some(ended));
        });
        emulator
    }
}

fn exit_of(status: std::io::Result<std::process::ExitStatus>, requested: bool) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => Exit {
            code: status.code(),
            requested,
            note: status.signal().map(|s| format!("killed by signal {s}")),
        },
        Err(e) => Exit {
            code: None,
            requested,
            note: Some(format!("waiting for qemu: {e}")),
        },
    }
}
