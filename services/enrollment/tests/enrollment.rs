//! The enrollment service against a real nats-server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmbed_bus::{CallError, call};
use wasmbed_enrollment::{EnrollmentConfig, EnrollmentError};
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::command::*;
use wasmbed_schemas::event::{EnrollmentPath, Event};
use wasmbed_schemas::frame::RejectReason;
use wasmbed_schemas::{AggregateId, DeviceId, GatewayId, PublicKey};
use wasmbed_test_support::NatsServer;

const T: Duration = Duration::from_secs(5);

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), EnrollmentError>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start(server: &NatsServer, ca_dir: &Path) -> Running {
    let client = server.client().await.unwrap();
    let mut config = EnrollmentConfig::new(ca_dir.to_path_buf());
    config.gateway_certificate_validity = Duration::from_secs(3600);
    config.audit_window = Duration::from_secs(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(wasmbed_enrollment::run(
        client.clone(),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    // Ready once it answers.
    for _ in 0..100 {
        if call(&client, &GetCaCertificate {}, Duration::from_millis(200))
            .await
            .is_ok()
        {
            return Running { stop, task };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("enrollment did not come up");
}

/// The public key of the `n`th test device (a real key: enrollment refuses points of small
/// order and bytes that are no point at all).
fn key(n: u8) -> PublicKey {
    PublicKey(
        ed25519_dalek::SigningKey::from_bytes(&[n; 32])
            .verifying_key()
            .to_bytes(),
    )
}

fn authorize(n: u8, token: Option<&str>) -> AuthorizeDevice {
    AuthorizeDevice {
        gateway_id: GatewayId::new("gw-1").unwrap(),
        public_key: key(n),
        enrollment_token: token.map(str::to_owned),
        remote_addr: "127.0.0.1:5000".into(),
    }
}

fn register(id: &str, n: u8) -> RegisterDevice {
    RegisterDevice {
        device_id: DeviceId::new(id).unwrap(),
        public_key: key(n),
        mcu: Some("Mps2An385".into()),
        labels: Default::default(),
    }
}

async fn history(server: &NatsServer, aggregate: AggregateId) -> Vec<Event> {
    let log = EventLog::open(server.client().await.unwrap(), &LogOptions::default())
        .await
        .unwrap();
    log.read(&aggregate)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.event)
        .collect()
}

fn refusal_code(e: CallError) -> ErrorCode {
    match e {
        CallError::Refused(e) => e.code,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_registered_device_is_enrolled_once_and_then_allowed() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();

    call(&client, &register("dev-1", 1), T).await.unwrap();
    for _ in 0..2 {
        let decision = call(&client, &authorize(1, None), T).await.unwrap();
        assert_eq!(
            decision,
            Authorization::Allowed {
                device_id: DeviceId::new("dev-1").unwrap()
            }
        );
    }
    let events = history(
        &server,
        AggregateId::Device(DeviceId::new("dev-1").unwrap()),
    )
    .await;
    assert!(
        matches!(events[..], [Event::DeviceRegistered(_), Event::DeviceEnrolled(ref e)] if e.path == EnrollmentPath::Registered)
    );
    service.stop().await;
}

#[tokio::test]
async fn unknown_and_decommissioned_keys_are_refused_with_an_audit_event() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();

    let decision = call(&client, &authorize(9, None), T).await.unwrap();
    assert!(matches!(
        decision,
        Authorization::Refused {
            reason: RejectReason::UnknownDevice,
            ..
        }
    ));

    call(&client, &register("dev-2", 2), T).await.unwrap();
    call(
        &client,
        &DecommissionDevice {
            device_id: DeviceId::new("dev-2").unwrap(),
            reason: "stolen".into(),
        },
        T,
    )
    .await
    .unwrap();
    // Its id is not registered again, not even with the same key.
    let again = call(&client, &register("dev-2", 2), T).await.unwrap_err();
    assert_eq!(refusal_code(again), ErrorCode::AlreadyExists);
    let decision = call(&client, &authorize(2, None), T).await.unwrap();
    assert!(matches!(
        decision,
        Authorization::Refused {
            reason: RejectReason::Decommissioned,
            ..
        }
    ));

    let audit = history(
        &server,
        AggregateId::Gateway(GatewayId::new("gw-1").unwrap()),
    )
    .await;
    let reasons: Vec<_> = audit
        .iter()
        .map(|e| match e {
            Event::EnrollmentRefused(r) => (r.public_key, r.reason),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (Some(key(9)), RejectReason::UnknownDevice),
            (Some(key(2)), RejectReason::Decommissioned)
        ]
    );
    let missing = call(
        &client,
        &DecommissionDevice {
            device_id: DeviceId::new("nobody").unwrap(),
            reason: "x".into(),
        },
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(refusal_code(missing), ErrorCode::NotFound);
    service.stop().await;
}

#[tokio::test]
async fn a_pairing_window_lets_unknown_devices_enroll_with_its_token() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();

    let bad = call(&client, &OpenPairingWindow { duration_secs: 0 }, T)
        .await
        .unwrap_err();
    assert_eq!(refusal_code(bad), ErrorCode::InvalidRequest);
    let window = call(&client, &OpenPairingWindow { duration_secs: 60 }, T)
        .await
        .unwrap();

    let wrong = call(&client, &authorize(5, Some("not-the-token")), T)
        .await
        .unwrap();
    assert!(matches!(
        wrong,
        Authorization::Refused {
            reason: RejectReason::UnknownDevice,
            ..
        }
    ));
    let Authorization::Allowed { device_id } = call(&client, &authorize(5, Some(&window.token)), T)
        .await
        .unwrap()
    else {
        panic!("pairing refused");
    };
    let derived: String = key(5).0[..6].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(device_id.as_str(), format!("dev-{derived}"));
    // Enrolled now: allowed without a token, too.
    assert!(matches!(
        call(&client, &authorize(5, None), T).await.unwrap(),
        Authorization::Allowed { .. }
    ));
    let events = history(&server, AggregateId::Device(device_id)).await;
    assert!(
        matches!(events[..], [Event::DeviceEnrolled(ref e)] if e.path == EnrollmentPath::Pairing)
    );
    service.stop().await;
}

#[tokio::test]
async fn keys_of_small_order_are_refused_at_registration_and_at_the_door() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();

    // The identity point signs every message with R = identity, s = 0; [0xff; 32] is no point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for bytes in [identity, [0; 32], [0xff; 32]] {
        let weak = RegisterDevice {
            public_key: PublicKey(bytes),
            ..register("dev-weak", 1)
        };
        let refused = call(&client, &weak, T).await.unwrap_err();
        assert_eq!(
            refusal_code(refused),
            ErrorCode::InvalidRequest,
            "{bytes:?}"
        );
    }
    // Not even an open pairing window lets one in.
    let window = call(&client, &OpenPairingWindow { duration_secs: 60 }, T)
        .await
        .unwrap();
    let decision = call(
        &client,
        &AuthorizeDevice {
            public_key: PublicKey(identity),
            ..authorize(1, Some(&window.token))
        },
        T,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            decision,
            Authorization::Refused {
                reason: RejectReason::BadSignature,
                ..
            }
        ),
        "{decision:?}"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_flood_of_unknown_keys_is_counted_not_copied_into_the_log() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();
    for n in 100..120 {
        let decision = call(&client, &authorize(n, None), T).await.unwrap();
        assert!(matches!(decision, Authorization::Refused { .. }));
    }
    // From another address: its own first occurrences, recorded in full.
    let elsewhere = AuthorizeDevice {
        remote_addr: "127.0.0.2:6000".into(),
        ..authorize(200, None)
    };
    call(&client, &elsewhere, T).await.unwrap();
    let gateway = AggregateId::Gateway(GatewayId::new("gw-1").unwrap());
    let deadline = tokio::time::Instant::now() + T;
    let audit = loop {
        let audit = history(&server, gateway.clone()).await;
        if audit.iter().any(|e| matches!(e, Event::RefusalsCounted(_))) {
            break audit;
        }
        assert!(tokio::time::Instant::now() < deadline, "{audit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let in_full: Vec<_> = audit
        .iter()
        .filter_map(|e| match e {
            Event::EnrollmentRefused(r) => Some(r.remote_addr.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        in_full,
        [
            "127.0.0.1:5000",
            "127.0.0.1:5000",
            "127.0.0.1:5000",
            "127.0.0.2:6000"
        ]
    );
    let counted: Vec<_> = audit
        .iter()
        .filter_map(|e| match e {
            Event::RefusalsCounted(c) => Some((c.reason, c.source.clone(), c.count)),
            _ => None,
        })
        .collect();
    assert_eq!(
        counted,
        [(RejectReason::UnknownDevice, "127.0.0.1".to_owned(), 17)]
    );
    service.stop().await;
}

#[tokio::test]
async fn registration_conflicts_are_refused_and_retries_are_idempotent() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();

    let first = call(&client, &register("dev-1", 1), T).await.unwrap();
    let retry = call(&client, &register("dev-1", 1), T).await.unwrap();
    assert_eq!(first, retry);
    let other_key = call(&client, &register("dev-1", 2), T).await.unwrap_err();
    assert_eq!(refusal_code(other_key), ErrorCode::AlreadyExists);
    let same_key = call(&client, &register("dev-9", 1), T).await.unwrap_err();
    assert_eq!(refusal_code(same_key), ErrorCode::AlreadyExists);
    service.stop().await;
}

#[tokio::test]
async fn the_device_view_and_the_ca_survive_a_restart() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = server.client().await.unwrap();

    let service = start(&server, dir.path()).await;
    call(&client, &register("dev-1", 1), T).await.unwrap();
    let ca_before = call(&client, &GetCaCertificate {}, T).await.unwrap();
    service.stop().await;

    let key_file = dir.path().join("ca-key.pem");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");

    let service = start(&server, dir.path()).await;
    assert_eq!(
        call(&client, &GetCaCertificate {}, T).await.unwrap(),
        ca_before
    );
    assert!(matches!(
        call(&client, &authorize(1, None), T).await.unwrap(),
        Authorization::Allowed { .. }
    ));
    service.stop().await;
}

fn csr(names: Vec<String>) -> String {
    let key = rcgen_key();
    let params = rcgen::CertificateParams::new(names).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn rcgen_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate().unwrap()
}

#[tokio::test]
async fn gateway_certificates_are_signed_from_a_csr_with_the_cas_own_limits() {
    use x509_parser::prelude::*;
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = start(&server, dir.path()).await;
    let client = server.client().await.unwrap();
    let request = |csr_pem: String| IssueGatewayCertificate {
        gateway_id: GatewayId::new("gw-1").unwrap(),
        csr_pem,
    };

    let issued = call(&client, &request(csr(vec!["localhost".into()])), T)
        .await
        .unwrap();
    let (_, pem) = parse_x509_pem(issued.certificate_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let (_, ca_pem) = parse_x509_pem(issued.ca_certificate_pem.as_bytes()).unwrap();
    let ca = ca_pem.parse_x509().unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert!(!cert.is_ca());
    cert.verify_signature(Some(ca.public_key())).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((3600..=3700).contains(&lifetime), "{lifetime}");
    assert_eq!(
        issued.not_after.timestamp(),
        cert.validity().not_after.timestamp()
    );

    let no_names = call(&client, &request(csr(vec![])), T).await.unwrap_err();
    assert_eq!(refusal_code(no_names), ErrorCode::InvalidRequest);
    let garbage = call(
        &client,
        &request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
        ),
        T,
    )
    .await
    .unwrap_err();
    assert_eq!(refusal_code(garbage), ErrorCode::InvalidRequest);
    service.stop().await;
}

/// Two instances at once, and each key registered under two ids at the same moment (the queue
/// group hands each command to either instance): one id wins per key, the other is told who
/// has it, and the log holds one claim and one registration per key.
#[tokio::test]
async fn a_key_is_never_registered_to_two_devices_by_two_instances() {
    let server = NatsServer::start().await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let first = start(&server, ca_dir.path()).await;
    let second = start(&server, ca_dir.path()).await;
    let client = server.client().await.unwrap();
    const KEYS: u8 = 20;
    let mut calls = Vec::new();
    for n in 0..KEYS {
        for id in [format!("one-{n}"), format!("two-{n}")] {
            let client = client.clone();
            calls.push(tokio::spawn(async move {
                call(&client, &register(&id, 100 + n), T).await
            }));
        }
    }
    let mut results = Vec::new();
    for task in calls {
        results.push(task.await.unwrap());
    }
    for (n, pair) in results.chunks(2).enumerate() {
        let won: Vec<bool> = pair.iter().map(Result::is_ok).collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "key {n}: {pair:?}");
        let lost = pair.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(lost, CallError::Refused(e) if e.code == ErrorCode::AlreadyExists),
            "{lost:?}"
        );
        let claims = history(&server, AggregateId::DeviceKey(key(100 + n as u8))).await;
        assert_eq!(claims.len(), 1, "key {n}: {claims:?}");
    }
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    let registered = log
        .page(None, 0, usize::MAX)
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.envelope.event, Event::DeviceRegistered(_)))
        .count();
    assert_eq!(registered, usize::from(KEYS));
    first.stop().await;
    second.stop().await;
}

