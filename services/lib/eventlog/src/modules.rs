//! Modules in the JetStream object store `wasmbed-modules`, named by the lowercase hex SHA-256
//! of their bytes: stored once however many applications and versions use them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectStore};
use sha2::Digest;
use tokio::io::AsyncReadExt;
use wasmbed_schemas::Sha256;
use wasmbed_schemas::subject;

/// The largest module the deployer accepts: 1 MiB (a microcontroller has less RAM than that).
pub const MAX_MODULE_LEN: usize = 1024 * 1024;

/// Why a module could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// No module with that digest was uploaded.
    #[error("no module {0} in the module store; upload it first")]
    NotFound(Sha256),
    /// Larger than [`MAX_MODULE_LEN`].
    #[error("module of {0} bytes is larger than the limit of {MAX_MODULE_LEN} bytes")]
    TooLarge(usize),
    /// The stored bytes do not hash to their name: the store was tampered with or corrupted.
    #[error("stored module {expected} has digest {actual}; refusing to send it")]
    DigestMismatch {
        /// Its name.
        expected: Sha256,
        /// What its bytes hash to.
        actual: Sha256,
    },
    /// Talking to the object store failed.
    #[error("module store: {0}")]
    Nats(String),
}

/// The SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

async fn open(js: &jetstream::Context) -> Result<ObjectStore, ModuleError> {
    js.get_object_store(subject::MODULES_OBJECT_STORE)
        .await
        .map_err(|e| ModuleError::Nats(e.to_string()))
}

/// Stores a module under its digest (idempotent) and returns the digest. What a client does
/// before `CreateApplication` or `UpdateApplication`.
pub async fn upload_module(js: &jetstream::Context, bytes: &[u8]) -> Result<Sha256, ModuleError> {
    if bytes.len() > MAX_MODULE_LEN {
        return Err(ModuleError::TooLarge(bytes.len()));
    }
    let sha = digest(bytes);
    let store = open(js).await?;
    let name = sha.to_string();
    if let Ok(info) = store.info(&name).await {
        if !info.deleted && info.size == bytes.len() {
            return Ok(sha);
        }
    }
    let mut reader = bytes;
    store
        .put(name.as_str(), &mut reader)
        .await
        .map_err(|e| ModuleError::Nats(e.to_string()))?;
    Ok(sha)
}

/// How long reading one module may take (1 MiB at most, from the local cluster).
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads modules, verifying each against its name, and keeps the ones read in memory.
pub struct ModuleStore {
    store: ObjectStore,
    cache: Mutex<HashMap<Sha256, Arc<Vec<u8>>>>,
}

impl ModuleStore {
    /// Opens the store.
    pub async fn open(js: &jetstream::Context) -> Result<Self, ModuleError> {
        Ok(Self {
            store: open(js).await?,
            cache: Mutex::default(),
        })
    }

    fn cached(&self, sha: &Sha256) -> Option<Arc<Vec<u8>>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sha)
            .cloned()
    }

    /// The module named `sha`, verified. A read that takes longer than [`FETCH_TIMEOUT`] fails
    /// (the object store's consumer can die with a cluster node and leave the read waiting).
    pub async fn get(&self, sha: &Sha256) -> Result<Arc<Vec<u8>>, ModuleError> {
        if let Some(bytes) = self.cached(sha) {
            return Ok(bytes);
        }
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch(sha))
            .await
            .map_err(|_| ModuleError::Nats(format!("reading {sha} took over {FETCH_TIMEOUT:?}")))?
    }

    async fn fetch(&self, sha: &Sha256) -> Result<Arc<Vec<u8>>, ModuleError> {
        let name = sha.to_string();
        let info = self.store.info(&name).await.map_err(|e| match e.kind() {
            InfoErrorKind::NotFound => ModuleError::NotFound(*sha),
            _ => ModuleError::Nats(e.to_string()),
        })?;
        if info.deleted {
            return Err(ModuleError::NotFound(*sha));
        }
        if info.size > MAX_MODULE_LEN {
            return Err(ModuleError::TooLarge(info.size));
        }
        let mut object = self.store.get(&name).await.map_err(|e| match e.kind() {
            GetErrorKind::NotFound => ModuleError::NotFound(*sha),
            _ => ModuleError::Nats(e.to_string()),
        })?;
        let mut bytes = Vec::with_capacity(info.size);
        (&mut object)
            .take(MAX_MODULE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ModuleError::Nats(e.to_string()))?;
        if bytes.len() > MAX_MODULE_LEN {
            return Err(ModuleError::TooLarge(bytes.len()));
        }
        let actual = digest(&bytes);
        if actual != *sha {
            return Err(ModuleError::DigestMismatch {
                expected: *sha,
                actual,
            });
        }
        let bytes = Arc::new(bytes);
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(*sha, bytes.clone());
        Ok(bytes)
    }

    /// Removes a module no application uses any more.
    pub async fn delete(&self, sha: &Sha256) -> Result<(), ModuleError> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(sha);
        self.store
            .delete(sha.to_string())
            .await
            .map_err(|e| ModuleError::Nats(e.to_string()))
    }
}
