//! The rollout commands. `start_rollout` validates and plans everything before it records
//! anything, so bad input changes nothing; the others record one event on the application's
//! rollout in progress, expecting the rollout's version.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::info;
use wasmbed_eventlog::{AppendError, ExpectedVersion};
use wasmbed_fleet::{App, REHEARSAL_LABEL, Rollout, RolloutPhase};
use wasmbed_schemas::command::{
    AbortRollout, Accepted, ApproveRollout, CommandError, ErrorCode, PauseRollout, ResumeRollout,
    RolloutStarted, StartRollout,
};
use wasmbed_schemas::event::{
    Event, ModuleUploaded, PlannedWave, RehearsalCopy, RolloutAborted, RolloutApproved,
    RolloutCreated, RolloutGate, RolloutPaused, RolloutResumed,
};
use wasmbed_schemas::rollout::{DEFAULT_DEADLINE_AFTER_SOAK_MS, MaxFailures, WaveSize};
use wasmbed_schemas::{AggregateId, AppId, DeviceId};

use super::plan;
use crate::Deployer;
use crate::handlers::{
    NewVersion, app_version, check_config, check_limits, checked_module, live_app, refuse,
};

type State = Arc<Deployer>;

/// The longest soak or deadline accepted: a day.
const MAX_GATE_MS: u64 = 24 * 60 * 60 * 1000;

fn check_spec(c: &StartRollout) -> Result<(), CommandError> {
    let invalid = |m: String| Err(refuse(ErrorCode::InvalidRequest, m));
    for (i, wave) in c.waves.iter().enumerate() {
        match wave {
            WaveSize::Count(0) => return invalid(format!("waves[{i}]: a count is at least 1")),
            WaveSize::Percent(p) if !(1..=100).contains(p) => {
                return invalid(format!("waves[{i}]: {p}% is not between 1% and 100%"));
            }
            WaveSize::Selector(labels) if labels.is_empty() => {
                return invalid(format!("waves[{i}]: a selector needs a label"));
            }
            _ => {}
        }
    }
    if let MaxFailures::Percent(p) = c.max_failures {
        if p > 100 {
            return invalid(format!("max_failures: {p}% is over 100%"));
        }
    }
    if c.soak_ms > MAX_GATE_MS {
        return invalid(format!("soak_ms: at most {MAX_GATE_MS}"));
    }
    match c.deadline_ms {
        Some(d) if d > MAX_GATE_MS => invalid(format!("deadline_ms: at most {MAX_GATE_MS}")),
        Some(d) if d < c.soak_ms => invalid(format!(
            "deadline_ms ({d}) is shorter than soak_ms ({}): no device could pass",
            c.soak_ms
        )),
        _ => Ok(()),
    }
}

/// The target of `app` now, with the devices' labels.
fn target(
    state: &Deployer,
    app: &App,
) -> (Vec<DeviceId>, BTreeMap<DeviceId, BTreeMap<String, String>>) {
    let fleet = state.fleet();
    let mut devices = Vec::new();
    let mut labels = BTreeMap::new();
    for (id, device) in &fleet.devices {
        if app.targets(id, device) {
            devices.push(id.clone());
            labels.insert(id.clone(), device.labels.clone());
        }
    }
    (devices, labels)
}

fn started_reply(number: u32, rollout: &Rollout, sequence: u64) -> RolloutStarted {
    RolloutStarted {
        number,
        from_version: rollout.from,
        to_version: rollout.to,
        wave_devices: rollout
            .waves
            .iter()
            .map(|w| u32::try_from(w.devices.len()).unwrap_or(u32::MAX))
            .collect(),
        sequence,
    }
}

