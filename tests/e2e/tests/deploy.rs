//! Applications end to end: the deployer, a gateway on real TLS and simulated devices that run
//! the real example apps in wasmi, all on one real nats-server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use wasmbed_bus::call;
use wasmbed_deployer::upload_module;
use wasmbed_e2e::{System, T, deployment, names, padded, test_limits};
use wasmbed_example_apps::{COUNTER, SENSOR, SPIN};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::*;
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::*;
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, Sha256};

/// Telemetry topics seen per device during `window`.
async fn topics_during(
    sub: &mut async_nats::Subscriber,
    window: Duration,
) -> HashMap<String, BTreeSet<String>> {
    let mut seen: HashMap<String, BTreeSet<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        let headers = m.headers.unwrap_or_default();
        let device = headers.get(header::DEVICE).unwrap().to_string();
        let topic = headers.get(header::TOPIC).unwrap().to_string();
        seen.entry(device).or_default().insert(topic);
    }
    seen
}

/// Waits until every device in `devices` published `topic` (and returns what else was seen).
async fn wait_topic(sub: &mut async_nats::Subscriber, devices: &[DeviceId], topic: &str) {
    let deadline = tokio::time::Instant::now() + T;
    let mut waiting: BTreeSet<String> = devices.iter().map(ToString::to_string).collect();
    while !waiting.is_empty() {
        let m = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {topic} telemetry from {waiting:?}"))
            .unwrap();
        let headers = m.headers.unwrap_or_default();
        if headers.get(header::TOPIC).unwrap().as_str() == topic {
            waiting.remove(headers.get(header::DEVICE).unwrap().as_str());
        }
    }
}

fn running(version: u32) -> impl Fn(&[Event]) -> bool {
    move |events| matches!(events.last(), Some(Event::DeploymentRunning(r)) if r.version == version)
}

