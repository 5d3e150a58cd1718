//! One simulated device.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};
use wasmbed_device_core::{
    Agent, AgentConfig, Backoff, CloseReason, Session, SessionConfig, SessionEvent, Signer,
};
use wasmbed_schemas::frame::Frame;
use wasmbed_schemas::{DeviceId, Nonce, PublicKey};

use crate::Connector;

/// How simulated devices behave.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Gateways to try, in turn.
    pub gateways: Vec<SocketAddr>,
    /// The protocol settings of each session.
    pub session: SessionConfig,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// TCP + TLS must succeed within this.
    pub connect_timeout: Duration,
    /// Local addresses to connect from, one picked at random per connection (empty: the
    /// system's choice).
    pub source_ips: Vec<IpAddr>,
    /// What the device reports about itself and how much its app runtime accepts.
    pub agent: AgentConfig,
}

/// The simulated device's profile: a roomy Cortex-M-class budget.
pub fn default_agent_config() -> AgentConfig {
    AgentConfig {
        mcu: "Simulated".into(),
        firmware: concat!("wasmbed-sim ", env!("CARGO_PKG_VERSION")).into(),
        app_ram_bytes: 512 * 1024,
        max_module_len: 512 * 1024,
        value_stack_bytes: 1024 * 1024,
        status_interval_ms: 10_000,
        publishers: Vec::new(),
        trust_serial: 0,
    }
}

impl SimConfig {
    /// Defaults for devices dialling `gateways`.
    pub fn new(gateways: Vec<SocketAddr>) -> Self {
        Self {
            gateways,
            session: SessionConfig::default(),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            source_ips: Vec::new(),
            agent: default_agent_config(),
        }
    }
}

/// What a simulated device is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The id the gateway welcomed it with.
    pub device_id: Option<DeviceId>,
    /// It holds an authenticated session now.
    pub connected: bool,
    /// Authenticated sessions so far.
    pub sessions: u32,
    /// Why the last session ended.
    pub last_close: Option<CloseReason>,
    /// The last connection failure.
    pub last_error: Option<String>,
}

/// Fresh bytes from the OS random source. Without one there is no safe identity or nonce, so
/// this stops the program rather than hand out predictable bytes.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the OS random source failed ({e}); refusing to make predictable keys or nonces");
    }
    bytes
}

/// A fresh random Ed25519 key.
pub fn random_key() -> SigningKey {
    SigningKey::from_bytes(&random_bytes())
}

fn random_u32() -> u32 {
    u32::from_le_bytes(random_bytes())
}

enum Command {
    Send(Frame),
}

/// A running simulated device.
pub struct SimDevice {
    public_key: PublicKey,
    status: watch::Receiver<DeviceStatus>,
    commands: mpsc::Sender<Command>,
    inbox: mpsc::Receiver<Frame>,
    task: JoinHandle<()>,
}

/// How one session ended, for the reconnect decision.
enum Ended {
    /// Reconnect after a back-off, or after the gateway's requested delay.
    Retry(Option<Duration>),
    /// The device was stopped.
    Stop,
}

