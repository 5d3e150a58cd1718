//! The CA certificate arrives as PEM (from enrollment); the firmware wants DER.

use base64::Engine as _;

/// Why a PEM certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PEM certificate: {0}")]
pub struct PemError(&'static str);

/// The DER bytes of the first `CERTIFICATE` block in `pem`.
pub fn certificate_der(pem: &str) -> Result<Vec<u8>, PemError> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem
        .find(begin)
        .ok_or(PemError("no BEGIN CERTIFICATE line"))?
        + begin.len();
    let stop = pem[start..]
        .find(end)
        .ok_or(PemError("no END CERTIFICATE line"))?
        + start;
    let body: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| PemError("the body is not base64"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_body_and_refuses_what_is_not_a_certificate() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\nAAEC\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificate_der(pem).unwrap(),
            vec![0x30, 0x82, 0x01, 0x00, 0x01, 0x02]
        );
        assert!(
            certificate_der("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err()
        );
        assert!(certificate_der("hello").is_err());
    }
}
