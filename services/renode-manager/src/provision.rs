//! Provisioning blocks: what an emulated board finds in the region its memory map reserves
//! (`Board::provisioning_address`).

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmbed_schemas::provisioning::Provisioning;

use crate::pem::{self, PemError};
use crate::qemu::HOST_FROM_GUEST;

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

/// The block for board `device_id` with secret `device_secret` that dials `endpoints`, trusts
/// `ca_pem` and expects the gateway to be named `server_name`; a fresh entropy seed and the
/// current time; it trusts no publisher key until [`Provisioning::publishers`] is set.
pub fn block(
    endpoints: Vec<String>,
    device_secret: [u8; 32],
    device_id: &str,
    ca_pem: &str,
    server_name: &str,
) -> Result<Provisioning, ProvisionError> {
    let mut entropy = [0u8; 32];
    getrandom::fill(&mut entropy).map_err(ProvisionError::Random)?;
    Ok(Provisioning {
        endpoints,
        device_secret,
        entropy,
        provisioned_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        server_name: server_name.into(),
        device_id: device_id.into(),
        ca_der: pem::certificate_der(ca_pem)?,
        enrollment_token: None,
        publishers: Vec::new(),
        trust_serial: 0,
    })
}

/// The block for a board on QEMU's user network dialling the gateway listening on this host
/// at `gateway`, whose certificate names `localhost`.
pub fn for_local_gateway(
    gateway: SocketAddr,
    device_secret: [u8; 32],
    device_id: &str,
    ca_pem: &str,
) -> Result<Provisioning, ProvisionError> {
    block(
        guest_endpoints(&[gateway.to_string()]),
        device_secret,
        device_id,
        ca_pem,
        "localhost",
    )
}

/// The endpoints a guest on QEMU's user network dials for gateways announced as `endpoints`:
/// the host's loopback (or any address) is `10.0.2.2` from inside; names and other addresses
/// stay as they are.
pub fn guest_endpoints(endpoints: &[String]) -> Vec<String> {
    endpoints
        .iter()
        .map(|endpoint| match endpoint.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() || addr.ip().is_unspecified() => {
                format!("{HOST_FROM_GUEST}:{}", addr.port())
            }
            _ => endpoint.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_gateways_are_the_host_from_inside() {
        let mapped = guest_endpoints(&[
            "127.0.0.1:8081".into(),
            "0.0.0.0:9000".into(),
            "192.168.1.5:8081".into(),
            "gateway.wasmbed.svc:8081".into(),
        ]);
        assert_eq!(
            mapped,
            [
                "10.0.2.2:8081",
                "10.0.2.2:9000",
                "192.168.1.5:8081",
                "gateway.wasmbed.svc:8081"
            ]
        );
    }
}
