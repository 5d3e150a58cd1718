//! Failover on a 3-node JetStream cluster: two instances of every service as processes
//! (`wasmbed serve …`, each its own NATS user, streams and buckets with three replicas), devices
//! heart-beating and sending telemetry, registrations sent continuously, and `kill -9` of the
//! active instance of each service in turn: enrollment, the deployer's lease holder with a
//! deployment in flight, telemetry while a device goes silent, the renode-manager's lease holder
//! with emulators running, and a gateway. Printed: how long until the other instance acted, and
//! what the log holds.
//!
//! `WASMBED_FAILOVER_DEVICES` sets the fleet size (default 12, the CI variant).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use wasmbed_bus::call;
use wasmbed_e2e::T;
use wasmbed_e2e::cluster::{
    Cluster, HEARTBEAT_MS, LogAudit, assert_ran_once, assert_registered_once, between, connections,
    recorded_offline, register, register_continuously, wait_connected, wait_sessions,
};
use wasmbed_e2e::downlinks::Transfers;
use wasmbed_schemas::command::{RegisterDevice, StartEmulator};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_sim::random_key;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

fn fleet_size() -> usize {
    std::env::var("WASMBED_FAILOVER_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12)
}

/// Waits until lease `lease` is held by an instance other than `killed`; returns which.
async fn new_holder(cluster: &Cluster, lease: &str, killed: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        if let Some(holder) = cluster.lease_holder(lease).await
            && holder != killed
        {
            return holder;
        }
        assert!(Instant::now() < deadline, "nobody took the {lease} lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts emulators `emu-0`… through the renode-manager's commands (the managers here run the
/// simulator backend; `simulated: false` leaves the choice of backend to them).
async fn start_emulators(cluster: &Cluster, n: usize) -> Vec<DeviceId> {
    let emulators: Vec<DeviceId> = (0..n)
        .map(|n| DeviceId::new(format!("emu-{n}")).unwrap())
        .collect();
    for device_id in &emulators {
        let start = StartEmulator {
            device_id: device_id.clone(),
            mcu: "Mps2An385".into(),
            simulated: false,
            labels: BTreeMap::new(),
        };
        call(&cluster.client, &start, T).await.unwrap();
    }
    emulators
}

/// Waits until a registration of a fresh device is acknowledged; returns how long that took.
async fn registration_answered(cluster: &Cluster) -> Duration {
    let started = Instant::now();
    for i in 0.. {
        let command = RegisterDevice {
            device_id: DeviceId::new(format!("probe-{i}")).unwrap(),
            public_key: wasmbed_device_core::Signer::public_key(&random_key()),
            mcu: None,
            labels: BTreeMap::new(),
        };
        if call(&cluster.client, &command, Duration::from_millis(500))
            .await
            .is_ok()
        {
            break;
        }
        assert!(started.elapsed() < T, "no enrollment answers");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_the_active_instance_of_each_service_killed_in_turn_on_a_three_node_cluster() {
    let mut cluster = Cluster::start_replicated(Path::new(WASMBED)).await;
    cluster.start_renode_manager("rm-a").await;
    cluster.start_renode_manager("rm-b").await;
    let n = fleet_size();
    let (ids, keys) = register(&cluster, n).await;
    let gateways = vec![cluster.gateway("gw-a"), cluster.gateway("gw-b")];
    let mut devices = cluster.devices(&keys, gateways);
    wait_connected(&mut devices, 1, Instant::now()).await;
    let sensor = AppId::new("sensor").unwrap();
    cluster.deploy(&sensor, wasmbed_example_apps::SENSOR).await;
    cluster.wait_running(&sensor, &ids, T).await;
    let emulators = start_emulators(&cluster, 2).await;
    wait_sessions(&cluster, &emulators, 1).await;
    let telemetry = cluster.count_telemetry().await;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let commands = register_continuously(cluster.client.clone(), stopping);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Enrollment: either instance answers; the other goes.
    cluster.kill("enrollment").await;
    let enrollment = registration_answered(&cluster).await;

    // The deployer's lease holder, with a deployment in flight.
    let deployer = cluster.lease_holder("deployer").await.unwrap();
    let counter = AppId::new("counter").unwrap();
    cluster
        .deploy(&counter, wasmbed_example_apps::COUNTER)
        .await;
    let killed_at = Utc::now();
    let killed = Instant::now();
    cluster.kill(&deployer).await;
    let in_flight = n - cluster.running_on(&counter, &ids).await;
    new_holder(&cluster, "deployer", &deployer).await;
    let deployer_took_over = killed.elapsed();
    let deployed = between(killed_at, cluster.wait_running(&counter, &ids, T).await);

    // Telemetry: one instance goes, then a device goes silent; the other records it, once.
    cluster.kill("telemetry").await;
    let silent = devices.pop().unwrap();
    let silent_id = ids[n - 1].clone();
    let silenced = Instant::now();
    silent.stop().await;
    cluster.wait_offline(&silent_id).await;
    let offline_after = silenced.elapsed();
    // Long enough for a wrong offline verdict on the others to show.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 4)).await;
    let liveness = cluster.all_events().await;

    // The renode-manager's lease holder, with its emulators running.
    let manager = cluster.lease_holder("renode-manager").await.unwrap();
    let killed = Instant::now();
    cluster.kill(&manager).await;
    new_holder(&cluster, "renode-manager", &manager).await;
    let manager_took_over = killed.elapsed();
    wait_sessions(&cluster, &emulators, 2).await;
    let adopted = killed.elapsed();
    // Settled: each board runs once (no second copy fighting for the session).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_gateway = cluster.all_events().await;

    // A gateway: its devices land on the other.
    let before = telemetry.lock().unwrap().received();
    let killed = Instant::now();
    cluster.kill("gw-a").await;
    wait_connected(&mut devices, 1, killed).await;
    let mut telemetry_back = None;
    while telemetry_back.is_none() {
        if telemetry.lock().unwrap().received() > before + n as u64 {
            telemetry_back = Some(killed.elapsed());
        }
        assert!(killed.elapsed() < T, "telemetry never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let (acknowledged, refused, unanswered) = commands.await.unwrap();

    let events = cluster.all_events().await;
    let audit = LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0, "{audit:?}");
    assert_registered_once(&events, &acknowledged);
    assert_eq!(refused, 0);
    assert_ran_once(&events, &[&sensor, &counter], &ids);
    assert_eq!(recorded_offline(&liveness, &ids), [&silent_id]);
    let sessions: Vec<usize> = emulators
        .iter()
        .map(|d| connections(&before_gateway, d))
        .collect();
    assert_eq!(sessions, [2, 2], "an emulator runs twice or flaps");
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    eprintln!(
        "failover: 3-node cluster, two instances of every service, {n} devices, kill -9 of the \
         active instance of each in turn: enrollment answered again {enrollment:?} after; the \
         deployer's lease taken by the other {deployer_took_over:?} after (lease TTL {:?}) and \
         the deployment in flight (not yet running on {in_flight} of {n}) completed {deployed} \
         ms after the kill; with one telemetry instance gone, a silenced device recorded \
         offline {offline_after:?} after (timeout {} ms), nobody else; the renode-manager's \
         lease taken {manager_took_over:?} after, its 2 emulators connected again {adopted:?} \
         after; gw-a's devices on gw-b and telemetry flowing {:?} after. Registrations: {} \
         acknowledged, all in the log once, {unanswered} unanswered, 0 refused. Log: {} \
         events, 0 duplicates.",
        wasmbed_service::LEASE_TTL,
        HEARTBEAT_MS * 3,
        telemetry_back.unwrap_or_default(),
        acknowledged.len(),
        audit.events,
    );
    assert!(
        deployer_took_over < Duration::from_secs(5),
        "{deployer_took_over:?}"
    );
    assert!(
        manager_took_over < Duration::from_secs(5),
        "{manager_took_over:?}"
    );
    for device in devices {
        device.stop().await;
    }
}

/// Both deployers and both renode-managers started at the same moment (the deployers' lease
/// free since the last holder died): one of each holds the lease and acts. Every device gets
/// each transfer once, every emulator runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_two_instances_started_at_the_same_moment_one_acts() {
    let mut cluster = Cluster::start_replicated(Path::new(WASMBED)).await;
    cluster.kill("deployer").await;
    cluster.kill("deployer-2").await;
    // The dead holder's key expires; both start while it does.
    tokio::time::sleep(wasmbed_service::LEASE_TTL / 2).await;
    cluster.start_services(&["deployer", "deployer-2"]).await;
    cluster.add_renode_manager("rm-a");
    cluster.add_renode_manager("rm-b");
    cluster.start_services(&["rm-a", "rm-b"]).await;

    let n = fleet_size();
    let (ids, keys) = register(&cluster, n).await;
    let mut devices = cluster.devices(&keys, vec![cluster.gateway("gw-a")]);
    wait_connected(&mut devices, 1, Instant::now()).await;
    let counting = Transfers::count(&cluster.client).await;
    let counter = AppId::new("counter").unwrap();
    cluster
        .deploy(&counter, wasmbed_example_apps::COUNTER)
        .await;
    cluster.wait_running(&counter, &ids, T).await;
    let emulators = start_emulators(&cluster, 2).await;
    wait_sessions(&cluster, &emulators, 1).await;
    // Long enough for a second transfer or a second copy of a board to show.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let transfers = counting.so_far();
    let deployer = cluster.lease_holder("deployer").await.unwrap();
    let manager = cluster.lease_holder("renode-manager").await.unwrap();
    let events = cluster.all_events().await;
    let sessions: Vec<usize> = emulators.iter().map(|d| connections(&events, d)).collect();
    let started = events
        .iter()
        .filter(|e| matches!(e.envelope.event, Event::EmulatorStarted(_)))
        .count();
    eprintln!(
        "failover: two deployers and two renode-managers started at the same moment: {deployer} \
         and {manager} hold the leases; transfers per device {:?}; sessions per emulator \
         {sessions:?}, EmulatorStarted {started} for 2.",
        transfers.values().collect::<Vec<_>>()
    );
    // The emulated boards are devices too: the app went to them as well.
    assert_eq!(transfers.len(), n + emulators.len(), "{transfers:?}");
    assert!(transfers.values().all(|t| *t == 1), "{transfers:?}");
    assert_eq!(sessions, [1, 1], "an emulator runs twice");
    assert_eq!(started, 2);
    assert_eq!(LogAudit::of(&events).duplicate_ids, 0);
    for device in devices {
        device.stop().await;
    }
}
