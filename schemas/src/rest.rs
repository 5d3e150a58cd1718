//! The REST facade's bodies (`services/api`): what `GET` returns and what `POST` takes beyond
//! the bus commands it forwards. JSON, camelCase-free snake_case like the rest of the bus.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bytes::{Blob, PublicKey, Sha256};
use crate::command::CommandError;
use crate::event::{EventEnvelope, Target};
use crate::frame::Limits;
use crate::ids::{AppId, DeviceId, GatewayId};
pub use crate::rollout::view::{
    AbortReason, NewRollout, RolloutState, RolloutView, WaveState, WaveView,
};

/// Where a device is, as the log tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Registered, never connected.
    Registered,
    /// It has a session and is heard from.
    Online,
    /// Its session ended.
    Disconnected,
    /// It missed its heartbeats.
    Offline,
    /// Retired.
    Decommissioned,
}

/// Where one application is on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentPhase {
    /// Requested; nothing sent yet.
    Requested,
    /// Does not fit the device.
    Refused,
    /// Module bytes are flowing.
    Transferring,
    /// The device holds the verified module.
    Delivered,
    /// Running.
    Running,
    /// Failed on the device or in delivery.
    Failed,
    /// Asked to stop.
    Stopping,
    /// Stopped.
    Stopped,
}

/// One application on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentView {
    /// The application version concerned.
    pub version: u32,
    /// Where it is.
    pub phase: DeploymentPhase,
    /// Why it failed or was refused.
    pub reason: Option<String>,
    /// When the phase last changed.
    pub since: DateTime<Utc>,
    /// The device is online now, so `phase` is what it says now. When false, `phase` is its
    /// last report, as of `since`: an app last seen `running` on a device that has since gone
    /// away is not known to run.
    #[serde(default)]
    pub current: bool,
}

/// A device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceView {
    /// Its id.
    pub device_id: DeviceId,
    /// Its public key.
    pub public_key: Option<PublicKey>,
    /// MCU type.
    pub mcu: Option<String>,
    /// Labels for targeting.
    pub labels: BTreeMap<String, String>,
    /// Where it is.
    pub state: DeviceState,
    /// The gateway of its session, while it has one.
    pub gateway_id: Option<GatewayId>,
    /// Its session (as in `DeviceConnected`), while it has one.
    pub session_id: Option<String>,
    /// RAM for applications, as it reported.
    pub app_ram_bytes: Option<u32>,
    /// Firmware, as it reported.
    pub firmware: Option<String>,
    /// The serial of the last trust rotation it applied (0: it runs unsigned modules).
    #[serde(default)]
    pub trust_serial: u32,
    /// When its state last changed.
    pub since: Option<DateTime<Utc>>,
    /// Its last heartbeat, as the telemetry service saved it (about once a second).
    pub last_heard: Option<DateTime<Utc>>,
    /// Its applications.
    pub apps: BTreeMap<AppId, DeploymentView>,
}

/// One module version of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleVersionView {
    /// The version.
    pub version: u32,
    /// Its digest.
    pub sha256: Sha256,
    /// Its size.
    pub size_bytes: u64,
    /// Its own limits, when not the application's.
    pub limits: Option<Limits>,
    /// Its own configuration bytes, when not the application's.
    pub config: Option<Blob>,
    /// Who signed it and what it may do, when it has a signed release.
    #[serde(default)]
    pub release: Option<ReleaseView>,
}

/// The signed release of a module version, as people read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseView {
    /// The publisher key that signed it.
    pub publisher: PublicKey,
    /// The publisher's name, when the fleet knows the key.
    pub publisher_name: Option<String>,
    /// What it grants.
    pub capabilities: crate::release::Capabilities,
    /// When it was signed (Unix seconds).
    pub issued_at: u64,
}

/// A publisher key the fleet knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublisherView {
    /// The key.
    pub public_key: PublicKey,
    /// Its name.
    pub name: String,
    /// The serial of the change that trusted it.
    pub trusted_at: u32,
    /// When that was recorded.
    pub since: DateTime<Utc>,
    /// The serial of its revocation, once revoked.
    pub revoked_at: Option<u32>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
}

/// The fleet's trust chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrustView {
    /// The serial of the last change.
    pub serial: u32,
    /// Every key ever trusted, revoked ones included.
    pub publishers: Vec<PublisherView>,
}

/// What an application should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DesiredState {
    /// Created, never deployed.
    Idle,
    /// This version should run on the target.
    Running {
        /// The version.
        version: u32,
    },
    /// It should run nowhere.
    Stopped,
    /// Deleted.
    Deleted,
}