pub(crate) async fn start_rollout(
    state: State,
    c: StartRollout,
) -> Result<RolloutStarted, CommandError> {
    catch_up_rollouts(&state, &c.app_id).await?;
    let app = live_app(&state, &c.app_id)?;
    let mut wave_specs = c.waves.clone();
    if c.rehearse && wave_specs.first() != Some(&WaveSize::Rehearsal) {
        wave_specs.insert(0, WaveSize::Rehearsal);
    }
    {
        let fleet = state.fleet();
        if let Some((number, rollout)) = fleet.active_rollout(&c.app_id) {
            let aggregate = rollout_aggregate(&c.app_id, number);
            let same_module = app
                .modules
                .get(&rollout.to)
                .is_some_and(|m| m.sha256 == c.module_sha256);
            let same_waves = rollout.waves.iter().map(|w| &w.size).eq(wave_specs.iter());
            if same_module && same_waves {
                // A retry of the command that started it.
                return Ok(started_reply(number, rollout, fleet.version(&aggregate)));
            }
            return Err(refuse(
                ErrorCode::Conflict,
                format!(
                    "app_id: rollout {number} of {} is {}; abort it or wait for it to finish",
                    c.app_id,
                    rollout.describe()
                ),
            ));
        }
    }
    check_spec(&c)?;
    if let Some(limits) = &c.limits {
        check_limits(limits)?;
    }
    if let Some(config) = &c.config {
        check_config(config)?;
    }
    let number = state.fleet().newest_rollout(&c.app_id) + 1;
    let (devices, labels) = target(&state, &app);
    let ordered = plan::order(&format!("{}.{number}", c.app_id), &devices);
    let mut planned = plan::plan(&ordered, &labels, &wave_specs)
        .map_err(|e| refuse(ErrorCode::InvalidRequest, format!("waves: {e}")))?;
    let copies = if wave_specs.first() == Some(&WaveSize::Rehearsal) {
        let copies = rehearsal_copies(&state, &c.app_id, number, &ordered);
        if let Some(first) = planned.first_mut() {
            *first = copies.iter().map(|c| c.device_id.clone()).collect();
        }
        copies
    } else {
        Vec::new()
    };
    let from = app.running_version();
    // A version this module already is, with the limits and config asked for (none asked:
    // whatever it has).
    let known = app
        .modules
        .iter()
        .filter(|(_, m)| m.sha256 == c.module_sha256)
        .map(|(v, _)| *v)
        .filter(|v| c.limits.is_none_or(|l| app.limits_of(*v) == l))
        .find(|v| c.config.as_ref().is_none_or(|cfg| app.config_of(*v) == cfg));
    if known.is_some() && known == from {
        return Err(refuse(
            ErrorCode::Refused,
            format!(
                "module_sha256: {} already runs version {} of this module",
                c.app_id,
                from.unwrap_or_default()
            ),
        ));
    }
    let to = match known {
        Some(version) => version,
        None => {
            let limits = c.limits.unwrap_or(app.limits);
            let version = app.latest().map_or(1, |(v, _)| v + 1);
            let new = NewVersion {
                sha: &c.module_sha256,
                version,
                limits: &limits,
                release: c.release.as_ref(),
            };
            let size_bytes = checked_module(&state, &c.app_id, new).await?;
            let uploaded = ModuleUploaded {
                app_id: c.app_id.clone(),
                version,
                sha256: c.module_sha256,
                size_bytes,
                limits: c.limits.filter(|l| *l != app.limits),
                config: c.config.clone().filter(|cfg| *cfg != app.config),
                release: c.release.clone().map(Box::new),
            };
            let expected = ExpectedVersion::Exactly(app_version(&state, &c.app_id));
            state
                .record(expected, uploaded.into())
                .await
                .map_err(|e| conflict_or_unavailable(e, "the application changed concurrently"))?;
            version
        }
    };
    let waves: Vec<PlannedWave> = wave_specs
        .iter()
        .zip(planned)
        .enumerate()
        .map(|(i, (size, devices))| PlannedWave {
            size: size.clone(),
            devices,
            needs_approval: c.approve_each && i > 0,
        })
        .collect();
    let created = RolloutCreated {
        app_id: c.app_id.clone(),
        number,
        from_version: from,
        to_version: to,
        waves,
        gate: RolloutGate {
            soak_ms: c.soak_ms,
            deadline_ms: c
                .deadline_ms
                .unwrap_or(c.soak_ms + DEFAULT_DEADLINE_AFTER_SOAK_MS),
            max_failures: c.max_failures,
        },
        copies,
    };
    info!(app = %c.app_id, rollout = number, ?from, to, "rollout created");
    // Rollouts are numbered densely: a second start on a stale view names a rollout that
    // exists, and this append fails instead of starting two at once.
    let sequence = state
        .record(ExpectedVersion::NONE, created.into())
        .await
        .map_err(|e| conflict_or_unavailable(e, "another rollout of the application started"))?;
    let fleet = state.fleet();
    let rollout = fleet.rollout(&c.app_id, number).ok_or_else(|| {
        refuse(
            ErrorCode::Internal,
            "the rollout was recorded but is not in the view",
        )
    })?;
    Ok(started_reply(number, rollout, sequence))
}

/// Copies a rehearsal runs on, at most.
const MAX_COPIES: usize = 4;
/// What a host-simulated device reports as its MCU (not a catalogue type), and the catalogue
/// type its copies are started as instead.
const SIMULATED_MCU: &str = "Simulated";
const DEFAULT_COPY_MCU: &str = "Mps2An385";

/// One simulated copy per distinct profile (MCU type and labels) of the target, in rollout
/// order, at most [`MAX_COPIES`]; each labelled `rehearsal=<app>.<number>`, which keeps it out
/// of every application's target.
fn rehearsal_copies(
    state: &Deployer,
    app: &AppId,
    number: u32,
    ordered: &[DeviceId],
) -> Vec<RehearsalCopy> {
    let fleet = state.fleet();
    let mut profiles = std::collections::BTreeSet::new();
    let mut copies = Vec::new();
    for id in ordered {
        let Some(device) = fleet.devices.get(id) else {
            continue;
        };
        let mcu = device
            .mcu
            .clone()
            .filter(|m| m != SIMULATED_MCU)
            .unwrap_or_else(|| DEFAULT_COPY_MCU.to_owned());
        if !profiles.insert((mcu.clone(), device.labels.clone())) {
            continue;
        }
        let Some(device_id) = copy_id(app, number, copies.len()) else {
            continue;
        };
        let mut labels = device.labels.clone();
        labels.insert(REHEARSAL_LABEL.to_owned(), format!("{app}.{number}"));
        copies.push(RehearsalCopy {
            device_id,
            of: id.clone(),
            mcu,
            labels,
        });
        if copies.len() == MAX_COPIES {
            break;
        }
    }
    copies
}

