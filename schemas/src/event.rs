//! The event log: one envelope around every event payload.
//!
//! Events are JSON on the bus (see ADR 0001), so any NATS client can read the log; their JSON
//! Schemas are in `schemas/json/`. Each event belongs to one aggregate and is appended to that
//! aggregate's subject ([`crate::subject::event`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::AggregateId;
use crate::bytes::{Blob, PublicKey, Sha256};
use crate::frame::{Limits, RejectReason};
use crate::ids::{AppId, DeviceId, GatewayId};
use crate::release::rotation::SignedRotation;
use crate::release::{Refusal, SignedRelease};
pub use crate::rollout::event::*;

/// The envelope layout version this crate writes and reads.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Unique id (UUIDv7: time-ordered); also the JetStream de-duplication id.
    pub event_id: Uuid,
    /// When the event was recorded.
    pub time: DateTime<Utc>,
    /// The aggregate whose history this extends.
    pub aggregate: AggregateId,
    /// The event (or command) that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// Shared by every event of one operation (e.g. one deployment across many devices).
    pub correlation_id: Uuid,
    /// Layout version of the envelope and payload.
    pub schema_version: u16,
    /// What happened.
    pub event: Event,
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventDecodeError {
    /// Not JSON of an envelope (or an unknown event type).
    #[error("not an event envelope: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Written by a newer version than this one reads.
    #[error("event schema version {0} is newer than {EVENT_SCHEMA_VERSION}")]
    UnsupportedVersion(u16),
}

impl EventEnvelope {
    /// A new envelope: fresh id, the current time, the event's own aggregate, and a correlation
    /// id equal to its own id (the start of an operation).
    pub fn new(event: Event) -> Self {
        let event_id = Uuid::now_v7();
        Self {
            event_id,
            time: Utc::now(),
            aggregate: event.aggregate(),
            causation_id: None,
            correlation_id: event_id,
            schema_version: EVENT_SCHEMA_VERSION,
            event,
        }
    }

    /// Marks this event as caused by `cause`, continuing its correlation.
    pub fn caused_by(mut self, cause: &EventEnvelope) -> Self {
        self.causation_id = Some(cause.event_id);
        self.correlation_id = cause.correlation_id;
        self
    }

    /// Sets the correlation id (e.g. from the command that started the operation).
    pub fn correlated_with(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = correlation_id;
        self
    }

    /// The JSON bytes stored in the log.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads an envelope from log bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let envelope: Self = serde_json::from_slice(bytes)?;
        if envelope.schema_version > EVENT_SCHEMA_VERSION {
            return Err(EventDecodeError::UnsupportedVersion(
                envelope.schema_version,
            ));
        }
        Ok(envelope)
    }
}

macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident => |$e:ident| $aggregate:expr ),+ $(,)?) => {
        /// Every event of the log, tagged by `type` with its payload in `data`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "type", content = "data")]
        #[non_exhaustive]
        pub enum Event {
            $( $(#[$doc])* $variant($variant), )+
        }

        impl Event {
            /// The aggregate this event belongs to.
            pub fn aggregate(&self) -> AggregateId {
                match self {
                    $( Self::$variant($e) => $aggregate, )+
                }
            }

            /// The type name (the `type` tag, and the `Wasmbed-Event-Type` header).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => stringify!($variant), )+
                }
            }
        }

        $(
            impl From<$variant> for Event {
                fn from(e: $variant) -> Self {
                    Self::$variant(e)
                }
            }
        )+
    };
}

