//! Event envelopes and commands: JSON round trips; JSON Schemas match the checked-in files.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;

use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::*;
use wasmbed_schemas::event::*;
use wasmbed_schemas::frame::{Limits, RejectReason};
use wasmbed_schemas::release::rotation::{SignedRotation, TrustChange, TrustRotation};
use wasmbed_schemas::release::{Capabilities, Refusal, ReleaseManifest, SignedRelease};
use wasmbed_schemas::{
    AggregateId, AppId, DeviceId, GatewayId, PublicKey, Sha256, Signature, subject,
};

fn dev() -> DeviceId {
    DeviceId::new("dev-1").unwrap()
}
fn app() -> AppId {
    AppId::new("blink").unwrap()
}
fn gw() -> GatewayId {
    GatewayId::new("gw-1").unwrap()
}
fn limits() -> Limits {
    Limits {
        fuel_per_invocation: 10_000,
        max_memory_pages: 1,
        tick_interval_ms: 100,
    }
}

fn release() -> SignedRelease {
    SignedRelease {
        manifest: ReleaseManifest {
            app_id: app(),
            version: 1,
            module_sha256: Sha256([3; 32]),
            module_len: 65536,
            issued_at: 1_800_000_000,
            capabilities: Capabilities {
                imports: ["publish".to_owned()].into(),
                topics: ["temp".to_owned()].into(),
                max_memory_pages: 1,
                max_fuel_per_tick: 10_000,
            },
        },
        publisher: PublicKey([4; 32]),
        signature: Signature([5; 64]),
    }
}

fn rotation(change: TrustChange) -> SignedRotation {
    SignedRotation {
        rotation: TrustRotation {
            serial: 2,
            change,
            key: PublicKey([6; 32]),
            issued_at: 1_800_000_000,
        },
        signer: PublicKey([4; 32]),
        signature: Signature([7; 64]),
    }
}

