//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmbed_schemas::frame::RejectReason;

/// Every refusal reason, for per-reason counters.
const REASONS: [(RejectReason, &str); 7] = [
    (RejectReason::UnknownDevice, "unknown_device"),
    (RejectReason::Decommissioned, "decommissioned"),
    (RejectReason::BadSignature, "bad_signature"),
    (RejectReason::ProtocolViolation, "protocol_violation"),
    (RejectReason::Timeout, "timeout"),
    (RejectReason::Unavailable, "unavailable"),
    (RejectReason::RateLimited, "rate_limited"),
];

/// The gateway's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub connections: AtomicU64,
    pub over_capacity: AtomicU64,
    pub cut_off: AtomicU64,
    pub sessions_active: AtomicU64,
    pub sessions_established: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub telemetry_messages: AtomicU64,
    pub telemetry_bytes: AtomicU64,
    pub audit_suppressed: AtomicU64,
    pub rate_limited: AtomicU64,
    refused: [AtomicU64; REASONS.len()],
}

pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn refused(&self, reason: RejectReason) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == reason) {
            inc(&self.refused[i]);
        }
    }

    /// The exposition text.
    pub(crate) fn render(&self, gateway: &str) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(
                out,
                "{name}{{gateway=\"{gateway}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        };
        metric(
            "wasmbed_gateway_connections_total",
            "counter",
            "TCP connections accepted.",
            &self.connections,
        );
        metric(
            "wasmbed_gateway_over_capacity_total",
            "counter",
            "Connections closed because max_sessions was reached.",
            &self.over_capacity,
        );
        metric(
            "wasmbed_gateway_cut_off_total",
            "counter",
            "Connections closed at once because the gateway was cut off from the bus.",
            &self.cut_off,
        );
        metric(
            "wasmbed_gateway_sessions_active",
            "gauge",
            "Authenticated sessions open now.",
            &self.sessions_active,
        );
        metric(
            "wasmbed_gateway_sessions_established_total",
            "counter",
            "Sessions authenticated.",
            &self.sessions_established,
        );
        metric(
            "wasmbed_gateway_frames_in_total",
            "counter",
            "Frames received from devices after authentication.",
            &self.frames_in,
        );
        metric(
            "wasmbed_gateway_frames_out_total",
            "counter",
            "Frames sent to devices after authentication.",
            &self.frames_out,
        );
        metric(
            "wasmbed_gateway_telemetry_messages_total",
            "counter",
            "Telemetry messages published.",
            &self.telemetry_messages,
        );
        metric(
            "wasmbed_gateway_telemetry_bytes_total",
            "counter",
            "Telemetry payload bytes published.",
            &self.telemetry_bytes,
        );
        metric(
            "wasmbed_gateway_rate_limited_total",
            "counter",
            "Sessions closed for exceeding their uplink budget (a flood).",
            &self.rate_limited,
        );
        metric(
            "wasmbed_gateway_audit_suppressed_total",
            "counter",
            "Refusals not written to the log because of the audit rate limit.",
            &self.audit_suppressed,
        );
        let name = "wasmbed_gateway_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections refused, by reason.\n# TYPE {name} counter"
        );
        for ((_, label), value) in REASONS.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "{name}{{gateway=\"{gateway}\",reason=\"{label}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}
