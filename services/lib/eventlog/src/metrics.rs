//! How long appends take: from the publish to the log's answer.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use wasmbed_metrics::{Histograms, durations, observe, traced_request_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Appended {
    outcome: &'static str,
}

static APPEND: LazyLock<Histograms<Appended>> = LazyLock::new(|| {
    durations(
        "event_append",
        "Time from publishing an event to the log's answer; outcome stored, duplicate, \
         conflict or publish (no answer: timeout, no stream, connection lost).",
        traced_request_buckets,
    )
});

/// Observes one append's answer.
pub(crate) fn append(outcome: &'static str, took: Duration) {
    let histogram = APPEND.get_or_create(&Appended { outcome });
    observe(&histogram, took, wasmbed_bus::trace::current_trace_id());
}
