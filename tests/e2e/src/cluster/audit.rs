//! What a test checks the whole log against after a fault: every event once, every
//! acknowledged registration recorded once, every app run once per device, no false offline.

use std::collections::{BTreeMap, HashSet};

use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AppId, DeviceId};

use crate::deployment;

/// Every event once: the counts of a log.
#[derive(Debug)]
pub struct LogAudit {
    /// Events in the log.
    pub events: usize,
    /// Event ids seen more than once (a duplicated append).
    pub duplicate_ids: usize,
    /// Events per type name.
    pub by_type: BTreeMap<&'static str, usize>,
}

impl LogAudit {
    /// Audits `events`.
    pub fn of(events: &[StoredEvent]) -> Self {
        let mut ids = HashSet::new();
        let mut by_type = BTreeMap::new();
        let mut duplicate_ids = 0;
        for stored in events {
            if !ids.insert(stored.envelope.event_id) {
                duplicate_ids += 1;
            }
            *by_type
                .entry(stored.envelope.event.type_name())
                .or_default() += 1;
        }
        Self {
            events: events.len(),
            duplicate_ids,
            by_type,
        }
    }

    /// How many events of `type_name`.
    pub fn count(&self, type_name: &str) -> usize {
        self.by_type.get(type_name).copied().unwrap_or(0)
    }
}

/// `device`'s events of one type in `events`.
pub fn device_events<'a>(
    events: &'a [StoredEvent],
    device: &'a DeviceId,
) -> impl Iterator<Item = &'a Event> + 'a {
    events
        .iter()
        .filter_map(move |e| match &e.envelope.aggregate {
            wasmbed_schemas::AggregateId::Device(d) if d == device => Some(&e.envelope.event),
            _ => None,
        })
}

/// Asserts each of `devices` was registered exactly once.
pub fn assert_registered_once(events: &[StoredEvent], devices: &[DeviceId]) {
    for id in devices {
        let registered = device_events(events, id)
            .filter(|e| matches!(e, Event::DeviceRegistered(_)))
            .count();
        assert_eq!(registered, 1, "{id} registered {registered} times");
    }
}

/// Asserts each of `apps` started running exactly once on each of `devices`.
pub fn assert_ran_once(events: &[StoredEvent], apps: &[&AppId], devices: &[DeviceId]) {
    for app in apps {
        for id in devices {
            let running = events
                .iter()
                .filter(|e| e.envelope.aggregate == deployment(app, id))
                .filter(|e| matches!(e.envelope.event, Event::DeploymentRunning(_)))
                .count();
            assert_eq!(running, 1, "{app} ran {running} times on {id}");
        }
    }
}

/// Those of `devices` recorded offline at least once.
pub fn recorded_offline<'a>(events: &[StoredEvent], devices: &'a [DeviceId]) -> Vec<&'a DeviceId> {
    devices
        .iter()
        .filter(|id| device_events(events, id).any(|e| matches!(e, Event::DeviceWentOffline(_))))
        .collect()
}
