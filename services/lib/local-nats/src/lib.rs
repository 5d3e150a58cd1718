//! A `nats-server` child process with JetStream: found, started, checked ready, stopped.
//!
//! `wasmbed up` runs one with the project's config and a state directory; the test harness runs
//! one per test in a temporary directory. Both go through [`NatsProcess`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

mod users;
pub use users::{NatsUsers, connect_options, with_url_credentials, write_secured_config};

/// Why a server could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsProcessError {
    /// No `nats-server` binary was found.
    #[error(
        "nats-server not found: run scripts/setup (it installs the pinned nats-server into \
         .tools/bin) or set WASMBED_NATS_SERVER"
    )]
    NotFound,
    /// Spawning the process or preparing its files failed.
    #[error("starting nats-server: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not report JetStream ready in time.
    #[error("nats-server was not ready within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct NatsProcessConfig {
    /// The `nats-server` binary.
    pub binary: PathBuf,
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Monitoring port on 127.0.0.1 (used for the readiness check).
    pub monitor_port: u16,
    /// JetStream store directory.
    pub store_dir: PathBuf,
    /// Where the server writes its log.
    pub log_file: PathBuf,
    /// A config file (`-c`); flags given here override it.
    pub config_file: Option<PathBuf>,
    /// How long to wait for readiness.
    pub ready_timeout: Duration,
    /// Extra environment of the server (the users' passwords, see [`NatsUsers::env`]).
    pub env: Vec<(String, String)>,
    /// More flags (a cluster member's name, cluster listen address and routes).
    pub extra_args: Vec<String>,
}

/// A running `nats-server`; killed when dropped.
#[derive(Debug)]
pub struct NatsProcess {
    child: Option<Child>,
    config: NatsProcessConfig,
}

