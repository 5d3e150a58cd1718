//! Test helpers shared by every crate's integration tests.
//!
//! [`NatsServer`] starts a real `nats-server -js` on a free loopback port with its store in a
//! temporary directory, waits until JetStream is ready, and kills the server when dropped. No
//! test talks to an in-memory stand-in for NATS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `nats-server` binary was found.
    #[error(
        "nats-server not found: run scripts/setup (it installs the pinned nats-server into \
         .tools/bin) or set WASMBED_NATS_SERVER"
    )]
    NatsServerNotFound,
    /// Spawning or reading a file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not report JetStream ready in time.
    #[error("nats-server was not ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
    /// The client could not connect.
    #[error("connecting to nats-server: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// How long a server may take to become ready (it usually takes under 100 ms).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nats-server` binary: `$WASMBED_NATS_SERVER`, else the one `scripts/setup` installs in
/// `.tools/bin`, else whatever is on `PATH`.
pub fn nats_server_binary() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("WASMBED_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let installed = workspace_root().join(".tools/bin/nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(HarnessError::NatsServerNotFound)
}

/// The repository root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `nats-server -js`, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream and a file store in a fresh temporary directory.
    pub async fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new().prefix("wasmbed-nats-").tempdir()?;
        let mut server = Self {
            child: None,
            port: free_port()?,
            monitor_port: free_port()?,
            dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        Ok(async_nats::connect(self.url()).await?)
    }

    /// Kills the server (SIGKILL: nothing is flushed on purpose) without restarting it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let log = self.dir.path().join("nats-server.log");
        let child = Command::new(nats_server_binary()?)
            .args(["-js", "-a", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store_dir())
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if jetstream_ready(self.monitor_port) {
                tracing::debug!(port = self.port, elapsed = ?started.elapsed(), "nats-server ready");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        self.kill();
        Err(HarnessError::NotReady(READY_TIMEOUT, text))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /healthz?js-enabled-only=true` answers 200.
fn jetstream_ready(monitor_port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], monitor_port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}
