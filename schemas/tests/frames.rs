//! Frame codec: round trips, typed errors, and random input.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use proptest::prelude::*;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::frame::codec::{
    DecodeError, EncodeError, LEN_PREFIX, Malformation, decode, encode, encode_to_vec, frame_len,
};
use wasmbed_schemas::frame::*;
use wasmbed_schemas::release::rotation::{SignedRotation, TrustChange, TrustRotation};
use wasmbed_schemas::release::{Capabilities, Refusal, ReleaseManifest, SignedRelease};
use wasmbed_schemas::{AppId, DeviceId, GatewayId, Nonce, PublicKey, Sha256, Signature};

fn app() -> AppId {
    AppId::new("blink").unwrap()
}

fn release() -> SignedRelease {
    SignedRelease {
        manifest: ReleaseManifest {
            app_id: app(),
            version: 3,
            module_sha256: Sha256([5; 32]),
            module_len: 65536,
            issued_at: 1_800_000_000,
            capabilities: Capabilities {
                imports: ["log".to_owned(), "publish".to_owned()].into(),
                topics: ["temp".to_owned()].into(),
                max_memory_pages: 2,
                max_fuel_per_tick: 1_000_000,
            },
        },
        publisher: PublicKey([6; 32]),
        signature: Signature([7; 64]),
    }
}

/// One of every frame variant.
fn every_frame() -> Vec<Frame> {
    let limits = Limits {
        fuel_per_invocation: 1_000_000,
        max_memory_pages: 2,
        tick_interval_ms: 1000,
    };
    vec![
        Frame::Hello(Hello {
            public_key: PublicKey([1; 32]),
            nonce: Nonce([2; 32]),
            firmware: "wasmbed-fw 0.1.0".into(),
            enrollment_token: Some("pair-123".into()),
        }),
        Frame::Challenge(Challenge {
            gateway_id: GatewayId::new("gw-1").unwrap(),
            nonce: Nonce([3; 32]),
        }),
        Frame::Auth(Auth {
            signature: Signature([4; 64]),
        }),
        Frame::Welcome(Welcome {
            device_id: DeviceId::new("dev-1").unwrap(),
            heartbeat_interval_ms: 5000,
            max_frame_len: MAX_FRAME_LEN as u32,
        }),
        Frame::Rejected(Rejected {
            reason: RejectReason::BadSignature,
            message: "signature does not verify".into(),
        }),
        Frame::Heartbeat(Heartbeat {
            seq: 7,
            uptime_ms: 123_456,
        }),
        Frame::HeartbeatAck(HeartbeatAck { seq: 7 }),
        Frame::Telemetry(Telemetry {
            app_id: app(),
            seq: 42,
            topic: "temperature".into(),
            payload: vec![0, 1, 2, 255],
        }),
        Frame::Log(Log {
            level: LogLevel::Warn,
            app_id: None,
            message: "dhcp lease renewed".into(),
        }),
        Frame::ModuleBegin(ModuleBegin {
            app_id: app(),
            version: 3,
            sha256: Sha256([5; 32]),
            total_len: 65536,
            offset: 8192,
        }),
        Frame::ModuleChunk(ModuleChunk {
            app_id: app(),
            offset: 8192,
            data: vec![0xab; MODULE_CHUNK_LEN],
        }),
        Frame::ModuleCommit(ModuleCommit {
            app_id: app(),
            sha256: Sha256([5; 32]),
        }),
        Frame::ModuleAck(ModuleAck {
            app_id: app(),
            next_offset: 16384,
            verified: false,
        }),
        Frame::Deploy(Deploy {
            app_id: app(),
            version: 3,
            sha256: Sha256([5; 32]),
            limits,
            config: Blob(b"{\"period\":1}".to_vec()),
            release: Some(Box::new(release())),
        }),
        Frame::Stop(Stop { app_id: app() }),
        Frame::AppStatus(AppStatus {
            app_id: app(),
            version: 3,
            state: AppState::Failed,
            fuel_used: 1_000_000,
            memory_pages: 1,
            detail: Some("fuel exhausted".into()),
            refusal: Some(Refusal::UntrustedKey),
            denied_publishes: 3,
        }),
        Frame::DeviceInfo(DeviceInfo {
            mcu: "Mps2An385".into(),
            firmware: "wasmbed-fw 0.1.0".into(),
            app_ram_bytes: 131072,
            host_api_version: 1,
            trust_serial: 4,
        }),
        Frame::Error(ErrorFrame {
            code: FrameErrorCode::DigestMismatch,
            app_id: Some(app()),
            message: "sha256 mismatch".into(),
        }),
        Frame::GoAway(GoAway {
            reason: "gateway shutting down".into(),
            reconnect_after_ms: 500,
        }),
        Frame::TrustUpdate(Box::new(SignedRotation {
            rotation: TrustRotation {
                serial: 5,
                change: TrustChange::Revoke,
                key: PublicKey([8; 32]),
                issued_at: 1_800_000_001,
            },
            signer: PublicKey([6; 32]),
            signature: Signature([9; 64]),
        })),
    ]
}

#[test]
fn every_frame_round_trips() {
    for frame in every_frame() {
        let bytes = encode_to_vec(&frame).unwrap();
        assert_eq!(frame_len(&bytes), Ok(bytes.len()));
        let (back, used) = decode(&bytes).unwrap();
        assert_eq!(back, frame);
        assert_eq!(used, bytes.len());
    }
}

