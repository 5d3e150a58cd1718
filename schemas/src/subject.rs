//! Every NATS subject, stream, bucket and header name of Wasmbed.
//!
//! Publishers and subscribers both build subjects here, from typed ids, so a name is spelled in
//! exactly one place. The layout (see `docs/adr/0001-subjects-and-encodings.md`):
//!
//! | what | subject | encoding |
//! |---|---|---|
//! | events (the log) | `wasmbed.events.v1.<kind>.<id>` | JSON [`EventEnvelope`](crate::event) |
//! | commands (request/reply) | `wasmbed.cmd.v1.<service>.<command>` | JSON |
//! | telemetry | `wasmbed.telemetry.<device>.<app>` | the app's own bytes; ids in headers |
//! | downlink to a device | `wasmbed.device.v1.downlink.<device>` | one encoded frame |
//! | uplink from a device | `wasmbed.device.v1.uplink.<device>` | one encoded frame |
//! | heartbeats | `wasmbed.device.v1.heartbeat.<device>` | JSON |
//! | device logs | `wasmbed.device.v1.log.<device>` | JSON |
//! | emulator UART | `wasmbed.emulator.v1.uart.<device>` | raw UART text |
//!
//! Telemetry has its own short prefix and no version token so that a plain
//! `nats sub 'wasmbed.telemetry.>'` shows it, and so that the high-volume stream never shares a
//! wildcard with the event log.

use alloc::format;
use alloc::string::String;

use crate::aggregate::{AggregateId, AggregateKind};
use crate::ids::{AppId, DeviceId};

/// The JetStream stream holding the event log.
pub const EVENTS_STREAM: &str = "WASMBED_EVENTS";
/// Everything in the event log.
pub const EVENTS_ALL: &str = "wasmbed.events.v1.>";
/// The JetStream stream holding telemetry history (separate from the log, with its own limits).
pub const TELEMETRY_STREAM: &str = "WASMBED_TELEMETRY";

/// The JetStream advisory published when `stream` has a new leader (in a cluster, after its
/// leader's node died): consumers that lived there are gone and readers start new ones.
pub fn stream_leader_elected(stream: &str) -> String {
    format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}")
}
/// All telemetry.
pub const TELEMETRY_ALL: &str = "wasmbed.telemetry.>";
/// The KV bucket of the latest telemetry per device and app (key `<device>.<app>`).
pub const TELEMETRY_LATEST_BUCKET: &str = "wasmbed-telemetry-latest";
/// The object store holding WASM modules, keyed by SHA-256.
pub const MODULES_OBJECT_STORE: &str = "wasmbed-modules";
/// The object store holding snapshots of read models, one object per model (the service's
/// name): a cache of the log, checked against it before use.
pub const SNAPSHOTS_OBJECT_STORE: &str = "wasmbed-snapshots";
/// KV bucket: when each device was last heard (key: device id; value: JSON time), kept by the
/// telemetry service.
pub const LIVENESS_BUCKET: &str = "wasmbed-liveness";
/// KV bucket: each application on each device as last reported (`<app>.<device>`).
pub const DEPLOYMENTS_BUCKET: &str = "wasmbed-deployments";
/// KV bucket: the leases that let one instance of a service act (key: the lease's name, the
/// service's own; value: the holder). Values expire unless renewed.
pub const LEASES_BUCKET: &str = "wasmbed-leases";

/// The subject of one aggregate's events.
pub fn event(aggregate: &AggregateId) -> String {
    format!(
        "wasmbed.events.v1.{}.{}",
        aggregate.kind().as_str(),
        aggregate.subject_tail()
    )
}

/// All events of one kind of aggregate.
pub fn events_of_kind(kind: AggregateKind) -> String {
    format!("wasmbed.events.v1.{}.>", kind.as_str())
}

/// Telemetry of one app on one device.
pub fn telemetry(device: &DeviceId, app: &AppId) -> String {
    format!("wasmbed.telemetry.{device}.{app}")
}

