//! The routes. Writes become commands on the bus (request/reply; a refusal keeps its code as an
//! HTTP status); reads come from the fleet read model ([`wasmbed_fleet::Fleet`]) projected from the log.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use prometheus_client::metrics::gauge::Gauge;
use std::marker::PhantomData;

use axum::extract::{Multipart, Query, State};
use schemars::JsonSchema;
use serde::Deserialize;
use wasmbed_bus::call;
use wasmbed_eventlog::modules::{MAX_MODULE_LEN, upload_module};
use wasmbed_schemas::command::{
    Command, CreateApplication, DecommissionDevice, DeleteApplication, DeployApplication,
    RegisterDevice, RestartEmulator, RevokePublisher, StartEmulator, StopApplication, StopEmulator,
    TrustPublisher, UpdateApplication,
};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::release::SignedRelease;
use wasmbed_schemas::rest::{
    ApplicationView, Decommission, DeviceState, DeviceView, EmulatorView, EventPage, GatewayView,
    LoggedEvent, NewApplication, NewEmulator, Recorded, TrustView,
};
use wasmbed_schemas::{AggregateKind, AppId, DeviceId, subject};

use crate::Api;
use crate::error::ApiError;
use crate::io::{
    AppPath, Created, DevicePath, InPath, JsonList, MetricsText, OptionalBody, UploadBody,
};

type S = State<Arc<Api>>;

/// How long a command may take before the api answers 503.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn send<C: Command>(api: &Api, command: &C) -> Result<C::Reply, ApiError> {
    Ok(call(&api.client, command, COMMAND_TIMEOUT).await?)
}

pub(crate) fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("request body: {}", e.body_text())))
}

fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(raw).map_err(|e| ApiError::BadRequest(format!("device id {raw:?}: {e}")))
}

pub(crate) fn app_id(raw: &str) -> Result<AppId, ApiError> {
    AppId::new(raw).map_err(|e| ApiError::BadRequest(format!("application id {raw:?}: {e}")))
}

/// A cached list as a JSON response.
fn json_list<T>(
    api: &Api,
    name: &'static str,
    render: impl FnOnce(&wasmbed_fleet::Fleet) -> serde_json::Result<Vec<u8>>,
) -> Result<JsonList<T>, ApiError> {
    let bytes = api
        .cached_list(name, render)
        .map_err(|e| ApiError::Unavailable(format!("encoding: {e}")))?;
    Ok(JsonList(bytes, PhantomData))
}

pub(crate) async fn list_devices(State(api): S) -> Result<JsonList<DeviceView>, ApiError> {
    json_list(&api, "devices", |view| {
        serde_json::to_vec(&view.device_views().collect::<Vec<DeviceView>>())
    })
}

pub(crate) async fn show_device(
    State(api): S,
    InPath(DevicePath { id }): InPath<DevicePath>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    match api.view().device_view(&id) {
        Some(view) if view.state == DeviceState::Decommissioned => {
            Err(ApiError::NotFound(format!(
                "device {id} is decommissioned; its history: /api/v1/events?kind=device&id={id}"
            )))
        }
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::NotFound(format!("no device {id}"))),
    }
}

pub(crate) async fn register_device(
    State(api): S,
    json: Result<Json<RegisterDevice>, JsonRejection>,
) -> Result<Created<Recorded>, ApiError> {
    let command = body(json)?;
    let accepted = send(&api, &command).await?;
    api.wait_for(accepted.sequence).await;
    Ok(Created(Recorded {
        sequence: accepted.sequence,
        sha256: None,
    }))
}

pub(crate) async fn decommission_device(
    State(api): S,
    InPath(DevicePath { id }): InPath<DevicePath>,
    OptionalBody(body): OptionalBody<Decommission>,
) -> Result<Json<Recorded>, ApiError> {
    let reason = body
        .and_then(|d| d.reason)
        .unwrap_or_else(|| "decommissioned through the api".to_owned());
    let command = DecommissionDevice {
        device_id: device_id(&id)?,
        reason,
    };
    forward(&api, command).await
}

pub(crate) async fn list_apps(State(api): S) -> Result<JsonList<ApplicationView>, ApiError> {
    json_list(&api, "applications", |view| {
        serde_json::to_vec(&view.app_views().collect::<Vec<ApplicationView>>())
    })
}

