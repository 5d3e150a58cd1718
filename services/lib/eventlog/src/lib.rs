//! The event log: one JetStream stream (`WASMBED_EVENTS`) that every service appends to and
//! reads from. This crate is the only code that talks to that stream.
//!
//! - [`EventLog::append`]: one event, with per-aggregate optimistic concurrency
//!   (`Nats-Expected-Last-Subject-Sequence`) and de-duplication (`Nats-Msg-Id` = event id); a
//!   conflicting append is an [`AppendError::Conflict`], never a silent overwrite.
//! - [`EventLog::append_pipelined`]: many appends with a bounded number of acks in flight.
//! - [`EventLog::load`] / [`EventLog::read`]: an aggregate rebuilt by replaying its subject.
//! - [`EventLog::follow`]: every matching event from the start, then live, for in-memory views.
//! - [`EventLog::projection`]: a durable consumer that feeds a handler in log order and resumes
//!   where it stopped.
//! - [`EventLog::read_model`]: a KV bucket of JSON values for projections to write and readers
//!   to read.
//! - [`modules`]: WASM modules in the object store, named by their SHA-256 and verified on
//!   every read.
//! - [`snapshot`]: snapshots of read models, so a start folds only what came after one.
//! - [`definitions`]: the streams and stores from `nats/`, created idempotently at start.

mod append;
pub mod definitions;
mod live;
mod metrics;
pub mod modules;
mod projection;
mod read_model;
pub mod refusals;
mod replay;
pub mod snapshot;

use async_nats::jetstream;
use wasmbed_schemas::event::{EventDecodeError, EventEnvelope};
use wasmbed_schemas::subject;

pub use append::{ACK_TIMEOUT, AppendError, Appended, ExpectedVersion};
pub use definitions::SetupError;
pub use live::{LiveReadError, LiveReader, ReconnectWatch};
pub use projection::{Projection, ProjectionError};
pub use read_model::{ReadModel, ReadModelError, Versioned};
pub use replay::{Aggregate, Follow, Loaded, ReadError};
pub use snapshot::{Restored, SnapshotError, SnapshotStore};

/// An event as stored: its envelope and its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Stream sequence: the event's position in the whole log, and the aggregate's version
    /// once this event is its last.
    pub sequence: u64,
    /// The event.
    pub envelope: EventEnvelope,
    /// The W3C `traceparent` of the span that appended it, when a trace was being recorded:
    /// what acts on the event continues that trace.
    pub trace: Option<String>,
}

impl StoredEvent {
    fn decode(
        sequence: u64,
        headers: Option<&async_nats::HeaderMap>,
        payload: &[u8],
    ) -> Result<Self, EventDecodeError> {
        Ok(Self {
            sequence,
            envelope: EventEnvelope::from_json(payload)?,
            trace: wasmbed_bus::trace::traceparent(headers),
        })
    }
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Replicas of each stream and store (1 locally, 3 in the cluster).
    pub replicas: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { replicas: 1 }
    }
}

/// A handle on the event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    replicas: usize,
}

impl EventLog {
    /// Creates (or updates) every stream and store from `nats/`, then opens the log.
    pub async fn open(
        client: async_nats::Client,
        options: &LogOptions,
    ) -> Result<Self, SetupError> {
        let js = jetstream::new(client);
        definitions::ensure_all(&js, options.replicas).await?;
        let stream = js
            .get_stream(subject::EVENTS_STREAM)
            .await
            .map_err(|e| SetupError::Stream(subject::EVENTS_STREAM.to_owned(), e.to_string()))?;
        Ok(Self {
            js,
            stream,
            replicas: options.replicas,
        })
    }

    /// Replicas of the streams and buckets this handle creates.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The JetStream context the log uses.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
