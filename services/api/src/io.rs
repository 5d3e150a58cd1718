//! What the handlers take and answer, as types that describe themselves to the OpenAPI
//! document (aide): errors with their status codes, `201 Created`, lists encoded once and
//! cached, multipart uploads with their parts, Server-Sent Events, the Prometheus text, and the
//! ids in paths with their pattern.

use std::marker::PhantomData;

use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, RequestBody, Response, SchemaObject, StatusCode};
use aide::operation::{OperationInput, OperationOutput, set_body};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use wasmbed_schemas::release::SignedRelease;
use wasmbed_schemas::rest::ErrorBody;
use wasmbed_schemas::{AppId, DeviceId};

use crate::error::ApiError;

fn media(schema: schemars::Schema) -> MediaType {
    MediaType {
        schema: Some(SchemaObject {
            json_schema: schema,
            external_docs: None,
            example: None,
        }),
        ..Default::default()
    }
}

/// A response of one content type whose body has `T`'s schema.
fn response_of<T: JsonSchema>(
    ctx: &mut GenContext,
    content_type: &str,
    description: &str,
) -> Response {
    let schema = ctx.schema.subschema_for::<T>();
    Response {
        description: description.to_owned(),
        content: IndexMap::from_iter([(content_type.to_owned(), media(schema))]),
        ..Default::default()
    }
}

fn json_response<T: JsonSchema>(ctx: &mut GenContext, description: &str) -> Response {
    response_of::<T>(ctx, "application/json", description)
}

/// The one response of `O`, under `status`.
fn answered_with<O: OperationOutput>(
    status: u16,
    ctx: &mut GenContext,
    operation: &mut Operation,
) -> Vec<(Option<StatusCode>, Response)> {
    O::operation_response(ctx, operation)
        .map(|r| (Some(StatusCode::Code(status)), r))
        .into_iter()
        .collect()
}

/// Every status an [`ApiError`] can answer, each with an [`ErrorBody`].
const ERRORS: [(u16, &str); 8] = [
    (400, "the request is wrong; the message names the field"),
    (401, "no token, or not a configured one"),
    (403, "a read-only token, or the service refused the caller"),
    (404, "nothing by that id"),
    (409, "it exists already, or changed meanwhile"),
    (422, "refused by the service (the message says why)"),
    (500, "the service failed"),
    (503, "a service or the event log did not answer"),
];

impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<ErrorBody>(ctx, "an error"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        ERRORS
            .iter()
            .map(|(code, description)| {
                (
                    Some(StatusCode::Code(*code)),
                    json_response::<ErrorBody>(ctx, description),
                )
            })
            .collect()
    }
}

/// `201 Created` with a JSON body.
pub(crate) struct Created<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for Created<T> {
    fn into_response(self) -> axum::response::Response {
        (axum::http::StatusCode::CREATED, axum::Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for Created<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<T>(ctx, "created"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with::<Self>(201, ctx, operation)
    }
}

/// A JSON array of `T`, encoded once and cached by the api.
pub(crate) struct JsonList<T>(pub(crate) bytes::Bytes, pub(crate) PhantomData<T>);

impl<T> IntoResponse for JsonList<T> {
    fn into_response(self) -> axum::response::Response {
        ([(header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for JsonList<T> {
    type Inner = Vec<T>;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<Vec<T>>(ctx, "the list"))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with::<Self>(200, ctx, operation)
    }
}

/// The OpenMetrics text format (what Prometheus scrapes).
pub(crate) struct MetricsText(pub(crate) String);

impl IntoResponse for MetricsText {
    fn into_response(self) -> axum::response::Response {
        (
            [(header::CONTENT_TYPE, wasmbed_metrics::CONTENT_TYPE)],
            self.0,
        )
            .into_response()
    }
}

impl OperationOutput for MetricsText {
    type Inner = String;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(response_of::<String>(
            ctx,
            "application/openmetrics-text",
            "OpenMetrics text format 1.0.0",
        ))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with::<Self>(200, ctx, operation)
    }
}

/// Server-Sent Events whose `data` is JSON of `T` (a string for text streams).
pub(crate) struct EventStream<T>(pub(crate) crate::streams::Events, pub(crate) PhantomData<T>);

impl<T> IntoResponse for EventStream<T> {
    fn into_response(self) -> axum::response::Response {
        self.0.into_response()
    }
}

impl<T: JsonSchema> OperationOutput for EventStream<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(response_of::<T>(
            ctx,
            "text/event-stream",
            "a stream of events, each `data` line of this schema",
        ))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<StatusCode>, Response)> {
        answered_with::<Self>(200, ctx, operation)
    }
}

/// The parts of an upload, as documented: `metadata` (JSON of `M`, when `M` is not `()`),
/// `module` (the WASM bytes) and `release` (JSON of a signed release, optional).
pub(crate) struct UploadBody<M>(pub(crate) Multipart, pub(crate) PhantomData<M>);

impl<S: Send + Sync, M> FromRequest<S> for UploadBody<M> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Multipart::from_request(request, state)
            .await
            .map(|m| Self(m, PhantomData))
            .map_err(|e| ApiError::BadRequest(format!("multipart body: {}", e.body_text())))
    }
}

