//! Changing the publisher keys a device trusts: a chain of numbered, signed rotations.
//!
//! A device is provisioned with a trust anchor (a set of publisher keys and the serial of the
//! last change they include). Every later change is one [`TrustRotation`] that trusts or
//! revokes one key, numbered `serial + 1`, and signed by a key the device trusts before the
//! change. A device applies rotations strictly in order, so a device that was offline receives
//! the missing ones in order and ends with the same set as the fleet.
//!
//! Signed bytes, integers big-endian:
//!
//! ```text
//! ROTATION_DOMAIN ‖ u32 serial ‖ u8 change (1 trust, 2 revoke) ‖ 32 bytes key ‖ u64 issued at
//! ```

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::bytes::{PublicKey, Signature};

/// Domain-separation prefix of a rotation's signed bytes.
pub const ROTATION_DOMAIN: &[u8] = b"wasmbed-trust-rotation-v1\0";

/// Most publisher keys a device holds.
pub const MAX_TRUSTED_KEYS: usize = 16;

/// What a rotation does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TrustChange {
    /// Start trusting it.
    Trust,
    /// Stop trusting it, for good.
    Revoke,
}

/// One change of the trusted publisher keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct TrustRotation {
    /// Its place in the chain: one more than the change before it.
    pub serial: u32,
    /// Trust or revoke.
    pub change: TrustChange,
    /// The publisher key concerned.
    pub key: PublicKey,
    /// When it was signed (Unix seconds).
    pub issued_at: u64,
}

/// A rotation with the key that signed it and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
pub struct SignedRotation {
    /// The change.
    pub rotation: TrustRotation,
    /// A key trusted before the change.
    pub signer: PublicKey,
    /// Its signature over [`TrustRotation::signed_bytes`].
    pub signature: Signature,
}

impl TrustRotation {
    /// The bytes the signer signs (see the module documentation).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ROTATION_DOMAIN.len() + 4 + 1 + 32 + 8);
        out.extend_from_slice(ROTATION_DOMAIN);
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.push(match self.change {
            TrustChange::Trust => 1,
            TrustChange::Revoke => 2,
        });
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation() -> TrustRotation {
        TrustRotation {
            serial: 2,
            change: TrustChange::Revoke,
            key: PublicKey([0x11; 32]),
            issued_at: 1_800_000_000,
        }
    }

    #[test]
    fn the_signed_bytes_are_pinned() {
        let mut expected = ROTATION_DOMAIN.to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2, 2]);
        expected.extend_from_slice(&[0x11; 32]);
        expected.extend_from_slice(&1_800_000_000u64.to_be_bytes());
        assert_eq!(rotation().signed_bytes(), expected);
    }

    #[test]
    fn every_field_changes_the_signed_bytes() {
        let base = rotation().signed_bytes();
        let mut variants = [rotation(), rotation(), rotation(), rotation()];
        variants[0].serial = 3;
        variants[1].change = TrustChange::Trust;
        variants[2].key.0[31] = 0x12;
        variants[3].issued_at += 1;
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(variant.signed_bytes(), base, "variant {i}");
        }
    }
}
