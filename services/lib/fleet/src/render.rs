//! The REST bodies ([`wasmbed_schemas::rest`]) rendered from the fleet.
//!
//! Deleted applications are not shown. A deployment's `current` says whether its phase is
//! what a reporting device says now; otherwise it is the device's last report, as of `since`.

use wasmbed_schemas::rest::{
    ApplicationView, DeploymentView, DeviceView, GatewayView, ModuleVersionView, PublisherView,
    ReleaseView, TrustView,
};
use wasmbed_schemas::{AppId, DeviceId};

use crate::model::{App, Deployment, Device, Fleet};

impl Fleet {
    /// The trust chain: every publisher key, in the order they were trusted.
    pub fn trust_view(&self) -> TrustView {
        let mut publishers: Vec<PublisherView> = self
            .publishers
            .keys
            .iter()
            .map(|(key, p)| PublisherView {
                public_key: *key,
                name: p.name.clone(),
                trusted_at: p.trusted_at,
                since: p.since,
                revoked_at: p.revoked.as_ref().map(|(serial, _)| *serial),
                revoked_reason: p.revoked.as_ref().map(|(_, why)| why.clone()),
            })
            .collect();
        publishers.sort_by_key(|p| p.trusted_at);
        TrustView {
            serial: self.publishers.serial,
            publishers,
        }
    }
}

fn deployment_view(deployment: &Deployment, device: Option<&Device>) -> DeploymentView {
    DeploymentView {
        version: deployment.version,
        phase: deployment.phase,
        reason: deployment.reason.clone(),
        since: deployment.since,
        current: device.is_some_and(Device::reporting),
    }
}

impl Fleet {
    fn live_app(&self, id: &AppId) -> Option<&App> {
        self.apps.get(id).filter(|a| !a.deleted())
    }

    /// One device as the api shows it.
    pub fn device_view(&self, id: &DeviceId) -> Option<DeviceView> {
        let d = self.devices.get(id)?;
        Some(DeviceView {
            device_id: id.clone(),
            public_key: d.public_key,
            mcu: d.mcu.clone(),
            labels: d.labels.clone(),
            state: d.state,
            gateway_id: d.gateway.clone(),
            session_id: d.session.clone(),
            app_ram_bytes: d.app_ram_bytes,
            firmware: d.firmware.clone(),
            trust_serial: d.trust_serial,
            since: d.since,
            last_heard: d.last_heard,
            apps: self
                .deployments_on(id)
                .filter(|(app, _)| self.live_app(app).is_some())
                .map(|(app, dep)| (app.clone(), deployment_view(dep, Some(d))))
                .collect(),
        })
    }

    /// Every device, by id.
    pub fn device_views(&self) -> impl Iterator<Item = DeviceView> + '_ {
        self.devices.keys().filter_map(|id| self.device_view(id))
    }

    /// One application as the api shows it (none once deleted).
    pub fn app_view(&self, id: &AppId) -> Option<ApplicationView> {
        let app = self.live_app(id)?;
        Some(ApplicationView {
            app_id: id.clone(),
            name: app.name.clone(),
            target: app.target.clone(),
            limits: app.limits,
            versions: app
                .modules
                .iter()
                .map(|(version, m)| ModuleVersionView {
                    version: *version,
                    sha256: m.sha256,
                    size_bytes: m.size_bytes,
                    limits: m.limits,
                    config: app.configs.get(version).cloned(),
                    release: m.release.as_ref().map(|r| ReleaseView {
                        publisher: r.publisher,
                        publisher_name: self
                            .publishers
                            .keys
                            .get(&r.publisher)
                            .map(|p| p.name.clone()),
                        capabilities: r.manifest.capabilities.clone(),
                        issued_at: r.manifest.issued_at,
                    }),
                })
                .collect(),
            desired: app.desired,
            rejected: app.rejected.clone(),
            devices: self
                .deployments_of(id)
                .map(|(device, dep)| {
                    (
                        device.clone(),
                        deployment_view(dep, self.devices.get(device)),
                    )
                })
                .collect(),
            rollout: self.rollouts_of(id).next().map(|(n, r)| r.view(id, n)),
        })
    }

    /// Every application not deleted, by id.
    pub fn app_views(&self) -> impl Iterator<Item = ApplicationView> + '_ {
        self.apps.keys().filter_map(|id| self.app_view(id))
    }

    /// Gateways with the devices they hold now.
    pub fn gateway_views(&self) -> Vec<GatewayView> {
        self.gateways
            .values()
            .map(|g| {
                let mut g = g.clone();
                g.devices = self
                    .devices
                    .iter()
                    .filter(|(_, d)| d.gateway.as_ref() == Some(&g.gateway_id))
                    .map(|(id, _)| id.clone())
                    .collect();
                g
            })
            .collect()
    }
}
