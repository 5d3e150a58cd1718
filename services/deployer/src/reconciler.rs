//! The reconciler: closes the gap between what should run and what each device has.
//!
//! One task owns the in-flight steps ([`Link`]s) and is fed by three inputs: the log follower
//! (events from any service), the devices' uplink frames (acks and app statuses), and the
//! command handlers (what they recorded). Each input marks (app, device) pairs dirty; the pass
//! over dirty pairs decides events to record and frames to send. Events are recorded with a
//! concurrency check on the deployment's version, so two decisions on a stale view cannot both
//! land.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};
use wasmbed_eventlog::{ExpectedVersion, Follow, ReadModel, StoredEvent};
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{
    DeploymentDelivered, DeploymentFailed, DeploymentRefused, DeploymentRequested,
    DeploymentRunning, DeploymentStopRequested, DeploymentStopped, DeploymentTransferStarted,
    DeviceDescribed, Event, EventEnvelope,
};
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::{
    AppState, AppStatus, Deploy, DeviceInfo, ErrorFrame, Frame, FrameErrorCode, MODULE_CHUNK_LEN,
    ModuleAck, ModuleBegin, ModuleChunk, ModuleCommit, Stop,
};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, Sha256, subject};

use crate::Deployer;
use crate::fleet::{Fleet, Pair, Phase, Touched};

/// The step in flight for one pair in the device's current session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `ModuleBegin` sent; waiting for the device to say how much it holds.
    Begin,
    /// Chunks and commit sent; waiting for the verified ack.
    Streaming,
    /// `Deploy` sent; waiting for the app's status.
    Deploy,
    /// `Stop` sent; waiting for the stopped status.
    Stop,
    /// The device confirmed what the log says; nothing to do this session.
    Settled,
    /// A step failed; start again after the back-off.
    Retry,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    step: Step,
    since: Instant,
    attempts: u32,
}

/// What one pass decided: events to record, then frames to send.
#[derive(Default)]
struct Effects {
    appends: Vec<(ExpectedVersion, EventEnvelope)>,
    pairs: HashSet<Pair>,
    sends: Vec<(DeviceId, Frame)>,
    streams: Vec<Stream>,
}

/// Chunks and commit of a module to a device, from an offset.
struct Stream {
    pair: Pair,
    sha256: Sha256,
    from: u32,
}

impl Effects {
    fn record(&mut self, expected: u64, pair: &Pair, event: Event) {
        self.pairs.insert(pair.clone());
        self.appends.push((
            ExpectedVersion::Exactly(expected),
            EventEnvelope::new(event),
        ));
    }

    fn touches(&self, pair: &Pair) -> bool {
        self.pairs.contains(pair)
    }

    fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.sends.is_empty() && self.streams.is_empty()
    }
}

fn deployment(pair: &Pair) -> AggregateId {
    AggregateId::Deployment {
        app: pair.0.clone(),
        device: pair.1.clone(),
    }
}

/// Uplink messages handled before the effects are carried out together.
const UPLINK_BATCH: usize = 512;

pub(crate) struct Reconciler {
    state: Arc<Deployer>,
    client: async_nats::Client,
    statuses: mpsc::Sender<DeploymentStatus>,
    status_model: Option<ReadModel<DeploymentStatus>>,
    links: HashMap<Pair, Link>,
    dirty: HashSet<Pair>,
}

