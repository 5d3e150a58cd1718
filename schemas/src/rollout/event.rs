//! The events of a rollout aggregate (`wasmbed.events.v1.rollout.<app>.<number>`), written only
//! by the deployer. The log alone explains a rollout: what was planned, which wave started,
//! which device passed or failed its gate and why, who paused, approved or aborted it, and how
//! it ended.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{MaxFailures, WaveSize};
use crate::ids::{AppId, DeviceId};

/// One planned wave: the devices are fixed when the rollout is created, so a restarted
/// deployer never moves a device between waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlannedWave {
    /// How it was asked for.
    pub size: WaveSize,
    /// Its devices, in rollout order.
    pub devices: Vec<DeviceId>,
    /// It starts only once approved.
    pub needs_approval: bool,
}

/// When a device of a wave passes, and how many may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutGate {
    /// How long the new version must run, with the device online, to pass.
    pub soak_ms: u64,
    /// How long after its wave starts a device has to pass; later is a failure.
    pub deadline_ms: u64,
    /// Failures a wave may have before the rollout stops and rolls back.
    pub max_failures: MaxFailures,
}

/// A rollout was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutCreated {
    /// The application.
    pub app_id: AppId,
    /// The application's rollouts are numbered from 1.
    pub number: u32,
    /// The version its target ran when it was created (none: the app was not running).
    pub from_version: Option<u32>,
    /// The version it rolls out.
    pub to_version: u32,
    /// The waves, in order.
    pub waves: Vec<PlannedWave>,
    /// The health gate of every wave.
    pub gate: RolloutGate,
    /// The simulated copies a rehearsal wave runs on (empty without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<RehearsalCopy>,
}

/// A simulated copy of a device of the target, for a rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RehearsalCopy {
    /// The copy's own id.
    pub device_id: DeviceId,
    /// The device it copies (the first of the target with its profile).
    pub of: DeviceId,
    /// The MCU type it is started as.
    pub mcu: String,
    /// The labels it is registered with: the original's, and `rehearsal=<app>.<number>`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a copy did in the rehearsal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CopyReport {
    /// The copy.
    pub device_id: DeviceId,
    /// The device it copies.
    pub of: DeviceId,
    /// It passed the gate.
    pub passed: bool,
    /// Why it did not.
    pub reason: Option<String>,
    /// Fuel its last tick used, as it reported.
    pub fuel_used: Option<u64>,
    /// Linear memory pages it used, as it reported.
    pub memory_pages: Option<u32>,
    /// Telemetry messages it published (counted in the telemetry stream).
    pub telemetry: Option<u64>,
}

/// The rehearsal wave was judged: what each copy did. The wave's pass or failure follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutRehearsed {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// One report per copy.
    pub copies: Vec<CopyReport>,
}

/// A wave's devices were given the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutWaveStarted {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// The wave, from 0.
    pub wave: u32,
}

/// A device that did not pass its gate, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceFailure {
    /// The device.
    pub device_id: DeviceId,
    /// Why: the app's failure, a refusal, or the deadline.
    pub reason: String,
}

/// Devices of a wave were judged by the gate (each device once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutDevicesJudged {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// The wave.
    pub wave: u32,
    /// Devices that ran the new version for the soak time.
    pub passed: Vec<DeviceId>,
    /// Devices that failed.
    pub failed: Vec<DeviceFailure>,
}

/// Every device of a wave was judged and no more failed than allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutWavePassed {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// The wave.
    pub wave: u32,
    /// Devices of the wave that failed (within the threshold).
    pub failed: u32,
}

/// More devices of a wave failed than allowed; a rollback follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutWaveFailed {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// The wave.
    pub wave: u32,
    /// Devices that failed so far.
    pub failed: u32,
    /// Failures the wave was allowed.
    pub allowed: u32,
}

/// A wave waiting for approval was approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutApproved {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// The wave approved.
    pub wave: u32,
}

/// An operator paused the rollout: no further wave starts until it is resumed. Gates are still
/// judged, and a failed wave still rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutPaused {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
}

/// An operator resumed a paused rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutResumed {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
}

/// An operator aborted the rollout; a rollback follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutAborted {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// Every device that got the new version goes back to the version before (or stops the app
/// where there was none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutRollbackStarted {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// Why.
    pub reason: String,
    /// Devices that got the new version.
    pub devices: u32,
}

/// Every reachable device that got the new version runs the version before again; devices
/// without a session get it when they come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutRollbackFinished {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
    /// Devices confirmed back on the version before.
    pub reverted: u32,
    /// Devices without a session when the rollback finished.
    pub unreachable: u32,
}

/// Every wave passed; the new version is the application's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutCompleted {
    /// The application.
    pub app_id: AppId,
    /// The rollout.
    pub number: u32,
}
