//! Restoring a read model from its last snapshot plus the events after it, and writing new
//! snapshots as the log grows (`wasmbed_eventlog::snapshot` holds the format and the checks).

use std::time::{Duration, Instant};

use tracing::{Instrument, info, info_span, warn};
use wasmbed_eventlog::snapshot::{SnapshotStore, Snapshotted};
use wasmbed_eventlog::{Follow, SnapshotError, StoredEvent};

use crate::{Runtime, RuntimeError};

/// When a service writes a snapshot of its read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Write one once this many events were folded since the last (0: never write).
    pub after_events: u64,
    /// How often the running service looks.
    pub check_every: Duration,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            after_events: 10_000,
            check_every: Duration::from_secs(30),
        }
    }
}

/// How a restore went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// The snapshot's sequence (0: none was used).
    pub from_snapshot: u64,
    /// Events folded after it.
    pub folded: u64,
    /// The last sequence folded (the snapshot's when nothing came after).
    pub last: u64,
}

impl Runtime {
    /// Like [`Runtime::restore`], starting from the service's last trustworthy snapshot of
    /// `model` and folding only the events after it. When more than the policy's number of
    /// events had to be folded, a new snapshot is written in the background. `apply` must be
    /// the same fold the running service uses.
    pub async fn restore_snapshotted<M: Snapshotted + Send + 'static>(
        &mut self,
        subjects: Vec<String>,
        model: &mut M,
        mut apply: impl FnMut(&mut M, &StoredEvent),
    ) -> Result<(Follow, RestoreReport), RuntimeError> {
        let started = Instant::now();
        let store = match self.log.snapshots().await {
            Ok(store) => Some(store),
            Err(e) => {
                warn!(service = self.service, error = %e, "snapshot store unavailable; folding the whole log");
                None
            }
        };
        let mut from_snapshot = 0;
        if let Some(store) = &store {
            match store.load::<M>(self.service, M::FORMAT).await {
                Ok(Some(restored)) => {
                    *model = restored.model;
                    from_snapshot = restored.sequence;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(service = self.service, error = %e, "snapshot unreadable; folding the whole log");
                }
            }
        }
        let mut follow = self.log.follow_after(subjects, from_snapshot).await?;
        let mut last = from_snapshot;
        let folded = follow
            .catch_up(|event| {
                apply(model, event);
                last = event.sequence;
            })
            .await;
        info!(
            service = self.service,
            from_snapshot,
            events = folded,
            took_ms = started.elapsed().as_millis() as u64,
            "read model restored"
        );
        self.snapshotted = last;
        let policy = self.options.snapshots;
        if let Some(store) =
            store.filter(|_| policy.after_events > 0 && folded >= policy.after_events)
        {
            match encode(model) {
                Ok(body) => {
                    let service = self.service;
                    self.background.spawn(
                        async move { save(&store, service, M::FORMAT, last, body).await }
                            .instrument(info_span!("snapshot", service)),
                    );
                }
                Err(e) => warn!(service = self.service, error = %e, "snapshot not written"),
            }
        }
        Ok((
            follow,
            RestoreReport {
                from_snapshot,
                folded,
                last,
            },
        ))
    }

    /// Writes a snapshot of the running service's model whenever the policy's number of
    /// events were folded since the last. `position` is the last sequence the model's follow
    /// folded (cheap, asked often); `snapshot` encodes the model with [`encode`] and returns
    /// it with that position, read under the same lock so the two agree.
    pub fn keep_snapshotting<M: Snapshotted>(
        &mut self,
        position: impl Fn() -> u64 + Send + 'static,
        snapshot: impl Fn() -> Result<(u64, Vec<u8>), SnapshotError> + Send + 'static,
    ) {
        let policy = self.options.snapshots;
        if policy.after_events == 0 {
            return;
        }
        let (service, log, mut saved) = (self.service, self.log.clone(), self.snapshotted);
        let task = async move {
            let mut check = tokio::time::interval(policy.check_every);
            check.tick().await;
            let mut store: Option<SnapshotStore> = None;
            loop {
                check.tick().await;
                if position() < saved.saturating_add(policy.after_events) {
                    continue;
                }
                if store.is_none() {
                    store = log.snapshots().await.ok();
                }
                let Some(store) = &store else { continue };
                match snapshot() {
                    Ok((sequence, body)) => {
                        save(store, service, M::FORMAT, sequence, body).await;
                        saved = sequence;
                    }
                    Err(e) => warn!(service, error = %e, "snapshot not written"),
                }
            }
        };
        self.background
            .spawn(task.instrument(info_span!("snapshots", service)));
    }
}

/// Writes snapshots for a service whose own loop holds its model (no lock to share): ask
/// [`SnapshotWriter::due`] now and then, and [`SnapshotWriter::write`] when it says so.
pub struct SnapshotWriter {
    service: &'static str,
    log: wasmbed_eventlog::EventLog,
    policy: SnapshotPolicy,
    saved: u64,
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Whether a snapshot at `position` (the last sequence the model's follow folded) is due:
    /// the policy's number of events since the last, and the last one written.
    pub fn due(&self, position: u64) -> bool {
        self.policy.after_events > 0
            && position >= self.saved.saturating_add(self.policy.after_events)
            && self.writing.as_ref().is_none_or(|w| w.is_finished())
    }

    /// Encodes `model` as of `position` now and writes it in the background.
    pub fn write<M: Snapshotted>(&mut self, position: u64, model: &M) {
        let body = match encode(model) {
            Ok(body) => body,
            Err(e) => {
                warn!(service = self.service, error = %e, "snapshot not written");
                return;
            }
        };
        self.saved = position;
        let (service, log) = (self.service, self.log.clone());
        self.writing = Some(tokio::spawn(
            async move {
                match log.snapshots().await {
                    Ok(store) => save(&store, service, M::FORMAT, position, body).await,
                    Err(e) => warn!(service, error = %e, "snapshot not written"),
                }
            }
            .instrument(info_span!("snapshot", service)),
        ));
    }
}

impl Runtime {
    /// A writer of this service's snapshots, starting from the one its restore read or wrote.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            service: self.service,
            log: self.log.clone(),
            policy: self.options.snapshots,
            saved: self.snapshotted,
            writing: None,
        }
    }
}

/// The body of a snapshot of `model`.
pub fn encode<M: Snapshotted>(model: &M) -> Result<Vec<u8>, SnapshotError> {
    wasmbed_eventlog::snapshot::body(model)
}

async fn save(store: &SnapshotStore, service: &str, format: u32, sequence: u64, body: Vec<u8>) {
    if let Err(e) = store.save_body(service, format, sequence, body).await {
        warn!(service, error = %e, "snapshot not written");
    }
}