impl Reconciler {
    pub(crate) fn new(
        state: Arc<Deployer>,
        client: async_nats::Client,
        status_model: ReadModel<DeploymentStatus>,
    ) -> Self {
        let (statuses, _) = mpsc::channel(1);
        Self {
            state,
            client,
            statuses,
            status_model: Some(status_model),
            links: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut follow: Follow,
        mut uplink: async_nats::Subscriber,
        mut touched: mpsc::UnboundedReceiver<Touched>,
    ) {
        if let Some(model) = self.status_model.take() {
            self.statuses = spawn_status_writer(model);
        }
        let everything: Vec<Pair> = {
            let fleet = self.state.fleet();
            fleet
                .apps
                .keys()
                .flat_map(|app| fleet.devices.keys().map(move |d| (app.clone(), d.clone())))
                .collect()
        };
        self.dirty.extend(everything);
        self.reconcile().await;
        let mut timer = tokio::time::interval(Duration::from_millis(250));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = follow.next() => match next {
                    Some(Ok((event, _))) => {
                        let t = self.state.fleet().apply(&event);
                        self.mark(t);
                    }
                    Some(Err(e)) => warn!(error = %e, "event skipped"),
                    None => {
                        warn!("event log follow ended; reconciler stops");
                        return;
                    }
                },
                Some(t) = touched.recv() => self.mark(t),
                message = uplink.next() => match message {
                    Some(message) => {
                        let mut batch = vec![message];
                        while batch.len() < UPLINK_BATCH {
                            match uplink.next().now_or_never() {
                                Some(Some(m)) => batch.push(m),
                                _ => break,
                            }
                        }
                        self.uplink_batch(batch).await;
                    }
                    None => {
                        warn!("uplink subscription ended; reconciler stops");
                        return;
                    }
                },
                _ = timer.tick() => self.expire(),
            }
            self.reconcile().await;
        }
    }

    fn mark(&mut self, touched: Touched) {
        match touched {
            Touched::Nothing => {}
            Touched::Pair(pair) => {
                self.dirty.insert(pair);
            }
            Touched::App(app) => {
                let fleet = self.state.fleet();
                self.dirty
                    .extend(fleet.devices.keys().map(|d| (app.clone(), d.clone())));
            }
            Touched::Device { device, session } => {
                if session {
                    // Whatever was in flight went to a session that is gone.
                    self.links.retain(|(_, d), _| *d != device);
                }
                let fleet = self.state.fleet();
                self.dirty
                    .extend(fleet.apps.keys().map(|a| (a.clone(), device.clone())));
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.state.config.step_timeout;
        (base * 2u32.saturating_pow(attempts.min(6))).min(Duration::from_secs(60))
    }

    /// Steps that waited too long are retried.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<Pair> = self
            .links
            .iter()
            .filter(|(_, l)| l.step != Step::Settled && now >= l.since + self.backoff(l.attempts))
            .map(|(p, _)| p.clone())
            .collect();
        for pair in expired {
            let attempts = self.links.get(&pair).map_or(0, |l| l.attempts);
            let due = now.checked_sub(self.backoff(attempts)).unwrap_or(now);
            if let Some(link) = self.links.get_mut(&pair) {
                debug!(app = %pair.0, device = %pair.1, step = ?link.step, "step timed out");
                link.step = Step::Retry;
                link.since = due;
            }
            self.dirty.insert(pair);
        }
    }

    /// A link may (re)start a step when there is none, or its retry is due.
    fn may_start(&self, pair: &Pair, now: Instant) -> bool {
        match self.links.get(pair) {
            None => true,
            Some(l) => l.step == Step::Retry && now >= l.since + self.backoff(l.attempts),
        }
    }

    fn start(&mut self, pair: &Pair, step: Step, now: Instant) {
        let attempts = self
            .links
            .get(pair)
            .filter(|l| l.step == Step::Retry)
            .map_or(0, |l| l.attempts + 1);
        self.links.insert(
            pair.clone(),
            Link {
                step,
                since: now,
                attempts,
            },
        );
    }

    /// Decides for every dirty pair until nothing more changes.
    async fn reconcile(&mut self) {
        // Each round records events; applying them can dirty pairs again. A round that
        // records nothing ends it; the bound only guards against a bug looping forever.
        for _ in 0..16 {
            if self.dirty.is_empty() {
                return;
            }
            let pairs: Vec<Pair> = self.dirty.drain().collect();
            let mut effects = Effects::default();
            let now = Instant::now();
            {
                let state = self.state.clone();
                let fleet = state.fleet();
                for pair in &pairs {
                    self.decide(&fleet, pair, now, &mut effects);
                }
            }
            if effects.is_empty() {
                return;
            }
            self.execute(effects).await;
        }
    }

    fn decide(&mut self, fleet: &Fleet, pair: &Pair, now: Instant, fx: &mut Effects) {
        let (app_id, device_id) = pair;
        let Some(device) = fleet.devices.get(device_id) else {
            return;
        };
        let app = fleet.apps.get(app_id);
        let dep = fleet.deployments.get(pair);
        let version = fleet.version(&deployment(pair));
        let want = app
            .filter(|a| a.targets(device_id, device))
            .and_then(|a| a.running_version());
        let connected = device.connected();

        match (want, app, dep) {
            (Some(v), Some(app), dep)
                if dep.is_none_or(|d| {
                    d.version != v || matches!(d.phase, Phase::Stopped | Phase::StopRequested)
                }) =>
            {
                let budget = device
                    .app_ram_bytes
                    .unwrap_or(self.state.config.default_app_ram_bytes);
                let needs = u64::from(app.limits.max_memory_pages) * 64 * 1024;
                let event: Event = if needs > u64::from(budget) {
                    DeploymentRefused {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                        version: v,
                        reason: format!(
                            "needs up to {} KiB of memory (limits.max_memory_pages = {}), \
                             the device has {} KiB for apps",
                            needs / 1024,
                            app.limits.max_memory_pages,
                            budget / 1024
                        ),
                    }
                    .into()
                } else {
                    DeploymentRequested {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                        version: v,
                    }
                    .into()
                };
                self.links.remove(pair);
                fx.record(version, pair, event);
            }
            (Some(v), Some(app), Some(dep)) => {
                if !connected || !self.may_start(pair, now) {
                    return;
                }
                let Some(module) = app.modules.get(&v) else {
                    return;
                };
                match dep.phase {
                    Phase::Requested | Phase::Transferring => {
                        if dep.phase == Phase::Requested {
                            let started = DeploymentTransferStarted {
                                app_id: app_id.clone(),
                                device_id: device_id.clone(),
                                version: v,
                            };
                            fx.record(version, pair, started.into());
                        }
                        self.start(pair, Step::Begin, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::ModuleBegin(ModuleBegin {
                                app_id: app_id.clone(),
                                version: v,
                                sha256: module.sha256,
                                total_len: u32::try_from(module.size_bytes).unwrap_or(u32::MAX),
                                offset: 0,
                            }),
                        ));
                    }
                    Phase::Delivered | Phase::Running => {
                        self.start(pair, Step::Deploy, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::Deploy(Deploy {
                                app_id: app_id.clone(),
                                version: v,
                                sha256: module.sha256,
                                limits: app.limits,
                                config: app.config.clone(),
                            }),
                        ));
                    }
                    Phase::Refused | Phase::Failed | Phase::StopRequested | Phase::Stopped => {}
                }
            }
            (_, _, Some(dep)) => match dep.phase {
                Phase::Stopped | Phase::Refused => {}
                Phase::StopRequested => {
                    if connected && self.may_start(pair, now) {
                        self.start(pair, Step::Stop, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::Stop(Stop {
                                app_id: app_id.clone(),
                            }),
                        ));
                    }
                }
                _ => {
                    self.links.remove(pair);
                    let stop = DeploymentStopRequested {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                    };
                    fx.record(version, pair, stop.into());
                }
            },
            _ => {}
        }
    }

    /// Records the events (pipelined), applies them, then sends frames and streams modules.
    async fn execute(&mut self, effects: Effects) {
        let Effects {
            appends,
            sends,
            streams,
            ..
        } = effects;
        if !appends.is_empty() {
            let envelopes: Vec<EventEnvelope> = appends.iter().map(|(_, e)| e.clone()).collect();
            let results = self.state.log.append_pipelined(appends, 256).await;
            for (envelope, result) in envelopes.into_iter().zip(results) {
                match result {
                    Ok(appended) => {
                        let t = self.state.fleet().apply(&StoredEvent {
                            sequence: appended.sequence,
                            envelope,
                        });
                        self.mark(t);
                    }
                    // A stale decision: the follower brings the truth and dirties the pair.
                    Err(e) => {
                        debug!(error = %e, event = envelope.event.type_name(), "not recorded")
                    }
                }
            }
        }
        for (device, frame) in sends {
            self.send(&device, &frame).await;
        }
        for stream in streams {
            self.stream(stream).await;
        }
    }

    async fn send(&self, device: &DeviceId, frame: &Frame) {
        match encode_to_vec(frame) {
            Ok(bytes) => {
                if let Err(e) = self
                    .client
                    .publish(subject::device_downlink(device), bytes.into())
                    .await
                {
                    warn!(%device, error = %e, "downlink publish failed");
                }
            }
            Err(e) => warn!(%device, frame = frame.name(), error = %e, "frame not encodable"),
        }
    }

    async fn stream(&mut self, stream: Stream) {
        let Stream { pair, sha256, from } = stream;
        let bytes = match self.state.modules.get(&sha256).await {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(app = %pair.0, error = %e, "module unavailable; will retry");
                if let Some(link) = self.links.get_mut(&pair) {
                    link.step = Step::Retry;
                }
                return;
            }
        };
        let start = (from as usize).min(bytes.len());
        for (i, chunk) in bytes[start..].chunks(MODULE_CHUNK_LEN).enumerate() {
            let frame = Frame::ModuleChunk(ModuleChunk {
                app_id: pair.0.clone(),
                offset: (start + i * MODULE_CHUNK_LEN) as u32,
                data: chunk.to_vec(),
            });
            self.send(&pair.1, &frame).await;
        }
        let commit = Frame::ModuleCommit(ModuleCommit {
            app_id: pair.0.clone(),
            sha256,
        });
        self.send(&pair.1, &commit).await;
    }

    async fn uplink_batch(&mut self, batch: Vec<async_nats::Message>) {
        let mut effects = Effects::default();
        for message in batch {
            let Some(device) = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|id| DeviceId::new(id).ok())
            else {
                continue;
            };
            let frame = match decode(&message.payload) {
                Ok((frame, used)) if used == message.payload.len() => frame,
                _ => {
                    warn!(%device, "uplink message is not one frame; ignored");
                    continue;
                }
            };
            let span = info_span!("uplink", %device, frame = frame.name());
            let pair = frame_pair(&frame, &device);
            if pair.as_ref().is_some_and(|p| effects.touches(p)) {
                // One event per deployment per batch: its version check needs the last one.
                let done = std::mem::take(&mut effects);
                self.execute(done).await;
            }
            let _entered = span.enter();
            self.handle_frame(&device, frame, &mut effects);
        }
        self.execute(effects)
            .instrument(info_span!("uplink_effects"))
            .await;
    }

    fn handle_frame(&mut self, device: &DeviceId, frame: Frame, fx: &mut Effects) {
        let now = Instant::now();
        let state = self.state.clone();
        let fleet = state.fleet();
        match frame {
            Frame::ModuleAck(ack) => self.on_ack(&fleet, device, ack, now, fx),
            Frame::AppStatus(status) => self.on_status(&fleet, device, status, fx),
            Frame::Error(error) => self.on_error(&fleet, device, error, now, fx),
            Frame::DeviceInfo(info) => on_info(&fleet, device, info, fx),
            _ => {}
        }
    }

    fn on_ack(
        &mut self,
        fleet: &Fleet,
        device: &DeviceId,
        ack: ModuleAck,
        now: Instant,
        fx: &mut Effects,
    ) {
        let pair = (ack.app_id.clone(), device.clone());
        let Some(dep) = fleet.deployments.get(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        if ack.verified {
            if matches!(dep.phase, Phase::Requested | Phase::Transferring) {
                let delivered = DeploymentDelivered {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                    version: dep.version,
                };
                fx.record(version, &pair, delivered.into());
            }
            self.links.remove(&pair);
            self.dirty.insert(pair);
            return;
        }
        let Some(link) = self.links.get_mut(&pair) else {
            return;
        };
        match link.step {
            Step::Begin => {
                let Some(module) = fleet
                    .apps
                    .get(&pair.0)
                    .and_then(|a| a.modules.get(&dep.version))
                else {
                    return;
                };
                link.step = Step::Streaming;
                link.since = now;
                fx.streams.push(Stream {
                    pair,
                    sha256: module.sha256,
                    from: ack.next_offset,
                });
            }
            // Progress: the step is alive.
            Step::Streaming => link.since = now,
            _ => {}
        }
    }

    fn on_status(&mut self, fleet: &Fleet, device: &DeviceId, status: AppStatus, fx: &mut Effects) {
        let pair = (status.app_id.clone(), device.clone());
        let _ = self.statuses.try_send(DeploymentStatus {
            app_id: status.app_id.clone(),
            device_id: device.clone(),
            version: status.version,
            state: status.state,
            fuel_used: status.fuel_used,
            memory_pages: status.memory_pages,
            detail: status.detail.clone(),
            reported_at: chrono::Utc::now(),
        });
        let Some(dep) = fleet.deployments.get(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        let current = status.version == dep.version;
        match status.state {
            AppState::Running if current => {
                if matches!(
                    dep.phase,
                    Phase::Requested | Phase::Transferring | Phase::Delivered | Phase::Failed
                ) {
                    let running = DeploymentRunning {
                        app_id: pair.0.clone(),
                        device_id: device.clone(),
                        version: dep.version,
                    };
                    fx.record(version, &pair, running.into());
                }
                if dep.phase == Phase::StopRequested {
                    self.links.remove(&pair);
                    self.dirty.insert(pair);
                } else {
                    self.settle(&pair);
                }
            }
            AppState::Failed if current => {
                if !matches!(
                    dep.phase,
                    Phase::Failed | Phase::StopRequested | Phase::Stopped
                ) {
                    let failed = DeploymentFailed {
                        app_id: pair.0.clone(),
                        device_id: device.clone(),
                        version: dep.version,
                        reason: status
                            .detail
                            .unwrap_or_else(|| "failed on the device".to_owned()),
                    };
                    fx.record(version, &pair, failed.into());
                }
                self.settle(&pair);
            }
            AppState::Stopped if dep.phase == Phase::StopRequested => {
                let stopped = DeploymentStopped {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                };
                fx.record(version, &pair, stopped.into());
                self.links.remove(&pair);
            }
            // An older version still running while a newer one is on its way: the transfer
            // in flight replaces it.
            _ => {}
        }
    }

    fn on_error(
        &mut self,
        fleet: &Fleet,
        device: &DeviceId,
        error: ErrorFrame,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(app) = error.app_id.clone() else {
            warn!(%device, code = ?error.code, message = %error.message, "device error");
            return;
        };
        let pair = (app, device.clone());
        let Some(dep) = fleet.deployments.get(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        let attempts = self.links.get(&pair).map_or(0, |l| l.attempts);
        let fail = |reason: String| DeploymentFailed {
            app_id: pair.0.clone(),
            device_id: device.clone(),
            version: dep.version,
            reason,
        };
        match error.code {
            FrameErrorCode::DigestMismatch
                if attempts + 1 >= self.state.config.max_delivery_attempts =>
            {
                let reason = format!(
                    "delivery failed {} times, last: {}",
                    attempts + 1,
                    error.message
                );
                fx.record(version, &pair, fail(reason).into());
                self.links.remove(&pair);
            }
            FrameErrorCode::ResourceExhausted => {
                fx.record(version, &pair, fail(error.message).into());
                self.links.remove(&pair);
            }
            FrameErrorCode::UnknownApp
                if matches!(dep.phase, Phase::Delivered | Phase::Running) =>
            {
                // The device lost the module (it restarted): deliver it again.
                let again = DeploymentTransferStarted {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                    version: dep.version,
                };
                fx.record(version, &pair, again.into());
                self.links.remove(&pair);
            }
            _ => {
                warn!(%device, app = %pair.0, code = ?error.code, message = %error.message, "device error; retrying");
                self.links.insert(
                    pair.clone(),
                    Link {
                        step: Step::Retry,
                        since: now,
                        attempts,
                    },
                );
            }
        }
        self.dirty.insert(pair);
    }

    fn settle(&mut self, pair: &Pair) {
        self.links.insert(
            pair.clone(),
            Link {
                step: Step::Settled,
                since: Instant::now(),
                attempts: 0,
            },
        );
    }
}

fn on_info(fleet: &Fleet, device: &DeviceId, info: DeviceInfo, fx: &mut Effects) {
    let known = fleet.devices.get(device).and_then(|d| d.app_ram_bytes);
    if known == Some(info.app_ram_bytes) {
        return;
    }
    // Device events come from several services; this one commutes, so no version check.
    fx.appends.push((
        ExpectedVersion::Any,
        EventEnvelope::new(
            DeviceDescribed {
                device_id: device.clone(),
                mcu: info.mcu,
                firmware: info.firmware,
                app_ram_bytes: info.app_ram_bytes,
                host_api_version: info.host_api_version,
            }
            .into(),
        ),
    ));
}

/// The deployment a frame is about, if any.
fn frame_pair(frame: &Frame, device: &DeviceId) -> Option<Pair> {
    let app = match frame {
        Frame::ModuleAck(a) => a.app_id.clone(),
        Frame::AppStatus(s) => s.app_id.clone(),
        Frame::Error(e) => e.app_id.clone()?,
        _ => return None,
    };
    Some((app, device.clone()))
}

/// Writes reported statuses to the read model off the reconciler's path; when it falls
/// behind, newer statuses replace older ones of the same pair.
fn spawn_status_writer(model: ReadModel<DeploymentStatus>) -> mpsc::Sender<DeploymentStatus> {
    let (tx, mut rx) = mpsc::channel::<DeploymentStatus>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut latest: HashMap<(AppId, DeviceId), DeploymentStatus> = HashMap::new();
            latest.insert((first.app_id.clone(), first.device_id.clone()), first);
            while let Ok(more) = rx.try_recv() {
                latest.insert((more.app_id.clone(), more.device_id.clone()), more);
            }
            for ((app, device), status) in latest {
                if let Err(e) = model.put(&format!("{app}.{device}"), &status).await {
                    warn!(error = %e, "deployment status not written");
                }
            }
        }
    });
    tx
}
