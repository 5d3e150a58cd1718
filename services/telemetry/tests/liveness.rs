//! The telemetry service against a real nats-server: heartbeats and telemetry are published on
//! the bus exactly as the gateway publishes them.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::HeaderMap;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::device_message::{HeartbeatReport, LatestTelemetry};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, GatewayId};
use wasmbed_telemetry::{TelemetryConfig, TelemetryError};
use wasmbed_test_support::{NatsServer, http_get};

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), TelemetryError>>,
    http: SocketAddr,
}

/// Offline after 3 missed 200 ms heartbeats (600 ms); the tests beat every 100 ms, so a busy
/// machine has a wide margin before a device looks silent. Checked every 50 ms.
async fn start(server: &NatsServer) -> Running {
    let config = TelemetryConfig {
        heartbeat_interval: Duration::from_millis(200),
        missed_heartbeats: 3,
        sweep_interval: Duration::from_millis(50),
        runtime: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(wasmbed_telemetry::run(
        server.client().await.unwrap(),
        config,
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    // Ready once HTTP answers: the service subscribes to everything before it serves HTTP.
    // A TCP connect succeeds as soon as the listener is bound (by this test); an HTTP answer
    // means the service got as far as serving.
    for _ in 0..200 {
        if http_get(http, "/health").await.0 == 200 {
            return Running { stop, task, http };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("telemetry service did not come up");
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Heart-beats as the gateway reports it, every 100 ms, for `duration`.
async fn beat(client: &async_nats::Client, device: &DeviceId, duration: Duration) {
    let until = tokio::time::Instant::now() + duration;
    let mut seq = 0;
    while tokio::time::Instant::now() < until {
        seq += 1;
        let report = HeartbeatReport {
            device_id: device.clone(),
            gateway_id: GatewayId::new("gw-1").unwrap(),
            seq,
            uptime_ms: u64::from(seq) * 100,
            received_at: Utc::now(),
        };
        client
            .publish(
                subject::device_heartbeat(device),
                serde_json::to_vec(&report).unwrap().into(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The device's liveness transitions in the log, as "offline"/"online".
async fn transitions(log: &EventLog, device: &DeviceId) -> Vec<&'static str> {
    log.read(&AggregateId::Device(device.clone()))
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match e.envelope.event {
            Event::DeviceWentOffline(_) => Some("offline"),
            Event::DeviceBackOnline(_) => Some("online"),
            _ => None,
        })
        .collect()
}

async fn wait_transitions(log: &EventLog, device: &DeviceId, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = transitions(log, device).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {want:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_silent_device_goes_offline_once_and_comes_back_once() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    let service = start(&server).await;
    let device = DeviceId::new("d1").unwrap();

    beat(&client, &device, Duration::from_millis(600)).await;
    assert_eq!(
        transitions(&log, &device).await,
        Vec::<&str>::new(),
        "no flapping while beating"
    );
    wait_transitions(&log, &device, &["offline"]).await;
    // Staying silent adds nothing.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(transitions(&log, &device).await, ["offline"]);
    beat(&client, &device, Duration::from_millis(500)).await;
    wait_transitions(&log, &device, &["offline", "online"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(transitions(&log, &device).await, ["offline", "online"]);
    service.stop().await;
}

#[tokio::test]
async fn restarting_the_service_neither_repeats_nor_loses_a_transition() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    let (quiet, busy) = (
        DeviceId::new("quiet").unwrap(),
        DeviceId::new("busy").unwrap(),
    );

    let service = start(&server).await;
    tokio::join!(
        beat(&client, &quiet, Duration::from_millis(300)),
        beat(&client, &busy, Duration::from_millis(300))
    );
    wait_transitions(&log, &quiet, &["offline"]).await;
    wait_transitions(&log, &busy, &["offline"]).await;
    // busy comes back; quiet stays away.
    let beating = tokio::spawn({
        let (client, busy) = (client.clone(), busy.clone());
        async move { beat(&client, &busy, Duration::from_millis(1200)).await }
    });
    wait_transitions(&log, &busy, &["offline", "online"]).await;
    service.stop().await;
    // busy goes silent while the service is down.
    beating.await.unwrap();

    let service = start(&server).await;
    // Not repeated: quiet is still recorded offline. Not lost: busy went silent while the
    // service was down and is declared offline once the new instance's timeout passes.
    wait_transitions(&log, &busy, &["offline", "online", "offline"]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(transitions(&log, &quiet).await, ["offline"]);
    assert_eq!(
        transitions(&log, &busy).await,
        ["offline", "online", "offline"]
    );
    service.stop().await;
}

async fn scrape(http: SocketAddr) -> String {
    let (status, body) = http_get(http, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Parses the OpenMetrics text strictly enough for a test: `# HELP`/`# TYPE`/`# UNIT`/`# EOF` lines and
/// `name{labels} value` samples with a numeric value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            if l.starts_with('#') {
                let mut words = l.split_whitespace();
                assert_eq!(words.next(), Some("#"));
                assert!(
                    matches!(words.next(), Some("HELP" | "TYPE" | "UNIT" | "EOF")),
                    "{l}"
                );
                return None;
            }
            let (name, value) = l.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {l:?}"));
            Some((name.to_owned(), value))
        })
        .collect()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let service = start(&server).await;
    let app = AppId::new("sensor").unwrap();
    for (device, count, size) in [("d1", 7usize, 10usize), ("d2", 3, 100)] {
        let device = DeviceId::new(device).unwrap();
        for seq in 0..count {
            let mut headers = HeaderMap::new();
            headers.insert(header::DEVICE, device.as_str());
            headers.insert(header::APP, app.as_str());
            headers.insert(header::SEQUENCE, seq.to_string().as_str());
            client
                .publish_with_headers(
                    subject::telemetry(&device, &app),
                    headers,
                    vec![0u8; size].into(),
                )
                .await
                .unwrap();
        }
    }
    beat(
        &client,
        &DeviceId::new("d1").unwrap(),
        Duration::from_millis(150),
    )
    .await;
    client.flush().await.unwrap();

    let want = [
        ("wasmbed_telemetry_messages_total", 10.0),
        ("wasmbed_telemetry_bytes_total", 370.0),
        (
            "wasmbed_device_telemetry_messages_total{device=\"d1\"}",
            7.0,
        ),
        ("wasmbed_device_telemetry_bytes_total{device=\"d1\"}", 70.0),
        (
            "wasmbed_device_telemetry_messages_total{device=\"d2\"}",
            3.0,
        ),
        ("wasmbed_device_telemetry_bytes_total{device=\"d2\"}", 300.0),
        ("wasmbed_devices_online", 1.0),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let parsed = samples(&scrape(service.http).await);
        let missing: Vec<_> = want
            .iter()
            .filter(|(name, value)| !parsed.iter().any(|(n, v)| n == name && v == value))
            .collect();
        if missing.is_empty() {
            assert!(
                parsed
                    .iter()
                    .any(|(n, _)| n.starts_with("wasmbed_device_last_seen_seconds{device=\"d2\"}"))
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in {parsed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The latest value per device and app is in KV for dashboards (saved every sweep).
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    let latest = log
        .read_model::<LatestTelemetry>(subject::TELEMETRY_LATEST_BUCKET)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let d2 = loop {
        if let Some(v) = latest.get("d2.sensor").await.unwrap() {
            break v.value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no latest value saved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((d2.seq, d2.payload.0.len()), (2, 100));
    assert_eq!(latest.get("d1.sensor").await.unwrap().unwrap().value.seq, 6);
    service.stop().await;
}