fn every_event() -> Vec<Event> {
    let labels = BTreeMap::from([("room".to_owned(), "lab".to_owned())]);
    vec![
        DeviceRegistered {
            device_id: dev(),
            public_key: PublicKey([1; 32]),
            mcu: Some("Mps2An385".into()),
            labels: labels.clone(),
        }
        .into(),
        DeviceEnrolled {
            device_id: dev(),
            public_key: PublicKey([1; 32]),
            gateway_id: gw(),
            path: EnrollmentPath::Pairing,
        }
        .into(),
        EnrollmentRefused {
            gateway_id: gw(),
            public_key: Some(PublicKey([9; 32])),
            reason: RejectReason::UnknownDevice,
            message: "unknown key".into(),
            remote_addr: "127.0.0.1:50000".into(),
        }
        .into(),
        DeviceConnected {
            device_id: dev(),
            gateway_id: gw(),
            remote_addr: "127.0.0.1:50000".into(),
            session_id: Some("9f86d081884c7d65".into()),
        }
        .into(),
        DeviceDisconnected {
            device_id: dev(),
            gateway_id: gw(),
            reason: "heartbeat timeout".into(),
            session_id: Some("9f86d081884c7d65".into()),
        }
        .into(),
        DeviceWentOffline {
            device_id: dev(),
            last_seen: chrono::Utc::now(),
        }
        .into(),
        DeviceBackOnline { device_id: dev() }.into(),
        DeviceDecommissioned {
            device_id: dev(),
            reason: "retired".into(),
        }
        .into(),
        ApplicationCreated {
            app_id: app(),
            name: "Blink".into(),
            target: Target::Labels(labels),
            config: Blob(vec![1, 2]),
            limits: limits(),
        }
        .into(),
        ModuleUploaded {
            app_id: app(),
            version: 1,
            sha256: Sha256([3; 32]),
            size_bytes: 65536,
            limits: None,
            config: None,
            release: Some(Box::new(release())),
        }
        .into(),
        DeploymentRequested {
            app_id: app(),
            device_id: dev(),
            version: 1,
        }
        .into(),
        DeploymentDelivered {
            app_id: app(),
            device_id: dev(),
            version: 1,
        }
        .into(),
        DeploymentRunning {
            app_id: app(),
            device_id: dev(),
            version: 1,
        }
        .into(),
        DeploymentFailed {
            app_id: app(),
            device_id: dev(),
            version: 1,
            reason: "signed by a key this device does not trust".into(),
            refusal: Some(Refusal::UntrustedKey),
        }
        .into(),
        PublisherTrusted {
            public_key: PublicKey([6; 32]),
            name: "second".into(),
            serial: 2,
            rotation: Some(Box::new(rotation(TrustChange::Trust))),
        }
        .into(),
        DeviceKeyClaimed {
            public_key: PublicKey([1; 32]),
            device_id: dev(),
        }
        .into(),
        PairingWindowOpened {
            token_sha256: Sha256([9; 32]),
            expires_at: chrono::Utc::now(),
        }
        .into(),
        PublisherRevoked {
            public_key: PublicKey([6; 32]),
            reason: "leaked".into(),
            serial: 3,
            rotation: Box::new(rotation(TrustChange::Revoke)),
        }
        .into(),
        DeploymentStopped {
            app_id: app(),
            device_id: dev(),
        }
        .into(),
        ApplicationDeleted { app_id: app() }.into(),
        DeviceDescribed {
            device_id: dev(),
            mcu: "Mps2An385".into(),
            firmware: "wasmbed-firmware 0.1.0".into(),
            app_ram_bytes: 262_144,
            host_api_version: 1,
            trust_serial: 2,
        }
        .into(),
        ModuleRejected {
            app_id: app(),
            sha256: Sha256([5; 32]),
            reason: "imports wasmbed.fork, which the device runtime does not offer".into(),
        }
        .into(),
        ApplicationDeployRequested {
            app_id: app(),
            version: 2,
        }
        .into(),
        ApplicationStopRequested { app_id: app() }.into(),
        DeploymentRefused {
            app_id: app(),
            device_id: dev(),
            version: 1,
            reason: "needs 4 pages, the device has 2".into(),
        }
        .into(),
        DeploymentTransferStarted {
            app_id: app(),
            device_id: dev(),
            version: 1,
        }
        .into(),
        DeploymentStopRequested {
            app_id: app(),
            device_id: dev(),
        }
        .into(),
        GatewayStarted {
            gateway_id: gw(),
            endpoint: "127.0.0.1:8081".into(),
            certificate_sha256: Sha256([4; 32]),
        }
        .into(),
        GatewayStopped { gateway_id: gw() }.into(),
        EmulatorStarted {
            device_id: dev(),
            backend: "qemu".into(),
            mcu: "Mps2An385".into(),
            instance: "pid 42".into(),
            attempt: 1,
        }
        .into(),
        EmulatorExited {
            device_id: dev(),
            exit_code: Some(1),
            last_uart_lines: vec!["panic".into()],
            reason: ExitReason::Crashed,
            restart_in_ms: Some(500),
        }
        .into(),
        EmulatorStartRefused {
            device_id: dev(),
            mcu: "Esp32DevkitC".into(),
            backend: "qemu".into(),
            reason: "not a Cortex-M".into(),
        }
        .into(),
    ]
}

#[test]
fn every_event_round_trips_in_its_envelope() {
    let events = every_event();
    let names: std::collections::BTreeSet<_> = events.iter().map(Event::type_name).collect();
    assert_eq!(names.len(), events.len(), "one of each variant");
    for event in events {
        let envelope = EventEnvelope::new(event);
        let bytes = envelope.to_json().unwrap();
        let back = EventEnvelope::from_json(&bytes).unwrap();
        assert_eq!(back, envelope);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["event"]["type"], envelope.event.type_name());
        assert!(subject::event(&envelope.aggregate).starts_with("wasmbed.events.v1."));
    }
}

