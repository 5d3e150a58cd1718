//! The device ⇄ gateway protocol.
//!
//! A session runs over TLS 1.3:
//!
//! 1. gateway → [`Challenge`] (its id and a fresh nonce), sent with the TLS handshake itself
//!    (half-RTT data), before the device has said anything,
//! 2. device → [`Hello`] (its Ed25519 public key and a fresh nonce),
//! 3. device → [`Auth`], right after Hello (the Challenge is already there): a signature over [`auth_transcript`], which binds both nonces, the
//!    gateway id and the SHA-256 fingerprint of the gateway's TLS certificate — a signature
//!    relayed through another TLS channel or replayed in a later session does not verify,
//! 4. gateway → [`Welcome`] or [`Rejected`].
//!
//! After that, either side sends any of the session frames below. Every frame on the wire is
//! encoded by [`codec`]: a u32 big-endian length, a protocol-version byte, a MessagePack body.

mod auth;
pub mod codec;
pub mod msgpack;
pub mod scan;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::bytes::{Blob, Nonce, PublicKey, Sha256, Signature};
use crate::ids::{AppId, DeviceId, GatewayId};
use crate::release::rotation::SignedRotation;
use crate::release::{Refusal, SignedRelease};

pub use auth::{AUTH_DOMAIN, auth_transcript};

/// The protocol version this crate speaks; the byte after the length prefix.
pub const PROTOCOL_VERSION: u8 = 1;

/// The largest frame body (version byte plus MessagePack) a peer may send: 16 KiB.
///
/// Small enough for a microcontroller's receive buffer, large enough for a 8 KiB module chunk
/// with room to spare.
pub const MAX_FRAME_LEN: usize = 16 * 1024;

/// Bytes of module data in one [`ModuleChunk`] that senders should use.
pub const MODULE_CHUNK_LEN: usize = 8 * 1024;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// device → gateway: opens authentication.
    Hello(Hello),
    /// gateway → device: the gateway's half of the challenge.
    Challenge(Challenge),
    /// device → gateway: the signed transcript.
    Auth(Auth),
    /// gateway → device: authenticated; the session is open.
    Welcome(Welcome),
    /// gateway → device: authentication refused; the gateway closes the connection.
    Rejected(Rejected),
    /// device → gateway: liveness.
    Heartbeat(Heartbeat),
    /// gateway → device: answer to a heartbeat.
    HeartbeatAck(HeartbeatAck),
    /// device → gateway: application telemetry.
    Telemetry(Telemetry),
    /// device → gateway: a log line.
    Log(Log),
    /// gateway → device: a module transfer starts (or resumes).
    ModuleBegin(ModuleBegin),
    /// gateway → device: a piece of module bytes.
    ModuleChunk(ModuleChunk),
    /// gateway → device: all bytes are sent; verify the digest.
    ModuleCommit(ModuleCommit),
    /// device → gateway: how far a transfer got (for resuming).
    ModuleAck(ModuleAck),
    /// gateway → device: run an application.
    Deploy(Deploy),
    /// gateway → device: stop an application.
    Stop(Stop),
    /// device → gateway: an application's state.
    AppStatus(AppStatus),
    /// device → gateway: what the device is.
    DeviceInfo(DeviceInfo),
    /// either way: a request could not be served.
    Error(ErrorFrame),
    /// gateway → device: the gateway is going away; reconnect later.
    GoAway(GoAway),
    /// gateway → device: one change of the trusted publisher keys; the device answers with
    /// [`DeviceInfo`] carrying the serial it holds afterwards.
    TrustUpdate(Box<SignedRotation>),
}

impl Frame {
    /// The variant's name, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "Hello",
            Self::Challenge(_) => "Challenge",
            Self::Auth(_) => "Auth",
            Self::Welcome(_) => "Welcome",
            Self::Rejected(_) => "Rejected",
            Self::Heartbeat(_) => "Heartbeat",
            Self::HeartbeatAck(_) => "HeartbeatAck",
            Self::Telemetry(_) => "Telemetry",
            Self::Log(_) => "Log",
            Self::ModuleBegin(_) => "ModuleBegin",
            Self::ModuleChunk(_) => "ModuleChunk",
            Self::ModuleCommit(_) => "ModuleCommit",
            Self::ModuleAck(_) => "ModuleAck",
            Self::Deploy(_) => "Deploy",
            Self::Stop(_) => "Stop",
            Self::AppStatus(_) => "AppStatus",
            Self::DeviceInfo(_) => "DeviceInfo",
            Self::Error(_) => "Error",
            Self::GoAway(_) => "GoAway",
            Self::TrustUpdate(_) => "TrustUpdate",
        }
    }
}

/// device → gateway: opens authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The device's Ed25519 public key: its identity.
    pub public_key: PublicKey,
    /// A fresh random nonce from the device.
    pub nonce: Nonce,
    /// Firmware name and version, for the operator.
    pub firmware: String,
    /// A pairing token, for enrolling an unregistered device during a pairing window.
    pub enrollment_token: Option<String>,
}

/// gateway → device: the gateway's half of the challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The gateway the device is talking to (part of the signed transcript).
    pub gateway_id: GatewayId,
    /// A fresh random nonce from the gateway.
    pub nonce: Nonce,
}

/// device → gateway: the signed transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// Ed25519 signature over [`auth_transcript`].
    pub signature: Signature,
}

/// gateway → device: the session is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The id the device is known by.
    pub device_id: DeviceId,
    /// Send a [`Heartbeat`] at least this often.
    pub heartbeat_interval_ms: u32,
    /// The largest frame the gateway accepts.
    pub max_frame_len: u32,
}

