//! One handler per deployer command. Each validates, then records application events with a
//! concurrency check on the application's version; a retry of a command that already took
//! effect answers with the same result instead of recording it twice.

use std::sync::Arc;

use tracing::{info, warn};
use wasmbed_bus::Router;
use wasmbed_eventlog::{AppendError, ExpectedVersion};
use wasmbed_schemas::AggregateId;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::*;
use wasmbed_schemas::event::{
    ApplicationCreated, ApplicationDeleted, ApplicationDeployRequested, ApplicationStopRequested,
    Event, ModuleRejected, ModuleUploaded,
};
use wasmbed_schemas::frame::{Limits, MODULE_CHUNK_LEN};
use wasmbed_schemas::{AppId, Sha256};

use crate::rollout::commands as rollout;
use crate::{Deployer, release, validate};
use wasmbed_eventlog::modules::ModuleError;
use wasmbed_fleet::App;
use wasmbed_schemas::release::SignedRelease;
use wasmbed_schemas::rest::DesiredState;

type State = Arc<Deployer>;

/// Configuration bytes travel in one `Deploy` frame, so they must stay well under a frame.
const MAX_CONFIG_LEN: usize = MODULE_CHUNK_LEN / 2;

pub(crate) fn router() -> Router<Deployer> {
    Router::new(crate::SERVICE)
        .route(create_application)
        .route(deploy_application)
        .route(update_application)
        .route(stop_application)
        .route(delete_application)
        .route(rollout::start_rollout)
        .route(rollout::approve_rollout)
        .route(rollout::pause_rollout)
        .route(rollout::resume_rollout)
        .route(rollout::abort_rollout)
        .route(crate::trust::trust_publisher)
        .route(crate::trust::revoke_publisher)
}

/// While a rollout is in progress it decides what runs where; the application's own commands
/// wait for it to finish or be aborted.
fn no_rollout(state: &Deployer, id: &AppId) -> Result<(), CommandError> {
    let active = state.fleet().active_rollout(id).map(|(number, _)| number);
    match active {
        Some(number) => Err(refuse(
            ErrorCode::Conflict,
            format!(
                "app_id: rollout {number} of {id} is in progress; abort it (wasmbed rollout \
                 abort {id}) or wait for it to finish"
            ),
        )),
        None => Ok(()),
    }
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
    }
}

fn append_error(e: AppendError) -> CommandError {
    match e {
        AppendError::Conflict { .. } => refuse(
            ErrorCode::Conflict,
            "the application changed concurrently; retry",
        ),
        other => refuse(ErrorCode::Unavailable, format!("event log: {other}")),
    }
}

fn module_error(e: ModuleError) -> CommandError {
    match e {
        ModuleError::NotFound(_) => refuse(ErrorCode::NotFound, format!("module_sha256: {e}")),
        ModuleError::TooLarge(_) | ModuleError::DigestMismatch { .. } => {
            refuse(ErrorCode::Refused, e.to_string())
        }
        other => refuse(ErrorCode::Unavailable, other.to_string()),
    }
}

/// Configuration bytes travel in one `Deploy` frame: at most [`MAX_CONFIG_LEN`].
pub(crate) fn check_config(config: &Blob) -> Result<(), CommandError> {
    if config.0.len() > MAX_CONFIG_LEN {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!(
                "config is {} bytes; at most {MAX_CONFIG_LEN}",
                config.0.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_limits(limits: &Limits) -> Result<(), CommandError> {
    if limits.fuel_per_invocation == 0 {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "limits.fuel_per_invocation must be at least 1",
        ));
    }
    if limits.max_memory_pages == 0 || limits.max_memory_pages > 65_536 {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "limits.max_memory_pages must be between 1 and 65536",
        ));
    }
    if limits.tick_interval_ms < 10 {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "limits.tick_interval_ms must be at least 10",
        ));
    }
    Ok(())
}

pub(crate) fn app_version(state: &Deployer, app: &AppId) -> u64 {
    state
        .fleet()
        .version(&AggregateId::Application(app.clone()))
}

pub(crate) fn live_app(state: &Deployer, id: &AppId) -> Result<App, CommandError> {
    match state.fleet().apps.get(id) {
        Some(app) if !app.deleted() => Ok(app.clone()),
        Some(_) => Err(refuse(
            ErrorCode::NotFound,
            format!("app_id: application {id} was deleted"),
        )),
        None => Err(refuse(
            ErrorCode::NotFound,
            format!("app_id: no application {id}"),
        )),
    }
}

