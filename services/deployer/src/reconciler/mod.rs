//! The reconciler: closes the gap between what should run and what each device has.
//!
//! One task owns the in-flight steps ([`Link`]s) and is fed by two inputs: what changed in the
//! fleet view (folded from the log by the service, and recorded by the command handlers), and
//! the devices' uplink frames (acks and app statuses). It runs only in the instance holding the
//! deployer's lease, and is dropped as soon as that lease ends. Each input marks (app, device)
//! pairs dirty; the pass over dirty pairs decides events to record and frames to send. Events
//! are recorded with a concurrency check on the deployment's version, so two decisions on a
//! stale view cannot both land.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, field, info_span, warn};
use wasmbed_eventlog::{ExpectedVersion, ReadModel, StoredEvent};
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{Event, EventEnvelope};
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::{Frame, MODULE_CHUNK_LEN, ModuleChunk, ModuleCommit};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, Sha256, subject};

use crate::Deployer;
use uplink::spawn_status_writer;
use wasmbed_fleet::{Pair, Touched};

mod decide;
mod rollouts;
mod trust;
mod uplink;

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

/// The application a downlink frame is about.
fn frame_app(frame: &Frame) -> Option<&AppId> {
    match frame {
        Frame::ModuleBegin(f) => Some(&f.app_id),
        Frame::ModuleChunk(f) => Some(&f.app_id),
        Frame::ModuleCommit(f) => Some(&f.app_id),
        Frame::Deploy(f) => Some(&f.app_id),
        Frame::Stop(f) => Some(&f.app_id),
        _ => None,
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
    links: HashMap<Pair, Link>,
    dirty: HashSet<Pair>,
    /// Rehearsal copies this process asked to start, and to remove.
    launched: HashSet<DeviceId>,
    removed: HashSet<DeviceId>,
    /// The fleet's trust serial at the last trust pass.
    trust_serial: u32,
    /// Devices whose trusted keys may lag the fleet's.
    trust_due: HashSet<DeviceId>,
    /// The (session, serial) each device was last sent rotations for.
    trust_pushed: HashMap<DeviceId, (Option<String>, u32)>,
}

impl Reconciler {
    /// A reconciler; starts the writer of the status read model (needs a runtime).
    pub(crate) fn new(
        state: Arc<Deployer>,
        client: async_nats::Client,
        status_model: ReadModel<DeploymentStatus>,
    ) -> Self {
        Self {
            state,
            client,
            statuses: spawn_status_writer(status_model),
            links: HashMap::new(),
            dirty: HashSet::new(),
            launched: HashSet::new(),
            removed: HashSet::new(),
            trust_serial: 0,
            trust_due: HashSet::new(),
            trust_pushed: HashMap::new(),
        }
    }

    /// Reconciles until the uplink subscription or the fleet view's changes end. The holder
    /// of the lease runs it raced against the lease's end, which drops it wherever it waits.
    pub(crate) async fn run(
        mut self,
        mut uplink: async_nats::Subscriber,
        touched: &mut mpsc::UnboundedReceiver<Touched>,
    ) {
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
                t = touched.recv() => match t {
                    Some(t) => self.mark(t),
                    None => return,
                },
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
            self.drive_rollouts().await;
            self.reconcile().await;
            self.push_trust().await;
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
                self.trust_due.insert(device.clone());
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
                    // Only deployments have this service as their one writer. A device
                    // event applied ahead of the follower would make the view skip the
                    // other services' earlier events on that device (versions only grow).
                    Ok(_) if !matches!(envelope.aggregate, AggregateId::Deployment { .. }) => {}
                    Ok(appended) => {
                        let t = self.state.fleet().apply(&StoredEvent {
                            sequence: appended.sequence,
                            envelope,
                            trace: wasmbed_bus::trace::current_traceparent(),
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
            let span = self.downlink_span(&device, frame_app(&frame), frame.name());
            let headers = span.in_scope(wasmbed_bus::trace::current_headers);
            self.send(&device, &frame, headers.as_ref())
                .instrument(span)
                .await;
        }
        for stream in streams {
            let span = self.downlink_span(&stream.pair.1, Some(&stream.pair.0), "module_transfer");
            self.stream(stream).instrument(span).await;
        }
    }

    /// A span for what goes down to `device`, continuing the trace of the change to `app`'s
    /// desired state that caused it.
    fn downlink_span(&self, device: &DeviceId, app: Option<&AppId>, frame: &str) -> tracing::Span {
        let span =
            info_span!("downlink", %device, app = field::Empty, frame, otel.kind = "producer");
        if let Some(app) = app {
            span.record("app", field::display(app));
            let trace = self
                .state
                .fleet()
                .apps
                .get(app)
                .and_then(|a| a.trace.clone());
            if let Some(trace) = trace {
                wasmbed_bus::trace::continue_traceparent(&span, &trace);
            }
        }
        span
    }

    async fn send(&self, device: &DeviceId, frame: &Frame, headers: Option<&HeaderMap>) {
        let bytes = match encode_to_vec(frame) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(%device, frame = frame.name(), error = %e, "frame not encodable");
                return;
            }
        };
        let to = subject::device_downlink(device);
        let sent = match headers {
            Some(headers) => {
                self.client
                    .publish_with_headers(to, headers.clone(), bytes.into())
                    .await
            }
            None => self.client.publish(to, bytes.into()).await,
        };
        if let Err(e) = sent {
            warn!(%device, error = %e, "downlink publish failed");
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
        let headers = wasmbed_bus::trace::current_headers();
        let headers = headers.as_ref();
        let start = (from as usize).min(bytes.len());
        for (i, chunk) in bytes[start..].chunks(MODULE_CHUNK_LEN).enumerate() {
            let frame = Frame::ModuleChunk(ModuleChunk {
                app_id: pair.0.clone(),
                offset: (start + i * MODULE_CHUNK_LEN) as u32,
                data: chunk.to_vec(),
            });
            self.send(&pair.1, &frame, headers).await;
        }
        let commit = Frame::ModuleCommit(ModuleCommit {
            app_id: pair.0.clone(),
            sha256,
        });
        self.send(&pair.1, &commit, headers).await;
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
