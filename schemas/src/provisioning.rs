//! The provisioning block: what an emulated device is told before it boots.
//!
//! The emulator writes it into guest RAM at [`ADDRESS`] (QEMU with `-device loader`, Renode
//! with `sysbus WriteDoubleWord` of [`Provisioning::words`]); the firmware reads it at start.
//! One encoder and one decoder, here, serve every backend and the firmware.
//!
//! Layout, version 2, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `u32` length N of the gateway endpoints text (the seeds' contract) |
//! | 4 | N | `host:port` text; several endpoints separated by `,` |
//! | 4+N, padded to 4 | 4 | magic `WBPV` |
//! | +4 | 2 | `u16` version (1) |
//! | +6 | 2 | `u16` length of the rest, up to and including the check |
//! | +8 | 32 | the device's Ed25519 secret seed |
//! | +40 | 32 | entropy seed for the device's RNG (fresh per boot: boards without a TRNG) |
//! | +72 | 8 | `u64` Unix seconds when the block was written (the device's idea of "now") |
//! | +80 | 2+n | `u16` length + TLS server name the gateway certificate must carry |
//! | … | 2+n | `u16` length + device id (informational; may be empty) |
//! | … | 2+n | `u16` length + the Wasmbed CA certificate, DER |
//! | … | 2+n | `u16` length + enrollment (pairing) token; empty for none |
//! | … | 4 | `u32` serial of the last trust rotation the publisher keys include |
//! | … | 2+32k | `u16` length + k trusted publisher keys (Ed25519, 32 bytes each); none: unsigned modules run |
//! | … | 4 | the first 4 bytes of SHA-256 over every byte before them |
//!
//! The block never exceeds [`MAX_LEN`] bytes, the region the firmware's memory maps
//! (`firmware/memory/`) reserve.

use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::bytes::PublicKey;
use crate::release::rotation::MAX_TRUSTED_KEYS;

/// Where the block lives in the guest's RAM (the seeds' address).
pub const ADDRESS: u32 = 0x2000_1000;
/// The size of the reserved region.
pub const MAX_LEN: usize = 4096;
/// The layout version this module writes and reads.
pub const VERSION: u16 = 2;
const MAGIC: [u8; 4] = *b"WBPV";

/// Everything an emulated device needs to find, verify and prove itself to a gateway.
#[derive(Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// Gateway endpoints `host:port`, tried in order; the firmware needs IPv4 literals.
    pub endpoints: Vec<String>,
    /// The device's Ed25519 secret seed.
    pub device_secret: [u8; 32],
    /// Seed for the device's random number generator.
    pub entropy: [u8; 32],
    /// Unix seconds when the block was written.
    pub provisioned_at: u64,
    /// The DNS name the gateway's certificate must carry.
    pub server_name: String,
    /// The device's id, when known (for log lines only; the gateway decides identity).
    pub device_id: String,
    /// The CA certificate (DER) that must have signed the gateway's certificate.
    pub ca_der: Vec<u8>,
    /// Pairing token for enrolling during a pairing window.
    pub enrollment_token: Option<String>,
    /// The publisher keys whose signed releases the device runs (the fleet's trust anchor);
    /// empty: it runs unsigned modules.
    pub publishers: Vec<PublicKey>,
    /// The serial of the last trust rotation `publishers` includes.
    pub trust_serial: u32,
}

impl core::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Provisioning")
            .field("endpoints", &self.endpoints)
            .field("server_name", &self.server_name)
            .field("device_id", &self.device_id)
            .field("ca_der_len", &self.ca_der.len())
            .field("provisioned_at", &self.provisioned_at)
            .field("publishers", &self.publishers)
            .field("trust_serial", &self.trust_serial)
            .finish_non_exhaustive()
    }
}

/// Why a block could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    /// The encoded block would not fit the reserved region.
    #[error("provisioning block is {0} bytes, more than the {MAX_LEN} reserved")]
    TooLarge(usize),
    /// A text or byte field is longer than its length prefix allows, or empty where required.
    #[error("provisioning field {0} is invalid")]
    Field(&'static str),
    /// The bytes end before the block does.
    #[error("provisioning block is truncated")]
    Truncated,
    /// Not a version-1 block (nothing written, or another layout).
    #[error("no provisioning block (bad magic or version {0})")]
    NotProvisioned(u16),
    /// The check bytes do not match: the block was corrupted or cut.
    #[error("provisioning block checksum mismatch")]
    Checksum,
}

