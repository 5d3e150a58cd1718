//! Read models: JSON values in a KV bucket, written by projections, read by anyone.

use std::marker::PhantomData;

use async_nats::jetstream::kv;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::EventLog;

/// Why a read model could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelError {
    /// Talking to the KV bucket failed.
    #[error("read model: {0}")]
    Nats(String),
    /// The stored value is not of the expected type.
    #[error("read model value under {key:?}: {source}")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The value could not be encoded.
    #[error("encoding a read model value: {0}")]
    Encode(#[source] serde_json::Error),
    /// A compare-and-set lost: the key's revision changed.
    #[error("read model key {0:?} changed concurrently")]
    Conflict(String),
}

fn nats(e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Nats(e.to_string())
}

/// A value and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The bucket revision of this value, for [`ReadModel::update`].
    pub revision: u64,
}

/// A KV bucket of JSON-encoded `T`.
pub struct ReadModel<T> {
    store: kv::Store,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for ReadModel<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            _value: PhantomData,
        }
    }
}

impl EventLog {
    /// Opens (or creates) the KV bucket `bucket` holding one history entry per key.
    pub async fn read_model<T>(&self, bucket: &str) -> Result<ReadModel<T>, ReadModelError> {
        let store = match self.js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(nats)?,
        };
        Ok(ReadModel {
            store,
            _value: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> ReadModel<T> {
    /// Every key's current value, then each change as it happens (`None`: deleted). Values
    /// that do not decode are skipped; the stream ends when the connection does.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = (String, Option<T>)> + Send + use<T>, ReadModelError>
    where
        T: Send + 'static,
    {
        let watch = self.store.watch_with_history(">").await.map_err(nats)?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            match entry.operation {
                kv::Operation::Put => serde_json::from_slice(&entry.value)
                    .ok()
                    .map(|value| (entry.key, Some(value))),
                kv::Operation::Delete | kv::Operation::Purge => Some((entry.key, None)),
            }
        }))
    }

    /// The value under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned<T>>, ReadModelError> {
        let Some(entry) = self.store.entry(key).await.map_err(nats)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value =
            serde_json::from_slice(&entry.value).map_err(|source| ReadModelError::Decode {
                key: key.to_owned(),
                source,
            })?;
        Ok(Some(Versioned {
            value,
            revision: entry.revision,
        }))
    }

    /// Stores `value` under `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, ReadModelError> {
        let bytes = serde_json::to_vec(value).map_err(ReadModelError::Encode)?;
        self.store.put(key, bytes.into()).await.map_err(nats)
    }

    /// Stores `value` only if `key` is still at `revision` (0: only if absent).
    pub async fn update(&self, key: &str, value: &T, revision: u64) -> Result<u64, ReadModelError> {
        let bytes = serde_json::to_vec(value).map_err(ReadModelError::Encode)?;
        if revision == 0 {
            self.store
                .create(key, bytes.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => ReadModelError::Conflict(key.to_owned()),
                    _ => nats(e),
                })
        } else {
            self.store
                .update(key, bytes.into(), revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => {
                        ReadModelError::Conflict(key.to_owned())
                    }
                    _ => nats(e),
                })
        }
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), ReadModelError> {
        self.store.delete(key).await.map_err(nats)
    }

    /// Every key with a value.
    pub async fn keys(&self) -> Result<Vec<String>, ReadModelError> {
        match self.store.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(nats),
            Err(e) => Err(nats(e)),
        }
    }
}
