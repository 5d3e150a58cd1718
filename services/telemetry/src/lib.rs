//! The telemetry service: decides from heartbeats which devices are online, records each
//! transition once (`DeviceWentOffline`, `DeviceBackOnline`), counts telemetry per device, and
//! serves the fleet's figures on `/metrics`.
//!
//! Its liveness state is rebuilt at start from the log (the last transition of each device) and
//! from the KV bucket `wasmbed-liveness` (when each device was last heard), so a restart neither
//! repeats nor loses a transition.

mod liveness;
mod metrics;
mod recorder;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use tokio::net::TcpListener;
use tracing::{info, warn};
use wasmbed_eventlog::{LiveReader, ReadModel, ReconnectWatch};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::device_message::{HeartbeatReport, LatestTelemetry};
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AggregateKind, AppId, DeviceId};
use wasmbed_service::{Runtime, RuntimeError, RuntimeOptions};

pub use liveness::{Liveness, Transition};

use crate::metrics::Stats;
use crate::recorder::{Recorder, Saves};

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
    let mut runtime = Runtime::start(client.clone(), "telemetry", &config.runtime).await?;
    let log = runtime.log().clone();
    let mut liveness = Liveness::default();
    let (mut follow, _) = runtime
        .restore_snapshotted(
            vec![subject::events_of_kind(AggregateKind::Device)],
            &mut liveness,
            Liveness::apply,
        )
        .await?;
    let mut snapshots = runtime.snapshot_writer();
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
    let (mut recorder, mut outcomes) = Recorder::start(log.clone(), saved, latest_model);
    let mut sweep = tokio::time::interval(config.sweep_interval);
    let timeout = config.heartbeat_interval * config.missed_heartbeats;
    let mut unsaved: HashSet<DeviceId> = HashSet::new();
    let mut hearing = Hearing::new(&client, started);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(next) = follow.next() => match next {
                Ok((event, _)) => liveness.apply(&event),
                Err(e) => warn!(error = %e, "device event skipped"),
            },
            Some(outcome) = outcomes.recv() => recorder.finished(&mut liveness, outcome),
            Some(message) = heartbeats.next() => {
                heard(&message, &mut liveness, &mut recorder, &mut unsaved);
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
                // Heartbeats already delivered count before silence is judged.
                while let Some(Some(message)) = heartbeats.next().now_or_never() {
                    heard(&message, &mut liveness, &mut recorder, &mut unsaved);
                }
                let now = Utc::now();
                for transition in liveness.due(now, hearing.since(now), timeout) {
                    recorder.record(&liveness, transition);
                }
                if !recorder.saving() {
                    let last_seen = liveness
                        .last_seen()
                        .filter(|(d, _)| unsaved.contains(*d))
                        .map(|(d, at)| (d.clone(), at))
                        .collect();
                    unsaved.clear();
                    let latest = latest
                        .drain()
                        .filter_map(|(_, message)| latest_of(&message))
                        .collect();
                    recorder.save(Saves { last_seen, latest });
                }
                lock(&stats).online = liveness.online();
                if snapshots.due(liveness.followed()) {
                    snapshots.write(liveness.followed(), &liveness);
                }
            }
        }
    }
    recorder.stop().await;
    let _ = stop_http.send(());
    let _ = http.await;
    runtime.stop().await;
    Ok(())
}

/// Takes in one heartbeat report: the device's last-seen time, and its return if it was
/// recorded offline.
fn heard(
    message: &async_nats::Message,
    liveness: &mut Liveness,
    recorder: &mut Recorder,
    unsaved: &mut HashSet<DeviceId>,
) {
    let Ok(report) = serde_json::from_slice::<HeartbeatReport>(&message.payload) else {
        warn!(subject = %message.subject, "heartbeat report does not decode; ignored");
        return;
    };
    if message.subject.as_str() != subject::device_heartbeat(&report.device_id) {
        warn!(subject = %message.subject, "heartbeat report names another device; ignored");
        return;
    }
    unsaved.insert(report.device_id.clone());
    metrics::heartbeat_lag(report.received_at);
    if let Some(transition) = liveness.heard(&report.device_id, report.received_at) {
        recorder.record(liveness, transition);
    }
}

/// Since when the service has been hearing heartbeats without a gap: its start, or the last
/// time its NATS connection was made again (reports published while it was away are lost).
struct Hearing {
    reconnects: ReconnectWatch,
    since: DateTime<Utc>,
}

impl Hearing {
    fn new(client: &async_nats::Client, started: DateTime<Utc>) -> Self {
        Self {
            reconnects: ReconnectWatch::new(client),
            since: started,
        }
    }

    /// The moment hearing began, as of `now`: a reconnect since the last call moves it to now.
    fn since(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.reconnects.reconnected() {
            warn!("the NATS connection was made again: every device gets a full timeout");
            self.since = now;
        }
        self.since
    }
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
