//! Rollouts as the log tells them, and the one question the reconciler asks of them: which
//! version should a device run now.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use wasmbed_schemas::event::{
    CopyReport, DeviceFailure, Event, PlannedWave, RehearsalCopy, RolloutGate,
};
use wasmbed_schemas::rest::{DesiredState, RolloutState, RolloutView, WaveState, WaveView};
use wasmbed_schemas::rollout::WaveSize;
use wasmbed_schemas::{AppId, DeviceId};

use crate::fold::Touched;
use crate::model::Fleet;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RolloutPhase {
    /// Waves are being started and judged.
    Waves,
    /// Every device that got the new version is going back to the version before.
    RollingBack,
    /// The rollback finished.
    RolledBack,
    /// Every wave passed.
    Completed,
}

impl RolloutPhase {
    /// It no longer changes anything.
    pub fn finished(self) -> bool {
        matches!(self, Self::RolledBack | Self::Completed)
    }
}

/// What the gate said of a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// It ran the new version for the soak time.
    Passed,
    /// It did not, for this reason.
    Failed(String),
}

/// One rollout of an application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rollout {
    /// The version before (none: the app was not running).
    pub from: Option<u32>,
    /// The version rolled out.
    pub to: u32,
    /// The planned waves.
    pub waves: Vec<PlannedWave>,
    /// The gate of every wave.
    pub gate: RolloutGate,
    /// Where it is.
    pub phase: RolloutPhase,
    /// When each started wave started, in wave order.
    pub started: Vec<DateTime<Utc>>,
    /// Waves approved.
    pub approved: BTreeSet<u32>,
    /// Waves passed, in order.
    pub passed: u32,
    /// An operator paused it.
    pub paused: bool,
    /// The gate's verdict on each judged device.
    pub verdicts: BTreeMap<DeviceId, Verdict>,
    /// Why it was halted (a failed wave, an abort); the rollback follows.
    pub halted: Option<String>,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// The simulated copies of its rehearsal wave.
    pub copies: Vec<RehearsalCopy>,
    /// What each copy did, once the rehearsal was judged.
    pub rehearsal: Vec<CopyReport>,
    wave_of: HashMap<DeviceId, u32>,
}

impl Rollout {
    /// The wave a device is in, if it is in one.
    pub fn wave_of(&self, device: &DeviceId) -> Option<u32> {
        self.wave_of.get(device).copied()
    }

    /// The device is in a wave that started: it was given the new version.
    pub fn reached(&self, device: &DeviceId) -> bool {
        self.wave_of(device)
            .is_some_and(|w| (w as usize) < self.started.len())
    }

    /// Every real device (not a rehearsal copy) in a started wave.
    pub fn reached_devices(&self) -> impl Iterator<Item = &DeviceId> {
        self.waves[..self.started.len().min(self.waves.len())]
            .iter()
            .flat_map(|w| &w.devices)
            .filter(|d| !self.is_copy(d))
    }

    /// `device` is one of its rehearsal's simulated copies.
    pub fn is_copy(&self, device: &DeviceId) -> bool {
        self.copies.iter().any(|c| &c.device_id == device)
    }

    /// Its first wave is a rehearsal on copies.
    pub fn has_rehearsal(&self) -> bool {
        self.waves
            .first()
            .is_some_and(|w| w.size == WaveSize::Rehearsal)
    }

    /// It is a rehearsal and nothing else: no real device is in any wave, and completing it
    /// changes no application's version.
    pub fn rehearsal_only(&self) -> bool {
        self.waves.iter().all(|w| w.size == WaveSize::Rehearsal)
    }

    /// The rehearsal wave is running: its copies should run the new version.
    pub fn rehearsing(&self) -> bool {
        self.has_rehearsal()
            && self.phase == RolloutPhase::Waves
            && self.halted.is_none()
            && self.current_wave() == Some(0)
    }

    /// The rehearsal is over (judged, halted or the rollout finished): its copies go.
    pub fn rehearsal_over(&self) -> bool {
        self.has_rehearsal() && !self.started.is_empty() && !self.rehearsing()
    }

    /// The version `device` should run while this rollout is the application's.
    pub fn wanted_version(&self, device: &DeviceId) -> Option<u32> {
        if self.is_copy(device) {
            return self.rehearsing().then_some(self.to);
        }
        match self.phase {
            RolloutPhase::Waves if self.reached(device) => Some(self.to),
            RolloutPhase::Completed => Some(self.to),
            RolloutPhase::Waves | RolloutPhase::RollingBack | RolloutPhase::RolledBack => self.from,
        }
    }

    /// The wave being judged: the last started one, while it has not passed.
    pub fn current_wave(&self) -> Option<u32> {
        let started = self.started.len() as u32;
        (started > self.passed).then(|| started - 1)
    }