/// A module about to become `version` of an application: its digest, the limits it will run
/// under and its signed release.
pub(crate) struct NewVersion<'a> {
    pub(crate) sha: &'a Sha256,
    pub(crate) version: u32,
    pub(crate) limits: &'a Limits,
    pub(crate) release: Option<&'a SignedRelease>,
}

/// Loads and validates a module and its release; a refusal is recorded as `ModuleRejected`
/// and answered.
pub(crate) async fn checked_module(
    state: &Deployer,
    app: &AppId,
    new: NewVersion<'_>,
) -> Result<u64, CommandError> {
    let NewVersion {
        sha,
        version,
        limits,
        release,
    } = new;
    let bytes = state.modules.get(sha).await.map_err(module_error)?;
    let checked = validate(&bytes, limits).and_then(|facts| {
        let upload = release::Upload {
            app,
            version,
            module: &bytes,
            facts: &facts,
            limits,
            release,
        };
        let publishers = state.fleet().publishers.clone();
        release::judge(&upload, &publishers, state.config.require_signed)
            .map_err(|refused| format!("release: {}", refused.message))
    });
    if let Err(reason) = checked {
        info!(%app, %sha, %reason, "module rejected");
        let event = ModuleRejected {
            app_id: app.clone(),
            sha256: *sha,
            reason: reason.clone(),
        };
        if let Err(e) = state.record(ExpectedVersion::Any, event.into()).await {
            warn!(error = %e, "rejection not recorded");
        }
        return Err(refuse(
            ErrorCode::Refused,
            format!("module_sha256: {reason}"),
        ));
    }
    Ok(bytes.len() as u64)
}

async fn create_application(state: State, c: CreateApplication) -> Result<Accepted, CommandError> {
    state
        .catch_up(&AggregateId::Application(c.app_id.clone()))
        .await?;
    check_limits(&c.limits)?;
    if c.name.trim().is_empty() {
        return Err(refuse(ErrorCode::InvalidRequest, "name must not be empty"));
    }
    check_config(&c.config)?;
    let existing = state.fleet().apps.get(&c.app_id).cloned();
    let needs_creation = match existing {
        None => true,
        Some(app) if app.deleted() => {
            return Err(refuse(
                ErrorCode::AlreadyExists,
                format!("app_id: {} was deleted; ids are not reused", c.app_id),
            ));
        }
        Some(app) => {
            let same = app.name == c.name
                && app.target == c.target
                && app.config == c.config
                && app.limits == c.limits;
            match app.modules.get(&1) {
                Some(m) if same && m.sha256 == c.module_sha256 => {
                    return Ok(Accepted {
                        sequence: app_version(&state, &c.app_id),
                    });
                }
                // Created, but the module event did not make it: finish the job.
                None if same => false,
                _ => {
                    return Err(refuse(
                        ErrorCode::AlreadyExists,
                        format!("app_id: {} exists with other settings", c.app_id),
                    ));
                }
            }
        }
    };
    let new = NewVersion {
        sha: &c.module_sha256,
        version: 1,
        limits: &c.limits,
        release: c.release.as_ref(),
    };
    let size_bytes = checked_module(&state, &c.app_id, new).await?;
    let mut expected = ExpectedVersion::Exactly(app_version(&state, &c.app_id));
    if needs_creation {
        let created = ApplicationCreated {
            app_id: c.app_id.clone(),
            name: c.name,
            target: c.target,
            config: c.config,
            limits: c.limits,
        };
        let seq = state
            .record(expected, created.into())
            .await
            .map_err(append_error)?;
        expected = ExpectedVersion::Exactly(seq);
    }
    let uploaded = ModuleUploaded {
        app_id: c.app_id,
        version: 1,
        sha256: c.module_sha256,
        size_bytes,
        limits: None,
        config: None,
        release: c.release.map(Box::new),
    };
    let sequence = state
        .record(expected, uploaded.into())
        .await
        .map_err(append_error)?;
    Ok(Accepted { sequence })
}

