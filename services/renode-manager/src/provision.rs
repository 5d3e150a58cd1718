//! Provisioning blocks for boards that dial a gateway on this host.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmbed_schemas::provisioning::Provisioning;

use crate::pem::{self, PemError};
use crate::qemu::guest_endpoint;

/// Why a block could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The CA certificate is not PEM.
    #[error(transparent)]
    Ca(#[from] PemError),
    /// The OS random source failed (a board must never get a predictable seed).
    #[error("the OS random source: {0}")]
    Random(getrandom::Error),
}

/// The block for a board with secret `device_secret` that dials the gateway listening on
/// `gateway` (through QEMU's user network), trusts `ca_pem` and expects the name `localhost`;
/// a fresh entropy seed and the current time.
pub fn for_local_gateway(
    gateway: SocketAddr,
    device_secret: [u8; 32],
    device_id: &str,
    ca_pem: &str,
) -> Result<Provisioning, ProvisionError> {
    let mut entropy = [0u8; 32];
    getrandom::fill(&mut entropy).map_err(ProvisionError::Random)?;
    Ok(Provisioning {
        endpoints: vec![guest_endpoint(gateway)],
        device_secret,
        entropy,
        provisioned_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        server_name: "localhost".into(),
        device_id: device_id.into(),
        ca_der: pem::certificate_der(ca_pem)?,
        enrollment_token: None,
    })
}
