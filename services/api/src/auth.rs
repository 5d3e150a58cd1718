//! Bearer tokens from configuration: read-write for operators and tools, read-only for
//! dashboards. Every route but `/health` asks for one.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only (GET).
    ReadOnly,
    /// Everything.
    ReadWrite,
}

/// One configured token.
#[derive(Clone)]
pub struct Token {
    /// A name for logs (never the secret).
    pub name: String,
    /// The secret.
    pub secret: String,
    /// What it may do.
    pub access: Access,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Compares without stopping at the first difference, so timing says nothing about a secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request presents, if it is a configured one.
pub fn find<'a>(tokens: &'a [Token], presented: &str) -> Option<&'a Token> {
    tokens
        .iter()
        .find(|t| same(t.secret.as_bytes(), presented.as_bytes()))
}

/// Middleware: 401 without a known bearer token, 403 for a write with a read-only one.
pub(crate) async fn require_token(
    State(tokens): State<Arc<Vec<Token>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        // Browsers' EventSource cannot set headers: SSE clients may pass `?token=`.
        .or_else(|| {
            request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        });
    let Some(token) = presented.and_then(|p| find(&tokens, p)) else {
        return Err(ApiError::Unauthenticated);
    };
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if writes && token.access == Access::ReadOnly {
        return Err(ApiError::Forbidden(token.name.clone()));
    }
    tracing::Span::current().record("token", token.name.as_str());
    Ok(next.run(request).await)
}
