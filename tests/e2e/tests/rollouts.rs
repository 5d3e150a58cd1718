//! Staged rollouts end to end: the deployer, a gateway on real TLS and simulated devices running
//! real modules in wasmi, on one real nats-server. What a device runs is read from what the
//! device itself reported (the deployment status read model written from its `AppStatus`
//! frames), not from the deployer's view.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use wasmbed_bus::{CallError, call};
use wasmbed_deployer::rollout::plan;
use wasmbed_deployer::upload_module;
use wasmbed_e2e::{System, T, deployment, test_limits};
use wasmbed_schemas::command::*;
use wasmbed_schemas::device_message::DeploymentStatus;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::AppState;
use wasmbed_schemas::rollout::{MaxFailures, WaveSize};
use wasmbed_schemas::{AggregateId, AppId, DeviceId, Sha256, subject};
use wasmbed_sim::SimDevice;

/// A module that runs quietly; `n` only makes its bytes (and digest) its own.
fn healthy(n: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (func (export "tick") (drop (i32.const {n}))))"#
    ))
    .unwrap()
}

/// A module that traps on every tick on devices whose id's FNV-1a hash is 0 mod 5 (a fifth of
/// the fleet), and runs quietly elsewhere.
fn trapping_on_a_fifth() -> Vec<u8> {
    wat::parse_str(
        r#"(module
          (import "wasmbed" "device_id" (func $device_id (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "tick")
            (local $len i32) (local $i i32) (local $h i32)
            (local.set $len (call $device_id (i32.const 0) (i32.const 64)))
            (local.set $h (i32.const 0x811c9dc5))
            (block $done
              (loop $next
                (br_if $done (i32.ge_s (local.get $i) (local.get $len)))
                (local.set $h
                  (i32.mul (i32.xor (local.get $h) (i32.load8_u (local.get $i)))
                           (i32.const 0x01000193)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $next)))
            (if (i32.eqz (i32.rem_u (local.get $h) (i32.const 5))) (then unreachable))))"#,
    )
    .unwrap()
}

/// Whether [`trapping_on_a_fifth`] traps on `device`.
fn traps_on(device: &DeviceId) -> bool {
    let hash = device.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % 5 == 0
}

/// `n` devices `dev-NN`, connected and described; `canary` ones labelled `ring=canary`.
async fn fleet(
    system: &System,
    n: usize,
    canary: impl Fn(&DeviceId) -> bool,
) -> (Vec<DeviceId>, Vec<SimDevice>) {
    let mut ids = Vec::new();
    let mut sims = Vec::new();
    for i in 0..n {
        let name = format!("dev-{i:02}");
        let id = DeviceId::new(&name).unwrap();
        let labels: &[(&str, &str)] = if canary(&id) {
            &[("ring", "canary")]
        } else {
            &[]
        };
        let (_, key) = system.register(&name, labels).await;
        sims.push(system.sim(key));
        ids.push(id);
    }
    for (id, sim) in ids.iter().zip(&mut sims) {
        sim.wait_for(|s| s.connected, T).await.unwrap();
        system
            .wait_events(&AggregateId::Device(id.clone()), |events| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::DeviceDescribed(_)))
            })
            .await;
    }
    (ids, sims)
}

/// What each device last reported of `app`: (state, version).
async fn reported(
    system: &System,
    app: &AppId,
    devices: &[DeviceId],
) -> BTreeMap<DeviceId, (AppState, u32)> {
    let statuses = system
        .log
        .read_model::<DeploymentStatus>(subject::DEPLOYMENTS_BUCKET)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for device in devices {
        if let Some(entry) = statuses.get(&format!("{app}.{device}")).await.unwrap() {
            out.insert(device.clone(), (entry.value.state, entry.value.version));
        }
    }
    out
}

/// Waits until every device in `devices` reports `app` running `version`.
async fn wait_reported_running(system: &System, app: &AppId, devices: &[DeviceId], version: u32) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = reported(system, app, devices).await;
        let off: Vec<_> = devices
            .iter()
            .filter(|d| now.get(*d) != Some(&(AppState::Running, version)))
            .map(|d| (d, now.get(d)))
            .collect();
        if off.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reporting {app} v{version} running: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// App `blink` (a quiet module, v1) created for every device and running on `devices`.