#[tokio::test]
async fn deploy_update_stop_and_delete_across_three_devices() {
    let system = System::start().await;
    let mut devices = Vec::new();
    let mut sims = Vec::new();
    for i in 1..=3 {
        let (id, sim) = system.device(&format!("dev-{i}"), &[("room", "lab")]).await;
        devices.push(id);
        sims.push(sim);
    }
    let mut telemetry = system
        .client
        .subscribe(subject::TELEMETRY_ALL)
        .await
        .unwrap();
    let app = AppId::new("climate").unwrap();
    system
        .create_app(
            &app,
            SENSOR,
            Target::Labels([("room".into(), "lab".into())].into()),
            test_limits(),
        )
        .await;
    system.deploy_app(&app).await;

    wait_topic(&mut telemetry, &devices, "temperature").await;
    for device in &devices {
        let events = system
            .wait_events(&deployment(&app, device), running(1))
            .await;
        assert_eq!(
            names(&events),
            [
                "DeploymentRequested",
                "DeploymentTransferStarted",
                "DeploymentDelivered",
                "DeploymentRunning"
            ]
        );
    }
    // The payload is the app's own JSON, with the id the device was welcomed with.
    let m = telemetry.next().await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(json["room"], "lab");
    assert!(json["device"].as_str().unwrap().starts_with("dev-"));

    // Update: version 2 (another module) replaces version 1 everywhere.
    let sha = update(&system, &app, COUNTER).await;
    for device in &devices {
        system
            .wait_events(&deployment(&app, device), running(2))
            .await;
    }
    wait_topic(&mut telemetry, &devices, "count").await;
    let seen = topics_during(&mut telemetry, Duration::from_millis(600)).await;
    for device in &devices {
        assert_eq!(
            seen.get(device.as_str()).cloned().unwrap_or_default(),
            BTreeSet::from(["count".to_owned()]),
            "only the new version runs on {device}"
        );
    }

    // Stop: every device stops it, and the telemetry stops.
    call(
        &system.client,
        &StopApplication {
            app_id: app.clone(),
        },
        T,
    )
    .await
    .unwrap();
    for device in &devices {
        system
            .wait_events(&deployment(&app, device), |e| {
                matches!(e.last(), Some(Event::DeploymentStopped(_)))
            })
            .await;
    }
    let _ = topics_during(&mut telemetry, Duration::from_millis(300)).await;
    let after = topics_during(&mut telemetry, Duration::from_millis(600)).await;
    assert!(after.is_empty(), "still publishing: {after:?}");

    // Delete: recorded, and its modules leave the store.
    call(
        &system.client,
        &DeleteApplication {
            app_id: app.clone(),
        },
        T,
    )
    .await
    .unwrap();
    let app_events = system.events(&AggregateId::Application(app.clone())).await;
    assert_eq!(names(&app_events).last(), Some(&"ApplicationDeleted"));
    let store = system
        .log
        .jetstream()
        .get_object_store(subject::MODULES_OBJECT_STORE)
        .await
        .unwrap();
    let info = store.info(sha.to_string()).await;
    assert!(info.is_err() || info.unwrap().deleted, "module removed");
    let again = call(
        &system.client,
        &DeployApplication {
            app_id: app.clone(),
        },
        T,
    )
    .await;
    assert!(again.is_err(), "a deleted app cannot be deployed");
    for sim in sims {
        sim.stop().await;
    }
    // Every service did all of this as its own NATS user, within its permissions.
    assert_eq!(system.nats.permission_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_infinite_loop_fails_by_fuel_while_the_device_and_its_other_app_carry_on() {
    let system = System::start().await;
    let (device, mut sim) = system.device("dev-1", &[]).await;
    let mut telemetry = system
        .client
        .subscribe(subject::telemetry_of_device(&device))
        .await
        .unwrap();
    let counter = AppId::new("counter").unwrap();
    let spin = AppId::new("spin").unwrap();
    let target = Target::Devices(vec![device.clone()]);
    system
        .create_app(&counter, COUNTER, target.clone(), test_limits())
        .await;
    system.create_app(&spin, SPIN, target, test_limits()).await;
    system.deploy_app(&counter).await;
    wait_topic(&mut telemetry, std::slice::from_ref(&device), "count").await;
    system.deploy_app(&spin).await;

    let reason = system.wait_failed(&spin, &device).await;
    assert!(reason.contains("fuel exhausted"), "{reason}");

    // The device kept its session and the healthy app keeps publishing.
    assert!(sim.status().connected);
    assert_eq!(sim.status().sessions, 1);
    let after = topics_during(&mut telemetry, Duration::from_millis(800)).await;
    assert_eq!(
        after.get(device.as_str()).map(BTreeSet::len),
        Some(1),
        "{after:?}"
    );
    let counter_events = system.events(&deployment(&counter, &device)).await;
    assert_eq!(names(&counter_events).last(), Some(&"DeploymentRunning"));

    // The statuses the device reported are in the read model for dashboards.
    let statuses = system
        .log
        .read_model::<DeploymentStatus>(subject::DEPLOYMENTS_BUCKET)
        .await
        .unwrap();
    let spun = statuses
        .get(&format!("spin.{device}"))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(spun.state, AppState::Failed);
    assert!(spun.detail.unwrap().contains("fuel exhausted"));
    assert!(spun.fuel_used >= test_limits().fuel_per_invocation);
    let counted = statuses
        .get(&format!("counter.{device}"))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(
        (counted.state, counted.version, counted.memory_pages),
        (AppState::Running, 1, 1)
    );
    sim.wait_for(|s| s.connected, T).await.unwrap();
    sim.stop().await;
}

#[tokio::test]
async fn modules_that_cannot_run_are_refused_before_any_byte_is_sent() {
    let system = System::start().await;
    let (device, sim) = system.device("dev-1", &[]).await;
    let target = Target::Devices(vec![device.clone()]);

    // An import the runtime does not offer: refused at creation, with the name.
    let forking = wat::parse_str(
        r#"(module (import "wasmbed" "fork" (func)) (memory (export "memory") 1) (func (export "tick")))"#,
    )
    .unwrap();
    let sha = upload_module(system.log.jetstream(), &forking)
        .await
        .unwrap();
    let app = AppId::new("forking").unwrap();
    let refused = call(
        &system.client,
        &CreateApplication {
            app_id: app.clone(),
            name: "forking".into(),
            module_sha256: sha,
            target: target.clone(),
            config: Blob::default(),
            limits: test_limits(),
            release: None,
        },
        T,
    )
    .await
    .unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("wasmbed.fork"), "{message}");
    let events = system.events(&AggregateId::Application(app)).await;
    assert_eq!(names(&events), ["ModuleRejected"]);

    // Not WebAssembly at all.
    let sha = upload_module(system.log.jetstream(), b"\0asm garbage")
        .await
        .unwrap();
    let garbage = call(
        &system.client,
        &CreateApplication {
            app_id: AppId::new("garbage").unwrap(),
            name: "garbage".into(),
            module_sha256: sha,
            target: target.clone(),
            config: Blob::default(),
            limits: test_limits(),
            release: None,
        },
        T,
    )
    .await
    .unwrap_err();
    assert!(
        garbage
            .to_string()
            .contains("not a valid WebAssembly module"),
        "{garbage}"
    );

    // More memory than the device has (the simulator offers 512 KiB): refused per device.
    let greedy = AppId::new("greedy").unwrap();
    let big = Limits {
        max_memory_pages: 64,
        ..test_limits()
    };
    system.create_app(&greedy, SENSOR, target, big).await;
    system.deploy_app(&greedy).await;
    let events = system
        .wait_events(&deployment(&greedy, &device), |e| !e.is_empty())
        .await;
    let Some(Event::DeploymentRefused(r)) = events.first() else {
        panic!("{:?}", names(&events))
    };
    assert!(
        r.reason.contains("4096 KiB") && r.reason.contains("512 KiB"),
        "{}",
        r.reason
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        names(&system.events(&deployment(&greedy, &device)).await),
        ["DeploymentRefused"]
    );
    sim.stop().await;
}

#[tokio::test]
async fn an_offline_device_gets_its_app_when_it_comes_back() {
    let system = System::start().await;
    let (device, key) = system.register("late-1", &[]).await;
    let app = AppId::new("counter").unwrap();
    system
        .create_app(
            &app,
            COUNTER,
            Target::Devices(vec![device.clone()]),
            test_limits(),
        )
        .await;
    system.deploy_app(&app).await;
    system
        .wait_events(&deployment(&app, &device), |e| !e.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(&system.events(&deployment(&app, &device)).await),
        ["DeploymentRequested"],
        "nothing is sent to a device that is not there"
    );
    let mut sim = system.sim(key);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    system
        .wait_events(&deployment(&app, &device), running(1))
        .await;
    sim.stop().await;
}

#[tokio::test]
async fn a_restarted_deployer_neither_repeats_nor_loses_a_delivery() {
    let mut system = System::start().await;
    let (a, sim_a) = system.device("dev-a", &[]).await;
    let (b, sim_b) = system.device("dev-b", &[]).await;
    let app = AppId::new("counter").unwrap();
    system
        .create_app(&app, COUNTER, Target::All, test_limits())
        .await;
    system.deploy_app(&app).await;
    for d in [&a, &b] {
        system.wait_events(&deployment(&app, d), running(1)).await;
    }
    let mut downlink = system
        .client
        .subscribe("wasmbed.device.v1.downlink.*")
        .await
        .unwrap();
    system.deployer.take().unwrap().kill().await;
    system.start_deployer().await;
    // The new deployer confirms with the devices (Deploy is idempotent on them) and records
    // nothing new; no module byte travels again.
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, downlink.next()).await {
        frames.push(decode(&m.payload).unwrap().0.name());
    }
    assert!(
        frames.iter().all(|f| *f == "Deploy"),
        "only confirmations: {frames:?}"
    );
    for d in [&a, &b] {
        assert_eq!(system.events(&deployment(&app, d)).await.len(), 4);
    }
    sim_a.stop().await;
    sim_b.stop().await;
}

