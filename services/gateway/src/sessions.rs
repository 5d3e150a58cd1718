//! The sessions a gateway holds, one per device: a newer session of the same device replaces
//! the older one, and a revoked device's session is ended from outside its loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use wasmbed_schemas::DeviceId;

/// Why a session was told to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A newer session of the same device took its place.
    Replaced,
    /// The device may no longer connect (decommissioned, with the operator's reason).
    Revoked(String),
}

type Table = HashMap<DeviceId, (u64, oneshot::Sender<Ended>)>;

/// Sessions by device.
#[derive(Default)]
pub(crate) struct Sessions {
    next_id: AtomicU64,
    by_device: Mutex<Table>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.by_device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session of `device`; returns its id in this table and a signal that fires
    /// when it must end.
    pub(crate) fn register(&self, device: &DeviceId) -> (u64, oneshot::Receiver<Ended>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Some((_, older)) = self.lock().insert(device.clone(), (id, tx)) {
            let _ = older.send(Ended::Replaced);
        }
        (id, rx)
    }

    /// Forgets session `id` of `device`, unless a newer one has taken its place.
    pub(crate) fn unregister(&self, device: &DeviceId, id: u64) {
        let mut table = self.lock();
        if table.get(device).is_some_and(|(current, _)| *current == id) {
            table.remove(device);
        }
    }

    /// Ends the session of `device`, if this gateway holds one; says whether it did.
    pub(crate) fn revoke(&self, device: &DeviceId, reason: String) -> bool {
        let Some((_, session)) = self.lock().remove(device) else {
            return false;
        };
        session.send(Ended::Revoked(reason)).is_ok()
    }

    /// How many devices have a session.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_session_replaces_the_older_and_revocation_ends_the_current() {
        let sessions = Sessions::default();
        let device = DeviceId::new("dev-1").unwrap();
        let (first, mut first_ended) = sessions.register(&device);
        let (second, mut second_ended) = sessions.register(&device);
        assert_eq!(first_ended.try_recv(), Ok(Ended::Replaced));
        // The replaced session's own unregister leaves the newer one in place.
        sessions.unregister(&device, first);
        assert_eq!(sessions.len(), 1);
        assert!(sessions.revoke(&device, "stolen".into()));
        assert_eq!(second_ended.try_recv(), Ok(Ended::Revoked("stolen".into())));
        assert_eq!(sessions.len(), 0);
        assert!(!sessions.revoke(&device, "again".into()));
        sessions.unregister(&device, second);
        assert_eq!(sessions.len(), 0);
    }
}
