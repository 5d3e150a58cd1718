//! The custom resources: `Device`, `Application` and `Gateway` in `wasmbed.io/v1alpha1`.
//! Their spec and status are views of the event log; the YAML in `k8s/crds/` is generated from
//! these types ([`crd_yaml`]) and a test fails when it drifts.

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Wasmbed resource.
pub const GROUP: &str = "wasmbed.io";
/// Its version.
pub const VERSION: &str = "v1alpha1";

/// A device of the fleet.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "wasmbed.io",
    version = "v1alpha1",
    kind = "Device",
    namespaced,
    status = "DeviceStatus",
    shortname = "dev",
    printcolumn = r#"{"name":"MCU","type":"string","jsonPath":".spec.mcu"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".status.gateway"}"#,
    printcolumn = r#"{"name":"Last Seen","type":"date","jsonPath":".status.lastSeen"}"#,
    printcolumn = r#"{"name":"Apps","type":"string","jsonPath":".status.appsSummary"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// Ed25519 public key, hex.
    pub public_key: Option<String>,
    /// MCU type from the catalogue.
    pub mcu: Option<String>,
    /// Labels for targeting deployments.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What the log says a device is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// registered, online, disconnected, offline, decommissioned.
    pub phase: String,
    /// The gateway holding its session.
    pub gateway: Option<String>,
    /// When the log last changed its state (RFC 3339).
    pub last_seen: Option<String>,
    /// Firmware it reported.
    pub firmware: Option<String>,
    /// RAM it offers apps, bytes.
    pub app_ram_bytes: Option<u32>,
    /// Its apps and their phase.
    #[serde(default)]
    pub apps: BTreeMap<String, String>,
    /// `app=phase` pairs, for `kubectl get`.
    pub apps_summary: String,
}

/// A WASM application.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "wasmbed.io",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    shortname = "app",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Target","type":"integer","jsonPath":".status.targets"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.phase"}"#,
    printcolumn = r#"{"name":"Wave","type":"string","jsonPath":".status.rollout.wave"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Display name.
    pub name: String,
    /// Latest module version.
    pub version: u32,
    /// SHA-256 of that module, hex.
    pub module_sha256: Option<String>,
    /// Which devices: `all`, `devices: a,b`, or `labels: k=v`.
    pub target: String,
    /// Fuel per call into the module.
    pub fuel_per_invocation: u64,
    /// Linear memory pages at most.
    pub max_memory_pages: u32,
}

/// What the log says of an application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// idle, running, stopped, rejected.
    pub phase: String,
    /// Devices where it runs.
    pub running: u32,
    /// Devices it is meant for.
    pub targets: u32,
    /// Devices where it failed or was refused.
    pub failed: u32,
    /// Phase per device.
    #[serde(default)]
    pub devices: BTreeMap<String, String>,
    /// Why the module was rejected, if it was.
    pub rejected: Option<String>,
    /// Its newest rollout, in progress or finished.
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
}

/// Where an application's newest rollout is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Its number within the application.
    pub number: u32,
    /// starting, judging, awaiting_approval, paused, halting, rolling_back, rolled_back,
    /// completed.
    pub phase: String,
    /// The wave being judged or next, of how many: `2/3`.
    pub wave: String,
    /// The version rolled out.
    pub to_version: u32,
    /// Devices that failed their gate.
    pub failed: u32,
    /// Why it was halted, if it was.
    pub halted: Option<String>,
}

/// A gateway instance.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "wasmbed.io",
    version = "v1alpha1",
    kind = "Gateway",
    namespaced,
    status = "GatewayStatus",
    shortname = "gw",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Devices","type":"integer","jsonPath":".status.devices"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// `host:port` devices dial.
    pub endpoint: Option<String>,
}

/// What the log says of a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// running or stopped.
    pub phase: String,
    /// SHA-256 of its TLS certificate, hex.
    pub certificate_sha256: Option<String>,
    /// Devices with a session on it.
    pub devices: u32,
}

/// The three CRDs as one YAML document stream (what `k8s/crds/wasmbed.yaml` holds).
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::from(
        "# Generated from services/projector/src/crd.rs by `wasmbed crds`; do not edit.\n",
    );
    for crd in [Device::crd(), Application::crd(), Gateway::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