    /// The wave being judged, or else the next to start (from 0; the last once all started).
    pub fn wave(&self) -> u32 {
        self.current_wave()
            .unwrap_or(self.started.len() as u32)
            .min(self.waves.len().saturating_sub(1) as u32)
    }

    /// Where it is in words: `judging (wave 2 of 3)`, `rolled back`.
    pub fn describe(&self) -> String {
        self.state().describe(self.wave(), self.waves.len())
    }

    /// The next wave waits for approval.
    pub fn awaiting_approval(&self) -> bool {
        let next = self.started.len();
        self.phase == RolloutPhase::Waves
            && self.halted.is_none()
            && self.current_wave().is_none()
            && self.waves.get(next).is_some_and(|w| w.needs_approval)
            && !self.approved.contains(&(next as u32))
    }

    /// Where it is, as it is shown.
    pub fn state(&self) -> RolloutState {
        match self.phase {
            RolloutPhase::Waves if self.halted.is_some() => RolloutState::Halting,
            RolloutPhase::Waves if self.current_wave().is_some() => RolloutState::Judging,
            RolloutPhase::Waves if self.paused => RolloutState::Paused,
            RolloutPhase::Waves if self.awaiting_approval() => RolloutState::AwaitingApproval,
            RolloutPhase::Waves => RolloutState::Starting,
            RolloutPhase::RollingBack => RolloutState::RollingBack,
            RolloutPhase::RolledBack => RolloutState::RolledBack,
            RolloutPhase::Completed => RolloutState::Completed,
        }
    }

    /// Devices of one wave that passed and that failed.
    pub fn wave_counts(&self, wave: usize) -> (u32, u32) {
        let Some(planned) = self.waves.get(wave) else {
            return (0, 0);
        };
        planned
            .devices
            .iter()
            .fold((0, 0), |(p, f), d| match self.verdicts.get(d) {
                Some(Verdict::Passed) => (p + 1, f),
                Some(Verdict::Failed(_)) => (p, f + 1),
                None => (p, f),
            })
    }

    /// As the api shows it.
    pub fn view(&self, app: &AppId, number: u32) -> RolloutView {
        let waves = self
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let (passed, failed) = self.wave_counts(i);
                let state = if i < self.passed as usize {
                    WaveState::Passed
                } else if i >= self.started.len() {
                    WaveState::Pending
                } else if self.phase == RolloutPhase::Waves && self.halted.is_none() {
                    WaveState::Judging
                } else {
                    WaveState::Halted
                };
                WaveView {
                    size: w.size.to_string(),
                    devices: w.devices.clone(),
                    needs_approval: w.needs_approval,
                    state,
                    started: self.started.get(i).copied(),
                    passed,
                    failed,
                }
            })
            .collect();
        RolloutView {
            app_id: app.clone(),
            number,
            state: self.state(),
            wave: self.wave(),
            from_version: self.from,
            to_version: self.to,
            gate: self.gate,
            waves,
            failures: self
                .verdicts
                .iter()
                .filter_map(|(d, v)| match v {
                    Verdict::Failed(reason) => Some(DeviceFailure {
                        device_id: d.clone(),
                        reason: reason.clone(),
                    }),
                    Verdict::Passed => None,
                })
                .collect(),
            halted: self.halted.clone(),
            rehearsal: self.rehearsal.clone(),
            created: self.created,
        }
    }
}

impl Fleet {
    /// The rollout of an application with that number.
    pub fn rollout(&self, app: &AppId, number: u32) -> Option<&Rollout> {
        self.rollouts.get(&(app.clone(), number))
    }

    /// The application's rollout in progress, with its number: its newest, unless finished
    /// (one runs at a time).
    pub fn active_rollout(&self, app: &AppId) -> Option<(u32, &Rollout)> {
        self.apps.get(app)?;
        self.rollouts_of(app)
            .next()
            .filter(|(_, r)| !r.phase.finished())
    }

    /// The number of the application's newest rollout (0: none yet).
    pub fn newest_rollout(&self, app: &AppId) -> u32 {
        self.rollouts_of(app).next().map_or(0, |(n, _)| n)
    }

