//! Each session's uplink budget: a token bucket of bytes, so one device cannot flood the bus
//! (or the gateway's CPU) at the expense of the others. Every frame costs its encoded length
//! plus a fixed overhead, so a flood of tiny frames is limited too.

use tokio::time::Instant;

/// What a frame costs beyond its bytes (decoding, a publish).
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// A token bucket over bytes.
pub(crate) struct UplinkBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl UplinkBudget {
    /// `per_second` sustained, up to `burst` at once; starts full.
    pub(crate) fn new(per_second: u64, burst: u64, now: Instant) -> Self {
        Self {
            per_second: per_second as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Spends what a frame of `len` bytes costs; `false` (nothing spent) when the budget does
    /// not cover it.
    pub(crate) fn spend(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        let cost = (len + FRAME_OVERHEAD) as f64;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let start = Instant::now();
        let mut budget = UplinkBudget::new(1000, 2000, start);
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
}
