//! Which refusals go into the log in full, and which are only counted: per window, the first
//! few of each (reason, source) are recorded as `EnrollmentRefused`, the rest counted and
//! recorded once as `RefusalsCounted` when the window ends. A flood of one kind from one place
//! cannot crowd out the record of another, and one window adds at most
//! `max_sources × (in_full + 1)` events. Pure: the caller brings the clock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;
use wasmbed_schemas::GatewayId;
use wasmbed_schemas::event::{EnrollmentRefused, EventEnvelope, RefusalsCounted};
use wasmbed_schemas::frame::RejectReason;

use crate::{EventLog, ExpectedVersion};

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Record it in full.
    Record,
    /// Count it only.
    Count,
}

/// Refusals of one reason from one source that were only counted in a finished window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// Why.
    pub reason: RejectReason,
    /// Where from.
    pub source: String,
    /// How many beyond those recorded in full.
    pub count: u32,
}

/// The source recorded once a window has seen `max_sources` others.
pub const OTHER_SOURCES: &str = "other";

/// One window of refusals.
#[derive(Debug)]
pub struct RefusalWindow {
    length: Duration,
    in_full: u32,
    max_sources: usize,
    started: Instant,
    seen: Vec<(RejectReason, String, u32)>,
}

/// The address part of `host:port` (or the whole text when it is not one).
pub fn source_of(remote_addr: &str) -> String {
    remote_addr
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| remote_addr.to_owned(), |addr| addr.ip().to_string())
}

impl RefusalWindow {
    /// Windows of `length`; the first `in_full` of each (reason, source) recorded in full; at
    /// most `max_sources` (reason, source) pairs told apart per window.
    pub fn new(length: Duration, in_full: u32, max_sources: usize, now: Instant) -> Self {
        Self {
            length,
            in_full,
            max_sources,
            started: now,
            seen: Vec::new(),
        }
    }

    /// One refusal at `now`: whether to record it, and what the window that ended before it
    /// (if one did) only counted.
    pub fn admit(
        &mut self,
        reason: RejectReason,
        source: &str,
        now: Instant,
    ) -> (Admission, Vec<Counted>) {
        let ended = self.roll(now);
        // Past `max_sources` pairs, a new one is told apart no more.
        let source =
            if self.seen.len() < self.max_sources || self.position(reason, source).is_some() {
                source
            } else {
                OTHER_SOURCES
            };
        let index = self.position(reason, source).unwrap_or_else(|| {
            self.seen.push((reason, source.to_owned(), 0));
            self.seen.len() - 1
        });
        let entry = &mut self.seen[index];
        entry.2 = entry.2.saturating_add(1);
        let admission = if entry.2 <= self.in_full {
            Admission::Record
        } else {
            Admission::Count
        };
        (admission, ended)
    }

    fn position(&self, reason: RejectReason, source: &str) -> Option<usize> {
        self.seen
            .iter()
            .position(|(r, s, _)| *r == reason && s == source)
    }

    /// Whether this window has seen nothing yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Ends the window if it is over at `now`; returns what it only counted.
    pub fn roll(&mut self, now: Instant) -> Vec<Counted> {
        if now.saturating_duration_since(self.started) < self.length {
            return Vec::new();
        }
        self.started = now;
        let in_full = self.in_full;
        std::mem::take(&mut self.seen)
            .into_iter()
            .filter(|(_, _, n)| *n > in_full)
            .map(|(reason, source, n)| Counted {
                reason,
                source,
                count: n - in_full,
            })
            .collect()
    }
}

/// How many (reason, source) pairs a window tells apart.
const MAX_SOURCES: usize = 64;

/// The refusal audit of a service: one window per gateway the refusals came through, and the
/// events they become. The gateway and enrollment both record their refusals through it.
#[derive(Debug)]
pub struct RefusalAudit {
    length: Duration,
    in_full: u32,
    windows: Mutex<HashMap<GatewayId, RefusalWindow>>,
}

impl RefusalAudit {
    /// Windows of `length`, the first `in_full` of each reason from each source in full.
    pub fn new(length: Duration, in_full: u32) -> Self {
        Self {
            length,
            in_full,
            windows: Mutex::default(),
        }
    }

