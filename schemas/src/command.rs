//! Commands: request/reply messages on `wasmbed.cmd.v1.<service>.<command>`, JSON encoded.
//!
//! Two levels of failure, deliberately kept apart:
//! - **transport**: the request never got an answer (no responder, timeout, connection lost).
//!   The caller sees a NATS error and may retry; the command may or may not have happened, so
//!   commands that create things carry the caller's id and are idempotent.
//! - **application**: the service answered and refused, as [`Reply::Error`] with an
//!   [`ErrorCode`]. Nothing happened; retrying the same command gives the same answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bytes::{Blob, PublicKey, Sha256};
use crate::event::Target;
use crate::frame::{Limits, RejectReason};
use crate::ids::{AppId, DeviceId, GatewayId};
use crate::release::SignedRelease;
use crate::release::rotation::SignedRotation;
pub use crate::rollout::command::*;
use crate::subject::{self, Service};

/// A request with a typed reply, answered by one service.
pub trait Command: Serialize + DeserializeOwned + JsonSchema {
    /// The service that answers.
    const SERVICE: Service;
    /// The last subject token.
    const NAME: &'static str;
    /// What a successful reply carries.
    type Reply: Serialize + DeserializeOwned + JsonSchema;

    /// The request subject.
    fn subject() -> String {
        subject::command(Self::SERVICE, Self::NAME)
    }
}

/// The answer to every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply<T> {
    /// Done.
    Ok {
        /// The result.
        payload: T,
    },
    /// Refused; nothing happened.
    Error {
        /// Why.
        error: CommandError,
    },
}

impl<T> Reply<T> {
    /// A refusal.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            error: CommandError {
                code,
                message: message.into(),
            },
        }
    }

    /// The reply as a `Result`.
    pub fn into_result(self) -> Result<T, CommandError> {
        match self {
            Self::Ok { payload } => Ok(payload),
            Self::Error { error } => Err(error),
        }
    }
}

impl<T> From<Result<T, CommandError>> for Reply<T> {
    fn from(r: Result<T, CommandError>) -> Self {
        match r {
            Ok(payload) => Self::Ok { payload },
            Err(error) => Self::Error { error },
        }
    }
}

/// An application-level refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CommandError {
    /// Machine-readable kind.
    pub code: ErrorCode,
    /// For people: what was wrong, naming the field where there is one.
    pub message: String,
}

/// Kinds of refusal. Stable: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed or a field is invalid.
    InvalidRequest,
    /// The thing named does not exist.
    NotFound,
    /// It exists already, with different content.
    AlreadyExists,
    /// A concurrent change won; read again and retry.
    Conflict,
    /// The caller may not do this.
    Unauthorized,
    /// Valid, but refused by policy (e.g. a module too large for the device).
    Refused,
    /// A dependency is down; retry later.
    Unavailable,
    /// A bug or an unexpected failure on the service side.
    Internal,
}

/// Reply of commands whose result is an event in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    /// Stream sequence of the event that records the command's effect.
    pub sequence: u64,
}

macro_rules! commands {
    ($( $(#[$doc:meta])* $name:ident : $service:ident . $token:literal -> $reply:ty ),+ $(,)?) => {
        $(
            impl Command for $name {
                const SERVICE: Service = Service::$service;
                const NAME: &'static str = $token;
                type Reply = $reply;
            }
        )+

        /// Writes `(file name, schema)` for the request and reply of every command.
        pub(crate) fn command_schemas(out: &mut Vec<(String, schemars::Schema)>) {
            $(
                out.push((
                    format!("commands/{}.{}.request.json", Service::$service.as_str(), $token),
                    schemars::schema_for!($name),
                ));
                out.push((
                    format!("commands/{}.{}.reply.json", Service::$service.as_str(), $token),
                    schemars::schema_for!(Reply<$reply>),
                ));
            )+
        }
    };
}

commands! {
    RegisterDevice: Enrollment."register_device" -> Accepted,
    DecommissionDevice: Enrollment."decommission_device" -> Accepted,
    OpenPairingWindow: Enrollment."open_pairing_window" -> PairingWindow,
    AuthorizeDevice: Enrollment."authorize_device" -> Authorization,
    IssueGatewayCertificate: Enrollment."issue_gateway_certificate" -> GatewayCertificate,
    GetCaCertificate: Enrollment."get_ca_certificate" -> CaCertificate,
    CreateApplication: Deployer."create_application" -> Accepted,
    DeployApplication: Deployer."deploy_application" -> Accepted,
    UpdateApplication: Deployer."update_application" -> Accepted,
    StopApplication: Deployer."stop_application" -> Accepted,
    DeleteApplication: Deployer."delete_application" -> Accepted,
    StartRollout: Deployer."start_rollout" -> RolloutStarted,
    ApproveRollout: Deployer."approve_rollout" -> Accepted,
    PauseRollout: Deployer."pause_rollout" -> Accepted,
    ResumeRollout: Deployer."resume_rollout" -> Accepted,
    AbortRollout: Deployer."abort_rollout" -> Accepted,
    TrustPublisher: Deployer."trust_publisher" -> Accepted,
    RevokePublisher: Deployer."revoke_publisher" -> Accepted,
    StartEmulator: RenodeManager."start_emulator" -> Accepted,
    StopEmulator: RenodeManager."stop_emulator" -> Accepted,
    RestartEmulator: RenodeManager."restart_emulator" -> Accepted,
}

/// Register a device's Ed25519 public key under an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(example = serde_json::json!({
    "device_id": "dev-7",
    // RFC 8032's first test key: a real point of full order.
    "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "mcu": "Mps2An385",
    "labels": {"room": "lab"}
}))]
pub struct RegisterDevice {
    /// The id to know it by.
    pub device_id: DeviceId,
    /// Its public key.
    pub public_key: PublicKey,
    /// MCU type from the catalogue.
    pub mcu: Option<String>,
    /// Labels for targeting.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Retire a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DecommissionDevice {
    /// The device.
    pub device_id: DeviceId,
    /// Why.
    pub reason: String,
}