#[test]
fn frames_decode_one_after_another_from_a_stream() {
    let frames = every_frame();
    let mut stream = Vec::new();
    for f in &frames {
        encode(f, &mut stream).unwrap();
    }
    let mut rest = &stream[..];
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let (f, used) = decode(rest).unwrap();
        decoded.push(f);
        rest = &rest[used..];
    }
    assert_eq!(decoded, frames);
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    let bytes = encode_to_vec(&every_frame()[0]).unwrap();
    for cut in 0..bytes.len() {
        match decode(&bytes[..cut]) {
            Err(DecodeError::Incomplete { needed }) => assert_eq!(needed, {
                if cut < LEN_PREFIX {
                    LEN_PREFIX - cut
                } else {
                    bytes.len() - cut
                }
            }),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

/// A frame with a hand-made body.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn check(input: &[u8], expected: DecodeError) {
    assert_eq!(
        decode(input).map(|_| ()),
        Err(expected),
        "input {input:02x?}"
    );
}

#[test]
fn every_typed_error_is_reachable() {
    let valid = encode_to_vec(&Frame::Stop(Stop { app_id: app() })).unwrap();
    let body = &valid[LEN_PREFIX + 1..];

    check(&[0, 0], DecodeError::Incomplete { needed: 2 });
    let over = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    check(
        &over,
        DecodeError::Oversized {
            len: MAX_FRAME_LEN + 1,
        },
    );
    check(&framed(&[]), DecodeError::Truncated);
    let mut v2 = vec![2];
    v2.extend_from_slice(body);
    check(&framed(&v2), DecodeError::UnsupportedVersion(2));
    let mut cut = vec![PROTOCOL_VERSION];
    cut.extend_from_slice(&body[..body.len() - 1]);
    check(&framed(&cut), DecodeError::Truncated);
    check(
        &framed(&[PROTOCOL_VERSION, 0xc1]),
        DecodeError::Malformed(Malformation::ReservedMarker),
    );
    let mut deep = vec![PROTOCOL_VERSION];
    deep.extend_from_slice(&[0x91; 12]);
    deep.push(0);
    check(
        &framed(&deep),
        DecodeError::Malformed(Malformation::TooDeep),
    );
    let mut trailing = vec![PROTOCOL_VERSION];
    trailing.extend_from_slice(body);
    trailing.push(0);
    check(
        &framed(&trailing),
        DecodeError::Malformed(Malformation::TrailingBytes),
    );
    // Valid MessagePack, but a variant no one defined.
    check(
        &framed(&[PROTOCOL_VERSION, 0x81, 0xa4, b'N', b'o', b'p', b'e', 0xc0]),
        DecodeError::Malformed(Malformation::NotAFrame),
    );
    // A Stop frame whose app id is not a valid id.
    let mut stop = vec![PROTOCOL_VERSION, 0x81, 0xa4, b'S', b't', b'o', b'p', 0x91];
    stop.extend_from_slice(&rmp_serde::to_vec("Not.Valid").unwrap());
    check(
        &framed(&stop),
        DecodeError::Malformed(Malformation::NotAFrame),
    );
}

#[test]
fn oversized_frames_are_refused_by_the_encoder() {
    let frame = Frame::Telemetry(Telemetry {
        app_id: app(),
        seq: 1,
        topic: String::new(),
        payload: vec![0; MAX_FRAME_LEN],
    });
    let mut out = vec![9];
    assert!(matches!(
        encode(&frame, &mut out),
        Err(EncodeError::Oversized { .. })
    ));
    assert_eq!(out, [9], "a failed encode leaves the buffer as it was");
}

#[test]
fn the_wire_format_is_stable() {
    // Body length 14, version 1, {"Stop": ["blink"]}: a change here breaks deployed firmware.
    let bytes = encode_to_vec(&Frame::Stop(Stop { app_id: app() })).unwrap();
    assert_eq!(
        bytes,
        [
            0, 0, 0, 14, 1, 0x81, 0xa4, b'S', b't', b'o', b'p', 0x91, 0xa5, b'b', b'l', b'i', b'n',
            b'k'
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut v = vec![PROTOCOL_VERSION];
        v.extend_from_slice(&body);
        let _ = decode(&framed(&v));
    }

    #[test]
    fn mutated_frames_never_panic(index in 0usize..19, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let frames = every_frame();
        let mut bytes = encode_to_vec(&frames[index % frames.len()]).unwrap();
        for (at, value) in flips {
            let at = LEN_PREFIX + at % (bytes.len() - LEN_PREFIX);
            bytes[at] = value;
        }
        if let Ok((_, used)) = decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }
}

#[test]
fn the_codec_writes_and_reads_exactly_what_rmp_serde_does() {
    for frame in every_frame() {
        let ours = encode_to_vec(&frame).unwrap();
        let body = &ours[LEN_PREFIX + 1..];
        assert_eq!(body, rmp_serde::to_vec(&frame).unwrap(), "{}", frame.name());
        assert_eq!(rmp_serde::from_slice::<Frame>(body).unwrap(), frame);
        let mut theirs = ((rmp_serde::to_vec(&frame).unwrap().len() + 1) as u32)
            .to_be_bytes()
            .to_vec();
        theirs.push(PROTOCOL_VERSION);
        theirs.extend(rmp_serde::to_vec(&frame).unwrap());
        assert_eq!(decode(&theirs).unwrap().0, frame);
    }
}
