//! The api's read model: devices, applications and gateways folded from the event log, kept in
//! memory and current by following the log. Reads never ask a service.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::event::{Event, ExitReason};
use wasmbed_schemas::rest::{
    ApplicationView, DeploymentPhase, DeploymentView, DesiredState, DeviceState, DeviceView,
    EmulatorState, EmulatorView, GatewayView, ModuleVersionView,
};
use wasmbed_schemas::{AppId, DeviceId, GatewayId};

/// Everything the api serves reads from.
#[derive(Debug, Default)]
pub struct View {
    /// Devices by id.
    pub devices: BTreeMap<DeviceId, DeviceView>,
    /// Applications by id (deleted ones are dropped).
    pub apps: BTreeMap<AppId, ApplicationView>,
    /// Gateways by id.
    pub gateways: BTreeMap<GatewayId, GatewayView>,
    /// Emulators by device.
    pub emulators: BTreeMap<DeviceId, EmulatorView>,
    /// The last sequence folded in.
    pub sequence: u64,
    /// Changes with every change of anything above (events and heartbeats alike).
    pub revision: u64,
}

fn new_device(id: &DeviceId) -> DeviceView {
    DeviceView {
        device_id: id.clone(),
        public_key: None,
        mcu: None,
        labels: BTreeMap::new(),
        state: DeviceState::Registered,
        gateway_id: None,
        session_id: None,
        app_ram_bytes: None,
        firmware: None,
        since: None,
        last_heard: None,
        apps: BTreeMap::new(),
    }
}

impl View {
    /// Folds one event in; older or repeated events change nothing.
    pub fn apply(&mut self, stored: &StoredEvent) {
        if stored.sequence <= self.sequence {
            return;
        }
        self.sequence = stored.sequence;
        self.revision += 1;
        let at = stored.envelope.time;
        match &stored.envelope.event {
            Event::DeviceRegistered(e) => {
                let d = self.device(&e.device_id, at);
                d.public_key = Some(e.public_key);
                d.mcu.clone_from(&e.mcu);
                d.labels.clone_from(&e.labels);
            }
            Event::DeviceEnrolled(e) => {
                self.device(&e.device_id, at).public_key = Some(e.public_key);
            }
            Event::DeviceConnected(e) => {
                let d = self.device(&e.device_id, at);
                d.state = DeviceState::Online;
                d.gateway_id = Some(e.gateway_id.clone());
                d.session_id.clone_from(&e.session_id);
            }
            Event::DeviceDisconnected(e) => {
                let d = self.device(&e.device_id, at);
                // A newer session may already hold the device.
                if d.state == DeviceState::Online
                    && e.ends_current(d.gateway_id.as_ref(), d.session_id.as_deref())
                {
                    d.state = DeviceState::Disconnected;
                    d.gateway_id = None;
                    d.session_id = None;
                }
            }
            Event::DeviceWentOffline(e) => {
                let d = self.device(&e.device_id, at);
                if d.state != DeviceState::Decommissioned {
                    d.state = DeviceState::Offline;
                }
            }
            Event::DeviceBackOnline(e) => {
                let d = self.device(&e.device_id, at);
                if d.state != DeviceState::Decommissioned {
                    d.state = DeviceState::Online;
                }
            }
            Event::DeviceDecommissioned(e) => {
                let d = self.device(&e.device_id, at);
                d.state = DeviceState::Decommissioned;
                d.gateway_id = None;
                d.session_id = None;
            }
            Event::DeviceDescribed(e) => {
                let d = self.device(&e.device_id, at);
                d.app_ram_bytes = Some(e.app_ram_bytes);
                d.firmware = Some(e.firmware.clone());
                d.mcu.get_or_insert_with(|| e.mcu.clone());
            }
            Event::ApplicationCreated(e) => {
                self.apps.insert(
                    e.app_id.clone(),
                    ApplicationView {
                        app_id: e.app_id.clone(),
                        name: e.name.clone(),
                        target: e.target.clone(),
                        limits: e.limits,
                        versions: Vec::new(),
                        desired: DesiredState::Idle,
                        rejected: None,
                        devices: BTreeMap::new(),
                    },
                );
            }
            Event::ModuleUploaded(e) => {
                if let Some(app) = self.apps.get_mut(&e.app_id) {
                    app.versions.push(ModuleVersionView {
                        version: e.version,
                        sha256: e.sha256,
                        size_bytes: e.size_bytes,
                    });
                }
            }
            Event::ModuleRejected(e) => {
                if let Some(app) = self.apps.get_mut(&e.app_id) {
                    app.rejected = Some(e.reason.clone());
                }
            }
            Event::ApplicationDeployRequested(e) => {
                if let Some(app) = self.apps.get_mut(&e.app_id) {
                    app.desired = DesiredState::Running { version: e.version };
                }
            }
            Event::ApplicationStopRequested(e) => {
                if let Some(app) = self.apps.get_mut(&e.app_id) {
                    app.desired = DesiredState::Stopped;
                }
            }
            Event::ApplicationDeleted(e) => {
                self.apps.remove(&e.app_id);
                for device in self.devices.values_mut() {
                    device.apps.remove(&e.app_id);
                }
            }
            Event::DeploymentRequested(e) => {
                self.deployment(
                    &e.app_id,
                    &e.device_id,
                    e.version,
                    DeploymentPhase::Requested,
                    None,
                    at,
                );
            }
            Event::DeploymentRefused(e) => self.deployment(
                &e.app_id,
                &e.device_id,
                e.version,
                DeploymentPhase::Refused,
                Some(e.reason.clone()),
                at,
            ),
            Event::DeploymentTransferStarted(e) => self.deployment(
                &e.app_id,
                &e.device_id,
                e.version,
                DeploymentPhase::Transferring,
                None,
                at,
            ),
            Event::DeploymentDelivered(e) => self.deployment(
                &e.app_id,
                &e.device_id,
                e.version,
                DeploymentPhase::Delivered,
                None,
                at,
            ),
            Event::DeploymentRunning(e) => self.deployment(
                &e.app_id,
                &e.device_id,
                e.version,
                DeploymentPhase::Running,
                None,
                at,
            ),
            Event::DeploymentFailed(e) => self.deployment(
                &e.app_id,
                &e.device_id,
                e.version,
                DeploymentPhase::Failed,
                Some(e.reason.clone()),
                at,
            ),
            Event::DeploymentStopRequested(e) => {
                self.phase(&e.app_id, &e.device_id, DeploymentPhase::Stopping, at);
            }
            Event::DeploymentStopped(e) => {
                self.phase(&e.app_id, &e.device_id, DeploymentPhase::Stopped, at);
            }
            Event::GatewayStarted(e) => {
                let g = self.gateway(&e.gateway_id);
                g.endpoint = Some(e.endpoint.clone());
                g.certificate_sha256 = Some(e.certificate_sha256);
                g.running = true;
            }
            Event::GatewayStopped(e) => self.gateway(&e.gateway_id).running = false,
            Event::EmulatorStarted(e) => {
                let v = self.emulator(&e.device_id, &e.mcu, &e.backend);
                v.state = EmulatorState::Running;
                v.instance = Some(e.instance.clone());
                v.attempt = e.attempt;
                v.detail = None;
                v.restart_in_ms = None;
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
            }
            Event::EmulatorStartRefused(e) => {
                let v = self.emulator(&e.device_id, &e.mcu, &e.backend);
                // A refused second start leaves a running emulator running.
                if v.state != EmulatorState::Running {
                    v.state = EmulatorState::Refused;
                    v.mcu.clone_from(&e.mcu);
                    v.detail = Some(e.reason.clone());
                }
            }
            _ => {}
        }
    }

