//! A signed release is checked on the device: trusted key, signature over exactly this
//! manifest, this app, these module bytes. Every field changed after signing is refused.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;

use ed25519_dalek::{Signer as _, SigningKey};
use sha2::Digest;
use wasmbed_device_core::release::verify_release;
use wasmbed_schemas::release::Refusal;
use wasmbed_schemas::release::{Capabilities, ReleaseManifest, SignedRelease};
use wasmbed_schemas::{AppId, PublicKey, Sha256, Signature};

const MODULE: &[u8] = b"\0asm\x01\0\0\0 not really a module, but bytes with a digest";

fn publisher() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn manifest() -> ReleaseManifest {
    ReleaseManifest {
        app_id: AppId::new("blink").unwrap(),
        version: 3,
        module_sha256: Sha256(sha2::Sha256::digest(MODULE).into()),
        module_len: MODULE.len() as u32,
        issued_at: 1_800_000_000,
        capabilities: Capabilities {
            imports: BTreeSet::from(["log".to_owned(), "publish".to_owned()]),
            topics: BTreeSet::from(["temp".to_owned()]),
            max_memory_pages: 2,
            max_fuel_per_tick: 100_000,
        },
    }
}

fn sign(manifest: ReleaseManifest, key: &SigningKey) -> SignedRelease {
    let signature = key.sign(&manifest.signed_bytes().unwrap()).to_bytes();
    SignedRelease {
        manifest,
        publisher: PublicKey(key.verifying_key().to_bytes()),
        signature: Signature(signature),
    }
}

fn trusted() -> Vec<PublicKey> {
    vec![PublicKey(publisher().verifying_key().to_bytes())]
}

fn blink() -> AppId {
    AppId::new("blink").unwrap()
}

#[test]
fn a_release_signed_by_a_trusted_key_for_these_bytes_is_accepted() {
    let release = sign(manifest(), &publisher());
    assert_eq!(
        verify_release(&release, &trusted(), &blink(), MODULE),
        Ok(())
    );
}

#[test]
fn every_field_changed_after_signing_is_refused() {
    let signed = sign(manifest(), &publisher());
    type Tamper = (&'static str, fn(&mut ReleaseManifest));
    let tampered: Vec<Tamper> = vec![
        ("app", |m| m.app_id = AppId::new("blinks").unwrap()),
        ("version", |m| m.version += 1),
        ("digest", |m| m.module_sha256.0[0] ^= 1),
        ("length", |m| m.module_len += 1),
        ("issued", |m| m.issued_at -= 1),
        ("pages", |m| m.capabilities.max_memory_pages += 1),
        ("fuel", |m| m.capabilities.max_fuel_per_tick *= 2),
        ("imports", |m| {
            m.capabilities.imports.insert("sleep".into());
        }),
        ("topics", |m| {
            m.capabilities.topics.insert("secrets".into());
        }),
    ];
    for (field, change) in tampered {
        let mut release = signed.clone();
        change(&mut release.manifest);
        assert_eq!(
            verify_release(&release, &trusted(), &blink(), MODULE),
            Err(Refusal::Signature),
            "{field}"
        );
    }
}

#[test]
fn untrusted_keys_bad_signatures_other_apps_and_other_bytes_are_refused() {
    let keys = trusted();
    let release = sign(manifest(), &publisher());
    let stranger = sign(manifest(), &SigningKey::from_bytes(&[9; 32]));
    let mut flipped = release.clone();
    flipped.signature.0[10] ^= 0x40;
    // A stranger's signature presented under the trusted key.
    let mut borrowed = stranger.clone();
    borrowed.publisher = release.publisher;
    let mut changed = MODULE.to_vec();
    changed[20] ^= 1;
    let longer = [MODULE, b"\0"].concat();
    let mut other_app = manifest();
    other_app.app_id = AppId::new("other").unwrap();
    let other_app = sign(other_app, &publisher());
    type Case<'a> = (
        &'a str,
        &'a SignedRelease,
        &'a [PublicKey],
        &'a [u8],
        Refusal,
    );
    let cases: Vec<Case> = vec![
        ("stranger", &stranger, &keys, MODULE, Refusal::UntrustedKey),
        ("no keys", &release, &[], MODULE, Refusal::UntrustedKey),
        ("flipped", &flipped, &keys, MODULE, Refusal::Signature),
        ("borrowed", &borrowed, &keys, MODULE, Refusal::Signature),
        ("one byte", &release, &keys, &changed, Refusal::Module),
        ("one more byte", &release, &keys, &longer, Refusal::Module),
        (
            "other app",
            &other_app,
            &keys,
            MODULE,
            Refusal::OtherRelease,
        ),
    ];
    for (name, release, keys, module, expected) in cases {
        assert_eq!(
            verify_release(release, keys, &blink(), module),
            Err(expected),
            "{name}"
        );
    }
}
