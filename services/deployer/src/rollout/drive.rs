//! The next step of a rollout, as a pure function of the rollout (folded from its events), what
//! the fleet says of its devices, and the time. The reconciler records each step as an event and
//! asks again until the answer is [`Step::Nothing`]; a restarted deployer asks the same
//! question of the same log and gets the same answer.

use chrono::{DateTime, Utc};
use wasmbed_fleet::{Rollout, RolloutPhase, Verdict};
use wasmbed_schemas::DeviceId;

use wasmbed_schemas::rollout::MaxFailures;

use super::gate::{self, DeviceVerdict, Gate, Observed, WaveVerdict};

/// Where a device that got the new version is in a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reverting {
    /// It runs the version before again (or no longer runs the app, when there was none).
    Done,
    /// Not yet.
    Pending,
    /// It has no session; it gets the version before when it comes back.
    Unreachable,
}

/// What to record next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing now.
    Nothing,
    /// Start this wave.
    StartWave(u32),
    /// Record the gate's verdict on these devices of the wave.
    Judge {
        /// The wave.
        wave: u32,
        /// Devices that passed.
        passed: Vec<DeviceId>,
        /// Devices that failed, with the reason.
        failed: Vec<(DeviceId, String)>,
    },
    /// The rehearsal wave is decided: record what each copy did, before its pass or failure.
    ReportRehearsal,
    /// The wave passed.
    WavePassed {
        /// The wave.
        wave: u32,
        /// Its failures, within the threshold.
        failed: u32,
    },
    /// The wave failed; the rollback follows.
    WaveFailed {
        /// The wave.
        wave: u32,
        /// Its failures.
        failed: u32,
        /// What it was allowed.
        allowed: u32,
    },
    /// The rollout was halted (a failed wave, an abort): roll back.
    RollBack {
        /// Why.
        reason: String,
        /// Real devices that got the new version.
        devices: u32,
    },
    /// Every wave passed.
    Complete,
    /// Every reachable device is back on the version before.
    FinishRollback {
        /// Devices confirmed back.
        reverted: u32,
        /// Devices without a session.
        unreachable: u32,
    },
}

/// The gate of a rollout, in the form [`gate::judge`] takes.
pub fn gate_of(rollout: &Rollout) -> Gate {
    let ms = |v: u64| chrono::Duration::milliseconds(i64::try_from(v).unwrap_or(i64::MAX));
    Gate {
        soak: ms(rollout.gate.soak_ms),
        deadline: ms(rollout.gate.deadline_ms),
    }
}

/// The next step of `rollout`; `observe` says how a device of the current wave is doing with
/// the new version, `reverting` how a device is doing in a rollback.
pub fn next(
    rollout: &Rollout,
    observe: impl Fn(&DeviceId) -> Observed,
    reverting: impl Fn(&DeviceId) -> Reverting,
    now: DateTime<Utc>,
) -> Step {
    match rollout.phase {
        RolloutPhase::Completed | RolloutPhase::RolledBack => Step::Nothing,
        RolloutPhase::RollingBack => {
            let (mut reverted, mut unreachable) = (0, 0);
            for device in rollout.reached_devices() {
                match reverting(device) {
                    Reverting::Done => reverted += 1,
                    Reverting::Unreachable => unreachable += 1,
                    Reverting::Pending => return Step::Nothing,
                }
            }
            Step::FinishRollback {
                reverted,
                unreachable,
            }
        }
        RolloutPhase::Waves if rollout.halted.is_some() => Step::RollBack {
            reason: rollout.halted.clone().unwrap_or_default(),
            devices: u32::try_from(rollout.reached_devices().count()).unwrap_or(u32::MAX),
        },
        RolloutPhase::Waves => match rollout.current_wave() {
            Some(wave) => judge_wave(rollout, wave, observe, now),
            None => start_next(rollout),
        },
    }
}

