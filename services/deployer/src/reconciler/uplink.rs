//! What devices report on their uplink: module acks, app statuses, errors, device info.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};
use wasmbed_eventlog::{ExpectedVersion, ReadModel};
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{
    DeploymentDelivered, DeploymentFailed, DeploymentRunning, DeploymentStopped,
    DeploymentTransferStarted, DeviceDescribed, EventEnvelope,
};
use wasmbed_schemas::frame::codec::decode;
use wasmbed_schemas::frame::{
    AppState, AppStatus, DeviceInfo, ErrorFrame, Frame, FrameErrorCode, ModuleAck,
};
use wasmbed_schemas::{AppId, DeviceId};

use super::{Effects, Link, Reconciler, Step, Stream, deployment};
use wasmbed_fleet::{Fleet, Pair};
use wasmbed_schemas::rest::DeploymentPhase as Phase;

impl Reconciler {
    pub(super) async fn uplink_batch(&mut self, batch: Vec<async_nats::Message>) {
        let mut effects = Effects::default();
        for message in batch {
            let Some(device) = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .and_then(|id| DeviceId::new(id).ok())
            else {
                continue;
            };
            let frame = match decode(&message.payload) {
                Ok((frame, used)) if used == message.payload.len() => frame,
                _ => {
                    warn!(%device, "uplink message is not one frame; ignored");
                    continue;
                }
            };
            let span = info_span!("uplink", %device, frame = frame.name(), otel.kind = "consumer");
            wasmbed_bus::trace::continue_from(&span, message.headers.as_ref());
            let pair = frame_pair(&frame, &device);
            if pair.as_ref().is_some_and(|p| effects.touches(p)) {
                // One event per deployment per batch: its version check needs the last one.
                let done = std::mem::take(&mut effects);
                self.execute(done).await;
            }
            let _entered = span.enter();
            self.handle_frame(&device, frame, &mut effects);
        }
        self.execute(effects)
            .instrument(info_span!("uplink_effects"))
            .await;
    }

    fn handle_frame(&mut self, device: &DeviceId, frame: Frame, fx: &mut Effects) {
        let now = Instant::now();
        let state = self.state.clone();
        let fleet = state.fleet();
        match frame {
            Frame::ModuleAck(ack) => self.on_ack(&fleet, device, ack, now, fx),
            Frame::AppStatus(status) => self.on_status(&fleet, device, status, fx),
            Frame::Error(error) => self.on_error(&fleet, device, error, now, fx),
            Frame::DeviceInfo(info) => on_info(&fleet, device, info, fx),
            _ => {}
        }
    }