/// The metadata part an upload has (`()` for none).
pub(crate) trait UploadMetadata {
    /// Its schema, if there is a part.
    fn schema(ctx: &mut GenContext) -> Option<schemars::Schema>;
}

impl UploadMetadata for () {
    fn schema(_: &mut GenContext) -> Option<schemars::Schema> {
        None
    }
}

impl<M: JsonSchema> UploadMetadata for (M,) {
    fn schema(ctx: &mut GenContext) -> Option<schemars::Schema> {
        Some(ctx.schema.subschema_for::<M>())
    }
}

impl<M: UploadMetadata> OperationInput for UploadBody<M> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        let release = ctx.schema.subschema_for::<SignedRelease>();
        let mut properties = serde_json::json!({
            "module": {"type": "string", "contentMediaType": "application/wasm"},
            "release": release,
        });
        let mut required = vec!["module"];
        if let Some(metadata) = M::schema(ctx) {
            properties["metadata"] = metadata.to_value();
            required.push("metadata");
        }
        let schema = schemars::json_schema!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        let mut media = media(schema);
        for (part, content_type) in [
            ("metadata", "application/json"),
            ("release", "application/json"),
        ] {
            media.encoding.insert(
                part.to_owned(),
                aide::openapi::Encoding {
                    content_type: Some(content_type.to_owned()),
                    ..Default::default()
                },
            );
        }
        set_body(
            ctx,
            operation,
            RequestBody {
                description: Some("multipart/form-data parts".into()),
                content: IndexMap::from_iter([("multipart/form-data".to_owned(), media)]),
                required: true,
                extensions: IndexMap::default(),
            },
        );
    }
}

/// A JSON body that may be left out (empty); one that does not parse is a JSON 400.
pub(crate) struct OptionalBody<T>(pub(crate) Option<T>);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("request body: {}", e.body_text())))?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        serde_json::from_slice(&bytes)
            .map(|body| Self(Some(body)))
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
    }
}

impl<T: JsonSchema> OperationInput for OptionalBody<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
        if let Some(aide::openapi::ReferenceOr::Item(body)) = operation.request_body.as_mut() {
            body.required = false;
        }
    }
}

/// Path parameters of type `T`; a path that does not decode is a JSON 400.
pub(crate) struct InPath<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for InPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Self(t))
            .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))
    }
}

impl<T: JsonSchema> OperationInput for InPath<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Path::<T>::operation_input(ctx, operation);
    }
}

/// A device id in the path (checked by the handler, so a bad one is a JSON 400).
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct DevicePath {
    /// The device's id.
    #[schemars(with = "DeviceId")]
    pub(crate) id: String,
}

/// An application id in the path (checked by the handler, so a bad one is a JSON 400).
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct AppPath {
    /// The application's id.
    #[schemars(with = "AppId")]
    pub(crate) id: String,
}
