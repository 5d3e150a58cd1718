//! Refusal audit events, rate-limited so a flood of bad connections cannot flood the log.

use std::sync::Mutex;
use std::time::Instant;

use tracing::warn;
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_schemas::PublicKey;
use wasmbed_schemas::event::{EnrollmentRefused, EventEnvelope};
use wasmbed_schemas::frame::RejectReason;

use crate::Gateway;
use crate::metrics::inc;

/// At most `per_second` events in each one-second window.
pub(crate) struct AuditLimiter {
    per_second: u32,
    window: Mutex<(Instant, u32)>,
}

impl AuditLimiter {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    fn admit(&self) -> bool {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.0).as_secs() >= 1 {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= self.per_second
    }
}

impl Gateway {
    /// Records a refusal this gateway decided (enrollment records its own).
    pub(crate) async fn audit(
        &self,
        public_key: Option<PublicKey>,
        reason: RejectReason,
        message: &str,
        remote_addr: &str,
    ) {
        if !self.audit_limiter.admit() {
            inc(&self.metrics.audit_suppressed);
            return;
        }
        // A security event: visible under the default filter (warn), as rate-limited as the
        // audit events. Device-chosen text is never in it unescaped.
        warn!(
            ?reason,
            message = ?message,
            remote = %remote_addr,
            key = ?public_key,
            "connection refused"
        );
        let event = EnrollmentRefused {
            gateway_id: self.config.gateway_id.clone(),
            public_key,
            reason,
            message: message.to_owned(),
            remote_addr: remote_addr.to_owned(),
        };
        if let Err(e) = self
            .log
            .append(ExpectedVersion::Any, &EventEnvelope::new(event.into()))
            .await
        {
            warn!(error = %e, "refusal not recorded");
        }
    }
}