async fn deploy_application(state: State, c: DeployApplication) -> Result<Accepted, CommandError> {
    state
        .catch_up(&AggregateId::Application(c.app_id.clone()))
        .await?;
    let app = live_app(&state, &c.app_id)?;
    no_rollout(&state, &c.app_id)?;
    let Some((latest, _)) = app.latest() else {
        return Err(refuse(
            ErrorCode::Refused,
            format!("app_id: {} has no module yet", c.app_id),
        ));
    };
    if app.desired == (DesiredState::Running { version: latest }) {
        return Ok(Accepted {
            sequence: app_version(&state, &c.app_id),
        });
    }
    record_app_event(
        &state,
        &c.app_id,
        ApplicationDeployRequested {
            app_id: c.app_id.clone(),
            version: latest,
        }
        .into(),
    )
    .await
}

async fn update_application(state: State, c: UpdateApplication) -> Result<Accepted, CommandError> {
    state
        .catch_up(&AggregateId::Application(c.app_id.clone()))
        .await?;
    let app = live_app(&state, &c.app_id)?;
    no_rollout(&state, &c.app_id)?;
    let latest = app.latest();
    if latest
        .as_ref()
        .is_some_and(|(_, m)| m.sha256 == c.module_sha256)
    {
        return Ok(Accepted {
            sequence: app_version(&state, &c.app_id),
        });
    }
    let version = latest.as_ref().map_or(1, |(v, _)| v + 1);
    let new = NewVersion {
        sha: &c.module_sha256,
        version,
        limits: &app.limits,
        release: c.release.as_ref(),
    };
    let size_bytes = checked_module(&state, &c.app_id, new).await?;
    let sequence = record_app_event(
        &state,
        &c.app_id,
        ModuleUploaded {
            app_id: c.app_id.clone(),
            version,
            sha256: c.module_sha256,
            size_bytes,
            limits: None,
            config: None,
            release: c.release.map(Box::new),
        }
        .into(),
    )
    .await?;
    if !matches!(app.desired, DesiredState::Running { .. }) {
        return Ok(sequence);
    }
    record_app_event(
        &state,
        &c.app_id,
        ApplicationDeployRequested {
            app_id: c.app_id.clone(),
            version,
        }
        .into(),
    )
    .await
}

async fn stop_application(state: State, c: StopApplication) -> Result<Accepted, CommandError> {
    state
        .catch_up(&AggregateId::Application(c.app_id.clone()))
        .await?;
    let app = live_app(&state, &c.app_id)?;
    no_rollout(&state, &c.app_id)?;
    if app.desired == DesiredState::Stopped {
        return Ok(Accepted {
            sequence: app_version(&state, &c.app_id),
        });
    }
    record_app_event(
        &state,
        &c.app_id,
        ApplicationStopRequested {
            app_id: c.app_id.clone(),
        }
        .into(),
    )
    .await
}

async fn delete_application(state: State, c: DeleteApplication) -> Result<Accepted, CommandError> {
    state
        .catch_up(&AggregateId::Application(c.app_id.clone()))
        .await?;
    no_rollout(&state, &c.app_id)?;
    let app = match state.fleet().apps.get(&c.app_id).cloned() {
        Some(app) if app.deleted() => {
            return Ok(Accepted {
                sequence: app_version(&state, &c.app_id),
            });
        }
        Some(app) => app,
        None => {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("app_id: no application {}", c.app_id),
            ));
        }
    };
    let sequence = record_app_event(
        &state,
        &c.app_id,
        ApplicationDeleted {
            app_id: c.app_id.clone(),
        }
        .into(),
    )
    .await?
    .sequence;
    // Modules no live application uses any more leave the store; devices that still run the
    // app are told to stop, which needs no module.
    let unused: Vec<Sha256> = {
        let fleet = state.fleet();
        app.modules
            .values()
            .map(|m| m.sha256)
            .filter(|sha| {
                !fleet.apps.values().any(|other| {
                    !other.deleted() && other.modules.values().any(|m| m.sha256 == *sha)
                })
            })
            .collect()
    };
    for sha in unused {
        if let Err(e) = state.modules.delete(&sha).await {
            warn!(%sha, error = %e, "unused module not removed");
        }
    }
    Ok(Accepted { sequence })
}

async fn record_app_event(
    state: &Deployer,
    app: &AppId,
    event: Event,
) -> Result<Accepted, CommandError> {
    let expected = ExpectedVersion::Exactly(app_version(state, app));
    let sequence = state.record(expected, event).await.map_err(append_error)?;
    Ok(Accepted { sequence })
}
