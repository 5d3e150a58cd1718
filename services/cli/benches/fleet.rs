//! A fleet larger than one process can hold: every service its own process (`wasmbed serve …`),
//! five gateways, a real nats-server, and the simulated devices spread over worker processes,
//! each connecting from its own 127.0.0.x address.
//!
//! `cargo bench -p wasmbed-cli --bench fleet`. Settings (environment):
//! - `WASMBED_BENCH_FLEET` (100000): devices;
//! - `WASMBED_BENCH_GATEWAYS` (5): gateway processes;
//! - `WASMBED_BENCH_HOLD_SECS` (30): how long the connected fleet is held, heart-beating at the
//!   default interval (5 s) while a tenth of it sends telemetry;
//! - `WASMBED_BENCH_TELEMETRY_MS` (5000): how often each of that tenth sends a message;
//! - `WASMBED_BENCH_PER_WORKER` (17000): devices per worker process;
//! - `WASMBED_BENCH_CONNECT_SECS` (600): how long the fleet gets to connect.
//!
//! Each gateway takes at most its descriptor limit less 100 sessions (the rest are its own:
//! NATS, listeners, logs), so a fleet over that many per gateway cannot all connect: the bench
//! prints how many did and what ran out. Then one gateway is killed (SIGKILL): its devices
//! reconnect to the others, as many as the others have room for.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use wasmbed_e2e::cluster::{Cluster, LogAudit, last_sequence, rss_kib};
use wasmbed_e2e::processes::{CpuMeter, fd_limit, metric, setting};
use wasmbed_e2e::workers::{self, Worker, WorkerSpec, register_fleet};
use wasmbed_schemas::event::Event;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// The gateways' default heartbeat interval, which the telemetry service's liveness follows.
const HEARTBEAT_MS: u64 = 5000;

