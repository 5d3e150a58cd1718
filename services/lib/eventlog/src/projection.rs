//! Durable consumers that feed read models in log order.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use tracing::{Instrument, debug, info_span, warn};

use crate::{EventLog, StoredEvent};

/// Why a projection stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Creating or reading the consumer failed.
    #[error("projection consumer: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Nats(e.to_string())
}

/// Longest pause between retries of a failing handler.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A durable consumer on the log. Its position survives restarts of the service and of the
/// server: [`Projection::run`] resumes after the last event the handler accepted.
pub struct Projection {
    name: String,
    consumer: PullConsumer,
}

impl EventLog {
    /// Opens (or creates) the durable consumer `name` over the events matching
    /// `filter_subjects` (all events when empty).
    pub async fn projection(
        &self,
        name: &str,
        filter_subjects: Vec<String>,
    ) -> Result<Projection, ProjectionError> {
        let consumer = self
            .stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_owned()),
                    filter_subjects,
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 1024,
                    ..Default::default()
                },
            )
            .await
            .map_err(nats)?;
        Ok(Projection {
            name: name.to_owned(),
            consumer,
        })
    }
}

impl Projection {
    /// The stream sequence of the last event acknowledged in order (0: none yet): a projection
    /// whose state lives elsewhere rebuilds its view up to here before it resumes.
    pub async fn acknowledged(&mut self) -> Result<u64, ProjectionError> {
        Ok(self
            .consumer
            .info()
            .await
            .map_err(nats)?
            .ack_floor
            .stream_sequence)
    }

    /// Feeds every event, in log order, to `handler` until `shutdown` completes.
    ///
    /// An event is acknowledged only after the handler returns `Ok`. When the handler fails,
    /// the same event is retried with growing pauses (the consumer is told the event is still
    /// in progress), so nothing is skipped and order is kept. An event that does not decode is
    /// logged and terminated: it stays in the log, but no handler can apply it.
    ///
    /// `handler` returns a future that owns what it needs (it may not borrow the event), so a
    /// projection can run on a spawned task.
    pub async fn run<H, R, F, E>(self, mut handler: H, shutdown: F) -> Result<(), ProjectionError>
    where
        H: FnMut(&StoredEvent) -> R,
        R: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
        F: Future<Output = ()>,
    {
        let mut messages = self.consumer.messages().await.map_err(nats)?;
        tokio::pin!(shutdown);
        loop {
            let message = tokio::select! {
                () = &mut shutdown => return Ok(()),
                next = messages.next() => match next {
                    Some(message) => message.map_err(nats)?,
                    None => return Ok(()),
                },
            };
            let sequence = message.info().map_err(nats)?.stream_sequence;
            let span = info_span!("project", projection = %self.name, sequence);
            let event =
                match StoredEvent::decode(sequence, message.headers.as_ref(), &message.payload) {
                    Ok(event) => event,
                    Err(e) => {
                        warn!(parent: &span, error = %e, "undecodable event skipped");
                        message.ack_with(AckKind::Term).await.map_err(nats)?;
                        continue;
                    }
                };
            let mut delay = Duration::from_millis(50);
            loop {
                match handler(&event).instrument(span.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        warn!(parent: &span, error = %e, ?delay, "handler failed; retrying");
                        message.ack_with(AckKind::Progress).await.map_err(nats)?;
                        tokio::select! {
                            () = &mut shutdown => return Ok(()),
                            () = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(MAX_RETRY_DELAY);
                    }
                }
            }
            message.double_ack().await.map_err(nats)?;
            debug!(parent: &span, "projected");
        }
    }
}
