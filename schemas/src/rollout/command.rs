//! The deployer's rollout commands. Every command after `start` names the application: it acts
//! on the application's one active rollout.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{MaxFailures, WaveSize};
use crate::bytes::{Blob, Sha256};
use crate::frame::Limits;
use crate::ids::AppId;

/// Soak time when none is given: how long a device must run the new version, online, to pass.
pub const DEFAULT_SOAK_MS: u64 = 30_000;
/// How long past the soak time a device may take to pass when no deadline is given.
pub const DEFAULT_DEADLINE_AFTER_SOAK_MS: u64 = 120_000;

/// Roll a new module version out to an application's target in waves, each behind a health
/// gate. The module must be in the module store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartRollout {
    /// The application.
    pub app_id: AppId,
    /// SHA-256 of the module to roll out (a new version, or one the application already has).
    pub module_sha256: Sha256,
    /// The waves: cumulative counts or percentages of the target, label selectors, or `rest`.
    pub waves: Vec<WaveSize>,
    /// Soak time of the gate.
    #[serde(default = "default_soak_ms")]
    pub soak_ms: u64,
    /// Deadline of the gate, from the start of a device's wave; soak + 2 min when absent.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Failures allowed per wave.
    #[serde(default = "no_failures")]
    pub max_failures: MaxFailures,
    /// Every wave after the first waits for `approve_rollout`.
    #[serde(default)]
    pub approve_each: bool,
    /// First run the new version on simulated copies of the target's devices (a `rehearsal`
    /// wave before the others); a failed rehearsal touches no real device.
    #[serde(default)]
    pub rehearse: bool,
    /// Limits of the new version (absent: the application's).
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Configuration bytes of the new version (absent: the application's).
    #[serde(default)]
    pub config: Option<Blob>,
    /// The publisher's signed release of the module (when it is a new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<crate::release::SignedRelease>,
}

fn default_soak_ms() -> u64 {
    DEFAULT_SOAK_MS
}

fn no_failures() -> MaxFailures {
    MaxFailures::Count(0)
}

/// Reply of `start_rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStarted {
    /// The rollout's number within the application.
    pub number: u32,
    /// The version rolled from (none: the app was not running).
    pub from_version: Option<u32>,
    /// The version rolled out.
    pub to_version: u32,
    /// Devices in each wave.
    pub wave_devices: Vec<u32>,
    /// Stream sequence of `RolloutCreated`.
    pub sequence: u64,
}

/// Start the wave of the application's rollout that waits for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApproveRollout {
    /// The application.
    pub app_id: AppId,
}

/// Start no further wave of the application's rollout until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PauseRollout {
    /// The application.
    pub app_id: AppId,
}

/// Let a paused rollout go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResumeRollout {
    /// The application.
    pub app_id: AppId,
}

/// Stop the application's rollout and roll back every device that got the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AbortRollout {
    /// The application.
    pub app_id: AppId,
    /// Why, for the log.
    #[serde(default)]
    pub reason: Option<String>,
}
