//! A snapshot of the fleet at any point of any history, plus the events after it, folds to the
//! same fleet as the whole history (property test over generated histories).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use wasmbed_eventlog::StoredEvent;
use wasmbed_eventlog::snapshot::{Snapshotted, body, decode_body, decode_header, encode};
use wasmbed_fleet::Fleet;
use wasmbed_schemas::bytes::{Blob, PublicKey, Sha256};
use wasmbed_schemas::event::{
    ApplicationCreated, ApplicationDeleted, ApplicationDeployRequested, ApplicationStopRequested,
    DeploymentDelivered, DeploymentFailed, DeploymentRequested, DeploymentRunning,
    DeviceBackOnline, DeviceConnected, DeviceDecommissioned, DeviceDisconnected, DeviceRegistered,
    DeviceWentOffline, EmulatorStarted, Event, EventEnvelope, GatewayStarted, GatewayStopped,
    ModuleUploaded, Target,
};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::{AppId, DeviceId, GatewayId};

fn device(n: u8) -> DeviceId {
    DeviceId::new(format!("dev-{}", n % 5)).unwrap()
}

fn app(n: u8) -> AppId {
    AppId::new(format!("app-{}", n % 3)).unwrap()
}

fn gateway(n: u8) -> GatewayId {
    GatewayId::new(format!("gw-{}", n % 2)).unwrap()
}

/// One event of a small fleet: `kind` picks the event, the rest pick what it is about.
fn event(kind: u8, d: u8, a: u8, g: u8, v: u8) -> Event {
    let version = u32::from(v % 3) + 1;
    let session = Some(format!("s{}", v % 4));
    match kind % 19 {
        0 => DeviceRegistered {
            device_id: device(d),
            public_key: PublicKey([d; 32]),
            mcu: (v % 2 == 0).then(|| "Mps2An385".into()),
            labels: BTreeMap::from([("zone".into(), format!("z{}", v % 2))]),
        }
        .into(),
        1 | 2 => DeviceConnected {
            device_id: device(d),
            gateway_id: gateway(g),
            remote_addr: "127.0.0.1:1".into(),
            session_id: session,
        }
        .into(),
        3 => DeviceDisconnected {
            device_id: device(d),
            gateway_id: gateway(g),
            reason: "closed".into(),
            session_id: session,
        }
        .into(),
        4 => DeviceWentOffline {
            device_id: device(d),
            last_seen: Utc.timestamp_opt(1_700_000_000 + i64::from(v), 0).unwrap(),
        }
        .into(),
        5 => DeviceBackOnline {
            device_id: device(d),
        }
        .into(),
        6 => DeviceDecommissioned {
            device_id: device(d),
            reason: "retired".into(),
        }
        .into(),
        7 => ApplicationCreated {
            app_id: app(a),
            name: format!("app {a}"),
            target: match v % 3 {
                0 => Target::All,
                1 => Target::Devices(vec![device(d)]),
                _ => Target::Labels(BTreeMap::from([("zone".into(), "z0".into())])),
            },
            config: Blob(vec![v]),
            limits: Limits {
                fuel_per_invocation: 1000,
                max_memory_pages: 1,
                tick_interval_ms: 100,
            },
        }
        .into(),
        8 => ModuleUploaded {
            app_id: app(a),
            version,
            sha256: Sha256([v; 32]),
            size_bytes: 100,
            limits: None,
            config: (v % 2 == 0).then(|| Blob(vec![1, 2])),
            release: None,
        }
        .into(),
        9 | 10 => ApplicationDeployRequested {
            app_id: app(a),
            version,
        }
        .into(),
        11 => ApplicationStopRequested { app_id: app(a) }.into(),
        12 => ApplicationDeleted { app_id: app(a) }.into(),
        13 => DeploymentRequested {
            app_id: app(a),
            device_id: device(d),
            version,
        }
        .into(),
        14 => DeploymentDelivered {
            app_id: app(a),
            device_id: device(d),
            version,
        }
        .into(),
        15 => DeploymentRunning {
            app_id: app(a),
            device_id: device(d),
            version,
        }
        .into(),
        16 => DeploymentFailed {
            app_id: app(a),
            device_id: device(d),
            version,
            reason: "trap".into(),
            refusal: None,
        }
        .into(),
        17 => {
            if v % 2 == 0 {
                GatewayStarted {
                    gateway_id: gateway(g),
                    endpoint: "127.0.0.1:4423".into(),
                    certificate_sha256: Sha256([g; 32]),
                }
                .into()
            } else {
                GatewayStopped {
                    gateway_id: gateway(g),
                }
                .into()
            }
        }
        _ => EmulatorStarted {
            device_id: device(d),
            backend: "qemu".into(),
            mcu: "Mps2An385".into(),
            instance: format!("i{v}"),
            attempt: u32::from(v),
        }
        .into(),
    }
}

/// A history as the log would hold it: sequences from 1.
fn history(steps: &[(u8, u8, u8, u8, u8)]) -> Vec<StoredEvent> {
    steps
        .iter()
        .enumerate()
        .map(|(i, &(kind, d, a, g, v))| StoredEvent {
            sequence: i as u64 + 1,
            envelope: EventEnvelope::new(event(kind, d, a, g, v)),
            trace: (v % 5 == 0).then(|| format!("00-{:032x}-{:016x}-01", i + 1, i + 1)),
        })
        .collect()
}

fn fold(events: &[StoredEvent]) -> Fleet {
    let mut fleet = Fleet::default();
    for event in events {
        fleet.apply_followed(event);
    }
    fleet
}

/// The fleet through a snapshot: encoded, checked and decoded as a service restores it.
fn through_snapshot(fleet: &Fleet) -> Fleet {
    let bytes = encode(
        "api",
        Fleet::FORMAT,
        fleet.followed,
        "ev",
        &body(fleet).unwrap(),
    );
    let (head, body) = decode_header(&bytes, "api", Fleet::FORMAT).unwrap();
    assert_eq!(head.sequence, fleet.followed);
    decode_body(body).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_snapshot_plus_the_events_after_it_folds_to_the_whole_history(
        steps in proptest::collection::vec(any::<(u8, u8, u8, u8, u8)>(), 0..80),
        cut in any::<proptest::sample::Index>(),
    ) {
        let events = history(&steps);
        let whole = fold(&events);
        let at = cut.index(events.len() + 1);
        let mut restored = through_snapshot(&fold(&events[..at]));
        prop_assert_eq!(restored.followed, at as u64);
        for event in &events[at..] {
            restored.apply_followed(event);
        }
        prop_assert_eq!(&restored, &whole);
    }
}

#[test]
fn the_snapshot_of_a_busy_fleet_is_the_same_fleet() {
    // Every kind of event, several times: nothing the fold keeps is lost on the way.
    let steps: Vec<_> = (0..400u16)
        .map(|i| {
            let i = i as u8;
            (i, i / 3, i / 7, i / 11, i / 13)
        })
        .collect();
    let whole = fold(&history(&steps));
    assert!(!whole.devices.is_empty() && !whole.apps.is_empty());
    assert!(whole.deployment_count() > 0 && !whole.gateways.is_empty());
    assert!(!whole.emulators.is_empty());
    assert_eq!(through_snapshot(&whole), whole);
}
