//! Gateway settings.

use std::time::Duration;
use wasmbed_service::RuntimeOptions;

use wasmbed_schemas::GatewayId;

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This gateway's id (in events, in the signed transcript).
    pub gateway_id: GatewayId,
    /// `host:port` devices dial, announced in `GatewayStarted`; the TLS listener's address
    /// when unset.
    pub advertised_endpoint: Option<String>,
    /// Names and addresses the TLS certificate is issued for.
    pub subject_alt_names: Vec<String>,
    /// How often devices must send a heartbeat (told to them in `Welcome`).
    pub heartbeat_interval: Duration,
    /// A device silent for this many intervals is disconnected.
    pub missed_heartbeats: u32,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Authentication (Hello to Welcome) must finish within this.
    pub auth_timeout: Duration,
    /// A write to a device that does not read is given up after this.
    pub write_timeout: Duration,
    /// How long to wait for enrollment's answers.
    pub request_timeout: Duration,
    /// Connections beyond this many are closed at once.
    pub max_sessions: usize,
    /// On shutdown, how long sessions get to say goodbye.
    pub shutdown_grace: Duration,
    /// On shutdown, how long devices are told to wait before reconnecting.
    pub reconnect_after: Duration,
    /// Cut off from the bus this long, the gateway sends its devices away (to another gateway)
    /// and closes new connections at once, until the bus is back.
    pub bus_loss_grace: Duration,
    /// Refusals are audited per window of this length: ...
    pub audit_window: Duration,
    /// ... the first this many of each reason from each source in full, the rest counted
    /// into one `RefusalsCounted` when the window ends.
    pub audit_in_full: u32,
    /// Each session may send this many bytes per second to the gateway, sustained (every frame
    /// counts its length plus 64); a device over its budget is disconnected.
    pub uplink_bytes_per_second: u64,
    /// ... and this many at once. The budget is the device's, not the session's: a new
    /// session of the device continues from what the last one left.
    pub uplink_burst_bytes: u64,
    /// A device may open this many sessions per second, sustained ...
    pub sessions_per_second: f64,
    /// ... and this many at once; past that it is refused (`RateLimited`) before any event is
    /// written for it.
    pub session_burst: u32,
    /// Replicas (its own HTTP serves `/health` and `/ready`; sessions drain for
    /// `shutdown_grace`).
    pub runtime: RuntimeOptions,
}

impl GatewayConfig {
    /// Defaults for a gateway called `gateway_id`, certified for `localhost` and `127.0.0.1`.
    pub fn new(gateway_id: GatewayId) -> Self {
        Self {
            gateway_id,
            advertised_endpoint: None,
            subject_alt_names: vec!["localhost".into(), "127.0.0.1".into()],
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            handshake_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_sessions: 200_000,
            shutdown_grace: Duration::from_secs(5),
            reconnect_after: Duration::from_millis(500),
            bus_loss_grace: Duration::from_secs(3),
            audit_window: Duration::from_secs(10),
            audit_in_full: 3,
            uplink_bytes_per_second: 1024 * 1024,
            uplink_burst_bytes: 2 * 1024 * 1024,
            sessions_per_second: 1.0,
            session_burst: 10,
            runtime: RuntimeOptions::default(),
        }
    }

    /// What every session of this gateway is decided by.
    pub(crate) fn session_rules(&self) -> crate::session::Rules {
        crate::session::Rules {
            heartbeat_interval: self.heartbeat_interval,
            missed_heartbeats: self.missed_heartbeats,
            reconnect_after: self.reconnect_after,
            uplink_bytes_per_second: self.uplink_bytes_per_second,
            uplink_burst_bytes: self.uplink_burst_bytes,
        }
    }
}
