//! The device is the judge of what it runs: a signed release is checked against the publisher
//! keys the device trusts ([`TrustStore`]) and the module bytes before anything is loaded, and
//! what the manifest grants bounds what the app may do.
//!
//! Pure functions with table tests (`tests/release.rs`); the runtime checks the module's imports
//! against [`Grants`] where it parses the module, and the topic of every `publish`.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256 as Hasher};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::release::rotation::{
    MAX_TRUSTED_KEYS, SignedRotation, TrustChange, TrustRotation,
};
use wasmbed_schemas::release::{
    Capabilities, ManifestError, Refusal, ReleaseManifest, SignedRelease,
};
use wasmbed_schemas::{AppId, PublicKey, Sha256, Signature};

/// The manifest of `module` as `version` of `app`, granting `capabilities`, issued at
/// `issued_at` (Unix seconds).
pub fn manifest_for(
    app: AppId,
    version: u32,
    module: &[u8],
    capabilities: Capabilities,
    issued_at: u64,
) -> ReleaseManifest {
    ReleaseManifest {
        app_id: app,
        version,
        module_sha256: Sha256(Hasher::digest(module).into()),
        module_len: u32::try_from(module.len()).unwrap_or(u32::MAX),
        issued_at,
        capabilities,
    }
}

/// `manifest` signed by the publisher `key`.
pub fn sign_release(
    manifest: ReleaseManifest,
    key: &SigningKey,
) -> Result<SignedRelease, ManifestError> {
    let signature = key.sign(&manifest.signed_bytes()?).to_bytes();
    Ok(SignedRelease {
        manifest,
        publisher: PublicKey(key.verifying_key().to_bytes()),
        signature: Signature(signature),
    })
}

/// `rotation` signed by `key` (a key trusted before the change).
pub fn sign_rotation(rotation: TrustRotation, key: &SigningKey) -> SignedRotation {
    let signature = key.sign(&rotation.signed_bytes()).to_bytes();
    SignedRotation {
        rotation,
        signer: PublicKey(key.verifying_key().to_bytes()),
        signature: Signature(signature),
    }
}

/// Whether `rotation` is signed by its signer (who the signer must be is the caller's rule).
pub fn verify_rotation(rotation: &SignedRotation) -> Result<(), Refusal> {
    verify(
        &rotation.signer,
        &rotation.rotation.signed_bytes(),
        &rotation.signature,
    )
}

/// Checks that `release` is signed by one of `trusted` over exactly its manifest, and that the
/// manifest names `app` and these `module` bytes. The version and capabilities are the
/// caller's to judge.
pub fn verify_release(
    release: &SignedRelease,
    trusted: &[PublicKey],
    app: &AppId,
    module: &[u8],
) -> Result<(), Refusal> {
    if !trusted.contains(&release.publisher) {
        return Err(Refusal::UntrustedKey);
    }
    let signed = release
        .manifest
        .signed_bytes()
        .map_err(|_| Refusal::Manifest)?;
    verify(&release.publisher, &signed, &release.signature)?;
    let manifest = &release.manifest;
    if manifest.app_id != *app {
        return Err(Refusal::OtherRelease);
    }
    let digest = Sha256(Hasher::digest(module).into());
    if u32::try_from(module.len()).ok() != Some(manifest.module_len)
        || digest != manifest.module_sha256
    {
        return Err(Refusal::Module);
    }
    Ok(())
}

/// Strict Ed25519 verification (no small-order keys, canonical encodings only).
fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> Result<(), Refusal> {
    let key = VerifyingKey::from_bytes(key.as_bytes()).map_err(|_| Refusal::Signature)?;
    let signature = Ed25519Signature::from_bytes(signature.as_bytes());
    key.verify_strict(message, &signature)
        .map_err(|_| Refusal::Signature)
}

/// What a verified release lets an app do at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// The `wasmbed` host functions it may import.
    pub imports: BTreeSet<String>,
    /// The telemetry topics it may publish on.
    pub topics: BTreeSet<String>,
}