pub(crate) async fn show_app(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<ApplicationView>, ApiError> {
    let id = app_id(&id)?;
    api.view()
        .app_view(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no application {id}")))
}

/// The parts of a multipart upload: `metadata` (JSON), `module` (bytes) and `release` (JSON
/// of a signed release, optional).
pub(crate) struct Upload {
    pub(crate) metadata: Option<Vec<u8>>,
    pub(crate) module: Option<Vec<u8>>,
    pub(crate) release: Option<SignedRelease>,
}

pub(crate) async fn read_upload(mut multipart: Multipart) -> Result<Upload, ApiError> {
    let mut upload = Upload {
        metadata: None,
        module: None,
        release: None,
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("multipart body: {}", e.body_text()))
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "metadata" => upload.metadata = Some(bytes.to_vec()),
            "release" => {
                let release = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::BadRequest(format!("release: {e}")))?;
                upload.release = Some(release);
            }
            "module" => {
                if bytes.len() > MAX_MODULE_LEN {
                    return Err(ApiError::BadRequest(format!(
                        "module: {} bytes; at most {MAX_MODULE_LEN}",
                        bytes.len()
                    )));
                }
                upload.module = Some(bytes.to_vec());
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown multipart field {other:?}; expected metadata, module and release"
                )));
            }
        }
    }
    Ok(upload)
}