    fn on_ack(
        &mut self,
        fleet: &Fleet,
        device: &DeviceId,
        ack: ModuleAck,
        now: Instant,
        fx: &mut Effects,
    ) {
        let pair = (ack.app_id.clone(), device.clone());
        let Some(dep) = fleet.deployment(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        if ack.verified {
            if matches!(dep.phase, Phase::Requested | Phase::Transferring) {
                let delivered = DeploymentDelivered {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                    version: dep.version,
                };
                fx.record(version, &pair, delivered.into());
            }
            self.links.remove(&pair);
            self.dirty.insert(pair);
            return;
        }
        let Some(link) = self.links.get_mut(&pair) else {
            return;
        };
        match link.step {
            Step::Begin => {
                let Some(module) = fleet
                    .apps
                    .get(&pair.0)
                    .and_then(|a| a.modules.get(&dep.version))
                else {
                    return;
                };
                link.step = Step::Streaming;
                link.since = now;
                fx.streams.push(Stream {
                    pair,
                    sha256: module.sha256,
                    from: ack.next_offset,
                });
            }
            // Progress: the step is alive.
            Step::Streaming => link.since = now,
            _ => {}
        }
    }

    fn on_status(&mut self, fleet: &Fleet, device: &DeviceId, status: AppStatus, fx: &mut Effects) {
        let pair = (status.app_id.clone(), device.clone());
        let _ = self.statuses.try_send(DeploymentStatus {
            app_id: status.app_id.clone(),
            device_id: device.clone(),
            version: status.version,
            state: status.state,
            fuel_used: status.fuel_used,
            memory_pages: status.memory_pages,
            detail: status.detail.clone(),
            denied_publishes: status.denied_publishes,
            reported_at: chrono::Utc::now(),
        });
        let Some(dep) = fleet.deployment(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        let current = status.version == dep.version;
        match status.state {
            AppState::Running if current => {
                if matches!(
                    dep.phase,
                    Phase::Requested | Phase::Transferring | Phase::Delivered | Phase::Failed
                ) {
                    let running = DeploymentRunning {
                        app_id: pair.0.clone(),
                        device_id: device.clone(),
                        version: dep.version,
                    };
                    fx.record(version, &pair, running.into());
                    crate::metrics::deployment_done("running", dep.requested);
                }
                if dep.phase == Phase::Stopping {
                    self.links.remove(&pair);
                    self.dirty.insert(pair);
                } else {
                    self.settle(&pair);
                }
            }
            AppState::Failed if current => {
                if !matches!(dep.phase, Phase::Failed | Phase::Stopping | Phase::Stopped) {
                    let failed = DeploymentFailed {
                        app_id: pair.0.clone(),
                        device_id: device.clone(),
                        version: dep.version,
                        reason: status
                            .detail
                            .unwrap_or_else(|| "failed on the device".to_owned()),
                        refusal: status.refusal,
                    };
                    fx.record(version, &pair, failed.into());
                    crate::metrics::deployment_done("failed", dep.requested);
                }
                self.settle(&pair);
            }
            AppState::Stopped if dep.phase == Phase::Stopping => {
                let stopped = DeploymentStopped {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                };
                fx.record(version, &pair, stopped.into());
                self.links.remove(&pair);
            }
            // An older version still running while a newer one is on its way: the transfer
            // in flight replaces it.
            _ => {}
        }
    }

    fn on_error(
        &mut self,
        fleet: &Fleet,
        device: &DeviceId,
        error: ErrorFrame,
        now: Instant,
        fx: &mut Effects,
    ) {
        let Some(app) = error.app_id.clone() else {
            warn!(%device, code = ?error.code, message = ?error.message, "device error");
            return;
        };
        let pair = (app, device.clone());
        let Some(dep) = fleet.deployment(&pair) else {
            return;
        };
        let version = fleet.version(&deployment(&pair));
        let attempts = self.links.get(&pair).map_or(0, |l| l.attempts);
        let fail = |reason: String| DeploymentFailed {
            app_id: pair.0.clone(),
            device_id: device.clone(),
            version: dep.version,
            reason,
            refusal: None,
        };
        match error.code {
            FrameErrorCode::DigestMismatch
                if attempts + 1 >= self.state.config.max_delivery_attempts =>
            {
                let reason = format!(
                    "delivery failed {} times, last: {}",
                    attempts + 1,
                    error.message
                );
                fx.record(version, &pair, fail(reason).into());
                self.links.remove(&pair);
            }
            FrameErrorCode::ResourceExhausted => {
                fx.record(version, &pair, fail(error.message).into());
                self.links.remove(&pair);
            }
            FrameErrorCode::UnknownApp
                if matches!(dep.phase, Phase::Delivered | Phase::Running) =>
            {
                // The device lost the module (it restarted): deliver it again.
                let again = DeploymentTransferStarted {
                    app_id: pair.0.clone(),
                    device_id: device.clone(),
                    version: dep.version,
                };
                fx.record(version, &pair, again.into());
                self.links.remove(&pair);
            }
            _ => {
                debug!(%device, app = %pair.0, code = ?error.code, message = ?error.message, "device error; retrying");
                self.links.insert(
                    pair.clone(),
                    Link {
                        step: Step::Retry,
                        since: now,
                        attempts,
                    },
                );
            }
        }
        self.dirty.insert(pair);
    }
}

fn on_info(fleet: &Fleet, device: &DeviceId, info: DeviceInfo, fx: &mut Effects) {
    let known = fleet.devices.get(device).is_some_and(|d| {
        d.app_ram_bytes == Some(info.app_ram_bytes)
            && d.host_api_version == Some(info.host_api_version)
            && d.trust_serial == info.trust_serial
            && d.firmware.as_deref() == Some(info.firmware.as_str())
    });
    if known {
        return;
    }
    // Device events come from several services; this one commutes, so no version check.
    fx.appends.push((
        ExpectedVersion::Any,
        EventEnvelope::new(
            DeviceDescribed {
                device_id: device.clone(),
                mcu: info.mcu,
                firmware: info.firmware,
                app_ram_bytes: info.app_ram_bytes,
                host_api_version: info.host_api_version,
                trust_serial: info.trust_serial,
            }
            .into(),
        ),
    ));
}

/// The deployment a frame is about, if any.
fn frame_pair(frame: &Frame, device: &DeviceId) -> Option<Pair> {
    let app = match frame {
        Frame::ModuleAck(a) => a.app_id.clone(),
        Frame::AppStatus(s) => s.app_id.clone(),
        Frame::Error(e) => e.app_id.clone()?,
        _ => return None,
    };
    Some((app, device.clone()))
}

/// Writes reported statuses to the read model off the reconciler's path; when it falls
/// behind, newer statuses replace older ones of the same pair.
pub(super) fn spawn_status_writer(
    model: ReadModel<DeploymentStatus>,
) -> mpsc::Sender<DeploymentStatus> {
    let (tx, mut rx) = mpsc::channel::<DeploymentStatus>(4096);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut latest: HashMap<(AppId, DeviceId), DeploymentStatus> = HashMap::new();
            latest.insert((first.app_id.clone(), first.device_id.clone()), first);
            while let Ok(more) = rx.try_recv() {
                latest.insert((more.app_id.clone(), more.device_id.clone()), more);
            }
            for ((app, device), status) in latest {
                if let Err(e) = model.put(&format!("{app}.{device}"), &status).await {
                    warn!(error = %e, "deployment status not written");
                }
            }
        }
    });
    tx
}
