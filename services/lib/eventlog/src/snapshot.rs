//! Snapshots of read models, so a service's start folds only what came after the last one.
//!
//! A snapshot is one object in the object store `wasmbed-snapshots`, named by the model (the
//! service's name): a JSON header, then the model in MessagePack. The header says which layout
//! the model was written in (`format`), the stream sequence of the last event folded into it,
//! that event's id, and the SHA-256 of the body. A snapshot is a cache, never a source of
//! truth: it is used only when every check holds, and otherwise ignored with a warning and the
//! model is folded from the whole log.
//!
//! - another `format` (written by an older or newer layout): ignored;
//! - the event at its sequence is not there or has another id (the stream was recreated,
//!   purged, or the snapshot belongs to another log): ignored;
//! - the body does not hash to the header's digest, or does not decode: ignored.

use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::RawMessageErrorKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::AsyncReadExt;
use tracing::{info, instrument, warn};
use wasmbed_schemas::subject::{self, header};

use crate::EventLog;

/// A read model with a snapshot layout. Bump `FORMAT` whenever the encoded shape changes: a
/// snapshot of another format is ignored and the model folded from the whole log.
pub trait Snapshotted: Serialize + DeserializeOwned {
    /// The layout of the encoded model.
    const FORMAT: u32;
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Talking to the object store or the log failed.
    #[error("snapshot store: {0}")]
    Nats(String),
    /// The model could not be encoded.
    #[error("encoding a snapshot: {0}")]
    Encode(String),
}

fn nats(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Nats(e.to_string())
}

/// What a snapshot says about itself, before its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The model's name (the object's name).
    pub model: String,
    /// The layout of the body; a reader of another layout ignores the snapshot.
    pub format: u32,
    /// The stream sequence of the last event folded in (0: none).
    pub sequence: u64,
    /// The id of that event (`Nats-Msg-Id`), so a snapshot of another log is not taken for
    /// one of this log.
    pub event_id: String,
    /// SHA-256 of the body, lowercase hex.
    pub body_sha256: String,
}

/// Why a stored snapshot was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    /// The object does not have a header and a body.
    #[error("not a snapshot: {0}")]
    Malformed(String),
    /// Written for another model.
    #[error("written for model {0:?}")]
    OtherModel(String),
    /// Written in another layout.
    #[error("layout {found}, this build reads {expected}")]
    Format {
        /// This reader's layout.
        expected: u32,
        /// The snapshot's.
        found: u32,
    },
    /// The body was changed or cut.
    #[error("body does not match its digest")]
    Digest,
    /// The log has no event at its sequence, or another event there.
    #[error("the log holds {found:?} at sequence {sequence}, not event {expected}")]
    OtherLog {
        /// The snapshot's sequence.
        sequence: u64,
        /// The event id the snapshot names.
        expected: String,
        /// What the log holds there.
        found: Option<String>,
    },
    /// The body does not decode as the model.
    #[error("body does not decode: {0}")]
    Decode(String),
}

/// A model restored from a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored<M> {
    /// The model as of `sequence`.
    pub model: M,
    /// The stream sequence it holds everything up to.
    pub sequence: u64,
}

/// The body of a snapshot of `model`: MessagePack, fields by name.
pub fn body<M: Serialize>(model: &M) -> Result<Vec<u8>, SnapshotError> {
    rmp_serde::to_vec_named(model).map_err(|e| SnapshotError::Encode(e.to_string()))
}