#[test]
fn a_disconnect_ends_only_the_session_it_names() {
    let other = GatewayId::new("gw-2").unwrap();
    let disconnect = |session: Option<&str>| DeviceDisconnected {
        device_id: dev(),
        gateway_id: gw(),
        reason: "replaced by a newer session of the device".into(),
        session_id: session.map(str::to_owned),
    };
    for (ended, gateway, current, ends) in [
        // The session it names is the current one.
        (Some("a1"), Some(&gw()), Some("a1"), true),
        // A newer session on the same gateway replaced it: the late disconnect changes nothing.
        (Some("a1"), Some(&gw()), Some("b2"), false),
        // ... or on another gateway.
        (Some("a1"), Some(&other), Some("b2"), false),
        // No session at all.
        (Some("a1"), None, None, false),
        // Events from before session ids: the gateway decides.
        (None, Some(&gw()), None, true),
        (None, Some(&other), None, false),
        (None, Some(&gw()), Some("b2"), true),
        (Some("a1"), Some(&gw()), None, true),
    ] {
        assert_eq!(
            disconnect(ended).ends_current(gateway, current),
            ends,
            "{ended:?} {gateway:?} {current:?}"
        );
    }
}

#[test]
fn events_without_a_session_id_still_decode() {
    let old = r#"{"device_id":"dev-1","gateway_id":"gw-1","reason":"closed by the device"}"#;
    let event: DeviceDisconnected = serde_json::from_str(old).unwrap();
    assert_eq!(event.session_id, None);
    let old = r#"{"device_id":"dev-1","gateway_id":"gw-1","remote_addr":"127.0.0.1:1"}"#;
    let event: DeviceConnected = serde_json::from_str(old).unwrap();
    assert_eq!(event.session_id, None);
}

#[test]
fn causation_carries_the_correlation() {
    let first = EventEnvelope::new(DeviceBackOnline { device_id: dev() }.into());
    let second = EventEnvelope::new(DeviceBackOnline { device_id: dev() }.into()).caused_by(&first);
    assert_eq!(second.causation_id, Some(first.event_id));
    assert_eq!(second.correlation_id, first.correlation_id);
    assert!(
        second.event_id > first.event_id,
        "UUIDv7 ids are time-ordered"
    );
}

#[test]
fn deployment_events_live_on_the_deployment_aggregate() {
    let e: Event = DeploymentRunning {
        app_id: app(),
        device_id: dev(),
        version: 2,
    }
    .into();
    assert_eq!(
        e.aggregate(),
        AggregateId::Deployment {
            app: app(),
            device: dev()
        }
    );
}

#[test]
fn newer_schema_versions_and_garbage_are_refused() {
    let mut envelope = EventEnvelope::new(DeviceBackOnline { device_id: dev() }.into());
    envelope.schema_version = EVENT_SCHEMA_VERSION + 1;
    let bytes = envelope.to_json().unwrap();
    assert!(matches!(
        EventEnvelope::from_json(&bytes),
        Err(EventDecodeError::UnsupportedVersion(v)) if v == EVENT_SCHEMA_VERSION + 1
    ));
    assert!(matches!(
        EventEnvelope::from_json(b"{\"event\": 1}"),
        Err(EventDecodeError::Invalid(_))
    ));
}

fn round_trip<C: Command + PartialEq + std::fmt::Debug>(command: C, reply: C::Reply)
where
    C::Reply: PartialEq + std::fmt::Debug,
{
    let bytes = serde_json::to_vec(&command).unwrap();
    assert_eq!(serde_json::from_slice::<C>(&bytes).unwrap(), command);
    let ok: Reply<C::Reply> = Ok(reply).into();
    let bytes = serde_json::to_vec(&ok).unwrap();
    assert_eq!(
        serde_json::from_slice::<Reply<C::Reply>>(&bytes).unwrap(),
        ok
    );
    let refused = Reply::<C::Reply>::error(ErrorCode::NotFound, "no such device");
    let bytes = serde_json::to_vec(&refused).unwrap();
    let back: Reply<C::Reply> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back.into_result().unwrap_err().code, ErrorCode::NotFound);
    assert!(C::subject().starts_with("wasmbed.cmd.v1."));
}

