//! The device's identity.

use wasmbed_schemas::{PublicKey, Signature};

/// Signs the authentication transcript with the device's Ed25519 key.
pub trait Signer {
    /// The public half: the device's identity.
    fn public_key(&self) -> PublicKey;
    /// An Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Signature;
}

impl Signer for ed25519_dalek::SigningKey {
    fn public_key(&self) -> PublicKey {
        PublicKey(self.verifying_key().to_bytes())
    }

    fn sign(&self, message: &[u8]) -> Signature {
        Signature(ed25519_dalek::Signer::sign(self, message).to_bytes())
    }
}

/// Whether `key` can authenticate anyone: the canonical encoding of an Ed25519 point outside
/// the small-order subgroup (a signature by a small-order key can be forged without its
/// secret; a non-canonical encoding would let one key go by two byte strings).
pub fn is_full_order(key: &PublicKey) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(&key.0)
        .is_ok_and(|point| !point.is_weak() && point.to_edwards().compress().to_bytes() == key.0)
}
