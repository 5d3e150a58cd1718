//! The deployer's view of the fleet, folded from device, application and deployment events.
//!
//! Applying an event twice, or an older one after a newer, changes nothing: the view is fed
//! both by the log follower and by this service's own appends the moment they succeed.

use std::collections::{BTreeMap, HashMap};

use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::{AggregateId, AppId, DeviceId, GatewayId, Sha256};

/// What the deployer knows of a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// Labels from registration.
    pub labels: BTreeMap<String, String>,
    /// RAM for applications, as the device reported it.
    pub app_ram_bytes: Option<u32>,
    /// The gateway holding its session, while it has one.
    pub gateway: Option<GatewayId>,
    /// Its current session, while it has one.
    pub session: Option<String>,
    /// It was retired.
    pub decommissioned: bool,
}

impl DeviceView {
    /// It has a session now.
    pub fn connected(&self) -> bool {
        self.gateway.is_some() && !self.decommissioned
    }
}

/// One module version of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleVersion {
    /// Its digest: the object-store key.
    pub sha256: Sha256,
    /// Its size.
    pub size_bytes: u64,
}

/// What an application should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Created, never deployed.
    Idle,
    /// This version should run on every target device.
    Running(u32),
    /// It should run nowhere.
    Stopped,
}

/// What the deployer knows of an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
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
    /// What it should be doing.
    pub desired: Desired,
    /// It was deleted (and should run nowhere).
    pub deleted: bool,
}

impl AppView {
    /// The newest module version.
    pub fn latest(&self) -> Option<(u32, ModuleVersion)> {
        self.modules.iter().next_back().map(|(v, m)| (*v, *m))
    }

    /// Whether `device` is in the target.
    pub fn targets(&self, id: &DeviceId, device: &DeviceView) -> bool {
        if self.deleted || device.decommissioned {
            return false;
        }
        match &self.target {
            Target::Devices(ids) => ids.contains(id),
            Target::Labels(wanted) => wanted
                .iter()
                .all(|(k, v)| device.labels.get(k).is_some_and(|have| have == v)),
            Target::All => true,
        }
    }

    /// The version that should run on a targeted device now, if any.
    pub fn running_version(&self) -> Option<u32> {
        match self.desired {
            Desired::Running(v) if !self.deleted => Some(v),
            _ => None,
        }
    }
}

/// Where one application is on one device, as the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Requested; nothing sent yet.
    Requested,
    /// Does not fit the device; nothing will be sent.
    Refused,
    /// Bytes are flowing.
    Transferring,
    /// The device holds the verified module.
    Delivered,
    /// It runs.
    Running,
    /// It failed on the device, or could not be delivered.
    Failed,
    /// It should stop.
    StopRequested,
    /// It stopped.
    Stopped,
}

/// One application on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentView {
    /// The version concerned.
    pub version: u32,
    /// Where it is.
    pub phase: Phase,
    /// Why it failed or was refused.
    pub reason: Option<String>,
}

/// An (application, device) pair.
pub type Pair = (AppId, DeviceId);

/// Which pairs an applied event may have changed the decision for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Nothing the deployer decides on.
    Nothing,
    /// Every application on this device (and the device's session changed when `session`).
    Device {
        /// The device.
        device: DeviceId,
        /// It connected or disconnected: whatever was in flight to it is void.
        session: bool,
    },
    /// This application on every device.
    App(AppId),
    /// One pair.
    Pair(Pair),
}

/// Devices, applications and deployments.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Devices by id.
    pub devices: HashMap<DeviceId, DeviceView>,
    /// Applications by id.
    pub apps: BTreeMap<AppId, AppView>,
    /// Deployments by pair.
    pub deployments: HashMap<Pair, DeploymentView>,
    versions: HashMap<AggregateId, u64>,
}

impl Fleet {
    /// The version (last applied sequence) of an aggregate; 0 when it has no events.
    pub fn version(&self, aggregate: &AggregateId) -> u64 {
        self.versions.get(aggregate).copied().unwrap_or(0)
    }

