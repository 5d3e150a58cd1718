//! One device connection: TLS handshake, authentication, then the bridge loop.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, error, field, info, info_span, warn};
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::event::{DeviceConnected, DeviceDisconnected, EventEnvelope};
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::{Frame, RejectReason, Rejected};
use wasmbed_schemas::subject;

use crate::Gateway;
use crate::auth::{Refusal, authenticate, new_challenge};
use crate::bridge::uplink;
use crate::frames::{FrameReader, ReadFrameError};
use crate::metrics::Metrics;
use crate::rate::{self, SharedAllowance};
use crate::sessions::Ended;

mod decide;

pub(crate) use decide::Rules;
use decide::{Action, Input, SessionState, decide};

/// Writes one frame, giving up after `timeout` (a device that stopped reading).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
    timeout: Duration,
) -> Result<(), String> {
    let bytes = encode_to_vec(frame).map_err(|e| format!("encoding {}: {e}", frame.name()))?;
    write_bytes(writer, &bytes, timeout).await
}

async fn write_bytes<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("write timed out after {timeout:?}")),
    }
}

/// Serves one TCP connection to its end.
pub(crate) async fn serve_connection(
    gw: Arc<Gateway>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let span = info_span!("session", %remote, device = field::Empty, session = field::Empty);
    async move {
        let accepted = Instant::now();
        let remote = remote.to_string();
        let _ = tcp.set_nodelay(true);
        let (nonce, challenge) = match new_challenge(&gw.config.gateway_id) {
            Ok(challenge) => challenge,
            Err(message) => {
                return refuse_quietly(&gw, RejectReason::Unavailable, &message, &remote).await;
            }
        };
        // The challenge rides in the server's first flight (see `new_challenge`).
        let mut queued = Ok(());
        let accept = acceptor.accept_with(tcp, |tls| {
            queued = std::io::Write::write_all(&mut tls.writer(), &challenge);
        });
        if let Err(e) = queued {
            let message = format!("challenge not queued: {e}");
            return refuse_quietly(&gw, RejectReason::Unavailable, &message, &remote).await;
        }
        let tls = match tokio::time::timeout(gw.config.handshake_timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let message = format!("TLS handshake failed: {e}");
                return refuse_quietly(&gw, RejectReason::ProtocolViolation, &message, &remote)
                    .await;
            }
            Err(_) => {
                let message = format!(
                    "TLS handshake not finished within {:?}",
                    gw.config.handshake_timeout
                );
                return refuse_quietly(&gw, RejectReason::Timeout, &message, &remote).await;
            }
        };
        let fingerprints = gw.certs.fingerprints();
        let (mut reader, mut writer) = tokio::io::split(tls);
        let mut frames = FrameReader::default();
        let auth = tokio::time::timeout(
            gw.config.auth_timeout,
            authenticate(&gw, &mut frames, &mut reader, nonce, &remote, fingerprints),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Refusal {
                reason: RejectReason::Timeout,
                message: format!("not authenticated within {:?}", gw.config.auth_timeout),
                public_key: None,
                audit: true,
            })
        });
        let device = match auth {
            Ok(device) => device,
            Err(refusal) => {
                gw.metrics.refused(refusal.reason);
                // Logged at warn where it is recorded (`Gateway::audit`, rate-limited), or by
                // enrollment, which decided it.
                debug!(reason = ?refusal.reason, message = ?refusal.message, "refused");
                let rejected = Frame::Rejected(Rejected {
                    reason: refusal.reason,
                    message: refusal.message.clone(),
                });
                let _ = write_frame(&mut writer, &rejected, Duration::from_secs(1)).await;
                let _ = writer.shutdown().await;
                if refusal.audit {
                    gw.audit(
                        refusal.public_key,
                        refusal.reason,
                        &refusal.message,
                        &remote,
                    )
                    .await;
                }
                return;
            }
        };
        tracing::Span::current().record("device", field::display(&device));
        let Some(allowance) = gw.allowances.open_session(&device, Instant::now()) else {
            // A reconnect storm from one identity: no session, no event, a counter.
            gw.metrics.refused(RejectReason::RateLimited);
            debug!("refused: too many sessions lately");
            let rejected = Frame::Rejected(Rejected {
                reason: RejectReason::RateLimited,
                message: "too many sessions lately; back off before reconnecting".into(),
            });
            let _ = write_frame(&mut writer, &rejected, Duration::from_secs(1)).await;
            let _ = writer.shutdown().await;
            return;
        };
        let opened = Opened { remote, accepted };
        bridge_session(&gw, device, allowance, frames, reader, writer, opened).await;
    }
    .instrument(span)
    .await;
}

