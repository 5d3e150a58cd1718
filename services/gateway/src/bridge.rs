//! Uplink: what a device's frames become on the bus. Every subject is built from the
//! authenticated device id, never from anything in the frame.

use async_nats::HeaderMap;
use chrono::Utc;
use tokio::io::AsyncWrite;
use tracing::info_span;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::device_message::{DeviceLogLine, HeartbeatReport};
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::{Frame, HeartbeatAck, Telemetry};
use wasmbed_schemas::host_api;
use wasmbed_schemas::subject::{self, header};

use crate::Gateway;
use crate::metrics::Metrics;
use crate::session::write_frame;

/// Handles one frame from an authenticated device. An `Err` ends the session with that reason.
pub(crate) async fn uplink<W: AsyncWrite + Unpin>(
    gw: &Gateway,
    device: &DeviceId,
    frame: Frame,
    writer: &mut W,
    trace: Option<&str>,
) -> Result<(), String> {
    gw.metrics.frames_in.inc();
    match frame {
        Frame::Heartbeat(beat) => {
            write_frame(
                writer,
                &Frame::HeartbeatAck(HeartbeatAck { seq: beat.seq }),
                gw.config.write_timeout,
            )
            .await?;
            gw.metrics.frames_out.inc();
            let report = HeartbeatReport {
                device_id: device.clone(),
                gateway_id: gw.config.gateway_id.clone(),
                seq: beat.seq,
                uptime_ms: beat.uptime_ms,
                received_at: Utc::now(),
            };
            publish_json(gw, subject::device_heartbeat(device), &report).await
        }
        Frame::Telemetry(t) => {
            let read = std::time::Instant::now();
            let headers = telemetry_headers(device, &t)?;
            let bytes = t.payload.len() as u64;
            gw.client
                .publish_with_headers(
                    subject::telemetry(device, &t.app_id),
                    headers,
                    t.payload.into(),
                )
                .await
                .map_err(|e| format!("bus unavailable: {e}"))?;
            Metrics::observe(&gw.metrics.telemetry_forward, read.elapsed());
            gw.metrics.telemetry_messages.inc();
            gw.metrics.telemetry_bytes.inc_by(bytes);
            Ok(())
        }
        Frame::Log(line) => {
            let line = DeviceLogLine {
                device_id: device.clone(),
                app_id: line.app_id,
                level: line.level,
                message: line.message,
                received_at: Utc::now(),
            };
            publish_json(gw, subject::device_log(device), &line).await
        }
        frame @ (Frame::AppStatus(_)
        | Frame::ModuleAck(_)
        | Frame::DeviceInfo(_)
        | Frame::Error(_)) => {
            let bytes = encode_to_vec(&frame).map_err(|e| format!("re-encoding: {e}"))?;
            let to = subject::device_uplink(device);
            // An answer to a traced downlink continues its trace.
            let headers = trace.and_then(|trace| {
                let span =
                    info_span!("uplink", %device, frame = frame.name(), otel.kind = "producer");
                wasmbed_bus::trace::continue_traceparent(&span, trace);
                wasmbed_bus::trace::link_current(&span);
                span.in_scope(wasmbed_bus::trace::current_headers)
            });
            match headers {
                Some(headers) => {
                    gw.client
                        .publish_with_headers(to, headers, bytes.into())
                        .await
                }
                None => gw.client.publish(to, bytes.into()).await,
            }
            .map_err(|e| format!("bus unavailable: {e}"))
        }
        other => Err(format!(
            "protocol violation: {} is not a device frame after authentication",
            other.name()
        )),
    }
}

/// The headers a device's telemetry is published with, or why the frame is refused: the
/// topic goes into a header value, where CR or LF would end the header (and async-nats
/// asserts against them). Public so the frame fuzz target runs exactly this.
pub fn telemetry_headers(device: &DeviceId, t: &Telemetry) -> Result<HeaderMap, String> {
    if !host_api::is_valid_topic(&t.topic) {
        return Err(format!(
            "protocol violation: a telemetry topic must be at most {} bytes without control characters",
            host_api::MAX_TOPIC_LEN
        ));
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::DEVICE, device.as_str());
    headers.insert(header::APP, t.app_id.as_str());
    headers.insert(header::SEQUENCE, t.seq.to_string().as_str());
    headers.insert(header::TOPIC, t.topic.as_str());
    Ok(headers)
}

async fn publish_json<T: serde::Serialize>(
    gw: &Gateway,
    subject: String,
    value: &T,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| format!("encoding: {e}"))?;
    gw.client
        .publish(subject, bytes.into())
        .await
        .map_err(|e| format!("bus unavailable: {e}"))
}
