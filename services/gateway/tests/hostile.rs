//! Peers that should not get in, or should not get far: each is refused with a clear reason and
//! an audit event, and the gateway keeps serving everyone else.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use support::{RawDevice, System, T, http_get, test_gateway_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmbed_device_core::{CloseReason, Signer};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::frame::*;
use wasmbed_schemas::subject;
use wasmbed_schemas::{AggregateId, AppId, GatewayId, Nonce, PublicKey, Sha256, Signature};
use wasmbed_sim::random_key;

fn gateway_id() -> GatewayId {
    GatewayId::new("gw-test").unwrap()
}

/// Hello with `key`, then Auth signed by `signer` over a transcript with the given fingerprint
/// and device nonce (the gateway's real nonce unless `replay` supplies an old Auth).
async fn hand_made_auth(
    raw: &mut RawDevice,
    key: &SigningKey,
    device_nonce: Nonce,
    signer: &SigningKey,
    fingerprint: Sha256,
) -> (Challenge, Signature) {
    raw.send(&Frame::Hello(Hello {
        public_key: key.public_key(),
        nonce: device_nonce,
        firmware: "test".into(),
        enrollment_token: None,
    }))
    .await;
    let challenge = raw.challenge.clone().expect("connected with `connect`");
    let transcript = auth_transcript(
        &device_nonce,
        &challenge.nonce,
        &fingerprint,
        &challenge.gateway_id,
    );
    let signature = signer.sign(&transcript);
    (challenge, signature)
}

fn rejected(frames: &[Frame]) -> RejectReason {
    match frames {
        [Frame::Rejected(r)] => r.reason,
        other => panic!("expected one Rejected frame, got {other:?}"),
    }
}

