//! From events to resources: the fleet read model ([`wasmbed_fleet::Fleet`]) folds the log, and
//! each event names the resources it touched; their desired state is rendered from the fleet.
//! Pure and deterministic: replaying the same log renders the same resources.

use std::collections::BTreeSet;

use kube::api::ObjectMeta;
use wasmbed_eventlog::StoredEvent;
use wasmbed_fleet::Fleet;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::rest::{DesiredState, DeviceState};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, GatewayId};

use crate::crd::{
    Application, ApplicationSpec, ApplicationStatus, Device, DeviceSpec, DeviceStatus, Gateway,
    GatewaySpec, GatewayStatus, RolloutStatus,
};

/// A resource the projection keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// A `Device`.
    Device(DeviceId),
    /// An `Application`.
    Application(AppId),
    /// A `Gateway`.
    Gateway(GatewayId),
}

/// What to do to one resource.
#[derive(Debug, Clone)]
pub enum Change {
    /// Server-side apply this `Device` (spec, then status).
    Device(Box<Device>),
    /// Server-side apply this `Application`.
    Application(Box<Application>),
    /// Server-side apply this `Gateway`.
    Gateway(Box<Gateway>),
    /// Delete it (decommissioned or deleted in the log).
    Delete(Key),
}

/// The view and what it renders.
#[derive(Debug, Default)]
pub struct Projection {
    view: Fleet,
    namespace: String,
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_owned(),
                "wasmbed-projector".to_owned(),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

fn snake(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Projection {
    /// An empty projection rendering into `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            view: Fleet::default(),
            namespace: namespace.into(),
        }
    }

    /// The last sequence folded in.
    pub fn sequence(&self) -> u64 {
        self.view.sequence
    }

    /// Folds `event` in without rendering (catching up to where the resources already are).
    pub fn fold(&mut self, event: &StoredEvent) {
        self.view.apply(event);
    }

    /// Folds `event` in and renders every resource it touched. An event already folded (a
    /// redelivery) renders the same resources again, which server-side apply makes a no-op.
    pub fn apply(&mut self, event: &StoredEvent) -> Vec<Change> {
        self.view.apply(event);
        touched(&event.envelope.event)
            .into_iter()
            .map(|key| self.render(&key))
            .collect()
    }

