//! The device session driven in memory against a hand-played gateway.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ed25519_dalek::{SigningKey, Verifier, VerifyingKey};
use wasmbed_device_core::{CloseReason, SendError, Session, SessionConfig, SessionEvent};
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::*;
use wasmbed_schemas::{AppId, DeviceId, GatewayId, Nonce, Sha256};

const FINGERPRINT: Sha256 = Sha256([0xf1; 32]);

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (f, used) = decode(rest).unwrap();
        out.push(f);
        rest = &rest[used..];
    }
    out
}

fn gateway() -> GatewayId {
    GatewayId::new("gw-1").unwrap()
}

/// A session brought to `Established` at t=0, heartbeat interval 1000 ms.
fn established() -> Session<SigningKey> {
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    s.take_outbound();
    let challenge = Frame::Challenge(Challenge {
        gateway_id: gateway(),
        nonce: Nonce([2; 32]),
    });
    s.handle_input(&encode_to_vec(&challenge).unwrap(), 0);
    s.take_outbound();
    let welcome = Frame::Welcome(Welcome {
        device_id: DeviceId::new("dev-1").unwrap(),
        heartbeat_interval_ms: 1000,
        max_frame_len: MAX_FRAME_LEN as u32,
    });
    s.handle_input(&encode_to_vec(&welcome).unwrap(), 0);
    assert!(s.is_established());
    assert!(matches!(
        s.poll_event(),
        Some(SessionEvent::Established { .. })
    ));
    s
}

#[test]
fn the_device_signs_a_transcript_bound_to_nonces_gateway_and_certificate() {
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    let hello = frames(&s.take_outbound());
    let Frame::Hello(hello) = &hello[0] else {
        panic!("{hello:?}")
    };
    assert_eq!(hello.public_key.0, key().verifying_key().to_bytes());
    assert_eq!(hello.nonce, Nonce([1; 32]));

    let challenge = Challenge {
        gateway_id: gateway(),
        nonce: Nonce([2; 32]),
    };
    s.handle_input(
        &encode_to_vec(&Frame::Challenge(challenge.clone())).unwrap(),
        5,
    );
    let auth = frames(&s.take_outbound());
    let Frame::Auth(auth) = &auth[0] else {
        panic!("{auth:?}")
    };
    let verifying = VerifyingKey::from_bytes(&hello.public_key.0).unwrap();
    let signature = ed25519_dalek::Signature::from_bytes(&auth.signature.0);
    let transcript = auth_transcript(&hello.nonce, &challenge.nonce, &FINGERPRINT, &gateway());
    verifying.verify(&transcript, &signature).unwrap();
    // Bound to the certificate: the same signature fails for another fingerprint.
    let other = auth_transcript(&hello.nonce, &challenge.nonce, &Sha256([0; 32]), &gateway());
    assert!(verifying.verify(&other, &signature).is_err());
}

#[test]
fn frames_split_across_reads_are_reassembled() {
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    s.take_outbound();
    let bytes = encode_to_vec(&Frame::Challenge(Challenge {
        gateway_id: gateway(),
        nonce: Nonce([2; 32]),
    }))
    .unwrap();
    for byte in &bytes {
        s.handle_input(std::slice::from_ref(byte), 1);
    }
    assert!(matches!(frames(&s.take_outbound())[0], Frame::Auth(_)));
}