#[tokio::test]
async fn impostors_replays_and_relays_are_refused() {
    let system = System::start().await;
    let gateway = system.gateway(test_gateway_config(), 0).await;
    let addr = gateway.tls_addr;
    let key = random_key();
    system.register("dev-1", &key).await;

    // An unknown key, outside any pairing window (enrollment refuses and records it).
    let mut stranger = system.sim(vec![addr], random_key());
    let status = stranger
        .wait_for(|s| s.last_close.is_some(), T)
        .await
        .unwrap();
    assert!(
        matches!(&status.last_close, Some(CloseReason::Rejected(r)) if r.reason == RejectReason::UnknownDevice),
        "{status:?}"
    );
    stranger.stop().await;

    // The registered key, but signed by another key.
    let mut raw = RawDevice::connect(&system, addr).await;
    let fp = raw.fingerprint;
    let (_, forged) = hand_made_auth(&mut raw, &key, Nonce([1; 32]), &random_key(), fp).await;
    raw.send(&Frame::Auth(Auth { signature: forged })).await;
    assert_eq!(rejected(&raw.drain().await), RejectReason::BadSignature);

    // A signature bound to another certificate (a relay through a different TLS server).
    let mut raw = RawDevice::connect(&system, addr).await;
    let (_, relayed) =
        hand_made_auth(&mut raw, &key, Nonce([2; 32]), &key, Sha256([0xee; 32])).await;
    raw.send(&Frame::Auth(Auth { signature: relayed })).await;
    assert_eq!(rejected(&raw.drain().await), RejectReason::BadSignature);

    // A valid Auth replayed into a later session: the gateway's nonce differs.
    let mut first = RawDevice::connect(&system, addr).await;
    let fp = first.fingerprint;
    let (_, valid) = hand_made_auth(&mut first, &key, Nonce([3; 32]), &key, fp).await;
    first.send(&Frame::Auth(Auth { signature: valid })).await;
    assert!(matches!(first.next().await, Some(Frame::Welcome(_))));
    drop(first);
    let mut replay = RawDevice::connect(&system, addr).await;
    let fp = replay.fingerprint;
    let _ = hand_made_auth(&mut replay, &key, Nonce([3; 32]), &random_key(), fp).await;
    replay.send(&Frame::Auth(Auth { signature: valid })).await;
    assert_eq!(rejected(&replay.drain().await), RejectReason::BadSignature);

    let audit = system
        .wait_events(AggregateId::Gateway(gateway_id()), |events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::EnrollmentRefused(_)))
                .count()
                >= 4
        })
        .await;
    let refusals: Vec<(Option<PublicKey>, RejectReason)> = audit
        .iter()
        .filter_map(|e| match e {
            Event::EnrollmentRefused(r) => Some((r.public_key, r.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(refusals[0].1, RejectReason::UnknownDevice);
    assert_eq!(
        refusals[1..4],
        [(Some(key.public_key()), RejectReason::BadSignature); 3]
    );

    // And the real device still gets in.
    let mut device = system.sim(vec![addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    device.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_stalled_peers_are_dropped_with_an_audit_event() {
    let system = System::start().await;
    let gateway = system.gateway(test_gateway_config(), 0).await;
    let addr = gateway.tls_addr;

    // A frame over the limit, announced before authentication.
    let mut raw = RawDevice::connect(&system, addr).await;
    raw.send_raw(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes())
        .await;
    assert_eq!(
        rejected(&raw.drain().await),
        RejectReason::ProtocolViolation
    );

    // Garbage inside TLS.
    let mut raw = RawDevice::connect(&system, addr).await;
    raw.send_raw(&[0, 0, 0, 3, 1, 0xc1, 0xff]).await;
    assert_eq!(
        rejected(&raw.drain().await),
        RejectReason::ProtocolViolation
    );

    // Garbage instead of TLS.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut sink))
        .await
        .unwrap();

    // A TCP connection that never starts TLS: dropped after the handshake timeout (700 ms).
    let started = std::time::Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut sink))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    // TLS, then nothing: refused after the auth timeout.
    let mut raw = RawDevice::connect(&system, addr).await;
    assert_eq!(rejected(&raw.drain().await), RejectReason::Timeout);

    let audit = system
        .wait_events(AggregateId::Gateway(gateway_id()), |events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::EnrollmentRefused(_)))
                .count()
                >= 5
        })
        .await;
    let reasons: Vec<(RejectReason, bool)> = audit
        .iter()
        .filter_map(|e| match e {
            Event::EnrollmentRefused(r) => Some((r.reason, r.message.contains("TLS handshake"))),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (RejectReason::ProtocolViolation, false),
            (RejectReason::ProtocolViolation, false),
            (RejectReason::ProtocolViolation, true),
            (RejectReason::Timeout, true),
            (RejectReason::Timeout, false),
        ]
    );

    // The gateway still serves devices, and counted all of it.
    let key = random_key();
    system.register("dev-1", &key).await;
    let mut device = system.sim(vec![addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    let metrics = http_get(gateway.http_addr, "/metrics").await.1;
    for line in [
        "wasmbed_gateway_refused_total{gateway=\"gw-test\",reason=\"protocol_violation\"} 3",
        "wasmbed_gateway_refused_total{gateway=\"gw-test\",reason=\"timeout\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    device.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_device_cannot_publish_under_another_devices_id() {
    let system = System::start().await;
    let gateway = system.gateway(test_gateway_config(), 0).await;
    let mallory_key = random_key();
    let mallory = system.register("mallory", &mallory_key).await;
    system.register("victim", &random_key()).await;
    let mut everything = system.client.subscribe("wasmbed.>").await.unwrap();

    let mut raw = RawDevice::authenticated(&system, gateway.tls_addr, mallory_key.clone()).await;
    // An honest telemetry frame lands under mallory's own id.
    raw.send(&Frame::Telemetry(Telemetry {
        app_id: AppId::new("app").unwrap(),
        seq: 1,
        topic: "wasmbed.telemetry.victim.app".into(),
        payload: b"x".to_vec(),
    }))
    .await;
    // A hand-encoded telemetry frame whose app id tries to inject subject tokens:
    // {"Telemetry": ["victim.app", 2, "t", bin "y"]}.
    let mut body = vec![PROTOCOL_VERSION, 0x81, 0xa9];
    body.extend_from_slice(b"Telemetry");
    body.push(0x94);
    body.push(0xaa);
    body.extend_from_slice(b"victim.app");
    body.extend_from_slice(&[0x02, 0xa1, b't', 0xc4, 0x01, b'y']);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_raw(&frame).await;
    let answer = raw.drain().await;
    assert!(
        matches!(&answer[..], [Frame::Error(e)] if e.code == FrameErrorCode::Malformed),
        "{answer:?}"
    );

    // Everything any device caused on the bus names mallory, never the victim.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut telemetry = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, everything.next()).await {
        let subject = message.subject.to_string();
        assert!(!subject.contains("victim"), "{subject}");
        if subject.starts_with("wasmbed.telemetry.") {
            telemetry.push(subject);
        }
    }
    assert_eq!(
        telemetry,
        [subject::telemetry(&mallory, &AppId::new("app").unwrap())]
    );
    system
        .wait_events(AggregateId::Device(mallory), |events| {
            events.iter().any(|e| matches!(e, Event::DeviceDisconnected(d) if d.reason.starts_with("protocol violation")))
        })
        .await;
    gateway.stop().await;
}
