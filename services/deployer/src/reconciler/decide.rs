//! The decision for one (application, device) pair, as a pure function of what should run,
//! what the log says the device has, and whether a step may be sent now; and how the
//! reconciler carries a decision out.

use tokio::time::Instant;
use wasmbed_fleet::{Fleet, Pair};
use wasmbed_schemas::event::{
    DeploymentRefused, DeploymentRequested, DeploymentStopRequested, DeploymentTransferStarted,
};
use wasmbed_schemas::frame::{Deploy, Frame, ModuleBegin, Stop};
use wasmbed_schemas::host_api;
use wasmbed_schemas::rest::DeploymentPhase as Phase;

use super::{Effects, Reconciler, Step, deployment};

/// What should run on the device, when something should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The version.
    pub(crate) version: u32,
    /// Memory it may use on the device.
    pub(crate) needs_bytes: u64,
    /// Memory the device has for apps.
    pub(crate) budget_bytes: u64,
    /// The module of this version is known (its upload event was folded).
    pub(crate) module_known: bool,
    /// The host API version its granted imports need (0 when unsigned: the device judges).
    pub(crate) needs_api: u16,
    /// The host API version the device offers, once it described itself.
    pub(crate) device_api: Option<u16>,
}

/// Why a version does not fit a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// Not enough memory for apps.
    Memory {
        /// Memory it may use.
        needs_bytes: u64,
        /// Memory the device has.
        budget_bytes: u64,
    },
    /// The device's runtime does not offer the host functions its release grants.
    HostApi {
        /// The version needed.
        needs: u16,
        /// The version offered.
        offers: u16,
    },
}

/// What the log says the device has of the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    /// The version concerned.
    pub(crate) version: u32,
    /// Where it is.
    pub(crate) phase: Phase,
}

/// Whether a frame may go to the device now: it has a session, and no step is in flight for
/// the pair (or the retry of one is due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sendable(pub(crate) bool);

/// What to do for the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing now.
    Nothing,
    /// Record `DeploymentRequested` for this version.
    Request(u32),
    /// Record `DeploymentRefused`: the version does not fit the device.
    Refuse {
        /// The version.
        version: u32,
        /// Why.
        misfit: Misfit,
    },
    /// Send `ModuleBegin` (first recording `DeploymentTransferStarted` when `first`).
    Transfer {
        /// The version.
        version: u32,
        /// No transfer was recorded yet.
        first: bool,
    },
    /// Send `Deploy`: the device holds the module.
    Deploy(u32),
    /// Record `DeploymentStopRequested`: it should no longer run here.
    RequestStop,
    /// Send `Stop`.
    Stop,
}

/// The decision for one pair.
pub(crate) fn decide(want: Option<Wanted>, current: Option<Current>, send: Sendable) -> Decision {
    let Some(want) = want else {
        let Some(current) = current else {
            return Decision::Nothing;
        };
        return match current.phase {
            Phase::Stopped | Phase::Refused => Decision::Nothing,
            Phase::Stopping if send.0 => Decision::Stop,
            Phase::Stopping => Decision::Nothing,
            Phase::Requested
            | Phase::Transferring
            | Phase::Delivered
            | Phase::Running
            | Phase::Failed => Decision::RequestStop,
        };
    };
    let same_version = current.filter(|c| c.version == want.version);
    let Some(current) = same_version else {
        return request(want);
    };
    match current.phase {
        // Stopped (or stopping) and wanted again: a new request.
        Phase::Stopped | Phase::Stopping => request(want),
        // Settled for this version; a new version or a stop changes that.
        Phase::Refused | Phase::Failed => Decision::Nothing,
        _ if !send.0 || !want.module_known => Decision::Nothing,
        Phase::Requested => Decision::Transfer {
            version: want.version,
            first: true,
        },
        Phase::Transferring => Decision::Transfer {
            version: want.version,
            first: false,
        },
        Phase::Delivered | Phase::Running => Decision::Deploy(want.version),
    }
}

fn request(want: Wanted) -> Decision {
    let misfit = if want.needs_bytes > want.budget_bytes {
        Some(Misfit::Memory {
            needs_bytes: want.needs_bytes,
            budget_bytes: want.budget_bytes,
        })
    } else {
        want.device_api
            .filter(|offers| *offers < want.needs_api)
            .map(|offers| Misfit::HostApi {
                needs: want.needs_api,
                offers,
            })
    };
    match misfit {
        Some(misfit) => Decision::Refuse {
            version: want.version,
            misfit,
        },
        None => Decision::Request(want.version),
    }
}

