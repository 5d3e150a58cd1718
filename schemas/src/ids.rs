//! Validated identifiers.
//!
//! Every id is a DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`, starting and ending with
//! a letter or digit. Such a string is a single NATS subject token (no `.`, `*`, `>` or white
//! space) and a valid Kubernetes object name, so ids can be put into subjects and CRD names as
//! they are, and a device can never smuggle a subject wildcard through its id.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] characters.
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    /// The id holds a character outside `a-z`, `0-9` and `-`.
    #[error("id holds {0:?}; only a-z, 0-9 and '-' are allowed")]
    InvalidChar(char),
    /// The id starts or ends with `-`.
    #[error("id must start and end with a letter or digit")]
    EdgeHyphen,
}

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 63;

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(IdError::InvalidChar(c));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(IdError::EdgeHyphen);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl core::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
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
                    "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                    "description": "DNS-1123 label: 1-63 of a-z, 0-9, '-', alphanumeric at both ends",
                })
            }
        }
    };
}

id_type!(
    /// A device, as the operator named it when registering its public key.
    DeviceId
);
id_type!(
    /// An application (a WASM module plus its target, config and limits).
    AppId
);
id_type!(
    /// A gateway instance.
    GatewayId
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), IdError>) {
        assert_eq!(
            DeviceId::new(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn an_id_honours_width_and_alignment() {
        let id = DeviceId::new("ab").unwrap();
        assert_eq!(format!("{id:<5}|{id:>4}|{id}"), "ab   |  ab|ab");
    }

    #[test]
    fn validation_table() {
        check("sensor-01", Ok(()));
        check("a", Ok(()));
        check(&"a".repeat(63), Ok(()));
        check("", Err(IdError::Empty));
        check(&"a".repeat(64), Err(IdError::TooLong));
        check("dev.1", Err(IdError::InvalidChar('.')));
        check("dev*", Err(IdError::InvalidChar('*')));
        check("dev>", Err(IdError::InvalidChar('>')));
        check("Dev", Err(IdError::InvalidChar('D')));
        check("a b", Err(IdError::InvalidChar(' ')));
        check("-a", Err(IdError::EdgeHyphen));
        check("a-", Err(IdError::EdgeHyphen));
    }

    #[test]
    fn deserializing_an_invalid_id_fails() {
        let err = serde_json::from_str::<DeviceId>("\"wasmbed.>\"");
        assert!(err.is_err());
        let ok: DeviceId = serde_json::from_str("\"d1\"").unwrap();
        assert_eq!(ok.as_str(), "d1");
    }
}
