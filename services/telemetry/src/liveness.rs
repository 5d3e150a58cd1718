//! Online/offline decisions, without I/O: what the log says each device was last recorded as,
//! when it was last heard, and which transitions are due.
//!
//! Several instances may run at once: each decides from the same log and the same heartbeats,
//! and a transition's event id is derived from the device, the kind of transition and the
//! sequence of the device's previous transition ([`Liveness::event_id`]). Two instances that
//! record the same transition append the same id, and the log's de-duplication keeps one.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;
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

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct DeviceLiveness {
    /// What the log last recorded: `Some(false)` after `DeviceWentOffline`, `Some(true)` after
    /// `DeviceBackOnline`, `None` before any transition.
    recorded_online: Option<bool>,
    /// The log sequence of the last transition recorded (0: none).
    last_transition: u64,
    last_seen: Option<DateTime<Utc>>,
}

/// Every device's liveness.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Liveness {
    devices: HashMap<DeviceId, DeviceLiveness>,
    /// The last sequence folded by [`Liveness::apply`] (the service's follow of the log): what
    /// a snapshot holds everything up to.
    followed: u64,
}

/// The snapshot layout: bump it with any change to the fields above.
impl wasmbed_eventlog::snapshot::Snapshotted for Liveness {
    const FORMAT: u32 = 1;
}

impl Liveness {
    /// Folds in a device event from the log.
    pub fn apply(&mut self, stored: &StoredEvent) {
        self.followed = self.followed.max(stored.sequence);
        let time = stored.envelope.time;
        match &stored.envelope.event {
            Event::DeviceWentOffline(e) => self.fold(&e.device_id, false, stored.sequence),
            Event::DeviceBackOnline(e) => self.fold(&e.device_id, true, stored.sequence),
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
    /// is given at least `timeout` from `listening_since` (the service's start, or the moment it
    /// could hear heartbeats again after losing its connection), so a restart or a deaf spell of
    /// the service itself does not declare offline devices it simply did not hear.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        listening_since: DateTime<Utc>,
        timeout: Duration,
    ) -> Vec<Transition> {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let mut due: Vec<Transition> = self
            .devices
            .iter()
            .filter_map(|(device, d)| {
                let last_seen = d.last_seen?;
                let silent_since = last_seen.max(listening_since);
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

    /// Marks a transition as recorded in the log at `sequence`.
    pub fn recorded(&mut self, transition: &Transition, sequence: u64) {
        match transition {
            Transition::WentOffline { device, .. } => self.fold(device, false, sequence),
            Transition::BackOnline { device } => self.fold(device, true, sequence),
        }
    }

    /// The event id of `transition`: the same for every instance that decides it from the
    /// same history (device, kind, and the sequence of the device's previous transition).
    pub fn event_id(&self, transition: &Transition) -> Uuid {
        let device = transition.device();
        let previous = self.devices.get(device).map_or(0, |d| d.last_transition);
        let kind: u8 = match transition {
            Transition::WentOffline { .. } => 1,
            Transition::BackOnline { .. } => 2,
        };
        let digest = Sha256::new()
            .chain_update(b"wasmbed-liveness-transition\0")
            .chain_update(device.as_str().as_bytes())
            .chain_update([0, kind])
            .chain_update(previous.to_be_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    fn fold(&mut self, device: &DeviceId, online: bool, sequence: u64) {
        let d = self.entry(device);
        // An older transition folded after a newer one (an instance's own append, then the
        // follower) changes nothing.
        if sequence >= d.last_transition {
            d.recorded_online = Some(online);
            d.last_transition = sequence;
        }
    }

    /// The last sequence of the log folded in by [`Liveness::apply`].
    pub fn followed(&self) -> u64 {
        self.followed
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
        l.recorded(&due[0], 7);
        assert_eq!(l.due(t(100), t(0), TIMEOUT), [], "recorded once");
        assert_eq!(l.online(), 0);
        assert_eq!(
            l.heard(&dev(1), t(101)),
            Some(Transition::BackOnline { device: dev(1) })
        );
        l.recorded(&Transition::BackOnline { device: dev(1) }, 9);
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
    fn a_deaf_spell_of_the_service_is_not_the_devices_silence() {
        let mut l = Liveness::default();
        l.heard(&dev(1), t(0));
        l.heard(&dev(2), t(30));
        // The service lost its connection at t=5 and heard again from t=25: neither device is
        // due before 25 + 15; then only the one not heard since.
        assert_eq!(l.due(t(39), t(25), TIMEOUT), []);
        assert_eq!(
            l.due(t(41), t(25), TIMEOUT),
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

    /// Two instances that decide the same transition from the same history give it the same
    /// id; the next transition, or another device's, gets another.
    #[test]
    fn the_same_transition_has_the_same_id_whoever_decides_it() {
        let (mut a, mut b) = (Liveness::default(), Liveness::default());
        for l in [&mut a, &mut b] {
            l.heard(&dev(1), t(0));
            l.heard(&dev(2), t(0));
        }
        let offline = a.due(t(16), t(0), TIMEOUT);
        assert_eq!(offline, b.due(t(17), t(0), TIMEOUT));
        let first = a.event_id(&offline[0]);
        assert_eq!(first, b.event_id(&offline[0]));
        assert_ne!(first, a.event_id(&offline[1]));
        // A records it (sequence 40); B learns it from the log.
        a.recorded(&offline[0], 40);
        b.fold(&dev(1), false, 40);
        let back = a.heard(&dev(1), t(20)).unwrap();
        assert_eq!(Some(back.clone()), b.heard(&dev(1), t(20)));
        assert_eq!(a.event_id(&back), b.event_id(&back));
        // The next time it goes offline is another transition with another id.
        a.recorded(&back, 41);
        let again = a.due(t(40), t(0), TIMEOUT);
        assert_eq!(again[0].device(), &dev(1));
        assert_ne!(a.event_id(&again[0]), first);
        // An older transition folded late does not undo a newer one.
        a.fold(&dev(1), false, 40);
        assert_eq!(a.devices[&dev(1)].last_transition, 41);
    }

    #[test]
    fn last_seen_never_moves_backwards() {
        let mut l = Liveness::default();
        l.heard(&dev(1), t(10));
        l.restore_last_seen(&dev(1), t(5));
        assert_eq!(l.last_seen().next(), Some((&dev(1), t(10))));
    }
}