events! {
    /// An operator registered a device's public key.
    DeviceRegistered => |e| AggregateId::Device(e.device_id.clone()),
    /// A device authenticated for the first time (registered key, or a pairing window).
    DeviceEnrolled => |e| AggregateId::Device(e.device_id.clone()),
    /// A device's enrollment or authentication was refused; an audit record of the gateway.
    EnrollmentRefused => |e| AggregateId::Gateway(e.gateway_id.clone()),
    /// Refusals of one reason from one source beyond those recorded in full in a window.
    RefusalsCounted => |e| AggregateId::Gateway(e.gateway_id.clone()),
    /// A device opened an authenticated session.
    DeviceConnected => |e| AggregateId::Device(e.device_id.clone()),
    /// A device's session ended.
    DeviceDisconnected => |e| AggregateId::Device(e.device_id.clone()),
    /// A device missed its heartbeats.
    DeviceWentOffline => |e| AggregateId::Device(e.device_id.clone()),
    /// A device that was offline sent a heartbeat again.
    DeviceBackOnline => |e| AggregateId::Device(e.device_id.clone()),
    /// A device was retired; it may no longer connect.
    DeviceDecommissioned => |e| AggregateId::Device(e.device_id.clone()),
    /// A device told what it is (MCU, RAM for apps, host API version).
    DeviceDescribed => |e| AggregateId::Device(e.device_id.clone()),
    /// An application was created.
    ApplicationCreated => |e| AggregateId::Application(e.app_id.clone()),
    /// A module version of an application was stored.
    ModuleUploaded => |e| AggregateId::Application(e.app_id.clone()),
    /// A module was refused by validation; nothing was sent to any device.
    ModuleRejected => |e| AggregateId::Application(e.app_id.clone()),
    /// An application version should run on its target.
    ApplicationDeployRequested => |e| AggregateId::Application(e.app_id.clone()),
    /// An application should stop on every device.
    ApplicationStopRequested => |e| AggregateId::Application(e.app_id.clone()),
    /// An application version should run on a device.
    DeploymentRequested => |e| deployment(&e.app_id, &e.device_id),
    /// The version does not fit the device; refused before any byte was sent.
    DeploymentRefused => |e| deployment(&e.app_id, &e.device_id),
    /// Module bytes started flowing to the device.
    DeploymentTransferStarted => |e| deployment(&e.app_id, &e.device_id),
    /// The module reached the device and its digest matched.
    DeploymentDelivered => |e| deployment(&e.app_id, &e.device_id),
    /// The application runs on the device.
    DeploymentRunning => |e| deployment(&e.app_id, &e.device_id),
    /// The application failed on (or could not be delivered to) the device.
    DeploymentFailed => |e| deployment(&e.app_id, &e.device_id),
    /// The application should stop on the device.
    DeploymentStopRequested => |e| deployment(&e.app_id, &e.device_id),
    /// The application was stopped on the device.
    DeploymentStopped => |e| deployment(&e.app_id, &e.device_id),
    /// An application was deleted.
    ApplicationDeleted => |e| AggregateId::Application(e.app_id.clone()),
    /// A gateway began serving devices.
    GatewayStarted => |e| AggregateId::Gateway(e.gateway_id.clone()),
    /// A gateway stopped.
    GatewayStopped => |e| AggregateId::Gateway(e.gateway_id.clone()),
    /// A device emulator started.
    EmulatorStarted => |e| AggregateId::Emulator(e.device_id.clone()),
    /// A device emulator exited.
    EmulatorExited => |e| AggregateId::Emulator(e.device_id.clone()),
    /// A request to start a device emulator was refused.
    EmulatorStartRefused => |e| AggregateId::Emulator(e.device_id.clone()),
    /// A staged rollout was planned.
    RolloutCreated => |e| rollout(&e.app_id, e.number),
    /// A rollout's wave started.
    RolloutWaveStarted => |e| rollout(&e.app_id, e.number),
    /// Devices of a rollout's wave passed or failed their gate.
    RolloutDevicesJudged => |e| rollout(&e.app_id, e.number),
    /// A rollout's rehearsal on simulated copies was judged.
    RolloutRehearsed => |e| rollout(&e.app_id, e.number),
    /// A rollout's wave passed.
    RolloutWavePassed => |e| rollout(&e.app_id, e.number),
    /// A rollout's wave failed.
    RolloutWaveFailed => |e| rollout(&e.app_id, e.number),
    /// A rollout's waiting wave was approved.
    RolloutApproved => |e| rollout(&e.app_id, e.number),
    /// A rollout was paused.
    RolloutPaused => |e| rollout(&e.app_id, e.number),
    /// A rollout was resumed.
    RolloutResumed => |e| rollout(&e.app_id, e.number),
    /// A rollout was aborted.
    RolloutAborted => |e| rollout(&e.app_id, e.number),
    /// A rollout's rollback started.
    RolloutRollbackStarted => |e| rollout(&e.app_id, e.number),
    /// A rollout's rollback finished.
    RolloutRollbackFinished => |e| rollout(&e.app_id, e.number),
    /// A rollout completed.
    RolloutCompleted => |e| rollout(&e.app_id, e.number),
    /// A publisher key is trusted: releases it signs may run.
    PublisherTrusted => |_e| AggregateId::Trust,
    /// A publisher key is revoked: releases it signed no longer run.
    PublisherRevoked => |_e| AggregateId::Trust,
    /// A device public key was claimed by the device it belongs to, before its registration or
    /// enrollment: appended only to an empty key subject, so one key never has two devices.
    DeviceKeyClaimed => |e| AggregateId::DeviceKey(e.public_key),
    /// A pairing window opened: every enrollment instance accepts its token until it closes.
    PairingWindowOpened => |_e| AggregateId::Pairing,
}

fn rollout(app: &AppId, number: u32) -> AggregateId {
    AggregateId::Rollout {
        app: app.clone(),
        number,
    }
}

