//! Start-up against a long log: a generated history of a million events (a fleet living for a
//! while: `wasmbed_e2e::history`), then every service that folds the log started as its own
//! process, until it answers as ready — first with no snapshot, then again from the snapshots
//! the first start wrote. Beside it, in the same run: how fast this process reads the raw
//! stream, and how fast it folds the same events into the fleet (the api's read model).
//!
//! `cargo bench -p wasmbed-cli --bench cold_start` (`WASMBED_BENCH_EVENTS`, default 1000000).
//!
//! Targets (issue 24): each service ready in under 10 s; fold rate >= 0.5 of the raw read rate.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmbed_e2e::cluster::{Cluster, last_sequence};
use wasmbed_e2e::history::{self, history};
use wasmbed_eventlog::snapshot::Snapshotted;
use wasmbed_eventlog::{EventLog, ExpectedVersion, LiveReader, StoredEvent};
use wasmbed_fleet::Fleet;
use wasmbed_schemas::subject;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// The services whose start folds the log, in the order they are started again.
const SERVICES: [&str; 4] = ["enrollment", "deployer", "telemetry", "api"];

/// Writes `events` of the generated history; returns the append rate.
async fn write(log: &EventLog, events: usize) -> f64 {
    let started = Instant::now();
    let appends = history(events).map(|e| (ExpectedVersion::Any, e));
    let results = log.append_pipelined(appends, 512).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "appends failed");
    results.len() as f64 / started.elapsed().as_secs_f64()
}

/// Messages per second reading the whole stream without decoding them.
async fn raw_read(log: &EventLog, events: u64) -> f64 {
    let stream = log
        .jetstream()
        .get_stream(subject::EVENTS_STREAM)
        .await
        .expect("stream");
    let client = log.jetstream().client();
    let started = Instant::now();
    let (mut reader, _) = LiveReader::start(&client, stream, Vec::new(), 0)
        .await
        .expect("reader");
    let mut read = 0u64;
    let mut bytes = 0usize;
    while read < events {
        let message = reader.next().await.expect("open").expect("message");
        bytes += message.payload.len();
        read += 1;
    }
    assert!(bytes > 0);
    read as f64 / started.elapsed().as_secs_f64()
}

/// Events per second decoded and handed to `apply` with the fleet, the whole log; the fleet.
async fn fold_with(
    log: &EventLog,
    mut apply: impl FnMut(&mut Fleet, &StoredEvent),
) -> (f64, Fleet) {
    let started = Instant::now();
    let mut follow = log.follow(Vec::new()).await.expect("follow");
    let mut fleet = Fleet::default();
    let folded = follow.catch_up(|e| apply(&mut fleet, e)).await;
    (folded as f64 / started.elapsed().as_secs_f64(), fleet)
}

/// Prints the raw read rate of the whole log next to decoding it and folding it into the
/// fleet (the api's restore without a snapshot), in this process.
async fn read_and_fold(log: &EventLog) {
    let raw = raw_read(log, last_sequence(log).await).await;
    let (decoded, _) = fold_with(log, |_, _| {}).await;
    let (folded, fleet) = fold_with(log, |fleet, e| {
        fleet.apply_followed(e);
    })
    .await;
    println!(
        "  read the raw stream: {raw:>7.0} events/s; decode: {decoded:>7.0} events/s; decode + fold into the fleet: {folded:>7.0} events/s: ratio {:.2} (target >= 0.5: {})",
        folded / raw,
        if folded / raw >= 0.5 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  the fleet: {} devices ({} online), {} deployments",
        fleet.devices.len(),
        fleet.online(),
        fleet.deployment_count()
    );
}

/// Waits until the log stops growing for 3 s (at most 5 minutes): how many events it grew by
/// and how long that took.
async fn quiet(log: &EventLog) -> (u64, Duration) {
    let started = Instant::now();
    let first = last_sequence(log).await;
    let mut seen = first;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = last_sequence(log).await;
        if now == seen || started.elapsed() > Duration::from_secs(300) {
            return (now - first, started.elapsed());
        }
        seen = now;
    }
}

/// Waits until the api's and deployer's snapshots are written (by their restore: it folded
/// more than the policy's 10,000 events).
async fn snapshots_written(log: &EventLog) -> Duration {
    let started = Instant::now();
    let store = log.snapshots().await.expect("snapshot store");
    for service in ["api", "deployer"] {
        loop {
            let restored = store
                .load::<Fleet>(service, Fleet::FORMAT)
                .await
                .expect("load");
            if restored.is_some_and(|r| r.sequence > 0) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no snapshot of {service}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    started.elapsed()
}

fn seconds(d: Option<&Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: usize = std::env::var("WASMBED_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "cold start: a generated history of {events} events ({} devices, {} gateways, {} apps), \
         every service its own process, nats-server on the same 2 cores",
        history::devices(events),
        history::GATEWAYS,
        history::APPS
    );
    let deadline = Duration::from_secs(300);
    let mut cluster = Cluster::start_on_history(
        Path::new(WASMBED),
        async |log| {
            let rate = write(log, events).await;
            println!("  written at {rate:.0} events/s (pipelined appends, 512 in flight)");
            // Read before any service runs: nothing else competes for the two cores.
            read_and_fold(log).await;
        },
        deadline,
    )
    .await;
    cluster.start_api("api").await;
    let first = cluster.start_times.clone();

    let log = cluster.log.clone();
    let waited = snapshots_written(&log).await;
    println!(
        "  snapshots of the api's and the deployer's fleet written {:.1} s after they were ready",
        waited.as_secs_f64()
    );

    // The services react to the history (telemetry records the silent devices offline, the
    // deployer requests the applications on every device): wait until the log is quiet, then
    // start each again twice. The first folds what was appended since its snapshot and writes
    // a new one; the second starts from that one.
    let (grown, quiet_after) = quiet(&log).await;
    println!(
        "  the running services appended {grown} events in reaction; the log was quiet after {:.0} s",
        quiet_after.as_secs_f64()
    );
    let mut again = Vec::new();
    for service in SERVICES {
        let mut took = Vec::new();
        for _ in 0..2 {
            cluster.kill(service).await;
            took.push(cluster.start_service(service).await);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        again.push((service, took));
    }
    println!(
        "  service      first start      again (folds what came    again (from the   target < 10 s"
    );
    println!("               (no snapshot)    since its snapshot)       fresh snapshot)");
    for (service, took) in again {
        let met = |d: Duration| d < Duration::from_secs(10);
        println!(
            "  {service:<12} {:>13}  {:>23}  {:>16}   {}",
            seconds(first.get(service)),
            seconds(took.first()),
            seconds(took.last()),
            match (
                first.get(service).copied().is_some_and(met),
                took.iter().all(|t| met(*t))
            ) {
                (true, true) => "met",
                (false, true) => "met from a snapshot",
                _ => "NOT met",
            }
        );
    }
    println!(
        "  (gateways fold nothing at start: {} and {}; the projector rebuilds its view only \
         while it holds its lease, against a Kubernetes API this machine does not run)",
        seconds(first.get("gw-a")),
        seconds(first.get("gw-b"))
    );
}