/// gateway → device: authentication refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub message: String,
}

/// Why a device was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum RejectReason {
    /// The key is not registered and no pairing window accepts it.
    UnknownDevice,
    /// The device was decommissioned.
    Decommissioned,
    /// The signature does not verify over this session's transcript.
    BadSignature,
    /// A frame arrived out of order or malformed during authentication.
    ProtocolViolation,
    /// The device did not finish authentication in time.
    Timeout,
    /// The gateway could not reach enrollment; try again later.
    Unavailable,
    /// The device opened too many sessions lately; back off before reconnecting.
    RateLimited,
}

/// device → gateway: liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one with each heartbeat of a session.
    pub seq: u32,
    /// Milliseconds since the device booted.
    pub uptime_ms: u64,
}

/// gateway → device: answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The `seq` being answered.
    pub seq: u32,
}

/// device → gateway: application telemetry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// The application that published it.
    pub app_id: AppId,
    /// Per-application sequence number.
    pub seq: u32,
    /// The application's own topic name (free text, carried in a header, never in a subject).
    pub topic: String,
    /// The application's own bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// device → gateway: a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// Severity.
    pub level: LogLevel,
    /// The application that logged, or `None` for the firmware itself.
    pub app_id: Option<AppId>,
    /// The text.
    pub message: String,
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum LogLevel {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
}

/// gateway → device: a module transfer starts, or resumes at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleBegin {
    /// The application the module belongs to.
    pub app_id: AppId,
    /// The application version.
    pub version: u32,
    /// SHA-256 of the whole module, checked on the device before it is loaded.
    pub sha256: Sha256,
    /// Size of the whole module in bytes.
    pub total_len: u32,
    /// Where the following chunks start (non-zero when resuming).
    pub offset: u32,
}

/// gateway → device: a piece of module bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleChunk {
    /// The application the module belongs to.
    pub app_id: AppId,
    /// Byte offset of `data` within the module.
    pub offset: u32,
    /// At most [`MODULE_CHUNK_LEN`] bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// gateway → device: all bytes are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleCommit {
    /// The application the module belongs to.
    pub app_id: AppId,
    /// SHA-256 of the whole module (the same as in [`ModuleBegin`]).
    pub sha256: Sha256,
}

/// device → gateway: transfer progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleAck {
    /// The application the module belongs to.
    pub app_id: AppId,
    /// The device holds every byte before this offset.
    pub next_offset: u32,
    /// Set once the whole module arrived and its digest matched.
    pub verified: bool,
}

/// Resource limits for one application on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct Limits {
    /// Fuel (wasmi instruction budget) for one call of an export.
    pub fuel_per_invocation: u64,
    /// Maximum linear memory in 64 KiB pages.
    pub max_memory_pages: u32,
    /// How often the `tick` export is called.
    pub tick_interval_ms: u32,
}

/// gateway → device: run an application whose module was transferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// The application.
    pub app_id: AppId,
    /// The version to run.
    pub version: u32,
    /// SHA-256 of the module to run.
    pub sha256: Sha256,
    /// Limits the runtime enforces.
    pub limits: Limits,
    /// Opaque configuration bytes the app reads through the host API.
    pub config: Blob,
    /// The publisher's signed release of this module. A device that trusts publisher keys
    /// runs nothing without one, and only what it grants.
    #[serde(default)]
    pub release: Option<Box<SignedRelease>>,
}

/// gateway → device: stop an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// The application.
    pub app_id: AppId,
}

/// device → gateway: an application's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The application.
    pub app_id: AppId,
    /// The version the state is about.
    pub version: u32,
    /// Where it is.
    pub state: AppState,
    /// Fuel consumed since it started.
    pub fuel_used: u64,
    /// Linear memory in use, in 64 KiB pages.
    pub memory_pages: u32,
    /// Why it failed, when `state` is `Failed`.
    pub detail: Option<String>,
    /// When it failed because the device refused its release: the typed reason.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// Telemetry it tried to publish on topics its release does not grant (refused, not sent).
    #[serde(default)]
    pub denied_publishes: u32,
}

/// Where an application is on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum AppState {
    /// Module bytes are arriving.
    Transferring,
    /// Running.
    Running,
    /// Stopped on request.
    Stopped,
    /// Trapped, ran out of fuel, or could not be loaded.
    Failed,
}

/// device → gateway: what the device is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// MCU type as named in the catalogue (e.g. `Mps2An385`).
    pub mcu: String,
    /// Firmware name and version.
    pub firmware: String,
    /// RAM available to applications, in bytes.
    pub app_ram_bytes: u32,
    /// Version of the `wasmbed` host API the runtime offers.
    pub host_api_version: u16,
    /// The serial of the last trust rotation the device applied; 0 for a device that trusts no
    /// publisher key (it runs unsigned modules).
    #[serde(default)]
    pub trust_serial: u32,
}

/// either way: a request could not be served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Machine-readable kind.
    pub code: FrameErrorCode,
    /// The application concerned, if any.
    pub app_id: Option<AppId>,
    /// Human-readable detail.
    pub message: String,
}

/// Kinds of [`ErrorFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FrameErrorCode {
    /// The peer sent a frame that could not be decoded.
    Malformed,
    /// A frame not allowed in the current state.
    Unexpected,
    /// A module's digest did not match.
    DigestMismatch,
    /// Not enough memory or another resource.
    ResourceExhausted,
    /// An application id the receiver does not know.
    UnknownApp,
}

/// gateway → device: the gateway is going away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoAway {
    /// Why.
    pub reason: String,
    /// Wait at least this long before reconnecting.
    pub reconnect_after_ms: u32,
}
