//! A signed release: the manifest a publisher signs for one module, and the exact bytes the
//! signature covers.
//!
//! The signed bytes are not a serialization of the manifest but a fixed layout, so every
//! implementation (the deployer, the simulator, the firmware, a third-party tool) computes the
//! same bytes from the same fields:
//!
//! ```text
//! RELEASE_DOMAIN
//! ‖ u8 length ‖ app id
//! ‖ u32 version ‖ 32 bytes module SHA-256 ‖ u32 module length
//! ‖ u64 issued at (Unix seconds)
//! ‖ u32 max memory pages ‖ u64 max fuel per tick
//! ‖ u16 count ‖ (u8 length ‖ host function name)…   sorted, unique
//! ‖ u16 count ‖ (u8 length ‖ telemetry topic)…      sorted, unique
//! ```
//!
//! Integers are big-endian. Sets are kept sorted and unique by their type, so two manifests that
//! grant the same capabilities sign the same bytes. Each set holds at most [`MAX_GRANTS`] names
//! of 1 to [`MAX_GRANT_LEN`] bytes, so a signed release always fits one `Deploy` frame.
//!
//! The signed release travels as a JSON file next to the module (`<module>.release.json`, see
//! the JSON Schema `schemas/json/release.json`), in commands and events as JSON, and to the
//! device inside the `Deploy` frame. [`rotation`] is how the keys a device trusts change.

pub mod rotation;

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::bytes::{PublicKey, Sha256, Signature};
use crate::ids::AppId;

/// Domain-separation prefix of the signed bytes.
pub const RELEASE_DOMAIN: &[u8] = b"wasmbed-release-v1\0";

/// Most host functions or topics one manifest may list.
pub const MAX_GRANTS: usize = 32;

/// Longest host function name or topic a manifest may grant, bytes (a topic's own limit).
pub const MAX_GRANT_LEN: usize = crate::host_api::MAX_TOPIC_LEN;

/// Why a device, or the deployer on its behalf, refuses to run a release. Stable: it is what a
/// `DeploymentFailed` event's `refusal` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The device trusts publisher keys, and this module came without a signed release.
    #[error("the module is not signed and this device runs only signed releases")]
    Unsigned,
    /// The publisher key is not one the device trusts.
    #[error("signed by a key this device does not trust")]
    UntrustedKey,
    /// The publisher key was trusted once and has been revoked.
    #[error("signed by a key that was revoked")]
    RevokedKey,
    /// The signature does not verify over the manifest.
    #[error("the signature does not match the manifest")]
    Signature,
    /// The manifest has no signed bytes (too many or malformed grants).
    #[error("the manifest is malformed")]
    Manifest,
    /// The manifest is for another application or version.
    #[error("the manifest is for another application or version")]
    OtherRelease,
    /// The module is not the one the manifest names (digest or length).
    #[error("the module is not the one the manifest was signed for")]
    Module,
    /// The module imports a host function the manifest does not grant, or the device does not
    /// offer.
    #[error("the module imports a host function its manifest does not grant")]
    Capability,
    /// The limits asked for exceed what the manifest allows.
    #[error("the limits exceed what the manifest allows")]
    Limits,
}

/// What a module may do on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct Capabilities {
    /// The `wasmbed` host functions it may import.
    pub imports: BTreeSet<String>,
    /// The telemetry topics it may publish on.
    pub topics: BTreeSet<String>,
    /// At most this many 64 KiB memory pages.
    pub max_memory_pages: u32,
    /// At most this much fuel per call.
    pub max_fuel_per_tick: u64,
}

/// What a publisher vouches for: this module, as this version of this app, with these
/// capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct ReleaseManifest {
    /// The application.
    pub app_id: AppId,
    /// Its version.
    pub version: u32,
    /// SHA-256 of the module.
    pub module_sha256: Sha256,
    /// Length of the module in bytes.
    pub module_len: u32,
    /// When it was signed (Unix seconds).
    pub issued_at: u64,
    /// What the module may do.
    pub capabilities: Capabilities,
}

/// A manifest with its publisher's key and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct SignedRelease {
    /// What is vouched for.
    pub manifest: ReleaseManifest,
    /// The publisher's Ed25519 public key.
    pub publisher: PublicKey,
    /// Its signature over [`ReleaseManifest::signed_bytes`].
    pub signature: Signature,
}