/// A snapshot of model `name` as of stream sequence `sequence` (last event `event_id`) with
/// `body` (see [`body`]): its header, then the body.
pub fn encode(name: &str, format: u32, sequence: u64, event_id: &str, body: &[u8]) -> Vec<u8> {
    let head = SnapshotHeader {
        model: name.to_owned(),
        format,
        sequence,
        event_id: event_id.to_owned(),
        body_sha256: hex(&sha2::Sha256::digest(body)),
    };
    // A struct of strings and numbers always encodes.
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let len = u32::try_from(head.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + head.len() + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(body);
    out
}

/// Splits a snapshot into its header and body, checking the body's digest and the header's
/// model and format (not the log: see [`SnapshotStore::load`]).
pub fn decode_header<'a>(
    bytes: &'a [u8],
    name: &str,
    format: u32,
) -> Result<(SnapshotHeader, &'a [u8]), Unusable> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| Unusable::Malformed("shorter than its header length".into()))?;
    let len = usize::try_from(u32::from_be_bytes(*len))
        .map_err(|e| Unusable::Malformed(e.to_string()))?;
    if rest.len() < len {
        return Err(Unusable::Malformed("shorter than its header".into()));
    }
    let (head, body) = rest.split_at(len);
    let head: SnapshotHeader =
        serde_json::from_slice(head).map_err(|e| Unusable::Malformed(e.to_string()))?;
    if head.model != name {
        return Err(Unusable::OtherModel(head.model));
    }
    if head.format != format {
        return Err(Unusable::Format {
            expected: format,
            found: head.format,
        });
    }
    if hex(&sha2::Sha256::digest(body)) != head.body_sha256 {
        return Err(Unusable::Digest);
    }
    Ok((head, body))
}

