//! Which devices of a target go in which wave.
//!
//! The order of the target is deterministic and independent of the fleet's history: devices
//! are sorted by SHA-256 of `rollout id / device id`, so a restarted deployer picks the same
//! devices, two rollouts pick different canaries, and no naming scheme puts the same devices
//! first every time.

use std::collections::{BTreeMap, HashSet};

use wasmbed_schemas::DeviceId;
use wasmbed_schemas::rollout::WaveSize;

/// Why waves cannot be planned on a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The target has no device.
    #[error("the target has no devices")]
    EmptyTarget,
    /// No waves were given.
    #[error("no waves given")]
    NoWaves,
    /// A count asks for more devices than the target has.
    #[error("wave {wave} ({size}) asks for more devices than the target's {target}")]
    TooMany {
        wave: usize,
        size: String,
        target: usize,
    },
    /// A wave adds nothing to the waves before it.
    #[error("wave {wave} ({size}) adds no device to the waves before it")]
    Empty { wave: usize, size: String },
    /// A rehearsal is not the first wave.
    #[error("wave {wave} is a rehearsal; a rehearsal can only be the first wave")]
    RehearsalNotFirst { wave: usize },
    /// The waves leave devices out.
    #[error("the waves cover {covered} of the target's {target} devices; end with 100% or rest")]
    Uncovered { covered: usize, target: usize },
}

/// The order devices of `target` are taken in by rollout `rollout`.
pub fn order(rollout: &str, target: &[DeviceId]) -> Vec<DeviceId> {
    let mut keyed: Vec<(wasmbed_schemas::Sha256, &DeviceId)> = target
        .iter()
        .map(|d| (crate::digest(format!("{rollout}/{d}").as_bytes()), d))
        .collect();
    keyed.sort_by(|a, b| a.0.0.cmp(&b.0.0).then_with(|| a.1.cmp(b.1)));
    keyed.dedup_by(|a, b| a.1 == b.1);
    keyed.into_iter().map(|(_, d)| d.clone()).collect()
}

/// The devices of each wave, from `ordered` (the target in [`order`]) with their labels.
pub fn plan(
    ordered: &[DeviceId],
    labels: &BTreeMap<DeviceId, BTreeMap<String, String>>,
    waves: &[WaveSize],
) -> Result<Vec<Vec<DeviceId>>, PlanError> {
    let target = ordered.len();
    if target == 0 {
        return Err(PlanError::EmptyTarget);
    }
    if waves.is_empty() {
        return Err(PlanError::NoWaves);
    }
    let mut taken: HashSet<&DeviceId> = HashSet::new();
    let mut planned = Vec::with_capacity(waves.len());
    for (index, size) in waves.iter().enumerate() {
        let wave_number = index + 1;
        let free = ordered.iter().filter(|d| !taken.contains(d));
        if *size == WaveSize::Rehearsal {
            // Its devices are copies, made by the caller; it takes none of the target.
            if index != 0 {
                return Err(PlanError::RehearsalNotFirst { wave: wave_number });
            }
            planned.push(Vec::new());
            continue;
        }
        let wave: Vec<&DeviceId> = match size {
            WaveSize::Count(_) | WaveSize::Percent(_) => {
                let reach = reach(size, target);
                if reach > target {
                    return Err(PlanError::TooMany {
                        wave: wave_number,
                        size: size.to_string(),
                        target,
                    });
                }
                free.take(reach.saturating_sub(taken.len())).collect()
            }
            WaveSize::Selector(wanted) => free
                .filter(|d| {
                    labels
                        .get(*d)
                        .is_some_and(|have| wanted.iter().all(|(k, v)| have.get(k) == Some(v)))
                })
                .collect(),
            WaveSize::Rest | WaveSize::Rehearsal => free.collect(),
        };
        if wave.is_empty() {
            return Err(PlanError::Empty {
                wave: wave_number,
                size: size.to_string(),
            });
        }
        taken.extend(wave.iter().copied());
        planned.push(wave.into_iter().cloned().collect());
    }
    // A rehearsal alone touches no device of the target: nothing to cover.
    let rehearsal_only = waves.iter().all(|w| *w == WaveSize::Rehearsal);
    if taken.len() < target && !rehearsal_only {
        return Err(PlanError::Uncovered {
            covered: taken.len(),
            target,
        });
    }
    Ok(planned)
}

