//! How long a deployment takes on one device: from its version requested to the device
//! reporting it running (or failed).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use wasmbed_metrics::{Histograms, durations, observe, traced_device_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

static DEPLOYMENT: LazyLock<Histograms<Outcome>> = LazyLock::new(|| {
    durations(
        "deployment",
        "Time from a version requested of a device (DeploymentRequested) to the device \
         reporting it running or failed; rollout waves included.",
        traced_device_buckets,
    )
});

/// Observes a deployment that reached `outcome` (`running`, `failed`), requested at
/// `requested`.
pub(crate) fn deployment_done(outcome: &'static str, requested: DateTime<Utc>) {
    let took = (Utc::now() - requested).to_std().unwrap_or_default();
    let histogram = DEPLOYMENT.get_or_create(&Outcome { outcome });
    observe(&histogram, took, wasmbed_bus::trace::current_trace_id());
}
