//! Event-append throughput next to raw pipelined JetStream publish, measured in the same run
//! against the same real nats-server.
//!
//! `cargo bench -p wasmbed-eventlog --bench append` (`WASMBED_BENCH_EVENTS`, default 50000;
//! `WASMBED_BENCH_IN_FLIGHT`, default 256; `WASMBED_BENCH_ROUNDS`, default 3).
//!
//! - raw: `jetstream::Context::publish` of the same JSON bytes, no headers, acks awaited in
//!   order with the same number in flight.
//! - append: `EventLog::append_pipelined`, each event with `Nats-Msg-Id` and
//!   `Nats-Expected-Last-Subject-Sequence: 0` on a fresh aggregate (both checks on), plus
//!   encoding the envelope.
//!
//! Target (issue 2): append / raw >= 0.5.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use wasmbed_eventlog::{EventLog, ExpectedVersion, LogOptions};
use wasmbed_schemas::event::{DeviceConnected, EventEnvelope};
use wasmbed_schemas::{DeviceId, GatewayId, subject};
use wasmbed_test_support::NatsServer;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn envelopes(round: usize, count: usize) -> Vec<EventEnvelope> {
    let gateway = GatewayId::new("gw-bench").expect("valid id");
    (0..count)
        .map(|i| {
            EventEnvelope::new(
                DeviceConnected {
                    device_id: DeviceId::new(format!("r{round}-d{i}")).expect("valid id"),
                    gateway_id: gateway.clone(),
                    remote_addr: "127.0.0.1:40000".into(),
                    session_id: None,
                }
                .into(),
            )
        })
        .collect()
}

async fn raw(log: &EventLog, events: &[EventEnvelope], in_flight: usize) -> Duration {
    let js = log.jetstream();
    let encoded: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            (
                format!("{}-raw", subject::event(&e.aggregate)),
                e.to_json().expect("encodes"),
            )
        })
        .collect();
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(in_flight);
    for (subject, payload) in encoded {
        if pending.len() >= in_flight {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                pending.pop_front().expect("non-empty");
            ack.await.expect("raw publish acked");
        }
        pending.push_back(
            js.publish(subject, payload.into())
                .await
                .expect("raw publish sent"),
        );
    }
    for ack in pending {
        ack.await.expect("raw publish acked");
    }
    start.elapsed()
}

async fn append(log: &EventLog, events: Vec<EventEnvelope>, in_flight: usize) -> Duration {
    let start = Instant::now();
    let results = log
        .append_pipelined(
            events.into_iter().map(|e| (ExpectedVersion::NONE, e)),
            in_flight,
        )
        .await;
    let elapsed = start.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "every append must succeed");
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let count = setting("WASMBED_BENCH_EVENTS", 50_000);
    let in_flight = setting("WASMBED_BENCH_IN_FLIGHT", 256);
    let rounds = setting("WASMBED_BENCH_ROUNDS", 3).max(1);
    let server = NatsServer::start().await.expect("nats-server starts");
    let log = EventLog::open(
        server.client().await.expect("connects"),
        &LogOptions::default(),
    )
    .await
    .expect("log opens");

    let size = envelopes(0, 1)[0].to_json().expect("encodes").len();
    println!(
        "event append vs raw JetStream publish: {count} events of ~{size} B, \
         {in_flight} in flight, {rounds} rounds, file store"
    );
    let (mut raw_rates, mut append_rates) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let events = envelopes(round, count);
        let r = raw(&log, &events, in_flight).await;
        let a = append(&log, events, in_flight).await;
        let (rr, ar) = (
            count as f64 / r.as_secs_f64(),
            count as f64 / a.as_secs_f64(),
        );
        println!("  round {round}: raw {rr:>9.0} msg/s   append {ar:>9.0} events/s");
        raw_rates.push(rr);
        append_rates.push(ar);
    }
    let (raw_median, append_median) = (median(raw_rates), median(append_rates));
    let ratio = append_median / raw_median;
    println!("raw pipelined publish (median): {raw_median:.0} msg/s");
    println!("event append with OCC + dedup (median): {append_median:.0} events/s");
    println!(
        "ratio append/raw: {ratio:.2} (target >= 0.50: {})",
        if ratio >= 0.5 { "met" } else { "NOT met" }
    );
}