/// Why a rotation was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RotationRefusal {
    /// The device holds this serial already (a repeat): nothing to do.
    #[error("rotation {0} is applied already")]
    Applied(u32),
    /// Rotations before this one are missing; they must come first.
    #[error("rotation {got} arrived before {expected}")]
    Gap {
        /// The next serial the device expects.
        expected: u32,
        /// The serial that came.
        got: u32,
    },
    /// The device trusts no key, so it can verify no rotation.
    #[error("this device trusts no publisher key")]
    Open,
    /// The signer is not trusted now.
    #[error("signed by a key this device does not trust")]
    UntrustedSigner,
    /// The signature does not verify.
    #[error("the signature does not match the rotation")]
    Signature,
    /// Revoking the last trusted key would leave nothing to verify with.
    #[error("the last trusted key cannot be revoked")]
    LastKey,
    /// More keys than a device holds.
    #[error("a device trusts at most {MAX_TRUSTED_KEYS} keys")]
    TooManyKeys,
}

/// The publisher keys a device trusts and the serial of the last rotation they include.
///
/// With no keys the device is *open*: it runs unsigned modules, as before signing existed.
/// With keys it runs nothing unsigned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustStore {
    serial: u32,
    keys: Vec<PublicKey>,
    revoked: Vec<PublicKey>,
}

impl TrustStore {
    /// The trust anchor from provisioning: `keys` as of rotation `serial`.
    pub fn new(serial: u32, keys: Vec<PublicKey>) -> Self {
        let mut keys = keys;
        keys.truncate(MAX_TRUSTED_KEYS);
        Self {
            serial,
            keys,
            revoked: Vec::new(),
        }
    }

    /// The serial of the last rotation applied.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether the device runs unsigned modules (it trusts no key).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Applies the next rotation of the chain.
    pub fn apply(&mut self, signed: &SignedRotation) -> Result<(), RotationRefusal> {
        let TrustRotation {
            serial,
            change,
            key,
            ..
        } = signed.rotation;
        if self.is_open() {
            return Err(RotationRefusal::Open);
        }
        if serial <= self.serial {
            return Err(RotationRefusal::Applied(serial));
        }
        if serial != self.serial + 1 {
            return Err(RotationRefusal::Gap {
                expected: self.serial + 1,
                got: serial,
            });
        }
        if !self.keys.contains(&signed.signer) {
            return Err(RotationRefusal::UntrustedSigner);
        }
        verify_rotation(signed).map_err(|_| RotationRefusal::Signature)?;
        match change {
            TrustChange::Trust => {
                if !self.keys.contains(&key) {
                    if self.keys.len() >= MAX_TRUSTED_KEYS {
                        return Err(RotationRefusal::TooManyKeys);
                    }
                    self.keys.push(key);
                }
                self.revoked.retain(|k| *k != key);
            }
            TrustChange::Revoke => {
                if self.keys.len() == 1 && self.keys[0] == key {
                    return Err(RotationRefusal::LastKey);
                }
                self.keys.retain(|k| *k != key);
                if !self.revoked.contains(&key) && self.revoked.len() < MAX_TRUSTED_KEYS {
                    self.revoked.push(key);
                }
            }
        }
        self.serial = serial;
        Ok(())
    }

    /// Whether this device runs `release` (or, without one, an unsigned module) as `version`
    /// of `app` from `module` under `limits`; what it may do if so (`None`: an open device,
    /// no restriction).
    pub fn admit(
        &self,
        release: Option<&SignedRelease>,
        app: &AppId,
        version: u32,
        module: &[u8],
        limits: &Limits,
    ) -> Result<Option<Grants>, Refusal> {
        if self.is_open() {
            return Ok(None);
        }
        let Some(release) = release else {
            return Err(Refusal::Unsigned);
        };
        if self.revoked.contains(&release.publisher) {
            return Err(Refusal::RevokedKey);
        }
        verify_release(release, &self.keys, app, module)?;
        let manifest = &release.manifest;
        if manifest.version != version {
            return Err(Refusal::OtherRelease);
        }
        let caps = &manifest.capabilities;
        if limits.max_memory_pages > caps.max_memory_pages
            || limits.fuel_per_invocation > caps.max_fuel_per_tick
        {
            return Err(Refusal::Limits);
        }
        Ok(Some(Grants {
            imports: caps.imports.clone(),
            topics: caps.topics.clone(),
        }))
    }
}
