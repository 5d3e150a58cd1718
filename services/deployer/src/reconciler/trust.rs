//! Bringing devices' trusted publisher keys up to the fleet's: each connected device that
//! trusts keys and holds an older serial than the fleet gets the rotations it lacks, in order.
//!
//! A device answers every rotation with its `DeviceInfo` (the serial it holds now), which is
//! recorded as `DeviceDescribed`; that, or its next session, brings it back here. What was
//! pushed is remembered per session and serial, so a device that cannot apply a rotation is
//! not sent it again and again within one session.

use wasmbed_schemas::frame::Frame;

use super::Reconciler;

impl Reconciler {
    /// Sends the missing rotations to the devices marked since the last pass (all of them
    /// when the fleet's chain grew).
    pub(super) async fn push_trust(&mut self) {
        let sends = {
            let state = self.state.clone();
            let fleet = state.fleet();
            let chain = &fleet.publishers;
            if chain.serial != self.trust_serial {
                self.trust_serial = chain.serial;
                self.trust_due.extend(fleet.devices.keys().cloned());
            }
            if self.trust_due.is_empty() {
                return;
            }
            let mut sends = Vec::new();
            for id in self.trust_due.drain() {
                let Some(device) = fleet.devices.get(&id) else {
                    continue;
                };
                let held = device.trust_serial;
                if !device.connected() || held == 0 || held >= chain.serial {
                    continue;
                }
                let pushed = (device.session.clone(), held);
                if self.trust_pushed.get(&id) == Some(&pushed) {
                    continue;
                }
                self.trust_pushed.insert(id.clone(), pushed);
                for rotation in chain.missing_after(held) {
                    sends.push((id.clone(), Frame::TrustUpdate(Box::new(rotation.clone()))));
                }
            }
            sends
        };
        for (device, frame) in sends {
            self.send(&device, &frame, None).await;
        }
    }
}
