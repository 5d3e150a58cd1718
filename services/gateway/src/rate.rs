//! What a device may send, and how often it may open a session: token buckets kept per device
//! across its sessions, so reconnecting never buys a fresh allowance.
//!
//! - Bytes: every frame costs its encoded length plus a fixed overhead, so a flood of tiny
//!   frames is limited too. A device over its budget is disconnected.
//! - Sessions: a device may open a few sessions at once, then one per interval; a storm of
//!   reconnects from one identity is refused before it writes `DeviceConnected`.
//!
//! The buckets live in this gateway's memory: a device that hops between gateways gets each
//! gateway's allowance (bounded by the number of gateways, not of reconnects).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;
use wasmbed_schemas::DeviceId;

/// What a frame costs beyond its bytes (decoding, a publish).
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// A token bucket: `per_second` sustained, up to `burst` at once; starts full.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
    }

    /// Takes `cost`; `false` (nothing taken) when the bucket does not hold it.
    pub(crate) fn take(&mut self, cost: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether it is full again at `now` (nothing to remember about it).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The limits every device gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub bytes_per_second: u64,
    pub burst_bytes: u64,
    pub sessions_per_second: f64,
    pub session_burst: u32,
}

/// One device's buckets.
#[derive(Debug)]
pub(crate) struct Allowance {
    bytes: TokenBucket,
    sessions: TokenBucket,
}

impl Allowance {
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        Self {
            bytes: TokenBucket::new(
                limits.bytes_per_second as f64,
                limits.burst_bytes as f64,
                now,
            ),
            sessions: TokenBucket::new(
                limits.sessions_per_second,
                f64::from(limits.session_burst),
                now,
            ),
        }
    }

    /// Spends what a frame of `len` bytes costs; `false` (nothing spent) when the budget does
    /// not cover it.
    pub(crate) fn spend(&mut self, len: usize, now: Instant) -> bool {
        self.bytes.take((len + FRAME_OVERHEAD) as f64, now)
    }
}

/// A device's allowance, shared by its sessions on this gateway.
pub(crate) type SharedAllowance = Arc<Mutex<Allowance>>;

/// Locks a device's allowance (a poisoned lock still holds valid numbers).
pub(crate) fn lock(allowance: &SharedAllowance) -> MutexGuard<'_, Allowance> {
    allowance.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every device's allowance on this gateway.
pub(crate) struct Allowances {
    limits: Limits,
    by_device: Mutex<HashMap<DeviceId, SharedAllowance>>,
}

impl Allowances {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            by_device: Mutex::default(),
        }
    }

    /// A new session of `device` at `now`: its allowance, or `None` when it opened too many
    /// sessions lately. Devices with no session and full buckets are forgotten on the way.
    pub(crate) fn open_session(&self, device: &DeviceId, now: Instant) -> Option<SharedAllowance> {
        let mut table = self
            .by_device
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table.len() >= 1024 && table.len().is_power_of_two() {
            table.retain(|_, a| Arc::strong_count(a) > 1 || !lock(a).idle(now));
        }
        let allowance = table
            .entry(device.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Allowance::new(self.limits, now))))
            .clone();
        drop(table);
        let admitted = lock(&allowance).sessions.take(1.0, now);
        admitted.then_some(allowance)
    }
}

impl Allowance {
    fn idle(&mut self, now: Instant) -> bool {
        self.bytes.is_full(now) && self.sessions.is_full(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: Limits = Limits {
        bytes_per_second: 1000,
        burst_bytes: 2000,
        sessions_per_second: 0.5,
        session_burst: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let start = Instant::now();
        let mut budget = Allowance::new(LIMITS, start);
        // 2000 bytes of burst: 10 frames of 136 bytes + overhead 64 = 200 each.
        for _ in 0..10 {
            assert!(budget.spend(136, start));
        }
        assert!(!budget.spend(136, start));
        // A second later, 1000 more: 5 frames.
        let later = start + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(budget.spend(136, later));
        }
        assert!(!budget.spend(136, later));
        // Never more than the burst, however long the pause.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(budget.spend(136, much_later));
        }
        assert!(!budget.spend(136, much_later));
    }

    #[test]
    fn a_reconnect_keeps_the_spent_budget_and_storms_are_refused() {
        let start = Instant::now();
        let allowances = Allowances::new(LIMITS);
        let device = DeviceId::new("flood").unwrap();
        let first = allowances.open_session(&device, start).unwrap();
        assert!(lock(&first).spend(2000 - FRAME_OVERHEAD, start));
        drop(first);
        // The next session starts where the last one stopped: empty.
        let second = allowances.open_session(&device, start).unwrap();
        assert!(!lock(&second).spend(0, start));
        drop(second);
        // Three sessions at once (the burst), then one every two seconds.
        assert!(allowances.open_session(&device, start).is_some());
        assert!(allowances.open_session(&device, start).is_none());
        let later = start + Duration::from_secs(2);
        assert!(allowances.open_session(&device, later).is_some());
        assert!(allowances.open_session(&device, later).is_none());
        // Another device is not affected.
        let other = DeviceId::new("quiet").unwrap();
        assert!(allowances.open_session(&other, start).is_some());
    }
}