/// Waits until the workers' devices hold `target` sessions, until no more connect for `stall`,
/// or until `deadline` after `since`; returns how many are connected, when the last of them
/// did (from `since`), and a line every 30 s of how many were connected then.
async fn wait_connected(
    workers: &[Worker],
    target: usize,
    stall: Duration,
    deadline: Duration,
    since: Instant,
) -> (usize, Duration, Vec<String>) {
    let (mut best, mut best_at) = (0, since.elapsed());
    let mut progress = Vec::new();
    let mut next_line = Duration::from_secs(30);
    loop {
        let connected = workers::total(workers).connected;
        if connected > best {
            (best, best_at) = (connected, since.elapsed());
        }
        if since.elapsed() >= next_line {
            progress.push(format!("{:.0} s: {connected}", next_line.as_secs_f64()));
            next_line += Duration::from_secs(30);
        }
        if connected >= target || since.elapsed() - best_at > stall || since.elapsed() > deadline {
            return (best, best_at, progress);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the workers' devices have opened `target` sessions in all, or until no more
/// open for 30 s; returns how many opened since `since` and when the last of them did.
async fn wait_sessions(workers: &[Worker], target: u64, since: Instant) -> (u64, Duration) {
    let start = workers::total(workers).sessions;
    let (mut best, mut best_at) = (start, since.elapsed());
    loop {
        let sessions = workers::total(workers).sessions;
        if sessions > best {
            (best, best_at) = (sessions, since.elapsed());
        }
        if sessions >= target || since.elapsed() - best_at > Duration::from_secs(30) {
            return (best - start, best_at);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every process of the system: gateways, the other services, nats-server, device workers.
fn processes(cluster: &Cluster, gateways: &[String], workers: &[Worker]) -> Vec<(String, u32)> {
    let mut processes: Vec<(String, u32)> = gateways
        .iter()
        .filter_map(|id| Some((id.clone(), cluster.pid(id)?)))
        .collect();
    for service in ["enrollment", "telemetry", "deployer"] {
        processes.extend(cluster.pid(service).map(|pid| (service.to_owned(), pid)));
    }
    processes.extend(
        cluster
            .nats
            .pid()
            .map(|pid| ("nats-server".to_owned(), pid)),
    );
    for (w, worker) in workers.iter().enumerate() {
        processes.extend(worker.pid().map(|pid| (format!("devices-{}", w + 1), pid)));
    }
    processes
}

/// `Event` kinds of the events after `sequence`, counted.
fn written_after(events: &[wasmbed_eventlog::StoredEvent], sequence: u64) -> String {
    let after: Vec<_> = events
        .iter()
        .filter(|e| e.sequence > sequence)
        .cloned()
        .collect();
    let audit = LogAudit::of(&after);
    let kinds: Vec<String> = audit
        .by_type
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    format!("{} events ({})", audit.events, kinds.join(", "))
}

/// `DeviceWentOffline` events up to sequence `to`.
fn offline_until(events: &[wasmbed_eventlog::StoredEvent], to: u64) -> usize {
    events
        .iter()
        .filter(|e| e.sequence <= to)
        .filter(|e| matches!(e.envelope.event, Event::DeviceWentOffline(_)))
        .count()
}

#[tokio::main]
async fn main() {
    if workers::serve_if_worker().await {
        return;
    }
    let fleet = setting("WASMBED_BENCH_FLEET", 100_000);
    let gateways = setting("WASMBED_BENCH_GATEWAYS", 5).max(2);
    let hold = Duration::from_secs(setting("WASMBED_BENCH_HOLD_SECS", 30) as u64);
    let per_worker = setting("WASMBED_BENCH_PER_WORKER", 17_000).max(1);
    let telemetry_every = Duration::from_millis(setting("WASMBED_BENCH_TELEMETRY_MS", 5000) as u64);
    let connect_for = Duration::from_secs(setting("WASMBED_BENCH_CONNECT_SECS", 600) as u64);
    let limit = fd_limit();
    let per_gateway = limit.saturating_sub(100);

    let mut cluster = Cluster::start_fleet(
        WASMBED.as_ref(),
        gateways,
        HEARTBEAT_MS,
        vec![(
            "WASMBED_GATEWAY_MAX_SESSIONS".into(),
            per_gateway.to_string(),
        )],
    )
    .await;
    let ids: Vec<String> = (1..=gateways).map(|n| format!("gw-{n}")).collect();
    let addrs: Vec<SocketAddr> = ids.iter().map(|id| cluster.gateway(id)).collect();
    println!(
        "fleet benchmark: {fleet} devices, {gateways} gateway processes (at most {per_gateway} sessions each: {limit} descriptors per process here), every service its own process, 2 cores"
    );

    let registering = Instant::now();
    register_fleet(&cluster.client, 0..fleet, 256).await;
    let registered = registering.elapsed();
    println!(
        "  registered in {:.1} s ({:.0}/s)",
        registered.as_secs_f64(),
        fleet as f64 / registered.as_secs_f64()
    );

    let rss_before: Vec<u64> = ids
        .iter()
        .map(|id| rss_kib(cluster.pid(id).unwrap()).unwrap_or(0))
        .collect();
    let telemetry = cluster.count_telemetry().await;
    let connecting = Instant::now();
    let worker_count = fleet.div_ceil(per_worker);
    let mut workers: Vec<Worker> = (0..worker_count)
        .map(|w| {
            let devices = w * per_worker..((w + 1) * per_worker).min(fleet);
            Worker::spawn(&WorkerSpec {
                ca_pem: cluster.ca_pem.clone(),
                gateways: addrs.clone(),
                devices,
                source_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + w as u8))),
                telemetry_every: 10,
                telemetry_interval: telemetry_every,
                connecting_at_once: 64,
            })
        })
        .collect();
    let processes = processes(&cluster, &ids, &workers);
    let connect_cpu = CpuMeter::start(&processes);
    let (held, connect_time, progress) = wait_connected(
        &workers,
        fleet,
        Duration::from_secs(30),
        connect_for,
        connecting,
    )
    .await;
    let connect_cpu = connect_cpu.report();
    let mut sessions = BTreeMap::new();
    for id in &ids {
        let http = cluster.gateway_http(id);
        sessions.insert(
            id.clone(),
            (
                metric(http, "wasmbed_gateway_sessions_active").await,
                metric(http, "wasmbed_gateway_over_capacity_total").await,
            ),
        );
    }
    println!(
        "  connected {held} of {fleet} in {:.1} s ({:.0} sessions/s) through {worker_count} device processes",
        connect_time.as_secs_f64(),
        held as f64 / connect_time.as_secs_f64()
    );
    println!(
        "    connected after: {}; at the end of the wait: {}",
        progress.join(", "),
        workers::total(&workers).connected
    );
    for (id, (active, over)) in &sessions {
        println!("    {id}: {active} sessions, {over} connections refused at capacity");
    }
    println!("  while connecting:\n{connect_cpu}");
    if held < fleet && held >= gateways * per_gateway {
        println!(
            "  what ran out: the gateways' descriptors ({gateways} x {per_gateway} = {} sessions at most)",
            gateways * per_gateway
        );
    } else if held < fleet {
        println!(
            "  what ran out: the cores (CPU above): the connected devices' heartbeats and telemetry left too little for new handshakes within {:.0} s",
            connect_for.as_secs_f64()
        );
    }

    // Hold the fleet, heart-beating, a tenth of it sending telemetry.
    let hold_from = last_sequence(&cluster.log).await;
    let meter = CpuMeter::start(&processes);
    tokio::time::sleep(hold).await;
    let cpu = meter.report();
    // Telemetry stops; what is in flight has a moment to arrive, and the workers to report.
    for worker in &mut workers {
        worker.stop_telemetry().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = workers::total(&workers).telemetry_sent;
    let (received, missing) = {
        let count = telemetry.lock().unwrap();
        (count.received(), count.missing())
    };
    let hold_to = last_sequence(&cluster.log).await;
    let still = workers::total(&workers).connected;
    let mut rss_per_session = Vec::new();
    for (id, before) in ids.iter().zip(&rss_before) {
        let after = rss_kib(cluster.pid(id).unwrap()).unwrap_or(0);
        let active = sessions[id].0.max(1);
        rss_per_session.push(after.saturating_sub(*before) as f64 / active as f64);
    }
    let events = cluster.all_events().await;
    let wrongly_offline = offline_until(&events, hold_to);
    println!(
        "  held {:.0} s with 5 s heartbeats: {still} still connected",
        hold.as_secs_f64()
    );
    println!(
        "  gateway RSS per session: {}",
        rss_per_session
            .iter()
            .map(|kib| format!("{kib:.1} KiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  telemetry from a tenth of the fleet, a message every {:.1} s each, from the first connection until the end of the hold: {sent} sent, {received} delivered ({:.4} of sent), {missing} sequence numbers never arrived",
        telemetry_every.as_secs_f64(),
        received as f64 / sent.max(1) as f64
    );
    println!(
        "  liveness: {wrongly_offline} devices recorded offline while every one was connected   (target 0: {})",
        if wrongly_offline == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  events written while held: {}",
        written_after(&events, hold_from)
    );
    println!("{cpu}");

    // Kill one gateway: its devices go to the others.
    let victim = ids[gateways - 1].clone();
    let orphans = sessions[&victim].0 as usize;
    let killed_at = last_sequence(&cluster.log).await;
    let sessions_before = workers::total(&workers).sessions;
    let killed = Instant::now();
    cluster.kill(&victim).await;
    let room: usize = ids[..gateways - 1]
        .iter()
        .map(|id| per_gateway.saturating_sub(sessions[id].0 as usize))
        .sum();
    let expected = orphans.min(room);
    let (back, back_after) =
        wait_sessions(&workers, sessions_before + expected as u64, killed).await;
    tokio::time::sleep(Duration::from_secs(3 * HEARTBEAT_MS / 1000 + 2)).await;
    let events = cluster.all_events().await;
    println!(
        "  killed {victim} (SIGKILL) holding {orphans} sessions; the other gateways had room for {room}:"
    );
    println!(
        "    {back} of its {orphans} devices connected again after {:.1} s; {} devices connected now",
        back_after.as_secs_f64(),
        workers::total(&workers).connected
    );
    println!(
        "    events written since the kill: {}",
        written_after(&events, killed_at)
    );
    for worker in workers {
        worker.stop().await;
    }
}