fn deployment(app: &AppId, device: &DeviceId) -> AggregateId {
    AggregateId::Deployment {
        app: app.clone(),
        device: device.clone(),
    }
}

/// An operator registered a device's public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceRegistered {
    /// The device.
    pub device_id: DeviceId,
    /// Its Ed25519 public key.
    pub public_key: PublicKey,
    /// MCU type from the catalogue, if known.
    pub mcu: Option<String>,
    /// Free-form labels for targeting deployments.
    pub labels: BTreeMap<String, String>,
}

/// How a device came to be enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentPath {
    /// Its key was registered by an operator.
    Registered,
    /// It presented a token during a pairing window.
    Pairing,
}

/// A device authenticated for the first time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceEnrolled {
    /// The device.
    pub device_id: DeviceId,
    /// The key it proved it holds.
    pub public_key: PublicKey,
    /// The gateway it came through.
    pub gateway_id: GatewayId,
    /// How.
    pub path: EnrollmentPath,
}

/// A device was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrollmentRefused {
    /// The gateway that refused it.
    pub gateway_id: GatewayId,
    /// The key the peer presented, if it got that far.
    pub public_key: Option<PublicKey>,
    /// Why.
    pub reason: RejectReason,
    /// Detail for the operator.
    pub message: String,
    /// The peer's address.
    pub remote_addr: String,
}

/// Refusals of one reason from one source, in one window, beyond the first few that were
/// recorded in full as `EnrollmentRefused`: a flood is counted, not copied into the log, and
/// cannot crowd out the record of another reason or another source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefusalsCounted {
    /// The gateway the refused connections came through.
    pub gateway_id: GatewayId,
    /// Why they were refused.
    pub reason: RejectReason,
    /// Where from: the peer's IP address (`other` once a window has seen too many sources).
    pub source: String,
    /// How many were refused and not recorded in full.
    pub count: u32,
    /// The window's length; it ended at the envelope's time.
    pub window_secs: u32,
}

/// A device opened an authenticated session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceConnected {
    /// The device.
    pub device_id: DeviceId,
    /// The gateway holding the session.
    pub gateway_id: GatewayId,
    /// The device's address as the gateway saw it.
    pub remote_addr: String,
    /// This session, unique across gateways and restarts (64 random bits, hex); the
    /// `DeviceDisconnected` that ends it names it too. Absent in events older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A device's session ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceDisconnected {
    /// The device.
    pub device_id: DeviceId,
    /// The gateway that held the session.
    pub gateway_id: GatewayId,
    /// Why (closed by the device, heartbeat timeout, gateway shutdown, …).
    pub reason: String,
    /// The session that ended (its `DeviceConnected`'s). Absent in events older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl DeviceDisconnected {
    /// Whether this ends the device's current session, given the gateway and session of the
    /// last `DeviceConnected` folded. A newer session (a reconnect that replaced this one, on
    /// this gateway or another) may already hold the device: then this changes nothing.
    pub fn ends_current(&self, gateway: Option<&GatewayId>, session: Option<&str>) -> bool {
        match (&self.session_id, session) {
            (Some(ended), Some(current)) => ended == current,
            // Events from before session ids: the gateway is all there is to go by.
            _ => gateway == Some(&self.gateway_id),
        }
    }
}

/// A device missed its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceWentOffline {
    /// The device.
    pub device_id: DeviceId,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
}

/// An offline device is heard from again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceBackOnline {
    /// The device.
    pub device_id: DeviceId,
}

/// A device was retired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceDecommissioned {
    /// The device.
    pub device_id: DeviceId,
    /// Why.
    pub reason: String,
}

/// A device told what it is, in the `DeviceInfo` frame of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceDescribed {
    /// The device.
    pub device_id: DeviceId,
    /// MCU type as named in the catalogue.
    pub mcu: String,
    /// Firmware name and version.
    pub firmware: String,
    /// RAM available to applications, bytes.
    pub app_ram_bytes: u32,
    /// Version of the `wasmbed` host API its runtime offers.
    pub host_api_version: u16,
    /// The serial of the last trust rotation it applied (0: it trusts no publisher key).
    #[serde(default)]
    pub trust_serial: u32,
}

/// Which devices an application runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// These devices.
    Devices(Vec<DeviceId>),
    /// Devices carrying all of these labels.
    Labels(BTreeMap<String, String>),
    /// Every enrolled device.
    All,
}

/// An application was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationCreated {
    /// The application.
    pub app_id: AppId,
    /// Display name.
    pub name: String,
    /// Where it runs.
    pub target: Target,
    /// Configuration bytes the app reads through the host API.
    pub config: Blob,
    /// Resource limits on each device.
    pub limits: Limits,
}

