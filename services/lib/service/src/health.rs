//! `/health`, `/ready` and `/metrics` for a service without HTTP of its own: its probes in
//! Kubernetes and its figures for Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;

fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Answers until the task is dropped: `/health` 200 while connected to NATS; `/ready` 200 while
/// also caught up and serving.
pub(crate) async fn serve(
    listener: TcpListener,
    client: async_nats::Client,
    ready: Arc<AtomicBool>,
) {
    let health_client = client.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || {
                let up = connected(&health_client);
                async move {
                    if up {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "no NATS connection\n")
                    }
                }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let (up, serving) = (connected(&client), ready.load(Ordering::Relaxed));
                async move {
                    match (up, serving) {
                        (true, true) => (StatusCode::OK, "ready\n"),
                        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "no NATS connection\n"),
                        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not serving\n"),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, wasmbed_metrics::CONTENT_TYPE)],
                    wasmbed_metrics::encode(),
                )
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the health endpoint stopped");
    }
}
