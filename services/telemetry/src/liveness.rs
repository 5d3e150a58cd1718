//! Online/offline decisions, without I/O: what the log says each device was last recorded as,
//! when it was last heard, and which transitions are due.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::event::Event;

/// A transition to record in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The device stopped heart-beating.
    WentOffline {
        /// The device.
        device: DeviceId,
        /// When it was last heard.
        last_seen: DateTime<Utc>,
    },
    /// A device recorded offline was heard again.
    BackOnline {
        /// The device.
        device: DeviceId,
    },
}

impl Transition {
    /// The device it is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Self::WentOffline { device, .. } | Self::BackOnline { device } => device,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct DeviceLiveness {
    /// What the log last recorded: `Some(false)` after `DeviceWentOffline`, `Some(true)` after
    /// `DeviceBackOnline`, `None` before any transition.
    recorded_online: Option<bool>,
    last_seen: Option<DateTime<Utc>>,
}

/// Every device's liveness.
#[derive(Debug, Default)]
pub struct Liveness {
    devices: HashMap<DeviceId, DeviceLiveness>,
}

impl Liveness {
    /// Folds in a device event from the log.
    pub fn apply(&mut self, stored: &StoredEvent) {
        let time = stored.envelope.time;
        match &stored.envelope.event {
            Event::DeviceWentOffline(e) => self.entry(&e.device_id).recorded_online = Some(false),
            Event::DeviceBackOnline(e) => self.entry(&e.device_id).recorded_online = Some(true),
            Event::DeviceConnected(e) => self.seen(&e.device_id, time),
            _ => {}
        }
    }

    /// A heartbeat (or any sign of life) at `at`. Returns `BackOnline` if the device is
    /// recorded offline.
    pub fn heard(&mut self, device: &DeviceId, at: DateTime<Utc>) -> Option<Transition> {
        self.seen(device, at);
        (self.entry(device).recorded_online == Some(false)).then(|| Transition::BackOnline {
            device: device.clone(),
        })
    }

    /// Restores a last-seen time saved before a restart (never moves it backwards).
    pub fn restore_last_seen(&mut self, device: &DeviceId, at: DateTime<Utc>) {
        self.seen(device, at);
    }

    /// The devices silent for longer than `timeout` that are not yet recorded offline. A device
    /// is given at least `timeout` from `started` (the service's start), so a restart does not
    /// declare offline devices that simply have not had the chance to heart-beat since.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        started: DateTime<Utc>,
        timeout: Duration,
    ) -> Vec<Transition> {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let mut due: Vec<Transition> = self
            .devices
            .iter()
            .filter_map(|(device, d)| {
                let last_seen = d.last_seen?;
                let silent_since = last_seen.max(started);
                (d.recorded_online != Some(false) && now - silent_since > timeout).then(|| {
                    Transition::WentOffline {
                        device: device.clone(),
                        last_seen,
                    }
                })
            })
            .collect();
        due.sort_by(|a, b| a.device().cmp(b.device()));
        due
    }

    /// Marks a transition as recorded in the log.
    pub fn recorded(&mut self, transition: &Transition) {
        match transition {
            Transition::WentOffline { device, .. } => {
                self.entry(device).recorded_online = Some(false)
            }
            Transition::BackOnline { device } => self.entry(device).recorded_online = Some(true),
        }
    }

    /// Devices heard from and not recorded offline.
    pub fn online(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.last_seen.is_some() && d.recorded_online != Some(false))
            .count()
    }

    /// Every device's last-seen time.
    pub fn last_seen(&self) -> impl Iterator<Item = (&DeviceId, DateTime<Utc>)> {
        self.devices
            .iter()
            .filter_map(|(id, d)| d.last_seen.map(|t| (id, t)))
    }

    fn entry(&mut self, device: &DeviceId) -> &mut DeviceLiveness {
        self.devices.entry(device.clone()).or_default()
    }

    fn seen(&mut self, device: &DeviceId, at: DateTime<Utc>) {
        let d = self.entry(device);
        if d.last_seen.is_none_or(|t| at > t) {
            d.last_seen = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u32) -> DeviceId {
        DeviceId::new(format!("d{n}")).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const TIMEOUT: Duration = Duration::from_secs(15);

    #[test]
    fn silence_past_the_timeout_is_one_transition_and_a_heartbeat_ends_it() {
        let mut l = Liveness::default();
        assert_eq!(l.heard(&dev(1), t(0)), None);
        assert_eq!(l.due(t(15), t(0), TIMEOUT), []);
        let due = l.due(t(16), t(0), TIMEOUT);
        assert_eq!(
            due,
            [Transition::WentOffline {
                device: dev(1),
                last_seen: t(0)
            }]
        );
        l.recorded(&due[0]);
        assert_eq!(l.due(t(100), t(0), TIMEOUT), [], "recorded once");
        assert_eq!(l.online(), 0);
        assert_eq!(
            l.heard(&dev(1), t(101)),
            Some(Transition::BackOnline { device: dev(1) })
        );
        l.recorded(&Transition::BackOnline { device: dev(1) });
        assert_eq!(l.heard(&dev(1), t(102)), None, "recorded once");
        assert_eq!(l.online(), 1);
    }

    #[test]
    fn after_a_restart_devices_get_a_full_timeout_from_the_start() {
        let mut l = Liveness::default();
        l.restore_last_seen(&dev(1), t(0));
        // The service restarted at t=50: nothing is due before 50 + 15.
        assert_eq!(l.due(t(60), t(50), TIMEOUT), []);
        assert_eq!(
            l.due(t(66), t(50), TIMEOUT),
            [Transition::WentOffline {
                device: dev(1),
                last_seen: t(0)
            }]
        );
    }

    #[test]
    fn devices_never_heard_from_are_not_declared_offline() {
        let l = Liveness::default();
        assert_eq!(l.due(t(1000), t(0), TIMEOUT), []);
    }

    #[test]
    fn last_seen_never_moves_backwards() {
        let mut l = Liveness::default();
        l.heard(&dev(1), t(10));
        l.restore_last_seen(&dev(1), t(5));
        assert_eq!(l.last_seen().next(), Some((&dev(1), t(10))));
    }
}