    /// Folds one event in and says what it touched.
    pub fn apply(&mut self, stored: &StoredEvent) -> Touched {
        let aggregate = &stored.envelope.aggregate;
        let version = self.versions.entry(aggregate.clone()).or_insert(0);
        if stored.sequence <= *version {
            return Touched::Nothing;
        }
        *version = stored.sequence;
        match &stored.envelope.event {
            Event::DeviceRegistered(e) => {
                let device = self.devices.entry(e.device_id.clone()).or_default();
                device.labels = e.labels.clone();
                device_touched(&e.device_id, false)
            }
            Event::DeviceEnrolled(e) => {
                self.devices.entry(e.device_id.clone()).or_default();
                device_touched(&e.device_id, false)
            }
            Event::DeviceConnected(e) => {
                let device = self.devices.entry(e.device_id.clone()).or_default();
                device.gateway = Some(e.gateway_id.clone());
                device.session.clone_from(&e.session_id);
                device_touched(&e.device_id, true)
            }
            Event::DeviceDisconnected(e) => {
                let device = self.devices.entry(e.device_id.clone()).or_default();
                // A newer session, on this gateway or another, may already have replaced it.
                if !e.ends_current(device.gateway.as_ref(), device.session.as_deref()) {
                    return Touched::Nothing;
                }
                device.gateway = None;
                device.session = None;
                device_touched(&e.device_id, true)
            }
            Event::DeviceDecommissioned(e) => {
                self.devices
                    .entry(e.device_id.clone())
                    .or_default()
                    .decommissioned = true;
                device_touched(&e.device_id, false)
            }
            Event::DeviceDescribed(e) => {
                self.devices
                    .entry(e.device_id.clone())
                    .or_default()
                    .app_ram_bytes = Some(e.app_ram_bytes);
                device_touched(&e.device_id, false)
            }
            Event::ApplicationCreated(e) => {
                self.apps.insert(
                    e.app_id.clone(),
                    AppView {
                        name: e.name.clone(),
                        target: e.target.clone(),
                        config: e.config.clone(),
                        limits: e.limits,
                        modules: BTreeMap::new(),
                        desired: Desired::Idle,
                        deleted: false,
                    },
                );
                Touched::App(e.app_id.clone())
            }
            Event::ModuleUploaded(e) => self.app(&e.app_id, |app| {
                app.modules.insert(
                    e.version,
                    ModuleVersion {
                        sha256: e.sha256,
                        size_bytes: e.size_bytes,
                    },
                );
            }),
            Event::ApplicationDeployRequested(e) => {
                self.app(&e.app_id, |app| app.desired = Desired::Running(e.version))
            }
            Event::ApplicationStopRequested(e) => {
                self.app(&e.app_id, |app| app.desired = Desired::Stopped)
            }
            Event::ApplicationDeleted(e) => self.app(&e.app_id, |app| {
                app.deleted = true;
                app.desired = Desired::Stopped;
            }),
            Event::DeploymentRequested(e) => {
                self.set(&e.app_id, &e.device_id, e.version, Phase::Requested, None)
            }
            Event::DeploymentRefused(e) => self.set(
                &e.app_id,
                &e.device_id,
                e.version,
                Phase::Refused,
                Some(e.reason.clone()),
            ),
            Event::DeploymentTransferStarted(e) => self.set(
                &e.app_id,
                &e.device_id,
                e.version,
                Phase::Transferring,
                None,
            ),
            Event::DeploymentDelivered(e) => {
                self.set(&e.app_id, &e.device_id, e.version, Phase::Delivered, None)
            }
            Event::DeploymentRunning(e) => {
                self.set(&e.app_id, &e.device_id, e.version, Phase::Running, None)
            }
            Event::DeploymentFailed(e) => self.set(
                &e.app_id,
                &e.device_id,
                e.version,
                Phase::Failed,
                Some(e.reason.clone()),
            ),
            Event::DeploymentStopRequested(e) => {
                self.set_phase(&e.app_id, &e.device_id, Phase::StopRequested)
            }
            Event::DeploymentStopped(e) => self.set_phase(&e.app_id, &e.device_id, Phase::Stopped),
            _ => Touched::Nothing,
        }
    }

    fn app(&mut self, id: &AppId, change: impl FnOnce(&mut AppView)) -> Touched {
        match self.apps.get_mut(id) {
            Some(app) => {
                change(app);
                Touched::App(id.clone())
            }
            None => Touched::Nothing,
        }
    }

    fn set(
        &mut self,
        app: &AppId,
        device: &DeviceId,
        version: u32,
        phase: Phase,
        reason: Option<String>,
    ) -> Touched {
        let pair = (app.clone(), device.clone());
        self.deployments.insert(
            pair.clone(),
            DeploymentView {
                version,
                phase,
                reason,
            },
        );
        Touched::Pair(pair)
    }

    fn set_phase(&mut self, app: &AppId, device: &DeviceId, phase: Phase) -> Touched {
        let pair = (app.clone(), device.clone());
        match self.deployments.get_mut(&pair) {
            Some(d) => {
                d.phase = phase;
                Touched::Pair(pair)
            }
            None => Touched::Nothing,
        }
    }
}

fn device_touched(device: &DeviceId, session: bool) -> Touched {
    Touched::Device {
        device: device.clone(),
        session,
    }
}
