//! The device's check of a signed release before anything of it is loaded: signed by a
//! publisher key the device trusts, over exactly this manifest, for exactly these module bytes.
//!
//! What the manifest grants (host functions, topics, limits) is checked where the module is
//! instantiated and run; this is the part that needs no WebAssembly parsing.

use ed25519_dalek::{Signature as Ed25519Signature, VerifyingKey};
use sha2::{Digest, Sha256 as Hasher};
use wasmbed_schemas::release::{ManifestError, SignedRelease};
use wasmbed_schemas::{AppId, PublicKey, Sha256};

/// Why a release is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseRefusal {
    /// The publisher key is not one the device trusts.
    #[error("signed by a key this device does not trust")]
    UntrustedKey,
    /// The signature does not verify over the manifest.
    #[error("the signature does not match the manifest")]
    Signature,
    /// The manifest cannot be signed as it stands.
    #[error("the manifest is malformed: {0}")]
    Manifest(ManifestError),
    /// The manifest is for another application.
    #[error("the manifest is for another application")]
    OtherApp,
    /// The module is not the one the manifest names.
    #[error("the module is not the one the manifest was signed for")]
    Module,
}

/// Checks `release` for `app` against the keys in `trusted` and the module bytes.
pub fn verify_release(
    release: &SignedRelease,
    trusted: &[PublicKey],
    app: &AppId,
    module: &[u8],
) -> Result<(), ReleaseRefusal> {
    if !trusted.contains(&release.publisher) {
        return Err(ReleaseRefusal::UntrustedKey);
    }
    let key = VerifyingKey::from_bytes(release.publisher.as_bytes())
        .map_err(|_| ReleaseRefusal::UntrustedKey)?;
    let signed = release
        .manifest
        .signed_bytes()
        .map_err(ReleaseRefusal::Manifest)?;
    let signature = Ed25519Signature::from_bytes(release.signature.as_bytes());
    key.verify_strict(&signed, &signature)
        .map_err(|_| ReleaseRefusal::Signature)?;
    let manifest = &release.manifest;
    if manifest.app_id != *app {
        return Err(ReleaseRefusal::OtherApp);
    }
    let digest = Sha256(Hasher::digest(module).into());
    if u32::try_from(module.len()).ok() != Some(manifest.module_len)
        || digest != manifest.module_sha256
    {
        return Err(ReleaseRefusal::Module);
    }
    Ok(())
}
