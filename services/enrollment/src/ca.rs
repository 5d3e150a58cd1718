//! The certificate authority: created once, kept in a directory, signs gateway certificates.
//!
//! The CA key is a file in the data directory (a Secret mount in the cluster: same code path).
//! It never leaves this service; gateways send a CSR for a key of their own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;
use tracing::info;

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing the CA files failed.
    #[error("CA files in {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The stored key or certificate does not parse.
    #[error("stored CA is unreadable: {0}")]
    Corrupt(rcgen::Error),
    /// Creating the CA failed.
    #[error("creating the CA: {0}")]
    Create(rcgen::Error),
    /// The CSR does not parse or its signature does not verify.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(rcgen::Error),
    /// The CSR names no host (no subject alternative name).
    #[error("the certificate signing request names no subject alternative name")]
    NoSubjectAltName,
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(rcgen::Error),
}

const KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "ca-cert.pem";

/// A certificate issued to a gateway.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// When it expires.
    pub not_after: OffsetDateTime,
}

/// The CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl CertificateAuthority {
    /// Loads the CA from `dir`, or creates it there (key file mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let io = |e| CaError::Io(dir.to_path_buf(), e);
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io)?;
            let certificate_pem = std::fs::read_to_string(&cert_path).map_err(io)?;
            let key = KeyPair::from_pem(&key_pem).map_err(CaError::Corrupt)?;
            let issuer =
                Issuer::from_ca_cert_pem(&certificate_pem, key).map_err(CaError::Corrupt)?;
            info!(dir = %dir.display(), "CA loaded");
            return Ok(Self {
                issuer,
                certificate_pem,
            });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let key = KeyPair::generate().map_err(CaError::Create)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Wasmbed");
        name.push(DnType::CommonName, "Wasmbed device CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let certificate = params.self_signed(&key).map_err(CaError::Create)?;
        let certificate_pem = certificate.pem();
        write_private(&key_path, &key.serialize_pem()).map_err(io)?;
        std::fs::write(&cert_path, &certificate_pem).map_err(io)?;
        info!(dir = %dir.display(), "CA created");
        Ok(Self {
            issuer: Issuer::new(params, key),
            certificate_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Signs a TLS server certificate for the key in `csr_pem`, valid for `validity`.
    ///
    /// The CSR chooses the names (its subject alternative names) and nothing else: validity,
    /// key usage and the not-a-CA constraint are set here.
    pub fn issue_server_certificate(
        &self,
        csr_pem: &str,
        validity: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::InvalidCsr)?;
        if csr.params.subject_alt_names.is_empty() {
            return Err(CaError::NoSubjectAltName);
        }
        let now = OffsetDateTime::now_utc();
        let not_after = now + validity;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = not_after;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let certificate = csr.signed_by(&self.issuer).map_err(CaError::Sign)?;
        Ok(IssuedCertificate {
            pem: certificate.pem(),
            not_after,
        })
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
