//! A log of a realistic age, generated: a fleet that registered, enrolled and connected, then
//! lived for a while — went offline and came back, reconnected through other gateways, and had
//! applications deployed, delivered and running. For measuring start-up against a long log.

use wasmbed_schemas::bytes::{Blob, PublicKey, Sha256};
use wasmbed_schemas::event::{
    ApplicationCreated, ApplicationDeployRequested, DeploymentDelivered, DeploymentRequested,
    DeploymentRunning, DeviceBackOnline, DeviceConnected, DeviceDisconnected, DeviceEnrolled,
    DeviceRegistered, DeviceWentOffline, EnrollmentPath, Event, EventEnvelope, GatewayStarted,
    ModuleUploaded, Target,
};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::{AppId, DeviceId, GatewayId};

/// Gateways of the generated fleet.
pub const GATEWAYS: usize = 5;
/// Applications of the generated fleet.
pub const APPS: usize = 3;
/// Events each device has in the log, on average, in [`history`].
pub const EVENTS_PER_DEVICE: usize = 10;

fn device(i: usize) -> DeviceId {
    DeviceId::new(format!("dev-{i:07}")).expect("valid id")
}

fn gateway(i: usize) -> GatewayId {
    GatewayId::new(format!("gw-{}", i % GATEWAYS)).expect("valid id")
}

fn app(i: usize) -> AppId {
    AppId::new(format!("app-{}", i % APPS)).expect("valid id")
}

fn session(device: usize, round: usize) -> Option<String> {
    Some(format!("s-{device}-{round}"))
}

/// The gateways and applications every device's events refer to.
fn setup() -> Vec<Event> {
    let mut events: Vec<Event> = (0..GATEWAYS)
        .map(|g| {
            GatewayStarted {
                gateway_id: gateway(g),
                endpoint: format!("10.0.0.{g}:4423"),
                certificate_sha256: Sha256([g as u8; 32]),
            }
            .into()
        })
        .collect();
    for a in 0..APPS {
        events.push(
            ApplicationCreated {
                app_id: app(a),
                name: format!("application {a}"),
                target: Target::All,
                config: Blob(vec![a as u8; 16]),
                limits: Limits {
                    fuel_per_invocation: 100_000,
                    max_memory_pages: 1,
                    tick_interval_ms: 1000,
                },
            }
            .into(),
        );
        events.push(
            ModuleUploaded {
                app_id: app(a),
                version: 1,
                sha256: Sha256([a as u8 + 1; 32]),
                size_bytes: 64 * 1024,
                limits: None,
                config: None,
                release: None,
            }
            .into(),
        );
        events.push(
            ApplicationDeployRequested {
                app_id: app(a),
                version: 1,
            }
            .into(),
        );
    }
    events
}

/// What device `d` does in round `round`: round 0 it arrives (registered, enrolled,
/// connected); every later round one thing of a device's life, in a cycle of ten.
fn step(d: usize, round: usize) -> Event {
    let a = app(d + round / 10);
    match round {
        0 => DeviceRegistered {
            device_id: device(d),
            public_key: PublicKey(key(d)),
            mcu: Some("Mps2An385".into()),
            labels: [("zone".to_owned(), format!("z{}", d % 7))].into(),
        }
        .into(),
        1 => DeviceEnrolled {
            device_id: device(d),
            public_key: PublicKey(key(d)),
            gateway_id: gateway(d),
            path: EnrollmentPath::Registered,
        }
        .into(),
        2 => DeviceConnected {
            device_id: device(d),
            gateway_id: gateway(d),
            remote_addr: "10.1.0.1:40000".into(),
            session_id: session(d, round),
        }
        .into(),
        _ => match round % 10 {
            0 | 3 => DeploymentRequested {
                app_id: a,
                device_id: device(d),
                version: 1,
            }
            .into(),
            4 => DeploymentDelivered {
                app_id: a,
                device_id: device(d),
                version: 1,
            }
            .into(),
            5 => DeploymentRunning {
                app_id: a,
                device_id: device(d),
                version: 1,
            }
            .into(),
            6 => DeviceWentOffline {
                device_id: device(d),
                last_seen: chrono::Utc::now(),
            }
            .into(),
            7 => DeviceBackOnline {
                device_id: device(d),
            }
            .into(),
            // The session of round 2, or of the last round ending in 9.
            8 => DeviceDisconnected {
                device_id: device(d),
                gateway_id: if round < 9 {
                    gateway(d)
                } else {
                    gateway(d + round - 8)
                },
                reason: "connection reset".into(),
                session_id: session(d, if round < 9 { 2 } else { round - 9 }),
            }
            .into(),
            _ => DeviceConnected {
                device_id: device(d),
                gateway_id: gateway(d + round + 1),
                remote_addr: "10.1.0.1:40000".into(),
                session_id: session(d, round),
            }
            .into(),
        },
    }
}

fn key(d: usize) -> [u8; 32] {
    let mut key = [0; 32];
    key[..8].copy_from_slice(&(d as u64).to_be_bytes());
    key
}

/// `events` events (at least the setup's) of a fleet of `events / EVENTS_PER_DEVICE` devices,
/// round after round across the fleet, in log order.
pub fn history(events: usize) -> impl Iterator<Item = EventEnvelope> {
    let devices = (events / EVENTS_PER_DEVICE).max(1);
    let setup = setup();
    let rest = events.saturating_sub(setup.len());
    setup
        .into_iter()
        .chain((0..rest).map(move |i| step(i % devices, i / devices)))
        .map(EventEnvelope::new)
}

/// How many devices [`history`] of `events` events has.
pub fn devices(events: usize) -> usize {
    (events / EVENTS_PER_DEVICE).max(1)
}
