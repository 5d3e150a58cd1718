//! Telemetry ingest with the telemetry service running, next to raw NATS in the same run.
//!
//! `cargo bench -p wasmbed-telemetry --bench ingest` (`WASMBED_BENCH_MESSAGES`, default
//! 200000). Both phases publish the same messages as the gateway does (128 B, the four
//! headers) on telemetry subjects, so nats-server stores both in the telemetry stream.
//! - raw: a plain subscriber receives them;
//! - service: the telemetry service reads them from the stream and counts them; the figure is
//!   the number published over the time until the service has counted them all (its lag is
//!   bounded: it catches up within that time).
//!
//! Target (issue 9): the service keeps up with ≥ 50 % of raw core-publish throughput.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_telemetry::TelemetryConfig;
use wasmbed_test_support::NatsServer;

async fn publish_all(client: &async_nats::Client, count: usize, device: &DeviceId) {
    let app = AppId::new("bench").expect("valid id");
    let subject = subject::telemetry(device, &app);
    let payload = bytes::Bytes::from(vec![0x5a; 128]);
    for seq in 0..count {
        let mut headers = HeaderMap::new();
        headers.insert(header::DEVICE, device.as_str());
        headers.insert(header::APP, app.as_str());
        headers.insert(header::SEQUENCE, seq.to_string().as_str());
        headers.insert(header::TOPIC, "t");
        client
            .publish_with_headers(subject.clone(), headers, payload.clone())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
}

async fn http_ok(http: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return false;
    };
    let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n").await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.starts_with("HTTP/1.0 200")
}

async fn counted(http: SocketAddr) -> u64 {
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return 0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.lines()
        .find_map(|l| l.strip_prefix("wasmbed_telemetry_messages_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("WASMBED_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let server = NatsServer::start().await.expect("nats-server");
    let client = server.client().await.expect("client");
    EventLog::open(client.clone(), &LogOptions::default())
        .await
        .expect("log");

    // Raw: publish -> plain subscriber.
    let raw_device = DeviceId::new("raw").expect("valid id");
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 21)
        .connect(server.url())
        .await
        .expect("client");
    let mut sub = sub_client
        .subscribe(subject::telemetry_of_device(&raw_device))
        .await
        .expect("subscribe");
    sub_client.flush().await.expect("flush");
    let started = Instant::now();
    let publisher = {
        let (client, device) = (client.clone(), raw_device.clone());
        tokio::spawn(async move { publish_all(&client, count, &device).await })
    };
    let mut got = 0;
    while got < count {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(_)) => got += 1,
            _ => break,
        }
    }
    let raw_rate = got as f64 / started.elapsed().as_secs_f64();
    publisher.await.expect("publisher");
    drop(sub);

    // Service: publish -> telemetry stream -> the service's count.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(wasmbed_telemetry::run(
        server.client().await.expect("client"),
        TelemetryConfig::default(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    // Ready when it answers HTTP (a bare TCP connect succeeds as soon as the listener exists).
    while !http_ok(http).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let service_device = DeviceId::new("svc").expect("valid id");
    let started = Instant::now();
    publish_all(&client, count, &service_device).await;
    while counted(http).await < count as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if started.elapsed() >= Duration::from_secs(120) {
            // Say whether the service fell behind or the stream never got the messages
            // (core publishes are not acknowledged; the server may drop some under load).
            let js = async_nats::jetstream::new(client.clone());
            let stored = match js.get_stream(subject::TELEMETRY_STREAM).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .map(|i| i.state.messages.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                Err(e) => e.to_string(),
            };
            panic!(
                "the service did not catch up: {} of {count} counted; the telemetry stream holds {stored} messages",
                counted(http).await
            );
        }
    }
    let service_rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = service.await;

    let ratio = service_rate / raw_rate;
    println!(
        "telemetry ingest: {count} messages of 128 B with the gateway's headers, telemetry stream on"
    );
    println!("  raw core publish -> plain subscriber:          {raw_rate:>8.0} msg/s");
    println!(
        "  publish -> stream -> telemetry service count:  {service_rate:>8.0} msg/s (all counted {:.2} s after the first was sent)",
        count as f64 / service_rate
    );
    println!(
        "  ratio {ratio:.2}   (target >= 0.50: {})",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
}
