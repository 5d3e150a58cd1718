//! Gateways started by a test on its own terms, and devices driven by hand against them.

use std::net::SocketAddr;

use ed25519_dalek::SigningKey;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use wasmbed_device_core::SessionConfig;
use wasmbed_gateway::{GatewayConfig, GatewayError, Listeners};
use wasmbed_schemas::frame::codec::{DecodeError, decode};
use wasmbed_schemas::frame::{Challenge, Frame};
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{GatewayId, Sha256};

use crate::{System, T, wait_ok};

/// Quick timeouts, so that timeout behaviour is testable in a second or two: heartbeats every
/// 300 ms, three missed end a session; 700 ms for TLS, 1.5 s to authenticate.
pub fn quick_config() -> GatewayConfig {
    let mut config = GatewayConfig::new(GatewayId::new("gw-test").unwrap());
    config.heartbeat_interval = Duration::from_millis(300);
    config.missed_heartbeats = 3;
    config.handshake_timeout = Duration::from_millis(700);
    config.auth_timeout = Duration::from_millis(1500);
    config
}

/// A gateway a test started, with its addresses; stopped gracefully or killed.
pub struct RunningGateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GatewayError>>,
    /// Where devices dial.
    pub tls_addr: SocketAddr,
    /// `/health`, `/ready`, `/metrics`.
    pub http_addr: SocketAddr,
}

impl RunningGateway {
    /// Graceful stop: GoAway to every device, GatewayStopped in the log. Panics if the gateway
    /// ended with an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    /// Abrupt stop: the task is dropped mid-flight (no goodbye, no events).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

impl System {
    /// Starts a gateway with `config` on `tls_port` (0: any free port) as its own NATS user,
    /// and waits until it is ready.
    pub async fn start_gateway_with(&self, config: GatewayConfig, tls_port: u16) -> RunningGateway {
        let tls = TcpListener::bind(("127.0.0.1", tls_port)).await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tls_addr, http_addr) = (tls.local_addr().unwrap(), http.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wasmbed_gateway::run(
            self.nats.client_as(Principal::Gateway).await.unwrap(),
            config,
            Listeners { tls, http },
            async move {
                let _ = stopped.await;
            },
        ));
        wait_ok(http_addr, "/ready").await;
        RunningGateway {
            stop,
            task,
            tls_addr,
            http_addr,
        }
    }
}

/// A device driven by hand: device-core for the handshake, then raw bytes either way.
pub struct RawDevice {
    pub reader: ReadHalf<TlsStream<TcpStream>>,
    pub writer: WriteHalf<TlsStream<TcpStream>>,
    /// SHA-256 of the gateway's certificate.
    pub fingerprint: Sha256,
    /// The Challenge the gateway sent with its handshake (`connect` only).
    pub challenge: Option<Challenge>,
    buf: Vec<u8>,
}

impl RawDevice {
    /// Completes TLS and reads the Challenge, which the gateway sends in its first flight:
    /// before this device has sent a single frame.
    pub async fn connect(system: &System, addr: SocketAddr) -> Self {
        let (tls, fingerprint) = system.connector().connect(addr, None, T).await.unwrap();
        let (reader, writer) = tokio::io::split(tls);
        let mut device = Self {
            reader,
            writer,
            fingerprint,
            challenge: None,
            buf: Vec::new(),
        };
        match device.next().await {
            Some(Frame::Challenge(challenge)) => device.challenge = Some(challenge),
            other => panic!("expected the Challenge first, got {other:?}"),
        }
        device
    }

    /// Connects and authenticates with `key` (which must be allowed).
    pub async fn authenticated(system: &System, addr: SocketAddr, key: SigningKey) -> Self {
        let done = wasmbed_sim::authenticate(
            &system.connector(),
            addr,
            None,
            key,
            SessionConfig::default(),
            T,
        )
        .await
        .unwrap();
        let (reader, writer) = tokio::io::split(done.stream);
        Self {
            reader,
            writer,
            fingerprint: done.fingerprint,
            challenge: None,
            buf: Vec::new(),
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) {
        let bytes = wasmbed_schemas::frame::codec::encode_to_vec(frame).unwrap();
        self.writer.write_all(&bytes).await.unwrap();
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The gateway may already have closed; that is what some tests provoke.
        let _ = self.writer.write_all(bytes).await;
        let _ = self.writer.flush().await;
    }

    /// The next frame, or `None` when the gateway closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            match decode(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                Err(DecodeError::Incomplete { .. }) => {}
                Err(e) => panic!("gateway sent garbage: {e}"),
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(T, self.reader.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return None,
                Err(_) => panic!("gateway neither answered nor closed"),
            }
        }
    }

    /// Reads until the gateway closes; returns every frame it sent before.
    pub async fn drain(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }
}
