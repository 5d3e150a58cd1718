//! The health gate: whether a device passed, failed or is still being watched, and what that
//! makes of its wave.
//!
//! A device passes when the new version has run on it for the soak time while it was online;
//! it fails when the version failed there (a trap, exhausted fuel, a refusal) or when it has not
//! passed by the deadline. A wave fails as soon as more devices failed than the threshold allows
//! (there is no point waiting for the rest), and passes when every device passed or failed
//! within the threshold.

use chrono::{DateTime, Utc};
use wasmbed_schemas::rest::DeploymentPhase as Phase;
use wasmbed_schemas::rollout::MaxFailures;

/// What the fleet says of the new version on one device of a wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The phase of the new version there, once the device has it.
    pub phase: Option<Phase>,
    /// Since when it has run there without a break while the device was online.
    pub running_since: Option<DateTime<Utc>>,
    /// The device is online and reporting.
    pub online: bool,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// The soak and the deadline of a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// How long the new version must run.
    pub soak: chrono::Duration,
    /// How long a device has to pass, from the wave's start.
    pub deadline: chrono::Duration,
}

/// Where one device of a wave stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceVerdict {
    /// Still being watched.
    Pending,
    /// It passed the gate.
    Passed,
    /// It failed, and why.
    Failed(String),
}

/// Where a wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveVerdict {
    /// Devices are still being watched and the threshold holds.
    Pending,
    /// Every device is decided, failures within the threshold.
    Passed { failed: usize },
    /// More devices failed than the threshold allows.
    Failed { failed: usize, allowed: usize },
}

