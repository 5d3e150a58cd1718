//! The REST facade (axum): writes become commands on the bus, reads come from a view projected
//! from the event log. It never calls a service directly.
//!
//! The dashboard is served at `/` (a static page; what it shows comes from the routes below).
//!
//! Routes (all but `/health` and `/` need `Authorization: Bearer <token>`; read-only tokens may only
//! `GET`):
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | liveness |
//! | `GET /metrics` | fleet gauges (devices, online, applications, apps running) |
//! | `GET, POST /api/v1/devices` | list; register (`RegisterDevice` JSON) |
//! | `GET, DELETE /api/v1/devices/{id}` | show; decommission (`{"reason"}` optional) |
//! | `GET, POST /api/v1/applications` | list; create (multipart `metadata` JSON + `module`) |
//! | `GET, DELETE /api/v1/applications/{id}` | show; delete |
//! | `POST /api/v1/applications/{id}/deploy`, `/stop` | roll out; stop everywhere |
//! | `POST /api/v1/applications/{id}/update` | new version (multipart `module`) |
//! | `GET /api/v1/gateways` | gateways and the devices they hold |
//! | `GET /api/v1/events?after=&limit=&kind=&id=` | the log, paged |
//! | `GET /api/v1/stream/events?after=` | the log, live (SSE; `id` = sequence) |
//! | `GET /api/v1/stream/telemetry/{id}` | one device's telemetry, live (SSE) |
//! | `GET /api/v1/stream/console/{id}` | one device's UART and log lines, live (SSE) |
//! | `GET /api/openapi.json` | the OpenAPI document, built from the same table as the router |

mod auth;
mod error;
mod io;
mod openapi;
mod rollouts;
mod routes;
mod streams;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span};
use wasmbed_eventlog::EventLog;
use wasmbed_fleet::Fleet;
use wasmbed_service::{Runtime, RuntimeError, RuntimeOptions};

pub use auth::{Access, Token};
pub use error::ApiError;
pub use routes::DEFAULT_LIMITS;

/// Settings of the api.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The accepted bearer tokens.
    pub tokens: Vec<Token>,
    /// Replicas, drain grace (its own HTTP serves `/health`).
    pub runtime: RuntimeOptions,
}

/// Why the api could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiStartError {
    /// No token configured: every route would be closed.
    #[error("no api token configured")]
    NoTokens,
    /// The service runtime failed (log, follow).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The liveness read model could not be watched.
    #[error(transparent)]
    ReadModel(#[from] wasmbed_eventlog::ReadModelError),
    /// Serving HTTP failed.
    #[error("serving http: {0}")]
    Http(#[from] std::io::Error),
}

/// Shared by the routes.
pub(crate) struct Api {
    pub(crate) client: async_nats::Client,
    pub(crate) log: EventLog,
    view: RwLock<Fleet>,
    folded: watch::Sender<u64>,
    lists: std::sync::Mutex<std::collections::HashMap<&'static str, (u64, bytes::Bytes)>>,
}

impl Api {
    pub(crate) fn view(&self) -> std::sync::RwLockReadGuard<'_, Fleet> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The JSON of a whole list, serialized once per version of the view: reads between two
    /// events share the same bytes.
    pub(crate) fn cached_list(
        &self,
        name: &'static str,
        render: impl FnOnce(&Fleet) -> serde_json::Result<Vec<u8>>,
    ) -> serde_json::Result<bytes::Bytes> {
        let view = self.view();
        let mut lists = self
            .lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((revision, bytes)) = lists.get(name) {
            if *revision == view.revision {
                return Ok(bytes.clone());
            }
        }
        let bytes = bytes::Bytes::from(render(&view)?);
        lists.insert(name, (view.revision, bytes.clone()));
        Ok(bytes)
    }

    /// Waits (briefly) until the view holds the event at `sequence`, so a client reads its own
    /// write. A slow follower only delays the answer; it never fails the write.
    pub(crate) async fn wait_for(&self, sequence: u64) {
        let mut folded = self.folded.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), folded.wait_for(|s| *s >= sequence)).await;
    }
}

/// The router, over `api`.
fn router(api: Arc<Api>, tokens: Arc<Vec<Token>>) -> Router {
    let protected = openapi::routes().route_layer(axum::middleware::from_fn_with_state(
        tokens,
        auth::require_token,
    ));
    openapi::router(protected.merge(openapi::public_routes()))
        // A module (1 MiB at most) plus its metadata.
        .layer(DefaultBodyLimit::max(
            wasmbed_eventlog::modules::MAX_MODULE_LEN + 64 * 1024,
        ))
        .layer(axum::middleware::from_fn(trace))
        .with_state(api)
}

/// A span per request.
async fn trace(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        token = tracing::field::Empty
    );
    next.run(request).instrument(span).await
}

/// Folds the telemetry service's last-heard times into the view as they are saved.
async fn heartbeat_watch(
    api: &Arc<Api>,
) -> Result<impl Future<Output = ()> + Send + 'static, ApiStartError> {
    use futures::StreamExt;
    let model = api
        .log
        .read_model::<chrono::DateTime<chrono::Utc>>(wasmbed_schemas::subject::LIVENESS_BUCKET)
        .await?;
    let mut changes = Box::pin(model.watch().await?);
    let api = api.clone();
    Ok(async move {
        while let Some((key, at)) = changes.next().await {
            if let Ok(device) = wasmbed_schemas::DeviceId::new(key) {
                api.view
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .heard(&device, at);
            }
        }
    })
}

/// Runs the api on `listener` until `shutdown` completes: catches up on the log first, then
/// serves while following it.
pub async fn run(
    client: async_nats::Client,
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiStartError> {
    if config.tokens.is_empty() {
        return Err(ApiStartError::NoTokens);
    }
    let mut runtime = Runtime::start(client.clone(), "api", &config.runtime).await?;
    let mut view = Fleet::default();
    let (follow, _) = runtime
        .restore_snapshotted(Vec::new(), &mut view, |view, event| {
            view.apply_followed(event);
        })
        .await?;
    info!(
        devices = view.devices.len(),
        apps = view.apps.len(),
        "view loaded"
    );
    let (folded, _) = watch::channel(view.sequence);
    let api = Arc::new(Api {
        client,
        log: runtime.log().clone(),
        view: RwLock::new(view),
        folded,
        lists: std::sync::Mutex::default(),
    });
    let following = api.clone();
    runtime.keep_following(follow, move |event| {
        following
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply_followed(event);
        following.folded.send_replace(event.sequence);
    });
    let (position, snapshot) = (api.clone(), api.clone());
    runtime.keep_snapshotting::<Fleet>(
        move || *position.folded.borrow(),
        move || {
            let view = snapshot
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok((view.followed, wasmbed_service::encode_snapshot(&*view)?))
        },
    );
    runtime.spawn(heartbeat_watch(&api).await?);
    let tokens = Arc::new(config.tokens);
    let served = axum::serve(listener, router(api, tokens))
        .with_graceful_shutdown(shutdown)
        .await;
    runtime.stop().await;
    served?;
    Ok(())
}
