//! Fixed-size binary values.
//!
//! In a binary format (MessagePack on the device link) they are raw `bin` bytes; in a
//! human-readable one (JSON on the bus, the REST API) they are lowercase hex strings.

use core::fmt;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lowercase hex digits of `bytes` written into `f`.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses exactly `N` bytes of hex.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

struct FixedVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes, or {} hex digits", 2 * N)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_hex(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses lowercase or uppercase hex of exactly `2 * LEN` digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                parse_hex::<$len>(s).map(Self)
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(f, &self.0)?;
                f.write_str(")")
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    d.deserialize_str(FixedVisitor::<$len>).map(Self)
                } else {
                    d.deserialize_bytes(FixedVisitor::<$len>).map(Self)
                }
            }
        }

        #[cfg(feature = "std")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": format!("^[0-9a-f]{{{}}}$", 2 * $len),
                    "description": format!("{} bytes as lowercase hex", $len),
                })
            }
        }
    };
}

fixed_bytes!(
    /// An Ed25519 public key.
    PublicKey,
    32
);
fixed_bytes!(
    /// An Ed25519 signature.
    Signature,
    64
);
fixed_bytes!(
    /// A random challenge nonce.
    Nonce,
    32
);
fixed_bytes!(
    /// A SHA-256 digest (WASM modules, certificate fingerprints).
    Sha256,
    32
);

/// Variable-length opaque bytes (application config): `bin` in MessagePack, hex in JSON.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(pub alloc::vec::Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes, or an even number of hex digits")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: alloc::vec::Vec<u8>) -> Result<Blob, E> {
        Ok(Blob(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
        let digits = v.as_bytes();
        if digits.len() % 2 != 0 {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        digits
            .chunks_exact(2)
            .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
            .collect::<Option<alloc::vec::Vec<u8>>>()
            .map(Blob)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(BlobVisitor)
        } else {
            d.deserialize_byte_buf(BlobVisitor)
        }
    }
}

#[cfg(feature = "std")]
impl schemars::JsonSchema for Blob {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Blob".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9a-f]{2})*$",
            "description": "bytes as lowercase hex",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_in_json() {
        let key = PublicKey([0xab; 32]);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
    }

    #[test]
    fn raw_bytes_in_messagepack() {
        let sig = Signature([7; 64]);
        let packed = rmp_serde::to_vec(&sig).unwrap();
        // bin8 marker, length 64, then the bytes.
        assert_eq!(&packed[..2], &[0xc4, 64]);
        assert_eq!(packed.len(), 66);
        assert_eq!(rmp_serde::from_slice::<Signature>(&packed).unwrap(), sig);
    }

    #[test]
    fn blob_is_hex_in_json_and_bin_in_messagepack() {
        let blob = Blob(vec![0, 1, 0xfe]);
        assert_eq!(serde_json::to_string(&blob).unwrap(), "\"0001fe\"");
        assert_eq!(serde_json::from_str::<Blob>("\"0001fe\"").unwrap(), blob);
        assert!(serde_json::from_str::<Blob>("\"0\"").is_err());
        let packed = rmp_serde::to_vec(&blob).unwrap();
        assert_eq!(packed, [0xc4, 3, 0, 1, 0xfe]);
        assert_eq!(rmp_serde::from_slice::<Blob>(&packed).unwrap(), blob);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        assert!(serde_json::from_str::<Nonce>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<Nonce>(&format!("\"{}\"", "zz".repeat(32))).is_err());
        let short = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1, 2, 3])).unwrap();
        assert!(rmp_serde::from_slice::<Nonce>(&short).is_err());
    }
}
