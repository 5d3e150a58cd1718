//! The device index enrollment decides with: rebuilt from device events, kept current by
//! following the log and by applying this service's own appends at once.

use std::collections::HashMap;

use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{DeviceId, PublicKey};

/// What enrollment knows of one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    /// Its id.
    pub device_id: DeviceId,
    /// Its key.
    pub public_key: PublicKey,
    /// It has authenticated at least once.
    pub enrolled: bool,
    /// It was retired.
    pub decommissioned: bool,
    /// Sequence of its last event applied here (the aggregate version).
    pub version: u64,
}

/// Devices by id and by key.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Registry {
    devices: HashMap<DeviceId, DeviceRecord>,
    by_key: HashMap<PublicKey, DeviceId>,
    /// The last sequence the service's in-order follow of the log folded in
    /// ([`Registry::apply_followed`]): what a snapshot holds everything up to. This service's
    /// own appends, applied ahead of the follow, are not counted.
    followed: u64,
}

/// The snapshot layout: bump it with any change to the fields above.
impl wasmbed_eventlog::snapshot::Snapshotted for Registry {
    const FORMAT: u32 = 1;
}

impl Registry {
    /// Folds an event delivered by the service's follow of the log.
    pub fn apply_followed(&mut self, stored: &StoredEvent) {
        self.followed = self.followed.max(stored.sequence);
        self.apply(stored);
    }

    /// The last sequence folded in by [`Registry::apply_followed`].
    pub fn followed(&self) -> u64 {
        self.followed
    }

    /// Folds one device event in. Applying an event twice, or an older one after a newer,
    /// changes nothing.
    pub fn apply(&mut self, stored: &StoredEvent) {
        let sequence = stored.sequence;
        let (device_id, public_key) = match &stored.envelope.event {
            Event::DeviceRegistered(e) => (&e.device_id, Some(e.public_key)),
            Event::DeviceEnrolled(e) => (&e.device_id, Some(e.public_key)),
            Event::DeviceDecommissioned(e) => (&e.device_id, None),
            _ => return,
        };
        let record = match (self.devices.get_mut(device_id), public_key) {
            (Some(record), _) => record,
            (None, Some(public_key)) => {
                self.by_key.insert(public_key, device_id.clone());
                self.devices
                    .entry(device_id.clone())
                    .or_insert(DeviceRecord {
                        device_id: device_id.clone(),
                        public_key,
                        enrolled: false,
                        decommissioned: false,
                        version: 0,
                    })
            }
            (None, None) => return,
        };
        if sequence <= record.version {
            return;
        }
        record.version = sequence;
        match &stored.envelope.event {
            Event::DeviceEnrolled(_) => record.enrolled = true,
            Event::DeviceDecommissioned(_) => record.decommissioned = true,
            _ => {}
        }
    }

    /// The device with this id.
    pub fn get(&self, id: &DeviceId) -> Option<&DeviceRecord> {
        self.devices.get(id)
    }

    /// The device holding this key.
    pub fn by_key(&self, key: &PublicKey) -> Option<&DeviceRecord> {
        self.by_key.get(key).and_then(|id| self.devices.get(id))
    }

    /// How many devices are known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}
