//! The route table: one list that builds both the router and the OpenAPI document
//! (`GET /api/openapi.json`), so the document cannot describe a route that is not served or
//! miss one that is. Bodies are described by the JSON Schemas of their Rust types.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, post};
use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema};
use serde_json::{Value, json};
use wasmbed_schemas::command::{RegisterDevice, RevokePublisher, RolloutStarted, TrustPublisher};
use wasmbed_schemas::release::SignedRelease;
use wasmbed_schemas::rest::{
    AbortReason, ApplicationView, Decommission, DeviceView, EmulatorView, ErrorBody, EventPage,
    GatewayView, LoggedEvent, NewApplication, NewEmulator, NewRollout, Recorded, RolloutView,
    TelemetryMessage, TrustView,
};

use crate::{Api, rollouts, routes, streams};

/// What a request or response carries.
pub(crate) enum Body {
    /// Nothing.
    Empty,
    /// JSON of a type.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// JSON, optional.
    OptionalJson(fn(&mut SchemaGenerator) -> Schema),
    /// `multipart/form-data` with these parts (`metadata` JSON of a type, `module` bytes).
    Multipart(Option<fn(&mut SchemaGenerator) -> Schema>),
    /// Prometheus text.
    Text,
    /// Server-Sent Events whose `data` is JSON of a type.
    Events(fn(&mut SchemaGenerator) -> Schema),
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One route.
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) request: Body,
    pub(crate) response: Body,
    pub(crate) handler: MethodRouter<Arc<Api>>,
}

fn route(
    method: Method,
    path: &'static str,
    summary: &'static str,
    request: Body,
    response: Body,
    handler: MethodRouter<Arc<Api>>,
) -> Route {
    Route {
        method,
        path,
        summary,
        request,
        response,
        handler,
    }
}

/// Every route that needs a token (`/health` is outside, and so is nothing else).
pub(crate) fn routes() -> Vec<Route> {
    use Body::*;
    vec![
        route(
            Method::GET,
            "/metrics",
            "Fleet gauges in the Prometheus text format",
            Empty,
            Text,
            get(routes::metrics),
        ),
        route(
            Method::GET,
            "/api/openapi.json",
            "This document",
            Empty,
            Empty,
            get(openapi_json),
        ),
        route(
            Method::GET,
            "/api/v1/devices",
            "Every device with its live state and apps",
            Empty,
            Json(schema::<Vec<DeviceView>>),
            get(routes::list_devices),
        ),
        route(
            Method::POST,
            "/api/v1/devices",
            "Register a device's public key",
            Json(schema::<RegisterDevice>),
            Json(schema::<Recorded>),
            post(routes::register_device),
        ),
        route(
            Method::GET,
            "/api/v1/devices/{id}",
            "One device",
            Empty,
            Json(schema::<DeviceView>),
            get(routes::show_device),
        ),
        route(
            Method::DELETE,
            "/api/v1/devices/{id}",
            "Decommission a device",
            OptionalJson(schema::<Decommission>),
            Json(schema::<Recorded>),
            delete(routes::decommission_device),
        ),
        route(
            Method::GET,
            "/api/v1/applications",
            "Every application with its state per device",
            Empty,
            Json(schema::<Vec<ApplicationView>>),
            get(routes::list_apps),
        ),
        route(
            Method::POST,
            "/api/v1/applications",
            "Create an application: `metadata` (JSON), `module` (WASM) and, when signed, \
             `release` (JSON) parts",
            Multipart(Some(schema::<NewApplication>)),
            Json(schema::<Recorded>),
            post(routes::create_app),
        ),
        route(
            Method::GET,
            "/api/v1/applications/{id}",
            "One application",
            Empty,
            Json(schema::<ApplicationView>),
            get(routes::show_app),
        ),
        route(
            Method::DELETE,
            "/api/v1/applications/{id}",
            "Stop and delete an application",
            Empty,
            Json(schema::<Recorded>),
            delete(routes::delete_app),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/deploy",
            "Roll the latest version out to the target",
            Empty,
            Json(schema::<Recorded>),
            post(routes::deploy_app),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/update",
            "A new version: a `module` (WASM) part and, when signed, a `release` (JSON) part",
            Multipart(None),
            Json(schema::<Recorded>),
            post(routes::update_app),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/stop",
            "Stop it on every device",
            Empty,
            Json(schema::<Recorded>),
            post(routes::stop_app),
        ),
        route(
            Method::GET,
            "/api/v1/publishers",
            "The fleet's publisher keys and the serial of its trust chain",
            Empty,
            Json(schema::<TrustView>),
            get(routes::show_trust),
        ),
        route(
            Method::POST,
            "/api/v1/publishers",
            "Trust a publisher key (after the first, with a rotation signed by a trusted key)",
            Json(schema::<TrustPublisher>),
            Json(schema::<Recorded>),
            post(routes::trust_publisher),
        ),
        route(
            Method::POST,
            "/api/v1/publishers/revoke",
            "Revoke a publisher key with a rotation signed by a trusted key",
            Json(schema::<RevokePublisher>),
            Json(schema::<Recorded>),
            post(routes::revoke_publisher),
        ),
        route(
            Method::GET,
            "/api/v1/applications/{id}/rollouts",
            "The application's rollouts, newest first: waves, devices per state, each failure",
            Empty,
            Json(schema::<Vec<RolloutView>>),
            get(rollouts::list),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/rollouts",
            "Start a staged rollout: `metadata` (JSON: waves, gate), `module` (WASM) and, when \
             signed, `release` (JSON) parts",
            Multipart(Some(schema::<NewRollout>)),
            Json(schema::<RolloutStarted>),
            post(rollouts::start),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/rollout/approve",
            "Start the wave of the rollout in progress that waits for approval",
            Empty,
            Json(schema::<Recorded>),
            post(rollouts::approve),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/rollout/pause",
            "Start no further wave of the rollout in progress until resumed",
            Empty,
            Json(schema::<Recorded>),
            post(rollouts::pause),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/rollout/resume",
            "Let a paused rollout go on",
            Empty,
            Json(schema::<Recorded>),
            post(rollouts::resume),
        ),
        route(
            Method::POST,
            "/api/v1/applications/{id}/rollout/abort",
            "Abort the rollout in progress: every device that got the new version goes back",
            OptionalJson(schema::<AbortReason>),
            Json(schema::<Recorded>),
            post(rollouts::abort),
        ),
        route(
            Method::GET,
            "/api/v1/emulators",
            "Emulated devices and what each is doing",
            Empty,
            Json(schema::<Vec<EmulatorView>>),
            get(routes::list_emulators),
        ),
        route(
            Method::POST,
            "/api/v1/emulators",
            "Start a device's emulator (an MCU type of the catalogue)",
            Json(schema::<NewEmulator>),
            Json(schema::<Recorded>),
            post(routes::start_emulator),
        ),
        route(
            Method::DELETE,
            "/api/v1/emulators/{id}",
            "Stop a device's emulator",
            Empty,
            Json(schema::<Recorded>),
            delete(routes::stop_emulator),
        ),
        route(
            Method::POST,
            "/api/v1/emulators/{id}/restart",
            "Restart a device's emulator",
            Empty,
            Json(schema::<Recorded>),
            post(routes::restart_emulator),
        ),
        route(
            Method::GET,
            "/api/v1/gateways",
            "Gateways and the devices they hold",
            Empty,
            Json(schema::<Vec<GatewayView>>),
            get(routes::list_gateways),
        ),
        route(
            Method::GET,
            "/api/v1/events",
            "The log, paged (`after`, `limit`, `kind`, `id`)",
            Empty,
            Json(schema::<EventPage>),
            get(routes::events),
        ),
        route(
            Method::GET,
            "/api/v1/stream/events",
            "The log, live (SSE; `id` is the sequence; `after` or Last-Event-ID resumes)",
            Empty,
            Events(schema::<LoggedEvent>),
            get(streams::events),
        ),
        route(
            Method::GET,
            "/api/v1/stream/telemetry/{id}",
            "One device's telemetry, live (SSE)",
            Empty,
            Events(schema::<TelemetryMessage>),
            get(streams::telemetry),
        ),
        route(
            Method::GET,
            "/api/v1/stream/console/{id}",
            "One device's UART text (`uart`) and log lines (`log`), live (SSE)",
            Empty,
            Events(schema::<String>),
            get(streams::console),
        ),
    ]
}