async fn blink_running_v1(system: &System, devices: &[DeviceId]) -> AppId {
    let app = AppId::new("blink").unwrap();
    system
        .create_app(&app, &healthy(1), Target::All, test_limits())
        .await;
    system.deploy_app(&app).await;
    wait_reported_running(system, &app, devices, 1).await;
    app
}

async fn approve(system: &System, app: &AppId) -> Result<Accepted, CallError> {
    let command = ApproveRollout {
        app_id: app.clone(),
    };
    call(&system.client, &command, T).await
}

fn rollout_of(app: &AppId, number: u32) -> AggregateId {
    AggregateId::Rollout {
        app: app.clone(),
        number,
    }
}

async fn start(system: &System, app: &AppId, module: &[u8], c: StartRollout) -> RolloutStarted {
    let sha = upload_module(system.log.jetstream(), module).await.unwrap();
    call(
        &system.client,
        &StartRollout {
            app_id: app.clone(),
            module_sha256: sha,
            ..c
        },
        T,
    )
    .await
    .unwrap()
}

fn spec(waves: &[WaveSize], soak_ms: u64, max_failures: MaxFailures) -> StartRollout {
    StartRollout {
        app_id: AppId::new("placeholder").unwrap(),
        module_sha256: Sha256([0; 32]),
        waves: waves.to_vec(),
        soak_ms,
        deadline_ms: Some(soak_ms + 20_000),
        max_failures,
        approve_each: false,
        rehearse: false,
        limits: None,
        config: None,
        release: None,
    }
}