/// A pairing window opened through one instance is open in every instance (and survives a
/// restart): it is in the log, as its token's digest.
#[tokio::test]
async fn a_pairing_window_is_open_in_every_instance() {
    let server = NatsServer::start().await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let first = start(&server, ca_dir.path()).await;
    let second = start(&server, ca_dir.path()).await;
    let client = server.client().await.unwrap();
    let window = call(&client, &OpenPairingWindow { duration_secs: 60 }, T)
        .await
        .unwrap();
    // The token itself is nowhere in the log.
    let opened = history(&server, AggregateId::Pairing).await;
    assert_eq!(opened.len(), 1);
    assert!(
        !serde_json::to_string(&opened)
            .unwrap()
            .contains(&window.token)
    );
    // Every authorization goes to either instance, at once: all are allowed.
    for n in 60..80u8 {
        let answer = call(&client, &authorize(n, Some(&window.token)), T)
            .await
            .unwrap();
        assert!(
            matches!(answer, Authorization::Allowed { .. }),
            "key {n}: {answer:?}"
        );
    }
    first.stop().await;
    second.stop().await;
}

/// A device registered through one instance is allowed at once by the other: an instance that
/// does not know a key yet looks for its claim in the log before refusing it. (On one server
/// the other instance's follower is usually quicker than the next request, so this guards the
/// outcome; the gap itself showed in the two-instance runs of the e2e suites.)
#[tokio::test]
async fn a_device_registered_through_one_instance_is_allowed_by_the_other_at_once() {
    let server = NatsServer::start().await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let first = start(&server, ca_dir.path()).await;
    let second = start(&server, ca_dir.path()).await;
    let client = server.client().await.unwrap();
    // Each request goes to either instance: about half of the authorizations reach the one
    // that did not record the registration.
    for n in 140..180u8 {
        call(&client, &register(&format!("quick-{n}"), n), T)
            .await
            .unwrap();
        let answer = call(&client, &authorize(n, None), T).await.unwrap();
        assert!(
            matches!(answer, Authorization::Allowed { .. }),
            "key {n}: {answer:?}"
        );
    }
    first.stop().await;
    second.stop().await;
}