/// A module version was stored in the object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleUploaded {
    /// The application.
    pub app_id: AppId,
    /// The version this module is.
    pub version: u32,
    /// Its SHA-256, which is also its object-store key.
    pub sha256: Sha256,
    /// Its size.
    pub size_bytes: u64,
    /// Limits of this version; absent: the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Configuration bytes of this version; absent: the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Blob>,
    /// The publisher's signed release of this module, checked when it was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Box<SignedRelease>>,
}

/// A module was refused by validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleRejected {
    /// The application it was meant for.
    pub app_id: AppId,
    /// The module's SHA-256.
    pub sha256: Sha256,
    /// Why, for people.
    pub reason: String,
}

/// An application version should run on every device of its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationDeployRequested {
    /// The application.
    pub app_id: AppId,
    /// The version.
    pub version: u32,
}

/// An application should stop on every device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationStopRequested {
    /// The application.
    pub app_id: AppId,
}

/// An application version should run on a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRequested {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
}

/// The version does not fit the device; nothing was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRefused {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
    /// Why, for people.
    pub reason: String,
}

/// Module bytes started flowing to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentTransferStarted {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
}

/// The module reached the device intact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentDelivered {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
}

/// The application runs on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRunning {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
}

/// The application failed on the device, or could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentFailed {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version.
    pub version: u32,
    /// Why (validation refusal, trap, fuel exhausted, digest mismatch, …).
    pub reason: String,
    /// When the device refused the release: the typed reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

/// The application should stop on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentStopRequested {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
}

/// The application was stopped on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentStopped {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
}

/// An application was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationDeleted {
    /// The application.
    pub app_id: AppId,
}

/// A gateway began serving devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayStarted {
    /// The gateway.
    pub gateway_id: GatewayId,
    /// `host:port` devices dial.
    pub endpoint: String,
    /// SHA-256 of its TLS certificate (DER).
    pub certificate_sha256: Sha256,
}

/// A gateway stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayStopped {
    /// The gateway.
    pub gateway_id: GatewayId,
}

/// A device emulator started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmulatorStarted {
    /// The emulated device.
    pub device_id: DeviceId,
    /// Which backend runs it (`qemu`, `renode-docker`, `sim`).
    pub backend: String,
    /// MCU type from the catalogue.
    pub mcu: String,
    /// What runs it: the process id, container id or simulator task.
    #[serde(default)]
    pub instance: String,
    /// Starts of this emulator since the start command (1 for the first, more after restarts).
    #[serde(default)]
    pub attempt: u32,
}

/// Why an emulator ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It was asked to stop (a stop or restart command, or shutdown).
    Stopped,
    /// It ended by itself with exit code 0.
    #[default]
    Exited,
    /// It ended by itself with a failure: a non-zero code, a signal, or a lost container.
    Crashed,
}

/// A device emulator exited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmulatorExited {
    /// The emulated device.
    pub device_id: DeviceId,
    /// The process or container exit code, when there was one.
    pub exit_code: Option<i32>,
    /// The last UART lines before it exited.
    pub last_uart_lines: Vec<String>,
    /// Why it ended.
    #[serde(default)]
    pub reason: ExitReason,
    /// When the restart policy will start it again, if it will.
    #[serde(default)]
    pub restart_in_ms: Option<u64>,
}

/// A request to start a device emulator was refused; nothing runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmulatorStartRefused {
    /// The device.
    pub device_id: DeviceId,
    /// MCU type asked for.
    pub mcu: String,
    /// The backend that was to run it.
    pub backend: String,
    /// Why, for people (the catalogue's reason, or the emulator host's error).
    pub reason: String,
}

/// A publisher key is trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PublisherTrusted {
    /// The key.
    pub public_key: PublicKey,
    /// A name for people.
    pub name: String,
    /// The serial of this change in the trust chain.
    pub serial: u32,
    /// The rotation devices apply; absent for the fleet's first key, which reaches devices only
    /// in their provisioning block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<SignedRotation>>,
}

/// A publisher key is revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PublisherRevoked {
    /// The key.
    pub public_key: PublicKey,
    /// Why, for people.
    pub reason: String,
    /// The serial of this change in the trust chain.
    pub serial: u32,
    /// The rotation devices apply.
    pub rotation: Box<SignedRotation>,
}

/// A device key belongs to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceKeyClaimed {
    /// The key.
    pub public_key: PublicKey,
    /// The device it belongs to.
    pub device_id: DeviceId,
}

/// A pairing window opened. Only the token's digest is in the log: the token itself is given
/// to the operator who opened the window, never recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PairingWindowOpened {
    /// SHA-256 of the token.
    pub token_sha256: Sha256,
    /// When it closes.
    pub expires_at: DateTime<Utc>,
}
