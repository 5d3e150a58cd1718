//! TLS 1.3 to the gateway with embedded-tls: the gateway's certificate must chain to the
//! provisioned Wasmbed CA and carry the provisioned server name; its SHA-256 is kept for the
//! session's channel binding.

use embedded_tls::pki::CertVerifier;
use embedded_tls::{
    Aes128GcmSha256, Certificate, CertificateEntryRef, CertificateRef, CertificateVerifyRef,
    CryptoProvider, CryptoRngCore, TlsClock, TlsError, TlsVerifier,
};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use crate::board::clock;

/// The only suite offered: AES-128-GCM with SHA-256 (the gateway's rustls accepts it).
pub type Suite = Aes128GcmSha256;
/// Bytes kept of the gateway's certificate between verifying it and its signature.
const MAX_CERTIFICATE: usize = 4096;
/// Read buffer: one whole TLS record. The gateway sends records of at most 2 KiB of plaintext
/// (its `max_fragment_size`, for exactly this buffer), plus header, content type and tag.
pub const READ_BUFFER: usize = 2048 + 256;
/// Write buffer: frames are written in records of up to this size.
pub const WRITE_BUFFER: usize = 4096;

/// A TLS record header's length.
pub const RECORD_HEADER: usize = 5;

/// Whether `pending` received bytes, starting with `peeked`, hold a whole TLS record, so that
/// reading it cannot block: the device keeps its heartbeats and apps going while a record
/// trickles in over a slow link.
pub fn whole_record(peeked: &[u8], pending: usize) -> bool {
    match peeked {
        [_, _, _, high, low, ..] => {
            pending >= RECORD_HEADER + usize::from(u16::from_be_bytes([*high, *low]))
        }
        _ => false,
    }
}

/// Certificate validity is checked against the time the provisioning block gave.
pub struct DeviceClock;

impl TlsClock for DeviceClock {
    fn now() -> Option<u64> {
        clock::unix_now()
    }
}

/// Verifies the gateway against the CA and remembers the fingerprint of its certificate.
pub struct GatewayVerifier<'a> {
    inner: CertVerifier<'a, Suite, DeviceClock, MAX_CERTIFICATE>,
    fingerprint: Option<[u8; 32]>,
}

impl<'a> GatewayVerifier<'a> {
    /// Trusts only `ca_der`.
    pub fn new(ca_der: &'a [u8]) -> Self {
        Self {
            inner: CertVerifier::new(Certificate::X509(ca_der)),
            fingerprint: None,
        }
    }

    /// SHA-256 of the verified gateway certificate (after a successful handshake).
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        self.fingerprint
    }
}

impl TlsVerifier<Suite> for GatewayVerifier<'_> {
    fn set_hostname_verification(&mut self, hostname: &str) -> Result<(), TlsError> {
        self.inner.set_hostname_verification(hostname)
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Suite as embedded_tls::TlsCipherSuite>::Hash,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        let leaf = match cert.entries.first() {
            Some(CertificateEntryRef::X509(der)) => Sha256::digest(der).into(),
            _ => return Err(TlsError::InvalidCertificate),
        };
        self.inner.verify_certificate(transcript, cert)?;
        self.fingerprint = Some(leaf);
        Ok(())
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        self.inner.verify_signature(verify)
    }
}

/// The RNG and the verifier, as embedded-tls asks for them.
pub struct Provider<'r, 'v, 'a> {
    /// Key shares and client random come from here.
    pub rng: &'r mut ChaCha20Rng,
    /// The gateway check.
    pub verifier: &'v mut GatewayVerifier<'a>,
}

impl CryptoProvider for Provider<'_, '_, '_> {
    type CipherSuite = Suite;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut *self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Suite>, TlsError> {
        Ok(&mut *self.verifier)
    }
}