/// Updates `app` to `module` (uploaded first) as its next version; returns the module's digest.
async fn update(system: &System, app: &AppId, module: &[u8]) -> Sha256 {
    let sha = upload_module(system.log.jetstream(), module).await.unwrap();
    call(
        &system.client,
        &UpdateApplication {
            app_id: app.clone(),
            module_sha256: sha,
            release: None,
        },
        T,
    )
    .await
    .unwrap();
    sha
}

#[tokio::test]
async fn going_back_to_the_previous_module_sends_no_module_bytes() {
    let system = System::start().await;
    let (device, sim) = system.device("dev-a", &[]).await;
    let app = AppId::new("blink").unwrap();
    system
        .create_app(&app, SENSOR, Target::All, test_limits())
        .await;
    system.deploy_app(&app).await;
    system
        .wait_events(&deployment(&app, &device), running(1))
        .await;
    update(&system, &app, COUNTER).await;
    system
        .wait_events(&deployment(&app, &device), running(2))
        .await;

    // Version 3 is version 1's module again: the device still holds it beside version 2.
    let mut downlink = system
        .client
        .subscribe(subject::device_downlink(&device))
        .await
        .unwrap();
    update(&system, &app, SENSOR).await;
    system
        .wait_events(&deployment(&app, &device), running(3))
        .await;
    let mut frames = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), downlink.next()).await
    {
        frames.push(decode(&m.payload).unwrap().0.name());
    }
    assert!(frames.contains(&"ModuleBegin"), "{frames:?}");
    assert!(
        !frames
            .iter()
            .any(|f| *f == "ModuleChunk" || *f == "ModuleCommit"),
        "no module bytes travel for a module the device kept: {frames:?}"
    );
    sim.stop().await;
}

