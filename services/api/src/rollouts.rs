//! The rollout routes: start one (a `multipart/form-data` upload like an update, with the waves
//! in `metadata`), read them, and steer the one in progress. Writes are bus commands; reads come
//! from the fleet view.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use wasmbed_schemas::command::{
    AbortRollout, ApproveRollout, PauseRollout, ResumeRollout, RolloutStarted, StartRollout,
};
use wasmbed_schemas::rest::{AbortReason, NewRollout, Recorded, RolloutView};
use wasmbed_schemas::rollout::{DEFAULT_SOAK_MS, MaxFailures, parse_waves};

use crate::Api;
use crate::error::ApiError;
use crate::io::{AppPath, Created, InPath, OptionalBody, UploadBody};
use crate::routes::{app_id, forward, read_upload, send, store_module};

type S = State<Arc<Api>>;

pub(crate) async fn list(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Vec<RolloutView>>, ApiError> {
    let app = app_id(&id)?;
    let view = api.view();
    if view.apps.get(&app).is_none_or(|a| a.deleted()) {
        return Err(ApiError::NotFound(format!("no application {app}")));
    }
    Ok(Json(
        view.rollouts_of(&app)
            .map(|(number, r)| r.view(&app, number))
            .collect(),
    ))
}

fn parse(metadata: &[u8]) -> Result<NewRollout, ApiError> {
    serde_json::from_slice(metadata).map_err(|e| ApiError::BadRequest(format!("metadata: {e}")))
}

pub(crate) async fn start(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
    UploadBody(multipart, _): UploadBody<(NewRollout,)>,
) -> Result<Created<RolloutStarted>, ApiError> {
    let app_id = app_id(&id)?;
    let upload = read_upload(multipart).await?;
    let metadata = upload
        .metadata
        .ok_or_else(|| ApiError::BadRequest("metadata: missing".to_owned()))?;
    let new = parse(&metadata)?;
    let waves = parse_waves(&new.waves).map_err(|e| ApiError::BadRequest(format!("waves: {e}")))?;
    let max_failures = match new.max_failures.as_deref() {
        None => MaxFailures::Count(0),
        Some(text) => text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("max_failures: {e}")))?,
    };
    let module_sha256 = store_module(&api, upload.module).await?;
    let started = send(
        &api,
        &StartRollout {
            app_id,
            module_sha256,
            waves,
            soak_ms: new.soak_ms.unwrap_or(DEFAULT_SOAK_MS),
            deadline_ms: new.deadline_ms,
            max_failures,
            approve_each: new.approve_each,
            rehearse: new.rehearse,
            limits: new.limits,
            config: new.config,
            release: upload.release,
        },
    )
    .await?;
    api.wait_for(started.sequence).await;
    Ok(Created(started))
}

pub(crate) async fn approve(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        ApproveRollout {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn pause(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        PauseRollout {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn resume(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
) -> Result<Json<Recorded>, ApiError> {
    forward(
        &api,
        ResumeRollout {
            app_id: app_id(&id)?,
        },
    )
    .await
}

pub(crate) async fn abort(
    State(api): S,
    InPath(AppPath { id }): InPath<AppPath>,
    OptionalBody(body): OptionalBody<AbortReason>,
) -> Result<Json<Recorded>, ApiError> {
    let reason = body.and_then(|body| body.reason);
    forward(
        &api,
        AbortRollout {
            app_id: app_id(&id)?,
            reason,
        },
    )
    .await
}
