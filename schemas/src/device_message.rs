//! What the gateway publishes on the bus for a device, besides telemetry and events. JSON.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
