//! The device firmware for real: emulated boards in QEMU (mps2 AN385/386/500/505 on Ethernet,
//! the STM32F405 of netduinoplus2 over a serial link to the manager's bridge) boot the
//! `no_std` image, reach the gateway, verify its certificate against the provisioned CA, prove
//! their Ed25519 identity, and run the apps the deployer sends; real nats-server, real TLS.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use wasmbed_deployer::DeployerConfig;
use wasmbed_e2e::emulated::{limits_for, qemu_config};
use wasmbed_e2e::releases::{ALL_IMPORTS, Uplink, grants, public, publisher, signed};
use wasmbed_e2e::{Services, System, T, deployer_config, deployment, padded, test_limits};
use wasmbed_example_apps::{SENSOR, SPIN};
use wasmbed_renode_manager::firmware::{Board, GatewayLink};
use wasmbed_renode_manager::qemu::QemuDevice;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::release::Refusal;
use wasmbed_schemas::subject::header;
use wasmbed_schemas::{AggregateId, AppId, DeviceId};

/// Boot to enrolled is well under a second here; QEMU start-up and a loaded CI box get slack.
const BOOT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_qemu_board_boots_verifies_the_gateway_enrolls_and_runs_the_sensor() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let mut telemetry = system
        .client
        .subscribe("wasmbed.telemetry.>")
        .await
        .unwrap();
    for (board, mcu) in [
        (Board::Mps2An385, "Mps2An385"),
        (Board::Mps2An386, "Mps2An386"),
        (Board::Mps2An500, "Mps2An500"),
        (Board::Mps2An505, "Mps2An505"),
        (Board::Stm32F405, "OlimexStm32H405"),
    ] {
        let name = format!("qemu-{}", board.feature());
        let (device, qemu) = system.start_qemu(board, &name).await;
        let enrolled = qemu.wait_for_line("enrolled:", BOOT).await;
        let lines = qemu.lines();
        eprintln!("UART of {device}:\n{}", lines.join("\n"));
        assert!(enrolled.is_ok(), "{mcu} never enrolled");
        let reached = match board.gateway_link() {
            GatewayLink::Ethernet => "dhcp: lease 10.0.2.",
            GatewayLink::Serial => "bridge: connected to 10.0.2.2:",
        };
        for expected in [
            &format!("boot: wasmbed-firmware 0.1.0 on {mcu}"),
            reached,
            "tls: gateway verified (localhost)",
        ] {
            assert!(
                lines.iter().any(|l| l.contains(expected)),
                "no {expected:?} in\n{}",
                lines.join("\n")
            );
        }
        // The gateway heard it too: connected, and described as the board it is.
        let events = system
            .wait_events(&AggregateId::Device(device.clone()), |events| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::DeviceDescribed(_)))
            })
            .await;
        let described = events.iter().find_map(|e| match e {
            Event::DeviceDescribed(d) => Some(d),
            _ => None,
        });
        assert_eq!(described.unwrap().mcu, mcu);
        // And it runs an app whose telemetry reaches the bus.
        let sensor = AppId::new(format!("sensor-{}", board.feature())).unwrap();
        system
            .create_app(
                &sensor,
                SENSOR,
                Target::Devices(vec![device.clone()]),
                limits_for(board),
            )
            .await;
        system.deploy_app(&sensor).await;
        let subject = telemetry_from(&mut telemetry, &device).await;
        assert!(
            subject.starts_with(&format!("wasmbed.telemetry.{device}.{sensor}")),
            "{subject}"
        );
        qemu.stop().await;
    }
}