impl Reconciler {
    /// Decides for `pair` from the fleet and carries the decision out into `fx`.
    pub(super) fn decide(&mut self, fleet: &Fleet, pair: &Pair, now: Instant, fx: &mut Effects) {
        let (app_id, device_id) = pair;
        let Some(device) = fleet.devices.get(device_id) else {
            return;
        };
        let app = fleet.apps.get(app_id);
        let want = app
            .filter(|a| a.targets(device_id, device) || fleet.rehearses(app_id, device_id))
            .and_then(|a| Some((a, fleet.wanted_version(app_id, device_id)?)))
            .map(|(a, version)| Wanted {
                version,
                needs_bytes: u64::from(a.limits_of(version).max_memory_pages) * 64 * 1024,
                budget_bytes: u64::from(
                    device
                        .app_ram_bytes
                        .unwrap_or(self.state.config.default_app_ram_bytes),
                ),
                module_known: a.modules.contains_key(&version),
                needs_api: a
                    .modules
                    .get(&version)
                    .and_then(|m| m.release.as_ref())
                    .map_or(0, |r| {
                        host_api::version_needed(&r.manifest.capabilities.imports)
                    }),
                device_api: device.host_api_version,
            });
        let current = fleet.deployment(pair).map(|d| Current {
            version: d.version,
            phase: d.phase,
        });
        let send = Sendable(device.connected() && self.may_start(pair, now));
        let version = fleet.version(&deployment(pair));
        let (app_id, device_id) = (app_id.clone(), device_id.clone());

        match decide(want, current, send) {
            Decision::Nothing => {}
            Decision::Request(version_wanted) => {
                self.links.remove(pair);
                let event = DeploymentRequested {
                    app_id,
                    device_id,
                    version: version_wanted,
                };
                fx.record(version, pair, event.into());
            }
            Decision::Refuse {
                version: refused,
                misfit,
            } => {
                self.links.remove(pair);
                let pages = app.map_or(0, |a| a.limits_of(refused).max_memory_pages);
                let reason = match misfit {
                    Misfit::Memory {
                        needs_bytes,
                        budget_bytes,
                    } => format!(
                        "needs up to {} KiB of memory (limits.max_memory_pages = {pages}), \
                         the device has {} KiB for apps",
                        needs_bytes / 1024,
                        budget_bytes / 1024
                    ),
                    Misfit::HostApi { needs, offers } => format!(
                        "its release grants host functions of host API version {needs}; the \
                         device offers version {offers}"
                    ),
                };
                let event = DeploymentRefused {
                    app_id,
                    device_id,
                    version: refused,
                    reason,
                };
                fx.record(version, pair, event.into());
            }
            Decision::Transfer {
                version: sending,
                first,
            } => {
                let Some(module) = app.and_then(|a| a.modules.get(&sending)) else {
                    return;
                };
                if first {
                    let started = DeploymentTransferStarted {
                        app_id: app_id.clone(),
                        device_id: device_id.clone(),
                        version: sending,
                    };
                    fx.record(version, pair, started.into());
                }
                self.start(pair, Step::Begin, now);
                let begin = ModuleBegin {
                    app_id,
                    version: sending,
                    sha256: module.sha256,
                    total_len: u32::try_from(module.size_bytes).unwrap_or(u32::MAX),
                    offset: 0,
                };
                fx.sends.push((device_id, Frame::ModuleBegin(begin)));
            }
            Decision::Deploy(running) => {
                let (Some(app), Some(module)) = (app, app.and_then(|a| a.modules.get(&running)))
                else {
                    return;
                };
                self.start(pair, Step::Deploy, now);
                let deploy = Deploy {
                    app_id,
                    version: running,
                    sha256: module.sha256,
                    limits: app.limits_of(running),
                    config: app.config_of(running).clone(),
                    release: module.release.clone(),
                };
                fx.sends.push((device_id, Frame::Deploy(deploy)));
            }
            Decision::RequestStop => {
                self.links.remove(pair);
                let stop = DeploymentStopRequested { app_id, device_id };
                fx.record(version, pair, stop.into());
            }
            Decision::Stop => {
                self.start(pair, Step::Stop, now);
                fx.sends.push((device_id, Frame::Stop(Stop { app_id })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PHASES: [Phase; 8] = [
        Phase::Requested,
        Phase::Refused,
        Phase::Transferring,
        Phase::Delivered,
        Phase::Running,
        Phase::Failed,
        Phase::Stopping,
        Phase::Stopped,
    ];

    fn wanted(version: u32) -> Wanted {
        Wanted {
            version,
            needs_bytes: 64 * 1024,
            budget_bytes: 256 * 1024,
            module_known: true,
            needs_api: 1,
            device_api: Some(1),
        }
    }

    fn at(version: u32, phase: Phase) -> Option<Current> {
        Some(Current { version, phase })
    }

    /// Every (desired, current phase) pair, with a frame allowed to go and without.
    #[test]
    fn every_desired_state_against_every_phase() {
        use Decision::*;
        // (current phase; decision when v2 is wanted, the log has v2; when v2 is wanted, the
        // log has v1; when nothing should run here) — frames allowed.
        let table: [(Phase, Decision, Decision, Decision); 8] = [
            (
                Phase::Requested,
                Transfer {
                    version: 2,
                    first: true,
                },
                Request(2),
                RequestStop,
            ),
            (Phase::Refused, Nothing, Request(2), Nothing),
            (
                Phase::Transferring,
                Transfer {
                    version: 2,
                    first: false,
                },
                Request(2),
                RequestStop,
            ),
            (Phase::Delivered, Deploy(2), Request(2), RequestStop),
            (Phase::Running, Deploy(2), Request(2), RequestStop),
            (Phase::Failed, Nothing, Request(2), RequestStop),
            (Phase::Stopping, Request(2), Request(2), Stop),
            (Phase::Stopped, Request(2), Request(2), Nothing),
        ];
        assert_eq!(
            table.each_ref().map(|row| row.0),
            ALL_PHASES,
            "every phase, once"
        );
        for (phase, same, older, unwanted) in table {
            let send = Sendable(true);
            assert_eq!(
                decide(Some(wanted(2)), at(2, phase), send),
                same,
                "v2 at v2 {phase:?}"
            );
            assert_eq!(
                decide(Some(wanted(2)), at(1, phase), send),
                older,
                "v2 at v1 {phase:?}"
            );
            assert_eq!(
                decide(None, at(2, phase), send),
                unwanted,
                "unwanted {phase:?}"
            );
        }
        assert_eq!(decide(Some(wanted(2)), None, Sendable(true)), Request(2));
        assert_eq!(decide(None, None, Sendable(true)), Nothing);
    }

    /// Recording never waits for the device; sending does.
    #[test]
    fn without_a_session_or_with_a_step_in_flight_only_records() {
        for phase in ALL_PHASES {
            for (want, current) in [
                (Some(wanted(2)), at(2, phase)),
                (Some(wanted(2)), at(1, phase)),
                (None, at(2, phase)),
            ] {
                let allowed = decide(want, current, Sendable(true));
                let held = decide(want, current, Sendable(false));
                let sends = matches!(
                    allowed,
                    Decision::Transfer { .. } | Decision::Deploy(_) | Decision::Stop
                );
                let expected = if sends { Decision::Nothing } else { allowed };
                assert_eq!(held, expected, "{want:?} {current:?}");
            }
        }
    }

    #[test]
    fn a_version_that_does_not_fit_is_refused_instead_of_requested() {
        let big = Wanted {
            needs_bytes: 512 * 1024,
            ..wanted(3)
        };
        let refused = Decision::Refuse {
            version: 3,
            misfit: Misfit::Memory {
                needs_bytes: 512 * 1024,
                budget_bytes: 256 * 1024,
            },
        };
        for current in [None, at(2, Phase::Running), at(3, Phase::Stopped)] {
            assert_eq!(
                decide(Some(big), current, Sendable(true)),
                refused,
                "{current:?}"
            );
        }
        let exact = Wanted {
            needs_bytes: 256 * 1024,
            ..wanted(3)
        };
        assert_eq!(
            decide(Some(exact), None, Sendable(true)),
            Decision::Request(3)
        );
    }

    #[test]
    fn a_release_granting_more_host_api_than_the_device_offers_is_refused() {
        let newer = Wanted {
            needs_api: 2,
            ..wanted(3)
        };
        assert_eq!(
            decide(Some(newer), None, Sendable(true)),
            Decision::Refuse {
                version: 3,
                misfit: Misfit::HostApi {
                    needs: 2,
                    offers: 1
                },
            }
        );
        // A device that has not described itself yet is not refused for it: it judges itself.
        let unknown = Wanted {
            device_api: None,
            ..newer
        };
        assert_eq!(
            decide(Some(unknown), None, Sendable(true)),
            Decision::Request(3)
        );
    }

    #[test]
    fn nothing_is_sent_for_a_module_not_yet_known() {
        let unknown = Wanted {
            module_known: false,
            ..wanted(2)
        };
        for phase in [
            Phase::Requested,
            Phase::Transferring,
            Phase::Delivered,
            Phase::Running,
        ] {
            assert_eq!(
                decide(Some(unknown), at(2, phase), Sendable(true)),
                Decision::Nothing,
                "{phase:?}"
            );
        }
        // Recording does not need the module.
        assert_eq!(
            decide(Some(unknown), None, Sendable(true)),
            Decision::Request(2)
        );
    }
}
