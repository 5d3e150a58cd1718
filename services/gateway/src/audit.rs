//! Refusal audit events: per window, the first few of each reason from each source in full
//! (`EnrollmentRefused`, logged at warn), the rest counted into one `RefusalsCounted`
//! (`wasmbed_eventlog::refusals`), so a flood cannot flood the log or hide another refusal.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use tracing::warn;
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_eventlog::refusals::{Admission, RefusalWindow, record_counted, source_of};
use wasmbed_schemas::PublicKey;
use wasmbed_schemas::event::{EnrollmentRefused, EventEnvelope};
use wasmbed_schemas::frame::RejectReason;

use crate::Gateway;
use crate::metrics::inc;

/// How many sources a window tells apart.
const MAX_SOURCES: usize = 64;

/// The refusal window of one gateway.
pub(crate) struct AuditWindow(Mutex<RefusalWindow>);

impl AuditWindow {
    pub(crate) fn new(config: &crate::GatewayConfig) -> Self {
        Self(Mutex::new(RefusalWindow::new(
            config.audit_window,
            config.audit_in_full,
            MAX_SOURCES,
            Instant::now(),
        )))
    }

    fn with<T>(&self, f: impl FnOnce(&mut RefusalWindow) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
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
        let source = source_of(remote_addr);
        let (admission, ended, secs) = self.audit_window.with(|w| {
            let (admission, ended) = w.admit(reason, &source, Instant::now());
            (admission, ended, w.length_secs())
        });
        record_counted(&self.log, &self.config.gateway_id, secs, ended).await;
        if admission == Admission::Count {
            inc(&self.metrics.audit_suppressed);
            return;
        }
        // A security event: visible under the default filter (warn). Device-chosen text is
        // never in it unescaped.
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

    /// Closes the refusal window when it is over, even if no refusal comes to close it.
    pub(crate) async fn close_audit_windows(&self) {
        let mut tick = tokio::time::interval(self.config.audit_window);
        loop {
            tick.tick().await;
            let (ended, secs) = self
                .audit_window
                .with(|w| (w.roll(Instant::now()), w.length_secs()));
            record_counted(&self.log, &self.config.gateway_id, secs, ended).await;
        }
    }
}