    /// Records `refusal` in full (logged at warn) or only counts it; says which. What a
    /// window that ended before it only counted is recorded first.
    pub async fn record(&self, log: &EventLog, refusal: EnrollmentRefused) -> Admission {
        let source = source_of(&refusal.remote_addr);
        let (admission, ended) = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            windows
                .entry(refusal.gateway_id.clone())
                .or_insert_with(|| {
                    RefusalWindow::new(self.length, self.in_full, MAX_SOURCES, Instant::now())
                })
                .admit(refusal.reason, &source, Instant::now())
        };
        self.record_counted(log, &refusal.gateway_id, ended).await;
        if admission == Admission::Count {
            return admission;
        }
        // A security event: visible under the default filter (warn). Device-chosen text is
        // never in it unescaped.
        warn!(
            gateway = %refusal.gateway_id,
            reason = ?refusal.reason,
            message = ?refusal.message,
            remote = %refusal.remote_addr,
            key = ?refusal.public_key,
            "connection refused"
        );
        let envelope = EventEnvelope::new(refusal.into());
        if let Err(e) = log.append(ExpectedVersion::Any, &envelope).await {
            warn!(error = %e, "refusal not recorded");
        }
        admission
    }

    /// Closes every window when it is over, even if no refusal comes to close it; runs until
    /// dropped.
    pub async fn close_windows(&self, log: &EventLog) {
        let mut tick = tokio::time::interval(self.length);
        loop {
            tick.tick().await;
            let ended: Vec<_> = {
                let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let ended = windows
                    .iter_mut()
                    .map(|(gateway, w)| (gateway.clone(), w.roll(now)))
                    .collect();
                // Gateways with nothing pending are forgotten.
                windows.retain(|_, w| !w.is_empty());
                ended
            };
            for (gateway, counted) in ended {
                self.record_counted(log, &gateway, counted).await;
            }
        }
    }

    /// One `RefusalsCounted` per (reason, source) a finished window only counted; a failed
    /// append is logged, not retried.
    async fn record_counted(&self, log: &EventLog, gateway: &GatewayId, counted: Vec<Counted>) {
        let window_secs = u32::try_from(self.length.as_secs().max(1)).unwrap_or(u32::MAX);
        for c in counted {
            warn!(%gateway, reason = ?c.reason, source = %c.source, count = c.count, "refusals counted, not recorded one by one");
            let event = RefusalsCounted {
                gateway_id: gateway.clone(),
                reason: c.reason,
                source: c.source,
                count: c.count,
                window_secs,
            };
            if let Err(e) = log
                .append(ExpectedVersion::Any, &EventEnvelope::new(event.into()))
                .await
            {
                warn!(error = %e, "refusal count not recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_kind_are_recorded_and_the_rest_counted_per_window() {
        let start = Instant::now();
        let mut window = RefusalWindow::new(Duration::from_secs(10), 2, 3, start);
        let timeout = RejectReason::Timeout;
        let forged = RejectReason::BadSignature;
        let mut admitted = Vec::new();
        for (reason, source) in [
            (timeout, "10.0.0.1"),
            (timeout, "10.0.0.1"),
            (timeout, "10.0.0.1"),
            (timeout, "10.0.0.1"),
            // Not crowded out by the flood above.
            (forged, "10.0.0.1"),
            (timeout, "10.0.0.2"),
            // A fourth pair: told apart no more.
            (timeout, "10.0.0.3"),
            (timeout, "10.0.0.4"),
            (timeout, "10.0.0.5"),
        ] {
            let (admission, ended) = window.admit(reason, source, start);
            assert!(ended.is_empty());
            admitted.push(admission);
        }
        use Admission::{Count, Record};
        assert_eq!(
            admitted,
            [
                Record, Record, Count, Count, Record, Record, Record, Record, Count
            ]
        );
        assert!(window.roll(start + Duration::from_secs(9)).is_empty());
        let (admission, ended) = window.admit(timeout, "10.0.0.1", start + Duration::from_secs(10));
        assert_eq!(admission, Record);
        assert_eq!(
            ended,
            [
                Counted {
                    reason: timeout,
                    source: "10.0.0.1".into(),
                    count: 2
                },
                Counted {
                    reason: timeout,
                    source: OTHER_SOURCES.into(),
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn sources_are_addresses_without_ports() {
        assert_eq!(source_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(source_of("[::1]:5000"), "::1");
        assert_eq!(source_of("somewhere"), "somewhere");
    }
}
