//! Rollout fan-out at a fleet size one process cannot hold: a 64 KiB module to 1,000 and to
//! 10,000 simulated devices, every service its own process (`wasmbed serve …`, two gateways),
//! the devices in worker processes of 5,000 each; timed from the deploy command until every
//! device's `DeploymentRunning` is in the log.
//!
//! `cargo bench -p wasmbed-cli --bench fan_out`; `WASMBED_BENCH_FAN_OUT` (`1000,10000`) lists
//! the fleet sizes, each on a system of its own.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wasmbed_bus::call;
use wasmbed_e2e::apps::create_application;
use wasmbed_e2e::cluster::Cluster;
use wasmbed_e2e::timed::{bench_limits, bench_module, deployment_events, running_times};
use wasmbed_e2e::workers::{self, Worker, WorkerSpec, register_fleet};
use wasmbed_schemas::AppId;
use wasmbed_schemas::command::DeployApplication;
use wasmbed_schemas::event::Target;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");
const MODULE_LEN: usize = 64 * 1024;
const PER_WORKER: usize = 5000;

/// Deploys a 64 KiB module to `n` devices on a system of their own: (time to every device
/// running, median device, p99 device).
async fn fan_out(n: usize) -> (Duration, Duration, Duration) {
    let cluster = Cluster::start_fleet(WASMBED.as_ref(), 2, 5000, Vec::new()).await;
    let gateways = vec![cluster.gateway("gw-1"), cluster.gateway("gw-2")];
    register_fleet(&cluster.client, 0..n, 256).await;
    let workers: Vec<Worker> = (0..n.div_ceil(PER_WORKER))
        .map(|w| {
            Worker::spawn(&WorkerSpec {
                ca_pem: cluster.ca_pem.clone(),
                gateways: gateways.clone(),
                devices: w * PER_WORKER..((w + 1) * PER_WORKER).min(n),
                source_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + w as u8))),
                telemetry_every: 0,
                telemetry_interval: Duration::from_secs(1),
                connecting_at_once: 64,
            })
        })
        .collect();
    let connecting = Instant::now();
    while workers::total(&workers).connected < n {
        assert!(
            connecting.elapsed() < Duration::from_secs(300),
            "only {} of {n} devices connected",
            workers::total(&workers).connected
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  {n} devices connected in {:.1} s through {} device processes",
        connecting.elapsed().as_secs_f64(),
        workers.len()
    );

    let app = AppId::new("fan-out").unwrap();
    let module = bench_module(MODULE_LEN, 1);
    create_application(
        &cluster.client,
        &cluster.log,
        &app,
        &module,
        Target::All,
        bench_limits(),
        None,
    )
    .await
    .unwrap();
    let mut events = deployment_events(&cluster.client, &app).await;
    let started = Instant::now();
    call(
        &cluster.client,
        &DeployApplication {
            app_id: app.clone(),
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let latencies = running_times(&mut events, n, 1, started, deadline)
        .await
        .unwrap_or_else(|running| panic!("only {running} of {n} devices running"));
    let all = started.elapsed();
    for worker in workers {
        worker.stop().await;
    }
    (all, latencies[n / 2], latencies[(n * 99 / 100).min(n - 1)])
}

#[tokio::main]
async fn main() {
    if workers::serve_if_worker().await {
        return;
    }
    let sizes: Vec<usize> = std::env::var("WASMBED_BENCH_FAN_OUT")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    println!(
        "rollout fan-out: a {} KiB module, every service its own process, 2 gateways, devices in processes of {PER_WORKER}, 2 cores",
        MODULE_LEN / 1024
    );
    for n in sizes {
        let (all, p50, p99) = fan_out(n).await;
        let target = if n <= 1000 { 2.0 } else { 15.0 };
        println!(
            "  {n} devices: all running after {:.2} s (device p50 {:.2} s, p99 {:.2} s), {:.1} MB/s   (target < {target} s: {})",
            all.as_secs_f64(),
            p50.as_secs_f64(),
            p99.as_secs_f64(),
            (n * MODULE_LEN) as f64 / 1e6 / all.as_secs_f64(),
            if all.as_secs_f64() < target {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
