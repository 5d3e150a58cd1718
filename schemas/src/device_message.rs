//! What the gateway publishes on the bus for a device, besides telemetry and events. JSON.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bytes::Blob;
use crate::frame::LogLevel;
use crate::ids::{AppId, DeviceId, GatewayId};

/// A device's heartbeat, on `wasmbed.device.v1.heartbeat.<device>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatReport {
    /// The device.
    pub device_id: DeviceId,
    /// The gateway holding its session.
    pub gateway_id: GatewayId,
    /// The device's heartbeat counter.
    pub seq: u32,
    /// The device's uptime.
    pub uptime_ms: u64,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// A device may no longer hold a session, on `wasmbed.device.v1.revoked.<device>`: enrollment
/// publishes it after recording `DeviceDecommissioned` (and again on a retried decommission).
/// Not an event: a gateway that misses it (cut off from NATS at that moment) still refuses the
/// device's next connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionRevoked {
    /// The device.
    pub device_id: DeviceId,
    /// Why, as the decommission gave it.
    pub reason: String,
}

/// A device's log line, on `wasmbed.device.v1.log.<device>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceLogLine {
    /// The device.
    pub device_id: DeviceId,
    /// The application that logged, or none for the firmware.
    pub app_id: Option<AppId>,
    /// Severity.
    pub level: LogLevel,
    /// The text.
    pub message: String,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// The latest telemetry of one app on one device, in the KV bucket `wasmbed-telemetry-latest`
/// under `<device>.<app>`, for dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LatestTelemetry {
    /// The device.
    pub device_id: DeviceId,
    /// The application.
    pub app_id: AppId,
    /// The application's sequence number.
    pub seq: u32,
    /// The application's topic.
    pub topic: String,
    /// The application's bytes.
    pub payload: Blob,
    /// When the telemetry stream stored it.
    pub received_at: DateTime<Utc>,
}

/// One application on one device as last reported, in the KV bucket `wasmbed-deployments`
/// under `<app>.<device>`: the deployer's read model for dashboards and the api.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentStatus {
    /// The application.
    pub app_id: AppId,
    /// The device.
    pub device_id: DeviceId,
    /// The version the device runs (or last ran).
    pub version: u32,
    /// Where it is, as the device reported it.
    pub state: crate::frame::AppState,
    /// Fuel consumed since it started.
    pub fuel_used: u64,
    /// Linear memory, 64 KiB pages.
    pub memory_pages: u32,
    /// Why it failed, when it did.
    pub detail: Option<String>,
    /// Telemetry it tried to publish on topics its release does not grant (refused on the
    /// device, never sent).
    #[serde(default)]
    pub denied_publishes: u32,
    /// When the device reported this.
    pub reported_at: DateTime<Utc>,
}