    fn device(&mut self, id: &DeviceId, at: DateTime<Utc>) -> &mut DeviceView {
        let device = self
            .devices
            .entry(id.clone())
            .or_insert_with(|| new_device(id));
        device.since = Some(at);
        device
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

    fn deployment(
        &mut self,
        app: &AppId,
        device: &DeviceId,
        version: u32,
        phase: DeploymentPhase,
        reason: Option<String>,
        since: DateTime<Utc>,
    ) {
        let view = DeploymentView {
            version,
            phase,
            reason,
            since,
        };
        if let Some(a) = self.apps.get_mut(app) {
            a.devices.insert(device.clone(), view.clone());
        }
        if let Some(d) = self.devices.get_mut(device) {
            d.apps.insert(app.clone(), view);
        }
    }

    fn phase(&mut self, app: &AppId, device: &DeviceId, phase: DeploymentPhase, at: DateTime<Utc>) {
        let change = |d: &mut DeploymentView| {
            d.phase = phase;
            d.since = at;
        };
        if let Some(d) = self
            .apps
            .get_mut(app)
            .and_then(|a| a.devices.get_mut(device))
        {
            change(d);
        }
        if let Some(d) = self
            .devices
            .get_mut(device)
            .and_then(|d| d.apps.get_mut(app))
        {
            change(d);
        }
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

    /// Gateways with the devices they hold now.
    pub fn gateways(&self) -> Vec<GatewayView> {
        self.gateways
            .values()
            .map(|g| {
                let mut g = g.clone();
                g.devices = self
                    .devices
                    .values()
                    .filter(|d| d.gateway_id.as_ref() == Some(&g.gateway_id))
                    .map(|d| d.device_id.clone())
                    .collect();
                g
            })
            .collect()
    }

    /// Devices online now.
    pub fn online(&self) -> usize {
        self.devices
            .values()
            .filter(|d| d.state == DeviceState::Online)
            .count()
    }

    /// (application, device) pairs running now.
    pub fn running(&self) -> usize {
        self.apps
            .values()
            .flat_map(|a| a.devices.values())
            .filter(|d| d.phase == DeploymentPhase::Running)
            .count()
    }
}
