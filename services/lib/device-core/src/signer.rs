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
