//! How long commands take: as the serving service handled them, and as their callers saw them
//! (the round trip, NATS and queueing included).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use wasmbed_metrics::{Histograms, durations, observe, traced_request_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Handled {
    service: &'static str,
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundTrip {
    command: &'static str,
    outcome: &'static str,
}

static HANDLED: LazyLock<Histograms<Handled>> = LazyLock::new(|| {
    durations(
        "command_handling",
        "Time a service took to handle a command, from receipt to reply sent.",
        traced_request_buckets,
    )
});

static ROUND_TRIP: LazyLock<Histograms<RoundTrip>> = LazyLock::new(|| {
    durations(
        "command_round_trip",
        "Time from sending a command to its reply, as the caller saw it; outcome ok, refused, \
         or unanswered (no responder, timeout, unreadable reply).",
        traced_request_buckets,
    )
});

/// Observes one command handled by `service`; `command` is a routed name (unknown names are
/// counted as `unknown`, so a caller cannot add series at will).
pub(crate) fn handled(service: &'static str, command: &str, known: bool, took: Duration) {
    let command = if known { command } else { "unknown" };
    let histogram = HANDLED.get_or_create(&Handled {
        service,
        command: command.to_owned(),
    });
    observe(&histogram, took, crate::trace::current_trace_id());
}

/// Observes one call's round trip.
pub(crate) fn round_trip(command: &'static str, outcome: &'static str, took: Duration) {
    let histogram = ROUND_TRIP.get_or_create(&RoundTrip { command, outcome });
    observe(&histogram, took, crate::trace::current_trace_id());
}
