//! Device identities of the emulated fleet. The manager plays the factory that flashes each
//! board: it keeps one Ed25519 secret per device in its data directory (owner-only files) and
//! writes it into the board's provisioning block. The secrets never travel on the bus; only
//! the public key does, in the registration command.

use std::io::Write;
use std::path::{Path, PathBuf};

use wasmbed_schemas::DeviceId;

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a 32-byte hex seed.
    #[error("{0} is not a 32-byte hex seed")]
    Corrupt(String),
    /// The OS random source failed.
    #[error("the OS random source: {0}")]
    Random(getrandom::Error),
}

/// Secrets kept under one directory, `<device>.seed` each.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Keys under `dir` (created when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The secret of `device`, made on first use.
    pub fn secret(&self, device: &DeviceId) -> Result<[u8; 32], KeyError> {
        let path = self.dir.join(format!("{device}.seed"));
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return wasmbed_schemas::bytes::parse_hex::<32>(text.trim())
                    .ok_or_else(|| KeyError::Corrupt(path.display().to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&path, hex.as_bytes()).map_err(io)?;
        Ok(seed)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::new(dir.path().join("keys"));
        let id = DeviceId::new("board-1").unwrap();
        let first = keys.secret(&id).unwrap();
        assert_eq!(keys.secret(&id).unwrap(), first);
        assert_ne!(
            keys.secret(&DeviceId::new("board-2").unwrap()).unwrap(),
            first
        );
        std::fs::write(dir.path().join("keys/board-3.seed"), "zz").unwrap();
        assert!(matches!(
            keys.secret(&DeviceId::new("board-3").unwrap()),
            Err(KeyError::Corrupt(_))
        ));
    }
}
