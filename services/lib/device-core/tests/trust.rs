//! The device as the judge: the trust chain it keeps, and what a signed release lets an app do,
//! driven through the agent with real example modules.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sha2::Digest;
use wasmbed_device_core::release::{
    RotationRefusal, TrustStore, manifest_for, sign_release, sign_rotation, verify_release,
};
use wasmbed_device_core::{Agent, AgentConfig};
use wasmbed_example_apps::{COUNTER, SENSOR};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::frame::*;
use wasmbed_schemas::release::rotation::{SignedRotation, TrustChange, TrustRotation};
use wasmbed_schemas::release::{Capabilities, Refusal, SignedRelease};
use wasmbed_schemas::{AppId, DeviceId, PublicKey, Sha256};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn public(k: &SigningKey) -> PublicKey {
    PublicKey(k.verifying_key().to_bytes())
}

fn rotation(
    serial: u32,
    change: TrustChange,
    subject: &SigningKey,
    by: &SigningKey,
) -> SignedRotation {
    sign_rotation(
        TrustRotation {
            serial,
            change,
            key: public(subject),
            issued_at: 1_800_000_000,
        },
        by,
    )
}

#[test]
fn rotations_apply_in_order_signed_by_a_key_trusted_before_them() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut store = TrustStore::new(4, vec![public(&a)]);
    let trust_b = rotation(5, TrustChange::Trust, &b, &a);
    let mut forged = rotation(6, TrustChange::Trust, &c, &a);
    forged.signature.0[0] ^= 1;
    type Case = (
        &'static str,
        SignedRotation,
        Result<(), RotationRefusal>,
        u32,
    );
    let cases: Vec<Case> = vec![
        (
            "a gap waits for what is missing",
            rotation(6, TrustChange::Trust, &c, &a),
            Err(RotationRefusal::Gap {
                expected: 5,
                got: 6,
            }),
            4,
        ),
        (
            "signed by a key not trusted yet",
            rotation(5, TrustChange::Trust, &c, &c),
            Err(RotationRefusal::UntrustedSigner),
            4,
        ),
        ("the next one", trust_b.clone(), Ok(()), 5),
        ("a repeat", trust_b, Err(RotationRefusal::Applied(5)), 5),
        (
            "a forged signature",
            forged,
            Err(RotationRefusal::Signature),
            5,
        ),
        (
            "the new key may sign the next",
            rotation(6, TrustChange::Revoke, &a, &b),
            Ok(()),
            6,
        ),
        (
            "the revoked key signs nothing",
            rotation(7, TrustChange::Trust, &c, &a),
            Err(RotationRefusal::UntrustedSigner),
            6,
        ),
        (
            "the last key stays",
            rotation(7, TrustChange::Revoke, &b, &b),
            Err(RotationRefusal::LastKey),
            6,
        ),
    ];
    for (name, r, expected, serial) in cases {
        assert_eq!(store.apply(&r), expected, "{name}");
        assert_eq!(store.serial(), serial, "{name}");
    }
    assert_eq!(store.keys(), [public(&b)]);
    let mut open = TrustStore::default();
    assert_eq!(
        open.apply(&rotation(1, TrustChange::Trust, &a, &a)),
        Err(RotationRefusal::Open)
    );
}

fn limits() -> Limits {
    Limits {
        fuel_per_invocation: 200_000,
        max_memory_pages: 2,
        tick_interval_ms: 100,
    }
}

fn caps(imports: &[&str], topics: &[&str]) -> Capabilities {
    Capabilities {
        imports: imports.iter().map(|s| (*s).to_owned()).collect(),
        topics: topics.iter().map(|s| (*s).to_owned()).collect(),
        max_memory_pages: 2,
        max_fuel_per_tick: 200_000,
    }
}

/// Everything the example apps import.
const ALL_IMPORTS: &[&str] = &["config", "device_id", "log", "now_ms", "publish"];

fn signed(module: &[u8], version: u32, caps: Capabilities, by: &SigningKey) -> SignedRelease {
    let manifest = manifest_for(
        AppId::new("blink").unwrap(),
        version,
        module,
        caps,
        1_800_000_000,
    );
    sign_release(manifest, by).unwrap()
}

