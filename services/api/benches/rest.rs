//! REST read latency at a steady request rate: `GET /api/v1/devices` with 1,000 devices in the
//! fleet, next to `GET /health` in the same run.
//!
//! `cargo bench -p wasmbed-api --bench rest`. Open loop: requests are scheduled at a fixed rate
//! (2,000/s by default, `WASMBED_BENCH_RATE`) over keep-alive connections, and each latency is
//! measured from its scheduled start, so a stall is not hidden by the load generator waiting.
//! Client, api and nats-server share this machine's cores.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmbed_api::Access;
use wasmbed_bus::call;
use wasmbed_device_core::Signer;
use wasmbed_e2e::System;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::command::RegisterDevice;

#[path = "../tests/support/mod.rs"]
mod support;
use support::{start_api, token};

const TOKEN: &str = "bench-token-0123456789";
const CONNECTIONS: usize = 16;

/// One keep-alive HTTP/1.1 connection: sends a GET, reads exactly one response.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::with_capacity(1 << 20),
        }
    }

    async fn get(&mut self, path: &str) -> usize {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await.unwrap();
        self.buf.clear();
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                while self.buf.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "connection closed");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return length;
            }
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What one route measured: latencies from each request's scheduled start and from its send,
/// sorted, and the body size.
struct Measured {
    from_schedule: Vec<Duration>,
    from_send: Vec<Duration>,
    size: usize,
}

/// `GET path` at `rate` per second for `duration`.
async fn measure(addr: SocketAddr, path: &'static str, rate: u32, duration: Duration) -> Measured {
    let per_connection = f64::from(rate) / CONNECTIONS as f64;
    let interval = Duration::from_secs_f64(1.0 / per_connection);
    let count = (duration.as_secs_f64() * per_connection) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr).await;
            let offset = interval.mul_f64(c as f64 / CONNECTIONS as f64);
            let mut from_schedule = Vec::with_capacity(count);
            let mut from_send = Vec::with_capacity(count);
            let mut size = 0;
            for i in 0..count {
                let scheduled = start + offset + interval * i as u32;
                tokio::time::sleep_until(scheduled).await;
                let sent = Instant::now();
                size = conn.get(path).await;
                from_send.push(sent.elapsed());
                from_schedule.push(scheduled.elapsed());
            }
            (from_schedule, from_send, size)
        }));
    }
    let mut m = Measured {
        from_schedule: Vec::new(),
        from_send: Vec::new(),
        size: 0,
    };
    for t in tasks {
        let (a, b, size) = t.await.unwrap();
        m.from_schedule.extend(a);
        m.from_send.extend(b);
        m.size = size;
    }
    m.from_schedule.sort();
    m.from_send.sort();
    m
}

fn quantile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let rate: u32 = std::env::var("WASMBED_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let devices: usize = std::env::var("WASMBED_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let system = System::start().await;
        for i in 0..devices {
            let key = wasmbed_sim::random_key();
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("rack".to_owned(), format!("r{}", i % 20));
            call(
                &system.client,
                &RegisterDevice {
                    device_id: DeviceId::new(format!("device-{i:05}")).unwrap(),
                    public_key: key.public_key(),
                    mcu: Some("Stm32F746gDisco".into()),
                    labels,
                },
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
        let addr = start_api(&system, vec![token("bench", TOKEN, Access::ReadOnly)]).await;
        // Warm up, then measure each route at the same rate.
        measure(addr, "/api/v1/devices", rate / 4, Duration::from_secs(1)).await;
        let duration = Duration::from_secs(5);
        println!("REST reads at {rate} req/s for {duration:?} over {CONNECTIONS} keep-alive connections, {devices} devices");
        println!("  (from send: the request's own round trip; from schedule: including any wait");
        println!("   behind a late earlier request and the load generator's timer, ~1 ms granularity)");
        for path in ["/health", "/api/v1/devices"] {
            let m = measure(addr, path, rate, duration).await;
            println!(
                "  GET {path:<16} {:>6} × {:>6} B  from send: p50 {:>8.2?} p99 {:>8.2?} | from schedule: p50 {:>8.2?} p99 {:>8.2?} max {:>8.2?}",
                m.from_send.len(),
                m.size,
                quantile(&m.from_send, 0.50),
                quantile(&m.from_send, 0.99),
                quantile(&m.from_schedule, 0.50),
                quantile(&m.from_schedule, 0.99),
                m.from_schedule[m.from_schedule.len() - 1]
            );
        }
        println!("  target: device-list p99 < 2 ms with 1,000 devices");
    });
}
