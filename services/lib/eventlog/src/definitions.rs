//! The streams and stores Wasmbed needs, as defined in `nats/`, created idempotently.

use async_nats::jetstream::{self, object_store, stream};
use tracing::info;

/// `nats/streams/events.json`.
pub const EVENTS_STREAM_JSON: &str = include_str!("../../../../nats/streams/events.json");
/// `nats/streams/telemetry.json`.
pub const TELEMETRY_STREAM_JSON: &str = include_str!("../../../../nats/streams/telemetry.json");
/// `nats/object-stores/modules.json`.
pub const MODULES_STORE_JSON: &str = include_str!("../../../../nats/object-stores/modules.json");

/// Why the NATS definitions could not be put in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A definition file does not parse (a bug caught by the tests).
    #[error("definition {0} does not parse: {1}")]
    Definition(&'static str, serde_json::Error),
    /// The server refused to create or update a stream.
    #[error("stream {0}: {1}")]
    Stream(String, String),
    /// The server refused to create the object store.
    #[error("object store {0}: {1}")]
    ObjectStore(String, String),
}

/// The stream configurations, with `replicas` applied.
pub fn streams(replicas: usize) -> Result<Vec<stream::Config>, SetupError> {
    [
        ("events.json", EVENTS_STREAM_JSON),
        ("telemetry.json", TELEMETRY_STREAM_JSON),
    ]
    .into_iter()
    .map(|(name, text)| {
        let mut config: stream::Config =
            serde_json::from_str(text).map_err(|e| SetupError::Definition(name, e))?;
        config.num_replicas = replicas;
        Ok(config)
    })
    .collect()
}

/// The object-store configuration, with `replicas` applied.
pub fn modules_store(replicas: usize) -> Result<object_store::Config, SetupError> {
    let mut config: object_store::Config = serde_json::from_str(MODULES_STORE_JSON)
        .map_err(|e| SetupError::Definition("modules.json", e))?;
    config.num_replicas = replicas;
    Ok(config)
}

/// Creates every stream and store, or updates it to the definition if it exists.
pub async fn ensure_all(js: &jetstream::Context, replicas: usize) -> Result<(), SetupError> {
    for config in streams(replicas)? {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| SetupError::Stream(name.clone(), e.to_string()))?;
        info!(stream = name, "stream ready");
    }
    let store = modules_store(replicas)?;
    if js.get_object_store(&store.bucket).await.is_err() {
        let bucket = store.bucket.clone();
        js.create_object_store(store)
            .await
            .map_err(|e| SetupError::ObjectStore(bucket.clone(), e.to_string()))?;
        info!(bucket, "object store created");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmbed_schemas::subject;

    #[test]
    fn definitions_parse_and_match_the_schemas_names() {
        let streams = streams(3).unwrap();
        assert_eq!(streams[0].name, subject::EVENTS_STREAM);
        assert_eq!(streams[0].subjects, [subject::EVENTS_ALL]);
        assert_eq!(streams[0].duplicate_window.as_secs(), 120);
        assert_eq!(streams[1].name, subject::TELEMETRY_STREAM);
        assert_eq!(streams[1].subjects, [subject::TELEMETRY_ALL]);
        assert!(streams.iter().all(|s| s.num_replicas == 3));
        assert_eq!(
            modules_store(1).unwrap().bucket,
            subject::MODULES_OBJECT_STORE
        );
    }
}
