//! One device connection: TLS handshake, authentication, then the bridge loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, field, info, info_span, warn};
use wasmbed_eventlog::ExpectedVersion;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::event::{DeviceConnected, DeviceDisconnected, EventEnvelope};
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::{
    ErrorFrame, Frame, FrameErrorCode, GoAway, MAX_FRAME_LEN, RejectReason, Rejected, Welcome,
};
use wasmbed_schemas::subject;

use crate::Gateway;
use crate::auth::{Refusal, authenticate, new_challenge};
use crate::bridge::uplink;
use crate::frames::{FrameReader, ReadFrameError};
use crate::metrics::inc;
use crate::rate::UplinkBudget;

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

/// The sessions this gateway holds, one per device: a newer session of the same device
/// replaces the older one.
#[derive(Default)]
pub(crate) struct Sessions {
    next_id: AtomicU64,
    by_device: std::sync::Mutex<HashMap<DeviceId, (u64, oneshot::Sender<()>)>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, (u64, oneshot::Sender<()>)>> {
        self.by_device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session of `device`; returns its id and a signal that fires when a newer
    /// session replaces it.
    fn register(&self, device: &DeviceId) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Some((_, older)) = self.lock().insert(device.clone(), (id, tx)) {
            let _ = older.send(());
        }
        (id, rx)
    }

    fn unregister(&self, device: &DeviceId, id: u64) {
        let mut map = self.lock();
        if map.get(device).is_some_and(|(current, _)| *current == id) {
            map.remove(device);
        }
    }

    /// How many devices have a session.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
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
    let span = info_span!("session", %remote, device = field::Empty);
    async move {
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
                info!(reason = ?refusal.reason, message = %refusal.message, "refused");
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
        bridge_session(&gw, device, frames, reader, writer, remote).await;
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

async fn bridge_session<R, W>(
    gw: &Gateway,
    device: DeviceId,
    mut frames: FrameReader,
    mut reader: R,
    mut writer: W,
    remote: String,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (session_id, mut replaced) = gw.sessions.register(&device);
    let mut downlink = match gw.client.subscribe(subject::device_downlink(&device)).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            warn!(error = %e, "downlink subscription failed");
            gw.sessions.unregister(&device, session_id);
            return;
        }
    };
    append(
        gw,
        DeviceConnected {
            device_id: device.clone(),
            gateway_id: gw.config.gateway_id.clone(),
            remote_addr: remote,
        }
        .into(),
    )
    .await;
    let welcome = Frame::Welcome(Welcome {
        device_id: device.clone(),
        heartbeat_interval_ms: u32::try_from(gw.config.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        max_frame_len: MAX_FRAME_LEN as u32,
    });
    inc(&gw.metrics.sessions_established);
    gw.metrics.sessions_active.fetch_add(1, Ordering::Relaxed);
    info!("session open");

    let silence = gw.config.heartbeat_interval * gw.config.missed_heartbeats;
    // Both made once per session, not once per frame: a timer re-armed on every frame costs
    // two trips to the runtime's timer wheel, which all sessions share.
    let stop = asked_to_stop(gw.shutdown.clone()).fuse();
    tokio::pin!(stop);
    // Only the device's own frames count as a sign of life.
    let mut last_heard = Instant::now();
    let silent = tokio::time::sleep_until(last_heard + silence);
    tokio::pin!(silent);
    let mut budget = UplinkBudget::new(
        gw.config.uplink_bytes_per_second,
        gw.config.uplink_burst_bytes,
        last_heard,
    );
    let reason = match write_frame(&mut writer, &welcome, gw.config.write_timeout).await {
        Err(e) => e,
        Ok(()) => loop {
            tokio::select! {
                // Graceful only when asked; a dropped gateway (sender gone) says nothing.
                true = &mut stop => {
                    let go_away = Frame::GoAway(GoAway {
                        reason: "gateway shutting down".into(),
                        reconnect_after_ms: u32::try_from(gw.config.reconnect_after.as_millis()).unwrap_or(u32::MAX),
                    });
                    let _ = write_frame(&mut writer, &go_away, Duration::from_secs(1)).await;
                    break "gateway shutdown".to_owned();
                }
                _ = &mut replaced => break "replaced by a newer session of the device".to_owned(),
                () = &mut silent => {
                    // Set for the silence since the last frame as it stood when armed; frames
                    // since then move it on.
                    let deadline = last_heard + silence;
                    if Instant::now() >= deadline {
                        break format!("heartbeat timeout: silent for {silence:?}");
                    }
                    silent.as_mut().reset(deadline);
                }
                next = frames.next(&mut reader) => match next {
                    Ok(Some(frame)) => {
                        last_heard = Instant::now();
                        if !budget.spend(frames.last_len(), last_heard) {
                            inc(&gw.metrics.rate_limited);
                            let reason = format!(
                                "uplink rate limit exceeded: over {} bytes/s (burst {})",
                                gw.config.uplink_bytes_per_second, gw.config.uplink_burst_bytes
                            );
                            send_error(&mut writer, FrameErrorCode::ResourceExhausted, &reason).await;
                            break reason;
                        }
                        if let Err(reason) = uplink(gw, &device, frame, &mut writer).await {
                            send_error(&mut writer, FrameErrorCode::Malformed, &reason).await;
                            break reason;
                        }
                    }
                    Ok(None) => break "closed by the device".to_owned(),
                    Err(ReadFrameError::Io(e)) => break format!("connection lost: {e}"),
                    Err(ReadFrameError::Decode(e)) => {
                        let reason = format!("protocol violation: {e}");
                        send_error(&mut writer, FrameErrorCode::Malformed, &reason).await;
                        break reason;
                    }
                },
                message = downlink.next() => match message {
                    Some(message) => {
                        // Only whole, valid frames reach a device.
                        match decode(&message.payload) {
                            Ok((_, used)) if used == message.payload.len() => {
                                if let Err(e) = write_bytes(&mut writer, &message.payload, gw.config.write_timeout).await {
                                    break e;
                                }
                                inc(&gw.metrics.frames_out);
                            }
                            _ => warn!("downlink message is not exactly one frame; dropped"),
                        }
                    }
                    None => break "bus subscription ended".to_owned(),
                },
            }
        },
    };
    let _ = downlink.unsubscribe().await;
    let _ = writer.shutdown().await;
    gw.sessions.unregister(&device, session_id);
    gw.metrics.sessions_active.fetch_sub(1, Ordering::Relaxed);
    info!(%reason, "session closed");
    append(
        gw,
        DeviceDisconnected {
            device_id: device,
            gateway_id: gw.config.gateway_id.clone(),
            reason,
        }
        .into(),
    )
    .await;
}

/// Completes with `true` when the gateway asks sessions to stop, `false` if the gateway is
/// gone without asking.
async fn asked_to_stop(mut shutdown: tokio::sync::watch::Receiver<bool>) -> bool {
    shutdown.wait_for(|stop| *stop).await.is_ok()
}

/// Tells the device why its session ends (best effort: it may not be listening).
async fn send_error<W: AsyncWrite + Unpin>(writer: &mut W, code: FrameErrorCode, reason: &str) {
    let frame = Frame::Error(ErrorFrame {
        code,
        app_id: None,
        message: reason.to_owned(),
    });
    let _ = write_frame(writer, &frame, Duration::from_secs(1)).await;
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
