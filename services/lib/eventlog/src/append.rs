//! Appending events: optimistic concurrency per aggregate, de-duplication by event id, and a
//! pipelined form with a bounded number of acks in flight.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::stream::Stream;
use tokio::time::Instant;
use tracing::instrument;
use wasmbed_schemas::AggregateId;
use wasmbed_schemas::event::EventEnvelope;
use wasmbed_schemas::subject::{self, header};

use crate::EventLog;

/// What the appender believes the aggregate's version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check: append whatever the aggregate's state (for events that commute, like
    /// audit records).
    Any,
    /// The sequence of the aggregate's last event; `Exactly(0)` means it has no events yet.
    Exactly(u64),
}

impl ExpectedVersion {
    /// The aggregate has no events yet.
    pub const NONE: Self = Self::Exactly(0);
}

/// A successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's stream sequence: the aggregate's new version.
    pub sequence: u64,
    /// The event id was already in the log (within the de-duplication window); nothing new was
    /// stored and `sequence` is where the first copy is.
    pub duplicate: bool,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Another append to the aggregate won: its version is no longer `expected`. Reload the
    /// aggregate, decide again, retry.
    #[error("conflict on {aggregate:?}: it is no longer at version {expected:?}")]
    Conflict {
        /// The aggregate.
        aggregate: AggregateId,
        /// What the appender expected.
        expected: ExpectedVersion,
    },
    /// The envelope could not be encoded.
    #[error("encoding the event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The event log did not acknowledge the append (no stream, timeout, connection lost). The
    /// event may or may not be stored: retrying with the same envelope is safe within the
    /// de-duplication window.
    #[error("publishing the event: {0}")]
    Publish(#[source] PublishError),
}

impl AppendError {
    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Encode(_) => "encode",
            Self::Publish(_) => "publish",
        }
    }
}

/// How long an append waits for its ack, counted from when it was sent (the JetStream
/// context's own timeout only starts when the ack is awaited, so a pipeline of lost acks would
/// wait that long once per append, one after another).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A sent append waiting for its ack.
struct InFlight {
    ack: PublishAckFuture,
    sent: Sent,
    /// When it was sent.
    at: Instant,
    /// When the ack stops being worth waiting for.
    deadline: Instant,
}

/// What was sent, for interpreting the ack.
struct Sent {
    subject: String,
    event_id: String,
    aggregate: AggregateId,
    expected: ExpectedVersion,
}

impl InFlight {
    async fn settle(self, stream: &Stream) -> Result<Appended, AppendError> {
        let at = self.at;
        let settled = self.settle_ack(stream).await;
        let outcome = match &settled {
            Ok(appended) if appended.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(e) => e.metric_label(),
        };
        crate::metrics::append(outcome, at.elapsed());
        settled
    }

    async fn settle_ack(self, stream: &Stream) -> Result<Appended, AppendError> {
        let sent = self.sent;
        let ack = tokio::time::timeout_at(self.deadline, self.ack.into_future())
            .await
            .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut)));
        match ack {
            Ok(ack) => Ok(Appended {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                match sent.already_stored(stream).await {
                    Some(sequence) => Ok(Appended {
                        sequence,
                        duplicate: true,
                    }),
                    None => Err(AppendError::Conflict {
                        aggregate: sent.aggregate,
                        expected: sent.expected,
                    }),
                }
            }
            Err(e) => Err(AppendError::Publish(e)),
        }
    }
}

impl Sent {
    /// nats-server checks the expected sequence before the de-duplication id, so a retried
    /// append whose first attempt was stored (and whose ack was lost) comes back as a
    /// conflict. If that first attempt succeeded at version `v`, optimistic concurrency
    /// guarantees it is the first event on the subject after `v`: one direct get tells.
    async fn already_stored(&self, stream: &Stream) -> Option<u64> {
        let ExpectedVersion::Exactly(version) = self.expected else {
            return None;
        };
        let next = stream
            .direct_get_next_for_subject(self.subject.as_str(), Some(version.saturating_add(1)))
            .await
            .ok()?;
        let id = next.headers.get(header::MSG_ID)?;
        (id.as_str() == self.event_id).then_some(next.sequence)
    }
}

impl EventLog {
    /// Appends one event to its aggregate's subject and waits for the log to store it.
    #[instrument(skip_all, fields(event = envelope.event.type_name(), id = %envelope.event_id))]
    pub async fn append(
        &self,
        expected: ExpectedVersion,
        envelope: &EventEnvelope,
    ) -> Result<Appended, AppendError> {
        self.send(expected, envelope)
            .await?
            .settle(&self.stream)
            .await
    }

    /// Appends many events in order, keeping at most `max_in_flight` unacknowledged, and
    /// returns one result per event in the same order.
    ///
    /// Publishing does not wait for each ack, which is what makes this several times faster
    /// than awaiting [`EventLog::append`] in a loop. Each append still carries its own
    /// concurrency check and de-duplication id.
    #[instrument(skip_all, fields(max_in_flight))]
    pub async fn append_pipelined<I>(
        &self,
        appends: I,
        max_in_flight: usize,
    ) -> Vec<Result<Appended, AppendError>>
    where
        I: IntoIterator<Item = (ExpectedVersion, EventEnvelope)>,
    {
        let max_in_flight = max_in_flight.max(1);
        let mut results = Vec::new();
        let mut pending: VecDeque<Result<InFlight, AppendError>> = VecDeque::new();
        for (expected, envelope) in appends {
            if pending.len() >= max_in_flight {
                if let Some(oldest) = pending.pop_front() {
                    results.push(settle(oldest, &self.stream).await);
                }
            }
            pending.push_back(self.send(expected, &envelope).await);
        }
        for entry in pending {
            results.push(settle(entry, &self.stream).await);
        }
        results
    }

    async fn send(
        &self,
        expected: ExpectedVersion,
        envelope: &EventEnvelope,
    ) -> Result<InFlight, AppendError> {
        let payload = envelope.to_json()?;
        let event_id = envelope.event_id.to_string();
        let subject = subject::event(&envelope.aggregate);
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, event_id.as_str());
        headers.insert(header::EVENT_TYPE, envelope.event.type_name());
        wasmbed_bus::trace::inject_current(&mut headers);
        if let ExpectedVersion::Exactly(version) = expected {
            headers.insert(
                header::EXPECTED_LAST_SUBJECT_SEQUENCE,
                version.to_string().as_str(),
            );
        }
        let at = Instant::now();
        let deadline = at + ACK_TIMEOUT;
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(AppendError::Publish)?;
        Ok(InFlight {
            ack,
            at,
            deadline,
            sent: Sent {
                subject,
                event_id,
                aggregate: envelope.aggregate.clone(),
                expected,
            },
        })
    }
}

async fn settle(
    entry: Result<InFlight, AppendError>,
    stream: &Stream,
) -> Result<Appended, AppendError> {
    entry?.settle(stream).await
}
