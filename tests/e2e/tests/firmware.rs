//! The device firmware for real: an emulated mps2-an385 in QEMU boots the `no_std` image,
//! gets a DHCP lease, verifies the gateway's certificate against the provisioned CA, proves
//! its Ed25519 identity, and runs the apps the deployer sends; real nats-server, real TLS.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use futures::{FutureExt, StreamExt};
use wasmbed_e2e::{System, T, deployment};
use wasmbed_example_apps::{SENSOR, SPIN};
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_renode_manager::pem;
use wasmbed_renode_manager::qemu::{QemuConfig, QemuDevice, guest_endpoint};
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_schemas::subject::header;
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_test_support::workspace_root;

/// Boot to enrolled is well under a second here; QEMU start-up and a loaded CI box get slack.
const BOOT: Duration = Duration::from_secs(30);

fn qemu_config(board: Board) -> QemuConfig {
    QemuConfig {
        qemu: "qemu-system-arm".into(),
        board,
        image: firmware::build(&workspace_root(), board).unwrap(),
    }
}

fn provisioning(system: &System, key: &SigningKey, device: &str, ca_der: Vec<u8>) -> Provisioning {
    Provisioning {
        endpoints: vec![guest_endpoint(system.gateway_addr)],
        device_secret: key.to_bytes(),
        entropy: rand_seed(),
        provisioned_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        server_name: "localhost".into(),
        device_id: device.into(),
        ca_der,
        enrollment_token: None,
    }
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    seed
}

#[tokio::test]
async fn an_emulated_board_boots_verifies_the_gateway_and_enrolls() {
    let system = System::start().await;
    let (device, key) = system.register("qemu-1", &[]).await;
    let ca_der = pem::certificate_der(&system.ca_pem).unwrap();
    let qemu = QemuDevice::start(
        &qemu_config(Board::Mps2An385),
        &provisioning(&system, &key, device.as_str(), ca_der),
    )
    .await
    .unwrap();
    let enrolled = qemu.wait_for_line("enrolled:", BOOT).await;
    let lines = qemu.lines();
    eprintln!("UART of {device}:\n{}", lines.join("\n"));
    assert!(enrolled.is_ok(), "never enrolled");
    for expected in [
        "boot: wasmbed-firmware",
        "dhcp: lease 10.0.2.",
        "tls: gateway verified",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "no {expected:?} in\n{}",
            lines.join("\n")
        );
    }
    qemu.stop().await;
}

fn limits() -> Limits {
    Limits {
        fuel_per_invocation: 100_000,
        max_memory_pages: 2,
        tick_interval_ms: 100,
    }
}

/// Waits for a telemetry message from `device` on `wasmbed.telemetry.>`.
async fn telemetry_from(sub: &mut async_nats::Subscriber, device: &DeviceId) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let message = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("telemetry from the emulated device")
            .unwrap();
        let headers = message.headers.unwrap_or_default();
        if headers.get(header::DEVICE).map(|v| v.as_str()) == Some(device.as_str()) {
            return message.subject.to_string();
        }
    }
}

#[tokio::test]
async fn the_emulated_board_runs_apps_traps_a_loop_and_comes_back_after_a_gateway_restart() {
    let mut system = System::start().await;
    let (device, key) = system.register("qemu-2", &[]).await;
    let ca_der = pem::certificate_der(&system.ca_pem).unwrap();
    let qemu = QemuDevice::start(
        &qemu_config(Board::Mps2An385),
        &provisioning(&system, &key, device.as_str(), ca_der),
    )
    .await
    .unwrap();
    let uart = || qemu.lines().join("\n");
    qemu.wait_for_line("enrolled:", BOOT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    let mut telemetry = system
        .client
        .subscribe("wasmbed.telemetry.>")
        .await
        .unwrap();

    // A real WASM app, transferred over TLS, verified and run by wasmi on the Cortex-M3.
    let sensor = AppId::new("sensor").unwrap();
    let spin = AppId::new("spin").unwrap();
    let target = Target::Devices(vec![device.clone()]);
    system
        .create_app(&sensor, SENSOR, target.clone(), limits())
        .await;
    system.create_app(&spin, SPIN, target, limits()).await;
    system.deploy_app(&sensor).await;
    let subject = telemetry_from(&mut telemetry, &device).await;
    assert!(
        subject.starts_with(&format!("wasmbed.telemetry.{device}.sensor")),
        "{subject}"
    );
    qemu.wait_for_line("app: sensor v1 started", T)
        .await
        .unwrap();
    let running = system.events(&deployment(&sensor, &device)).await;
    assert!(
        matches!(running.last(), Some(Event::DeploymentRunning(_))),
        "{running:?}"
    );

    // The infinite loop runs out of fuel on the device; the device stays in its session.
    system.deploy_app(&spin).await;
    let events = system
        .wait_events(&deployment(&spin, &device), |e| {
            matches!(e.last(), Some(Event::DeploymentFailed(_)))
        })
        .await;
    let Some(Event::DeploymentFailed(failed)) = events.last() else {
        unreachable!()
    };
    assert!(
        failed.reason.contains("fuel exhausted"),
        "{}",
        failed.reason
    );
    let trapped = qemu.wait_for_line("app: spin v1 trapped", T).await.unwrap();
    assert!(trapped.contains("fuel exhausted"), "{trapped}");
    // Still the first session, and the sensor still publishes.
    while telemetry.next().now_or_never().is_some() {}
    telemetry_from(&mut telemetry, &device).await;
    assert_eq!(
        qemu.lines()
            .iter()
            .filter(|l| l.contains("enrolled:"))
            .count(),
        1,
        "{}",
        uart()
    );

    // The gateway goes away and comes back on the same address: the board reconnects alone.
    system.gateway.take().unwrap().kill().await;
    system.start_gateway().await;
    qemu.wait_for_nth_line("enrolled:", 2, T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    while telemetry.next().now_or_never().is_some() {}
    telemetry_from(&mut telemetry, &device).await;
    eprintln!("UART of {device}:\n{}", uart());
    qemu.stop().await;
}
