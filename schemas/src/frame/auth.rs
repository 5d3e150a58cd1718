//! The bytes a device signs to authenticate.

use alloc::vec::Vec;

use crate::bytes::{Nonce, Sha256};
use crate::ids::GatewayId;

/// Domain-separation prefix of the signed transcript.
pub const AUTH_DOMAIN: &[u8] = b"wasmbed-device-auth-v1\0";

/// The message a device signs in [`super::Auth`]:
/// `AUTH_DOMAIN ‖ device nonce ‖ gateway nonce ‖ SHA-256 of the gateway's TLS certificate (DER) ‖
/// u8 length of the gateway id ‖ gateway id`.
///
/// Both sides compute it from what they saw in their own session, so a signature made for
/// another gateway, another TLS certificate or another pair of nonces does not verify.
pub fn auth_transcript(
    device_nonce: &Nonce,
    gateway_nonce: &Nonce,
    certificate_fingerprint: &Sha256,
    gateway_id: &GatewayId,
) -> Vec<u8> {
    let id = gateway_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(AUTH_DOMAIN.len() + 3 * 32 + 1 + id.len());
    out.extend_from_slice(AUTH_DOMAIN);
    out.extend_from_slice(device_nonce.as_bytes());
    out.extend_from_slice(gateway_nonce.as_bytes());
    out.extend_from_slice(certificate_fingerprint.as_bytes());
    // Ids are at most 63 bytes, so the length fits a u8.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_transcript() {
        let gw = GatewayId::new("gw-1").unwrap();
        let base = auth_transcript(&Nonce([1; 32]), &Nonce([2; 32]), &Sha256([3; 32]), &gw);
        let variants = [
            auth_transcript(&Nonce([9; 32]), &Nonce([2; 32]), &Sha256([3; 32]), &gw),
            auth_transcript(&Nonce([1; 32]), &Nonce([9; 32]), &Sha256([3; 32]), &gw),
            auth_transcript(&Nonce([1; 32]), &Nonce([2; 32]), &Sha256([9; 32]), &gw),
            auth_transcript(
                &Nonce([1; 32]),
                &Nonce([2; 32]),
                &Sha256([3; 32]),
                &GatewayId::new("gw-2").unwrap(),
            ),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert!(base.starts_with(AUTH_DOMAIN));
        assert_eq!(base.len(), AUTH_DOMAIN.len() + 96 + 1 + 4);
    }
}
