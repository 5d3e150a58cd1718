//! Reconnect back-off: exponential, capped, with jitter.

/// Delays between reconnect attempts: attempt `n` waits between half and all of
/// `min(max, base · 2ⁿ)`, the half chosen by a random number the caller supplies, so a fleet
/// that lost its gateway at once does not come back at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
}

impl Backoff {
    /// A policy starting at `base_ms` and never exceeding `max_ms`.
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `random` is any uniformly random number.
    pub fn next_delay_ms(&mut self, random: u32) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(32))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + (u64::from(random) % (ceiling - half + 1))
    }

    /// After a successful connection: start again from `base_ms`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_capped_and_are_jittered() {
        let mut b = Backoff::new(100, 1_000);
        let low: alloc::vec::Vec<u64> = (0..6).map(|_| b.next_delay_ms(0)).collect();
        assert_eq!(low, [50, 100, 200, 400, 500, 500]);
        let mut b = Backoff::new(100, 1_000);
        let high: alloc::vec::Vec<u64> = (0..6).map(|_| b.next_delay_ms(u32::MAX)).collect();
        assert!(high.iter().zip(&low).all(|(h, l)| h >= l));
        assert!(high.iter().all(|d| *d <= 1_000));
        b.reset();
        assert!(b.next_delay_ms(7) <= 100);
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(u64::MAX / 2, u64::MAX);
        for _ in 0..100 {
            let _ = b.next_delay_ms(u32::MAX);
        }
    }
}
