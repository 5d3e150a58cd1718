//! The decision for one (application, device) pair: what to record, what to send.

use tokio::time::Instant;
use wasmbed_schemas::event::{
    DeploymentRefused, DeploymentRequested, DeploymentStopRequested, DeploymentTransferStarted,
    Event,
};
use wasmbed_schemas::frame::{Deploy, Frame, ModuleBegin, Stop};

use super::{Effects, Reconciler, Step, deployment};
use wasmbed_fleet::{Fleet, Pair};
use wasmbed_schemas::rest::DeploymentPhase as Phase;

impl Reconciler {
    pub(super) fn decide(&mut self, fleet: &Fleet, pair: &Pair, now: Instant, fx: &mut Effects) {
        let (app_id, device_id) = pair;
        let Some(device) = fleet.devices.get(device_id) else {
            return;
        };
        let app = fleet.apps.get(app_id);
        let dep = fleet.deployment(pair);
        let version = fleet.version(&deployment(pair));
        let want = app
            .filter(|a| a.targets(device_id, device))
            .and_then(|a| a.running_version());
        let connected = device.connected();

        match (want, app, dep) {
            (Some(v), Some(app), dep)
                if dep.is_none_or(|d| {
                    d.version != v || matches!(d.phase, Phase::Stopped | Phase::Stopping)
                }) =>
            {
                let budget = device
                    .app_ram_bytes
                    .unwrap_or(self.state.config.default_app_ram_bytes);
                let needs = u64::from(app.limits.max_memory_pages) * 64 * 1024;
                let event: Event = if needs > u64::from(budget) {
                    DeploymentRefused {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                        version: v,
                        reason: format!(
                            "needs up to {} KiB of memory (limits.max_memory_pages = {}), \
                             the device has {} KiB for apps",
                            needs / 1024,
                            app.limits.max_memory_pages,
                            budget / 1024
                        ),
                    }
                    .into()
                } else {
                    DeploymentRequested {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                        version: v,
                    }
                    .into()
                };
                self.links.remove(pair);
                fx.record(version, pair, event);
            }
            (Some(v), Some(app), Some(dep)) => {
                if !connected || !self.may_start(pair, now) {
                    return;
                }
                let Some(module) = app.modules.get(&v) else {
                    return;
                };
                match dep.phase {
                    Phase::Requested | Phase::Transferring => {
                        if dep.phase == Phase::Requested {
                            let started = DeploymentTransferStarted {
                                app_id: app_id.clone(),
                                device_id: device_id.clone(),
                                version: v,
                            };
                            fx.record(version, pair, started.into());
                        }
                        self.start(pair, Step::Begin, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::ModuleBegin(ModuleBegin {
                                app_id: app_id.clone(),
                                version: v,
                                sha256: module.sha256,
                                total_len: u32::try_from(module.size_bytes).unwrap_or(u32::MAX),
                                offset: 0,
                            }),
                        ));
                    }
                    Phase::Delivered | Phase::Running => {
                        self.start(pair, Step::Deploy, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::Deploy(Deploy {
                                app_id: app_id.clone(),
                                version: v,
                                sha256: module.sha256,
                                limits: app.limits,
                                config: app.config.clone(),
                            }),
                        ));
                    }
                    Phase::Refused | Phase::Failed | Phase::Stopping | Phase::Stopped => {}
                }
            }
            (_, _, Some(dep)) => match dep.phase {
                Phase::Stopped | Phase::Refused => {}
                Phase::Stopping => {
                    if connected && self.may_start(pair, now) {
                        self.start(pair, Step::Stop, now);
                        fx.sends.push((
                            device_id.clone(),
                            Frame::Stop(Stop {
                                app_id: app_id.clone(),
                            }),
                        ));
                    }
                }
                _ => {
                    self.links.remove(pair);
                    let stop = DeploymentStopRequested {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                    };
                    fx.record(version, pair, stop.into());
                }
            },
            _ => {}
        }
    }
}
