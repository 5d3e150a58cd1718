//! Signed releases end to end, on simulated devices: the device is the judge. Frames put
//! straight onto a device's downlink by the operator user (bypassing the deployer) are refused
//! unless a publisher key the device trusts signed exactly that module; what the manifest does
//! not grant does not run or is not sent; trust rotations reach a device that was offline.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use futures::StreamExt;
use wasmbed_bus::{CallError, call};
use wasmbed_deployer::DeployerConfig;
use wasmbed_e2e::releases::{ALL_IMPORTS, Uplink, grants, public, publisher, signed};
use wasmbed_e2e::{System, T, deployer_config, deployment, padded, test_limits};
use wasmbed_example_apps::{COUNTER, SENSOR};
use wasmbed_schemas::command::{ErrorCode, StartEmulator};
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::release::Refusal;
use wasmbed_schemas::{AggregateId, AppId, DeviceId, subject};

fn signing() -> DeployerConfig {
    DeployerConfig {
        require_signed: true,
        ..deployer_config()
    }
}

fn refused(result: Result<(), CallError>) -> (ErrorCode, String) {
    match result {
        Err(CallError::Refused(e)) => (e.code, e.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn wait_running(system: &System, app: &AppId, device: &DeviceId) {
    system
        .wait_events(&deployment(app, device), |events| {
            matches!(events.last(), Some(Event::DeploymentRunning(_)))
        })
        .await;
}

async fn next_message(sub: &mut async_nats::Subscriber, within: Duration) -> Option<String> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .flatten()
        .map(|m| m.subject.to_string())
}

#[tokio::test]
async fn a_device_runs_only_what_a_trusted_publisher_signed_even_when_frames_bypass_the_deployer() {
    let system = System::start_with(signing()).await;
    let a = publisher(1);
    system.trust(&a, None).await.unwrap();
    let (device, key) = system.register("signed-1", &[]).await;
    let mut sim = system.trusting_sim(key, &[public(&a)], 1);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    let counter = AppId::new("counter").unwrap();
    let target = Target::Devices(vec![device.clone()]);
    let limits = test_limits();
    // The module with a custom section, so one byte of it can change and leave valid WASM.
    let module = padded(COUNTER, COUNTER.len() + 256);

    // Unsigned, the deployer refuses it at the door (the fleet's policy).
    let (code, message) = refused(
        system
            .create_signed_app(&counter, &module, target.clone(), limits, None)
            .await,
    );
    assert_eq!(code, ErrorCode::Refused);
    assert!(message.contains("require_signed"), "{message}");

    // Signed by the trusted key: it runs and publishes on its granted topic.
    let mut telemetry = system
        .client
        .subscribe(subject::telemetry(&device, &counter))
        .await
        .unwrap();
    let release = signed(
        &counter,
        1,
        &module,
        grants(ALL_IMPORTS, &["count"], &limits),
        &a,
    );
    system
        .create_signed_app(&counter, &module, target, limits, Some(release.clone()))
        .await
        .unwrap();
    system.deploy_app(&counter).await;
    wait_running(&system, &counter, &device).await;
    assert!(next_message(&mut telemetry, T).await.is_some());

    // Straight onto the downlink as the operator user: the signed release with the module
    // changed by one byte after signing. The device refuses it, says why, and the refusal is
    // an event; the version it runs keeps running.
    let mut uplink = Uplink::of(&system, &device).await;
    let mut tampered = module.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    system
        .inject(&device, &counter, 1, &tampered, Some(release), limits)
        .await;
    let status = uplink.status(&counter, |s| s.refusal.is_some()).await;
    assert_eq!(status.refusal, Some(Refusal::Module), "{status:?}");
    system
        .wait_events(&deployment(&counter, &device), |events| {
            events.iter().any(
                |e| matches!(e, Event::DeploymentFailed(f) if f.refusal == Some(Refusal::Module)),
            )
        })
        .await;

    // Signed by a key the device does not trust; unsigned; a module importing a host function
    // its (trusted) manifest does not grant: each refused by the device.
    let intruder = AppId::new("intruder").unwrap();
    let stranger = publisher(9);
    let without_log = ["config", "device_id", "now_ms", "publish"];
    let cases = [
        (
            COUNTER,
            Some(signed(
                &intruder,
                1,
                COUNTER,
                grants(ALL_IMPORTS, &["count"], &limits),
                &stranger,
            )),
            Refusal::UntrustedKey,
        ),
        (COUNTER, None, Refusal::Unsigned),
        (
            SENSOR,
            Some(signed(
                &intruder,
                1,
                SENSOR,
                grants(&without_log, &["temperature"], &limits),
                &a,
            )),
            Refusal::Capability,
        ),
    ];
    for (module, release, expected) in cases {
        system
            .inject(&device, &intruder, 1, module, release, limits)
            .await;
        let status = uplink.status(&intruder, |s| s.refusal.is_some()).await;
        assert_eq!(status.refusal, Some(expected), "{status:?}");
    }
    // Nothing of the intruder ever published; the signed app still does.
    let mut intruder_telemetry = system
        .client
        .subscribe(subject::telemetry(&device, &intruder))
        .await
        .unwrap();
    assert!(next_message(&mut telemetry, T).await.is_some());
    assert_eq!(
        next_message(&mut intruder_telemetry, Duration::from_secs(1)).await,
        None
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_publish_on_a_topic_the_release_does_not_grant_is_refused_on_the_device() {
    let system = System::start_with(signing()).await;
    let a = publisher(1);
    system.trust(&a, None).await.unwrap();
    let (device, key) = system.register("signed-2", &[]).await;
    let mut sim = system.trusting_sim(key, &[public(&a)], 1);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    let counter = AppId::new("counter").unwrap();
    let limits = test_limits();
    let mut telemetry = system
        .client
        .subscribe(subject::telemetry_of_device(&device))
        .await
        .unwrap();
    let mut uplink = Uplink::of(&system, &device).await;
    // The counter publishes on `count`; its release grants `temperature` only.
    let release = signed(
        &counter,
        1,
        COUNTER,
        grants(ALL_IMPORTS, &["temperature"], &limits),
        &a,
    );
    system
        .create_signed_app(
            &counter,
            COUNTER,
            Target::Devices(vec![device.clone()]),
            limits,
            Some(release),
        )
        .await
        .unwrap();
    system.deploy_app(&counter).await;
    wait_running(&system, &counter, &device).await;
    // It keeps running; every publish got the error code and was counted.
    let status = uplink.status(&counter, |s| s.denied_publishes >= 3).await;
    assert_eq!(status.refusal, None);
    assert_eq!(
        next_message(&mut telemetry, Duration::from_secs(1)).await,
        None,
        "an undeclared topic reached NATS"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_rotation_reaches_a_device_that_was_offline_and_the_revoked_key_signs_nothing_after() {
    let system = System::start_with(signing()).await;
    let (a, b) = (publisher(1), publisher(2));
    system.trust(&a, None).await.unwrap();
    let (device, key) = system.register("signed-3", &[]).await;
    // Provisioned with A at serial 1, then offline while the fleet trusts B and revokes A.
    let mut sim = system.trusting_sim(key.clone(), &[public(&a)], 1);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    sim.stop().await;
    system.trust(&b, Some((&a, 2))).await.unwrap();
    system.revoke(&a, &b, 3).await.unwrap();
    // A rotation that is not the next one, or signed by the revoked key, is refused.
    let (code, _) = refused(system.trust(&publisher(3), Some((&b, 9))).await);
    assert_eq!(code, ErrorCode::Conflict);
    let (code, _) = refused(system.trust(&publisher(3), Some((&a, 4))).await);
    assert_eq!(code, ErrorCode::Refused);
    // The device comes back with what it was provisioned with; the deployer sends the two
    // rotations it lacks and it reports holding serial 3.
    let mut sim = system.trusting_sim(key, &[public(&a)], 1);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    system
        .wait_events(&AggregateId::Device(device.clone()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDescribed(d) if d.trust_serial == 3))
        })
        .await;

    // B's release runs; the deployer refuses A's; and A's injected past the deployer is refused
    // by the device itself as revoked.
    let counter = AppId::new("counter").unwrap();
    let target = Target::Devices(vec![device.clone()]);
    let limits = test_limits();
    let caps = || grants(ALL_IMPORTS, &["count"], &limits);
    let (_, message) = refused(
        system
            .create_signed_app(
                &counter,
                COUNTER,
                target.clone(),
                limits,
                Some(signed(&counter, 1, COUNTER, caps(), &a)),
            )
            .await,
    );
    assert!(message.contains("revoked"), "{message}");
    system
        .create_signed_app(
            &counter,
            COUNTER,
            target,
            limits,
            Some(signed(&counter, 1, COUNTER, caps(), &b)),
        )
        .await
        .unwrap();
    system.deploy_app(&counter).await;
    wait_running(&system, &counter, &device).await;
    let mut uplink = Uplink::of(&system, &device).await;
    let other = AppId::new("other").unwrap();
    system
        .inject(
            &device,
            &other,
            1,
            COUNTER,
            Some(signed(&other, 1, COUNTER, caps(), &a)),
            limits,
        )
        .await;
    let status = uplink.status(&other, |s| s.refusal.is_some()).await;
    assert_eq!(status.refusal, Some(Refusal::RevokedKey));
    sim.stop().await;
}

#[tokio::test]
async fn boards_the_renode_manager_starts_are_provisioned_with_the_fleets_keys() {
    let system = System::start_with(signing()).await;
    let (a, b) = (publisher(1), publisher(2));
    system.trust(&a, None).await.unwrap();
    system.trust(&b, Some((&a, 2))).await.unwrap();
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let device = DeviceId::new("emu-signed").unwrap();
    let start = StartEmulator {
        device_id: device.clone(),
        mcu: "Mps2An385".into(),
        simulated: true,
        labels: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + T;
    while let Err(e) = call(&system.client, &start, T).await {
        assert!(tokio::time::Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its first description already holds serial 2: both keys came with its provisioning, not
    // by rotation afterwards.
    let events = system
        .wait_events(&AggregateId::Device(device.clone()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDescribed(_)))
        })
        .await;
    let first = events.iter().find_map(|e| match e {
        Event::DeviceDescribed(d) => Some(d.trust_serial),
        _ => None,
    });
    assert_eq!(first, Some(2));
    // And it runs what the second key signed.
    let counter = AppId::new("counter").unwrap();
    let limits = test_limits();
    system
        .create_signed_app(
            &counter,
            COUNTER,
            Target::Devices(vec![device.clone()]),
            limits,
            Some(signed(
                &counter,
                1,
                COUNTER,
                grants(ALL_IMPORTS, &["count"], &limits),
                &b,
            )),
        )
        .await
        .unwrap();
    system.deploy_app(&counter).await;
    wait_running(&system, &counter, &device).await;
}