/// How many devices of a `target`-device target a count or percentage reaches in total.
fn reach(size: &WaveSize, target: usize) -> usize {
    match *size {
        WaveSize::Count(n) => n as usize,
        WaveSize::Percent(p) => (target * usize::from(p)).div_ceil(100),
        WaveSize::Selector(_) | WaveSize::Rest | WaveSize::Rehearsal => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmbed_schemas::rollout::parse_waves;

    fn fleet(n: usize) -> Vec<DeviceId> {
        (0..n)
            .filter_map(|i| DeviceId::new(format!("dev-{i:03}")).ok())
            .collect()
    }

    fn sizes(plan: &[Vec<DeviceId>]) -> Vec<usize> {
        plan.iter().map(Vec::len).collect()
    }

    fn waves(text: &str) -> Vec<WaveSize> {
        parse_waves(text).unwrap_or_default()
    }

    #[test]
    fn the_order_is_deterministic_per_rollout_and_differs_between_rollouts() {
        let target = fleet(50);
        let mut reversed = target.clone();
        reversed.reverse();
        assert_eq!(order("r1", &target), order("r1", &reversed));
        assert_ne!(order("r1", &target), order("r2", &target));
        let mut sorted = order("r1", &target);
        sorted.sort();
        assert_eq!(sorted, target, "every device once");
    }

    #[test]
    fn counts_and_percentages_are_cumulative() {
        let none = BTreeMap::new();
        type Case = (usize, &'static str, Result<Vec<usize>, PlanError>);
        let cases: [Case; 9] = [
            (50, "1,10%,50%,100%", Ok(vec![1, 4, 20, 25])),
            (50, "10%,rest", Ok(vec![5, 45])),
            (3, "1,100%", Ok(vec![1, 2])),
            (1, "100%", Ok(vec![1])),
            (7, "50%,100%", Ok(vec![4, 3])),
            (
                50,
                "1,10%,50%",
                Err(PlanError::Uncovered {
                    covered: 25,
                    target: 50,
                }),
            ),
            (
                5,
                "10,100%",
                Err(PlanError::TooMany {
                    wave: 1,
                    size: "10".into(),
                    target: 5,
                }),
            ),
            (
                50,
                "10%,5,100%",
                Err(PlanError::Empty {
                    wave: 2,
                    size: "5".into(),
                }),
            ),
            (0, "100%", Err(PlanError::EmptyTarget)),
        ];
        for (n, text, expected) in cases {
            let ordered = order("r", &fleet(n));
            let planned = plan(&ordered, &none, &waves(text));
            assert_eq!(planned.map(|p| sizes(&p)), expected, "{n} devices, {text}");
        }
        assert_eq!(plan(&fleet(3), &none, &[]), Err(PlanError::NoWaves));
    }

    #[test]
    fn waves_follow_the_order_and_never_repeat_a_device() {
        let ordered = order("r", &fleet(50));
        let planned =
            plan(&ordered, &BTreeMap::new(), &waves("1,10%,50%,100%")).unwrap_or_default();
        let flat: Vec<DeviceId> = planned.concat();
        assert_eq!(flat, ordered);
    }

    #[test]
    fn selectors_take_the_labelled_devices_then_the_rest() {
        let target = fleet(10);
        let labels: BTreeMap<DeviceId, BTreeMap<String, String>> = target
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let ring = if i < 3 { "canary" } else { "main" };
                (
                    d.clone(),
                    BTreeMap::from([("ring".to_owned(), ring.to_owned())]),
                )
            })
            .collect();
        let ordered = order("r", &target);
        let planned = plan(&ordered, &labels, &waves("ring=canary,rest")).unwrap_or_default();
        assert_eq!(sizes(&planned), [3, 7]);
        let mut canaries = planned[0].clone();
        canaries.sort();
        assert_eq!(canaries, target[..3]);
        assert_eq!(
            plan(&ordered, &labels, &waves("ring=none,rest")),
            Err(PlanError::Empty {
                wave: 1,
                size: "ring=none".into()
            })
        );
        assert_eq!(
            plan(&ordered, &labels, &waves("ring=canary")),
            Err(PlanError::Uncovered {
                covered: 3,
                target: 10
            })
        );
    }

    #[test]
    fn a_rehearsal_takes_no_device_of_the_target_and_only_comes_first() {
        let target = fleet(10);
        let ordered = order("r", &target);
        let none = BTreeMap::new();
        let planned = plan(&ordered, &none, &waves("rehearsal,50%,rest")).unwrap_or_default();
        assert_eq!(sizes(&planned), [0, 5, 5]);
        assert_eq!(
            plan(&ordered, &none, &waves("50%,rehearsal,rest")),
            Err(PlanError::RehearsalNotFirst { wave: 2 })
        );
        // Alone, it covers nothing and need not: the rehearsal is all it is.
        assert_eq!(
            plan(&ordered, &none, &waves("rehearsal")).map(|p| sizes(&p)),
            Ok(vec![0])
        );
        assert_eq!(
            plan(&ordered, &none, &waves("rehearsal,50%")),
            Err(PlanError::Uncovered {
                covered: 5,
                target: 10
            })
        );
    }
}
