//! The fold, event by event: sessions, decommissioning, deletion, deployments, and which
//! deployment phases a reader may call current.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;

use wasmbed_eventlog::StoredEvent;
use wasmbed_fleet::{Fleet, Touched};
use wasmbed_schemas::bytes::{Blob, PublicKey, Sha256};
use wasmbed_schemas::event::{
    ApplicationCreated, ApplicationDeleted, ApplicationDeployRequested, DeploymentRunning,
    DeviceBackOnline, DeviceConnected, DeviceDecommissioned, DeviceDisconnected, DeviceRegistered,
    DeviceWentOffline, Event, EventEnvelope, ModuleUploaded, Target,
};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::rest::{DeploymentPhase, DesiredState, DeviceState};
use wasmbed_schemas::{AppId, DeviceId, GatewayId};

/// Feeds events in order, numbering them from 1.
struct Log {
    fleet: Fleet,
    sequence: u64,
}

impl Log {
    fn new() -> Self {
        Self {
            fleet: Fleet::default(),
            sequence: 0,
        }
    }

    fn stored(&mut self, event: impl Into<Event>) -> StoredEvent {
        self.sequence += 1;
        StoredEvent {
            sequence: self.sequence,
            envelope: EventEnvelope::new(event.into()),
            trace: None,
        }
    }

    fn apply(&mut self, event: impl Into<Event>) -> Touched {
        let stored = self.stored(event);
        self.fleet.apply(&stored)
    }
}

fn dev(id: &str) -> DeviceId {
    DeviceId::new(id).unwrap()
}

fn app(id: &str) -> AppId {
    AppId::new(id).unwrap()
}

fn gw(id: &str) -> GatewayId {
    GatewayId::new(id).unwrap()
}

fn registered(id: &str) -> DeviceRegistered {
    DeviceRegistered {
        device_id: dev(id),
        public_key: PublicKey([7; 32]),
        mcu: None,
        labels: BTreeMap::new(),
    }
}

fn connected(id: &str, gateway: &str, session: &str) -> DeviceConnected {
    DeviceConnected {
        device_id: dev(id),
        gateway_id: gw(gateway),
        remote_addr: "127.0.0.1:1".into(),
        session_id: Some(session.into()),
    }
}

fn disconnected(id: &str, gateway: &str, session: &str) -> DeviceDisconnected {
    DeviceDisconnected {
        device_id: dev(id),
        gateway_id: gw(gateway),
        reason: "closed".into(),
        session_id: Some(session.into()),
    }
}

/// An application targeting every device, deployed at version 1, running on `device`.
fn running_app(log: &mut Log, name: &str, device: &str) {
    log.apply(ApplicationCreated {
        app_id: app(name),
        name: name.into(),
        target: Target::All,
        config: Blob(Vec::new()),
        limits: Limits {
            fuel_per_invocation: 1000,
            max_memory_pages: 1,
            tick_interval_ms: 100,
        },
    });
    log.apply(ModuleUploaded {
        app_id: app(name),
        version: 1,
        sha256: Sha256([1; 32]),
        size_bytes: 10,
        limits: None,
        config: None,
        release: None,
    });
    log.apply(ApplicationDeployRequested {
        app_id: app(name),
        version: 1,
    });
    log.apply(DeploymentRunning {
        app_id: app(name),
        device_id: dev(device),
        version: 1,
    });
}

/// (gateway, session, connected or disconnected)
type Step = (&'static str, &'static str, bool);