/// A refusal before any frame could be sent back (TLS never came up).
async fn refuse_quietly(gw: &Gateway, reason: RejectReason, message: &str, remote: &str) {
    gw.metrics.refused(reason);
    debug!(%message, "refused before TLS");
    gw.audit(None, reason, message, remote).await;
}

/// What a session holds while it is open: its place in the `Sessions` table and its count in
/// `sessions_active`. Dropping it gives both back, however the session ends (a panic, or its
/// task dropped, included).
struct OpenSession<'a> {
    gw: &'a Gateway,
    device: DeviceId,
    local_id: u64,
}

impl<'a> OpenSession<'a> {
    fn new(gw: &'a Gateway, device: DeviceId, local_id: u64) -> Self {
        gw.metrics.sessions_active.inc();
        Self {
            gw,
            device,
            local_id,
        }
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.gw.sessions.unregister(&self.device, self.local_id);
        self.gw.metrics.sessions_active.dec();
    }
}

/// A session id unique across gateways and restarts: 64 random bits, hex.
fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the table id and the time still tell this gateway's sessions apart.
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        bytes = now.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a connection came from, and when it was accepted.
struct Opened {
    remote: String,
    accepted: Instant,
}

async fn bridge_session<R, W>(
    gw: &Gateway,
    device: DeviceId,
    allowance: SharedAllowance,
    frames: FrameReader,
    reader: R,
    mut writer: W,
    Opened { remote, accepted }: Opened,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (local_id, ended) = gw.sessions.register(&device);
    let open = OpenSession::new(gw, device.clone(), local_id);
    let downlink = match gw.client.subscribe(subject::device_downlink(&device)).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            warn!(error = %e, "downlink subscription failed");
            return;
        }
    };
    let session_id = new_session_id();
    tracing::Span::current().record("session", field::display(&session_id));
    append(
        gw,
        DeviceConnected {
            device_id: device.clone(),
            gateway_id: gw.config.gateway_id.clone(),
            remote_addr: remote,
            session_id: Some(session_id.clone()),
        }
        .into(),
    )
    .await;
    gw.metrics.sessions_established.inc();
    Metrics::observe(&gw.metrics.session_setup, accepted.elapsed());
    info!("session open");
    // A panic inside the loop (a library's assertion on a value a device chose) ends this
    // session like any other error: the device hears nothing more, the log hears why.
    let session = Bridge {
        device: &device,
        allowance: &allowance,
        downlink,
        ended,
    };
    let serve = serve_frames(gw, session, frames, reader, &mut writer);
    let reason = AssertUnwindSafe(serve)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(panic = ?what, "session task panicked");
            "internal error: the session failed".to_owned()
        });
    let _ = writer.shutdown().await;
    drop(open);
    info!(reason = ?reason, "session closed");
    append(
        gw,
        DeviceDisconnected {
            device_id: device,
            gateway_id: gw.config.gateway_id.clone(),
            reason,
            session_id: Some(session_id),
        }
        .into(),
    )
    .await;
}

/// What one session's loop works with besides the gateway.
struct Bridge<'a> {
    device: &'a DeviceId,
    allowance: &'a SharedAllowance,
    downlink: async_nats::Subscriber,
    ended: oneshot::Receiver<Ended>,
}

