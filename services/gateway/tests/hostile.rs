//! Peers that should not get in, or should not get far: each is refused with a clear reason and
//! an audit event, and the gateway keeps serving everyone else.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmbed_bus::call;
use wasmbed_device_core::{CloseReason, Signer};
use wasmbed_e2e::gateway::{RawDevice, RunningGateway, quick_config};
use wasmbed_e2e::{Services, System, T};
use wasmbed_schemas::command::{DecommissionDevice, OpenPairingWindow};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::*;
use wasmbed_schemas::subject;
use wasmbed_schemas::{AggregateId, AppId, GatewayId, Nonce, PublicKey, Sha256, Signature};
use wasmbed_sim::random_key;
use wasmbed_test_support::http_get;

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
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let addr = gateway.tls_addr;
    let key = random_key();
    system.register_key("dev-1", &key, &[]).await;

    // An unknown key, outside any pairing window (enrollment refuses and records it).
    let mut stranger = system.sim_to(vec![addr], random_key());
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
        .wait_events(&AggregateId::Gateway(gateway_id()), |events| {
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
    let mut device = system.sim_to(vec![addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    device.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_stalled_peers_are_dropped_with_an_audit_event() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
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
        .wait_events(&AggregateId::Gateway(gateway_id()), |events| {
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
    system.register_key("dev-1", &key, &[]).await;
    let mut device = system.sim_to(vec![addr], key);
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
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let mallory_key = random_key();
    let mallory = system.register_key("mallory", &mallory_key, &[]).await;
    system.register_key("victim", &random_key(), &[]).await;
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
        .wait_events(&AggregateId::Device(mallory), |events| {
            events.iter().any(|e| matches!(e, Event::DeviceDisconnected(d) if d.reason.starts_with("protocol violation")))
        })
        .await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_small_order_key_with_a_forged_signature_is_refused() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    // An open pairing window: without the gateway's own check, enrollment would pair the key.
    let window = call(&system.client, &OpenPairingWindow { duration_secs: 60 }, T)
        .await
        .unwrap();
    // The identity point as the key, and (R = identity, s = 0) as the signature: it satisfies
    // the unstrict equation [s]B = R + [k]A for every message.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let mut raw = RawDevice::connect(&system, gateway.tls_addr).await;
    raw.send(&Frame::Hello(Hello {
        public_key: PublicKey(identity),
        nonce: Nonce([7; 32]),
        firmware: "test".into(),
        enrollment_token: Some(window.token),
    }))
    .await;
    raw.send(&Frame::Auth(Auth {
        signature: Signature(forged),
    }))
    .await;
    assert_eq!(rejected(&raw.drain().await), RejectReason::BadSignature);
    let audit = system
        .wait_events(&AggregateId::Gateway(gateway_id()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::EnrollmentRefused(_)))
        })
        .await;
    let refused: Vec<_> = audit
        .iter()
        .filter_map(|e| match e {
            Event::EnrollmentRefused(r) => Some((r.public_key, r.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [(Some(PublicKey(identity)), RejectReason::BadSignature)]
    );
    gateway.stop().await;
}

/// The value of one of the gateway's metrics.
async fn metric(gateway: &RunningGateway, name: &str) -> u64 {
    let text = http_get(gateway.http_addr, "/metrics").await.1;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[tokio::test]
async fn a_topic_with_a_line_break_ends_the_session_and_its_accounting() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let device = system.register_key("crlf", &key, &[]).await;
    let mut telemetry = system
        .client
        .subscribe(subject::TELEMETRY_ALL)
        .await
        .unwrap();
    let mut raw = RawDevice::authenticated(&system, gateway.tls_addr, key).await;
    assert_eq!(
        metric(&gateway, "wasmbed_gateway_sessions_active{").await,
        1
    );
    raw.send(&Frame::Telemetry(Telemetry {
        app_id: AppId::new("app").unwrap(),
        seq: 1,
        topic: "temp\r\nNats-Msg-Id: forged".into(),
        payload: b"x".to_vec(),
    }))
    .await;
    let answer = raw.drain().await;
    assert!(
        matches!(answer.last(), Some(Frame::Error(e)) if e.code == FrameErrorCode::Malformed),
        "{answer:?}"
    );
    // Nothing reached the bus, the session's end is in the log, and the gauge is back to 0.
    let leaked = tokio::time::timeout(Duration::from_millis(300), telemetry.next()).await;
    assert!(leaked.is_err(), "{leaked:?}");
    let events = system
        .wait_events(&AggregateId::Device(device), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDisconnected(_)))
        })
        .await;
    let reason = events.iter().find_map(|e| match e {
        Event::DeviceDisconnected(d) => Some(d.reason.clone()),
        _ => None,
    });
    assert!(
        reason.as_deref().unwrap().starts_with("protocol violation"),
        "{reason:?}"
    );
    assert_eq!(
        metric(&gateway, "wasmbed_gateway_sessions_active{").await,
        0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn decommissioning_a_device_ends_its_live_session() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let device = system.register_key("retired", &key, &[]).await;
    let mut telemetry = system
        .client
        .subscribe(subject::TELEMETRY_ALL)
        .await
        .unwrap();
    let mut raw = RawDevice::authenticated(&system, gateway.tls_addr, key.clone()).await;
    let frame = Frame::Telemetry(Telemetry {
        app_id: AppId::new("app").unwrap(),
        seq: 1,
        topic: "t".into(),
        payload: b"before".to_vec(),
    });
    raw.send(&frame).await;
    let before = tokio::time::timeout(T, telemetry.next()).await.unwrap();
    assert_eq!(&before.unwrap().payload[..], b"before");

    call(
        &system.client,
        &DecommissionDevice {
            device_id: device.clone(),
            reason: "stolen".into(),
        },
        T,
    )
    .await
    .unwrap();
    // The gateway says so and closes; what the device sends after that goes nowhere.
    let mut answer = Vec::new();
    while let Some(frame) = raw.next().await {
        let rejected =
            matches!(&frame, Frame::Rejected(r) if r.reason == RejectReason::Decommissioned);
        answer.push(frame);
        if rejected {
            break;
        }
    }
    assert!(
        matches!(answer.last(), Some(Frame::Rejected(_))),
        "{answer:?}"
    );
    raw.send_raw(&encode_to_vec(&frame).unwrap()).await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), telemetry.next()).await;
    assert!(leaked.is_err(), "{leaked:?}");
    let events = system
        .wait_events(&AggregateId::Device(device), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDisconnected(_)))
        })
        .await;
    assert!(
        events.iter().any(
            |e| matches!(e, Event::DeviceDisconnected(d) if d.reason == "decommissioned: stolen")
        ),
        "{events:?}"
    );
    // And it cannot come back.
    let mut again = system.sim_to(vec![gateway.tls_addr], key);
    let status = again.wait_for(|s| s.last_close.is_some(), T).await.unwrap();
    assert!(
        matches!(&status.last_close, Some(CloseReason::Rejected(r)) if r.reason == RejectReason::Decommissioned),
        "{status:?}"
    );
    again.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_replaced_sessions_late_disconnect_leaves_the_device_online() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let device = system.register_key("twice", &key, &[]).await;
    let mut old = RawDevice::authenticated(&system, gateway.tls_addr, key.clone()).await;
    let mut new = RawDevice::authenticated(&system, gateway.tls_addr, key).await;
    // The old session is closed by the gateway; the new one stays.
    let _ = old.drain().await;
    new.send(&Frame::Heartbeat(Heartbeat {
        seq: 1,
        uptime_ms: 1,
    }))
    .await;
    assert!(matches!(new.next().await, Some(Frame::HeartbeatAck(_))));
    let events = system
        .wait_events(&AggregateId::Device(device), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDisconnected(_)))
        })
        .await;
    let sessions: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::DeviceConnected(c) => c.session_id.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(sessions.len(), 2, "{events:?}");
    assert_ne!(sessions[0], sessions[1]);
    // Folded as every view folds them, in log order, whatever order the gateway wrote them.
    let (mut gateway_now, mut session_now) = (None, None);
    for event in &events {
        match event {
            Event::DeviceConnected(c) => {
                gateway_now = Some(c.gateway_id.clone());
                session_now = c.session_id.clone();
            }
            Event::DeviceDisconnected(d) => {
                assert_eq!(d.session_id.as_ref(), Some(&sessions[0]), "{d:?}");
                if d.ends_current(gateway_now.as_ref(), session_now.as_deref()) {
                    (gateway_now, session_now) = (None, None);
                }
            }
            _ => {}
        }
    }
    assert_eq!(session_now.as_ref(), Some(&sessions[1]), "{events:?}");
    assert_eq!(gateway_now, Some(gateway_id()));
    gateway.stop().await;
}

