//! How the api, the dashboard, the CLI and the CRD projection show a rollout.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::event::{CopyReport, DeviceFailure, RolloutGate};
use crate::bytes::Blob;
use crate::frame::Limits;
use crate::ids::{AppId, DeviceId};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// The next wave is about to start.
    Starting,
    /// A wave's devices are being judged by the gate.
    Judging,
    /// The next wave waits for `approve`.
    AwaitingApproval,
    /// An operator paused it before the next wave.
    Paused,
    /// A wave failed or it was aborted; the rollback is about to start.
    Halting,
    /// Devices that got the new version are going back.
    RollingBack,
    /// The rollback finished.
    RolledBack,
    /// Every wave passed.
    Completed,
}

impl RolloutState {
    /// In words, with the wave it is at (from 0) when one is being judged, waited for or
    /// started: `judging (wave 2 of 3)`.
    pub fn describe(self, wave: u32, waves: usize) -> String {
        match self {
            Self::Judging | Self::AwaitingApproval | Self::Starting => {
                format!("{} (wave {} of {waves})", self.as_str(), wave + 1)
            }
            other => other.as_str().to_owned(),
        }
    }

    /// In words, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Judging => "judging",
            Self::AwaitingApproval => "awaiting approval",
            Self::Paused => "paused",
            Self::Halting => "halting",
            Self::RollingBack => "rolling back",
            Self::RolledBack => "rolled back",
            Self::Completed => "completed",
        }
    }
}

/// Where one wave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaveState {
    /// Not started.
    Pending,
    /// Started; its devices are being judged.
    Judging,
    /// Every device judged, failures within the threshold.
    Passed,
    /// Started, and the rollout was halted before it passed.
    Halted,
}

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WaveView {
    /// How it was asked for (`10%`, `ring=canary`, `rest`).
    pub size: String,
    /// Its devices.
    pub devices: Vec<DeviceId>,
    /// It waits for approval before it starts.
    pub needs_approval: bool,
    /// Where it is.
    pub state: WaveState,
    /// When it started.
    pub started: Option<DateTime<Utc>>,
    /// Devices that passed the gate.
    pub passed: u32,
    /// Devices that failed it.
    pub failed: u32,
}

/// A rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutView {
    /// The application.
    pub app_id: AppId,
    /// Its number within the application.
    pub number: u32,
    /// Where it is.
    pub state: RolloutState,
    /// The wave being judged, or the next to start (from 0).
    pub wave: u32,
    /// The version before (none: the app was not running).
    pub from_version: Option<u32>,
    /// The version rolled out.
    pub to_version: u32,
    /// The gate of every wave.
    pub gate: RolloutGate,
    /// The waves.
    pub waves: Vec<WaveView>,
    /// Every device that failed its gate, and why.
    pub failures: Vec<DeviceFailure>,
    /// Why it was halted, if it was.
    pub halted: Option<String>,
    /// What each simulated copy did in the rehearsal, once judged.
    pub rehearsal: Vec<CopyReport>,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// `POST /api/v1/applications/{id}/rollouts`: the `metadata` part (the `module` part is the
/// WASM module). Waves and thresholds are written as on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "waves": "1,50%,rest", "soak_ms": 30000, "max_failures": "0", "rehearse": true
}))]
pub struct NewRollout {
    /// `1,10%,50%,100%`, `ring=canary,rest`.
    pub waves: String,
    /// Soak time of the gate (default 30,000).
    #[serde(default)]
    pub soak_ms: Option<u64>,
    /// Deadline of the gate (default soak + 120,000).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Failures allowed per wave: `2` or `5%` (default `0`).
    #[serde(default)]
    pub max_failures: Option<String>,
    /// Every wave after the first waits for approval.
    #[serde(default)]
    pub approve_each: bool,
    /// First run the new version on simulated copies of the target's devices.
    #[serde(default)]
    pub rehearse: bool,
    /// Limits of the new version (absent: the application's).
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Configuration bytes of the new version, hex (absent: the application's).
    #[serde(default)]
    pub config: Option<Blob>,
}

/// `POST /api/v1/applications/{id}/rollout/abort`: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"reason": "readings drift after the update"}))]
pub struct AbortReason {
    /// Why, for the log.
    #[serde(default)]
    pub reason: Option<String>,
}