/// The router of `routes`, one entry per path.
pub(crate) fn router(routes: Vec<Route>) -> axum::Router<Arc<Api>> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<Api>>> = BTreeMap::new();
    for r in routes {
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(r.handler),
            None => r.handler,
        };
        by_path.insert(r.path, merged);
    }
    by_path
        .into_iter()
        .fold(axum::Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

fn content(body: &Body, generator: &mut SchemaGenerator) -> Option<Value> {
    Some(match body {
        Body::Empty => return None,
        Body::Json(s) | Body::OptionalJson(s) => {
            json!({"application/json": {"schema": s(generator)}})
        }
        Body::Multipart(metadata) => {
            let mut properties = json!({
                "module": {"type": "string", "format": "binary"},
                "release": schema::<SignedRelease>(generator).to_value(),
            });
            if let Some(s) = metadata {
                properties["metadata"] = s(generator).to_value();
            }
            json!({"multipart/form-data": {"schema": {"type": "object", "properties": properties}}})
        }
        Body::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
        Body::Events(s) => json!({"text/event-stream": {"schema": s(generator)}}),
    })
}

/// The OpenAPI 3.0 document of `routes`.
pub(crate) fn document(routes: &[Route]) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let error = schema::<ErrorBody>(&mut generator).to_value();
    let mut paths = serde_json::Map::new();
    for r in routes {
        let mut operation = json!({
            "summary": r.summary,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "done"},
                "400": {"description": "bad request; the message names the field", "content": {"application/json": {"schema": error}}},
                "401": {"description": "no or unknown token"},
                "403": {"description": "read-only token"},
            },
        });
        if let Some(c) = content(&r.response, &mut generator) {
            operation["responses"]["200"]["content"] = c;
        }
        if let Some(c) = content(&r.request, &mut generator) {
            let required = !matches!(r.request, Body::OptionalJson(_));
            operation["requestBody"] = json!({"required": required, "content": c});
        }
        if r.path.contains("{id}") {
            operation["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = operation;
    }
    paths.insert(
        "/".to_owned(),
        json!({"get": {"summary": "The dashboard (HTML; the token goes in the URL fragment)", "responses": {"200": {"description": "the page"}}}}),
    );
    paths.insert(
        "/health".to_owned(),
        json!({"get": {"summary": "Liveness (no token)", "responses": {"200": {"description": "ok"}}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Wasmbed api", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

async fn openapi_json() -> axum::Json<Value> {
    axum::Json(document(&routes()))
}