#[test]
fn admission_refuses_every_way_a_release_can_be_wrong() {
    let (a, stranger) = (key(1), key(9));
    let mut store = TrustStore::new(1, vec![public(&a)]);
    let b = key(2);
    store
        .apply(&rotation(2, TrustChange::Trust, &b, &a))
        .unwrap();
    let revoked_release = signed(COUNTER, 1, caps(ALL_IMPORTS, &["count"]), &b);
    store
        .apply(&rotation(3, TrustChange::Revoke, &b, &a))
        .unwrap();
    let app = AppId::new("blink").unwrap();
    let good = signed(COUNTER, 1, caps(ALL_IMPORTS, &["count"]), &a);
    let mut tampered = COUNTER.to_vec();
    tampered[COUNTER.len() / 2] ^= 1;
    let mut greedy = limits();
    greedy.fuel_per_invocation += 1;
    let mut roomy = limits();
    roomy.max_memory_pages = 3;
    type Case<'a> = (
        &'a str,
        Option<&'a SignedRelease>,
        &'a [u8],
        u32,
        Limits,
        Option<Refusal>,
    );
    let cases: Vec<Case> = vec![
        (
            "signed and matching",
            Some(&good),
            COUNTER,
            1,
            limits(),
            None,
        ),
        (
            "unsigned",
            None,
            COUNTER,
            1,
            limits(),
            Some(Refusal::Unsigned),
        ),
        (
            "one byte changed",
            Some(&good),
            &tampered,
            1,
            limits(),
            Some(Refusal::Module),
        ),
        (
            "other module",
            Some(&good),
            SENSOR,
            1,
            limits(),
            Some(Refusal::Module),
        ),
        (
            "other version",
            Some(&good),
            COUNTER,
            2,
            limits(),
            Some(Refusal::OtherRelease),
        ),
        (
            "more fuel",
            Some(&good),
            COUNTER,
            1,
            greedy,
            Some(Refusal::Limits),
        ),
        (
            "more memory",
            Some(&good),
            COUNTER,
            1,
            roomy,
            Some(Refusal::Limits),
        ),
        (
            "revoked key",
            Some(&revoked_release),
            COUNTER,
            1,
            limits(),
            Some(Refusal::RevokedKey),
        ),
    ];
    let strange = signed(COUNTER, 1, caps(ALL_IMPORTS, &["count"]), &stranger);
    let cases = cases.into_iter().chain([(
        "untrusted key",
        Some(&strange),
        COUNTER,
        1,
        limits(),
        Some(Refusal::UntrustedKey),
    )]);
    for (name, release, module, version, limits, expected) in cases {
        let verdict = store.admit(release, &app, version, module, &limits);
        assert_eq!(verdict.err(), expected, "{name}");
    }
    // An open device (no keys) runs whatever it is given, unrestricted.
    assert_eq!(
        TrustStore::default().admit(None, &app, 1, COUNTER, &limits()),
        Ok(None)
    );
}

fn agent(publishers: Vec<PublicKey>) -> Agent {
    let mut agent = Agent::new(AgentConfig {
        mcu: "Sim".into(),
        firmware: "test".into(),
        app_ram_bytes: 256 * 1024,
        max_module_len: 256 * 1024,
        value_stack_bytes: 1024 * 1024,
        status_interval_ms: 60_000,
        publishers,
        trust_serial: 1,
    });
    agent.on_established(&DeviceId::new("dev-1").unwrap());
    agent.take_frames();
    agent
}

