//! Reading a stream live, in order, across nats-server restarts.
//!
//! Ordered consumers are ephemeral and held in the server's memory: a restarted nats-server
//! has forgotten them, and the client library only notices after missing its idle heartbeats
//! (about 15 s, during which nothing arrives). A [`LiveReader`] watches the connection instead,
//! and after every reconnect starts a fresh consumer right after the last message it delivered,
//! so nothing is skipped or repeated. In a cluster the consumer also dies with the node that held
//! it: the reader does the same after the stream's leader election, or when, after a silence, the
//! stream holds a message for it that never arrived.
//!
//! The consumer is an ordered *push* consumer: the server sends continuously, paced by flow
//! control. The pull variant asks for 500 messages at a time with one request outstanding; under
//! load the server ran out of requests to deliver into and fell behind what it was storing (the
//! telemetry ingest bench, paced at half the raw rate: 3 runs of 5 fell behind with the server's
//! pending count growing by 20–60k msg/s; with push, 12 of 13 kept up).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use tracing::{debug, warn};

/// How often a reader looks for a reconnect.
const RECONNECT_CHECK: Duration = Duration::from_millis(100);
/// How long making a fresh consumer may take before it is tried again.
const RESUME_TIMEOUT: Duration = Duration::from_secs(3);
/// After this long without a message a reader asks the stream whether it missed one.
const SILENCE: Duration = Duration::from_secs(1);
/// While the stream stays quiet, the asking slows down to once in this long.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(8);

/// Tells whether a client's connection was made again since the last look (its reconnects
/// are counted in its statistics).
pub struct ReconnectWatch {
    statistics: Arc<async_nats::Statistics>,
    connects: u64,
}

impl ReconnectWatch {
    /// Watches `client` from now.
    pub fn new(client: &async_nats::Client) -> Self {
        let statistics = client.statistics();
        let connects = statistics.connects.load(Ordering::Relaxed);
        Self {
            statistics,
            connects,
        }
    }

    /// Whether it reconnected since the last call (or since `new`).
    pub fn reconnected(&mut self) -> bool {
        let connects = self.statistics.connects.load(Ordering::Relaxed);
        let changed = connects != self.connects;
        self.connects = connects;
        changed
    }
}

/// Why a live read failed.
#[derive(Debug, thiserror::Error)]
#[error("reading stream {stream}: {reason}")]
pub struct LiveReadError {
    /// The stream.
    pub stream: String,
    /// What happened.
    pub reason: String,
}

/// The messages of one stream matching some subjects, from a sequence on, then live.
pub struct LiveReader {
    messages: push::Ordered,
    /// For the deliver subject of each consumer: an inbox under the user's own prefix.
    client: async_nats::Client,
    stream: jetstream::stream::Stream,
    name: String,
    filter_subjects: Vec<String>,
    /// Where reading began: resuming before anything was delivered starts there again.
    start: DeliverPolicy,
    last_sequence: u64,
    reconnects: ReconnectWatch,
    check: tokio::time::Interval,
    /// The stream's leader elections: the consumer lived with the old leader and died with it
    /// (the client library would notice only after missing its idle heartbeats, about 10 s).
    leader_elected: Option<async_nats::Subscriber>,
    /// When the last message arrived, or the stream was last asked about the silence since.
    heard: tokio::time::Instant,
    /// How long a silence lasts before the stream is asked (again) about it.
    probe_after: Duration,
    /// The consumer is to be replaced: it returned an error (the client library panics when a
    /// failed ordered stream is polled once more), it died with its node (a reconnect, a
    /// leader election, a message that never arrived). A fresh one starts after the last
    /// message delivered.
    failed: bool,
}

impl LiveReader {
    /// Reads `stream`'s messages matching `filter_subjects` (all when empty) after stream
    /// sequence `after` (0: from the first). Returns the reader and how many matching messages
    /// the stream held beyond `after` when it began.
    pub async fn start(
        client: &async_nats::Client,
        stream: jetstream::stream::Stream,
        filter_subjects: Vec<String>,
        after: u64,
    ) -> Result<(Self, u64), LiveReadError> {
        Self::start_at(client, stream, filter_subjects, after_sequence(after)).await
    }

