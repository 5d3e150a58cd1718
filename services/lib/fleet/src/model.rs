//! What the fleet is made of, as the log tells it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use wasmbed_schemas::bytes::{Blob, PublicKey};
use wasmbed_schemas::event::Target;
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::rest::{
    DeploymentPhase, DesiredState, DeviceState, EmulatorView, GatewayView,
};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, GatewayId, Sha256};

/// A device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// Its key, once registered or enrolled.
    pub public_key: Option<PublicKey>,
    /// Its MCU, from registration or its own description.
    pub mcu: Option<String>,
    /// Labels from registration.
    pub labels: BTreeMap<String, String>,
    /// Where it is.
    pub state: DeviceState,
    /// The gateway holding its session, while it has one.
    pub gateway: Option<GatewayId>,
    /// Its current session, while it has one.
    pub session: Option<String>,
    /// RAM for applications, as the device reported it.
    pub app_ram_bytes: Option<u32>,
    /// Firmware it reported.
    pub firmware: Option<String>,
    /// The host API version its runtime offers, as it reported it.
    pub host_api_version: Option<u16>,
    /// The serial of the last trust rotation it applied (0: it trusts no publisher key).
    pub trust_serial: u32,
    /// When its last event was written.
    pub since: Option<DateTime<Utc>>,
    /// Its last heartbeat (from the liveness read model, not the log).
    pub last_heard: Option<DateTime<Utc>>,
}

impl Device {
    pub(crate) fn new() -> Self {
        Self {
            public_key: None,
            mcu: None,
            labels: BTreeMap::new(),
            state: DeviceState::Registered,
            gateway: None,
            session: None,
            app_ram_bytes: None,
            firmware: None,
            host_api_version: None,
            trust_serial: 0,
            since: None,
            last_heard: None,
        }
    }

    /// It has a session now.
    pub fn connected(&self) -> bool {
        self.gateway.is_some() && self.state != DeviceState::Decommissioned
    }

    /// It was retired.
    pub fn decommissioned(&self) -> bool {
        self.state == DeviceState::Decommissioned
    }

    /// What it reports is current: it has a session and is heard from. Otherwise a deployment's
    /// phase is only its last report.
    pub fn reporting(&self) -> bool {
        self.connected() && self.state == DeviceState::Online
    }
}

/// One module version of an application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModuleVersion {
    /// Its digest: the object-store key.
    pub sha256: Sha256,
    /// Its size.
    pub size_bytes: u64,
    /// Its own limits, when not the application's.
    pub limits: Option<Limits>,
    /// The publisher's signed release of it.
    pub release: Option<Box<wasmbed_schemas::release::SignedRelease>>,
}

/// An application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct App {
    /// Display name.
    pub name: String,
    /// Which devices.
    pub target: Target,
    /// Configuration bytes.
    pub config: Blob,
    /// Limits on each device.
    pub limits: Limits,
    /// Module versions.
    pub modules: BTreeMap<u32, ModuleVersion>,
    /// Configuration of the versions that have their own.
    pub configs: BTreeMap<u32, Blob>,
    /// What it should be doing ([`DesiredState::Deleted`] once deleted).
    pub desired: DesiredState,
    /// The last module refusal, if any.
    pub rejected: Option<String>,
    /// The W3C `traceparent` of the last change to what it should be doing (deploy, update,
    /// stop, delete): the deployer's work on it continues that trace.
    pub trace: Option<String>,
}

impl App {
    /// It was deleted (and should run nowhere).
    pub fn deleted(&self) -> bool {
        self.desired == DesiredState::Deleted
    }

    /// The limits `version` runs with: its own, or the application's.
    pub fn limits_of(&self, version: u32) -> Limits {
        self.modules
            .get(&version)
            .and_then(|m| m.limits)
            .unwrap_or(self.limits)
    }

    /// The configuration `version` runs with: its own, or the application's.
    pub fn config_of(&self, version: u32) -> &Blob {
        self.configs.get(&version).unwrap_or(&self.config)
    }

    /// The newest module version.
    pub fn latest(&self) -> Option<(u32, ModuleVersion)> {
        self.modules
            .iter()
            .next_back()
            .map(|(v, m)| (*v, m.clone()))
    }

    /// Whether `device` is in the target.
    pub fn targets(&self, id: &DeviceId, device: &Device) -> bool {
        !self.deleted() && in_target(&self.target, id, device)
    }

    /// The version that should run on a targeted device now, if any, when no rollout is in
    /// progress ([`Fleet::wanted_version`] asks both).
    pub fn running_version(&self) -> Option<u32> {
        match self.desired {
            DesiredState::Running { version } => Some(version),
            _ => None,
        }
    }
}

