//! A running system for gateway tests: real nats-server, real enrollment, real gateway (TLS on
//! a free 127.0.0.1 port), simulated or hand-driven devices.

#![allow(dead_code)] // each test file uses part of it

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use wasmbed_bus::call;
use wasmbed_device_core::{SessionConfig, Signer};
use wasmbed_enrollment::EnrollmentConfig;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_gateway::{GatewayConfig, GatewayError, Listeners};
use wasmbed_schemas::command::{GetCaCertificate, RegisterDevice};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::frame::codec::{DecodeError, decode};
use wasmbed_schemas::frame::{Challenge, Frame};
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{AggregateId, DeviceId, GatewayId, Sha256};
use wasmbed_sim::{Connector, SimConfig, SimDevice};
use wasmbed_test_support::NatsServer;
pub use wasmbed_test_support::http_get;

pub const T: Duration = Duration::from_secs(10);

pub struct RunningGateway {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GatewayError>>,
    pub tls_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl RunningGateway {
    /// Graceful stop: GoAway to every device, GatewayStopped in the log.
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

pub struct System {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub log: EventLog,
    pub ca_pem: String,
    _ca_dir: tempfile::TempDir,
    _enrollment: (oneshot::Sender<()>, JoinHandle<()>),
}

/// Quick timeouts so that timeout behaviour is testable in a second or two.
pub fn test_gateway_config() -> GatewayConfig {
    let mut config = GatewayConfig::new(GatewayId::new("gw-test").unwrap());
    config.heartbeat_interval = Duration::from_millis(300);
    config.missed_heartbeats = 3;
    config.handshake_timeout = Duration::from_millis(700);
    config.auth_timeout = Duration::from_millis(1500);
    config
}

impl System {
    pub async fn start() -> Self {
        Self::with_certificate_validity(Duration::from_secs(30 * 24 * 3600)).await
    }

    /// A system whose CA issues gateway certificates valid for `validity`.
    pub async fn with_certificate_validity(validity: Duration) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.client().await.unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let enrollment = tokio::spawn({
            let client = nats.client_as(Principal::Enrollment).await.unwrap();
            let mut config = EnrollmentConfig::new(ca_dir.path().to_path_buf());
            config.gateway_certificate_validity = validity;
            async move {
                wasmbed_enrollment::run(client, config, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        let mut ca_pem = None;
        for _ in 0..100 {
            if let Ok(ca) = call(&client, &GetCaCertificate {}, Duration::from_millis(200)).await {
                ca_pem = Some(ca.certificate_pem);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = EventLog::open(client.clone(), &LogOptions::default())
            .await
            .unwrap();
        Self {
            nats,
            client,
            log,
            ca_pem: ca_pem.expect("enrollment came up"),
            _ca_dir: ca_dir,
            _enrollment: (stop, enrollment),
        }
    }

    /// Starts a gateway on `tls_port` (0: any).
    pub async fn gateway(&self, config: GatewayConfig, tls_port: u16) -> RunningGateway {
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
        // Ready when /ready says so.
        for _ in 0..200 {
            if http_get(http_addr, "/ready").await.0 == 200 {
                return RunningGateway {
                    stop,
                    task,
                    tls_addr,
                    http_addr,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("gateway did not become ready");
    }

    pub fn connector(&self) -> Connector {
        Connector::new(&self.ca_pem, "localhost").unwrap()
    }

    /// Registers `key` as `id`.
    pub async fn register(&self, id: &str, key: &SigningKey) -> DeviceId {
        let device_id = DeviceId::new(id).unwrap();
        call(
            &self.client,
            &RegisterDevice {
                device_id: device_id.clone(),
                public_key: key.public_key(),
                mcu: None,
                labels: Default::default(),
            },
            T,
        )
        .await
        .unwrap();
        device_id
    }

    pub fn sim(&self, gateways: Vec<SocketAddr>, key: SigningKey) -> SimDevice {
        let mut config = SimConfig::new(gateways);
        config.backoff_base = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        SimDevice::spawn(self.connector(), Arc::new(config), key)
    }

    pub async fn events(&self, aggregate: AggregateId) -> Vec<Event> {
        self.log
            .read(&aggregate)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.event)
            .collect()
    }

    /// Waits until `aggregate`'s history satisfies `condition`.
    pub async fn wait_events(
        &self,
        aggregate: AggregateId,
        condition: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let events = self.events(aggregate.clone()).await;
            if condition(&events) {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("events never matched: {events:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn wasmbed_gateway_fingerprint(der: &[u8]) -> Sha256 {
    use sha2::Digest;
    Sha256(sha2::Sha256::digest(der).into())
}

/// A device driven by hand: device-core for the handshake, then raw bytes either way.
pub struct RawDevice {
    pub reader: ReadHalf<TlsStream<TcpStream>>,
    pub writer: WriteHalf<TlsStream<TcpStream>>,
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
        let fingerprint = done
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| wasmbed_gateway_fingerprint(&chain[0]))
            .unwrap();
        let (reader, writer) = tokio::io::split(done.stream);
        Self {
            reader,
            writer,
            fingerprint,
            challenge: None,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        let bytes = wasmbed_schemas::frame::codec::encode_to_vec(frame).unwrap();
        self.writer.write_all(&bytes).await.unwrap();
    }

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
