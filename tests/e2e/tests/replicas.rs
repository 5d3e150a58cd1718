//! Two deployers at once: one reconciles (the lease holder), so every device gets each frame
//! once; killed, the other takes over and finishes what was asked.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use wasmbed_bus::call;
use wasmbed_e2e::downlinks::Transfers;
use wasmbed_e2e::{System, T, deployment, test_limits};
use wasmbed_example_apps::{COUNTER, SENSOR};
use wasmbed_schemas::command::UpdateApplication;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::{AppId, DeviceId};

async fn all_running(system: &System, app: &AppId, devices: &[DeviceId], version: u32) {
    for device in devices {
        system
            .wait_events(&deployment(app, device), |events| {
                matches!(events.last(), Some(Event::DeploymentRunning(r)) if r.version == version)
            })
            .await;
    }
}

#[tokio::test]
async fn two_deployers_send_each_frame_once_and_the_survivor_finishes_the_work() {
    let mut system = System::start().await;
    let second = system.another_deployer().await;
    let mut devices = Vec::new();
    let mut sims = Vec::new();
    for n in 0..10 {
        let (id, sim) = system.device(&format!("dual-{n}"), &[]).await;
        devices.push(id);
        sims.push(sim);
    }
    let transfers = Transfers::count(&system.client).await;
    let app = AppId::new("counter").unwrap();
    system
        .create_app(&app, COUNTER, Target::All, test_limits())
        .await;
    system.deploy_app(&app).await;
    all_running(&system, &app, &devices, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let begins = transfers.so_far();
    assert_eq!(begins.len(), devices.len(), "{begins:?}");
    assert!(
        begins.values().all(|n| *n == 1),
        "a device got a transfer twice: {begins:?}"
    );

    // The first deployer (the lease holder: it started first) is killed; an update is asked
    // at once and the second carries it out once the lease expires.
    system.deployer.take().unwrap().kill().await;
    let killed = Instant::now();
    let sha = wasmbed_deployer::upload_module(system.log.jetstream(), SENSOR)
        .await
        .unwrap();
    let update = UpdateApplication {
        app_id: app.clone(),
        module_sha256: sha,
        release: None,
    };
    call(&system.client, &update, T).await.unwrap();
    all_running(&system, &app, &devices, 2).await;
    let took = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let begins = transfers.so_far();
    eprintln!(
        "replicas: leader killed; the survivor ran v2 on all {} devices {took:?} after the kill \
         (lease TTL {:?}); transfers per device and version: {:?}",
        devices.len(),
        wasmbed_service::LEASE_TTL,
        begins.values().collect::<Vec<_>>()
    );
    assert!(
        begins
            .iter()
            .filter(|((_, v), _)| *v == 2)
            .all(|(_, n)| *n == 1),
        "{begins:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    for sim in sims {
        sim.stop().await;
    }
    second.stop().await;
}
