//! Carrying rollouts forward: on each pass the reconciler asks [`drive::next`] of every
//! rollout in progress and records the answer, expecting the rollout's version, so a stale view
//! cannot record a step twice. What the recorded steps change (a wave started, a rollback) reaches
//! devices through the ordinary pass over dirty pairs: [`wasmbed_fleet::Fleet::wanted_version`].

use chrono::Utc;
use tracing::{info, warn};
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_fleet::{Fleet, Rollout};
use wasmbed_schemas::event::{
    DeviceFailure, Event, RolloutCompleted, RolloutDevicesJudged, RolloutRollbackFinished,
    RolloutRollbackStarted, RolloutWaveFailed, RolloutWavePassed, RolloutWaveStarted,
};
use wasmbed_schemas::rest::DeploymentPhase as Phase;
use wasmbed_schemas::{AggregateId, AppId, DeviceId};

use super::Reconciler;
use crate::rollout::drive::{self, Reverting, Step};
use crate::rollout::gate::Observed;

/// Steps recorded for one rollout in one pass, at most (each is one event).
const STEPS_PER_PASS: usize = 8;

impl Reconciler {
    /// Records the next steps of every rollout in progress.
    pub(super) async fn drive_rollouts(&mut self) {
        let active: Vec<(AppId, u32)> = {
            let fleet = self.state.fleet();
            fleet
                .apps
                .iter()
                .filter_map(|(id, app)| Some((id.clone(), app.rollout?)))
                .collect()
        };
        for (app, number) in active {
            for _ in 0..STEPS_PER_PASS {
                let Some((expected, events)) = self.next_events(&app, number) else {
                    break;
                };
                let mut expected = ExpectedVersion::Exactly(expected);
                for event in events {
                    info!(%app, rollout = number, event = event.type_name(), "rollout step");
                    match self.state.record(expected, event).await {
                        Ok(sequence) => expected = ExpectedVersion::Exactly(sequence),
                        Err(e) => {
                            warn!(%app, rollout = number, error = %e, "rollout step not recorded");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The events of the rollout's next step, and the rollout's version they expect.
    fn next_events(&self, app: &AppId, number: u32) -> Option<(u64, Vec<Event>)> {
        let fleet = self.state.fleet();
        let rollout = fleet.rollout(app, number)?;
        let step = drive::next(
            rollout,
            |device| observe(&fleet, app, rollout, device),
            |device| reverting(&fleet, app, rollout, device),
            Utc::now(),
        );
        let reached = u32::try_from(rollout.reached_devices().count()).unwrap_or(u32::MAX);
        let events = events_of(app, number, step, reached);
        if events.is_empty() {
            return None;
        }
        let version = fleet.version(&AggregateId::Rollout {
            app: app.clone(),
            number,
        });
        Some((version, events))
    }
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

fn events_of(app: &AppId, number: u32, step: Step, reached: u32) -> Vec<Event> {
    let app_id = app.clone();
    match step {
        Step::Nothing => Vec::new(),
        Step::StartWave(wave) => vec![
            RolloutWaveStarted {
                app_id,
                number,
                wave,
            }
            .into(),
        ],
        Step::Judge {
            wave,
            passed,
            failed,
        } => vec![
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
        ],
        Step::WavePassed { wave, failed } => vec![
            RolloutWavePassed {
                app_id,
                number,
                wave,
                failed,
            }
            .into(),
        ],
        Step::WaveFailed {
            wave,
            failed,
            allowed,
        } => vec![
            RolloutWaveFailed {
                app_id,
                number,
                wave,
                failed,
                allowed,
            }
            .into(),
        ],
        Step::RollBack { reason } => vec![
            RolloutRollbackStarted {
                app_id,
                number,
                reason,
                devices: reached,
            }
            .into(),
        ],
        Step::Complete => vec![RolloutCompleted { app_id, number }.into()],
        Step::FinishRollback {
            reverted,
            unreachable,
        } => vec![
            RolloutRollbackFinished {
                app_id,
                number,
                reverted,
                unreachable,
            }
            .into(),
        ],
    }
}