/// The session's loop: Welcome, then inputs (device frames, bus messages, timers, signals)
/// until one ends it. What to do about each is `decide::decide`; this only waits and carries
/// it out. Returns why the session ended.
async fn serve_frames<R, W>(
    gw: &Gateway,
    session: Bridge<'_>,
    mut frames: FrameReader,
    mut reader: R,
    writer: &mut W,
) -> String
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Bridge {
        device,
        allowance,
        mut downlink,
        mut ended,
    } = session;
    let rules = gw.config.session_rules();
    if let Err(e) = write_frame(writer, &rules.welcome(device), gw.config.write_timeout).await {
        return e;
    }
    // Both made once per session, not once per frame: a timer re-armed on every frame costs
    // two trips to the runtime's timer wheel, which all sessions share.
    let stop = turns_true(gw.shutdown.clone()).fuse();
    tokio::pin!(stop);
    let bus_lost = turns_true(gw.bus_lost.clone()).fuse();
    tokio::pin!(bus_lost);
    let mut state = SessionState::opened(Instant::now());
    let silent = tokio::time::sleep_until(state.last_heard + rules.silence());
    tokio::pin!(silent);
    // The trace of the last traced downlink message: the device's answers (acks, statuses)
    // continue it on the uplink.
    let mut last_trace: Option<String> = None;
    loop {
        let mut traced = tracing::Span::none();
        let mut input = tokio::select! {
            // Graceful only when asked; a dropped gateway (sender gone) says nothing.
            true = &mut stop => Input::StopAsked,
            true = &mut bus_lost => Input::BusLost,
            why = &mut ended => Input::Ended(why.ok()),
            () = &mut silent => Input::SilenceTimer,
            next = frames.next(&mut reader) => match next {
                Ok(Some(frame)) => Input::Frame { frame, len: frames.last_len() },
                Ok(None) => Input::Closed,
                Err(ReadFrameError::Io(e)) => Input::ConnectionLost(e.to_string()),
                Err(ReadFrameError::Decode(e)) => Input::Undecodable(e.to_string()),
            },
            message = downlink.next() => match message {
                Some(message) => {
                    if message.headers.is_some() {
                        traced = downlink_span(device, &message);
                        last_trace = traced.in_scope(wasmbed_bus::trace::current_traceparent);
                    }
                    Input::Downlink(message.payload)
                }
                None => Input::DownlinkEnded,
            },
        };
        // Carrying out an action may itself be an input (a refused frame, a failed write).
        let ended = async {
            loop {
                let now = Instant::now();
                let action = decide(&mut state, &rules, &mut rate::lock(allowance), input, now);
                let trace = last_trace.as_deref();
                match carry_out(gw, device, writer, silent.as_mut(), action, trace).await {
                    Carried::Done => return None,
                    Carried::Then(next) => input = next,
                    Carried::Ended(reason) => return Some(reason),
                }
            }
        }
        .instrument(traced)
        .await;
        if let Some(reason) = ended {
            return reason;
        }
    }
}

/// A span for a downlink message that carries a trace (a deployment's frames), continuing it
/// and linked to the device's session.
fn downlink_span(device: &DeviceId, message: &async_nats::Message) -> tracing::Span {
    let frame = wasmbed_schemas::frame::codec::decode(&message.payload)
        .map_or("undecodable", |(frame, _)| frame.name());
    let span = info_span!("downlink", %device, frame, otel.kind = "consumer");
    wasmbed_bus::trace::continue_from(&span, message.headers.as_ref());
    // Made while the session's span is current: linked to it.
    wasmbed_bus::trace::link_current(&span);
    span
}

/// What came of carrying out one action.
enum Carried {
    /// Wait for the next input.
    Done,
    /// Carrying it out produced this input.
    Then(Input),
    /// The session is over, for this reason.
    Ended(String),
}

/// Carries out `action` for `device`'s session: bytes to the bus or the device, the timer, a log
/// line, or the session's end.
async fn carry_out<W: AsyncWrite + Unpin>(
    gw: &Gateway,
    device: &DeviceId,
    writer: &mut W,
    silent: std::pin::Pin<&mut tokio::time::Sleep>,
    action: Action,
    trace: Option<&str>,
) -> Carried {
    match action {
        Action::Forward(frame) => match uplink(gw, device, frame, writer, trace).await {
            Ok(()) => Carried::Done,
            Err(reason) => Carried::Then(Input::UplinkRefused(reason)),
        },
        Action::Deliver(bytes) => {
            match write_bytes(writer, &bytes, gw.config.write_timeout).await {
                Ok(()) => {
                    gw.metrics.frames_out.inc();
                    Carried::Done
                }
                Err(e) => Carried::Then(Input::WriteFailed(e)),
            }
        }
        Action::Rearm(deadline) => {
            silent.reset(deadline);
            Carried::Done
        }
        Action::Drop(why) => {
            warn!("{why}; dropped");
            Carried::Done
        }
        Action::End(ending) => {
            if ending.over_budget() {
                gw.metrics.rate_limited.inc();
            }
            if let Some(frame) = &ending.tell {
                let _ = write_frame(writer, frame, Duration::from_secs(1)).await;
            }
            Carried::Ended(ending.reason)
        }
    }
}

/// Completes with `true` when the gateway's flag (asked to stop, cut off from the bus) turns
/// true, `false` if the gateway is gone without saying.
async fn turns_true(mut flag: tokio::sync::watch::Receiver<bool>) -> bool {
    flag.wait_for(|set| *set).await.is_ok()
}

async fn append(gw: &Gateway, event: wasmbed_schemas::event::Event) {
    if let Err(e) = gw
        .log
        .append(ExpectedVersion::Any, &EventEnvelope::new(event))
        .await
    {
        warn!(error = %e, "session event not recorded");
    }
}