/// Decodes a snapshot's body as the model.
pub fn decode_body<M: DeserializeOwned>(body: &[u8]) -> Result<M, Unusable> {
    rmp_serde::from_slice(body).map_err(|e| Unusable::Decode(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The snapshots of one log.
#[derive(Clone)]
pub struct SnapshotStore {
    store: ObjectStore,
    log: EventLog,
}

impl EventLog {
    /// Opens (or creates) the snapshot store.
    pub async fn snapshots(&self) -> Result<SnapshotStore, SnapshotError> {
        let store = match self
            .js
            .get_object_store(subject::SNAPSHOTS_OBJECT_STORE)
            .await
        {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: subject::SNAPSHOTS_OBJECT_STORE.to_owned(),
                    description: Some(
                        "Snapshots of read models, one object per model; a cache of the log."
                            .to_owned(),
                    ),
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map_err(nats)?,
        };
        Ok(SnapshotStore {
            store,
            log: self.clone(),
        })
    }

    /// The id (`Nats-Msg-Id`) of the event at stream sequence `sequence`, if the log holds one.
    pub async fn event_id_at(&self, sequence: u64) -> Result<Option<String>, SnapshotError> {
        match self.stream.get_raw_message(sequence).await {
            Ok(message) => Ok(message
                .headers
                .get(header::MSG_ID)
                .map(|id| id.as_str().to_owned())),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats(e)),
        }
    }
}

impl SnapshotStore {
    /// Stores `model` as model `name`'s snapshot as of stream sequence `sequence` (the last
    /// event folded in), replacing the one before. Returns the bytes written.
    pub async fn save<M: Serialize>(
        &self,
        name: &str,
        format: u32,
        sequence: u64,
        model: &M,
    ) -> Result<usize, SnapshotError> {
        self.save_body(name, format, sequence, body(model)?).await
    }

    /// The same with the model already encoded by [`body`] (taken under the model's lock,
    /// written after it is released).
    #[instrument(skip(self, body), fields(bytes = body.len()))]
    pub async fn save_body(
        &self,
        name: &str,
        format: u32,
        sequence: u64,
        body: Vec<u8>,
    ) -> Result<usize, SnapshotError> {
        let event_id = if sequence == 0 {
            String::new()
        } else {
            self.log.event_id_at(sequence).await?.unwrap_or_default()
        };
        let bytes = encode(name, format, sequence, &event_id, &body);
        self.store
            .put(name, &mut bytes.as_slice())
            .await
            .map_err(nats)?;
        info!(
            model = name,
            sequence,
            bytes = bytes.len(),
            "snapshot written"
        );
        Ok(bytes.len())
    }

    /// Model `name`'s snapshot if it can be trusted: its layout is `format`, its body is
    /// whole, and the log holds the event it says it folded last. Anything else is logged and
    /// `None` (fold the whole log); only a failure to talk to NATS is an error.
    #[instrument(skip(self))]
    pub async fn load<M: DeserializeOwned>(
        &self,
        name: &str,
        format: u32,
    ) -> Result<Option<Restored<M>>, SnapshotError> {
        let mut object = match self.store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(nats(e)),
        };
        let mut bytes = Vec::new();
        if let Err(e) = object.read_to_end(&mut bytes).await {
            // The store checks its own digest while reading: a corrupt object ends here.
            warn!(model = name, error = %e, "snapshot ignored: unreadable");
            return Ok(None);
        }
        match self.check(&bytes, name, format).await? {
            Ok(restored) => {
                info!(
                    model = name,
                    sequence = restored.sequence,
                    "snapshot loaded"
                );
                Ok(Some(restored))
            }
            Err(why) => {
                warn!(model = name, %why, "snapshot ignored");
                Ok(None)
            }
        }
    }

    async fn check<M: DeserializeOwned>(
        &self,
        bytes: &[u8],
        name: &str,
        format: u32,
    ) -> Result<Result<Restored<M>, Unusable>, SnapshotError> {
        let (head, body) = match decode_header(bytes, name, format) {
            Ok(parts) => parts,
            Err(why) => return Ok(Err(why)),
        };
        if head.sequence > 0 {
            let found = self.log.event_id_at(head.sequence).await?;
            if found.as_deref() != Some(head.event_id.as_str()) || head.event_id.is_empty() {
                return Ok(Err(Unusable::OtherLog {
                    sequence: head.sequence,
                    expected: head.event_id,
                    found,
                }));
            }
        }
        Ok(decode_body(body).map(|model| Restored {
            model,
            sequence: head.sequence,
        }))
    }

    /// Removes model `name`'s snapshot, if there is one.
    pub async fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        match self.store.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(e) => Err(nats(e)),
        }
    }

    /// Writes raw bytes as model `name`'s snapshot: for tests of what [`Self::load`] refuses.
    #[doc(hidden)]
    pub async fn put_raw(&self, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut reader = bytes;
        self.store.put(name, &mut reader).await.map_err(nats)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_refused_for_every_reason_it_can_be_wrong() {
        let good = encode("api", 3, 42, "ev-42", &body(&vec![1u32, 2, 3]).unwrap());
        let (head, good_body) = decode_header(&good, "api", 3).unwrap();
        assert_eq!((head.sequence, head.event_id.as_str()), (42, "ev-42"));
        assert_eq!(decode_body::<Vec<u32>>(good_body).unwrap(), [1, 2, 3]);

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let cut = &good[..good.len() - 1];
        for (bytes, name, format, why) in [
            (&good[..], "deployer", 3, Unusable::OtherModel("api".into())),
            (
                &good[..],
                "api",
                4,
                Unusable::Format {
                    expected: 4,
                    found: 3,
                },
            ),
            (&flipped[..], "api", 3, Unusable::Digest),
            (cut, "api", 3, Unusable::Digest),
        ] {
            assert_eq!(decode_header(bytes, name, format).unwrap_err(), why);
        }
        for garbage in [&b""[..], b"\0\0", b"\0\0\0\x09{}", b"\0\0\0\x02{}"] {
            assert!(matches!(
                decode_header(garbage, "api", 3),
                Err(Unusable::Malformed(_))
            ));
        }
        // A body of another shape decodes to an error, never a panic.
        let other = encode("api", 3, 42, "ev-42", &body(&"text").unwrap());
        let (_, other_body) = decode_header(&other, "api", 3).unwrap();
        assert!(matches!(
            decode_body::<Vec<u32>>(other_body),
            Err(Unusable::Decode(_))
        ));
    }
}
