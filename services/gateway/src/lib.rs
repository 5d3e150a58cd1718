//! The gateway: a TLS 1.3 server for devices that authenticates each one and bridges its frames
//! into the bus, and bus messages back to it.
//!
//! - `certificate`: its own key, a certificate from enrollment's CA by CSR, renewal.
//! - `session`: one connection: TLS handshake, `auth`entication, the bridge loop.
//! - `sessions`: the device sessions this gateway holds; replacement and revocation.
//! - `bridge`: what device frames become on the bus.
//! - `http`: `/health`, `/ready`, `/metrics`.
//!
//! The gateway keeps no registry of devices: enrollment decides who may connect.

mod audit;
mod auth;
mod bridge;
mod certificate;
mod config;
mod frames;
mod http;
mod metrics;
mod rate;
mod session;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmbed_service::Runtime;

use futures::StreamExt;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, info, info_span, warn};
use wasmbed_eventlog::refusals::RefusalAudit;
use wasmbed_eventlog::{EventLog, ExpectedVersion};
use wasmbed_schemas::device_message::SessionRevoked;
use wasmbed_schemas::event::{EventEnvelope, GatewayStarted, GatewayStopped};
use wasmbed_schemas::subject;

pub use bridge::telemetry_headers;
pub use certificate::CertificateError;
pub use config::GatewayConfig;

use crate::certificate::CertStore;
use crate::metrics::Metrics;
use crate::rate::Allowances;
use crate::sessions::Sessions;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The service runtime failed (the log).
    #[error(transparent)]
    Runtime(#[from] wasmbed_service::RuntimeError),
    /// No certificate could be obtained.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A subscription the gateway needs was refused.
    #[error("bus: {0}")]
    Bus(String),
}

/// The listeners the gateway serves on, bound by the caller (port 0 in tests).
pub struct Listeners {
    /// Devices: TLS 1.3.
    pub tls: TcpListener,
    /// `/health`, `/ready`, `/metrics`.
    pub http: TcpListener,
}

/// State shared by every session.
pub(crate) struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) client: async_nats::Client,
    pub(crate) log: EventLog,
    pub(crate) certs: Arc<CertStore>,
    pub(crate) metrics: Metrics,
    pub(crate) sessions: Sessions,
    pub(crate) refusals: RefusalAudit,
    pub(crate) allowances: Allowances,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// True while the gateway has been cut off from the bus for longer than the grace.
    pub(crate) bus_lost: watch::Receiver<bool>,
    pub(crate) ready: AtomicBool,
}

/// Watches the bus connection: once it has been down for `grace`, says the gateway is cut off
/// (its sessions then send their devices away), and says so no more once it is back.
async fn watch_bus(client: async_nats::Client, cut_off: watch::Sender<bool>, grace: Duration) {
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let now = tokio::time::Instant::now();
        down_since = if connected {
            None
        } else {
            Some(down_since.unwrap_or(now))
        };
        let lost = down_since.is_some_and(|since| now.duration_since(since) >= grace);
        if *cut_off.borrow() != lost {
            if lost {
                warn!(
                    ?grace,
                    "cut off from the bus: sending devices to other gateways"
                );
            } else {
                info!("the bus is back: taking devices again");
            }
            let _ = cut_off.send(lost);
        }
        if cut_off.is_closed() {
            return;
        }
    }
}

/// Ends the session of every device enrollment revokes while this gateway holds it.
async fn end_revoked_sessions(gw: Arc<Gateway>, mut revocations: async_nats::Subscriber) {
    while let Some(message) = revocations.next().await {
        match serde_json::from_slice::<SessionRevoked>(&message.payload) {
            Ok(revoked) => {
                if gw.sessions.revoke(&revoked.device_id, revoked.reason) {
                    info!(device = %revoked.device_id, "session ended: device revoked");
                }
            }
            Err(e) => warn!(error = %e, "revocation does not decode; ignored"),
        }
    }
}

/// ring, with the TLS 1.3 suites in the order the gateway prefers.
fn tls_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    }
}

/// The most plaintext the gateway puts in one TLS record (the device firmware's read buffer
/// holds one record).
pub const RECORD_PLAINTEXT_MAX: usize = 2048;