/// The device and app tokens of a telemetry subject (`wasmbed.telemetry.<device>.<app>`).
pub fn parse_telemetry(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("wasmbed.telemetry.")?;
    let (device, app) = rest.split_once('.')?;
    (!app.contains('.')).then_some((device, app))
}

/// All telemetry of one device.
pub fn telemetry_of_device(device: &DeviceId) -> String {
    format!("wasmbed.telemetry.{device}.*")
}

/// The services that answer commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// Device identities and the CA.
    Enrollment,
    /// Applications and deployments.
    Deployer,
    /// Emulated devices.
    RenodeManager,
}

impl Service {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrollment => "enrollment",
            Self::Deployer => "deployer",
            Self::RenodeManager => "renode-manager",
        }
    }
}

/// Whether `subject` is one NATS lets a client publish on: tokens separated by dots, none
/// empty, no wildcard, no white space or control character. Every builder here yields one
/// for valid ids; the fuzz targets hold them to it on decoded input.
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
        })
}

/// Whether `subject` falls under `pattern`, as nats-server decides it: `*` stands for one
/// token, a final `>` for one or more.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (want, Some(have)) if want == have => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// The request subject of one command.
pub fn command(service: Service, name: &str) -> String {
    format!("wasmbed.cmd.v1.{}.{name}", service.as_str())
}

/// Every command of one service (what that service subscribes to).
pub fn commands_of(service: Service) -> String {
    format!("wasmbed.cmd.v1.{}.*", service.as_str())
}

/// Frames addressed to one device; the gateway holding its session subscribes.
pub fn device_downlink(device: &DeviceId) -> String {
    format!("wasmbed.device.v1.downlink.{device}")
}

/// Frames addressed to any device (what a gateway may subscribe to).
pub const DEVICE_DOWNLINK_ALL: &str = "wasmbed.device.v1.downlink.*";

/// Frames from one device that the gateway does not translate itself (app status, module
/// acks, device info, errors), as encoded frames, for the deployer.
pub fn device_uplink(device: &DeviceId) -> String {
    format!("wasmbed.device.v1.uplink.{device}")
}

/// Uplink frames of every device.
pub const DEVICE_UPLINK_ALL: &str = "wasmbed.device.v1.uplink.*";

/// Heartbeats of one device.
pub fn device_heartbeat(device: &DeviceId) -> String {
    format!("wasmbed.device.v1.heartbeat.{device}")
}

/// Heartbeats of every device.
pub const DEVICE_HEARTBEAT_ALL: &str = "wasmbed.device.v1.heartbeat.*";

/// Log lines of one device.
pub fn device_log(device: &DeviceId) -> String {
    format!("wasmbed.device.v1.log.{device}")
}

/// Log lines of every device.
pub const DEVICE_LOG_ALL: &str = "wasmbed.device.v1.log.*";

/// A device may no longer hold a session (enrollment decommissioned it): JSON
/// `SessionRevoked`. Every gateway subscribes; the one holding a session of the device ends it.
pub fn device_revoked(device: &DeviceId) -> String {
    format!("wasmbed.device.v1.revoked.{device}")
}

/// Revocations of every device.
pub const DEVICE_REVOKED_ALL: &str = "wasmbed.device.v1.revoked.*";

/// UART output of one device's emulator.
pub fn emulator_uart(device: &DeviceId) -> String {
    format!("wasmbed.emulator.v1.uart.{device}")
}

/// UART output of every emulator.
pub const EMULATOR_UART_ALL: &str = "wasmbed.emulator.v1.uart.*";

