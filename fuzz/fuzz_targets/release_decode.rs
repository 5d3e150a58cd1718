//! Signed releases and trust rotations as the tools, the deployer and the device read them:
//! JSON (the `.release.json` file, commands, events) and MessagePack (inside a `Deploy` or
//! `TrustUpdate` frame). Any bytes are an error or a value; a decoded release is checked like a
//! device checks it without panicking, and re-encodes to the same value; a decoded rotation is
//! applied to a trust store without panicking, and never changes it unless it verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbed_device_core::release::{TrustStore, verify_release};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::frame::msgpack;
use wasmbed_schemas::frame::scan::scan;
use wasmbed_schemas::release::SignedRelease;
use wasmbed_schemas::release::rotation::SignedRotation;
use wasmbed_schemas::{AppId, PublicKey};

fn check(release: &SignedRelease) {
    let trusted = [release.publisher, PublicKey([7; 32])];
    let app = release.manifest.app_id.clone();
    let _ = release.manifest.signed_bytes();
    let _ = verify_release(release, &trusted, &app, b"\0asm\x01\0\0\0");
    let store = TrustStore::new(1, trusted.to_vec());
    let limits = Limits {
        fuel_per_invocation: 1,
        max_memory_pages: 1,
        tick_interval_ms: 10,
    };
    let other = AppId::new("other").expect("a valid id");
    let _ = store.admit(Some(release), &other, 1, b"", &limits);
}

fn apply(rotation: &SignedRotation) {
    let mut store = TrustStore::new(1, vec![rotation.signer]);
    let before = store.clone();
    if store.apply(rotation).is_err() {
        assert_eq!(store, before, "a refused rotation changed the store");
    }
}

fuzz_target!(|data: &[u8]| {
    // The device reads MessagePack only after the frame scan bounded its nesting.
    let scanned = scan(data).is_ok();
    if let Ok(release) = serde_json::from_slice::<SignedRelease>(data) {
        check(&release);
        let json = serde_json::to_vec(&release).expect("a release encodes");
        let back: SignedRelease = serde_json::from_slice(&json).expect("and decodes");
        assert_eq!(back, release);
    }
    if let Some(Ok(release)) = scanned.then(|| msgpack::from_slice::<SignedRelease>(data)) {
        check(&release);
        let mut bytes = Vec::new();
        msgpack::to_vec(&release, &mut bytes).expect("a release encodes");
        let back: SignedRelease = msgpack::from_slice(&bytes).expect("and decodes");
        assert_eq!(back, release);
    }
    if let Ok(rotation) = serde_json::from_slice::<SignedRotation>(data) {
        apply(&rotation);
    }
    if let Some(Ok(rotation)) = scanned.then(|| msgpack::from_slice::<SignedRotation>(data)) {
        apply(&rotation);
    }
});