impl Provisioning {
    /// The block's bytes, padded with zeros to a multiple of 4.
    pub fn encode(&self) -> Result<Vec<u8>, ProvisioningError> {
        if self.endpoints.is_empty()
            || self
                .endpoints
                .iter()
                .any(|e| e.is_empty() || e.contains(','))
        {
            return Err(ProvisioningError::Field("endpoints"));
        }
        let endpoints = self.endpoints.join(",");
        let mut out = Vec::with_capacity(256 + self.ca_der.len());
        let endpoint_len =
            u32::try_from(endpoints.len()).map_err(|_| ProvisioningError::Field("endpoints"))?;
        out.extend_from_slice(&endpoint_len.to_le_bytes());
        out.extend_from_slice(endpoints.as_bytes());
        pad4(&mut out);
        let header_at = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]); // length of the rest, filled in below
        out.extend_from_slice(&self.device_secret);
        out.extend_from_slice(&self.entropy);
        out.extend_from_slice(&self.provisioned_at.to_le_bytes());
        if self.server_name.is_empty() {
            return Err(ProvisioningError::Field("server_name"));
        }
        put_field(&mut out, self.server_name.as_bytes(), "server_name")?;
        put_field(&mut out, self.device_id.as_bytes(), "device_id")?;
        if self.ca_der.is_empty() {
            return Err(ProvisioningError::Field("ca_der"));
        }
        put_field(&mut out, &self.ca_der, "ca_der")?;
        let token = self.enrollment_token.as_deref().unwrap_or("");
        put_field(&mut out, token.as_bytes(), "enrollment_token")?;
        out.extend_from_slice(&self.trust_serial.to_le_bytes());
        if self.publishers.len() > MAX_TRUSTED_KEYS {
            return Err(ProvisioningError::Field("publishers"));
        }
        let keys: Vec<u8> = self.publishers.iter().flat_map(|k| k.0).collect();
        put_field(&mut out, &keys, "publishers")?;
        let rest = out.len() + 4 - (header_at + 8);
        let rest = u16::try_from(rest).map_err(|_| ProvisioningError::TooLarge(out.len() + 4))?;
        out[header_at + 6..header_at + 8].copy_from_slice(&rest.to_le_bytes());
        let check = checksum(&out);
        out.extend_from_slice(&check);
        pad4(&mut out);
        if out.len() > MAX_LEN {
            return Err(ProvisioningError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// The block as 32-bit words, for emulators that write memory a word at a time.
    pub fn words(&self) -> Result<Vec<u32>, ProvisioningError> {
        let bytes = self.encode()?;
        Ok(bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect())
    }

    /// Reads a block from the start of `bytes` (the whole reserved region may be passed).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProvisioningError> {
        let mut r = Reader { bytes, at: 0 };
        let endpoint_len = u32::from_le_bytes(r.array()?) as usize;
        if endpoint_len == 0 || endpoint_len > MAX_LEN {
            return Err(ProvisioningError::NotProvisioned(0));
        }
        let endpoints = text(r.take(endpoint_len)?, "endpoints")?;
        r.at = r.at.div_ceil(4) * 4;
        if r.array::<4>()? != MAGIC {
            return Err(ProvisioningError::NotProvisioned(0));
        }
        let version = u16::from_le_bytes(r.array()?);
        if version != VERSION {
            return Err(ProvisioningError::NotProvisioned(version));
        }
        let rest = usize::from(u16::from_le_bytes(r.array()?));
        let end = r.at + rest;
        if end > bytes.len() || rest < 4 {
            return Err(ProvisioningError::Truncated);
        }
        if checksum(&bytes[..end - 4]) != bytes[end - 4..end] {
            return Err(ProvisioningError::Checksum);
        }
        let device_secret = r.array()?;
        let entropy = r.array()?;
        let provisioned_at = u64::from_le_bytes(r.array()?);
        let server_name = text(r.field()?, "server_name")?;
        let device_id = text(r.field()?, "device_id")?;
        let ca_der = r.field()?.to_vec();
        let token = text(r.field()?, "enrollment_token")?;
        let trust_serial = u32::from_le_bytes(r.array()?);
        let keys = r.field()?;
        if keys.len() % 32 != 0 || keys.len() / 32 > MAX_TRUSTED_KEYS {
            return Err(ProvisioningError::Field("publishers"));
        }
        let publishers = keys
            .chunks_exact(32)
            .map(|k| {
                let mut key = [0; 32];
                key.copy_from_slice(k);
                PublicKey(key)
            })
            .collect();
        if r.at + 4 != end {
            return Err(ProvisioningError::Field("length"));
        }
        Ok(Self {
            endpoints: endpoints.split(',').map(String::from).collect(),
            device_secret,
            entropy,
            provisioned_at,
            server_name,
            device_id,
            ca_der,
            enrollment_token: (!token.is_empty()).then_some(token),
            publishers,
            trust_serial,
        })
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn put_field(out: &mut Vec<u8>, value: &[u8], name: &'static str) -> Result<(), ProvisioningError> {
    let len = u16::try_from(value.len()).map_err(|_| ProvisioningError::Field(name))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(bytes);
    [digest[0], digest[1], digest[2], digest[3]]
}

fn text(bytes: &[u8], name: &'static str) -> Result<String, ProvisioningError> {
    core::str::from_utf8(bytes)
        .map(String::from)
        .map_err(|_| ProvisioningError::Field(name))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ProvisioningError> {
        let end = self
            .at
            .checked_add(len)
            .ok_or(ProvisioningError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(ProvisioningError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProvisioningError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn field(&mut self) -> Result<&'a [u8], ProvisioningError> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use alloc::vec;

    fn sample() -> Provisioning {
        Provisioning {
            endpoints: vec!["10.0.2.2:8081".into(), "10.0.2.2:9081".into()],
            device_secret: [7; 32],
            entropy: [9; 32],
            provisioned_at: 1_800_000_000,
            server_name: "localhost".into(),
            device_id: "dev-1".into(),
            ca_der: vec![0x30, 0x82, 1, 2, 3],
            enrollment_token: Some("pair-me".into()),
            publishers: vec![PublicKey([3; 32]), PublicKey([4; 32])],
            trust_serial: 5,
        }
    }

    #[test]
    fn round_trips_and_keeps_the_seed_contract() {
        let block = sample().encode().unwrap();
        assert_eq!(block.len() % 4, 0);
        let text = "10.0.2.2:8081,10.0.2.2:9081";
        assert_eq!(
            u32::from_le_bytes(block[..4].try_into().unwrap()) as usize,
            text.len()
        );
        assert_eq!(&block[4..4 + text.len()], text.as_bytes());
        // The firmware reads the whole region: trailing zeros are not part of the block.
        let mut region = block.clone();
        region.resize(MAX_LEN, 0);
        assert_eq!(Provisioning::decode(&region).unwrap(), sample());
        let words = sample().words().unwrap();
        assert_eq!(words.len() * 4, block.len());
        assert_eq!(words[0] as usize, text.len());
    }

    #[test]
    fn no_token_round_trips_as_none() {
        let mut p = sample();
        p.enrollment_token = None;
        assert_eq!(
            Provisioning::decode(&p.encode().unwrap())
                .unwrap()
                .enrollment_token,
            None
        );
    }

    #[test]
    fn any_flipped_byte_is_refused_and_nothing_panics() {
        let block = sample().encode().unwrap();
        // The header after the padded endpoints text says where the block ends; bytes after
        // that are padding to a whole word.
        let header = (4 + 27usize).div_ceil(4) * 4;
        let rest = u16::from_le_bytes([block[header + 6], block[header + 7]]);
        let end = header + 8 + usize::from(rest);
        assert!(block.len() - end < 4);
        for i in 0..end {
            let mut bad = block.clone();
            bad[i] ^= 0x5a;
            assert!(
                Provisioning::decode(&bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        for len in 0..end {
            assert!(
                Provisioning::decode(&block[..len]).is_err(),
                "cut at {len} accepted"
            );
        }
        assert_eq!(
            Provisioning::decode(&[0; MAX_LEN]),
            Err(ProvisioningError::NotProvisioned(0))
        );
    }

    #[test]
    fn too_large_and_empty_fields_are_refused() {
        let mut p = sample();
        p.ca_der = vec![1; MAX_LEN];
        assert!(matches!(
            p.encode(),
            Err(ProvisioningError::TooLarge(_)) | Err(ProvisioningError::Field(_))
        ));
        let mut p = sample();
        p.endpoints = vec![];
        assert_eq!(p.encode(), Err(ProvisioningError::Field("endpoints")));
        let mut p = sample();
        p.server_name.clear();
        assert_eq!(p.encode(), Err(ProvisioningError::Field("server_name")));
        let mut p = sample();
        p.publishers = vec![PublicKey([1; 32]); MAX_TRUSTED_KEYS + 1];
        assert_eq!(p.encode(), Err(ProvisioningError::Field("publishers")));
    }
}
