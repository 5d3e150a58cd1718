//! JSON Schemas of everything JSON-encoded on the bus, for consumers not written in Rust.
//!
//! The checked-in copies live in `schemas/json/`; the `json_schemas_are_current` test fails when
//! they drift from the types and rewrites them when run with `WASMBED_BLESS=1`.

use crate::command::{CommandError, command_schemas};
use crate::device_message::{
    DeploymentStatus, DeviceLogLine, HeartbeatReport, LatestTelemetry, SessionRevoked,
};
use crate::event::EventEnvelope;
use crate::release::SignedRelease;
use crate::release::rotation::SignedRotation;

/// Every schema, as `(path under schemas/json, schema)`.
pub fn all() -> Vec<(String, schemars::Schema)> {
    let mut out = vec![
        (
            "event-envelope.json".to_owned(),
            schemars::schema_for!(EventEnvelope),
        ),
        (
            "command-error.json".to_owned(),
            schemars::schema_for!(CommandError),
        ),
    ];
    out.push((
        "heartbeat-report.json".to_owned(),
        schemars::schema_for!(HeartbeatReport),
    ));
    out.push((
        "device-log-line.json".to_owned(),
        schemars::schema_for!(DeviceLogLine),
    ));
    out.push((
        "session-revoked.json".to_owned(),
        schemars::schema_for!(SessionRevoked),
    ));
    out.push((
        "latest-telemetry.json".to_owned(),
        schemars::schema_for!(LatestTelemetry),
    ));
    out.push((
        "deployment-status.json".to_owned(),
        schemars::schema_for!(DeploymentStatus),
    ));
    // Files tools write and read: `wasmbed release sign` and `wasmbed release rotate`.
    out.push((
        "release.json".to_owned(),
        schemars::schema_for!(SignedRelease),
    ));
    out.push((
        "trust-rotation.json".to_owned(),
        schemars::schema_for!(SignedRotation),
    ));
    command_schemas(&mut out);
    out
}

/// A schema as the pretty JSON text checked in.
pub fn render(schema: &schemars::Schema) -> String {
    format!("{:#}\n", schema.as_value())
}