impl SimDevice {
    /// Starts the device: it connects, authenticates and stays connected until stopped.
    pub fn spawn(connector: Connector, config: Arc<SimConfig>, key: SigningKey) -> Self {
        let public_key = key.public_key();
        let (status_tx, status) = watch::channel(DeviceStatus::default());
        let (commands, commands_rx) = mpsc::channel(256);
        let (inbox_tx, inbox) = mpsc::channel(256);
        let span = info_span!("sim_device", key = %public_key);
        let task = tokio::spawn(
            run(connector, config, key, status_tx, commands_rx, inbox_tx).instrument(span),
        );
        Self {
            public_key,
            status,
            commands,
            inbox,
            task,
        }
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// What it is doing now.
    pub fn status(&self) -> DeviceStatus {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds, for at most `timeout`.
    pub async fn wait_for(
        &mut self,
        condition: impl Fn(&DeviceStatus) -> bool,
        timeout: Duration,
    ) -> Result<DeviceStatus, DeviceStatus> {
        let reached =
            match tokio::time::timeout(timeout, self.status.wait_for(|s| condition(s))).await {
                Ok(Ok(status)) => Some(status.clone()),
                _ => None,
            };
        reached.ok_or_else(|| self.status())
    }

    /// Sends a frame in the current session (dropped when not connected, like a device would).
    pub async fn send(&self, frame: Frame) {
        let _ = self.commands.send(Command::Send(frame)).await;
    }

    /// The next frame the gateway sent to the application.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        tokio::time::timeout(timeout, self.inbox.recv())
            .await
            .ok()
            .flatten()
    }

    /// Stops the device and closes its connection.
    pub async fn stop(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

async fn run(
    connector: Connector,
    config: Arc<SimConfig>,
    key: SigningKey,
    status: watch::Sender<DeviceStatus>,
    mut commands: mpsc::Receiver<Command>,
    inbox: mpsc::Sender<Frame>,
) {
    let mut backoff = Backoff::new(
        config.backoff_base.as_millis() as u64,
        config.backoff_max.as_millis() as u64,
    );
    let epoch = Instant::now();
    // The agent outlives sessions: a cut transfer resumes, running apps stay loaded.
    let mut agent = Agent::new(config.agent.clone());
    for attempt in 0usize.. {
        let Some(addr) = config.gateways.get(attempt % config.gateways.len().max(1)) else {
            return;
        };
        let ended = session(
            &connector,
            &config,
            &key,
            *addr,
            epoch,
            &mut backoff,
            &mut agent,
            &status,
            &mut commands,
            &inbox,
        )
        .await;
        let delay = match ended {
            Ended::Stop => return,
            Ended::Retry(Some(asked)) => asked,
            Ended::Retry(None) => Duration::from_millis(backoff.next_delay_ms(random_u32())),
        };
        debug!(?delay, "reconnecting");
        // Wait, but stop at once if asked to.
        let stop = async {
            loop {
                match commands.recv().await {
                    Some(Command::Send(_)) => continue,
                    None => return,
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop => return,
        }
    }
}

/// Bytes the stream already holds, read without waiting. The gateway sends its Challenge with
/// the TLS handshake, so it is usually here the moment the handshake completes; taking it
/// before the first write lets Hello and Auth leave together.
pub(crate) fn already_received<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Option<usize> {
    // One poll, no waiting: a later read registers its own waker, and nothing is lost if
    // nothing is there (tokio-rustls keeps what it has read in the stream).
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut read = tokio::io::ReadBuf::new(buf);
    match std::pin::Pin::new(reader).poll_read(&mut cx, &mut read) {
        std::task::Poll::Ready(Ok(())) if !read.filled().is_empty() => Some(read.filled().len()),
        _ => None,
    }
}

/// Writes and flushes: TLS records must leave rustls' buffer now, not with the next write.
async fn write<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

#[allow(clippy::too_many_arguments)]
async fn session(
    connector: &Connector,
    config: &SimConfig,
    key: &SigningKey,
    addr: SocketAddr,
    epoch: Instant,
    backoff: &mut Backoff,
    agent: &mut Agent,
    status: &watch::Sender<DeviceStatus>,
    commands: &mut mpsc::Receiver<Command>,
    inbox: &mpsc::Sender<Frame>,
) -> Ended {
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let source = match config.source_ips.len() {
        0 => None,
        n => config.source_ips.get(random_u32() as usize % n).copied(),
    };
    let (tls, fingerprint) = match connector
        .connect(addr, source, config.connect_timeout)
        .await
    {
        Ok(connected) => connected,
        Err(e) => {
            status.send_modify(|s| s.last_error = Some(e.to_string()));
            return Ended::Retry(None);
        }
    };
    let (mut reader, mut writer) = tokio::io::split(tls);
    let mut session = Session::new(
        config.session.clone(),
        key.clone(),
        Nonce(random_bytes()),
        fingerprint,
        now_ms(),
    );
    let mut buf = vec![0u8; 4096];
    if let Some(n) = already_received(&mut reader, &mut buf) {
        session.handle_input(&buf[..n], now_ms());
    }
    loop {
        for frame in agent.take_frames() {
            // Dropped while not established, as a device without a link would.
            let _ = session.send(&frame);
        }
        let out = session.take_outbound();
        if !out.is_empty() && write(&mut writer, &out).await.is_err() {
            status.send_modify(|s| {
                s.connected = false;
                s.last_error = Some("write failed".into());
            });
            return Ended::Retry(None);
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Established { device_id } => {
                    backoff.reset();
                    agent.on_established(&device_id);
                    status.send_modify(|s| {
                        s.device_id = Some(device_id);
                        s.connected = true;
                        s.sessions += 1;
                    });
                }
                SessionEvent::Frame(frame) => {
                    agent.handle_frame(frame.clone(), now_ms());
                    let _ = inbox.try_send(frame);
                }
                SessionEvent::Closed(reason) => {
                    let asked = match &reason {
                        CloseReason::GoAway(go_away) => {
                            Some(Duration::from_millis(u64::from(go_away.reconnect_after_ms)))
                        }
                        _ => None,
                    };
                    status.send_modify(|s| {
                        s.connected = false;
                        s.last_close = Some(reason);
                    });
                    let _ = writer.shutdown().await;
                    return Ended::Retry(asked);
                }
            }
        }
        if agent.has_frames() && session.is_established() {
            // What the agent answered goes out now, not with the next heartbeat.
            continue;
        }
        let mut wake_ms = session.poll_timeout().unwrap_or(now_ms() + 3_600_000);
        if session.is_established() {
            wake_ms = wake_ms.min(agent.next_wake());
        }
        let wake = epoch + Duration::from_millis(wake_ms);
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(n) if n > 0 => session.handle_input(&buf[..n], now_ms()),
                _ => {
                    status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some("connection closed by the gateway".into());
                    });
                    return Ended::Retry(None);
                }
            },
            () = tokio::time::sleep_until(wake) => {
                let now = now_ms();
                session.handle_timeout(now);
                if session.is_established() {
                    agent.poll(now);
                }
            }
            command = commands.recv() => match command {
                Some(Command::Send(frame)) => {
                    let _ = session.send(&frame);
                    // Whatever else is queued goes out in the same write.
                    while let Ok(Command::Send(frame)) = commands.try_recv() {
                        if session.send(&frame).is_err() {
                            break;
                        }
                    }
                }
                None => {
                    let _ = writer.shutdown().await;
                    status.send_modify(|s| s.connected = false);
                    return Ended::Stop;
                }
            },
        }
    }
}
