//! Folding one event into the fleet.

use chrono::{DateTime, Utc};
use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::event::{Event, ExitReason};
use wasmbed_schemas::rest::{
    DeploymentPhase, DesiredState, DeviceState, EmulatorState, EmulatorView, GatewayView,
};
use wasmbed_schemas::{AggregateKind, AppId, DeviceId, GatewayId};

use crate::model::{App, Deployment, Device, Fleet, ModuleVersion, Pair};

/// Which (application, device) pairs an applied event may have changed the decision for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Nothing a deployment decision depends on.
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

/// The fleet's snapshot layout: bump it with any change to the fields of [`Fleet`] or of what
/// it holds, so a snapshot of the old shape is folded anew rather than misread.
impl wasmbed_eventlog::snapshot::Snapshotted for Fleet {
    const FORMAT: u32 = 1;
}

impl Fleet {
    /// Folds an event delivered by the service's in-order follow of the log (see
    /// [`Fleet::followed`]).
    pub fn apply_followed(&mut self, stored: &StoredEvent) -> Touched {
        self.followed = self.followed.max(stored.sequence);
        self.apply(stored)
    }

    /// Folds one event in and says what it touched; an event already folded for its
    /// aggregate (repeated, or older than the aggregate's last) changes nothing.
    pub fn apply(&mut self, stored: &StoredEvent) -> Touched {
        let version = self
            .versions
            .entry(stored.envelope.aggregate.clone())
            .or_insert(0);
        if stored.sequence <= *version {
            return Touched::Nothing;
        }
        *version = stored.sequence;
        self.sequence = self.sequence.max(stored.sequence);
        self.revision += 1;
        let at = stored.envelope.time;
        match &stored.envelope.event {
            Event::DeviceRegistered(e) => {
                let d = self.device(&e.device_id, at);
                d.public_key = Some(e.public_key);
                d.mcu.clone_from(&e.mcu);
                d.labels.clone_from(&e.labels);
                device_touched(&e.device_id, false)
            }
            Event::DeviceEnrolled(e) => {
                self.device(&e.device_id, at).public_key = Some(e.public_key);
                device_touched(&e.device_id, false)
            }
            Event::DeviceConnected(e) => {
                let d = self.device(&e.device_id, at);
                if d.state != DeviceState::Decommissioned {
                    d.state = DeviceState::Online;
                }
                d.gateway = Some(e.gateway_id.clone());
                d.session.clone_from(&e.session_id);
                device_touched(&e.device_id, true)
            }
            Event::DeviceDisconnected(e) => {
                let d = self.device(&e.device_id, at);
                // A newer session, on this gateway or another, may already hold the device.
                if !e.ends_current(d.gateway.as_ref(), d.session.as_deref()) {
                    return Touched::Nothing;
                }
                if matches!(d.state, DeviceState::Online | DeviceState::Offline) {
                    d.state = DeviceState::Disconnected;
                }
                d.gateway = None;
                d.session = None;
                device_touched(&e.device_id, true)
            }
            Event::DeviceWentOffline(e) => {
                let d = self.device(&e.device_id, at);
                if d.state != DeviceState::Decommissioned {
                    d.state = DeviceState::Offline;
                }
                Touched::Nothing
            }
            Event::DeviceBackOnline(e) => {
                let d = self.device(&e.device_id, at);
                if d.state != DeviceState::Decommissioned {
                    d.state = DeviceState::Online;
                }
                Touched::Nothing
            }
            Event::DeviceDecommissioned(e) => {
                let d = self.device(&e.device_id, at);
                d.state = DeviceState::Decommissioned;
                d.gateway = None;
                d.session = None;
                device_touched(&e.device_id, false)
            }
            Event::DeviceDescribed(e) => {
                let d = self.device(&e.device_id, at);
                d.app_ram_bytes = Some(e.app_ram_bytes);
                d.firmware = Some(e.firmware.clone());
                d.mcu.get_or_insert_with(|| e.mcu.clone());
                d.host_api_version = Some(e.host_api_version);
                d.trust_serial = e.trust_serial;
                device_touched(&e.device_id, false)
            }
            Event::ApplicationCreated(e) => {
                self.apps.insert(
                    e.app_id.clone(),
                    App {
                        name: e.name.clone(),
                        target: e.target.clone(),
                        config: e.config.clone(),
                        limits: e.limits,
                        modules: std::collections::BTreeMap::new(),
                        configs: std::collections::BTreeMap::new(),
                        desired: DesiredState::Idle,
                        rejected: None,
                        trace: stored.trace.clone(),
                    },
                );
                Touched::App(e.app_id.clone())
            }
            Event::ModuleUploaded(e) => self.app(&e.app_id, |app| {
                let module = ModuleVersion {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    limits: e.limits,
                    release: e.release.clone(),
                };
                app.modules.insert(e.version, module);
                if let Some(config) = &e.config {
                    app.configs.insert(e.version, config.clone());
                }
            }),
            Event::ModuleRejected(e) => {
                self.app(&e.app_id, |app| app.rejected = Some(e.reason.clone()));
                Touched::Nothing
            }
            Event::ApplicationDeployRequested(e) => self.app(&e.app_id, |app| {
                app.desired = DesiredState::Running { version: e.version };
                app.trace.clone_from(&stored.trace);
            }),
            Event::ApplicationStopRequested(e) => self.app(&e.app_id, |app| {
                app.desired = DesiredState::Stopped;
                app.trace.clone_from(&stored.trace);
            }),
            Event::ApplicationDeleted(e) => self.app(&e.app_id, |app| {
                app.desired = DesiredState::Deleted;
                app.trace.clone_from(&stored.trace);
            }),
            Event::DeploymentRequested(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Requested,
                None,
                at,
            ),
            Event::DeploymentRefused(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Refused,
                Some(e.reason.clone()),
                at,
            ),
            Event::DeploymentTransferStarted(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Transferring,
                None,
                at,
            ),
            Event::DeploymentDelivered(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Delivered,
                None,
                at,
            ),
            Event::DeploymentRunning(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Running,
                None,
                at,
            ),
            Event::DeploymentFailed(e) => self.set_deployment(
                (&e.app_id, &e.device_id),
                e.version,
                DeploymentPhase::Failed,
                Some(e.reason.clone()),
                at,
            ),
            Event::DeploymentStopRequested(e) => {
                self.phase((&e.app_id, &e.device_id), DeploymentPhase::Stopping, at)
            }
            Event::DeploymentStopped(e) => {
                self.phase((&e.app_id, &e.device_id), DeploymentPhase::Stopped, at)
            }
            Event::GatewayStarted(e) => {
                let g = self.gateway(&e.gateway_id);
                g.endpoint = Some(e.endpoint.clone());
                g.certificate_sha256 = Some(e.certificate_sha256);
                g.running = true;
                Touched::Nothing
            }
            Event::GatewayStopped(e) => {
                self.gateway(&e.gateway_id).running = false;
                Touched::Nothing
            }
            Event::EmulatorStarted(e) => {
                let v = self.emulator(&e.device_id, &e.mcu, &e.backend);
                v.state = EmulatorState::Running;
                v.instance = Some(e.instance.clone());
                v.attempt = e.attempt;
                v.detail = None;
                v.restart_in_ms = None;
                Touched::Nothing
            }
            Event::EmulatorExited(e) => {
                let v = self.emulator(&e.device_id, "", "");
                v.state = match e.reason {
                    ExitReason::Stopped => EmulatorState::Stopped,
                    ExitReason::Exited => EmulatorState::Exited,
                    _ => EmulatorState::Crashed,
                };
                v.instance = None;
                v.exit_code = e.exit_code;
                v.detail = e.last_uart_lines.last().cloned();
                v.restart_in_ms = e.restart_in_ms;
                Touched::Nothing
            }
            Event::EmulatorStartRefused(e) => {
                let v = self.emulator(&e.device_id, &e.mcu, &e.backend);
                // A refused second start leaves a running emulator running.
                if v.state != EmulatorState::Running {
                    v.state = EmulatorState::Refused;
                    v.mcu.clone_from(&e.mcu);
                    v.detail = Some(e.reason.clone());
                }
                Touched::Nothing
            }
            rollout if stored.envelope.aggregate.kind() == AggregateKind::Rollout => {
                self.apply_rollout(rollout, at)
            }
            trust @ (Event::PublisherTrusted(_) | Event::PublisherRevoked(_)) => {
                self.publishers.apply(trust, at);
                Touched::Nothing
            }
            _ => Touched::Nothing,
        }
    }

