//! Commands over NATS request/reply, typed by [`wasmbed_schemas::command::Command`].
//!
//! - [`call`]: send a command, get its typed reply. A transport failure (no service, timeout)
//!   is [`CallError::Transport`]; a refusal by the service is [`CallError::Refused`].
//! - [`Router`] + [`serve`]: a service's side. Requests are decoded per command, handled
//!   concurrently (bounded), drained on shutdown, and always answered: a body that does not decode gets
//!   `invalid_request` naming the field, an unknown command gets `invalid_request` too.

mod metrics;
pub mod trace;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};
use wasmbed_schemas::command::{Command, CommandError, ErrorCode, Reply};
use wasmbed_schemas::subject::{self, Service};

/// Why a command call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No answer: no service listening, timeout, or connection trouble. The command may or may
    /// not have been carried out.
    #[error("no answer to {subject}: {reason}")]
    Transport {
        /// The command subject.
        subject: String,
        /// What happened.
        reason: String,
    },
    /// The service answered and refused; nothing happened.
    #[error("refused: {0}")]
    Refused(CommandError),
    /// The answer is not a reply of this command (a version mismatch).
    #[error("undecodable reply from {subject}: {source}")]
    BadReply {
        /// The command subject.
        subject: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// Sends `command` and waits up to `timeout` for its reply.
pub async fn call<C: Command>(
    client: &async_nats::Client,
    command: &C,
    timeout: Duration,
) -> Result<C::Reply, CallError> {
    let sent = std::time::Instant::now();
    let span = info_span!("call", command = C::NAME, otel.kind = "client");
    let result = call_once(client, command, timeout).instrument(span).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(CallError::Refused(_)) => "refused",
        Err(_) => "unanswered",
    };
    metrics::round_trip(C::NAME, outcome, sent.elapsed());
    result
}

async fn call_once<C: Command>(
    client: &async_nats::Client,
    command: &C,
    timeout: Duration,
) -> Result<C::Reply, CallError> {
    let subject = C::subject();
    let body = serde_json::to_vec(command).map_err(|source| CallError::BadReply {
        subject: subject.clone(),
        source,
    })?;
    let mut request = async_nats::Request::new()
        .payload(body.into())
        .timeout(Some(timeout));
    if let Some(headers) = trace::current_headers() {
        request = request.headers(headers);
    }
    let message = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| CallError::Transport {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
    let reply: Reply<C::Reply> =
        serde_json::from_slice(&message.payload).map_err(|source| CallError::BadReply {
            subject: subject.clone(),
            source,
        })?;
    reply.into_result().map_err(CallError::Refused)
}

type BoxFuture = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
type Handler<S> = Box<dyn Fn(Arc<S>, Bytes) -> BoxFuture + Send + Sync>;

/// The commands one service answers, each with its handler over shared state `S`.
pub struct Router<S> {
    service: Service,
    handlers: HashMap<&'static str, Handler<S>>,
}

impl<S: Send + Sync + 'static> Router<S> {
    /// An empty router for `service`.
    pub fn new(service: Service) -> Self {
        Self {
            service,
            handlers: HashMap::new(),
        }
    }

    /// Answers command `C` with `handler`.
    pub fn route<C, F, Fut>(mut self, handler: F) -> Self
    where
        C: Command + Send + 'static,
        C::Reply: Send,
        F: Fn(Arc<S>, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C::Reply, CommandError>> + Send + 'static,
    {
        assert_eq!(
            C::SERVICE,
            self.service,
            "{} routed to the wrong service",
            C::NAME
        );
        let handler = Arc::new(handler);
        self.handlers.insert(
            C::NAME,
            Box::new(move |state, body| {
                let handler = handler.clone();
                Box::pin(async move {
                    let reply: Reply<C::Reply> = match serde_json::from_slice::<C>(&body) {
                        Ok(command) => handler(state, command).await.into(),
                        Err(e) => Reply::error(
                            ErrorCode::InvalidRequest,
                            format!("invalid {} request: {e}", C::NAME),
                        ),
                    };
                    encode_reply(&reply)
                })
            }),
        );
        self
    }
}

fn encode_reply<T: serde::Serialize>(reply: &Reply<T>) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|e| {
        let fallback: Reply<()> = Reply::error(ErrorCode::Internal, format!("encoding reply: {e}"));
        serde_json::to_vec(&fallback).unwrap_or_default()
    })
}

/// How many requests one service handles at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;

/// How long [`serve`] waits, after shutdown, for commands already being handled.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router`'s commands until `shutdown` completes. Instances of one service share a
/// queue group, so each command is handled once.
///
/// On shutdown it stops taking commands (the queue group's other members get them), then waits
/// up to `grace` for the commands it is handling: a command accepted is answered unless it
/// outlives the grace period. Returns how many were still running when the grace ran out.
///
/// `subscribed` is called once the server has the subscription (a command sent after it is
/// taken): when to say the service is ready.
pub async fn serve<S: Send + Sync + 'static>(
    client: async_nats::Client,
    router: Router<S>,
    state: Arc<S>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    subscribed: impl FnOnce(),
) -> Result<usize, async_nats::SubscribeError> {
    let service = router.service;
    let mut requests = client
        .queue_subscribe(subject::commands_of(service), service.as_str().to_owned())
        .await?;
    // The flush's PONG comes after the server processed the SUB.
    if let Err(e) = client.flush().await {
        warn!(error = %e, "subscription not confirmed; serving anyway");
    }
    subscribed();
    let router = Arc::new(router);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut handling: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = handling.join_next(), if !handling.is_empty() => continue,
            next = requests.next() => match next {
                Some(message) => message,
                None => break,
            },
        };
        let Some(reply_to) = message.reply.clone() else {
            warn!(subject = %message.subject, "command without a reply subject ignored");
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let name = message
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let span = info_span!("command", service = service.as_str(), command = %name, otel.kind = "server");
        trace::continue_from(&span, message.headers.as_ref());
        let (router, state, client) = (router.clone(), state.clone(), client.clone());
        let received = std::time::Instant::now();
        handling.spawn(
            async move {
                let handler = router.handlers.get(name.as_str());
                let body = match handler {
                    Some(handler) => handler(state, message.payload).await,
                    None => encode_reply::<()>(&Reply::error(
                        ErrorCode::InvalidRequest,
                        format!("unknown command {name:?}"),
                    )),
                };
                let sent = match trace::current_headers() {
                    Some(headers) => {
                        client
                            .publish_with_headers(reply_to, headers, body.into())
                            .await
                    }
                    None => client.publish(reply_to, body.into()).await,
                };
                if let Err(e) = sent {
                    warn!(error = %e, "reply not sent");
                }
                metrics::handled(
                    service.as_str(),
                    &name,
                    handler.is_some(),
                    received.elapsed(),
                );
                debug!("answered");
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Nothing new: what is queued goes to the other members of the group.
    if let Err(e) = requests.unsubscribe().await {
        warn!(error = %e, "unsubscribing from commands failed");
    }
    let left = drain(&mut handling, grace).await;
    if let Err(e) = client.flush().await {
        warn!(error = %e, "replies not flushed");
    }
    Ok(left)
}

/// Waits up to `grace` for every task in `tasks`, then aborts the rest; returns how many were
/// aborted.
pub async fn drain<T: 'static>(tasks: &mut JoinSet<T>, grace: Duration) -> usize {
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        return 0;
    }
    let left = tasks.len();
    warn!(
        left,
        ?grace,
        "still running after the grace period; dropped"
    );
    tasks.shutdown().await;
    left
}