/// Boots `board` as `name`, waits until it enrolled, and follows all telemetry from then on.
async fn enrolled(
    system: &System,
    board: Board,
    name: &str,
) -> (DeviceId, QemuDevice, async_nats::Subscriber) {
    let (device, qemu) = system.start_qemu(board, name).await;
    qemu.wait_for_line("enrolled:", BOOT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", qemu.lines().join("\n")));
    let telemetry = system
        .client
        .subscribe("wasmbed.telemetry.>")
        .await
        .unwrap();
    (device, qemu, telemetry)
}

#[tokio::test]
async fn the_serial_board_reconnects_through_its_bridge_after_a_gateway_restart() {
    let mut system = System::start_services(Services::for_emulated_boards()).await;
    let (device, qemu, mut telemetry) = enrolled(&system, Board::Stm32F405, "qemu-serial").await;
    let uart = || qemu.lines().join("\n");
    let sensor = AppId::new("sensor").unwrap();
    system
        .create_app(
            &sensor,
            SENSOR,
            Target::Devices(vec![device.clone()]),
            limits_for(Board::Stm32F405),
        )
        .await;
    system.deploy_app(&sensor).await;
    qemu.wait_for_line("app: sensor v1 started", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    telemetry_from(&mut telemetry, &device).await;

    // The gateway dies: the bridge's TCP connection ends, it tells the board, the board's
    // session ends; the gateway comes back on the same address and the board reconnects.
    system.gateway.take().unwrap().kill().await;
    qemu.wait_for_line("bridge: the gateway closed the connection", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    system.start_gateway().await;
    qemu.wait_for_nth_line("enrolled:", 2, T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    assert!(
        qemu.lines()
            .iter()
            .filter(|l| l.contains("bridge: connected to 10.0.2.2:"))
            .count()
            >= 2,
        "{}",
        uart()
    );
    while telemetry.next().now_or_never().is_some() {}
    telemetry_from(&mut telemetry, &device).await;
    eprintln!("UART of {device}:\n{}", uart());
    qemu.stop().await;
}

#[tokio::test]
async fn a_gateway_whose_certificate_another_ca_signed_is_refused_by_the_firmware() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let (device, key) = system.register("qemu-wrong-ca", &[]).await;
    // The board trusts a CA of its own; the gateway's certificate comes from the system's.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_ca = params.self_signed(&other_key).unwrap();
    let qemu = QemuDevice::start(
        &qemu_config(Board::Mps2An385),
        &system.provisioning(&key, &device, Some(other_ca.der().to_vec())),
    )
    .await
    .unwrap();
    let uart = || qemu.lines().join("\n");
    // It refuses, backs off and tries again: twice refused, never enrolled.
    qemu.wait_for_nth_line("tls: handshake failed", 2, BOOT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    eprintln!("UART of {device}:\n{}", uart());
    assert!(!uart().contains("enrolled:"), "{}", uart());
    assert!(!uart().contains("tls: gateway verified"), "{}", uart());
    let events = system.events(&AggregateId::Device(device.clone())).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DeviceConnected(_))),
        "{events:?}"
    );
    qemu.stop().await;
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
    let mut system = System::start_services(Services::for_emulated_boards()).await;
    let (device, qemu, mut telemetry) = enrolled(&system, Board::Mps2An385, "qemu-2").await;
    let uart = || qemu.lines().join("\n");

    // A real WASM app, transferred over TLS, verified and run by wasmi on the Cortex-M3.
    let sensor = AppId::new("sensor").unwrap();
    let spin = AppId::new("spin").unwrap();
    let target = Target::Devices(vec![device.clone()]);
    system
        .create_app(&sensor, SENSOR, target.clone(), test_limits())
        .await;
    system.create_app(&spin, SPIN, target, test_limits()).await;
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
    let reason = system.wait_failed(&spin, &device).await;
    assert!(reason.contains("fuel exhausted"), "{reason}");
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

#[tokio::test]
async fn the_firmware_runs_a_signed_release_and_refuses_what_its_publisher_did_not_sign() {
    let system = System::start_services(Services {
        deployer: Some(DeployerConfig {
            require_signed: true,
            ..deployer_config()
        }),
        ..Services::for_emulated_boards()
    })
    .await;
    let a = publisher(1);
    system.trust(&a, None).await.unwrap();
    let (device, key) = system.register("qemu-signed", &[]).await;
    let mut block = system.provisioning(&key, &device, None);
    block.publishers = vec![public(&a)];
    block.trust_serial = 1;
    let qemu = QemuDevice::start(&qemu_config(Board::Mps2An385), &block)
        .await
        .unwrap();
    let uart = || qemu.lines().join("\n");
    qemu.wait_for_line("enrolled:", BOOT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", uart()));
    assert!(
        uart().contains("trust: 1 publisher key(s) at serial 1 (runs only signed releases)"),
        "{}",
        uart()
    );
    let mut telemetry = system
        .client
        .subscribe("wasmbed.telemetry.>")
        .await
        .unwrap();
    let sensor = AppId::new("sensor").unwrap();
    let limits = test_limits();
    let module = padded(SENSOR, SENSOR.len() + 256);
    let release = signed(
        &sensor,
        1,
        &module,
        grants(ALL_IMPORTS, &["temperature"], &limits),
        &a,
    );
    system
        .create_signed_app(
            &sensor,
            &module,
            Target::Devices(vec![device.clone()]),
            limits,
            Some(release.clone()),
        )
        .await
        .unwrap();
    system.deploy_app(&sensor).await;
    telemetry_from(&mut telemetry, &device).await;

    // Past the deployer, as the operator user: the module changed by one byte after signing,
    // and a release by a key the board does not trust. The firmware refuses both.
    let mut uplink = Uplink::of(&system, &device).await;
    let mut tampered = module.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let intruder = AppId::new("intruder").unwrap();
    let cases = [
        (&sensor, tampered, Some(release), Refusal::Module),
        (
            &intruder,
            module.clone(),
            Some(signed(
                &intruder,
                1,
                &module,
                grants(ALL_IMPORTS, &["temperature"], &limits),
                &publisher(9),
            )),
            Refusal::UntrustedKey,
        ),
    ];
    for (app, bytes, release, expected) in cases {
        system
            .inject(&device, app, 1, &bytes, release, limits)
            .await;
        let status = uplink.status(app, |s| s.refusal.is_some()).await;
        assert_eq!(status.refusal, Some(expected), "{status:?}\n{}", uart());
    }
    // The signed app still publishes.
    while telemetry.next().now_or_never().is_some() {}
    telemetry_from(&mut telemetry, &device).await;
    eprintln!("UART of {device}:\n{}", uart());
    qemu.stop().await;
}