/// The label of a rollout's simulated copies (`rehearsal=<app>.<number>`): no target holds
/// them; only their rehearsal does.
pub const REHEARSAL_LABEL: &str = "rehearsal";

/// Whether a device not decommissioned, and not a rehearsal's copy, falls in `target`.
pub fn in_target(target: &Target, id: &DeviceId, device: &Device) -> bool {
    if device.decommissioned() || device.labels.contains_key(REHEARSAL_LABEL) {
        return false;
    }
    match target {
        Target::Devices(ids) => ids.contains(id),
        Target::Labels(wanted) => wanted
            .iter()
            .all(|(k, v)| device.labels.get(k).is_some_and(|have| have == v)),
        Target::All => true,
    }
}

/// One application on one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// The version concerned.
    pub version: u32,
    /// Where it is.
    pub phase: DeploymentPhase,
    /// Why it failed or was refused.
    pub reason: Option<String>,
    /// When the phase last changed.
    pub since: DateTime<Utc>,
    /// When this version was asked of the device (its `DeploymentRequested`).
    pub requested: DateTime<Utc>,
}

/// An (application, device) pair.
pub type Pair = (AppId, DeviceId);

/// Everything folded from the log.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fleet {
    /// Devices by id.
    pub devices: BTreeMap<DeviceId, Device>,
    /// Applications by id (deleted ones too, with [`DesiredState::Deleted`]).
    pub apps: BTreeMap<AppId, App>,
    /// Deployments by application, then device.
    pub(crate) deployments: BTreeMap<AppId, BTreeMap<DeviceId, Deployment>>,
    /// The applications with a deployment on each device.
    pub(crate) apps_on: HashMap<DeviceId, BTreeSet<AppId>>,
    /// Gateways by id (without their devices; see [`Fleet::gateway_views`]).
    pub gateways: BTreeMap<GatewayId, GatewayView>,
    /// Emulators by device.
    pub emulators: BTreeMap<DeviceId, EmulatorView>,
    /// Rollouts by application and number.
    pub(crate) rollouts: BTreeMap<(AppId, u32), crate::Rollout>,
    /// The trusted publisher keys and their rotation chain.
    pub publishers: crate::Publishers,
    /// The last sequence folded in, of any aggregate.
    pub sequence: u64,
    /// The last sequence the service's in-order follow of the log folded in
    /// ([`Fleet::apply_followed`]): what a snapshot of this fleet holds everything up to. Events
    /// a writer applied ahead of its follow are not counted (they come again, and are skipped).
    pub followed: u64,
    /// Changes with every change of anything above (events and heartbeats alike).
    pub revision: u64,
    pub(crate) versions: HashMap<AggregateId, u64>,
}

impl Fleet {
    /// The version (last applied sequence) of an aggregate; 0 when it has no events.
    pub fn version(&self, aggregate: &AggregateId) -> u64 {
        self.versions.get(aggregate).copied().unwrap_or(0)
    }

    /// One application's deployment on one device.
    pub fn deployment(&self, (app, device): &Pair) -> Option<&Deployment> {
        self.deployments.get(app).and_then(|on| on.get(device))
    }

    /// How many (application, device) pairs have a deployment.
    pub fn deployment_count(&self) -> usize {
        self.deployments.values().map(BTreeMap::len).sum()
    }

    /// The deployments on one device, by application.
    pub fn deployments_on<'a>(
        &'a self,
        device: &'a DeviceId,
    ) -> impl Iterator<Item = (&'a AppId, &'a Deployment)> + 'a {
        self.apps_on
            .get(device)
            .into_iter()
            .flatten()
            .filter_map(move |app| self.deployments.get(app)?.get(device).map(|d| (app, d)))
    }

    /// The deployments of one application, by device.
    pub fn deployments_of<'a>(
        &'a self,
        app: &'a AppId,
    ) -> impl Iterator<Item = (&'a DeviceId, &'a Deployment)> + 'a {
        self.deployments.get(app).into_iter().flatten()
    }

    /// Records when a device was last heard (from the liveness read model).
    pub fn heard(&mut self, device: &DeviceId, at: Option<DateTime<Utc>>) {
        if let Some(d) = self.devices.get_mut(device) {
            if d.last_heard != at {
                d.last_heard = at;
                self.revision += 1;
            }
        }
    }

    /// Devices online now.
    pub fn online(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.state == DeviceState::Online)
            .count()
    }

    /// (application, device) pairs running now: what a reporting device last said is running.
    pub fn running(&self) -> usize {
        self.deployments
            .iter()
            .filter(|(app, _)| self.apps.get(*app).is_some_and(|a| !a.deleted()))
            .flat_map(|(_, on)| on)
            .filter(|(device, d)| {
                d.phase == DeploymentPhase::Running
                    && self.devices.get(*device).is_some_and(Device::reporting)
            })
            .count()
    }
}