/// Transfers `module` and deploys it as version 1 with `release`; the frames the agent sent.
fn run(agent: &mut Agent, module: &[u8], release: Option<SignedRelease>) -> Vec<Frame> {
    let app = AppId::new("blink").unwrap();
    let sha256 = Sha256(sha2::Sha256::digest(module).into());
    agent.handle_frame(
        Frame::ModuleBegin(ModuleBegin {
            app_id: app.clone(),
            version: 1,
            sha256,
            total_len: module.len() as u32,
            offset: 0,
        }),
        0,
    );
    for (i, piece) in module.chunks(MODULE_CHUNK_LEN).enumerate() {
        agent.handle_frame(
            Frame::ModuleChunk(ModuleChunk {
                app_id: app.clone(),
                offset: (i * MODULE_CHUNK_LEN) as u32,
                data: piece.to_vec(),
            }),
            0,
        );
    }
    agent.handle_frame(
        Frame::ModuleCommit(ModuleCommit {
            app_id: app.clone(),
            sha256,
        }),
        0,
    );
    agent.take_frames();
    agent.handle_frame(
        Frame::Deploy(Deploy {
            app_id: app,
            version: 1,
            sha256,
            limits: limits(),
            config: Blob::default(),
            release: release.map(Box::new),
        }),
        0,
    );
    agent.poll(0);
    agent.take_frames()
}

fn failure(frames: &[Frame]) -> Option<(Option<Refusal>, String)> {
    frames.iter().find_map(|f| match f {
        Frame::AppStatus(s) if s.state == AppState::Failed => {
            Some((s.refusal, s.detail.clone().unwrap_or_default()))
        }
        _ => None,
    })
}