/// NATS header names.
pub mod header {
    /// JetStream de-duplication id (the event id).
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// JetStream optimistic concurrency: the expected last sequence on the subject.
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
    /// The event type name, so consumers can filter without decoding.
    pub const EVENT_TYPE: &str = "Wasmbed-Event-Type";
    /// The device a telemetry message came from.
    pub const DEVICE: &str = "Wasmbed-Device";
    /// The application a telemetry message came from.
    pub const APP: &str = "Wasmbed-App";
    /// The application's sequence number of a telemetry message.
    pub const SEQUENCE: &str = "Wasmbed-Seq";
    /// The application's own topic name of a telemetry message.
    pub const TOPIC: &str = "Wasmbed-Topic";
    /// W3C Trace Context: the trace and parent span a message belongs to, on commands, replies,
    /// events and device downlink/uplink messages (`00-<trace id>-<span id>-<flags>`).
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C Trace Context: vendor-specific trace state, passed on unchanged.
    pub const TRACESTATE: &str = "tracestate";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_the_server_matches_them() {
        for (pattern, subject, matched) in [
            (
                "wasmbed.events.v1.device.>",
                "wasmbed.events.v1.device.dev-1",
                true,
            ),
            (
                "wasmbed.events.v1.device.>",
                "wasmbed.events.v1.device.a.b",
                true,
            ),
            (
                "wasmbed.events.v1.device.>",
                "wasmbed.events.v1.device",
                false,
            ),
            (
                "wasmbed.events.v1.device.>",
                "wasmbed.events.v1.device_key.ab",
                false,
            ),
            ("wasmbed.events.v1.*.x", "wasmbed.events.v1.app.x", true),
            ("wasmbed.events.v1.*.x", "wasmbed.events.v1.app.y", false),
            ("wasmbed.events.v1.*.x", "wasmbed.events.v1.app.x.z", false),
            ("wasmbed.events.v1.*", "wasmbed.events.v1", false),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
            (">", "a", true),
        ] {
            assert_eq!(matches(pattern, subject), matched, "{pattern} ~ {subject}");
        }
    }

    #[test]
    fn valid_subjects_have_plain_tokens() {
        for (subject, valid) in [
            ("wasmbed.telemetry.dev-1.app", true),
            ("wasmbed", true),
            ("", false),
            ("wasmbed..x", false),
            ("wasmbed.x.", false),
            ("wasmbed.*", false),
            ("wasmbed.>", false),
            ("wasmbed.a b", false),
            ("wasmbed.a\r\nPUB x", false),
        ] {
            assert_eq!(is_valid_subject(subject), valid, "{subject:?}");
        }
    }

    #[test]
    fn subjects_put_the_target_id_last() {
        let d = DeviceId::new("dev-1").unwrap();
        let a = AppId::new("blink").unwrap();
        assert_eq!(
            event(&AggregateId::Device(d.clone())),
            "wasmbed.events.v1.device.dev-1"
        );
        assert_eq!(
            event(&AggregateId::Deployment {
                app: a.clone(),
                device: d.clone()
            }),
            "wasmbed.events.v1.deployment.blink.dev-1"
        );
        assert_eq!(
            events_of_kind(AggregateKind::Gateway),
            "wasmbed.events.v1.gateway.>"
        );
        assert_eq!(telemetry(&d, &a), "wasmbed.telemetry.dev-1.blink");
        assert_eq!(
            parse_telemetry(&telemetry(&d, &a)),
            Some(("dev-1", "blink"))
        );
        assert_eq!(parse_telemetry("wasmbed.telemetry.a.b.c"), None);
        assert_eq!(parse_telemetry("wasmbed.events.v1.device.x"), None);
        assert_eq!(
            command(Service::RenodeManager, "start_emulator"),
            "wasmbed.cmd.v1.renode-manager.start_emulator"
        );
        assert_eq!(device_downlink(&d), "wasmbed.device.v1.downlink.dev-1");
    }

    #[test]
    fn every_event_subject_is_inside_the_events_stream() {
        let s = event(&AggregateId::Emulator(DeviceId::new("x").unwrap()));
        assert!(s.starts_with(EVENTS_ALL.trim_end_matches('>')));
        assert!(!TELEMETRY_ALL.starts_with(EVENTS_ALL.trim_end_matches('>')));
    }
}