fn refusal(result: Result<impl std::fmt::Debug, CallError>) -> (ErrorCode, String) {
    match result {
        Err(CallError::Refused(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ends_with(last: &'static str) -> impl Fn(&[Event]) -> bool {
    move |events| events.last().is_some_and(|e| e.type_name() == last)
}

#[tokio::test]
async fn a_version_that_traps_on_a_fifth_of_fifty_devices_is_stopped_in_its_second_wave() {
    let system = System::start().await;
    // Three canaries the bad version does not trap on: the first wave passes, the second
    // meets the trap.
    let canaries: BTreeSet<DeviceId> = (0..50)
        .map(|i| DeviceId::new(format!("dev-{i:02}")).unwrap())
        .filter(|d| !traps_on(d))
        .take(3)
        .collect();
    let (devices, sims) = fleet(&system, 50, |d| canaries.contains(d)).await;
    let app = blink_running_v1(&system, &devices).await;

    // Bad input changes nothing.
    let bad_sha = upload_module(system.log.jetstream(), &trapping_on_a_fifth())
        .await
        .unwrap();
    let with = |waves: Vec<WaveSize>| StartRollout {
        app_id: app.clone(),
        module_sha256: bad_sha,
        ..spec(&waves, 1_000, MaxFailures::Count(1))
    };
    let cases: Vec<(StartRollout, ErrorCode, &str)> = vec![
        (
            with(vec![WaveSize::Count(1), WaveSize::Percent(10)]),
            ErrorCode::InvalidRequest,
            "cover 5 of the target's 50",
        ),
        (
            with(vec![WaveSize::Percent(150)]),
            ErrorCode::InvalidRequest,
            "150%",
        ),
        (
            StartRollout {
                app_id: AppId::new("no-such-app").unwrap(),
                ..with(vec![WaveSize::Rest])
            },
            ErrorCode::NotFound,
            "no-such-app",
        ),
    ];
    for (command, code, needle) in cases {
        let (got, message) = refusal(call(&system.client, &command, T).await);
        assert_eq!(got, code, "{message}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let (code, message) = refusal(approve(&system, &app).await);
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    assert!(
        system.events(&rollout_of(&app, 1)).await.is_empty(),
        "a refused start recorded something"
    );
    let app_events = system.events(&AggregateId::Application(app.clone())).await;
    assert!(
        !app_events
            .iter()
            .any(|e| matches!(e, Event::ModuleUploaded(m) if m.version == 2)),
        "a refused start uploaded a version"
    );

    // The wave plan is recorded; the test knows which devices it holds.
    let waves = vec![
        WaveSize::Selector([("ring".to_owned(), "canary".to_owned())].into()),
        WaveSize::Percent(50),
        WaveSize::Rest,
    ];
    let order = plan::order(&format!("{app}.1"), &devices);
    let labels = devices
        .iter()
        .map(|d| {
            let l: BTreeMap<String, String> = if canaries.contains(d) {
                [("ring".to_owned(), "canary".to_owned())].into()
            } else {
                BTreeMap::new()
            };
            (d.clone(), l)
        })
        .collect();
    let planned = plan::plan(&order, &labels, &waves).unwrap();
    let trapping_in_second = planned[1].iter().filter(|d| traps_on(d)).count();
    assert!(
        trapping_in_second >= 2,
        "the second wave must hold more trapping devices than allowed"
    );

    let started = start(
        &system,
        &app,
        &trapping_on_a_fifth(),
        spec(&waves, 1_000, MaxFailures::Count(1)),
    )
    .await;
    assert_eq!(
        (started.number, started.from_version, started.to_version),
        (1, Some(1), 2)
    );
    assert_eq!(started.wave_devices, [3, 22, 25]);

    // A second rollout of the same app while this one runs is refused.
    let (code, message) = refusal(
        call(
            &system.client,
            &StartRollout {
                app_id: app.clone(),
                module_sha256: upload_module(system.log.jetstream(), &healthy(9))
                    .await
                    .unwrap(),
                ..spec(&[WaveSize::Rest], 1_000, MaxFailures::Count(0))
            },
            T,
        )
        .await,
    );
    assert_eq!(code, ErrorCode::Conflict, "{message}");

    let story = system
        .wait_events(&rollout_of(&app, 1), ends_with("RolloutRollbackFinished"))
        .await;
    let types: Vec<&str> = story
        .iter()
        .map(Event::type_name)
        .filter(|t| *t != "RolloutDevicesJudged")
        .collect();
    assert_eq!(
        types,
        [
            "RolloutCreated",
            "RolloutWaveStarted",
            "RolloutWavePassed",
            "RolloutWaveStarted",
            "RolloutWaveFailed",
            "RolloutRollbackStarted",
            "RolloutRollbackFinished",
        ]
    );
    // Every failure is a trapping device of the second wave, with the trap as its reason.
    let failed: BTreeMap<DeviceId, String> = story
        .iter()
        .filter_map(|e| match e {
            Event::RolloutDevicesJudged(j) => Some(j.failed.clone()),
            _ => None,
        })
        .flatten()
        .map(|f| (f.device_id, f.reason))
        .collect();
    assert!(failed.len() >= 2, "{failed:?}");
    for (device, reason) in &failed {
        assert!(planned[1].contains(device) && traps_on(device), "{device}");
        assert!(
            reason.contains("unreachable") || reason.contains("trap"),
            "{reason}"
        );
    }
    // The third wave never got the new version.
    for device in &planned[2] {
        let events = system.events(&deployment(&app, device)).await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::DeploymentRequested(r) if r.version == 2)),
            "{device} of the third wave was given v2"
        );
    }
    // Every device runs v1 again, by its own report.
    wait_reported_running(&system, &app, &devices, 1).await;
    // And the application's own commands work again.
    call(
        &system.client,
        &DeployApplication {
            app_id: app.clone(),
        },
        T,
    )
    .await
    .unwrap();
    for sim in sims {
        sim.stop().await;
    }
}

#[tokio::test]
async fn a_healthy_version_waits_for_each_approval_and_an_abort_mid_wave_rolls_back() {
    let system = System::start().await;
    let (devices, sims) = fleet(&system, 10, |_| false).await;
    let app = blink_running_v1(&system, &devices).await;

    let waves = [WaveSize::Count(1), WaveSize::Percent(50), WaveSize::Rest];
    let started = start(
        &system,
        &app,
        &healthy(2),
        StartRollout {
            approve_each: true,
            rehearse: false,
            ..spec(&waves, 300, MaxFailures::Count(0))
        },
    )
    .await;
    assert_eq!(started.wave_devices, [1, 4, 5]);
    for wave in 1..3 {
        // The wave before passes, and the next one waits.
        let passed = move |events: &[Event]| {
            events
                .iter()
                .any(|e| matches!(e, Event::RolloutWavePassed(p) if p.wave == wave - 1))
        };
        system.wait_events(&rollout_of(&app, 1), passed).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let events = system.events(&rollout_of(&app, 1)).await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::RolloutWaveStarted(s) if s.wave == wave)),
            "wave {wave} started without approval"
        );
        approve(&system, &app).await.unwrap();
        // Approving what no longer waits is refused.
        let (code, message) = refusal(approve(&system, &app).await);
        assert_eq!(code, ErrorCode::Refused, "{message}");
        assert!(message.contains("not waiting"), "{message}");
    }
    system
        .wait_events(&rollout_of(&app, 1), ends_with("RolloutCompleted"))
        .await;
    wait_reported_running(&system, &app, &devices, 2).await;

    // Aborted in its first wave: the devices that got v3 go back to v2; the others never move.
    let started = start(
        &system,
        &app,
        &healthy(3),
        spec(
            &[WaveSize::Percent(30), WaveSize::Rest],
            60_000,
            MaxFailures::Count(0),
        ),
    )
    .await;
    assert_eq!((started.number, started.from_version), (2, Some(2)));
    let first = {
        let events = system
            .wait_events(&rollout_of(&app, 2), |e| {
                e.iter().any(|e| matches!(e, Event::RolloutWaveStarted(_)))
            })
            .await;
        match &events[0] {
            Event::RolloutCreated(c) => c.waves[0].devices.clone(),
            other => panic!("{other:?}"),
        }
    };
    wait_reported_running(&system, &app, &first, 3).await;
    call(
        &system.client,
        &AbortRollout {
            app_id: app.clone(),
            reason: Some("test abort".into()),
        },
        T,
    )
    .await
    .unwrap();
    let story = system
        .wait_events(&rollout_of(&app, 2), ends_with("RolloutRollbackFinished"))
        .await;
    assert!(story.iter().any(
        |e| matches!(e, Event::RolloutRollbackStarted(r) if r.reason.contains("test abort") && r.devices == 3)
    ));
    wait_reported_running(&system, &app, &devices, 2).await;
    for sim in sims {
        sim.stop().await;
    }
}