#[test]
fn every_command_and_reply_round_trips() {
    let accepted = Accepted { sequence: 7 };
    round_trip(
        RegisterDevice {
            device_id: dev(),
            public_key: PublicKey([1; 32]),
            mcu: None,
            labels: BTreeMap::new(),
        },
        accepted,
    );
    round_trip(
        DecommissionDevice {
            device_id: dev(),
            reason: "x".into(),
        },
        accepted,
    );
    round_trip(
        OpenPairingWindow { duration_secs: 60 },
        PairingWindow {
            token: "t".into(),
            expires_at: chrono::Utc::now(),
        },
    );
    round_trip(
        AuthorizeDevice {
            gateway_id: gw(),
            public_key: PublicKey([1; 32]),
            enrollment_token: None,
            remote_addr: "127.0.0.1:1".into(),
        },
        Authorization::Allowed { device_id: dev() },
    );
    round_trip(
        IssueGatewayCertificate {
            gateway_id: gw(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        },
        GatewayCertificate {
            certificate_pem: "c".into(),
            ca_certificate_pem: "ca".into(),
            not_after: chrono::Utc::now(),
        },
    );
    round_trip(
        GetCaCertificate {},
        CaCertificate {
            certificate_pem: "ca".into(),
        },
    );
    round_trip(
        CreateApplication {
            app_id: app(),
            name: "Blink".into(),
            module_sha256: Sha256([2; 32]),
            target: Target::All,
            config: Blob::default(),
            limits: limits(),
            release: Some(release()),
        },
        accepted,
    );
    round_trip(DeployApplication { app_id: app() }, accepted);
    round_trip(
        UpdateApplication {
            app_id: app(),
            module_sha256: Sha256([2; 32]),
            release: None,
        },
        accepted,
    );
    round_trip(
        TrustPublisher {
            public_key: PublicKey([6; 32]),
            name: "second".into(),
            rotation: Some(rotation(TrustChange::Trust)),
        },
        accepted,
    );
    round_trip(
        RevokePublisher {
            rotation: rotation(TrustChange::Revoke),
            reason: "leaked".into(),
        },
        accepted,
    );
    round_trip(StopApplication { app_id: app() }, accepted);
    round_trip(DeleteApplication { app_id: app() }, accepted);
    round_trip(
        StartEmulator {
            device_id: dev(),
            mcu: "Mps2An385".into(),
            simulated: false,
            labels: Default::default(),
        },
        accepted,
    );
    round_trip(StopEmulator { device_id: dev() }, accepted);
    round_trip(RestartEmulator { device_id: dev() }, accepted);
}

#[test]
fn a_bad_command_body_names_the_field() {
    let err = serde_json::from_str::<RegisterDevice>(
        r#"{"device_id":"Bad.Id","public_key":"00","mcu":null}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("id"), "{err}");
}

#[test]
fn json_schemas_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let bless = std::env::var_os("WASMBED_BLESS").is_some();
    let mut stale = Vec::new();
    let schemas = wasmbed_schemas::json_schema::all();
    for (name, schema) in &schemas {
        let path = dir.join(name);
        let text = wasmbed_schemas::json_schema::render(schema);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.clone());
        }
    }
    // No file may lie around for a type that no longer exists.
    let mut on_disk = Vec::new();
    for sub in [dir.clone(), dir.join("commands")] {
        for entry in std::fs::read_dir(&sub).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                on_disk.push(
                    path.strip_prefix(&dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let known: Vec<_> = schemas.iter().map(|(n, _)| n.clone()).collect();
    let orphans: Vec<_> = on_disk.iter().filter(|f| !known.contains(f)).collect();
    assert!(
        stale.is_empty() && orphans.is_empty(),
        "schemas/json drifted (stale: {stale:?}, orphans: {orphans:?}); \
         run `WASMBED_BLESS=1 cargo test -p wasmbed-schemas --test events` and commit"
    );
}

#[test]
fn nats_permissions_file_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/permissions.conf");
    let text = wasmbed_schemas::permissions::authorization_conf();
    if std::env::var_os("WASMBED_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()),
        "nats/permissions.conf drifted from schemas::permissions; run \
         `wasmbed nats-permissions > nats/permissions.conf` (or `WASMBED_BLESS=1 cargo test -p \
         wasmbed-schemas --test events`) and commit"
    );
}
