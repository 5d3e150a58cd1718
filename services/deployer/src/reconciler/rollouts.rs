//! Carrying rollouts forward: on each pass the reconciler asks [`drive::next`] of every
//! rollout in progress and records the answer, expecting the rollout's version, so a stale view
//! cannot record a step twice. What the recorded steps change (a wave started, a rollback) reaches
//! devices through the ordinary pass over dirty pairs: [`wasmbed_fleet::Fleet::wanted_version`].

use async_nats::jetstream::stream::Stream;
use chrono::Utc;
use futures::TryStreamExt;
use tracing::{info, warn};
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_fleet::{Fleet, Rollout, Verdict};
use wasmbed_schemas::command::{DecommissionDevice, StartEmulator, StopEmulator};
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{
    CopyReport, DeviceFailure, Event, RehearsalCopy, RolloutCompleted, RolloutDevicesJudged,
    RolloutRehearsed, RolloutRollbackFinished, RolloutRollbackStarted, RolloutWaveFailed,
    RolloutWavePassed, RolloutWaveStarted,
};
use wasmbed_schemas::rest::DeploymentPhase as Phase;
use wasmbed_schemas::{AggregateId, AppId, DeviceId, subject};

use super::Reconciler;
use crate::rollout::drive::{self, Reverting, Step};
use crate::rollout::gate::Observed;

/// Steps recorded for one rollout in one pass, at most (each is one event).
const STEPS_PER_PASS: usize = 8;

/// How long the renode-manager and enrollment may take to answer for a copy.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl Reconciler {
    /// Records the next steps of every rollout in progress, and starts or removes the copies
    /// of rehearsals.
    pub(super) async fn drive_rollouts(&mut self) {
        let active: Vec<(AppId, u32)> = {
            let fleet = self.state.fleet();
            fleet
                .apps
                .keys()
                .filter_map(|id| Some((id.clone(), fleet.active_rollout(id)?.0)))
                .collect()
        };
        for (app, number) in active {
            for _ in 0..STEPS_PER_PASS {
                let Some((expected, step)) = self.next_step(&app, number) else {
                    break;
                };
                let event = match step {
                    Step::ReportRehearsal => self.rehearsal_report(&app, number).await,
                    other => event_of(&app, number, other),
                };
                let Some(event) = event else { break };
                info!(%app, rollout = number, event = event.type_name(), "rollout step");
                let expected = ExpectedVersion::Exactly(expected);
                if let Err(e) = self.state.record(expected, event).await {
                    warn!(%app, rollout = number, error = %e, "rollout step not recorded");
                    return;
                }
            }
        }
        self.tend_copies();
    }

    /// The rollout's next step and the rollout's version it expects.
    fn next_step(&self, app: &AppId, number: u32) -> Option<(u64, Step)> {
        let fleet = self.state.fleet();
        let rollout = fleet.rollout(app, number)?;
        let step = drive::next(
            rollout,
            |device| observe(&fleet, app, rollout, device),
            |device| reverting(&fleet, app, rollout, device),
            Utc::now(),
        );
        if step == Step::Nothing {
            return None;
        }
        let version = fleet.version(&AggregateId::Rollout {
            app: app.clone(),
            number,
        });
        Some((version, step))
    }

    /// What each copy of the rollout's rehearsal did: its verdict, and from its own last
    /// status the fuel and memory it used.
    async fn rehearsal_report(&self, app: &AppId, number: u32) -> Option<Event> {
        let judged: Vec<(RehearsalCopy, Option<Verdict>)> = {
            let fleet = self.state.fleet();
            let rollout = fleet.rollout(app, number)?;
            rollout
                .copies
                .iter()
                .map(|c| (c.clone(), rollout.verdicts.get(&c.device_id).cloned()))
                .collect()
        };
        let statuses = self
            .state
            .log
            .read_model::<DeploymentStatus>(subject::DEPLOYMENTS_BUCKET)
            .await
            .ok();
        let telemetry = self
            .state
            .log
            .jetstream()
            .get_stream(subject::TELEMETRY_STREAM)
            .await
            .ok();
        let mut copies = Vec::with_capacity(judged.len());
        for (copy, verdict) in judged {
            let status = match &statuses {
                Some(model) => model
                    .get(&format!("{app}.{}", copy.device_id))
                    .await
                    .ok()
                    .flatten()
                    .map(|entry| entry.value),
                None => None,
            };
            copies.push(CopyReport {
                passed: verdict == Some(Verdict::Passed),
                reason: match verdict {
                    Some(Verdict::Failed(why)) => Some(why),
                    _ => None,
                },
                fuel_used: status.as_ref().map(|s| s.fuel_used),
                memory_pages: status.as_ref().map(|s| s.memory_pages),
                telemetry: match &telemetry {
                    Some(stream) => telemetry_of(stream, &copy.device_id, app).await,
                    None => None,
                },
                device_id: copy.device_id,
                of: copy.of,
            });
        }
        Some(
            RolloutRehearsed {
                app_id: app.clone(),
                number,
                copies,
            }
            .into(),
        )
    }

    /// Starts the copies of a rehearsal that runs and removes those of one that is over: asked
    /// of the renode-manager (simulated, whatever its backend) and enrollment, once per copy
    /// in this process; both answer a repeat harmlessly.
    fn tend_copies(&mut self) {
        let (start, remove): (Vec<RehearsalCopy>, Vec<DeviceId>) = {
            let fleet = self.state.fleet();
            let mut start = Vec::new();
            let mut remove = Vec::new();
            for rollout in fleet.all_rollouts() {
                for copy in &rollout.copies {
                    let device = fleet.devices.get(&copy.device_id);
                    if rollout.rehearsing() {
                        if !device.is_some_and(wasmbed_fleet::Device::connected)
                            && self.launched.insert(copy.device_id.clone())
                        {
                            start.push(copy.clone());
                        }
                    } else if rollout.rehearsal_over()
                        && device.is_some_and(|d| !d.decommissioned())
                        && self.removed.insert(copy.device_id.clone())
                    {
                        remove.push(copy.device_id.clone());
                    }
                }
            }
            (start, remove)
        };
        for copy in start {
            let client = self.client.clone();
            tokio::spawn(async move {
                let command = StartEmulator {
                    device_id: copy.device_id.clone(),
                    mcu: copy.mcu,
                    simulated: true,
                    labels: copy.labels,
                };
                if let Err(e) = wasmbed_bus::call(&client, &command, COPY_TIMEOUT).await {
                    warn!(copy = %copy.device_id, error = %e, "rehearsal copy not started");
                }
            });
        }
        for device in remove {
            let client = self.client.clone();
            tokio::spawn(async move {
                let stop = StopEmulator {
                    device_id: device.clone(),
                };
                if let Err(e) = wasmbed_bus::call(&client, &stop, COPY_TIMEOUT).await {
                    warn!(copy = %device, error = %e, "rehearsal copy not stopped");
                }
                let decommission = DecommissionDevice {
                    device_id: device.clone(),
                    reason: "rehearsal over".into(),
                };
                if let Err(e) = wasmbed_bus::call(&client, &decommission, COPY_TIMEOUT).await {
                    warn!(copy = %device, error = %e, "rehearsal copy not decommissioned");
                }
            });
        }
    }
}

