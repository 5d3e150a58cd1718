//! Reading the log of a replicated system while it rides out a fault: reads that meet an
//! election are tried again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use wasmbed_eventlog::{EventLog, ReadError, StoredEvent};
use wasmbed_schemas::aggregate::AggregateKind;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AppId, DeviceId, subject};

/// The sequence of the last event in the log (0 when empty).
pub async fn last_sequence(log: &EventLog) -> u64 {
    log.last_sequence().await.unwrap()
}

/// The whole log; a read that fails while the cluster settles is tried again (for up to 20 s).
pub async fn all_events(log: &EventLog) -> Vec<StoredEvent> {
    let mut last = String::new();
    for _ in 0..40 {
        match log.page(None, 0, usize::MAX).await {
            Ok(events) => return events,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the log cannot be read: {last}");
}

/// The server name of the node leading the event stream.
pub async fn event_stream_leader(log: &EventLog) -> String {
    let mut stream = log
        .jetstream()
        .get_stream(subject::EVENTS_STREAM)
        .await
        .expect("the event stream");
    let info = stream.info().await.expect("the event stream's info");
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the event stream has a leader")
}

/// The devices `app` has run on so far, each with the time its `DeploymentRunning` was
/// recorded (one read of the deployment events).
pub async fn running(
    log: &EventLog,
    app: &AppId,
) -> Result<BTreeMap<DeviceId, DateTime<Utc>>, ReadError> {
    let deployments = subject::events_of_kind(AggregateKind::Deployment);
    let events = log.page(Some(deployments), 0, usize::MAX).await?;
    Ok(events
        .iter()
        .filter_map(|e| match &e.envelope.event {
            Event::DeploymentRunning(r) if &r.app_id == app => {
                Some((r.device_id.clone(), e.envelope.time))
            }
            _ => None,
        })
        .collect())
}

/// Waits until the log records `app` running on every one of `devices` (a read that meets an
/// election counts as nothing yet); returns when the last one started it, as recorded. Panics
/// naming those that do not by `deadline`.
pub async fn wait_running(
    log: &EventLog,
    app: &AppId,
    devices: &[DeviceId],
    deadline: Instant,
) -> DateTime<Utc> {
    loop {
        let running = running(log, app).await.unwrap_or_default();
        let missing: Vec<&DeviceId> = devices
            .iter()
            .filter(|d| !running.contains_key(*d))
            .collect();
        if missing.is_empty() {
            return devices
                .iter()
                .filter_map(|d| running.get(d).copied())
                .max()
                .unwrap_or_else(Utc::now);
        }
        assert!(Instant::now() < deadline, "{app} never ran on {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