#[test]
fn a_late_disconnect_of_a_replaced_session_leaves_the_device_online() {
    // (events after registration, expected state, expected session)
    let cases: &[(&[Step], DeviceState, Option<&str>)] = &[
        (&[("g1", "s1", true)], DeviceState::Online, Some("s1")),
        (
            &[("g1", "s1", true), ("g1", "s1", false)],
            DeviceState::Disconnected,
            None,
        ),
        // Replaced on the same gateway, then the old session's end arrives.
        (
            &[("g1", "s1", true), ("g1", "s2", true), ("g1", "s1", false)],
            DeviceState::Online,
            Some("s2"),
        ),
        // Replaced on another gateway.
        (
            &[("g1", "s1", true), ("g2", "s2", true), ("g1", "s1", false)],
            DeviceState::Online,
            Some("s2"),
        ),
        (
            &[
                ("g1", "s1", true),
                ("g2", "s2", true),
                ("g1", "s1", false),
                ("g2", "s2", false),
            ],
            DeviceState::Disconnected,
            None,
        ),
    ];
    for (steps, state, session) in cases {
        let mut log = Log::new();
        log.apply(registered("d"));
        for (gateway, id, up) in *steps {
            if *up {
                log.apply(connected("d", gateway, id));
            } else {
                log.apply(disconnected("d", gateway, id));
            }
        }
        let d = &log.fleet.devices[&dev("d")];
        assert_eq!(
            (d.state, d.session.as_deref()),
            (*state, *session),
            "{steps:?}"
        );
        assert_eq!(d.connected(), session.is_some(), "{steps:?}");
    }
}

#[test]
fn an_ignored_disconnect_touches_nothing_and_a_real_one_voids_the_session() {
    let mut log = Log::new();
    log.apply(registered("d"));
    log.apply(connected("d", "g1", "s1"));
    log.apply(connected("d", "g1", "s2"));
    assert_eq!(log.apply(disconnected("d", "g1", "s1")), Touched::Nothing);
    assert_eq!(
        log.apply(disconnected("d", "g1", "s2")),
        Touched::Device {
            device: dev("d"),
            session: true
        }
    );
}

#[test]
fn an_event_folded_twice_or_out_of_order_changes_nothing() {
    let mut log = Log::new();
    let first = log.stored(registered("d"));
    let second = log.stored(connected("d", "g1", "s1"));
    assert_ne!(log.fleet.apply(&first), Touched::Nothing);
    assert_ne!(log.fleet.apply(&second), Touched::Nothing);
    let revision = log.fleet.revision;
    assert_eq!(log.fleet.apply(&second), Touched::Nothing);
    assert_eq!(log.fleet.apply(&first), Touched::Nothing);
    assert_eq!(log.fleet.revision, revision);
    assert_eq!(log.fleet.devices[&dev("d")].state, DeviceState::Online);
}

#[test]
fn a_deployment_is_current_only_while_its_device_is_online() {
    // (what happens to the device after its app runs, current, counted as running)
    let cases: &[(&str, bool)] = &[
        ("nothing", true),
        ("disconnects", false),
        ("misses heartbeats", false),
        ("comes back", true),
        ("is decommissioned", false),
    ];
    for (what, current) in cases {
        let mut log = Log::new();
        log.apply(registered("d"));
        log.apply(connected("d", "g1", "s1"));
        running_app(&mut log, "a", "d");
        match *what {
            "disconnects" => {
                log.apply(disconnected("d", "g1", "s1"));
            }
            "misses heartbeats" => {
                log.apply(DeviceWentOffline {
                    device_id: dev("d"),
                    last_seen: chrono::Utc::now(),
                });
            }
            "comes back" => {
                log.apply(DeviceWentOffline {
                    device_id: dev("d"),
                    last_seen: chrono::Utc::now(),
                });
                log.apply(DeviceBackOnline {
                    device_id: dev("d"),
                });
            }
            "is decommissioned" => {
                log.apply(DeviceDecommissioned {
                    device_id: dev("d"),
                    reason: "gone".into(),
                });
            }
            _ => {}
        }
        let device = log.fleet.device_view(&dev("d")).unwrap();
        let shown = &device.apps[&app("a")];
        assert_eq!(shown.phase, DeploymentPhase::Running, "{what}");
        assert_eq!(shown.current, *current, "{what}");
        let by_app = log.fleet.app_view(&app("a")).unwrap();
        assert_eq!(by_app.devices[&dev("d")].current, *current, "{what}");
        assert_eq!(log.fleet.running(), usize::from(*current), "{what}");
    }
}

