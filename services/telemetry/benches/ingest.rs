//! Telemetry ingest with the telemetry service running, next to raw NATS in the same run.
//!
//! `cargo bench -p wasmbed-telemetry --bench ingest` (`WASMBED_BENCH_MESSAGES`, default
//! 200000). Both phases publish the same messages as the gateway does (128 B, the four
//! headers) on telemetry subjects, so nats-server stores both in the telemetry stream.
//! - raw: a plain subscriber receives them;
//! - service, flat out: the telemetry service reads them from the stream and counts them; the
//!   figure is the number published over the time until the service has counted them all;
//! - service, paced: messages are published at half the raw rate for `WASMBED_BENCH_SECS`
//!   (default 10) while the service's lag (published but not yet counted) is sampled every
//!   100 ms. It keeps up when its lag never exceeds half a second of messages and it has
//!   counted everything within a second of the last publish.
//!
//! Target (issue 9): the service keeps up with ≥ 50 % of raw core-publish throughput without
//! falling behind (consumer lag bounded): the paced run is that test; the flat-out figure
//! shows the headroom.

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
    publish_range(client, 0..count, device).await;
    client.flush().await.expect("flush");
}

/// Publishes messages `seqs` as the gateway would (same subject scheme, same headers).
async fn publish_range(
    client: &async_nats::Client,
    seqs: std::ops::Range<usize>,
    device: &DeviceId,
) {
    let app = AppId::new("bench").expect("valid id");
    let subject = subject::telemetry(device, &app);
    let payload = bytes::Bytes::from(vec![0x5a; 128]);
    for seq in seqs {
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
}

/// Raw core publish of `count` messages to a plain subscriber: messages per second received.
async fn raw_rate(server: &NatsServer, client: &async_nats::Client, count: usize) -> f64 {
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
    let rate = got as f64 / started.elapsed().as_secs_f64();
    publisher.await.expect("publisher");
    rate
}

/// What the paced run saw.
struct Paced {
    rate: f64,
    published: usize,
    max_lag: u64,
    /// The largest lag seen in each second of the run.
    lag_by_second: Vec<u64>,
    catch_up: Option<Duration>,
}

/// Publishes at `rate` msg/s for `secs`, in 1 ms slices, while sampling the service's lag.
/// `before` is what the service had counted when this began.
async fn paced(
    client: &async_nats::Client,
    http: SocketAddr,
    rate: f64,
    secs: u64,
    before: u64,
) -> Paced {
    let device = DeviceId::new("paced").expect("valid id");
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let total = (rate * secs as f64) as usize;
    let publisher = {
        let (client, published) = (client.clone(), published.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0;
            while sent < total {
                tick.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
                publish_range(&client, sent..due, &device).await;
                published.store(due, std::sync::atomic::Ordering::Relaxed);
                sent = due;
            }
            client.flush().await.expect("flush");
        })
    };
    let mut max_lag = 0;
    let mut lag_by_second = Vec::new();
    let started = Instant::now();
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = published.load(std::sync::atomic::Ordering::Relaxed) as u64;
        let counted = counted(http).await.saturating_sub(before);
        let lag = sent.saturating_sub(counted);
        max_lag = max_lag.max(lag);
        let second = started.elapsed().as_secs() as usize;
        if lag_by_second.len() <= second {
            lag_by_second.resize(second + 1, 0);
        }
        lag_by_second[second] = lag_by_second[second].max(lag);
    }
    publisher.await.expect("publisher");
    let ended = Instant::now();
    let mut catch_up = None;
    while ended.elapsed() < Duration::from_secs(10) {
        if counted(http).await.saturating_sub(before) >= total as u64 {
            catch_up = Some(ended.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Paced {
        rate,
        published: total,
        max_lag,
        lag_by_second,
        catch_up,
    }
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

    // Raw: publish -> plain subscriber, three times; the best run is the baseline, so noise
    // can only make the target harder.
    let raw_runs = [
        raw_rate(&server, &client, count).await,
        raw_rate(&server, &client, count).await,
        raw_rate(&server, &client, count).await,
    ];
    let raw_rate = raw_runs.iter().copied().fold(0.0, f64::max);

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
    let secs = std::env::var("WASMBED_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let paced = paced(&client, http, raw_rate / 2.0, secs, counted(http).await).await;
    let _ = stop.send(());
    let _ = service.await;

    let ratio = service_rate / raw_rate;
    println!(
        "telemetry ingest: {count} messages of 128 B with the gateway's headers, telemetry stream on"
    );
    println!(
        "  raw core publish -> plain subscriber:          {raw_rate:>8.0} msg/s (best of {:.0}, {:.0}, {:.0})",
        raw_runs[0], raw_runs[1], raw_runs[2]
    );
    println!(
        "  publish -> stream -> telemetry service count:  {service_rate:>8.0} msg/s (all counted {:.2} s after the first was sent)",
        count as f64 / service_rate
    );
    println!("  flat out: ratio {ratio:.2} of raw");
    let lag_bound = (paced.rate / 2.0) as u64;
    let kept_up =
        paced.max_lag <= lag_bound && paced.catch_up.is_some_and(|d| d <= Duration::from_secs(1));
    println!(
        "  paced at half the raw rate, {:.0} msg/s for {secs} s ({} messages): largest lag {} messages ({:.0} ms of traffic), all counted {} after the last publish",
        paced.rate,
        paced.published,
        paced.max_lag,
        paced.max_lag as f64 / paced.rate * 1000.0,
        paced.catch_up.map_or_else(
            || "NOT within 10 s".to_owned(),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        )
    );
    let lags: Vec<String> = paced.lag_by_second.iter().map(u64::to_string).collect();
    println!("  largest lag in each second: {}", lags.join(" "));
    println!(
        "  keeps up with >= 50% of raw without falling behind (lag <= {lag_bound}, caught up within 1 s): {}",
        if kept_up { "met" } else { "NOT met" }
    );
}
