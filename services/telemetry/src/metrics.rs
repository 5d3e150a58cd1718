//! `/health` and `/metrics`: the fleet's figures (OpenMetrics text), computed when scraped.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use wasmbed_metrics::{Counters, Gauges};
use wasmbed_schemas::DeviceId;

static HEARTBEAT_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    wasmbed_metrics::register_with_unit(
        "heartbeat_lag",
        "Time from a heartbeat read by a gateway to its report taken in here (the bus's share of \
         a liveness decision; gateway and service clocks).",
        prometheus_client::registry::Unit::Seconds,
        wasmbed_metrics::request_buckets(),
    )
});

/// Observes one heartbeat report read by its gateway at `received_at`.
pub(crate) fn heartbeat_lag(received_at: DateTime<Utc>) {
    let lag = (Utc::now() - received_at).to_std().unwrap_or_default();
    HEARTBEAT_LAG.observe(wasmbed_metrics::seconds(lag));
}

/// Counters of one device's telemetry.
#[derive(Debug, Default, Clone)]
struct DeviceCounters {
    messages: u64,
    bytes: u64,
    last_seen: Option<DateTime<Utc>>,
}

/// What `/metrics` shows.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) online: usize,
    devices: BTreeMap<String, DeviceCounters>,
}

impl Stats {
    /// Counts one message of `device` (a subject token; only valid ids get a series).
    pub(crate) fn telemetry(&mut self, device: &str, bytes: u64, at: DateTime<Utc>) {
        let c = match self.devices.get_mut(device) {
            Some(c) => c,
            None if DeviceId::new(device).is_ok() => {
                self.devices.entry(device.to_owned()).or_default()
            }
            None => return,
        };
        c.messages += 1;
        c.bytes += bytes;
        c.last_seen = Some(at);
    }

    /// The figures as they are now, in a registry made for this scrape.
    fn registry(&self) -> Registry {
        let mut registry = wasmbed_metrics::instance_registry();
        let (messages, bytes) = self
            .devices
            .values()
            .fold((0, 0), |(m, b), c| (m + c.messages, b + c.bytes));
        let online = Gauge::<i64>::default();
        online.set(i64::try_from(self.online).unwrap_or(i64::MAX));
        registry.register(
            "devices_online",
            "Devices heard from and not offline.",
            online,
        );
        let total = |value: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(value);
            c
        };
        registry.register(
            "telemetry_messages",
            "Telemetry messages, all devices.",
            total(messages),
        );
        registry.register(
            "telemetry_bytes",
            "Telemetry payload bytes, all devices.",
            total(bytes),
        );
        let (per_messages, per_bytes) =
            (Counters::<Device>::default(), Counters::<Device>::default());
        let last_seen = Gauges::<Device>::default();
        for (device, c) in &self.devices {
            let label = Device {
                device: device.clone(),
            };
            per_messages.get_or_create(&label).inc_by(c.messages);
            per_bytes.get_or_create(&label).inc_by(c.bytes);
            if let Some(at) = c.last_seen {
                last_seen.get_or_create(&label).set(at.timestamp());
            }
        }
        registry.register(
            "device_telemetry_messages",
            "Telemetry messages per device.",
            per_messages,
        );
        registry.register(
            "device_telemetry_bytes",
            "Telemetry payload bytes per device.",
            per_bytes,
        );
        registry.register(
            "device_last_seen_seconds",
            "Unix time of a device's last telemetry.",
            last_seen,
        );
        registry
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Device {
    device: String,
}

pub(crate) async fn serve(
    listener: TcpListener,
    stats: Arc<Mutex<Stats>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(stats);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(stats): State<Arc<Mutex<Stats>>>) -> impl IntoResponse {
    let registry = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .registry();
    let text = wasmbed_metrics::encode_with(&[&registry]);
    (
        [(header::CONTENT_TYPE, wasmbed_metrics::CONTENT_TYPE)],
        text,
    )
}