#[test]
fn heartbeats_go_out_on_schedule_and_silence_closes_the_session() {
    let mut s = established();
    assert_eq!(s.poll_timeout(), Some(1000));
    s.handle_timeout(1000);
    assert!(matches!(
        frames(&s.take_outbound())[..],
        [Frame::Heartbeat(Heartbeat { seq: 1, .. })]
    ));
    s.handle_input(
        &encode_to_vec(&Frame::HeartbeatAck(HeartbeatAck { seq: 1 })).unwrap(),
        1001,
    );
    s.handle_timeout(2000);
    assert!(matches!(
        frames(&s.take_outbound())[..],
        [Frame::Heartbeat(Heartbeat { seq: 2, .. })]
    ));
    // Nothing heard since 1001: closed at 1001 + 3 × 1000.
    s.handle_timeout(3000);
    s.handle_timeout(4000);
    assert!(!s.is_closed());
    s.handle_timeout(4001);
    assert!(s.is_closed());
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        [SessionEvent::Closed(CloseReason::HeartbeatTimeout)]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn bytes_still_arriving_keep_a_silent_session_open() {
    let mut s = established();
    // A large frame trickles in: no whole frame for 3,500 ms, but bytes every 500 ms.
    for at in (500..=3500).step_by(500) {
        s.note_activity(at);
        s.handle_timeout(at);
        s.take_outbound();
        assert!(!s.is_closed(), "closed at {at}");
    }
    // Then nothing: silence counts from the last bytes.
    s.handle_timeout(6499);
    assert!(!s.is_closed());
    s.handle_timeout(6500);
    assert!(s.is_closed());
    // Activity never moves the clock back.
    let mut s = established();
    s.note_activity(2000);
    s.note_activity(10);
    s.handle_timeout(4999);
    assert!(!s.is_closed());
}

#[test]
fn no_welcome_in_time_closes_the_session() {
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        100,
    );
    assert_eq!(s.poll_timeout(), Some(10_100));
    s.handle_timeout(10_099);
    assert!(!s.is_closed());
    s.handle_timeout(10_100);
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::AuthTimeout))
    );
}

#[test]
fn rejection_go_away_and_garbage_close_the_session_with_their_reason() {
    let rejected = Rejected {
        reason: RejectReason::UnknownDevice,
        message: "unknown key".into(),
    };
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    s.handle_input(
        &encode_to_vec(&Frame::Rejected(rejected.clone())).unwrap(),
        1,
    );
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::Rejected(rejected)))
    );

    let mut s = established();
    let go_away = GoAway {
        reason: "restart".into(),
        reconnect_after_ms: 250,
    };
    s.handle_input(&encode_to_vec(&Frame::GoAway(go_away.clone())).unwrap(), 1);
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::GoAway(go_away)))
    );

    let mut s = established();
    s.handle_input(&[0, 0, 0, 2, 9, 9], 1);
    assert!(matches!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::ProtocolError(_)))
    ));
    // Input after close is ignored.
    s.handle_input(&[1, 2, 3], 2);
    assert_eq!(s.poll_event(), None);
}

#[test]
fn a_frame_out_of_order_is_a_protocol_error() {
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    let early = Frame::Stop(Stop {
        app_id: AppId::new("a").unwrap(),
    });
    s.handle_input(&encode_to_vec(&early).unwrap(), 1);
    assert!(matches!(
        s.poll_event(),
        Some(SessionEvent::Closed(CloseReason::ProtocolError(_)))
    ));
}

#[test]
fn application_frames_flow_only_once_established() {
    let telemetry = Frame::Telemetry(Telemetry {
        app_id: AppId::new("sensor").unwrap(),
        seq: 1,
        topic: "t".into(),
        payload: vec![1, 2, 3],
    });
    let mut s = Session::new(
        SessionConfig::default(),
        key(),
        Nonce([1; 32]),
        FINGERPRINT,
        0,
    );
    assert_eq!(s.send(&telemetry), Err(SendError::NotEstablished));

    let mut s = established();
    s.send(&telemetry).unwrap();
    assert_eq!(frames(&s.take_outbound()), [telemetry]);
    let huge = Frame::Telemetry(Telemetry {
        app_id: AppId::new("sensor").unwrap(),
        seq: 2,
        topic: String::new(),
        payload: vec![0; MAX_FRAME_LEN],
    });
    assert_eq!(s.send(&huge), Err(SendError::TooLarge));
    // Frames for the application surface as events.
    let stop = Frame::Stop(Stop {
        app_id: AppId::new("sensor").unwrap(),
    });
    s.handle_input(&encode_to_vec(&stop).unwrap(), 10);
    assert_eq!(s.poll_event(), Some(SessionEvent::Frame(stop)));
}