/// Waits until every device's latest `temperature` reading names `room`.
async fn wait_room(system: &System, devices: &[DeviceId], room: &str) {
    let mut sub = system
        .client
        .subscribe(subject::TELEMETRY_ALL)
        .await
        .unwrap();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + T;
    let wanted = format!("\"room\":\"{room}\"");
    while seen.len() < devices.len() {
        let message = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut sub))
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} reported room {room}"))
            .unwrap();
        let text = String::from_utf8_lossy(&message.payload);
        if text.contains(&wanted) {
            if let Some(device) = devices.iter().find(|d| text.contains(&format!("\"{d}\""))) {
                seen.insert(device.to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_rollout_carries_its_versions_limits_and_config_and_a_rollback_restores_them() {
    let system = System::start().await;
    let (devices, sims) = fleet(&system, 2, |_| false).await;
    let app = AppId::new("climate").unwrap();
    let sensor = wasmbed_example_apps::SENSOR;
    system
        .create_app(&app, sensor, Target::All, test_limits())
        .await;
    system.deploy_app(&app).await;
    wait_room(&system, &devices, "lab").await;

    // The same module with another configuration is a new version that reaches every device.
    let kitchen = StartRollout {
        config: Some(wasmbed_schemas::bytes::Blob(b"kitchen".to_vec())),
        ..spec(
            &[WaveSize::Count(1), WaveSize::Rest],
            300,
            MaxFailures::Count(0),
        )
    };
    let started = start(&system, &app, sensor, kitchen).await;
    assert_eq!((started.from_version, started.to_version), (Some(1), 2));
    system
        .wait_events(&rollout_of(&app, 1), ends_with("RolloutCompleted"))
        .await;
    wait_room(&system, &devices, "kitchen").await;

    // Limits no device can hold: refused everywhere, so the first wave fails and the devices
    // keep version 2, its configuration with it.
    let huge = StartRollout {
        limits: Some(wasmbed_schemas::frame::Limits {
            max_memory_pages: 64,
            ..test_limits()
        }),
        ..spec(
            &[WaveSize::Count(1), WaveSize::Rest],
            300,
            MaxFailures::Count(0),
        )
    };
    let started = start(&system, &app, sensor, huge).await;
    assert_eq!((started.from_version, started.to_version), (Some(2), 3));
    let story = system
        .wait_events(&rollout_of(&app, 2), ends_with("RolloutRollbackFinished"))
        .await;
    let reasons: Vec<String> = story
        .iter()
        .filter_map(|e| match e {
            Event::RolloutDevicesJudged(j) => Some(j.failed.clone()),
            _ => None,
        })
        .flatten()
        .map(|f| f.reason)
        .collect();
    assert_eq!(reasons.len(), 1, "{story:#?}");
    assert!(reasons[0].contains("max_memory_pages = 64"), "{reasons:?}");
    wait_reported_running(&system, &app, &devices, 2).await;
    wait_room(&system, &devices, "kitchen").await;
    for sim in sims {
        sim.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_on_simulated_copies_stops_a_bad_version_before_any_real_device() {
    let system = System::start().await;
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let (devices, sims) = fleet(&system, 3, |_| false).await;
    let app = blink_running_v1(&system, &devices).await;

    // A module that exhausts its fuel: the copy (an Mps2An385 profile) fails, nothing else runs it.
    let rehearsed = StartRollout {
        rehearse: true,
        ..spec(&[WaveSize::Rest], 1_000, MaxFailures::Count(0))
    };
    let started = start(&system, &app, wasmbed_example_apps::SPIN, rehearsed).await;
    assert_eq!(started.wave_devices, [1, 3]);
    let story = system
        .wait_events(&rollout_of(&app, 1), ends_with("RolloutRollbackFinished"))
        .await;
    let types: Vec<&str> = story.iter().map(Event::type_name).collect();
    assert_eq!(
        types,
        [
            "RolloutCreated",
            "RolloutWaveStarted",
            "RolloutDevicesJudged",
            "RolloutRehearsed",
            "RolloutWaveFailed",
            "RolloutRollbackStarted",
            "RolloutRollbackFinished",
        ]
    );
    let Event::RolloutCreated(created) = &story[0] else {
        unreachable!()
    };
    let copy = &created.copies[0];
    assert_eq!(copy.mcu, "Mps2An385");
    assert!(devices.contains(&copy.of));
    let Event::RolloutRehearsed(report) = &story[3] else {
        unreachable!()
    };
    let copied = &report.copies[0];
    assert!(!copied.passed);
    assert!(
        copied
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("fuel exhausted"),
        "{copied:?}"
    );
    assert!(
        copied.fuel_used >= Some(test_limits().fuel_per_invocation),
        "{copied:?}"
    );
    assert!(
        story
            .iter()
            .any(|e| matches!(e, Event::RolloutRollbackStarted(r) if r.devices == 0)),
        "no real device had the new version"
    );
    for device in &devices {
        let events = system.events(&deployment(&app, device)).await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::DeploymentRequested(r) if r.version == 2)),
            "{device} was given the rehearsed version"
        );
    }
    wait_reported_running(&system, &app, &devices, 1).await;
    // The copy ran as its own device, out of every target, and is gone.
    let copy_events = system
        .wait_events(&AggregateId::Device(copy.device_id.clone()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDecommissioned(_)))
        })
        .await;
    // Blink targets every device, yet its running version never went to the copy.
    let copy_deployment = system.events(&deployment(&app, &copy.device_id)).await;
    assert!(
        !copy_deployment
            .iter()
            .any(|e| matches!(e, Event::DeploymentRequested(r) if r.version == 1)),
        "{copy_deployment:?}"
    );
    assert!(copy_events.iter().any(|e| matches!(
        e,
        Event::DeviceRegistered(r) if r.labels.get("rehearsal").map(String::as_str) == Some("blink.1")
    )));
    system
        .wait_events(&AggregateId::Emulator(copy.device_id.clone()), |events| {
            events.iter().any(|e| matches!(e, Event::EmulatorExited(_)))
        })
        .await;

    // A healthy version rehearses, passes, and goes on to the real devices; the report counts
    // the copy's telemetry.
    let rehearsed = StartRollout {
        rehearse: true,
        ..spec(&[WaveSize::Rest], 500, MaxFailures::Count(0))
    };
    start(&system, &app, wasmbed_example_apps::SENSOR, rehearsed).await;
    let story = system
        .wait_events(&rollout_of(&app, 2), ends_with("RolloutCompleted"))
        .await;
    let report = story
        .iter()
        .find_map(|e| match e {
            Event::RolloutRehearsed(r) => Some(r.copies.clone()),
            _ => None,
        })
        .unwrap();
    assert!(report.iter().all(|c| c.passed), "{report:?}");
    assert!(report[0].telemetry >= Some(1), "{report:?}");
    assert!(report[0].memory_pages >= Some(1), "{report:?}");
    wait_reported_running(&system, &app, &devices, 3).await;
    for sim in sims {
        sim.stop().await;
    }
}