fn judge_wave(
    rollout: &Rollout,
    wave: u32,
    observe: impl Fn(&DeviceId) -> Observed,
    now: DateTime<Utc>,
) -> Step {
    let (Some(planned), Some(&started)) = (
        rollout.waves.get(wave as usize),
        rollout.started.get(wave as usize),
    ) else {
        return Step::Nothing;
    };
    let gate = gate_of(rollout);
    let mut verdicts = Vec::with_capacity(planned.devices.len());
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for device in &planned.devices {
        let verdict = match rollout.verdicts.get(device) {
            Some(Verdict::Passed) => DeviceVerdict::Passed,
            Some(Verdict::Failed(why)) => DeviceVerdict::Failed(why.clone()),
            None => {
                let fresh = gate::judge(&observe(device), gate, started, now);
                match &fresh {
                    DeviceVerdict::Passed => passed.push(device.clone()),
                    DeviceVerdict::Failed(why) => failed.push((device.clone(), why.clone())),
                    DeviceVerdict::Pending => {}
                }
                fresh
            }
        };
        verdicts.push(verdict);
    }
    if !passed.is_empty() || !failed.is_empty() {
        return Step::Judge {
            wave,
            passed,
            failed,
        };
    }
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let rehearsal = wave == 0 && rollout.has_rehearsal();
    // A rehearsal allows no failure: a copy that fails is the fleet failing later.
    let allowed = if rehearsal {
        MaxFailures::Count(0)
    } else {
        rollout.gate.max_failures
    };
    let verdict = gate::wave(&verdicts, allowed);
    if rehearsal
        && verdict != WaveVerdict::Pending
        && rollout.rehearsal.is_empty()
        && !rollout.copies.is_empty()
    {
        return Step::ReportRehearsal;
    }
    match verdict {
        WaveVerdict::Pending => Step::Nothing,
        WaveVerdict::Passed { failed } => Step::WavePassed {
            wave,
            failed: count(failed),
        },
        WaveVerdict::Failed { failed, allowed } => Step::WaveFailed {
            wave,
            failed: count(failed),
            allowed: count(allowed),
        },
    }
}

