//! The routes and their OpenAPI 3.1 document (`GET /api/openapi.json`), built together by aide
//! from the handlers' own extractor and answer types (their schemars JSON Schemas, the errors
//! and status codes of `crate::io`): the document cannot describe a route that is not served,
//! a body a handler does not take, or miss a status it answers. Each route adds its summary.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use aide::openapi::{Info, OpenApi, SecurityScheme};
use aide::transform::TransformOperation;
use axum::Extension;
use wasmbed_schemas::rest::ErrorBody;

use crate::{Api, rollouts, routes, streams};

/// A route that needs a token: its summary, and the answers of the token check.
fn summary(text: &'static str) -> impl FnOnce(TransformOperation) -> TransformOperation {
    move |op| {
        op.summary(text)
            .security_requirement("bearer")
            .response_with::<401, axum::Json<ErrorBody>, _>(|r| {
                r.description("no token, or not a configured one")
            })
            .response_with::<403, axum::Json<ErrorBody>, _>(|r| {
                r.description("a read-only token, or the service refused the caller")
            })
    }
}

/// Every route that needs a token (`/health` and the dashboard are outside).
pub(crate) fn routes() -> ApiRouter<Arc<Api>> {
    ApiRouter::new()
        .api_route(
            "/metrics",
            get_with(
                routes::metrics,
                summary("Fleet gauges in the Prometheus text format"),
            ),
        )
        .api_route(
            "/api/openapi.json",
            get_with(openapi_json, summary("This document")),
        )
        .api_route(
            "/api/v1/devices",
            get_with(
                routes::list_devices,
                summary("Every device with its live state and apps"),
            )
            .post_with(
                routes::register_device,
                summary("Register a device's public key"),
            ),
        )
        .api_route(
            "/api/v1/devices/{id}",
            get_with(
                routes::show_device,
                summary("One device (not a decommissioned one)"),
            )
            .delete_with(
                routes::decommission_device,
                summary("Decommission a device (a reason may be given)"),
            ),
        )
        .api_route(
            "/api/v1/applications",
            get_with(
                routes::list_apps,
                summary("Every application with its state per device"),
            )
            .post_with(
                routes::create_app,
                summary(
                    "Create an application: `metadata` (JSON), `module` (WASM) and, when \
                         signed, `release` (JSON) parts",
                ),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}",
            get_with(routes::show_app, summary("One application")).delete_with(
                routes::delete_app,
                summary("Stop and delete an application"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/deploy",
            post_with(
                routes::deploy_app,
                summary("Roll the latest version out to the target"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/update",
            post_with(
                routes::update_app,
                summary("A new version: a `module` (WASM) part and, when signed, a `release` part"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/stop",
            post_with(routes::stop_app, summary("Stop it on every device")),
        )
        .api_route(
            "/api/v1/publishers",
            get_with(
                routes::show_trust,
                summary("The fleet's publisher keys and the serial of its trust chain"),
            )
            .post_with(
                routes::trust_publisher,
                summary("Trust a publisher key (after the first, with a signed rotation)"),
            ),
        )
        .api_route(
            "/api/v1/publishers/revoke",
            post_with(
                routes::revoke_publisher,
                summary("Revoke a publisher key with a rotation signed by a trusted key"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/rollouts",
            get_with(
                rollouts::list,
                summary("The application's rollouts, newest first: waves, devices, failures"),
            )
            .post_with(
                rollouts::start,
                summary(
                    "Start a staged rollout: `metadata` (JSON: waves, gate), `module` (WASM) \
                     and, when signed, `release` (JSON) parts",
                ),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/rollout/approve",
            post_with(
                rollouts::approve,
                summary("Start the wave of the rollout in progress that waits for approval"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/rollout/pause",
            post_with(
                rollouts::pause,
                summary("Start no further wave of the rollout in progress until resumed"),
            ),
        )
        .api_route(
            "/api/v1/applications/{id}/rollout/resume",
            post_with(rollouts::resume, summary("Let a paused rollout go on")),
        )
        .api_route(
            "/api/v1/applications/{id}/rollout/abort",
            post_with(
                rollouts::abort,
                summary(
                    "Abort the rollout in progress: every device that got the new version goes \
                     back",
                ),
            ),
        )
        .api_route(
            "/api/v1/emulators",
            get_with(
                routes::list_emulators,
                summary("Emulated devices and what each is doing"),
            )
            .post_with(
                routes::start_emulator,
                summary("Start a device's emulator (an MCU type of the catalogue)"),
            ),
        )
        .api_route(
            "/api/v1/emulators/{id}",
            delete_with(routes::stop_emulator, summary("Stop a device's emulator")),
        )
        .api_route(
            "/api/v1/emulators/{id}/restart",
            post_with(
                routes::restart_emulator,
                summary("Restart a device's emulator"),
            ),
        )
        .api_route(
            "/api/v1/gateways",
            get_with(
                routes::list_gateways,
                summary("Gateways and the devices they hold"),
            ),
        )
        .api_route(
            "/api/v1/events",
            get_with(routes::events, summary("The log, paged")),
        )
        .api_route(
            "/api/v1/stream/events",
            get_with(
                streams::events,
                summary(
                    "The log, live (SSE; `id` is the sequence; `after` or Last-Event-ID resumes)",
                ),
            ),
        )
        .api_route(
            "/api/v1/stream/telemetry/{id}",
            get_with(
                streams::telemetry,
                summary("One device's telemetry, live (SSE)"),
            ),
        )
        .api_route(
            "/api/v1/stream/console/{id}",
            get_with(
                streams::console,
                summary("One device's UART text (`uart`) and log lines (`log`), live (SSE)"),
            ),
        )
}

/// What needs no token: the health check and the dashboard page (everything it shows needs
/// the token).
pub(crate) fn public_routes() -> ApiRouter<Arc<Api>> {
    ApiRouter::new()
        .api_route(
            "/health",
            get_with(health, |op| op.summary("Liveness (no token)")),
        )
        .api_route(
            "/",
            get_with(dashboard, |op| {
                op.summary("The dashboard (HTML; the token goes in the URL fragment)")
            }),
        )
}

async fn health() -> &'static str {
    "ok\n"
}

/// The dashboard: one page, no build step; it reads the api with the token from its URL
/// fragment (`/#token=…`) or its token field.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../dashboard/index.html"))
}

/// The routes as an axum router, serving their document at `/api/openapi.json`.
pub(crate) fn router(routes: ApiRouter<Arc<Api>>) -> axum::Router<Arc<Api>> {
    let mut api = OpenApi {
        info: Info {
            title: "Wasmbed api".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Info::default()
        },
        ..OpenApi::default()
    };
    let router = routes.finish_api_with(&mut api, |doc| {
        doc.security_scheme(
            "bearer",
            SecurityScheme::Http {
                scheme: "bearer".to_owned(),
                bearer_format: None,
                description: Some(
                    "A configured token (read-only tokens may only GET); SSE clients may pass \
                     `?token=` instead"
                        .to_owned(),
                ),
                extensions: Default::default(),
            },
        )
    });
    router.layer(Extension(Arc::new(api)))
}

async fn openapi_json(Extension(api): Extension<Arc<OpenApi>>) -> axum::Json<OpenApi> {
    axum::Json(OpenApi::clone(&api))
}