/// The `nats-server` binary: `$WASMBED_NATS_SERVER`, else `.tools/bin/nats-server` in `root`
/// (where `scripts/setup` installs the pinned version), else the first on `PATH`.
pub fn find_binary(root: &Path) -> Result<PathBuf, NatsProcessError> {
    if let Some(path) = std::env::var_os("WASMBED_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let installed = root.join(".tools/bin/nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(NatsProcessError::NotFound)
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it right after).
pub fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsProcess {
    /// Starts the server and waits until JetStream is ready.
    pub async fn start(config: NatsProcessConfig) -> Result<Self, NatsProcessError> {
        let mut process = Self {
            child: None,
            config,
        };
        process.spawn().await?;
        Ok(process)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server runs and its full health check passes (in a cluster: JetStream has
    /// a meta leader and every stream and consumer it holds is current).
    pub async fn healthy(&self) -> bool {
        self.child.is_some() && health(self.config.monitor_port, "/healthz").await
    }

    /// Kills the server with SIGKILL: nothing is flushed, on purpose (crash tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the server to shut down cleanly (SIGTERM through `nats-server --signal`), waits up
    /// to `grace`, then kills it.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let signalled = Command::new(&self.config.binary)
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if signalled {
            let started = Instant::now();
            while started.elapsed() < grace {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    info!("nats-server stopped");
                    self.child = None;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            warn!(?grace, "nats-server did not stop in time; killing it");
        }
        self.kill();
    }

    /// Kills the server and starts it again on the same ports with the same store.
    pub async fn restart(&mut self) -> Result<(), NatsProcessError> {
        self.kill();
        self.spawn().await
    }

    async fn spawn(&mut self) -> Result<(), NatsProcessError> {
        let c = &self.config;
        std::fs::create_dir_all(&c.store_dir)?;
        // Errors before logging starts (a bad config, a taken port) go to stderr: keep them in
        // the same log file.
        let early_errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log_file)?;
        let mut command = Command::new(&c.binary);
        if let Some(file) = &c.config_file {
            command.arg("-c").arg(file);
        }
        command
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .args(["-js", "-a", "127.0.0.1"])
            .arg("-p")
            .arg(c.port.to_string())
            .arg("-m")
            .arg(c.monitor_port.to_string())
            .arg("-sd")
            .arg(&c.store_dir)
            .arg("-l")
            .arg(&c.log_file)
            .args(&c.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(early_errors);
        // What this start writes to the log comes after what is there (a restart appends).
        let log_start = std::fs::metadata(&c.log_file).map_or(0, |m| m.len());
        self.child = Some(command.spawn()?);
        let started = Instant::now();
        while started.elapsed() < c.ready_timeout {
            // The health answer alone could come from another server that took the monitoring
            // port between `free_port` and this start; this process's own log says whether it
            // is the one listening.
            if jetstream_ready(c.monitor_port).await
                && log_says_ready(&c.log_file, log_start, c.port)
            {
                debug!(port = c.port, elapsed = ?started.elapsed(), "nats-server ready");
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(&c.log_file).unwrap_or_default();
                    return Err(NatsProcessError::NotReady(
                        started.elapsed(),
                        format!("exited with {status}\n{log}"),
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = std::fs::read_to_string(&c.log_file).unwrap_or_default();
        let timeout = c.ready_timeout;
        self.kill();
        Err(NatsProcessError::NotReady(timeout, log))
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This start's part of the server's own log says it listens on `port` and is ready.
fn log_says_ready(log_file: &std::path::Path, from: u64, port: u16) -> bool {
    let Ok(bytes) = std::fs::read(log_file) else {
        return false;
    };
    let ours = String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default());
    ours.contains(&format!(
        "Listening for client connections on 127.0.0.1:{port}"
    )) && ours.contains("Server is ready")
}

/// `GET /healthz?js-enabled-only=true` on the monitoring port answers 200.
async fn jetstream_ready(monitor_port: u16) -> bool {
    health(monitor_port, "/healthz?js-enabled-only=true").await
}

/// `GET path` on the monitoring port answers 200.
async fn health(monitor_port: u16, path: &'static str) -> bool {
    tokio::task::spawn_blocking(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], monitor_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    })
    .await
    .unwrap_or(false)
}

/// How to run a JetStream cluster of routed nodes on this host.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `nats-server` binary.
    pub binary: PathBuf,
    /// Each node's client port (0: a free one); as many nodes as ports.
    pub client_ports: Vec<u16>,
    /// Node `i` keeps its store in `<dir>/node-<i>/store` and logs to `<dir>/node-<i>/nats-server.log`.
    pub dir: PathBuf,
    /// The config file every node reads (flags override its name, ports and store).
    pub config_file: Option<PathBuf>,
    /// Extra environment of the servers (the users' passwords).
    pub env: Vec<(String, String)>,
    /// The cluster's name.
    pub name: String,
}

/// Starts the nodes of `config`, routed to each other, each ready for clients (a meta leader
/// may still be being elected: see [`NatsProcess::healthy`]).
pub async fn start_cluster(config: &ClusterConfig) -> Result<Vec<NatsProcess>, NatsProcessError> {
    let mut cluster_ports = Vec::new();
    for _ in &config.client_ports {
        cluster_ports.push(free_port()?);
    }
    let mut nodes = Vec::new();
    for (i, (client_port, own)) in config.client_ports.iter().zip(&cluster_ports).enumerate() {
        let routes: Vec<String> = cluster_ports
            .iter()
            .filter(|p| *p != own)
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let dir = config.dir.join(format!("node-{}", i + 1));
        std::fs::create_dir_all(&dir)?;
        let port = match client_port {
            0 => free_port()?,
            port => *port,
        };
        nodes.push(
            NatsProcess::start(NatsProcessConfig {
                binary: config.binary.clone(),
                port,
                monitor_port: free_port()?,
                store_dir: dir.join("store"),
                log_file: dir.join("nats-server.log"),
                config_file: config.config_file.clone(),
                ready_timeout: Duration::from_secs(20),
                env: config.env.clone(),
                extra_args: vec![
                    "-n".into(),
                    format!("node-{}", i + 1),
                    "--cluster_name".into(),
                    config.name.clone(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{own}"),
                    "--routes".into(),
                    routes.join(","),
                ],
            })
            .await?,
        );
    }
    Ok(nodes)
}