fn start_next(rollout: &Rollout) -> Step {
    let next = rollout.started.len();
    let Some(planned) = rollout.waves.get(next) else {
        return Step::Complete;
    };
    let next = u32::try_from(next).unwrap_or(u32::MAX);
    if rollout.paused || (planned.needs_approval && !rollout.approved.contains(&next)) {
        return Step::Nothing;
    }
    Step::StartWave(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use wasmbed_eventlog::StoredEvent;
    use wasmbed_fleet::Fleet;
    use wasmbed_schemas::event::*;
    use wasmbed_schemas::frame::Limits;
    use wasmbed_schemas::rest::DeploymentPhase as Phase;
    use wasmbed_schemas::rollout::{MaxFailures, WaveSize};
    use wasmbed_schemas::{AppId, bytes::Blob};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds)
    }

    fn id(name: &str) -> DeviceId {
        DeviceId::new(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn app() -> AppId {
        AppId::new("blink").unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fleet with app `blink` and a rollout of it from v1 to v2 over waves `[d1], [d2, d3]`
    /// (the second waiting for approval when `approval`), soak 30 s, deadline 120 s, at most
    /// `max_failures` per wave; then `events`, each at its time.
    struct Case {
        fleet: Fleet,
        sequence: u64,
    }

    impl Case {
        fn new(approval: bool, max_failures: MaxFailures) -> Self {
            let mut case = Self {
                fleet: Fleet::default(),
                sequence: 0,
            };
            case.add(
                0,
                ApplicationCreated {
                    app_id: app(),
                    name: "blink".into(),
                    target: Target::All,
                    config: Blob::default(),
                    limits: Limits {
                        fuel_per_invocation: 1_000,
                        max_memory_pages: 1,
                        tick_interval_ms: 100,
                    },
                },
            );
            let wave = |size: WaveSize, devices: &[&str], needs_approval| PlannedWave {
                size,
                devices: devices.iter().map(|d| id(d)).collect(),
                needs_approval,
            };
            case.add(
                0,
                RolloutCreated {
                    app_id: app(),
                    number: 1,
                    from_version: Some(1),
                    to_version: 2,
                    waves: vec![
                        wave(WaveSize::Count(1), &["d1"], false),
                        wave(WaveSize::Rest, &["d2", "d3"], approval),
                    ],
                    gate: RolloutGate {
                        soak_ms: 30_000,
                        deadline_ms: 120_000,
                        max_failures,
                    },
                    copies: Vec::new(),
                },
            );
            case
        }

        fn add(&mut self, seconds: i64, event: impl Into<Event>) -> &mut Self {
            self.sequence += 1;
            let mut envelope = EventEnvelope::new(event.into());
            envelope.time = at(seconds);
            self.fleet.apply(&StoredEvent {
                sequence: self.sequence,
                envelope,
                trace: wasmbed_bus::trace::current_traceparent(),
            });
            self
        }

        fn wave_started(&mut self, seconds: i64, wave: u32) -> &mut Self {
            self.add(
                seconds,
                RolloutWaveStarted {
                    app_id: app(),
                    number: 1,
                    wave,
                },
            )
        }

        fn judged(&mut self, wave: u32, passed: &[&str], failed: &[&str]) -> &mut Self {
            self.add(
                0,
                RolloutDevicesJudged {
                    app_id: app(),
                    number: 1,
                    wave,
                    passed: passed.iter().map(|d| id(d)).collect(),
                    failed: failed
                        .iter()
                        .map(|d| DeviceFailure {
                            device_id: id(d),
                            reason: "trap".into(),
                        })
                        .collect(),
                },
            )
        }

        fn next(&self, seen: &[(&str, Observed)], back: &[(&str, Reverting)], now: i64) -> Step {
            let rollout = self
                .fleet
                .rollout(&app(), 1)
                .unwrap_or_else(|| panic!("no rollout"));
            next(
                rollout,
                |d| {
                    seen.iter()
                        .find(|(name, _)| id(name) == *d)
                        .map_or_else(nothing_yet, |(_, o)| o.clone())
                },
                |d| {
                    back.iter()
                        .find(|(name, _)| id(name) == *d)
                        .map_or(Reverting::Pending, |(_, r)| *r)
                },
                at(now),
            )
        }
    }

    fn nothing_yet() -> Observed {
        Observed {
            phase: None,
            running_since: None,
            online: true,
            failure: None,
        }
    }

    fn running_since(seconds: i64) -> Observed {
        Observed {
            phase: Some(Phase::Running),
            running_since: Some(at(seconds)),
            ..nothing_yet()
        }
    }

    fn trapped() -> Observed {
        Observed {
            phase: Some(Phase::Failed),
            failure: Some("trap: unreachable".into()),
            ..nothing_yet()
        }
    }

    #[test]
    fn a_healthy_rollout_walks_every_wave_in_order() {
        let mut case = Case::new(false, MaxFailures::Count(0));
        assert_eq!(case.next(&[], &[], 1), Step::StartWave(0));
        case.wave_started(1, 0);
        // Running, but not yet for the soak time.
        assert_eq!(
            case.next(&[("d1", running_since(10))], &[], 20),
            Step::Nothing
        );
        assert_eq!(
            case.next(&[("d1", running_since(10))], &[], 40),
            Step::Judge {
                wave: 0,
                passed: vec![id("d1")],
                failed: vec![],
            }
        );
        case.judged(0, &["d1"], &[]);
        assert_eq!(
            case.next(&[], &[], 40),
            Step::WavePassed { wave: 0, failed: 0 }
        );
        case.add(
            40,
            RolloutWavePassed {
                app_id: app(),
                number: 1,
                wave: 0,
                failed: 0,
            },
        );
        assert_eq!(case.next(&[], &[], 40), Step::StartWave(1));
        case.wave_started(40, 1).judged(1, &["d2", "d3"], &[]);
        assert_eq!(
            case.next(&[], &[], 80),
            Step::WavePassed { wave: 1, failed: 0 }
        );
        case.add(
            80,
            RolloutWavePassed {
                app_id: app(),
                number: 1,
                wave: 1,
                failed: 0,
            },
        );
        assert_eq!(case.next(&[], &[], 80), Step::Complete);
    }

    #[test]
    fn a_wave_over_its_threshold_fails_and_then_rolls_back() {
        let mut case = Case::new(false, MaxFailures::Count(0));
        case.wave_started(0, 0);
        assert_eq!(
            case.next(&[("d1", trapped())], &[], 5),
            Step::Judge {
                wave: 0,
                passed: vec![],
                failed: vec![(id("d1"), "trap: unreachable".into())],
            }
        );
        case.judged(0, &[], &["d1"]);
        assert_eq!(
            case.next(&[], &[], 5),
            Step::WaveFailed {
                wave: 0,
                failed: 1,
                allowed: 0
            }
        );
        case.add(
            5,
            RolloutWaveFailed {
                app_id: app(),
                number: 1,
                wave: 0,
                failed: 1,
                allowed: 0,
            },
        );
        // Recorded once: the next question is the rollback, not the failure again.
        assert!(matches!(case.next(&[], &[], 5), Step::RollBack { .. }));
        case.add(
            5,
            RolloutRollbackStarted {
                app_id: app(),
                number: 1,
                reason: "wave 1 failed".into(),
                devices: 1,
            },
        );
        assert_eq!(
            case.next(&[], &[("d1", Reverting::Pending)], 6),
            Step::Nothing
        );
        // Only devices of started waves are waited for; d2 and d3 never got the new version.
        assert_eq!(
            case.next(&[], &[("d1", Reverting::Done)], 7),
            Step::FinishRollback {
                reverted: 1,
                unreachable: 0
            }
        );
        assert_eq!(
            case.next(&[], &[("d1", Reverting::Unreachable)], 7),
            Step::FinishRollback {
                reverted: 0,
                unreachable: 1
            }
        );
    }

    #[test]
    fn failures_within_the_threshold_let_the_wave_pass() {
        let mut case = Case::new(false, MaxFailures::Count(1));
        case.wave_started(0, 0).judged(0, &[], &["d1"]);
        assert_eq!(
            case.next(&[], &[], 5),
            Step::WavePassed { wave: 0, failed: 1 }
        );
    }

    #[test]
    fn a_device_that_never_runs_fails_at_the_deadline() {
        let mut case = Case::new(false, MaxFailures::Count(0));
        case.wave_started(0, 0);
        assert_eq!(case.next(&[], &[], 119), Step::Nothing);
        assert!(matches!(
            case.next(&[], &[], 120),
            Step::Judge { failed, .. } if failed.len() == 1
        ));
    }

    #[test]
    fn approval_pause_and_abort_hold_or_halt_the_next_wave() {
        let passed_first = |approval| {
            let mut case = Case::new(approval, MaxFailures::Count(0));
            case.wave_started(0, 0).judged(0, &["d1"], &[]).add(
                40,
                RolloutWavePassed {
                    app_id: app(),
                    number: 1,
                    wave: 0,
                    failed: 0,
                },
            );
            case
        };
        let mut waiting = passed_first(true);
        assert_eq!(waiting.next(&[], &[], 50), Step::Nothing);
        waiting.add(
            50,
            RolloutApproved {
                app_id: app(),
                number: 1,
                wave: 1,
            },
        );
        assert_eq!(waiting.next(&[], &[], 50), Step::StartWave(1));

        let mut paused = passed_first(false);
        paused.add(
            45,
            RolloutPaused {
                app_id: app(),
                number: 1,
            },
        );
        assert_eq!(paused.next(&[], &[], 50), Step::Nothing);
        paused.add(
            46,
            RolloutResumed {
                app_id: app(),
                number: 1,
            },
        );
        assert_eq!(paused.next(&[], &[], 50), Step::StartWave(1));

        let mut aborted = passed_first(true);
        aborted.add(
            47,
            RolloutAborted {
                app_id: app(),
                number: 1,
                reason: "enough".into(),
            },
        );
        assert_eq!(
            aborted.next(&[], &[], 50),
            Step::RollBack {
                reason: "aborted: enough".into(),
                devices: 1,
            }
        );
    }

    #[test]
    fn what_each_device_should_run_follows_the_rollout() {
        let mut case = Case::new(false, MaxFailures::Count(0));
        let wanted = |case: &Case, d: &str| case.fleet.wanted_version(&app(), &id(d));
        // Before any wave: the version before, everywhere.
        assert_eq!(wanted(&case, "d1"), Some(1));
        case.wave_started(0, 0);
        assert_eq!(
            (wanted(&case, "d1"), wanted(&case, "d2")),
            (Some(2), Some(1))
        );
        case.add(
            5,
            RolloutRollbackStarted {
                app_id: app(),
                number: 1,
                reason: "trap".into(),
                devices: 1,
            },
        );
        assert_eq!(
            (wanted(&case, "d1"), wanted(&case, "d2")),
            (Some(1), Some(1))
        );
    }
}