    fn device(&mut self, id: &DeviceId, at: DateTime<Utc>) -> &mut Device {
        let device = self.devices.entry(id.clone()).or_insert_with(Device::new);
        device.since = Some(at);
        device
    }

    fn app(&mut self, id: &AppId, change: impl FnOnce(&mut App)) -> Touched {
        match self.apps.get_mut(id) {
            Some(app) => {
                change(app);
                Touched::App(id.clone())
            }
            None => Touched::Nothing,
        }
    }

    fn set_deployment(
        &mut self,
        (app, device): (&AppId, &DeviceId),
        version: u32,
        phase: DeploymentPhase,
        reason: Option<String>,
        since: DateTime<Utc>,
    ) -> Touched {
        let on = self.deployments.entry(app.clone()).or_default();
        let requested = match on.get(device) {
            Some(d) if d.version == version && phase != DeploymentPhase::Requested => d.requested,
            _ => since,
        };
        let deployment = Deployment {
            version,
            phase,
            reason,
            since,
            requested,
        };
        on.insert(device.clone(), deployment);
        self.apps_on
            .entry(device.clone())
            .or_default()
            .insert(app.clone());
        Touched::Pair((app.clone(), device.clone()))
    }

    fn phase(
        &mut self,
        (app, device): (&AppId, &DeviceId),
        phase: DeploymentPhase,
        at: DateTime<Utc>,
    ) -> Touched {
        match self
            .deployments
            .get_mut(app)
            .and_then(|on| on.get_mut(device))
        {
            Some(d) => {
                d.phase = phase;
                d.since = at;
                Touched::Pair((app.clone(), device.clone()))
            }
            None => Touched::Nothing,
        }
    }

    fn gateway(&mut self, id: &GatewayId) -> &mut GatewayView {
        self.gateways
            .entry(id.clone())
            .or_insert_with(|| GatewayView {
                gateway_id: id.clone(),
                endpoint: None,
                certificate_sha256: None,
                running: false,
                devices: Vec::new(),
            })
    }

    fn emulator(&mut self, id: &DeviceId, mcu: &str, backend: &str) -> &mut EmulatorView {
        let view = self
            .emulators
            .entry(id.clone())
            .or_insert_with(|| EmulatorView {
                device_id: id.clone(),
                mcu: String::new(),
                backend: String::new(),
                state: EmulatorState::Stopped,
                instance: None,
                attempt: 0,
                exit_code: None,
                detail: None,
                restart_in_ms: None,
            });
        if !mcu.is_empty() {
            view.mcu = mcu.to_owned();
        }
        if !backend.is_empty() {
            view.backend = backend.to_owned();
        }
        view
    }
}

fn device_touched(device: &DeviceId, session: bool) -> Touched {
    Touched::Device {
        device: device.clone(),
        session,
    }
}