#[test]
fn a_deleted_application_is_kept_for_the_deployer_but_not_shown() {
    let mut log = Log::new();
    log.apply(registered("d"));
    log.apply(connected("d", "g1", "s1"));
    running_app(&mut log, "a", "d");
    running_app(&mut log, "b", "d");
    log.apply(ApplicationDeleted { app_id: app("a") });

    let a = &log.fleet.apps[&app("a")];
    assert!(a.deleted());
    assert_eq!(a.desired, DesiredState::Deleted);
    assert!(!a.targets(&dev("d"), &log.fleet.devices[&dev("d")]));
    assert!(log.fleet.deployment(&(app("a"), dev("d"))).is_some());

    assert!(log.fleet.app_view(&app("a")).is_none());
    let shown: Vec<AppId> = log.fleet.app_views().map(|a| a.app_id).collect();
    assert_eq!(shown, vec![app("b")]);
    let device = log.fleet.device_view(&dev("d")).unwrap();
    assert_eq!(
        device.apps.keys().cloned().collect::<Vec<_>>(),
        vec![app("b")]
    );
    assert_eq!(log.fleet.running(), 1);
}

#[test]
fn gateways_list_the_devices_they_hold_now() {
    let mut log = Log::new();
    for d in ["d1", "d2", "d3"] {
        log.apply(registered(d));
    }
    log.apply(connected("d1", "g1", "s1"));
    log.apply(connected("d2", "g1", "s2"));
    log.apply(connected("d3", "g2", "s3"));
    log.apply(connected("d2", "g2", "s4"));
    log.apply(disconnected("d2", "g1", "s2"));
    log.apply(wasmbed_schemas::event::GatewayStarted {
        gateway_id: gw("g1"),
        endpoint: "127.0.0.1:1".into(),
        certificate_sha256: Sha256([2; 32]),
    });
    log.apply(wasmbed_schemas::event::GatewayStarted {
        gateway_id: gw("g2"),
        endpoint: "127.0.0.1:2".into(),
        certificate_sha256: Sha256([3; 32]),
    });
    let held: Vec<(GatewayId, Vec<DeviceId>)> = log
        .fleet
        .gateway_views()
        .into_iter()
        .map(|g| (g.gateway_id, g.devices))
        .collect();
    assert_eq!(
        held,
        vec![
            (gw("g1"), vec![dev("d1")]),
            (gw("g2"), vec![dev("d2"), dev("d3")]),
        ]
    );
}

/// A deployment remembers when its version was asked for, through every later phase of that
/// version; a new request (a new version, or the same again) starts the clock again.
#[test]
fn a_deployment_keeps_when_its_version_was_requested() {
    use wasmbed_schemas::event::{DeploymentRequested, DeploymentTransferStarted};
    let mut log = Log::new();
    running_app(&mut log, "sensor", "d1");
    let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let requested = |version| DeploymentRequested {
        app_id: app("sensor"),
        device_id: dev("d1"),
        version,
    };
    let transfer = |version| DeploymentTransferStarted {
        app_id: app("sensor"),
        device_id: dev("d1"),
        version,
    };
    let running = |version| DeploymentRunning {
        app_id: app("sensor"),
        device_id: dev("d1"),
        version,
    };
    let steps: Vec<(Event, i64, i64)> = vec![
        // (event, at, requested afterwards)
        (requested(2).into(), 10, 10),
        (transfer(2).into(), 11, 10),
        (running(2).into(), 15, 10),
        (requested(3).into(), 20, 20),
        (transfer(3).into(), 21, 20),
        (requested(3).into(), 30, 30),
    ];
    for (event, at, want) in steps {
        let name = event.type_name();
        let mut stored = log.stored(event);
        stored.envelope.time = t(at);
        log.fleet.apply(&stored);
        let dep = log.fleet.deployment(&(app("sensor"), dev("d1"))).unwrap();
        assert_eq!(dep.requested, t(want), "after {name} at {at}");
        assert_eq!(dep.since, t(at), "after {name} at {at}");
    }
}
