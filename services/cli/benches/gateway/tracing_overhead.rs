//! What exporting traces costs on the telemetry path: the same telemetry through two gateway
//! processes in alternating rounds, one exporting its spans over OTLP/HTTP (to a receiver in
//! this process that decodes them), one without an endpoint. Both sides are measured in the
//! same run, in alternating rounds, so neither gets the warmer caches.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use wasmbed_e2e::otlp::Receiver;
use wasmbed_schemas::AppId;
use wasmbed_sim::{Connector, SimConfig, SimDevice, random_key};

use super::{http_get, receive, register_all, send_telemetry, spawn_gateway};

/// Where the bench's processes and devices are.
pub(crate) struct Setup<'a> {
    pub nats_url: &'a str,
    pub dir: &'a Path,
    pub client: &'a async_nats::Client,
    pub sub_client: &'a async_nats::Client,
    pub connector: &'a Connector,
    /// The first device number not yet registered.
    pub key_offset: usize,
}

/// One gateway process with its own devices.
struct Side {
    fleet: Vec<SimDevice>,
    _gateway: tokio::process::Child,
}

async fn side(setup: &Setup<'_>, name: &str, env: &[(&str, String)], offset: usize) -> Side {
    let free = || wasmbed_local_nats::free_port().expect("free port");
    let (tls, http) = (
        format!("127.0.0.1:{}", free()),
        format!("127.0.0.1:{}", free()),
    );
    let log = setup.dir.join(format!("{name}.log"));
    let gateway = spawn_gateway(name, &tls, &http, setup.nats_url, &log, env);
    let http: SocketAddr = http.parse().expect("addr");
    for _ in 0..600 {
        if http_get(http, "/ready").await.split_whitespace().nth(1) == Some("200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys: Vec<SigningKey> = (0..8).map(|_| random_key()).collect();
    register_all(setup.client, &keys, offset).await;
    let config = Arc::new(SimConfig::new(vec![tls.parse().expect("addr")]));
    let mut fleet = Vec::new();
    for key in keys {
        let mut device = SimDevice::spawn(setup.connector.clone(), config.clone(), key);
        device
            .wait_for(|s| s.connected, Duration::from_secs(30))
            .await
            .expect("connected");
        fleet.push(device);
    }
    Side {
        fleet,
        _gateway: gateway,
    }
}

/// Sends `messages` through `side`'s devices; messages per second received.
async fn round(
    side: &Side,
    sub_client: &async_nats::Client,
    subject: &str,
    messages: usize,
) -> f64 {
    let mut sub = sub_client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    sub_client.flush().await.expect("flush");
    let app = AppId::new("overhead").expect("valid id");
    let per_device = messages / side.fleet.len();
    let started = Instant::now();
    let sent = per_device * side.fleet.len();
    let (_, (got, last)) = tokio::join!(
        send_telemetry(&side.fleet, &app, per_device, &[0x5a; 128]),
        receive(&mut sub, sent)
    );
    got as f64 / (last - started).as_secs_f64()
}

/// Prints telemetry throughput with trace export off and on, and their ratio.
pub(crate) async fn run(setup: Setup<'_>, messages: usize, rounds: usize) {
    let receiver = Receiver::start().await;
    let exporting = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let off = side(&setup, "gw-untraced", &[], setup.key_offset).await;
    let on = side(&setup, "gw-traced", &exporting, setup.key_offset + 8).await;
    // One side sends at a time, so one subscription to all telemetry sees only that side.
    let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off_rates.push(round(&off, setup.sub_client, "wasmbed.telemetry.>", messages).await);
        on_rates.push(round(&on, setup.sub_client, "wasmbed.telemetry.>", messages).await);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (off_rate, on_rate) = (mean(&off_rates), mean(&on_rates));
    let ratio = on_rate / off_rate;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "tracing export, {messages} messages of 128 B from 8 devices per round, {rounds} rounds each, alternating:"
    );
    println!("  gateway without an OTLP endpoint: {off_rate:>8.0} msg/s");
    println!(
        "  gateway exporting over OTLP/HTTP: {on_rate:>8.0} msg/s ({} spans received from it)",
        receiver.spans().len()
    );
    println!(
        "  ratio {ratio:.2}   (target >= 0.90: {})",
        if ratio >= 0.9 { "met" } else { "NOT met" }
    );
    for device in off.fleet.into_iter().chain(on.fleet) {
        device.stop().await;
    }
}
