//! `/health`, `/ready` and `/metrics` on the gateway's HTTP port.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Gateway;

pub(crate) async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(gw);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.ready.load(Ordering::Relaxed) && !*gw.bus_lost.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, wasmbed_metrics::CONTENT_TYPE)],
        gw.metrics.render(),
    )
}