/// Why a manifest has no signed bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// More host functions or topics than [`MAX_GRANTS`].
    #[error("a manifest lists at most {MAX_GRANTS} host functions and {MAX_GRANTS} topics")]
    TooManyGrants,
    /// A name or topic is empty or longer than [`MAX_GRANT_LEN`] bytes.
    #[error("a granted name or topic must be 1 to {MAX_GRANT_LEN} bytes: {0:?}")]
    BadGrant(String),
}

impl ReleaseManifest {
    /// The bytes the publisher signs (see the module documentation for the layout).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let caps = &self.capabilities;
        let id = self.app_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(RELEASE_DOMAIN);
        // Ids are at most 63 bytes.
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.module_sha256.as_bytes());
        out.extend_from_slice(&self.module_len.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&caps.max_memory_pages.to_be_bytes());
        out.extend_from_slice(&caps.max_fuel_per_tick.to_be_bytes());
        for set in [&caps.imports, &caps.topics] {
            if set.len() > MAX_GRANTS {
                return Err(ManifestError::TooManyGrants);
            }
            out.extend_from_slice(&(set.len() as u16).to_be_bytes());
            for name in set {
                let bytes = name.as_bytes();
                if bytes.is_empty() || bytes.len() > MAX_GRANT_LEN {
                    return Err(ManifestError::BadGrant(name.clone()));
                }
                out.push(bytes.len() as u8);
                out.extend_from_slice(bytes);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;
    use alloc::vec;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn manifest() -> ReleaseManifest {
        ReleaseManifest {
            app_id: AppId::new("blink").unwrap_or_else(|_| unreachable!()),
            version: 3,
            module_sha256: Sha256([0xab; 32]),
            module_len: 0x0102,
            issued_at: 1_800_000_000,
            capabilities: Capabilities {
                imports: names(&["publish", "log"]),
                topics: names(&["temp"]),
                max_memory_pages: 2,
                max_fuel_per_tick: 100_000,
            },
        }
    }

    #[test]
    fn the_signed_bytes_are_pinned() {
        let mut expected = RELEASE_DOMAIN.to_vec();
        expected.extend_from_slice(&[5]);
        expected.extend_from_slice(b"blink");
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[0, 0, 1, 2]);
        expected.extend_from_slice(&1_800_000_000u64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(&100_000u64.to_be_bytes());
        // Sorted: "log" before "publish", whatever order they were given in.
        expected.extend_from_slice(&[0, 2, 3]);
        expected.extend_from_slice(b"log");
        expected.extend_from_slice(&[7]);
        expected.extend_from_slice(b"publish");
        expected.extend_from_slice(&[0, 1, 4]);
        expected.extend_from_slice(b"temp");
        assert_eq!(manifest().signed_bytes(), Ok(expected));
    }

    #[test]
    fn every_field_changes_the_signed_bytes() {
        let base = manifest().signed_bytes();
        let mut variants = vec![manifest(); 9];
        variants[0].app_id = AppId::new("blinks").unwrap_or_else(|_| unreachable!());
        variants[1].version = 4;
        variants[2].module_sha256.0[31] ^= 1;
        variants[3].module_len += 1;
        variants[4].issued_at += 1;
        variants[5].capabilities.max_memory_pages += 1;
        variants[6].capabilities.max_fuel_per_tick += 1;
        variants[7].capabilities.imports.insert("sleep".to_owned());
        variants[8].capabilities.topics = names(&["temp", "humidity"]);
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(variant.signed_bytes(), base, "variant {i}");
        }
        // A grant moved from one set to the other is a different manifest too.
        let mut moved = manifest();
        moved.capabilities.topics.insert("log".to_owned());
        moved.capabilities.imports.remove("log");
        assert_ne!(moved.signed_bytes(), base);
    }

    #[test]
    fn grants_out_of_bounds_have_no_signed_bytes() {
        let mut empty = manifest();
        empty.capabilities.topics.insert(String::new());
        assert_eq!(
            empty.signed_bytes(),
            Err(ManifestError::BadGrant(String::new()))
        );
        let mut long = manifest();
        long.capabilities
            .imports
            .insert("x".repeat(MAX_GRANT_LEN + 1));
        assert!(matches!(
            long.signed_bytes(),
            Err(ManifestError::BadGrant(_))
        ));
        let mut many = manifest();
        many.capabilities.topics = (0..=MAX_GRANTS).map(|i| alloc::format!("t{i}")).collect();
        assert_eq!(many.signed_bytes(), Err(ManifestError::TooManyGrants));
    }
}