    /// The desired state of one resource.
    pub fn render(&self, key: &Key) -> Change {
        match key {
            Key::Device(id) => match self.view.device_view(id) {
                Some(d) if d.state != DeviceState::Decommissioned => {
                    let apps: std::collections::BTreeMap<String, String> = d
                        .apps
                        .iter()
                        .map(|(app, dep)| (app.to_string(), snake(&dep.phase)))
                        .collect();
                    let summary: Vec<String> =
                        apps.iter().map(|(a, p)| format!("{a}={p}")).collect();
                    let mut device = Device::new(
                        id.as_str(),
                        DeviceSpec {
                            public_key: d.public_key.map(|k| k.to_string()),
                            mcu: d.mcu.clone(),
                            labels: d.labels.clone(),
                        },
                    );
                    device.metadata = meta(id.as_str(), &self.namespace);
                    device.status = Some(DeviceStatus {
                        phase: snake(&d.state),
                        gateway: d.gateway_id.as_ref().map(ToString::to_string),
                        last_seen: d
                            .since
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                        firmware: d.firmware.clone(),
                        app_ram_bytes: d.app_ram_bytes,
                        apps_summary: summary.join(","),
                        apps,
                    });
                    Change::Device(Box::new(device))
                }
                _ => Change::Delete(key.clone()),
            },
            Key::Application(id) => match self.view.app_view(id) {
                Some(a) => {
                    let latest = a.versions.last();
                    let mut app = Application::new(
                        id.as_str(),
                        ApplicationSpec {
                            name: a.name.clone(),
                            version: latest.map_or(0, |v| v.version),
                            module_sha256: latest.map(|v| v.sha256.to_string()),
                            target: target_text(&a.target),
                            fuel_per_invocation: a.limits.fuel_per_invocation,
                            max_memory_pages: a.limits.max_memory_pages,
                        },
                    );
                    app.metadata = meta(id.as_str(), &self.namespace);
                    let phases: Vec<String> = a.devices.values().map(|d| snake(&d.phase)).collect();
                    let count = |p: &[&str]| {
                        u32::try_from(phases.iter().filter(|x| p.contains(&x.as_str())).count())
                            .unwrap_or(u32::MAX)
                    };
                    app.status = Some(ApplicationStatus {
                        phase: if a.rejected.is_some() {
                            "rejected".into()
                        } else {
                            match a.desired {
                                DesiredState::Idle => "idle".into(),
                                DesiredState::Running { .. } => "running".into(),
                                DesiredState::Stopped => "stopped".into(),
                                DesiredState::Deleted => "deleted".into(),
                            }
                        },
                        running: count(&["running"]),
                        targets: u32::try_from(a.devices.len()).unwrap_or(u32::MAX),
                        failed: count(&["failed", "refused"]),
                        devices: a
                            .devices
                            .iter()
                            .map(|(d, dep)| (d.to_string(), snake(&dep.phase)))
                            .collect(),
                        rejected: a.rejected.clone(),
                        rollout: a.rollout.as_ref().map(|r| RolloutStatus {
                            number: r.number,
                            phase: snake(&r.state),
                            wave: format!("{}/{}", r.wave + 1, r.waves.len()),
                            to_version: r.to_version,
                            failed: u32::try_from(r.failures.len()).unwrap_or(u32::MAX),
                            halted: r.halted.clone(),
                        }),
                    });
                    Change::Application(Box::new(app))
                }
                None => Change::Delete(key.clone()),
            },
            Key::Gateway(id) => match self
                .view
                .gateway_views()
                .into_iter()
                .find(|g| &g.gateway_id == id)
            {
                Some(g) => {
                    let mut gateway = Gateway::new(
                        id.as_str(),
                        GatewaySpec {
                            endpoint: g.endpoint.clone(),
                        },
                    );
                    gateway.metadata = meta(id.as_str(), &self.namespace);
                    gateway.status = Some(GatewayStatus {
                        phase: if g.running { "running" } else { "stopped" }.into(),
                        certificate_sha256: g.certificate_sha256.map(|s| s.to_string()),
                        devices: u32::try_from(g.devices.len()).unwrap_or(u32::MAX),
                    });
                    Change::Gateway(Box::new(gateway))
                }
                None => Change::Delete(key.clone()),
            },
        }
    }
}

fn target_text(target: &Target) -> String {
    match target {
        Target::All => "all".into(),
        Target::Devices(ids) => {
            let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
            format!("devices: {}", ids.join(","))
        }
        Target::Labels(labels) => {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("labels: {}", pairs.join(","))
        }
    }
}

/// The resources an event changes.
pub fn touched(event: &Event) -> BTreeSet<Key> {
    let mut keys = BTreeSet::new();
    match event.aggregate() {
        AggregateId::Device(id) => {
            keys.insert(Key::Device(id));
        }
        AggregateId::Application(id) => {
            keys.insert(Key::Application(id));
        }
        AggregateId::Deployment { app, device } => {
            keys.insert(Key::Application(app));
            keys.insert(Key::Device(device));
        }
        AggregateId::Gateway(id) => {
            keys.insert(Key::Gateway(id));
        }
        AggregateId::Rollout { app, .. } => {
            keys.insert(Key::Application(app));
        }
        _ => {}
    }
    // A session moves a device between gateways: their device counts change.
    match event {
        Event::DeviceConnected(e) => {
            keys.insert(Key::Gateway(e.gateway_id.clone()));
        }
        Event::DeviceDisconnected(e) => {
            keys.insert(Key::Gateway(e.gateway_id.clone()));
        }
        _ => {}
    }
    keys
}