async fn next_ack(uplink: &mut async_nats::Subscriber) -> ModuleAck {
    let next = async {
        loop {
            let m = uplink.next().await.unwrap();
            if let Ok((Frame::ModuleAck(ack), _)) = decode(&m.payload) {
                return ack;
            }
        }
    };
    tokio::time::timeout(T, next).await.expect("a module ack")
}

#[tokio::test]
async fn a_cut_transfer_resumes_and_a_corrupted_one_never_runs() {
    let mut system = System::start().await;
    let (device, sim) = system.device("dev-1", &[]).await;
    let module = padded(SENSOR, 64 * 1024);
    let sha = upload_module(system.log.jetstream(), &module)
        .await
        .unwrap();
    let app = AppId::new("sensor").unwrap();
    let mut uplink = system
        .client
        .subscribe(subject::device_uplink(&device))
        .await
        .unwrap();
    let downlink_subject = subject::device_downlink(&device);
    let send = |frame: Frame| {
        let client = system.client.clone();
        let subject = downlink_subject.clone();
        async move {
            client
                .publish(subject, encode_to_vec(&frame).unwrap().into())
                .await
                .unwrap();
        }
    };
    // A corrupted transfer, sent by hand: the device notices and discards it.
    let begin = ModuleBegin {
        app_id: app.clone(),
        version: 1,
        sha256: sha,
        total_len: module.len() as u32,
        offset: 0,
    };
    send(Frame::ModuleBegin(begin.clone())).await;
    assert_eq!(next_ack(&mut uplink).await.next_offset, 0);
    let mut corrupted = module.clone();
    corrupted[20_000] ^= 1;
    for (i, chunk) in corrupted.chunks(MODULE_CHUNK_LEN).enumerate() {
        send(Frame::ModuleChunk(ModuleChunk {
            app_id: app.clone(),
            offset: (i * MODULE_CHUNK_LEN) as u32,
            data: chunk.to_vec(),
        }))
        .await;
    }
    send(Frame::ModuleCommit(ModuleCommit {
        app_id: app.clone(),
        sha256: sha,
    }))
    .await;
    let rejected = loop {
        let ack = next_ack(&mut uplink).await;
        if ack.next_offset == 0 {
            break ack;
        }
    };
    assert!(!rejected.verified);

    // Half a transfer, then the connection drops (the gateway restarts).
    send(Frame::ModuleBegin(begin)).await;
    next_ack(&mut uplink).await;
    send(Frame::ModuleChunk(ModuleChunk {
        app_id: app.clone(),
        offset: 0,
        data: module[..MODULE_CHUNK_LEN].to_vec(),
    }))
    .await;
    assert_eq!(
        next_ack(&mut uplink).await.next_offset,
        MODULE_CHUNK_LEN as u32
    );
    system.gateway.take().unwrap().kill().await;
    system.start_gateway().await;

    // The deployer's transfer after the reconnect starts where the device stopped.
    let mut downlink = system
        .client
        .subscribe(downlink_subject.clone())
        .await
        .unwrap();
    system
        .create_app(
            &app,
            &module,
            Target::Devices(vec![device.clone()]),
            test_limits(),
        )
        .await;
    system.deploy_app(&app).await;
    system
        .wait_events(&deployment(&app, &device), running(1))
        .await;
    let mut offsets = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), downlink.next()).await
    {
        if let Ok((Frame::ModuleChunk(c), _)) = decode(&m.payload) {
            offsets.push(c.offset);
        }
    }
    assert!(!offsets.is_empty());
    assert!(
        offsets.iter().all(|o| *o >= MODULE_CHUNK_LEN as u32),
        "resumed, not restarted: {offsets:?}"
    );
    sim.stop().await;
}

#[test]
fn padding_reaches_the_size_asked_for_and_stays_valid() {
    let module = padded(SENSOR, 64 * 1024);
    assert_eq!(module.len(), 64 * 1024);
    wasmbed_deployer::validate(&module, &test_limits()).unwrap();
}

/// The rollout benchmark's quick mode, for CI: fewer devices, the same path. It checks that
/// every device ends up running; the figure is printed, not asserted (timing belongs to the
/// benchmark).
#[tokio::test]
async fn quick_rollout_to_fifty_devices() {
    let system = System::start().await;
    let (fleet, r) = wasmbed_e2e::timed::deploy_to_new_fleet(&system, 50, 64 * 1024, T).await;
    assert_eq!(r.latencies.len(), 50);
    println!(
        "deployment of 64 KiB to 50 devices: all running after {:.2?} (p50 {:.2?})",
        r.all_running,
        r.quantile(0.5)
    );
    fleet.stop().await;
}