    /// Every rollout of every application.
    pub fn all_rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.values()
    }

    /// The application's rollouts, newest first.
    pub fn rollouts_of<'a>(
        &'a self,
        app: &AppId,
    ) -> impl Iterator<Item = (u32, &'a Rollout)> + use<'a> {
        self.rollouts
            .range((app.clone(), 0)..=(app.clone(), u32::MAX))
            .rev()
            .map(|((_, n), r)| (*n, r))
    }

    /// `device` is a copy the application's rollout in progress is rehearsing on now.
    pub fn rehearses(&self, app: &AppId, device: &DeviceId) -> bool {
        self.active_rollout(app)
            .is_some_and(|(_, r)| r.rehearsing() && r.is_copy(device))
    }

    /// The version of `app` that should run on `device` now, if any: the application's version,
    /// or what its rollout in progress says. Whether the device is in the target is the
    /// caller's question.
    pub fn wanted_version(&self, app: &AppId, device: &DeviceId) -> Option<u32> {
        match self.active_rollout(app) {
            Some((_, rollout)) => rollout.wanted_version(device),
            None => self.apps.get(app)?.running_version(),
        }
    }

    /// Folds one rollout event.
    pub(crate) fn apply_rollout(&mut self, event: &Event, at: DateTime<Utc>) -> Touched {
        match event {
            Event::RolloutCreated(e) => {
                if !self.apps.contains_key(&e.app_id) {
                    return Touched::Nothing;
                }
                let wave_of = e
                    .waves
                    .iter()
                    .enumerate()
                    .flat_map(|(i, w)| w.devices.iter().map(move |d| (d.clone(), i as u32)))
                    .collect();
                let rollout = Rollout {
                    from: e.from_version,
                    to: e.to_version,
                    waves: e.waves.clone(),
                    gate: e.gate,
                    phase: RolloutPhase::Waves,
                    started: Vec::new(),
                    approved: BTreeSet::new(),
                    passed: 0,
                    paused: false,
                    verdicts: BTreeMap::new(),
                    halted: None,
                    created: at,
                    copies: e.copies.clone(),
                    rehearsal: Vec::new(),
                    wave_of,
                };
                self.rollouts.insert((e.app_id.clone(), e.number), rollout);
                Touched::App(e.app_id.clone())
            }
            Event::RolloutWaveStarted(e) => self.change_rollout(&e.app_id, e.number, |r| {
                if r.started.len() == e.wave as usize {
                    r.started.push(at);
                }
                true
            }),
            Event::RolloutDevicesJudged(e) => self.change_rollout(&e.app_id, e.number, |r| {
                for device in &e.passed {
                    r.verdicts.insert(device.clone(), Verdict::Passed);
                }
                for failure in &e.failed {
                    let verdict = Verdict::Failed(failure.reason.clone());
                    r.verdicts.insert(failure.device_id.clone(), verdict);
                }
                false
            }),
            Event::RolloutRehearsed(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.rehearsal.clone_from(&e.copies);
                false
            }),
            Event::RolloutWavePassed(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.passed = r.passed.max(e.wave + 1);
                false
            }),
            Event::RolloutApproved(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.approved.insert(e.wave);
                false
            }),
            Event::RolloutPaused(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.paused = true;
                false
            }),
            Event::RolloutResumed(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.paused = false;
                false
            }),
            Event::RolloutWaveFailed(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.halted.get_or_insert_with(|| {
                    format!(
                        "wave {} failed: {} devices failed their gate, {} allowed",
                        e.wave + 1,
                        e.failed,
                        e.allowed
                    )
                });
                false
            }),
            Event::RolloutAborted(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.halted
                    .get_or_insert_with(|| format!("aborted: {}", e.reason));
                false
            }),
            Event::RolloutRollbackStarted(e) => self.change_rollout(&e.app_id, e.number, |r| {
                r.phase = RolloutPhase::RollingBack;
                r.halted.get_or_insert_with(|| e.reason.clone());
                true
            }),
            Event::RolloutRollbackFinished(e) => {
                self.finish_rollout(&e.app_id, e.number, RolloutPhase::RolledBack)
            }
            Event::RolloutCompleted(e) => {
                self.finish_rollout(&e.app_id, e.number, RolloutPhase::Completed)
            }
            _ => Touched::Nothing,
        }
    }

    /// Changes a rollout; `change` says whether what devices should run changed.
    fn change_rollout(
        &mut self,
        app: &AppId,
        number: u32,
        change: impl FnOnce(&mut Rollout) -> bool,
    ) -> Touched {
        match self.rollouts.get_mut(&(app.clone(), number)).map(change) {
            Some(true) => Touched::App(app.clone()),
            _ => Touched::Nothing,
        }
    }

    fn finish_rollout(&mut self, app_id: &AppId, number: u32, phase: RolloutPhase) -> Touched {
        let Some(rollout) = self.rollouts.get_mut(&(app_id.clone(), number)) else {
            return Touched::Nothing;
        };
        rollout.phase = phase;
        let to = rollout.to;
        let changes_the_app = phase == RolloutPhase::Completed && !rollout.rehearsal_only();
        let Some(app) = self.apps.get_mut(app_id) else {
            return Touched::Nothing;
        };
        if changes_the_app && !app.deleted() {
            app.desired = DesiredState::Running { version: to };
        }
        Touched::App(app_id.clone())
    }
}