    /// The same from any start (`DeliverPolicy::ByStartTime` for "the last ten minutes").
    pub async fn start_at(
        client: &async_nats::Client,
        stream: jetstream::stream::Stream,
        filter_subjects: Vec<String>,
        start: DeliverPolicy,
    ) -> Result<(Self, u64), LiveReadError> {
        let reconnects = ReconnectWatch::new(client);
        let name = stream.cached_info().config.name.clone();
        let (messages, pending) =
            ordered(client, &stream, &name, filter_subjects.clone(), start).await?;
        let mut check = tokio::time::interval(RECONNECT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let leader_elected = match client
            .subscribe(wasmbed_schemas::subject::stream_leader_elected(&name))
            .await
        {
            Ok(subscriber) => Some(subscriber),
            Err(e) => {
                warn!(error = %e, stream = name, "leader elections not followed");
                None
            }
        };
        let reader = Self {
            messages,
            client: client.clone(),
            stream,
            name,
            filter_subjects,
            start,
            last_sequence: 0,
            reconnects,
            check,
            leader_elected,
            heard: tokio::time::Instant::now(),
            probe_after: SILENCE,
            failed: false,
        };
        Ok((reader, pending))
    }

    /// The next message; waits for one once caught up. After an error the next call reads from
    /// a fresh consumer, right after the last message delivered; while none can be made (the
    /// connection is gone) each call waits a moment and returns why. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<Message, LiveReadError>> {
        let message = loop {
            if self.failed {
                self.check.tick().await;
                if let Err(e) = self.resume().await {
                    return Some(Err(e));
                }
                self.failed = false;
                continue;
            }
            tokio::select! {
                message = self.messages.next() => break message?,
                _ = self.check.tick() => {
                    if self.reconnects.reconnected() {
                        debug!(stream = self.name, "reconnected: a fresh consumer");
                        self.failed = true;
                    } else if self.heard.elapsed() >= self.probe_after {
                        self.heard = tokio::time::Instant::now();
                        match self.missed_a_message().await {
                            Some(missed) => {
                                self.failed = missed;
                                // The stream answered: ask less often while it stays quiet.
                                self.probe_after = (self.probe_after * 2).min(MAX_PROBE_INTERVAL);
                            }
                            // No answer (an election): ask again soon.
                            None => self.probe_after = SILENCE,
                        }
                    }
                }
                Some(_) = next_advisory(&mut self.leader_elected) => {
                    debug!(stream = self.name, "new stream leader: a fresh consumer");
                    self.failed = true;
                }
            }
        };
        Some(match message {
            Ok(message) => {
                self.heard = tokio::time::Instant::now();
                self.probe_after = SILENCE;
                if let Ok(info) = message.info() {
                    self.last_sequence = info.stream_sequence;
                }
                Ok(message)
            }
            Err(e) => {
                self.failed = true;
                Err(read_error(&self.name, e))
            }
        })
    }

    /// Whether the stream holds a message for this reader, stored a while ago, that never
    /// arrived: the consumer died with the server that held it (a cluster node killed without
    /// a leader election of the stream), or is stuck. A new message still on its way is not
    /// counted (the server's clock is compared with this one: they are assumed within a
    /// second; a larger skew costs only needless fresh consumers). `None` when the stream did
    /// not answer.
    async fn missed_a_message(&mut self) -> Option<bool> {
        let from = match (self.last_sequence, self.start) {
            (0, DeliverPolicy::All) => 1,
            (0, DeliverPolicy::ByStartSequence { start_sequence }) => start_sequence,
            // Started at a time or at the end: nothing to compare with before a first message.
            (0, _) => return Some(false),
            (last, _) => last.saturating_add(1),
        };
        let filters = match self.filter_subjects.as_slice() {
            [] => vec![">".to_owned()],
            filters => filters.to_vec(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        for filter in filters {
            let first = match self
                .stream
                .get_first_raw_message_by_subject(&filter, from)
                .await
            {
                Ok(first) => first,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue,
                Err(_) => return None,
            };
            if now - first.time.unix_timestamp_nanos() > SILENCE.as_nanos() as i128 {
                warn!(
                    stream = self.name,
                    missed = first.sequence,
                    "a stored message never arrived: a fresh consumer"
                );
                return Some(true);
            }
        }
        Some(false)
    }

    /// A fresh consumer right after the last delivered message.
    async fn resume(&mut self) -> Result<(), LiveReadError> {
        let filters = self.filter_subjects.clone();
        let from = match self.last_sequence {
            0 => self.start,
            last => after_sequence(last),
        };
        // A consumer made while the stream elects a leader can wait long: give up and try again.
        let made = tokio::time::timeout(
            RESUME_TIMEOUT,
            ordered(&self.client, &self.stream, &self.name, filters, from),
        )
        .await
        .map_err(|_| read_error(&self.name, "a fresh consumer took too long"))?;
        let (messages, _) = made?;
        debug!(
            stream = self.name,
            after = self.last_sequence,
            "resumed with a fresh consumer"
        );
        self.messages = messages;
        Ok(())
    }
}

/// The next advisory, or never when there is no subscription.
async fn next_advisory(
    subscriber: &mut Option<async_nats::Subscriber>,
) -> Option<async_nats::Message> {
    match subscriber {
        Some(subscriber) => subscriber.next().await,
        None => std::future::pending().await,
    }
}

fn read_error(stream: &str, e: impl std::fmt::Display) -> LiveReadError {
    LiveReadError {
        stream: stream.to_owned(),
        reason: e.to_string(),
    }
}

async fn ordered(
    client: &async_nats::Client,
    stream: &jetstream::stream::Stream,
    name: &str,
    filter_subjects: Vec<String>,
    deliver_policy: DeliverPolicy,
) -> Result<(push::Ordered, u64), LiveReadError> {
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subjects,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| read_error(name, e))?;
    let pending = consumer.cached_info().num_pending;
    Ok((
        consumer.messages().await.map_err(|e| read_error(name, e))?,
        pending,
    ))
}

/// Delivery from the message after stream sequence `after` (0: from the first).
pub(crate) fn after_sequence(after: u64) -> DeliverPolicy {
    match after {
        0 => DeliverPolicy::All,
        after => DeliverPolicy::ByStartSequence {
            start_sequence: after.saturating_add(1),
        },
    }
}
