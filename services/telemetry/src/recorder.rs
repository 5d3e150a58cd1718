//! The telemetry service's writes (liveness transitions to the log, last-seen times and latest
//! telemetry to their buckets), done off the loop that listens. While the log is slow — a
//! JetStream leader election takes seconds, and every write waits for it — heartbeats keep
//! being read, so the service never judges a device silent because it stopped listening itself.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use wasmbed_eventlog::{EventLog, ExpectedVersion, ReadModel};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::device_message::LatestTelemetry;
use wasmbed_schemas::event::{DeviceBackOnline, DeviceWentOffline, EventEnvelope};

use crate::liveness::{Liveness, Transition};

/// Bucket writes in flight at once.
const CONCURRENT_SAVES: usize = 16;

/// What a write came to, reported back to the loop.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The transition is in the log at this sequence.
    Recorded(Transition, u64),
    /// The transition is not in the log; the next sweep decides it again.
    NotRecorded(Transition),
    /// A batch of saves is done (each failure was logged).
    Saved,
}

/// What one sweep saves.
#[derive(Debug, Default)]
pub(crate) struct Saves {
    pub last_seen: Vec<(DeviceId, DateTime<Utc>)>,
    pub latest: Vec<LatestTelemetry>,
}

/// The loop's side: sends writes, knows which are still in flight.
pub(crate) struct Recorder {
    transitions: mpsc::UnboundedSender<(Transition, EventEnvelope)>,
    saves: mpsc::UnboundedSender<Saves>,
    in_flight: HashSet<DeviceId>,
    saving: bool,
    tasks: [JoinHandle<()>; 2],
}

impl Recorder {
    /// Starts the writers; their outcomes arrive on the returned receiver.
    pub(crate) fn start(
        log: EventLog,
        last_seen: ReadModel<DateTime<Utc>>,
        latest: ReadModel<LatestTelemetry>,
    ) -> (Self, mpsc::UnboundedReceiver<Outcome>) {
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let (transitions, transitions_rx) = mpsc::unbounded_channel();
        let (saves, saves_rx) = mpsc::unbounded_channel();
        let tasks = [
            tokio::spawn(append_transitions(log, transitions_rx, outcomes.clone())),
            tokio::spawn(save(last_seen, latest, saves_rx, outcomes)),
        ];
        let recorder = Self {
            transitions,
            saves,
            in_flight: HashSet::new(),
            saving: false,
            tasks,
        };
        (recorder, outcomes_rx)
    }

    /// Sends `transition` to the log under its derived id, unless one for the same device is
    /// still in flight.
    pub(crate) fn record(&mut self, liveness: &Liveness, transition: Transition) {
        if !self.in_flight.insert(transition.device().clone()) {
            return;
        }
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
        if self.transitions.send((transition, envelope)).is_err() {
            warn!("the transition writer is gone");
        }
    }

    /// Whether a batch of saves is still being written (the next waits for it).
    pub(crate) fn saving(&self) -> bool {
        self.saving
    }

    /// Sends a batch of saves.
    pub(crate) fn save(&mut self, saves: Saves) {
        self.saving = self.saves.send(saves).is_ok();
    }

    /// Takes in what a write came to.
    pub(crate) fn finished(&mut self, liveness: &mut Liveness, outcome: Outcome) {
        match outcome {
            Outcome::Recorded(transition, sequence) => {
                self.in_flight.remove(transition.device());
                liveness.recorded(&transition, sequence);
            }
            Outcome::NotRecorded(transition) => {
                self.in_flight.remove(transition.device());
            }
            Outcome::Saved => self.saving = false,
        }
    }

    /// Lets the writers finish what was sent, then waits for them.
    pub(crate) async fn stop(self) {
        let Self {
            transitions,
            saves,
            tasks,
            ..
        } = self;
        drop((transitions, saves));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Appends transitions in order; a failure is reported so the transition is decided again.
async fn append_transitions(
    log: EventLog,
    mut transitions: mpsc::UnboundedReceiver<(Transition, EventEnvelope)>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    while let Some((transition, envelope)) = transitions.recv().await {
        let outcome = match log.append(ExpectedVersion::Any, &envelope).await {
            Ok(appended) => {
                info!(?transition, "liveness transition recorded");
                Outcome::Recorded(transition, appended.sequence)
            }
            Err(e) => {
                warn!(error = %e, ?transition, "liveness transition not recorded; will retry");
                Outcome::NotRecorded(transition)
            }
        };
        // The loop is gone only when the service stops.
        let _ = outcomes.send(outcome);
    }
}

/// Writes each batch of saves, several puts at once.
async fn save(
    last_seen: ReadModel<DateTime<Utc>>,
    latest: ReadModel<LatestTelemetry>,
    mut batches: mpsc::UnboundedReceiver<Saves>,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    while let Some(batch) = batches.recv().await {
        futures::stream::iter(batch.last_seen)
            .for_each_concurrent(CONCURRENT_SAVES, |(device, at)| {
                let last_seen = &last_seen;
                async move {
                    if let Err(e) = last_seen.put(device.as_str(), &at).await {
                        warn!(error = %e, "last-seen time not saved");
                    }
                }
            })
            .await;
        futures::stream::iter(batch.latest)
            .for_each_concurrent(CONCURRENT_SAVES, |value| {
                let latest = &latest;
                async move {
                    let key = format!("{}.{}", value.device_id, value.app_id);
                    if let Err(e) = latest.put(&key, &value).await {
                        warn!(error = %e, "latest telemetry not saved");
                    }
                }
            })
            .await;
        let _ = outcomes.send(Outcome::Saved);
    }
}
