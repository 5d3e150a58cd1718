//! The whole system on a real 3-node JetStream cluster (three `nats-server` processes routed on
//! loopback, streams and buckets with three replicas): simulated devices heart-beating and
//! sending telemetry, a deployment in flight, and the node leading the event stream killed with
//! SIGKILL, then restarted on its store. Printed: what was acknowledged against what is in the
//! log, how the devices and the telemetry fared, how long the node took to catch up.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use wasmbed_bus::call;
use wasmbed_e2e::apps::{create_application, deploy_application};
use wasmbed_e2e::cluster::{LogAudit, all_events, event_stream_leader, wait_running};
use wasmbed_e2e::fleet::{Heard, connected_fleet};
use wasmbed_e2e::{T, test_limits};
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_example_apps::{COUNTER, SENSOR};
use wasmbed_gateway::{GatewayConfig, Listeners};
use wasmbed_schemas::command::GetCaCertificate;
use wasmbed_schemas::event::Target;
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{AppId, GatewayId};
use wasmbed_service::RuntimeOptions;
use wasmbed_sim::SimConfig;
use wasmbed_test_support::NatsCluster;

/// `WASMBED_CLUSTER_DEVICES` sets the fleet size (default 60, the CI variant; 200 in the
/// README's figure).
fn fleet_size() -> usize {
    std::env::var("WASMBED_CLUSTER_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60)
}

fn replicated() -> RuntimeOptions {
    RuntimeOptions {
        replicas: 3,
        ..RuntimeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_rides_out_the_event_streams_leader_node_killed_and_restarted() {
    // RUST_LOG shows the services' logs (stderr, captured unless --nocapture).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let devices_n = fleet_size();
    let mut cluster = NatsCluster::start().await.unwrap();
    let operator = cluster.client().await.unwrap();
    let never = std::future::pending::<()>;
    let ca_dir = tempfile::tempdir().unwrap();
    let mut enrollment = wasmbed_enrollment::EnrollmentConfig::new(ca_dir.path().to_path_buf());
    enrollment.runtime = replicated();
    tokio::spawn(wasmbed_enrollment::run(
        cluster.client_as(Principal::Enrollment).await.unwrap(),
        enrollment,
        never(),
    ));
    let mut ca = None;
    for _ in 0..200 {
        if let Ok(reply) = call(&operator, &GetCaCertificate {}, Duration::from_millis(300)).await {
            ca = Some(reply.certificate_pem);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = ca.expect("enrollment answers");
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = tls.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_http = http.local_addr().unwrap();
    let mut gateway = GatewayConfig::new(GatewayId::new("gw-cluster").unwrap());
    gateway.heartbeat_interval = Duration::from_millis(500);
    gateway.runtime = replicated();
    tokio::spawn(wasmbed_gateway::run(
        cluster.client_as(Principal::Gateway).await.unwrap(),
        gateway,
        Listeners { tls, http },
        never(),
    ));
    tokio::spawn(wasmbed_deployer::run(
        cluster.client_as(Principal::Deployer).await.unwrap(),
        wasmbed_deployer::DeployerConfig {
            runtime: replicated(),
            ..wasmbed_e2e::deployer_config()
        },
        never(),
    ));
    let telemetry_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(wasmbed_telemetry::run(
        cluster.client_as(Principal::Telemetry).await.unwrap(),
        wasmbed_telemetry::TelemetryConfig {
            heartbeat_interval: Duration::from_millis(500),
            missed_heartbeats: 6,
            sweep_interval: Duration::from_millis(100),
            runtime: replicated(),
        },
        telemetry_http,
        never(),
    ));
    let deadline = Instant::now() + T;
    while wasmbed_test_support::http_get(gateway_http, "/ready")
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "gateway never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = EventLog::open(operator.clone(), &LogOptions { replicas: 3 })
        .await
        .unwrap();

    // The fleet: registered, connected, heart-beating.
    let mut config = SimConfig::new(vec![gateway_addr]);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    let (devices, sims) = connected_fleet(&operator, &ca, config, "node-dev", devices_n, T).await;
    // Who published telemetry, and when last: the kill is judged per device.
    let heard = Heard::follow(&operator).await;

    // The counter app publishes every tick on every device: running everywhere before the kill.
    let mut limits = test_limits();
    limits.tick_interval_ms = 200;
    let counter = AppId::new("counter").unwrap();
    let all = Target::All;
    create_application(
        &operator,
        &log,
        &counter,
        COUNTER,
        all.clone(),
        limits,
        None,
    )
    .await
    .unwrap();
    deploy_application(&operator, &counter).await.unwrap();
    let deadline = Instant::now() + T * 2;
    while heard.devices() < devices_n {
        assert!(
            Instant::now() < deadline,
            "not every device publishes telemetry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second app is being deployed at the kill.
    let app = AppId::new("sensor").unwrap();
    create_application(&operator, &log, &app, SENSOR, all, limits, None)
        .await
        .unwrap();
    deploy_application(&operator, &app).await.unwrap();

    let leader = event_stream_leader(&log).await;
    let victim: usize = leader.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
    let acknowledged_before = all_events(&log).await;
    let sessions_before: Vec<u32> = sims.iter().map(|s| s.status().sessions).collect();
    cluster.kill(victim);
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();

    // Telemetry resumes from every device; the deployment completes on every device.
    let resumed = loop {
        let after_kill = heard.since(killed);
        if after_kill == devices_n {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < T,
            "telemetry resumed from {after_kill} of {devices_n} devices"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // When the log recorded the last device running it (reads of the log during the election
    // time out, so the wait notices late).
    let last_running = wait_running(&log, &app, &devices, Instant::now() + T * 2).await;
    let deployed = (last_running - killed_at).to_std().unwrap_or_default();
    let reconnected = sims
        .iter()
        .zip(&sessions_before)
        .filter(|(s, before)| s.status().sessions > **before)
        .count();

    // The killed node comes back on its store and catches up.
    let restarted = Instant::now();
    cluster.restart(victim).await.unwrap();
    cluster.wait_healthy(Duration::from_secs(60)).await.unwrap();
    let caught_up = restarted.elapsed();

    let after = all_events(&log).await;
    let audit = LogAudit::of(&after);
    let ids: std::collections::HashSet<_> = after.iter().map(|e| e.envelope.event_id).collect();
    let lost = acknowledged_before
        .iter()
        .filter(|e| !ids.contains(&e.envelope.event_id))
        .count();
    let offline = audit.count("DeviceWentOffline");
    eprintln!(
        "nats cluster: {devices_n} devices, the event stream's leader {leader} killed with a \
         deployment in flight: telemetry from every device again {resumed:?} after; every device \
         ran the app being deployed {deployed:?} after (the log's times); {reconnected} devices opened a new session, {offline} recorded \
         offline; {leader} restarted and current {caught_up:?} later. Log: {} events, \
         {} acknowledged before the kill, {lost} of them lost, {} duplicates.",
        audit.events,
        acknowledged_before.len(),
        audit.duplicate_ids
    );
    assert_eq!(lost, 0);
    assert_eq!(audit.duplicate_ids, 0);
    assert_eq!(
        offline, 0,
        "a device that stayed connected was recorded offline"
    );
    assert!(
        resumed < Duration::from_secs(5),
        "telemetry back only {resumed:?} after"
    );
    // An election takes about 5 s; a deployer that waited out one lost ack after another
    // (each append's wait started only when awaited) stalled for minutes.
    assert!(
        deployed < Duration::from_secs(25),
        "the deployment finished only {deployed:?} after the kill"
    );
    for sim in &sims {
        assert!(
            sim.status().connected,
            "a device is not connected at the end"
        );
    }
    for sim in sims {
        sim.stop().await;
    }
}