/// The verdict on one device of a wave that started at `started`.
pub fn judge(
    seen: &Observed,
    gate: Gate,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DeviceVerdict {
    match seen.phase {
        Some(phase @ (Phase::Failed | Phase::Refused)) => {
            let otherwise = if phase == Phase::Failed {
                "the application failed"
            } else {
                "the version does not fit the device"
            };
            let why = seen.failure.as_deref().unwrap_or(otherwise);
            return DeviceVerdict::Failed(why.to_owned());
        }
        Some(Phase::Running)
            if seen.online
                && seen
                    .running_since
                    .is_some_and(|since| now - since >= gate.soak) =>
        {
            return DeviceVerdict::Passed;
        }
        _ => {}
    }
    if now - started >= gate.deadline {
        let soak = gate.soak.num_milliseconds();
        let deadline = gate.deadline.num_milliseconds();
        return DeviceVerdict::Failed(format!(
            "not running for {soak} ms while online within {deadline} ms"
        ));
    }
    DeviceVerdict::Pending
}

/// The verdict on a wave from its devices' verdicts.
pub fn wave(verdicts: &[DeviceVerdict], max_failures: MaxFailures) -> WaveVerdict {
    let failed = verdicts
        .iter()
        .filter(|v| matches!(v, DeviceVerdict::Failed(_)))
        .count();
    let allowed = max_failures.allowed(verdicts.len());
    if failed > allowed {
        WaveVerdict::Failed { failed, allowed }
    } else if verdicts.contains(&DeviceVerdict::Pending) {
        WaveVerdict::Pending
    } else {
        WaveVerdict::Passed { failed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const GATE: Gate = Gate {
        soak: Duration::seconds(30),
        deadline: Duration::seconds(120),
    };

    fn seen(phase: Option<Phase>, running_for: Option<i64>, online: bool) -> Observed {
        Observed {
            phase,
            running_since: running_for.map(|s| at(100 - s)),
            online,
            failure: None,
        }
    }

    /// Seconds into the wave.
    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(seconds)
    }

    #[test]
    fn every_device_situation() {
        use DeviceVerdict::*;
        let start = at(0);
        let stuck = "not running for 30000 ms while online within 120000 ms";
        // (what is seen at 100 s into the wave, the verdict then, the verdict at 120 s)
        let cases: Vec<(Observed, DeviceVerdict, DeviceVerdict)> = vec![
            (seen(None, None, true), Pending, Failed(stuck.into())),
            (
                seen(Some(Phase::Requested), None, true),
                Pending,
                Failed(stuck.into()),
            ),
            (
                seen(Some(Phase::Transferring), None, true),
                Pending,
                Failed(stuck.into()),
            ),
            (
                seen(Some(Phase::Delivered), None, true),
                Pending,
                Failed(stuck.into()),
            ),
            // Running since 90 s: the soak is over at 120 s, just in time for the deadline.
            (seen(Some(Phase::Running), Some(10), true), Pending, Passed),
            (seen(Some(Phase::Running), Some(30), true), Passed, Passed),
            (
                seen(Some(Phase::Running), Some(90), false),
                Pending,
                Failed(stuck.into()),
            ),
            (
                seen(Some(Phase::Running), None, true),
                Pending,
                Failed(stuck.into()),
            ),
            (
                seen(Some(Phase::Failed), None, true),
                Failed("the application failed".into()),
                Failed("the application failed".into()),
            ),
            (
                Observed {
                    failure: Some("trap: unreachable".into()),
                    ..seen(Some(Phase::Failed), None, false)
                },
                Failed("trap: unreachable".into()),
                Failed("trap: unreachable".into()),
            ),
            (
                seen(Some(Phase::Refused), None, true),
                Failed("the version does not fit the device".into()),
                Failed("the version does not fit the device".into()),
            ),
            (
                seen(Some(Phase::Stopping), None, true),
                Pending,
                Failed(stuck.into()),
            ),
            (
                seen(Some(Phase::Stopped), None, true),
                Pending,
                Failed(stuck.into()),
            ),
        ];
        for (observed, at_100, at_120) in cases {
            assert_eq!(
                judge(&observed, GATE, start, at(100)),
                at_100,
                "{observed:?} at 100 s"
            );
            // Twenty seconds on, with the same running start (so a long-running one passes).
            assert_eq!(
                judge(&observed, GATE, start, at(120)),
                at_120,
                "{observed:?} at 120 s"
            );
        }
    }

    #[test]
    fn a_wave_fails_as_soon_as_the_threshold_is_crossed() {
        use DeviceVerdict::*;
        let failed = || Failed("trap".into());
        let cases: Vec<(Vec<DeviceVerdict>, MaxFailures, WaveVerdict)> = vec![
            (
                vec![Passed, Passed],
                MaxFailures::Count(0),
                WaveVerdict::Passed { failed: 0 },
            ),
            (
                vec![Passed, Pending],
                MaxFailures::Count(0),
                WaveVerdict::Pending,
            ),
            (
                vec![failed(), Pending, Pending],
                MaxFailures::Count(0),
                WaveVerdict::Failed {
                    failed: 1,
                    allowed: 0,
                },
            ),
            (
                vec![failed(), Pending],
                MaxFailures::Count(1),
                WaveVerdict::Pending,
            ),
            (
                vec![failed(), Passed],
                MaxFailures::Count(1),
                WaveVerdict::Passed { failed: 1 },
            ),
            (
                [vec![failed(); 2], vec![Passed; 8]].concat(),
                MaxFailures::Percent(20),
                WaveVerdict::Passed { failed: 2 },
            ),
            (
                [vec![failed(); 3], vec![Pending; 7]].concat(),
                MaxFailures::Percent(20),
                WaveVerdict::Failed {
                    failed: 3,
                    allowed: 2,
                },
            ),
            (
                vec![failed()],
                MaxFailures::Percent(50),
                WaveVerdict::Failed {
                    failed: 1,
                    allowed: 0,
                },
            ),
        ];
        for (verdicts, threshold, expected) in cases {
            assert_eq!(
                wave(&verdicts, threshold),
                expected,
                "{verdicts:?} {threshold:?}"
            );
        }
    }
}
