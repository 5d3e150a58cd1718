//! The telemetry service: decides from heartbeats which devices are online, records each
//! transition once (`DeviceWentOffline`, `DeviceBackOnline`), counts telemetry per device, and
//! serves the fleet's figures on `/metrics`.
//!
//! Its liveness state is rebuilt at start from the log (the last transition of each device) and
//! from the KV bucket `wasmbed-liveness` (when each device was last heard), so a restart neither
//! repeats nor loses a transition.

mod liveness;
mod metrics;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::net::TcpListener;
use tracing::{info, warn};
use wasmbed_eventlog::{EventLog, ExpectedVersion, LiveReader, ReadModel};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::device_message::{HeartbeatReport, LatestTelemetry};
use wasmbed_schemas::event::{DeviceBackOnline, DeviceWentOffline, EventEnvelope};
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AggregateKind, AppId, DeviceId};
use wasmbed_service::{Runtime, RuntimeError, RuntimeOptions};

pub use liveness::{Liveness, Transition};

use crate::metrics::Stats;

/// The KV bucket of last-seen times.
pub const LIVENESS_BUCKET: &str = wasmbed_schemas::subject::LIVENESS_BUCKET;

/// Settings of the telemetry service.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The heartbeat interval gateways tell devices.
    pub heartbeat_interval: Duration,
    /// A device silent for this many intervals is offline.
    pub missed_heartbeats: u32,
    /// How often silence is checked and last-seen times are saved.
    pub sweep_interval: Duration,
    /// Replicas, drain grace (its own HTTP serves `/health`).
    pub runtime: RuntimeOptions,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            sweep_interval: Duration::from_secs(1),
            runtime: RuntimeOptions::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The service runtime failed (log, follow).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading the device history failed.
    #[error(transparent)]
    Read(#[from] wasmbed_eventlog::ReadError),
    /// The liveness bucket could not be used.
    #[error(transparent)]
    ReadModel(#[from] wasmbed_eventlog::ReadModelError),
    /// Subscribing failed.
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The telemetry stream could not be read.
    #[error("telemetry stream: {0}")]
    Consumer(String),
    /// The metrics listener failed.
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the service until `shutdown` completes, serving `/health` and `/metrics` on `http`.
pub async fn run(
    client: async_nats::Client,
    config: TelemetryConfig,
    http: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TelemetryError> {
    let started = Utc::now();
    let runtime = Runtime::start(client.clone(), "telemetry", &config.runtime).await?;
    let log = runtime.log().clone();
    let mut liveness = Liveness::default();
    let mut follow = runtime
        .restore(
            vec![subject::events_of_kind(AggregateKind::Device)],
            &mut liveness,
            Liveness::apply,
        )
        .await?;
    let saved: ReadModel<DateTime<Utc>> = log.read_model(LIVENESS_BUCKET).await?;
    for key in saved.keys().await? {
        if let (Ok(device), Ok(Some(at))) = (DeviceId::new(key.as_str()), saved.get(&key).await) {
            liveness.restore_last_seen(&device, at.value);
        }
    }
    info!(online = liveness.online(), "liveness state rebuilt");

    let mut heartbeats = client.subscribe(subject::DEVICE_HEARTBEAT_ALL).await?;
    // Telemetry is read from its stream, not a plain subscription: nothing is dropped when the
    // service falls behind, and how far behind it is stays measurable.
    // An ordered consumer (no acks, flow-controlled, re-created on a gap or a server restart)
    // starting right after what the stream holds now: the starting point is the moment the
    // service subscribed.
    let mut stream = log
        .jetstream()
        .get_stream(subject::TELEMETRY_STREAM)
        .await
        .map_err(|e| TelemetryError::Consumer(e.to_string()))?;
    let now = stream
        .info()
        .await
        .map_err(|e| TelemetryError::Consumer(e.to_string()))?
        .state
        .last_sequence;
    let (mut telemetry, _) = LiveReader::start(&client, stream, Vec::new(), now)
        .await
        .map_err(|e| TelemetryError::Consumer(e.to_string()))?;
    let latest_model: ReadModel<LatestTelemetry> =
        log.read_model(subject::TELEMETRY_LATEST_BUCKET).await?;
    // The newest message per telemetry subject, turned into `LatestTelemetry` only when saved.
    let mut latest: HashMap<String, async_nats::jetstream::Message> = HashMap::new();
    // HTTP answers only once everything above is subscribed: a caller that waits for it and
    // then publishes loses nothing.
    let stats = Arc::new(Mutex::new(Stats::default()));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(metrics::serve(http, stats.clone(), async move {
        let _ = http_stopped.await;
    }));
    let mut sweep = tokio::time::interval(config.sweep_interval);
    let timeout = config.heartbeat_interval * config.missed_heartbeats;
    let mut unsaved: HashSet<DeviceId> = HashSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(next) = follow.next() => match next {
                Ok((event, _)) => liveness.apply(&event),
                Err(e) => warn!(error = %e, "device event skipped"),
            },
            Some(message) = heartbeats.next() => {
                let Ok(report) = serde_json::from_slice::<HeartbeatReport>(&message.payload) else {
                    warn!(subject = %message.subject, "heartbeat report does not decode; ignored");
                    continue;
                };
                if message.subject.as_str() != subject::device_heartbeat(&report.device_id) {
                    warn!(subject = %message.subject, "heartbeat report names another device; ignored");
                    continue;
                }
                unsaved.insert(report.device_id.clone());
                if let Some(transition) = liveness.heard(&report.device_id, report.received_at) {
                    record(&log, &mut liveness, transition).await;
                }
            }
            Some(message) = telemetry.next() => {
                let message = match message {
                    Ok(message) => message,
                    Err(e) => {
                        warn!(error = %e, "telemetry stream read failed");
                        continue;
                    }
                };
                let Some((device, _)) = subject::parse_telemetry(message.subject.as_str()) else {
                    continue;
                };
                lock(&stats).telemetry(device, message.payload.len() as u64, Utc::now());
                if let Some(slot) = latest.get_mut(message.subject.as_str()) {
                    *slot = message;
                } else {
                    latest.insert(message.subject.to_string(), message);
                }
            }
            _ = sweep.tick() => {
                for transition in liveness.due(Utc::now(), started, timeout) {
                    record(&log, &mut liveness, transition).await;
                }
                for (device, at) in liveness.last_seen().filter(|(d, _)| unsaved.contains(*d)) {
                    if let Err(e) = saved.put(device.as_str(), &at).await {
                        warn!(error = %e, "last-seen time not saved");
                    }
                }
                unsaved.clear();
                for value in latest.drain().filter_map(|(_, message)| latest_of(&message)) {
                    let key = format!("{}.{}", value.device_id, value.app_id);
                    if let Err(e) = latest_model.put(&key, &value).await {
                        warn!(error = %e, "latest telemetry not saved");
                    }
                }
                lock(&stats).online = liveness.online();
            }
        }
    }
    let _ = stop_http.send(());
    let _ = http.await;
    runtime.stop().await;
    Ok(())
}

/// The device, app and content of a telemetry message, from the headers the gateway sets.
fn latest_of(message: &async_nats::jetstream::Message) -> Option<LatestTelemetry> {
    let headers = message.headers.as_ref()?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let received_at = message.info().map_or_else(
        |_| Utc::now(),
        |info| DateTime::from_timestamp_nanos(info.published.unix_timestamp_nanos() as i64),
    );
    Some(LatestTelemetry {
        device_id: DeviceId::new(get(header::DEVICE)?).ok()?,
        app_id: AppId::new(get(header::APP)?).ok()?,
        seq: get(header::SEQUENCE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        topic: get(header::TOPIC).unwrap_or_default(),
        payload: Blob(message.payload.to_vec()),
        received_at,
    })
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends a transition under its derived id (another instance recording the same transition
/// is de-duplicated by the log); marks it recorded only once the log has it, so a failure is
/// retried.
async fn record(log: &EventLog, liveness: &mut Liveness, transition: Transition) {
    let event = match &transition {
        Transition::WentOffline { device, last_seen } => DeviceWentOffline {
            device_id: device.clone(),
            last_seen: *last_seen,
        }
        .into(),
        Transition::BackOnline { device } => DeviceBackOnline {
            device_id: device.clone(),
        }
        .into(),
    };
    let mut envelope = EventEnvelope::new(event);
    envelope.event_id = liveness.event_id(&transition);
    envelope.correlation_id = envelope.event_id;
    match log.append(ExpectedVersion::Any, &envelope).await {
        Ok(appended) => {
            info!(?transition, "liveness transition recorded");
            liveness.recorded(&transition, appended.sequence);
        }
        Err(e) => warn!(error = %e, ?transition, "liveness transition not recorded; will retry"),
    }
}
