//! Test helpers shared by every crate's integration tests.
//!
//! [`NatsServer`] starts a real `nats-server -js` on a free loopback port with its store in a
//! temporary directory, waits until JetStream is ready, and kills the server when dropped;
//! [`NatsCluster`] does the same for a routed 3-node JetStream cluster. No test talks to an
//! in-memory stand-in for NATS.

mod cluster;

pub use cluster::{CLUSTER_NAME, NatsCluster};

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmbed_local_nats::{
    NatsProcess, NatsProcessConfig, NatsProcessError, NatsUsers, connect_options, find_binary,
    free_port, write_secured_config,
};
use wasmbed_schemas::permissions::Principal;

/// Why a test server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The server could not be started.
    #[error(transparent)]
    Process(#[from] NatsProcessError),
    /// Creating the temporary directory or finding a port failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client could not connect.
    #[error("connecting to nats-server: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// The repository root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A `nats-server -js` of a test's own: free port, temporary store, killed on drop.
///
/// It runs with the project's users and permissions (`nats/permissions.conf`), each with a
/// fresh password: [`NatsServer::client_as`] connects as one service, [`NatsServer::client`]
/// (no credentials) as the operator.
pub struct NatsServer {
    process: NatsProcess,
    users: NatsUsers,
    log_dir: PathBuf,
    // Dropped after `process`, so the server is gone before its files are.
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream and a file store in a fresh temporary directory.
    ///
    /// A port found free can be taken by a parallel test before the server binds it; the
    /// server then exits at once, and the start is retried on fresh ports.
    pub async fn start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new().prefix("wasmbed-nats-").tempdir()?;
        let binary = find_binary(&workspace_root())?;
        let users = NatsUsers::generate()?;
        // The project's own server settings, so tests and benchmarks see what `wasmbed up`
        // runs (flags override its ports and store).
        let read = |name: &str| std::fs::read_to_string(workspace_root().join("nats").join(name));
        let config_file = write_secured_config(
            dir.path(),
            &read("nats-server.conf")?,
            &read("permissions.conf")?,
            Some(Principal::Operator),
        )?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = NatsProcess::start(NatsProcessConfig {
                binary: binary.clone(),
                port: free_port()?,
                monitor_port: free_port()?,
                store_dir: dir.path().join("store"),
                log_file: dir.path().join(format!("nats-server-{attempt}.log")),
                config_file: Some(config_file.clone()),
                ready_timeout: Duration::from_secs(10),
                env: users.env(),
                extra_args: Vec::new(),
            })
            .await;
            match started {
                Ok(process) => {
                    return Ok(Self {
                        process,
                        users,
                        log_dir: dir.path().to_path_buf(),
                        _dir: dir,
                    });
                }
                Err(NatsProcessError::NotReady(..)) if attempt < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The server's process id, while it runs (for benchmarks that measure it).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        Ok(async_nats::connect(self.url()).await?)
    }

    /// A new client connection as `principal`, with its password and reply prefix: what the
    /// service would be allowed to do.
    pub async fn client_as(
        &self,
        principal: Principal,
    ) -> Result<async_nats::Client, HarnessError> {
        Ok(
            connect_options(principal, Some(self.users.password(principal)))
                .connect(self.url())
                .await?,
        )
    }

    /// The users' passwords.
    pub fn users(&self) -> &NatsUsers {
        &self.users
    }

    /// Everything the server logged (every start), e.g. to look for permission violations.
    pub fn log(&self) -> String {
        let mut log = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            let mut files: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            files.sort();
            for file in files {
                log.push_str(&std::fs::read_to_string(file).unwrap_or_default());
            }
        }
        log
    }

    /// Lines of the server's log where a user was refused a subject (a service's permissions
    /// in `nats/permissions.conf` lack something it needs).
    pub fn permission_violations(&self) -> Vec<String> {
        permission_violations(&self.log())
    }

    /// Kills the server (SIGKILL) without restarting it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills the server (SIGKILL) and starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        Ok(self.process.restart().await?)
    }
}

/// The lines of a nats-server log where a user was refused a subject.
fn permission_violations(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect()
}

/// `GET path` over HTTP/1.0 on 127.0.0.1: `(status, body)`, or `(0, "")` when nothing
/// answers. A bare TCP connect is no readiness check (the listener may be bound before the
/// server runs); a status code is.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, &[], &[]).await
}

/// One HTTP/1.0 request on 127.0.0.1 with extra `headers` and a `body`: `(status, body)`, or
/// `(0, "")` when nothing answers.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    if stream.write_all(&bytes).await.is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