/// `<app>-rh<number>-<i>`, the application's part shortened to fit an id.
fn copy_id(app: &AppId, number: u32, i: usize) -> Option<DeviceId> {
    let suffix = format!("-rh{number}-{i}");
    let room = wasmbed_schemas::ids::MAX_ID_LEN.saturating_sub(suffix.len());
    let prefix: String = app.as_str().chars().take(room).collect();
    DeviceId::new(format!("{}{suffix}", prefix.trim_end_matches('-'))).ok()
}

fn conflict_or_unavailable(e: AppendError, conflict: &str) -> CommandError {
    match e {
        AppendError::Conflict { .. } => refuse(ErrorCode::Conflict, format!("{conflict}; retry")),
        other => refuse(ErrorCode::Unavailable, format!("event log: {other}")),
    }
}

fn rollout_aggregate(app: &AppId, number: u32) -> AggregateId {
    AggregateId::Rollout {
        app: app.clone(),
        number,
    }
}

/// What a steering command does to the rollout in progress: record an event, answer that it
/// already happened, or refuse.
enum Steer {
    Record(Event),
    AlreadyDone,
    Refuse(String),
}

/// Applies `steer` to the application's rollout in progress.
/// Brings the view up to the log for `app` and its rollouts (the newest it knows and one more,
/// which another instance may have just created).
async fn catch_up_rollouts(state: &Deployer, app: &AppId) -> Result<(), CommandError> {
    state
        .catch_up(&wasmbed_schemas::AggregateId::Application(app.clone()))
        .await?;
    let newest = state.fleet().newest_rollout(app);
    for number in [newest.max(1), newest + 1] {
        state.catch_up(&rollout_aggregate(app, number)).await?;
    }
    Ok(())
}

async fn steer(
    state: &Deployer,
    app: &AppId,
    steer: impl FnOnce(u32, &Rollout) -> Steer,
) -> Result<Accepted, CommandError> {
    catch_up_rollouts(state, app).await?;
    live_app(state, app)?;
    let (number, decision, version) = {
        let fleet = state.fleet();
        let Some((number, rollout)) = fleet.active_rollout(app) else {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("app_id: {app} has no rollout in progress"),
            ));
        };
        let version = fleet.version(&rollout_aggregate(app, number));
        (number, steer(number, rollout), version)
    };
    match decision {
        Steer::AlreadyDone => Ok(Accepted { sequence: version }),
        Steer::Refuse(why) => Err(refuse(
            ErrorCode::Refused,
            format!("rollout {number} of {app} {why}"),
        )),
        Steer::Record(event) => {
            let sequence = state
                .record(ExpectedVersion::Exactly(version), event)
                .await
                .map_err(|e| conflict_or_unavailable(e, "the rollout moved on concurrently"))?;
            Ok(Accepted { sequence })
        }
    }
}

pub(crate) async fn approve_rollout(
    state: State,
    c: ApproveRollout,
) -> Result<Accepted, CommandError> {
    let app_id = c.app_id.clone();
    steer(&state, &c.app_id, move |number, r| {
        let next = r.started.len();
        if !r.awaiting_approval() {
            return Steer::Refuse(format!(
                "is not waiting for approval: it is {}",
                r.describe()
            ));
        }
        Steer::Record(
            RolloutApproved {
                app_id,
                number,
                wave: next as u32,
            }
            .into(),
        )
    })
    .await
}

pub(crate) async fn pause_rollout(state: State, c: PauseRollout) -> Result<Accepted, CommandError> {
    let app_id = c.app_id.clone();
    steer(&state, &c.app_id, move |number, r| {
        if r.phase != RolloutPhase::Waves || r.halted.is_some() {
            Steer::Refuse(format!("cannot be paused: it is {}", r.describe()))
        } else if r.paused {
            Steer::AlreadyDone
        } else {
            Steer::Record(RolloutPaused { app_id, number }.into())
        }
    })
    .await
}

pub(crate) async fn resume_rollout(
    state: State,
    c: ResumeRollout,
) -> Result<Accepted, CommandError> {
    let app_id = c.app_id.clone();
    steer(&state, &c.app_id, move |number, r| {
        if r.paused {
            Steer::Record(RolloutResumed { app_id, number }.into())
        } else {
            Steer::AlreadyDone
        }
    })
    .await
}

pub(crate) async fn abort_rollout(state: State, c: AbortRollout) -> Result<Accepted, CommandError> {
    let app_id = c.app_id.clone();
    let reason = c
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "aborted by an operator".into());
    steer(&state, &c.app_id, move |number, r| {
        if r.phase != RolloutPhase::Waves || r.halted.is_some() {
            Steer::AlreadyDone
        } else {
            Steer::Record(
                RolloutAborted {
                    app_id,
                    number,
                    reason,
                }
                .into(),
            )
        }
    })
    .await
}
