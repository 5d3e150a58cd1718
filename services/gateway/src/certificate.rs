//! The gateway's TLS certificate: its own key, a certificate from enrollment's CA obtained by
//! CSR over the bus, and renewal before expiry without dropping sessions.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256 as Sha256Hasher};
use tracing::{info, warn};
use wasmbed_bus::{CallError, call};
use wasmbed_schemas::Sha256;
use wasmbed_schemas::command::IssueGatewayCertificate;

use crate::GatewayConfig;

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// Generating the key or the CSR failed.
    #[error("preparing the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    /// Enrollment did not answer or refused.
    #[error("asking enrollment for a certificate: {0}")]
    Enrollment(#[from] CallError),
    /// The answer does not hold a usable certificate.
    #[error("the issued certificate is unusable: {0}")]
    Unusable(String),
}

/// The certificate in use and the one before it.
struct Current {
    key: Arc<CertifiedKey>,
    fingerprint: Sha256,
    previous: Option<Sha256>,
    not_after: DateTime<Utc>,
}

/// Serves the current certificate to every handshake; swapped on renewal.
pub(crate) struct CertStore {
    current: RwLock<Current>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

/// A certificate as issued.
pub(crate) struct Issued {
    key: Arc<CertifiedKey>,
    fingerprint: Sha256,
    not_after: DateTime<Utc>,
}

/// SHA-256 of a DER certificate: what devices bind their signature to.
pub(crate) fn fingerprint(der: &[u8]) -> Sha256 {
    Sha256(Sha256Hasher::digest(der).into())
}

impl CertStore {
    pub(crate) fn new(issued: Issued) -> Self {
        Self {
            current: RwLock::new(Current {
                key: issued.key,
                fingerprint: issued.fingerprint,
                previous: None,
                not_after: issued.not_after,
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fingerprint of the certificate in use, and of the one it replaced: a session whose
    /// handshake raced a renewal may have seen either.
    pub(crate) fn fingerprints(&self) -> (Sha256, Option<Sha256>) {
        let c = self.read();
        (c.fingerprint, c.previous)
    }

    pub(crate) fn not_after(&self) -> DateTime<Utc> {
        self.read().not_after
    }

    fn replace(&self, issued: Issued) {
        let mut c = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.previous = Some(c.fingerprint);
        c.key = issued.key;
        c.fingerprint = issued.fingerprint;
        c.not_after = issued.not_after;
    }
}

/// Asks enrollment to certify `key` for the configured names.
pub(crate) async fn request(
    client: &async_nats::Client,
    config: &GatewayConfig,
    key: &KeyPair,
) -> Result<Issued, CertificateError> {
    let mut params = CertificateParams::new(config.subject_alt_names.clone())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, config.gateway_id.as_str());
    params.distinguished_name = name;
    let csr_pem = params.serialize_request(key)?.pem()?;
    let reply = call(
        client,
        &IssueGatewayCertificate {
            gateway_id: config.gateway_id.clone(),
            csr_pem,
        },
        config.request_timeout,
    )
    .await?;
    let certificate = CertificateDer::from_pem_slice(reply.certificate_pem.as_bytes())
        .map_err(|e| CertificateError::Unusable(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| CertificateError::Unusable(e.to_string()))?;
    let fingerprint = fingerprint(&certificate);
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(vec![certificate], signing_key)),
        fingerprint,
        not_after: reply.not_after,
    })
}

/// Asks until enrollment answers, with growing pauses.
pub(crate) async fn request_until_issued(
    client: &async_nats::Client,
    config: &GatewayConfig,
    key: &KeyPair,
) -> Result<Issued, CertificateError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match request(client, config, key).await {
            Ok(issued) => return Ok(issued),
            Err(CertificateError::Enrollment(CallError::Transport { reason, .. })) => {
                warn!(%reason, ?delay, "enrollment not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Renews the certificate when two thirds of its life have passed; runs until aborted.
pub(crate) async fn renew_forever(
    client: async_nats::Client,
    config: GatewayConfig,
    key: KeyPair,
    store: Arc<CertStore>,
) {
    let mut issued_at = Utc::now();
    loop {
        let life = (store.not_after() - issued_at).to_std().unwrap_or_default();
        tokio::time::sleep(life * 2 / 3).await;
        let mut delay = Duration::from_secs(1);
        loop {
            match request(&client, &config, &key).await {
                Ok(issued) => {
                    info!(not_after = %issued.not_after, "certificate renewed");
                    issued_at = Utc::now();
                    store.replace(issued);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, ?delay, "certificate renewal failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}