/// The gateway's TLS settings, serving the certificate `certificates` picks (public so the
/// gateway benchmark measures bare TLS with exactly these).
pub fn tls_server_config(
    certificates: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<ServerConfig, rustls::Error> {
    let mut tls = ServerConfig::builder_with_provider(Arc::new(tls_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    // Our order, not the client's: AES-128-GCM with SHA-256 first (hardware SHA-256 here,
    // and what small TLS clients such as embedded-tls implement).
    tls.ignore_client_order = true;
    // Devices never resume sessions: no tickets to mint, store or send.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // Each connection's Challenge is written before the handshake ends; it leaves with the
    // server's Finished instead of waiting for the client's.
    tls.send_half_rtt_data = true;
    // Records of at most 2 KiB of plaintext: a device then needs a 2 KiB read buffer, not 16
    // KiB, and can hold a whole record in its serial link before reading it, which is what
    // lets the firmware run on a 192 KiB part. A module travels in 8 KiB chunks anyway.
    tls.max_fragment_size = Some(RECORD_PLAINTEXT_MAX);
    Ok(tls)
}

/// Runs the gateway until `shutdown` completes, then tells every device to reconnect later,
/// waits up to the grace period for sessions to close, and records `GatewayStopped`.
pub async fn run(
    client: async_nats::Client,
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let mut runtime = Runtime::start(client.clone(), "gateway", &config.runtime).await?;
    let log = runtime.log().clone();
    let key = rcgen::KeyPair::generate().map_err(CertificateError::Request)?;
    let issued = certificate::request_until_issued(&client, &config, &key).await?;
    let certs = Arc::new(CertStore::new(issued));
    let acceptor = TlsAcceptor::from(Arc::new(tls_server_config(certs.clone())?));
    let (stop_sessions, stopping) = watch::channel(false);
    let (cut_off, bus_lost) = watch::channel(false);
    let gw = Arc::new(Gateway {
        client: client.clone(),
        log,
        certs: certs.clone(),
        metrics: Metrics::new(config.gateway_id.as_str()),
        sessions: Sessions::default(),
        refusals: RefusalAudit::new(config.audit_window, config.audit_in_full),
        allowances: Allowances::new(rate::Limits {
            bytes_per_second: config.uplink_bytes_per_second,
            burst_bytes: config.uplink_burst_bytes,
            sessions_per_second: config.sessions_per_second,
            session_burst: config.session_burst,
        }),
        shutdown: stopping,
        bus_lost,
        ready: AtomicBool::new(false),
        config: config.clone(),
    });
    runtime.spawn(certificate::renew_forever(
        client,
        config.clone(),
        key,
        certs.clone(),
    ));
    // Decommissioned devices lose their session at once, not at their next connection.
    let revocations = gw
        .client
        .subscribe(subject::DEVICE_REVOKED_ALL)
        .await
        .map_err(|e| GatewayError::Bus(e.to_string()))?;
    runtime.spawn(end_revoked_sessions(gw.clone(), revocations));
    runtime.spawn(watch_bus(gw.client.clone(), cut_off, config.bus_loss_grace));
    let auditor = gw.clone();
    runtime.spawn(async move { auditor.refusals.close_windows(&auditor.log).await });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(http::serve(gw.clone(), listeners.http, async move {
        let _ = http_stopped.await;
    }));

    let endpoint = match &config.advertised_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => listeners.tls.local_addr()?.to_string(),
    };
    let started = GatewayStarted {
        gateway_id: config.gateway_id.clone(),
        endpoint: endpoint.clone(),
        certificate_sha256: certs.fingerprints().0,
    };
    if let Err(e) = gw
        .log
        .append(ExpectedVersion::Any, &EventEnvelope::new(started.into()))
        .await
    {
        warn!(error = %e, "GatewayStarted not recorded");
    }
    gw.ready.store(true, Ordering::Relaxed);
    info!(gateway = %config.gateway_id, %endpoint, "gateway serving devices");

    let permits = Arc::new(Semaphore::new(config.max_sessions));
    // Sessions belong to this future: if it is dropped, they end with it.
    let mut sessions: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = listeners.tls.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        gw.metrics.connections.inc();
        // Cut off from the bus, a session could not authenticate nor reach anything: closed at
        // once, so the device tries its next gateway.
        if *gw.bus_lost.borrow() {
            gw.metrics.cut_off.inc();
            drop(tcp);
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            gw.metrics.over_capacity.inc();
            drop(tcp);
            continue;
        };
        sessions.spawn(session::serve_connection(
            gw.clone(),
            acceptor.clone(),
            tcp,
            remote,
            permit,
        ));
    }

    gw.ready.store(false, Ordering::Relaxed);
    drop(listeners.tls);
    let open = gw.sessions.len();
    info!(open, "gateway shutting down");
    let _ = stop_sessions.send(true);
    wasmbed_bus::drain(&mut sessions, config.shutdown_grace).await;
    let stopped = GatewayStopped {
        gateway_id: config.gateway_id.clone(),
    };
    if let Err(e) = gw
        .log
        .append(ExpectedVersion::Any, &EventEnvelope::new(stopped.into()))
        .await
    {
        warn!(error = %e, "GatewayStopped not recorded");
    }
    runtime.stop().await;
    let _ = stop_http.send(());
    let _ = http.instrument(info_span!("http")).await;
    Ok(())
}