/// An application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationView {
    /// Its id.
    pub app_id: AppId,
    /// Display name.
    pub name: String,
    /// Where it runs.
    pub target: Target,
    /// Limits on each device.
    pub limits: Limits,
    /// Module versions, oldest first.
    pub versions: Vec<ModuleVersionView>,
    /// What it should be doing.
    pub desired: DesiredState,
    /// The last module refusal, if any.
    pub rejected: Option<String>,
    /// Per device.
    pub devices: BTreeMap<DeviceId, DeploymentView>,
    /// Its newest rollout, in progress or finished.
    pub rollout: Option<RolloutView>,
}

/// A gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayView {
    /// Its id.
    pub gateway_id: GatewayId,
    /// Where devices dial.
    pub endpoint: Option<String>,
    /// Its certificate's digest.
    pub certificate_sha256: Option<Sha256>,
    /// Serving now.
    pub running: bool,
    /// Devices with a session on it now.
    pub devices: Vec<DeviceId>,
}

/// What an emulator is doing, from its last lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EmulatorState {
    /// Running.
    Running,
    /// Stopped on request.
    Stopped,
    /// Ended by itself with code 0.
    Exited,
    /// Ended by itself in failure.
    Crashed,
    /// The last start was refused.
    Refused,
}

/// A device's emulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmulatorView {
    /// The emulated device.
    pub device_id: DeviceId,
    /// Its MCU type.
    pub mcu: String,
    /// What runs it (`qemu`, `renode-docker`, `qemu-docker`, `sim`).
    pub backend: String,
    /// What it is doing.
    pub state: EmulatorState,
    /// The process, container or task, while running.
    pub instance: Option<String>,
    /// Starts since the start command.
    pub attempt: u32,
    /// The last exit code.
    pub exit_code: Option<i32>,
    /// Why the last start was refused, or the last UART line before it ended.
    pub detail: Option<String>,
    /// When the restart policy starts it again, if it will.
    pub restart_in_ms: Option<u64>,
}

/// The body of `POST /api/v1/emulators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"device_id": "qemu-2", "mcu": "Mps2An385"}))]
pub struct NewEmulator {
    /// The device to emulate.
    pub device_id: DeviceId,
    /// Its MCU type from the catalogue (`Mps2An385` when absent).
    pub mcu: Option<String>,
    /// Run it in the host simulator whatever the manager's backend.
    #[serde(default)]
    pub simulated: bool,
    /// Labels to register it with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The metadata part of `POST /api/v1/applications` (multipart: `metadata` JSON and `module`
/// bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "app_id": "counter",
    "target": {"kind": "labels", "value": {"room": "lab"}},
    "limits": {"fuel_per_invocation": 1_000_000, "max_memory_pages": 2, "tick_interval_ms": 1000}
}))]
pub struct NewApplication {
    /// The id to know it by.
    pub app_id: AppId,
    /// Display name (the id when absent).
    #[serde(default)]
    pub name: Option<String>,
    /// Where it runs.
    pub target: Target,
    /// Configuration bytes (hex).
    #[serde(default)]
    pub config: Blob,
    /// Limits (defaults: 1,000,000 fuel per call, 2 pages, a tick per second).
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// `DELETE /api/v1/devices/{id}`: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"reason": "stolen from the lab"}))]
pub struct Decommission {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A write the api forwarded and the log recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Recorded {
    /// Stream sequence of the event that records it.
    pub sequence: u64,
    /// The module's digest, for writes that uploaded one.
    pub sha256: Option<Sha256>,
}

/// One event of `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoggedEvent {
    /// Its position in the log.
    pub sequence: u64,
    /// The event.
    pub envelope: EventEnvelope,
}

/// A page of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<LoggedEvent>,
    /// Pass as `after` for the next page (the last sequence here, or the `after` asked for).
    pub next_after: u64,
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: CommandError,
}

/// One telemetry message on `GET /api/v1/stream/telemetry/{device}` (Server-Sent Events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TelemetryMessage {
    /// The device.
    pub device_id: DeviceId,
    /// The application.
    pub app_id: AppId,
    /// The application's sequence number.
    pub seq: Option<u32>,
    /// The application's topic.
    pub topic: Option<String>,
    /// The payload as text, when it is UTF-8.
    pub text: Option<String>,
    /// The payload (hex).
    pub payload: Blob,
}
