//! Live streams as Server-Sent Events: the event log, one device's telemetry, one device's UART
//! and log lines. Each stream lives as long as the client listens.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use std::marker::PhantomData;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::rest::{LoggedEvent, TelemetryMessage};
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AppId, DeviceId};

use crate::Api;
use crate::error::ApiError;
use crate::io::{DevicePath, EventStream, InPath};

type Boxed = std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>>;
pub(crate) type Events = Sse<axum::response::sse::KeepAliveStream<Boxed>>;

fn sse(stream: impl Stream<Item = SseEvent> + Send + 'static) -> Events {
    let boxed: Boxed = Box::pin(stream.map(Ok));
    Sse::new(boxed).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /api/v1/stream/events` parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct StreamQuery {
    /// Start after this sequence (default: the live end). `Last-Event-ID` does the same.
    after: Option<u64>,
    /// The token, for `EventSource`, which cannot set headers.
    #[allow(dead_code)]
    token: Option<String>,
}

/// The log, live: `id` is the sequence (so `EventSource` resumes by itself), `event` the type.
pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<EventStream<LoggedEvent>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = q.after.or(resume).unwrap_or_else(|| api.view().sequence);
    let follow = api
        .log
        .follow_after(Vec::new(), after)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        loop {
            match follow.next().await? {
                Ok((stored, _)) => {
                    let name = stored.envelope.event.type_name();
                    let event = SseEvent::default()
                        .id(stored.sequence.to_string())
                        .event(name)
                        .json_data(LoggedEvent {
                            sequence: stored.sequence,
                            envelope: stored.envelope,
                        })
                        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                    return Some((event, follow));
                }
                Err(e) => tracing::warn!(error = %e, "event skipped in a stream"),
            }
        }
    });
    Ok(EventStream(sse(stream), PhantomData))
}

fn device(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(raw).map_err(|e| ApiError::BadRequest(format!("device id {raw:?}: {e}")))
}

async fn subscribe(api: &Api, subject: String) -> Result<async_nats::Subscriber, ApiError> {
    api.client
        .subscribe(subject)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// One device's telemetry, live.
pub(crate) async fn telemetry(
    State(api): State<Arc<Api>>,
    InPath(DevicePath { id }): InPath<DevicePath>,
) -> Result<EventStream<TelemetryMessage>, ApiError> {
    let id = device(&id)?;
    let messages = subscribe(&api, subject::telemetry_of_device(&id)).await?;
    let stream = messages.filter_map(|m| async move {
        let (device, app) = subject::parse_telemetry(m.subject.as_str())?;
        let headers = m.headers.unwrap_or_default();
        let message = TelemetryMessage {
            device_id: DeviceId::new(device).ok()?,
            app_id: AppId::new(app).ok()?,
            seq: headers
                .get(header::SEQUENCE)
                .and_then(|v| v.as_str().parse().ok()),
            topic: headers.get(header::TOPIC).map(|v| v.as_str().to_owned()),
            text: std::str::from_utf8(&m.payload).ok().map(str::to_owned),
            payload: Blob(m.payload.to_vec()),
        };
        SseEvent::default()
            .event("telemetry")
            .json_data(message)
            .ok()
    });
    Ok(EventStream(sse(stream), PhantomData))
}

/// One device's emulator UART output and log lines, live (`event: uart` with the raw text,
/// `event: log` with a `DeviceLogLine`).
pub(crate) async fn console(
    State(api): State<Arc<Api>>,
    InPath(DevicePath { id }): InPath<DevicePath>,
) -> Result<EventStream<String>, ApiError> {
    let id = device(&id)?;
    let uart = subscribe(&api, subject::emulator_uart(&id))
        .await?
        .map(|m| {
            SseEvent::default()
                .event("uart")
                .data(String::from_utf8_lossy(&m.payload).replace('\r', ""))
        });
    let logs = subscribe(&api, subject::device_log(&id)).await?.map(|m| {
        SseEvent::default()
            .event("log")
            .data(String::from_utf8_lossy(&m.payload))
    });
    Ok(EventStream(
        sse(futures::stream::select(uart, logs)),
        PhantomData,
    ))
}