pub(crate) async fn store_module(
    api: &Api,
    module: Option<Vec<u8>>,
) -> Result<wasmbed_schemas::Sha256, ApiError> {
    let module = module.ok_or_else(|| ApiError::BadRequest("module: missing".to_owned()))?;
    upload_module(api.log.jetstream(), &module)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// Limits for apps created without any.
pub const DEFAULT_LIMITS: Limits = Limits {
    fuel_per_invocation: 1_000_000,
    max_memory_pages: 2,
    tick_interval_ms: 1000,
};

pub(crate) async fn create_app(
    State(api): S,
    UploadBody(multipart, _): UploadBody<(NewApplication,)>,
) -> Result<Created<Recorded>, ApiError> {
    let upload = read_upload(multipart).await?;
    let metadata = upload
        .metadata
        .ok_or_else(|| ApiError::BadRequest("metadata: missing".to_owned()))?;
    let new: NewApplication = serde_json::from_slice(&metadata)
        .map_err(|e| ApiError::BadRequest(format!("metadata: {e}")))?;
    let sha256 = store_module(&api, upload.module).await?;
    let command = CreateApplication {
        name: new.name.unwrap_or_else(|| new.app_id.to_string()),
        app_id: new.app_id,
        module_sha256: sha256,
        target: new.target,
        config: new.config,
        limits: new.limits.unwrap_or(DEFAULT_LIMITS),
        release: upload.release,
    };
    let accepted = send(&api, &command).await?;
    api.wait_for(accepted.sequence).await;
    Ok(Created(Recorded {
        sequence: accepted.sequence,
        sha256: Some(sha256),
    }))
}

pub(crate) async fn update_app(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
    UploadBody(multipart, _): UploadBody<()>,
) -> Result<Json<Recorded>, ApiError> {
    let app_id = app_id(&id)?;
    let upload = read_upload(multipart).await?;
    let sha256 = store_module(&api, upload.module).await?;
    let accepted = send(
        &api,
        &UpdateApplication {
            app_id,
            module_sha256: sha256,
            release: upload.release,
        },
    )
    .await?;
    api.wait_for(accepted.sequence).await;
    Ok(Json(Recorded {
        sequence: accepted.sequence,
        sha256: Some(sha256),
    }))
}

/// Sends a command whose result is an event, and answers once the view holds that event.
pub(crate) async fn forward<C: Command<Reply = wasmbed_schemas::command::Accepted>>(
    api: &Api,
    command: C,
) -> Result<Json<Recorded>, ApiError> {
    let accepted = send(api, &command).await?;
    api.wait_for(accepted.sequence).await;
    Ok(Json(Recorded {
        sequence: accepted.sequence,
        sha256: None,
    }))
}

pub(crate) async fn show_trust(State(api): S) -> Json<TrustView> {
    Json(api.view().trust_view())
}

pub(crate) async fn trust_publisher(
    State(api): S,
    json: Result<Json<TrustPublisher>, JsonRejection>,
) -> Result<Json<Recorded>, ApiError> {
    forward(&api, body(json)?).await
}

pub(crate) async fn revoke_publisher(
    State(api): S,
    json: Result<Json<RevokePublisher>, JsonRejection>,
) -> Result<Json<Recorded>, ApiError> {
    forward(&api, body(json)?).await
}

pub(crate) async fn deploy_app(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        DeployApplication {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn stop_app(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        StopApplication {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn delete_app(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        DeleteApplication {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn list_emulators(State(api): S) -> Json<Vec<EmulatorView>> {
    Json(api.view().emulators.values().cloned().collect())
}

pub(crate) async fn start_emulator(
    State(api): S,
    json: Result<Json<NewEmulator>, JsonRejection>,
) -> Result<Created<Recorded>, ApiError> {
    let new = body(json)?;
    let command = StartEmulator {
        device_id: new.device_id,
        mcu: new.mcu.unwrap_or_else(|| "Mps2An385".to_owned()),
        simulated: new.simulated,
        labels: new.labels,
    };
    let Json(recorded) = forward(&api, command).await?;
    Ok(Created(recorded))
}

pub(crate) async fn stop_emulator(
    State(api): S,
    InPath(DevicePath { id }): InPath<DevicePath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        StopEmulator {
            device_id: device_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn restart_emulator(
    State(api): S,
    InPath(DevicePath { id }): InPath<DevicePath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        RestartEmulator {
            device_id: device_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn list_gateways(State(api): S) -> Json<Vec<GatewayView>> {
    Json(api.view().gateway_views())
}

/// An aggregate id as `GET /api/v1/events` takes it: an id, or `app.device` for a deployment
/// or a rollout.
const AGGREGATE_ID_PATTERN: &str =
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$";

/// `GET /api/v1/events` parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    /// Events after this sequence (0: from the start).
    #[serde(default)]
    #[schemars(range(max = u64::MAX))]
    after: u64,
    /// At most this many (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// Only this aggregate kind.
    kind: Option<AggregateKind>,
    /// Only aggregates with this id (of `kind`, or of any kind): an id, or `app.device` for a
    /// deployment or a rollout.
    #[schemars(regex(pattern = AGGREGATE_ID_PATTERN))]
    id: Option<String>,
    /// The token, for clients that cannot set headers.
    #[allow(dead_code)]
    token: Option<String>,
}

/// Whether `id` is an aggregate id (what [`AGGREGATE_ID_PATTERN`] says).
fn is_aggregate_id(id: &str) -> bool {
    let tokens: Vec<&str> = id.split('.').collect();
    tokens.len() <= 2 && tokens.iter().all(|t| DeviceId::new(*t).is_ok())
}

pub(crate) async fn events(
    State(api): S,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest("limit: between 1 and 1000".to_owned()));
    }
    let kind = q.kind.map_or("*", AggregateKind::as_str);
    let filter = match (q.kind, q.id.as_deref()) {
        (None, None) => None,
        (Some(kind), None) => Some(subject::events_of_kind(kind)),
        (_, Some(id)) if is_aggregate_id(id) => {
            let events = subject::EVENTS_ALL.trim_end_matches(".>");
            Some(format!("{events}.{kind}.{id}"))
        }
        (_, Some(id)) => {
            return Err(ApiError::BadRequest(format!(
                "id {id:?}: an id, or app.device for a deployment or a rollout"
            )));
        }
    };
    let events = api
        .log
        .page(filter, q.after, limit)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let next_after = events.last().map_or(q.after, |e| e.sequence);
    Ok(Json(EventPage {
        events: events
            .into_iter()
            .map(|e| LoggedEvent {
                sequence: e.sequence,
                envelope: e.envelope,
            })
            .collect(),
        next_after,
    }))
}

pub(crate) async fn metrics(State(api): S) -> MetricsText {
    let view = api.view();
    let mut registry = wasmbed_metrics::instance_registry();
    let mut gauge = |name: &str, help: &str, value: usize| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, gauge);
    };
    gauge("devices", "Devices known to the fleet.", view.devices.len());
    gauge("devices_online", "Devices online now.", view.online());
    gauge(
        "applications",
        "Applications (not deleted).",
        view.apps.len(),
    );
    gauge(
        "apps_running",
        "Applications running, counted per device.",
        view.running(),
    );
    gauge(
        "api_log_sequence",
        "The last event the api's view has folded in.",
        usize::try_from(view.sequence).unwrap_or(usize::MAX),
    );
    MetricsText(wasmbed_metrics::encode_with(&[&registry]))
}
