//! The QEMU backend: one `qemu-system-arm` process per device.
//!
//! The provisioning block is written to a file and preloaded into guest RAM at
//! [`provisioning::ADDRESS`] with `-device loader` before the CPU starts. The NIC is a
//! LAN9118 on QEMU's user-mode network: the guest gets an address by DHCP and reaches the
//! host's loopback as `10.0.2.2`. The UART is the process's stdout, kept as lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, broadcast};
use wasmbed_schemas::provisioning::{self, Provisioning, ProvisioningError};

use crate::firmware::Board;

/// The host's loopback as the guest sees it on QEMU's user-mode network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// UART lines kept per device for `lines` and `wait_for_line`.
const KEPT_LINES: usize = 4096;

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
    #[error("no UART line containing {needle:?} within {timeout:?}")]
    Timeout {
        /// What was awaited.
        needle: String,
        /// How long.
        timeout: Duration,
    },
}

/// The endpoint a guest dials for a gateway listening on the host at `addr`.
pub fn guest_endpoint(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("{HOST_FROM_GUEST}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

struct Uart {
    lines: Mutex<Vec<String>>,
    changed: Notify,
    live: broadcast::Sender<String>,
}

/// A running emulated device.
pub struct QemuDevice {
    child: Child,
    uart: Arc<Uart>,
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
            provisioning::ADDRESS
        );
        let mut child = Command::new(&config.qemu)
            .args([
                "-M",
                config.board.qemu_machine(),
                "-nographic",
                "-monitor",
                "none",
            ])
            .args(["-serial", "stdio", "-kernel"])
            .arg(&config.image)
            .args(["-nic", "user,model=lan9118", "-device"])
            .arg(loader)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| QemuError::Spawn(config.qemu.display().to_string(), e))?;
        let uart = Arc::new(Uart {
            lines: Mutex::default(),
            changed: Notify::new(),
            live: broadcast::channel(256).0,
        });
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect(BufReader::new(stdout), uart.clone(), ""));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect(BufReader::new(stderr), uart.clone(), "qemu: "));
        }
        Ok(Self {
            child,
            uart,
            _block: file,
        })
    }

    /// The UART lines so far (the most recent few thousand).
    pub fn lines(&self) -> Vec<String> {
        self.uart
            .lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// UART lines from now on, as they come (a slow reader loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.uart.live.subscribe()
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
        let search = async {
            loop {
                let changed = self.uart.changed.notified();
                if let Some(line) = self
                    .lines()
                    .into_iter()
                    .filter(|l| l.contains(needle))
                    .nth(n.saturating_sub(1))
                {
                    return line;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, search)
            .await
            .map_err(|_| QemuError::Timeout {
                needle: needle.to_owned(),
                timeout,
            })
    }

    /// Stops the emulator.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    uart: Arc<Uart>,
    prefix: &str,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = format!("{prefix}{}", line.trim_end_matches('\r'));
        tracing::debug!(target: "uart", "{line}");
        let _ = uart.live.send(line.clone());
        if let Ok(mut all) = uart.lines.lock() {
            // A board runs for days under `up`: keep the recent past, not all of it.
            if all.len() >= KEPT_LINES {
                all.drain(..KEPT_LINES / 2);
            }
            all.push(line);
        }
        uart.changed.notify_waiters();
    }
}
