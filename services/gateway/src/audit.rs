//! Refusal audit events through `wasmbed_eventlog::refusals::RefusalAudit`: per window, the
//! first few of each reason from each source in full (`EnrollmentRefused`, logged at warn), the
//! rest counted into one `RefusalsCounted`, so a flood cannot flood the log or hide another.

use wasmbed_eventlog::refusals::Admission;
use wasmbed_schemas::PublicKey;
use wasmbed_schemas::event::EnrollmentRefused;
use wasmbed_schemas::frame::RejectReason;

use crate::Gateway;

impl Gateway {
    /// Records a refusal this gateway decided (enrollment records its own).
    pub(crate) async fn audit(
        &self,
        public_key: Option<PublicKey>,
        reason: RejectReason,
        message: &str,
        remote_addr: &str,
    ) {
        let refusal = EnrollmentRefused {
            gateway_id: self.config.gateway_id.clone(),
            public_key,
            reason,
            message: message.to_owned(),
            remote_addr: remote_addr.to_owned(),
        };
        if self.refusals.record(&self.log, refusal).await == Admission::Count {
            self.metrics.audit_suppressed.inc();
        }
    }
}