#[tokio::test]
async fn a_junk_flood_is_counted_and_does_not_crowd_out_a_forged_signature() {
    let system = System::start_services(Services::enrollment_only()).await;
    let mut config = quick_config();
    config.audit_window = Duration::from_secs(1);
    let gateway = system.start_gateway_with(config, 0).await;
    let addr = gateway.tls_addr;
    // 30 connections that are not TLS at all.
    for _ in 0..30 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(T, tcp.read_to_end(&mut sink)).await;
    }
    // Then one impersonation attempt: recorded in full all the same.
    let key = random_key();
    system.register_key("dev-1", &key, &[]).await;
    let mut raw = RawDevice::connect(&system, addr).await;
    let fp = raw.fingerprint;
    let (_, forged) = hand_made_auth(&mut raw, &key, Nonce([1; 32]), &random_key(), fp).await;
    raw.send(&Frame::Auth(Auth { signature: forged })).await;
    assert_eq!(rejected(&raw.drain().await), RejectReason::BadSignature);

    let audit = system
        .wait_events(&AggregateId::Gateway(gateway_id()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::RefusalsCounted(_)))
        })
        .await;
    let in_full: Vec<RejectReason> = audit
        .iter()
        .filter_map(|e| match e {
            Event::EnrollmentRefused(r) => Some(r.reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        in_full,
        [
            RejectReason::ProtocolViolation,
            RejectReason::ProtocolViolation,
            RejectReason::ProtocolViolation,
            RejectReason::BadSignature
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
        [(RejectReason::ProtocolViolation, "127.0.0.1".to_owned(), 27)]
    );
    gateway.stop().await;
}
