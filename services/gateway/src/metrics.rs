//! The gateway's figures for `/metrics`: counters and histograms of this gateway instance, in a
//! registry of its own (labelled with its id), served after the process's families.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use wasmbed_metrics::{Counters, device_buckets, request_buckets, seconds};
use wasmbed_schemas::frame::RejectReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    reason: &'static str,
}

fn label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnknownDevice => "unknown_device",
        RejectReason::Decommissioned => "decommissioned",
        RejectReason::BadSignature => "bad_signature",
        RejectReason::ProtocolViolation => "protocol_violation",
        RejectReason::Timeout => "timeout",
        RejectReason::Unavailable => "unavailable",
        RejectReason::RateLimited => "rate_limited",
        _ => "other",
    }
}

/// Every refusal reason, so each has a series (at 0) from the start.
const REASONS: [RejectReason; 7] = [
    RejectReason::UnknownDevice,
    RejectReason::Decommissioned,
    RejectReason::BadSignature,
    RejectReason::ProtocolViolation,
    RejectReason::Timeout,
    RejectReason::Unavailable,
    RejectReason::RateLimited,
];

/// The gateway's counters and histograms.
pub(crate) struct Metrics {
    pub connections: Counter,
    pub over_capacity: Counter,
    pub cut_off: Counter,
    pub sessions_active: Gauge,
    pub sessions_established: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub telemetry_messages: Counter,
    pub telemetry_bytes: Counter,
    pub audit_suppressed: Counter,
    pub rate_limited: Counter,
    /// From the TCP accept to the session open (TLS, authentication, the connect event).
    pub session_setup: Histogram,
    /// From a telemetry frame decoded to its message handed to NATS.
    pub telemetry_forward: Histogram,
    refused: Counters<Refusal>,
    registry: Registry,
}

impl Metrics {
    /// The figures of gateway `gateway`.
    pub(crate) fn new(gateway: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "wasmbed_gateway",
            [(Cow::Borrowed("gateway"), Cow::Owned(gateway.to_owned()))].into_iter(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let connections = counter("connections", "TCP connections accepted.");
        let over_capacity = counter(
            "over_capacity",
            "Connections closed because max_sessions was reached.",
        );
        let cut_off = counter(
            "cut_off",
            "Connections closed at once because the gateway was cut off from the bus.",
        );
        let sessions_established = counter("sessions_established", "Sessions authenticated.");
        let frames_in = counter(
            "frames_in",
            "Frames received from devices after authentication.",
        );
        let frames_out = counter("frames_out", "Frames sent to devices after authentication.");
        let telemetry_messages = counter("telemetry_messages", "Telemetry messages published.");
        let telemetry_bytes = counter("telemetry_bytes", "Telemetry payload bytes published.");
        let rate_limited = counter(
            "rate_limited",
            "Sessions closed for exceeding their uplink budget (a flood).",
        );
        let audit_suppressed = counter(
            "audit_suppressed",
            "Refusals not written to the log because of the audit rate limit.",
        );
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Authenticated sessions open now.",
            sessions_active.clone(),
        );
        let refused = Counters::<Refusal>::default();
        for reason in REASONS {
            drop(refused.get_or_create(&Refusal {
                reason: label(reason),
            }));
        }
        registry.register(
            "refused",
            "Connections refused, by reason.",
            refused.clone(),
        );
        let session_setup = device_buckets();
        registry.register_with_unit(
            "session_setup",
            "Time from a device's TCP connection accepted to its session open (TLS 1.3, \
             authentication, the connect event stored).",
            Unit::Seconds,
            session_setup.clone(),
        );
        let telemetry_forward = request_buckets();
        registry.register_with_unit(
            "telemetry_forward",
            "Time from a device's telemetry frame read to its message handed to NATS (waits \
             when the NATS connection is backed up).",
            Unit::Seconds,
            telemetry_forward.clone(),
        );
        Self {
            connections,
            over_capacity,
            cut_off,
            sessions_active,
            sessions_established,
            frames_in,
            frames_out,
            telemetry_messages,
            telemetry_bytes,
            audit_suppressed,
            rate_limited,
            session_setup,
            telemetry_forward,
            refused,
            registry,
        }
    }

    pub(crate) fn refused(&self, reason: RejectReason) {
        self.refused
            .get_or_create(&Refusal {
                reason: label(reason),
            })
            .inc();
    }

    /// Observes `took` in `histogram`.
    pub(crate) fn observe(histogram: &Histogram, took: Duration) {
        histogram.observe(seconds(took));
    }

    /// The exposition text: the process's families, then this gateway's.
    pub(crate) fn render(&self) -> String {
        wasmbed_metrics::encode_with(&[&self.registry])
    }
}
