//! Faults: the services run as separate processes (`wasmbed serve …`, each its own NATS user)
//! under simulated devices with steady telemetry and a deployment in flight, and the test breaks
//! them: `kill -9` of a gateway (devices land on the other one), of enrollment, the deployer and
//! telemetry in turn, of the deployer in the middle of a rollout's wave, and a nats-server
//! restart. Each test prints what it checked: events in the log against what was acknowledged,
//! reconnect times, telemetry received.
//!
//! `WASMBED_FAULT_DEVICES` sets the fleet size (default 12, the CI variant).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use wasmbed_bus::call;
use wasmbed_deployer::upload_module;
use wasmbed_e2e::cluster::{
    Cluster, HEARTBEAT_MS, LogAudit, assert_ran_once, assert_registered_once, between, connections,
    device_events, recorded_offline, register, register_continuously, wait_connected,
    wait_sessions,
};
use wasmbed_e2e::{T, deployment, padded};
use wasmbed_schemas::command::StartRollout;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::rollout::{MaxFailures, WaveSize};
use wasmbed_schemas::{AggregateId, AppId, DeviceId};
use wasmbed_sim::random_key;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

fn fleet_size() -> usize {
    std::env::var("WASMBED_FAULT_DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12)
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_killed_gateway_loses_no_event_and_its_devices_land_on_the_other() {
    let mut cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let n = fleet_size();
    let (ids, keys) = register(&cluster, n).await;
    let (a, b) = (cluster.gateway("gw-a"), cluster.gateway("gw-b"));
    // Every device knows both gateways and dials gw-a first.
    let mut devices = cluster.devices(&keys, vec![a, b]);
    wait_connected(&mut devices, 1, Instant::now()).await;
    let sensor = AppId::new("sensor").unwrap();
    cluster.deploy(&sensor, wasmbed_example_apps::SENSOR).await;
    cluster.wait_running(&sensor, &ids, T).await;
    let telemetry = cluster.count_telemetry().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A deployment in flight, and gw-a dies under it.
    let counter = AppId::new("counter").unwrap();
    cluster
        .deploy(&counter, wasmbed_example_apps::COUNTER)
        .await;
    let killed = Instant::now();
    let killed_at = Utc::now();
    cluster.kill("gw-a").await;
    let in_flight = n - cluster.running_on(&counter, &ids).await;
    let reconnect = wait_connected(&mut devices, 2, killed).await;
    let completed = between(killed_at, cluster.wait_running(&counter, &ids, T).await);
    let before_second = telemetry.lock().unwrap().received();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // gw-a comes back; now gw-b dies, and the devices go back to gw-a.
    cluster.start_service("gw-a").await;
    let killed_b = Instant::now();
    cluster.kill("gw-b").await;
    let back = wait_connected(&mut devices, 3, killed_b).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let events = cluster.all_events().await;
    let audit = LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0, "{audit:?}");
    for id in &ids {
        // Each session is in the log once, on the gateway that held it: a, then b, then a.
        let sessions: Vec<&str> = device_events(&events, id)
            .filter_map(|e| match e {
                Event::DeviceConnected(c) => Some(c.gateway_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sessions, ["gw-a", "gw-b", "gw-a"], "{id}");
        for app in [&sensor, &counter] {
            let history: Vec<&str> = events
                .iter()
                .filter(|e| e.envelope.aggregate == deployment(app, id))
                .map(|e| e.envelope.event.type_name())
                .collect();
            // Requested and Running exactly once: nothing redone, nothing lost.
            for once in ["DeploymentRequested", "DeploymentRunning"] {
                assert_eq!(
                    history.iter().filter(|t| **t == once).count(),
                    1,
                    "{app} on {id}: {history:?}"
                );
            }
        }
    }
    // Telemetry flowed from every device after both faults.
    let (received, missing) = {
        let count = telemetry.lock().unwrap();
        for id in &ids {
            assert!(count.of(id) > 0, "no telemetry from {id}");
        }
        (count.received(), count.missing())
    };
    assert!(received > before_second);
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    println!(
        "\nfaults: gateway kill -9 with {n} devices: all reconnected to gw-b in {} ms (median {} ms), \
         the counter deployment in flight ({in_flight} of {n} devices not yet running it at the kill) \
         completed {} ms after the kill; back on gw-a {} ms after \
         gw-b's kill. Log: {} events, 0 duplicates, {} DeviceConnected = 3 per device, \
         Requested/Running once per app and device. Telemetry: {} received, {} sequence numbers \
         missing (sent into a dying gateway; telemetry is at-most-once).",
        millis(reconnect[n - 1]),
        millis(reconnect[n / 2]),
        completed,
        millis(back[n - 1]),
        audit.events,
        audit.count("DeviceConnected"),
        received,
        missing,
    );
    for device in devices {
        device.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_killed_services_resume_from_the_log_and_lose_no_acknowledged_command() {
    let mut cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let n = fleet_size();
    let (ids, keys) = register(&cluster, n).await;
    let mut devices = cluster.devices(&keys, vec![cluster.gateway("gw-a")]);
    wait_connected(&mut devices, 1, Instant::now()).await;
    let sensor = AppId::new("sensor").unwrap();
    cluster.deploy(&sensor, wasmbed_example_apps::SENSOR).await;
    cluster.wait_running(&sensor, &ids, T).await;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let commands = register_continuously(cluster.client.clone(), stopping);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Enrollment, mid-stream of registrations.
    cluster.kill("enrollment").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let enrollment_back = cluster.start_service("enrollment").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The deployer, with a deployment in flight.
    let counter = AppId::new("counter").unwrap();
    cluster
        .deploy(&counter, wasmbed_example_apps::COUNTER)
        .await;
    let killed_at = Utc::now();
    cluster.kill("deployer").await;
    let in_flight = n - cluster.running_on(&counter, &ids).await;
    let deployer_back = cluster.start_service("deployer").await;
    let completed = between(killed_at, cluster.wait_running(&counter, &ids, T).await);

    // Telemetry, while one device goes silent: the restarted service records it offline once,
    // and nobody else.
    cluster.kill("telemetry").await;
    let silent = devices.pop().unwrap();
    let silent_id = ids[n - 1].clone();
    silent.stop().await;
    let telemetry_back = cluster.start_service("telemetry").await;
    cluster.wait_offline(&silent_id).await;
    // Long enough for a wrong offline verdict on the others to show.
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 4)).await;
    let _ = stop.send(true);
    let (acknowledged, refused, unanswered) = commands.await.unwrap();

    let events = cluster.all_events().await;
    let audit = LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0, "{audit:?}");
    // Every registration a caller was told about is in the log, once.
    assert_registered_once(&events, &acknowledged);
    assert_eq!(refused, 0);
    assert_ran_once(&events, &[&sensor, &counter], &ids);
    assert_eq!(recorded_offline(&events, &ids), [&silent_id]);
    assert_eq!(
        device_events(&events, &silent_id)
            .filter(|e| matches!(e, Event::DeviceWentOffline(_)))
            .count(),
        1
    );
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    println!(
        "\nfaults: kill -9 in turn with {n} devices: enrollment ready again in {} ms, deployer in \
         {} ms (the deployment in flight, not yet running \
         on {in_flight} of {n} devices at the kill, completed {} ms after it), telemetry in {} ms. \
         Registrations: {} acknowledged, all in the log once; {} unanswered while enrollment was \
         down; 0 refused. Liveness: exactly 1 DeviceWentOffline (the device silenced while \
         telemetry was down), none for the {} others. Log: {} events, 0 duplicates.",
        millis(enrollment_back),
        millis(deployer_back),
        completed,
        millis(telemetry_back),
        acknowledged.len(),
        unanswered,
        n - 1,
        audit.events,
    );
    for device in devices {
        device.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_every_service_reconnects_after_a_nats_server_restart() {
    let mut cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let n = fleet_size();
    let (mut ids, keys) = register(&cluster, n).await;
    let mut devices = cluster.devices(
        &keys,
        vec![cluster.gateway("gw-a"), cluster.gateway("gw-b")],
    );
    wait_connected(&mut devices, 1, Instant::now()).await;
    let sensor = AppId::new("sensor").unwrap();
    cluster.deploy(&sensor, wasmbed_example_apps::SENSOR).await;
    cluster.wait_running(&sensor, &ids, T).await;
    let before = LogAudit::of(&cluster.all_events().await);

    let restarted = Instant::now();
    let restarted_at = Utc::now();
    cluster.nats.server().restart().await.unwrap();
    let server_back = restarted.elapsed();
    let telemetry = cluster.count_telemetry().await;

    // Enrollment answers again and a new device gets in (enrollment and a gateway).
    let deadline = Instant::now() + T;
    let key = random_key();
    let id = DeviceId::new("after-restart").unwrap();
    loop {
        let registered = call(
            &cluster.client,
            &wasmbed_e2e::registration(&id, &key),
            Duration::from_millis(500),
        )
        .await;
        match registered {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "enrollment never came back: {e}"),
        }
    }
    let enrollment_back = restarted.elapsed();
    let mut newcomer = cluster.devices(&[key], vec![cluster.gateway("gw-a")]);
    wait_connected(&mut newcomer, 1, restarted).await;
    ids.push(id.clone());
    devices.extend(newcomer);

    // The deployer deploys (to every device, the new one too).
    let counter = AppId::new("counter").unwrap();
    cluster
        .deploy(&counter, wasmbed_example_apps::COUNTER)
        .await;
    let deployed = between(restarted_at, cluster.wait_running(&counter, &ids, T).await);

    // Telemetry flows from every device, and the telemetry service still tells liveness.
    let deadline = Instant::now() + T;
    while ids.iter().any(|id| telemetry.lock().unwrap().of(id) == 0) {
        assert!(
            Instant::now() < deadline,
            "telemetry did not resume from every device"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let silent = devices.remove(0);
    silent.stop().await;
    cluster.wait_offline(&ids[0]).await;
    let liveness = restarted.elapsed();

    let events = cluster.all_events().await;
    let audit = LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0);
    assert!(audit.events > before.events);
    // Nothing recorded before the restart was lost: the file store kept it.
    for (kind, count) in &before.by_type {
        assert!(
            audit.count(kind) >= *count,
            "{kind}: {count} before, {} after",
            audit.count(kind)
        );
    }
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    println!(
        "\nfaults: nats-server kill -9 and restart with {n} devices: server ready in {} ms; \
         enrollment answering after {} ms; a new device enrolled and connected; a deployment to \
         all {} devices ran {} ms after the restart; telemetry from every device; a silenced device \
         offline after {} ms. Log: {} events before, {} after, none lost, 0 duplicates.",
        millis(server_back),
        millis(enrollment_back),
        ids.len(),
        deployed,
        millis(liveness),
        before.events,
        audit.events,
    );
    for device in devices {
        device.stop().await;
    }
}

/// Waits until the rollout's events satisfy `condition`; returns them.
async fn wait_rollout(
    cluster: &Cluster,
    rollout: &AggregateId,
    condition: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + T * 2;
    loop {
        let events: Vec<Event> = cluster
            .log
            .read(rollout)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.event)
            .collect();
        if condition(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "rollout stuck: {events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fault_a_deployer_killed_mid_wave_finishes_the_rollout_once() {
    let mut cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let n = fleet_size();
    let (ids, keys) = register(&cluster, n).await;
    let mut devices = cluster.devices(&keys, vec![cluster.gateway("gw-a")]);
    wait_connected(&mut devices, 1, Instant::now()).await;
    let app = AppId::new("counter").unwrap();
    cluster.deploy(&app, wasmbed_example_apps::COUNTER).await;
    cluster.wait_running(&app, &ids, T).await;

    let v2 = padded(wasmbed_example_apps::COUNTER, 16 * 1024);
    let sha = upload_module(cluster.log.jetstream(), &v2).await.unwrap();
    let start = StartRollout {
        app_id: app.clone(),
        module_sha256: sha,
        waves: vec![WaveSize::Count(2), WaveSize::Percent(50), WaveSize::Rest],
        soak_ms: 1_500,
        deadline_ms: Some(30_000),
        max_failures: MaxFailures::Count(0),
        approve_each: false,
        rehearse: false,
        limits: None,
        config: None,
        release: None,
    };
    let started = call(&cluster.client, &start, T).await.unwrap();
    let rollout = AggregateId::Rollout {
        app: app.clone(),
        number: started.number,
    };
    wait_rollout(&cluster, &rollout, |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::RolloutWaveStarted(s) if s.wave == 1))
    })
    .await;
    let killed_at = Utc::now();
    cluster.kill("deployer").await;
    let deployer_back = cluster.start_service("deployer").await;
    let story = wait_rollout(&cluster, &rollout, |events| {
        events
            .last()
            .is_some_and(|e| matches!(e, Event::RolloutCompleted(_)))
    })
    .await;
    let completed = between(killed_at, Utc::now());

    // Each step of the rollout is in the log once.
    let count = |f: &dyn Fn(&Event) -> bool| story.iter().filter(|e| f(e)).count();
    for wave in 0..3 {
        let started = count(&|e| matches!(e, Event::RolloutWaveStarted(s) if s.wave == wave));
        let passed = count(&|e| matches!(e, Event::RolloutWavePassed(p) if p.wave == wave));
        assert_eq!((started, passed), (1, 1), "wave {wave}: {story:#?}");
    }
    assert_eq!(count(&|e| matches!(e, Event::RolloutCompleted(_))), 1);
    let mut judged: BTreeMap<DeviceId, usize> = BTreeMap::new();
    for e in &story {
        if let Event::RolloutDevicesJudged(j) = e {
            assert!(j.failed.is_empty(), "{j:?}");
            for d in &j.passed {
                *judged.entry(d.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(judged.len(), n, "{judged:?}");
    assert!(judged.values().all(|times| *times == 1), "{judged:?}");

    // No device was given the new version twice, and every device runs it.
    let events = cluster.all_events().await;
    let audit = LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0, "{audit:?}");
    for id in &ids {
        let of_v2 = |f: &dyn Fn(&Event) -> bool| {
            events
                .iter()
                .filter(|e| e.envelope.aggregate == deployment(&app, id))
                .filter(|e| f(&e.envelope.event))
                .count()
        };
        let requested = of_v2(&|e| matches!(e, Event::DeploymentRequested(r) if r.version == 2));
        let running = of_v2(&|e| matches!(e, Event::DeploymentRunning(r) if r.version == 2));
        assert_eq!((requested, running), (1, 1), "{id}");
    }
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    println!(
        "\nfaults: deployer kill -9 in wave 2 of 3 of a rollout to {n} devices: ready again in {} \
         ms; the rollout completed {completed} ms after the kill, every step and every device's \
         verdict recorded once, each device given v2 once. Log: {} events, 0 duplicates.",
        millis(deployer_back),
        audit.events,
    );
    for device in devices {
        device.stop().await;
    }
}

/// Two renode-managers (processes, simulator backend, one key directory): the lease holder
/// owns the emulators and answers the commands. `kill -9` of it: the other takes the lease,
/// starts the dead one's emulators again (its devices reconnect) and answers from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_killed_renode_manager_hands_its_emulators_to_the_other() {
    use wasmbed_schemas::command::StartEmulator;
    let mut cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    cluster.start_renode_manager("rm-a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_renode_manager("rm-b").await;
    let start = |n: usize| StartEmulator {
        device_id: DeviceId::new(format!("emu-{n}")).unwrap(),
        mcu: "Mps2An385".into(),
        simulated: false,
        labels: BTreeMap::new(),
    };
    let devices: Vec<DeviceId> = (0..3)
        .map(|n| DeviceId::new(format!("emu-{n}")).unwrap())
        .collect();
    for n in 0..3 {
        call(&cluster.client, &start(n), T).await.unwrap();
    }
    wait_sessions(&cluster, &devices, 1).await;

    cluster.kill("rm-a").await;
    let killed = Instant::now();
    wait_sessions(&cluster, &devices, 2).await;
    let adopted = killed.elapsed();
    // A new board answers through the survivor.
    call(&cluster.client, &start(3), T).await.unwrap();
    let answered = killed.elapsed();
    // Settled: each board runs once (no second copy fighting for the session).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = cluster.all_events().await;
    let counts: Vec<usize> = devices.iter().map(|d| connections(&events, d)).collect();
    let started: usize = devices
        .iter()
        .map(|d| {
            events
                .iter()
                .filter(
                    |e| matches!(&e.envelope.event, Event::EmulatorStarted(s) if s.device_id == *d),
                )
                .count()
        })
        .sum();
    let audit = LogAudit::of(&events);
    eprintln!(
        "faults: renode-manager kill -9 with 3 emulators: the other instance took the lease and \
         restarted all 3 (each connected again) {adopted:?} after the kill; a new start answered \
         {answered:?} after it; sessions per device {counts:?}, EmulatorStarted {started} for the \
         3. Log: {} events, {} duplicates.",
        audit.events, audit.duplicate_ids
    );
    assert_eq!(counts, [2, 2, 2], "a board runs twice or flaps");
    assert_eq!(started, 6);
    assert_eq!(audit.duplicate_ids, 0);
    assert!(adopted < Duration::from_secs(10), "{adopted:?}");
}
