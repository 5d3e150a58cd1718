//! Every failure of a route as an HTTP status and a JSON body naming what was wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmbed_bus::CallError;
use wasmbed_schemas::command::{CommandError, ErrorCode};
use wasmbed_schemas::rest::ErrorBody;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No (known) bearer token.
    #[error("a bearer token is required")]
    Unauthenticated,
    /// A read-only token tried to write.
    #[error("token {0} is read-only")]
    Forbidden(String),
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing by that id.
    #[error("{0}")]
    NotFound(String),
    /// The service answered with a refusal.
    #[error(transparent)]
    Refused(CommandError),
    /// A dependency did not answer.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused(error) => Self::Refused(error),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        ErrorCode::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::Refused(error) => (status_of(error.code), error),
            other => {
                let (status, code) = match &other {
                    Self::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
                    Self::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Unauthorized),
                    Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
                    Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
                };
                (
                    status,
                    CommandError {
                        code,
                        message: other.to_string(),
                    },
                )
            }
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}