/// Telemetry messages `device` published for `app`, counted in the telemetry stream.
async fn telemetry_of(stream: &Stream, device: &DeviceId, app: &AppId) -> Option<u64> {
    let mut subjects = stream
        .info_with_subjects(subject::telemetry(device, app))
        .await
        .ok()?;
    let mut total = 0u64;
    while let Some((_, count)) = subjects.try_next().await.ok()? {
        total += count as u64;
    }
    Some(total)
}

/// How a device of the current wave is doing with the new version.
fn observe(fleet: &Fleet, app: &AppId, rollout: &Rollout, device: &DeviceId) -> Observed {
    let on_new = fleet
        .deployment(&(app.clone(), device.clone()))
        .filter(|d| d.version == rollout.to);
    Observed {
        phase: on_new.map(|d| d.phase),
        running_since: on_new
            .filter(|d| d.phase == Phase::Running)
            .map(|d| d.since),
        online: fleet
            .devices
            .get(device)
            .is_some_and(wasmbed_fleet::Device::reporting),
        failure: on_new.and_then(|d| d.reason.clone()),
    }
}

/// How a device that got the new version is doing in the rollback.
fn reverting(fleet: &Fleet, app: &AppId, rollout: &Rollout, device: &DeviceId) -> Reverting {
    if !fleet
        .devices
        .get(device)
        .is_some_and(wasmbed_fleet::Device::connected)
    {
        return Reverting::Unreachable;
    }
    let deployment = fleet.deployment(&(app.clone(), device.clone()));
    let done = match (rollout.from, deployment) {
        (_, Some(d)) if d.version == rollout.to && d.phase == Phase::Refused => true,
        (Some(from), Some(d)) => {
            d.version == from && matches!(d.phase, Phase::Running | Phase::Failed | Phase::Refused)
        }
        (Some(_), None) => false,
        (None, Some(d)) => matches!(d.phase, Phase::Stopped | Phase::Refused),
        (None, None) => true,
    };
    if done {
        Reverting::Done
    } else {
        Reverting::Pending
    }
}

fn event_of(app: &AppId, number: u32, step: Step) -> Option<Event> {
    let app_id = app.clone();
    match step {
        Step::Nothing | Step::ReportRehearsal => None,
        Step::StartWave(wave) => Some(
            RolloutWaveStarted {
                app_id,
                number,
                wave,
            }
            .into(),
        ),
        Step::Judge {
            wave,
            passed,
            failed,
        } => Some(
            RolloutDevicesJudged {
                app_id,
                number,
                wave,
                passed,
                failed: failed
                    .into_iter()
                    .map(|(device_id, reason)| DeviceFailure { device_id, reason })
                    .collect(),
            }
            .into(),
        ),
        Step::WavePassed { wave, failed } => Some(
            RolloutWavePassed {
                app_id,
                number,
                wave,
                failed,
            }
            .into(),
        ),
        Step::WaveFailed {
            wave,
            failed,
            allowed,
        } => Some(
            RolloutWaveFailed {
                app_id,
                number,
                wave,
                failed,
                allowed,
            }
            .into(),
        ),
        Step::RollBack { reason, devices } => Some(
            RolloutRollbackStarted {
                app_id,
                number,
                reason,
                devices,
            }
            .into(),
        ),
        Step::Complete => Some(RolloutCompleted { app_id, number }.into()),
        Step::FinishRollback {
            reverted,
            unreachable,
        } => Some(
            RolloutRollbackFinished {
                app_id,
                number,
                reverted,
                unreachable,
            }
            .into(),
        ),
    }
}