fn telemetry_topics(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Telemetry(t) => Some(t.topic.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_signed_release_runs_and_a_module_changed_after_signing_does_not() {
    let a = key(1);
    let release = signed(COUNTER, 1, caps(ALL_IMPORTS, &["count"]), &a);
    let mut device = agent(vec![public(&a)]);
    let frames = run(&mut device, COUNTER, Some(release.clone()));
    assert_eq!(failure(&frames), None);
    assert_eq!(telemetry_topics(&frames), ["count"]);

    // The same manifest and signature, the module with one byte changed (and its own digest,
    // as an attacker on the downlink would send it).
    let mut tampered = COUNTER.to_vec();
    let at = tampered.len() - 1;
    tampered[at] ^= 0x01;
    let mut device = agent(vec![public(&a)]);
    let frames = run(&mut device, &tampered, Some(release));
    assert_eq!(failure(&frames).map(|f| f.0), Some(Some(Refusal::Module)));
    assert!(telemetry_topics(&frames).is_empty(), "nothing of it ran");
    // Unsigned, on a device that trusts a key: refused.
    let mut device = agent(vec![public(&a)]);
    let frames = run(&mut device, COUNTER, None);
    assert_eq!(failure(&frames).map(|f| f.0), Some(Some(Refusal::Unsigned)));
}

#[test]
fn an_import_the_manifest_does_not_grant_is_refused_at_load() {
    let a = key(1);
    let without_log = ["config", "device_id", "now_ms", "publish"];
    let release = signed(SENSOR, 1, caps(&without_log, &["temperature"]), &a);
    let mut device = agent(vec![public(&a)]);
    let frames = run(&mut device, SENSOR, Some(release));
    let (refusal, detail) = failure(&frames).unwrap();
    assert_eq!(refusal, Some(Refusal::Capability));
    assert!(detail.contains("wasmbed.log"), "{detail}");
}

#[test]
fn a_publish_on_an_undeclared_topic_gets_an_error_code_and_is_counted_not_sent() {
    let a = key(1);
    // COUNTER publishes on `count`; this release grants only `temperature`.
    let release = signed(COUNTER, 1, caps(ALL_IMPORTS, &["temperature"]), &a);
    let mut device = agent(vec![public(&a)]);
    let mut frames = run(&mut device, COUNTER, Some(release));
    for now in [100, 200, 300] {
        device.poll(now);
        frames.extend(device.take_frames());
    }
    assert_eq!(failure(&frames), None, "the app keeps running");
    assert!(telemetry_topics(&frames).is_empty());
    device.poll(60_000);
    let status = device
        .take_frames()
        .into_iter()
        .find_map(|f| match f {
            Frame::AppStatus(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(status.state, AppState::Running);
    assert!(status.denied_publishes >= 4, "{status:?}");
}

#[test]
fn a_rotation_is_answered_with_the_serial_held_and_changes_what_runs() {
    let (a, b) = (key(1), key(2));
    let mut device = agent(vec![public(&a)]);
    let by_b = signed(COUNTER, 1, caps(ALL_IMPORTS, &["count"]), &b);
    let frames = run(&mut device, COUNTER, Some(by_b.clone()));
    assert_eq!(
        failure(&frames).map(|f| f.0),
        Some(Some(Refusal::UntrustedKey))
    );
    device.handle_frame(
        Frame::TrustUpdate(Box::new(rotation(2, TrustChange::Trust, &b, &a))),
        0,
    );
    let info = device.take_frames();
    assert!(
        matches!(
            info.as_slice(),
            [Frame::DeviceInfo(DeviceInfo {
                trust_serial: 2,
                ..
            })]
        ),
        "{info:?}"
    );
    let frames = run(&mut device, COUNTER, Some(by_b));
    assert_eq!(failure(&frames), None);
    // A rotation out of order is not applied; the answer still says where the device is.
    device.handle_frame(
        Frame::TrustUpdate(Box::new(rotation(9, TrustChange::Revoke, &a, &b))),
        0,
    );
    let frames = device.take_frames();
    assert!(frames.iter().any(|f| matches!(
        f,
        Frame::DeviceInfo(DeviceInfo {
            trust_serial: 2,
            ..
        })
    )));
}

fn arb_caps() -> impl Strategy<Value = Capabilities> {
    (
        proptest::sample::subsequence(ALL_IMPORTS.to_vec(), 0..=ALL_IMPORTS.len()),
        proptest::collection::btree_set("[a-z]{1,12}", 0..4),
        1u32..16,
        1u64..10_000_000,
    )
        .prop_map(|(imports, topics, pages, fuel)| Capabilities {
            imports: imports.into_iter().map(str::to_owned).collect(),
            topics,
            max_memory_pages: pages,
            max_fuel_per_tick: fuel,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any manifest signed verifies; any one field changed afterwards, or any bit of the
    /// signature, does not.
    #[test]
    fn any_field_changed_after_signing_is_refused(
        version in 1u32..1000,
        issued in 0u64..u64::MAX,
        caps in arb_caps(),
        field in 0usize..9,
        bit in 0usize..512,
    ) {
        let a = key(1);
        let app = AppId::new("blink").unwrap();
        let release = sign_release(manifest_for(app.clone(), version, COUNTER, caps, issued), &a)
            .unwrap();
        let trusted = [public(&a)];
        prop_assert_eq!(verify_release(&release, &trusted, &app, COUNTER), Ok(()));
        let mut bad = release.clone();
        let m = &mut bad.manifest;
        match field {
            0 => m.app_id = AppId::new("blinks").unwrap(),
            1 => m.version ^= 1,
            2 => m.module_sha256.0[bit % 32] ^= 1,
            3 => m.module_len ^= 1,
            4 => m.issued_at ^= 1,
            5 => m.capabilities.max_memory_pages ^= 1,
            6 => m.capabilities.max_fuel_per_tick ^= 1,
            7 => {
                m.capabilities.topics.insert("zz-undeclared".to_owned());
            }
            _ => bad.signature.0[bit / 8] ^= 1 << (bit % 8),
        }
        prop_assert_eq!(
            verify_release(&bad, &trusted, &app, COUNTER),
            Err(Refusal::Signature)
        );
        // And the release survives the device link and JSON unchanged.
        let frame = Frame::Deploy(Deploy {
            app_id: app,
            version,
            sha256: release.manifest.module_sha256,
            limits: limits(),
            config: Blob::default(),
            release: Some(Box::new(release.clone())),
        });
        let bytes = wasmbed_schemas::frame::codec::encode_to_vec(&frame).unwrap();
        prop_assert_eq!(wasmbed_schemas::frame::codec::decode(&bytes).unwrap().0, frame);
        let json = serde_json::to_vec(&release).unwrap();
        prop_assert_eq!(serde_json::from_slice::<SignedRelease>(&json).unwrap(), release);
    }
}