/// Let unregistered devices enroll with a token for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenPairingWindow {
    /// How long the window stays open.
    pub duration_secs: u32,
}

/// An open pairing window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PairingWindow {
    /// The token devices present in `Hello`.
    pub token: String,
    /// When the window closes.
    pub expires_at: DateTime<Utc>,
}

/// A gateway asks whether a key that proved possession may open a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthorizeDevice {
    /// The asking gateway.
    pub gateway_id: GatewayId,
    /// The key whose signature the gateway verified.
    pub public_key: PublicKey,
    /// The pairing token the device presented, if any.
    pub enrollment_token: Option<String>,
    /// The device's address, for the audit trail.
    pub remote_addr: String,
}

/// Enrollment's decision on a device. A refusal is an answer, not a failed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Authorization {
    /// The device may open a session.
    Allowed {
        /// The id the key belongs to.
        device_id: DeviceId,
    },
    /// The device may not; the gateway tells it why and closes.
    Refused {
        /// Why.
        reason: RejectReason,
        /// Detail for the device and the operator.
        message: String,
    },
}

/// A gateway asks for a TLS server certificate for its own key (a CSR: the CA key never leaves
/// enrollment, and the gateway key never leaves the gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssueGatewayCertificate {
    /// The gateway.
    pub gateway_id: GatewayId,
    /// PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
}

/// A certificate issued by the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The CA certificate devices verify against, PEM.
    pub ca_certificate_pem: String,
    /// When the certificate expires.
    pub not_after: DateTime<Utc>,
}

/// Ask for the CA certificate devices verify gateways against (for provisioning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetCaCertificate {}

/// The CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CaCertificate {
    /// PEM.
    pub certificate_pem: String,
}

/// Create an application from a module already in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateApplication {
    /// The id to know it by.
    pub app_id: AppId,
    /// Display name.
    pub name: String,
    /// SHA-256 of the module (its object-store key).
    pub module_sha256: Sha256,
    /// Where it runs.
    pub target: Target,
    /// Configuration bytes.
    #[serde(default)]
    pub config: Blob,
    /// Limits on each device.
    pub limits: Limits,
    /// The publisher's signed release of the module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<SignedRelease>,
}

/// Roll an application out to its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeployApplication {
    /// The application.
    pub app_id: AppId,
}

/// Replace an application's module with a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpdateApplication {
    /// The application.
    pub app_id: AppId,
    /// SHA-256 of the new module.
    pub module_sha256: Sha256,
    /// The publisher's signed release of the new module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<SignedRelease>,
}

/// Stop an application on every device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StopApplication {
    /// The application.
    pub app_id: AppId,
}

/// Stop and forget an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeleteApplication {
    /// The application.
    pub app_id: AppId,
}

/// Start the emulator of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartEmulator {
    /// The device.
    pub device_id: DeviceId,
    /// MCU type from the catalogue.
    pub mcu: String,
    /// Run it in the host simulator whatever the manager's backend (any MCU of the catalogue:
    /// the simulator reports the type and runs the same device core).
    #[serde(default)]
    pub simulated: bool,
    /// Labels to register it with, besides `emulated=<backend>`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Stop the emulator of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StopEmulator {
    /// The device.
    pub device_id: DeviceId,
}

/// Restart the emulator of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestartEmulator {
    /// The device.
    pub device_id: DeviceId,
}

/// Trust a publisher key. The fleet's first key needs no rotation (the operator vouches for
/// it); every later one comes with a rotation signed by a key trusted now, numbered one past
/// the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrustPublisher {
    /// The key.
    pub public_key: PublicKey,
    /// A name for people.
    pub name: String,
    /// The signed rotation that trusts it; absent only for the first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<SignedRotation>,
}

/// Revoke a publisher key with a rotation signed by a key trusted now; at least one key stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevokePublisher {
    /// The signed rotation that revokes it.
    pub rotation: SignedRotation,
    /// Why, for people.
    #[serde(default)]
    pub reason: String,
}
