//! Reading the log of a replicated system while it rides out a fault: reads that meet an
//! election are tried again.

use std::time::{Duration, Instant};

use wasmbed_eventlog::{EventLog, StoredEvent};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AppId, DeviceId, subject};

use crate::deployment;

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

/// Waits until the log records `app` running on every one of `devices`; panics naming the
/// first that does not by `deadline`.
pub async fn wait_running(log: &EventLog, app: &AppId, devices: &[DeviceId], deadline: Instant) {
    for device in devices {
        loop {
            // A read that meets an election fails; it is tried again.
            let story = log.read(&deployment(app, device)).await.unwrap_or_default();
            if story
                .iter()
                .any(|e| matches!(e.envelope.event, Event::DeploymentRunning(_)))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{device} never ran {app}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
