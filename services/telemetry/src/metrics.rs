//! `/health` and `/metrics`: the fleet's figures in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use wasmbed_schemas::DeviceId;

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

    fn render(&self) -> String {
        let (messages, bytes) = self
            .devices
            .values()
            .fold((0, 0), |(m, b), c| (m + c.messages, b + c.bytes));
        let mut out = String::new();
        // Each family is one group: HELP, TYPE, then all its samples.
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_device = |value: &dyn Fn(&DeviceCounters) -> Option<u64>| -> Vec<(String, u64)> {
            self.devices
                .iter()
                .filter_map(|(device, c)| value(c).map(|v| (format!("{{device=\"{device}\"}}"), v)))
                .collect()
        };
        family(
            "wasmbed_devices_online",
            "gauge",
            "Devices heard from and not offline.",
            vec![(String::new(), self.online as u64)],
        );
        family(
            "wasmbed_telemetry_messages_total",
            "counter",
            "Telemetry messages, all devices.",
            vec![(String::new(), messages)],
        );
        family(
            "wasmbed_telemetry_bytes_total",
            "counter",
            "Telemetry payload bytes, all devices.",
            vec![(String::new(), bytes)],
        );
        family(
            "wasmbed_device_telemetry_messages_total",
            "counter",
            "Telemetry messages per device.",
            per_device(&|c| Some(c.messages)),
        );
        family(
            "wasmbed_device_telemetry_bytes_total",
            "counter",
            "Telemetry payload bytes per device.",
            per_device(&|c| Some(c.bytes)),
        );
        family(
            "wasmbed_device_last_seen_seconds",
            "gauge",
            "Unix time of a device's last telemetry.",
            per_device(&|c| c.last_seen.and_then(|t| u64::try_from(t.timestamp()).ok())),
        );
        out
    }
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
    let text = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
