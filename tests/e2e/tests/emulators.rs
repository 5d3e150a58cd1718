#![allow(clippy::unwrap_used)]
//! The renode-manager against a real system: commands on the bus start, restart and stop
//! emulated devices; the log records their lifecycle; their UART is on the bus.
//!
//! The QEMU test boots the real firmware (mps2-an385) in QEMU and kills it from outside.

use std::time::Duration;

use futures::StreamExt;
use wasmbed_bus::{CallError, call};
use wasmbed_e2e::emulated::qemu_backend;
use wasmbed_e2e::{Services, System, T, names};
use wasmbed_renode_manager::backend::{Backend, QemuBackend};
use wasmbed_renode_manager::firmware::Board;
use wasmbed_schemas::command::{
    Accepted, CommandError, ErrorCode, RestartEmulator, StartEmulator, StopEmulator,
};
use wasmbed_schemas::event::{Event, ExitReason};
use wasmbed_schemas::{AggregateId, DeviceId, subject};

/// Sends the start command once the manager answers.
async fn start(system: &System, device: &DeviceId, mcu: &str) -> Result<Accepted, CommandError> {
    let command = StartEmulator {
        device_id: device.clone(),
        mcu: mcu.into(),
        simulated: false,
        labels: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match call(&system.client, &command, Duration::from_secs(15)).await {
            Ok(accepted) => return Ok(accepted),
            Err(CallError::Refused(e)) => return Err(e),
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "no answer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A renode-manager whose QEMU backend has no firmware images (kept in the returned directory).
async fn qemu_without_images(
    system: &System,
) -> (wasmbed_e2e::emulated::Manager, tempfile::TempDir) {
    let nowhere = tempfile::tempdir().unwrap();
    let manager = system
        .start_manager(Backend::Qemu(QemuBackend {
            qemu: "qemu-system-arm".into(),
            images: nowhere.path().to_path_buf(),
        }))
        .await;
    (manager, nowhere)
}

async fn stop(system: &System, device: &DeviceId) -> Result<Accepted, CallError> {
    let command = StopEmulator {
        device_id: device.clone(),
    };
    call(&system.client, &command, Duration::from_secs(15)).await
}

/// Waits for the `n`-th UART line on the bus containing `needle`.
async fn uart_line(uart: &mut async_nats::Subscriber, needle: &str, mut n: usize) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(message) = uart.next().await {
            let line = String::from_utf8_lossy(&message.payload).into_owned();
            seen.push(line.clone());
            if line.contains(needle) {
                n -= 1;
                if n == 0 {
                    return line;
                }
            }
        }
        panic!("the UART subscription ended");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no UART line {needle:?} on the bus; saw {seen:#?}"))
}

/// Starts an Mps2An385 board named `name` and waits until it logged its enrollment and the log
/// shows it connected; returns it and its UART subscription.
async fn boot(system: &System, name: &str) -> (DeviceId, async_nats::Subscriber) {
    boot_mcu(system, name, "Mps2An385").await
}

/// [`boot`] for a board of type `mcu`.
async fn boot_mcu(system: &System, name: &str, mcu: &str) -> (DeviceId, async_nats::Subscriber) {
    let device = DeviceId::new(name).unwrap();
    let mut uart = system
        .client
        .subscribe(subject::emulator_uart(&device))
        .await
        .unwrap();
    start(system, &device, mcu).await.unwrap();
    let line = uart_line(&mut uart, "enrolled:", 1).await;
    assert!(line.contains(name), "{line}");
    system
        .wait_events(&AggregateId::Device(device.clone()), |e| {
            e.iter().any(|e| matches!(e, Event::DeviceConnected(_)))
        })
        .await;
    (device, uart)
}

fn started(events: &[Event]) -> Vec<&wasmbed_schemas::event::EmulatorStarted> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::EmulatorStarted(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn exited(events: &[Event]) -> Vec<&wasmbed_schemas::event::EmulatorExited> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::EmulatorExited(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn pid_of(instance: &str) -> u32 {
    instance
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a process instance: {instance}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qemu_backend_boots_restarts_on_a_crash_and_stops_a_board() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let _manager = system.start_manager(qemu_backend()).await;
    let (device, mut uart) = boot(&system, "qemu-m1").await;
    let emulator = AggregateId::Emulator(device.clone());
    let events = system.events(&emulator).await;
    let first = started(&events)[0].clone();
    assert_eq!(
        (first.backend.as_str(), first.mcu.as_str(), first.attempt),
        ("qemu", "Mps2An385", 1)
    );
    // Starting it again is answered with the same start.
    start(&system, &device, "Mps2An385").await.unwrap();
    assert_eq!(started(&system.events(&emulator).await).len(), 1);

    // Killed from outside: an exit (crashed), then a restart per the policy.
    let pid = pid_of(&first.instance);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let events = system
        .wait_events(&emulator, |e| started(e).len() == 2)
        .await;
    let crash = exited(&events)[0];
    assert_eq!(crash.reason, ExitReason::Crashed, "{crash:?}");
    assert!(crash.restart_in_ms.is_some());
    assert!(
        crash
            .last_uart_lines
            .iter()
            .any(|l| l.contains("enrolled:")),
        "{:?}",
        crash.last_uart_lines
    );
    let second = started(&events)[1].clone();
    assert_eq!(second.attempt, 2);
    assert_ne!(second.instance, first.instance);
    uart_line(&mut uart, "enrolled:", 1).await;

    // Stopped on command: the process is gone and the log says so.
    stop(&system, &device).await.unwrap();
    let events = system.events(&emulator).await;
    assert_eq!(
        names(&events),
        [
            "EmulatorStarted",
            "EmulatorExited",
            "EmulatorStarted",
            "EmulatorExited"
        ]
    );
    assert_eq!(exited(&events)[1].reason, ExitReason::Stopped);
    assert_eq!(exited(&events)[1].restart_in_ms, None);
    let pid = pid_of(&second.instance);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "qemu {pid} still runs"
    );
    let again = stop(&system, &device).await.unwrap_err();
    assert!(matches!(again, CallError::Refused(e) if e.code == ErrorCode::NotFound));
    // The manager did all of this as its own NATS user, within its permissions.
    assert_eq!(system.nats.permission_violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_board_with_a_firmware_module_starts_on_command_and_enrolls() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let _manager = system.start_manager(qemu_backend()).await;
    // The STM32F405 reaches its gateway over the manager's serial bridge.
    for mcu in ["Mps2An386", "Mps2An500", "Mps2An505", "OlimexStm32H405"] {
        let name = format!("cmd-{}", mcu.to_lowercase());
        let (device, _uart) = boot_mcu(&system, &name, mcu).await;
        let events = system.events(&AggregateId::Emulator(device.clone())).await;
        assert_eq!(started(&events)[0].mcu, mcu);
        // The firmware that enrolled is the board's own: it says so itself.
        let described = system
            .wait_events(&AggregateId::Device(device.clone()), |e| {
                e.iter().any(|e| matches!(e, Event::DeviceDescribed(_)))
            })
            .await;
        let said = described.iter().find_map(|e| match e {
            Event::DeviceDescribed(d) => Some(d.mcu.clone()),
            _ => None,
        });
        assert_eq!(said.as_deref(), Some(mcu));
        stop(&system, &device).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_that_cannot_run_are_refused_with_the_reason_and_recorded() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let (_manager, _nowhere) = qemu_without_images(&system).await;
    let device = DeviceId::new("odd-1").unwrap();
    let cases = [
        ("Esp32DevkitC", ErrorCode::Refused, "not a Cortex-M"),
        (
            "Nrf52840DK",
            ErrorCode::Refused,
            "no Ethernet (network: ble)",
        ),
        ("Stm32Vldiscovery", ErrorCode::Refused, "8 KiB of RAM"),
        ("Stm32F746gDisco", ErrorCode::Refused, "no board module"),
        ("FrdmK64f", ErrorCode::Refused, "no board module"),
        (
            "Pdp11",
            ErrorCode::InvalidRequest,
            "not in the MCU catalogue",
        ),
        // Runnable, but this checkout has no image under the configured root.
        ("Mps2An386", ErrorCode::Unavailable, "no firmware image"),
    ];
    for (mcu, code, reason) in cases {
        let refused = start(&system, &device, mcu).await.unwrap_err();
        assert_eq!(refused.code, code, "{mcu}: {refused:?}");
        assert!(
            refused.message.contains(reason),
            "{mcu}: {}",
            refused.message
        );
    }
    let events = system.events(&AggregateId::Emulator(device)).await;
    let reasons: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::EmulatorStartRefused(r) => Some((r.mcu.as_str(), r.reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), cases.len(), "{reasons:?}");
    assert!(reasons[0].1.contains("Xtensa"), "{reasons:?}");
    assert!(started(&events).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_engine_that_is_not_there_is_a_clear_refusal_event() {
    use std::sync::Arc;
    use wasmbed_renode_manager::docker::{ContainerBackend, ContainerConfig};
    let system = System::start_services(Services::for_emulated_boards()).await;
    let dir = tempfile::tempdir().unwrap();
    let absent = format!("unix://{}", dir.path().join("docker.sock").display());
    // A stand-in firmware image: the engine is asked for nothing before the files are ready.
    let image = dir.path().join(Board::Mps2An385.image_name());
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, b"stand-in").unwrap();
    let _manager = system
        .start_manager(Backend::Container(Arc::new(ContainerBackend::new(
            ContainerConfig::qemu(absent, "wasmbed/qemu:test".into(), dir.path().into()),
        ))))
        .await;
    let device = DeviceId::new("docker-0").unwrap();
    let refused = start(&system, &device, "Mps2An385").await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(
        refused.message.contains("docker engine at unix://"),
        "{}",
        refused.message
    );
    let events = system.events(&AggregateId::Emulator(device)).await;
    match events.as_slice() {
        [Event::EmulatorStartRefused(r)] => {
            assert_eq!(r.backend, "qemu-docker");
            assert!(r.reason.contains("docker.sock"), "{}", r.reason);
        }
        other => panic!("expected one refusal: {:?}", names(other)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_backend_runs_restarts_and_stops_simulated_devices() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    let _manager = system.start_manager(Backend::Sim).await;
    let device = DeviceId::new("sim-m1").unwrap();
    let mut uart = system
        .client
        .subscribe(subject::emulator_uart(&device))
        .await
        .unwrap();
    start(&system, &device, "Nrf52840DK").await.unwrap();
    uart_line(&mut uart, "enrolled: sim-m1", 1).await;
    let described = system
        .wait_events(&AggregateId::Device(device.clone()), |e| {
            e.iter().any(|e| matches!(e, Event::DeviceDescribed(_)))
        })
        .await;
    let mcu = described.iter().find_map(|e| match e {
        Event::DeviceDescribed(d) => Some(d.mcu.clone()),
        _ => None,
    });
    assert_eq!(mcu.as_deref(), Some("Nrf52840DK"));
    // Another type while it runs is a conflict.
    let conflict = start(&system, &device, "Mps2An385").await.unwrap_err();
    assert_eq!(conflict.code, ErrorCode::Conflict);

    call(
        &system.client,
        &RestartEmulator {
            device_id: device.clone(),
        },
        T,
    )
    .await
    .unwrap();
    uart_line(&mut uart, "enrolled: sim-m1", 1).await;
    stop(&system, &device).await.unwrap();
    let events = system.events(&AggregateId::Emulator(device.clone())).await;
    assert_eq!(
        names(&events),
        [
            "EmulatorStarted",
            "EmulatorExited",
            "EmulatorStarted",
            "EmulatorExited"
        ]
    );
    assert!(
        exited(&events)
            .iter()
            .all(|e| e.reason == ExitReason::Stopped)
    );
    assert_eq!(started(&events)[1].attempt, 2);
    assert_eq!(started(&events)[0].backend, "sim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_backend_runs_the_firmware_in_a_real_docker_engine() {
    use std::sync::Arc;
    use wasmbed_e2e::docker::DockerEngine;
    use wasmbed_renode_manager::docker::{ContainerBackend, ContainerConfig};
    use wasmbed_test_support::workspace_root;

    let engine = match DockerEngine::start() {
        Ok(engine) => engine,
        Err(why) => {
            // The scripted-engine tests (services/renode-manager/tests/docker.rs) still ran.
            println!("NOT RUN against a real Docker engine: {why}");
            return;
        }
    };
    engine.import_qemu_image("wasmbed/qemu:test").unwrap();
    qemu_backend(); // builds the firmware image uploaded into the container
    let backend = Backend::Container(Arc::new(ContainerBackend::new(ContainerConfig::qemu(
        engine.host.clone(),
        "wasmbed/qemu:test".into(),
        workspace_root().join("firmware/target"),
    ))));
    let system = System::start_services(Services::for_emulated_boards()).await;
    let _manager = system.start_manager(backend).await;
    let (device, mut uart) = boot(&system, "docker-1").await;
    let emulator = AggregateId::Emulator(device.clone());
    let first = started(&system.events(&emulator).await)[0].clone();
    assert_eq!(first.backend, "qemu-docker");
    assert!(
        first.instance.starts_with("container "),
        "{}",
        first.instance
    );
    let listed = engine
        .docker(&[
            "ps",
            "--filter",
            "label=io.wasmbed.device=docker-1",
            "--format",
            "{{.Names}} {{.Mounts}}",
        ])
        .unwrap();
    // Nothing bind-mounted: the files were uploaded, so the engine could be on another host.
    assert_eq!(listed.trim(), "wasmbed-emulator-docker-1", "{listed}");
    println!("real engine: {listed}");

    // Killed from outside: recorded as crashed and started again in a new container.
    engine
        .docker(&["kill", "wasmbed-emulator-docker-1"])
        .unwrap();
    let events = system
        .wait_events(&emulator, |e| started(e).len() == 2)
        .await;
    assert_eq!(
        exited(&events)[0].reason,
        ExitReason::Crashed,
        "{:?}",
        exited(&events)[0]
    );
    uart_line(&mut uart, "enrolled:", 1).await;

    stop(&system, &device).await.unwrap();
    let events = system.events(&emulator).await;
    assert_eq!(exited(&events).last().unwrap().reason, ExitReason::Stopped);
    let left = engine
        .docker(&["ps", "-a", "--format", "{{.Names}}"])
        .unwrap();
    assert!(
        !left.contains("wasmbed-emulator-docker-1"),
        "not removed: {left}"
    );

    // A board without Ethernet in a container: QEMU's link UART listens on a loopback port of
    // the shared network, the manager dials it and bridges it to the gateway.
    let (serial, _uart) = boot_mcu(&system, "docker-serial", "OlimexStm32H405").await;
    let described = system
        .wait_events(&AggregateId::Device(serial.clone()), |e| {
            e.iter().any(|e| matches!(e, Event::DeviceDescribed(_)))
        })
        .await;
    assert!(
        described
            .iter()
            .any(|e| matches!(e, Event::DeviceDescribed(d) if d.mcu == "OlimexStm32H405")),
        "{described:?}"
    );
    stop(&system, &serial).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_start_runs_any_catalogue_board_in_the_simulator_with_its_labels() {
    let system = System::start_services(Services::for_emulated_boards()).await;
    // A manager whose own backend (QEMU without images) could run none of these boards.
    let (_manager, _nowhere) = qemu_without_images(&system).await;
    let device = DeviceId::new("copy-1").unwrap();
    let refused = start(&system, &device, "Stm32F746gDisco")
        .await
        .unwrap_err();
    assert!(refused.message.contains("no board module"), "{refused:?}");
    let command = StartEmulator {
        device_id: device.clone(),
        mcu: "Stm32F746gDisco".into(),
        simulated: true,
        labels: [("ring".to_owned(), "canary".to_owned())].into(),
    };
    call(&system.client, &command, T).await.unwrap();
    let history = system
        .wait_events(&AggregateId::Device(device.clone()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDescribed(_)))
        })
        .await;
    let Some(Event::DeviceRegistered(registered)) = history.first() else {
        panic!("{history:?}");
    };
    assert_eq!(
        registered.labels.get("ring").map(String::as_str),
        Some("canary")
    );
    assert_eq!(
        registered.labels.get("emulated").map(String::as_str),
        Some("sim")
    );
    assert!(history.iter().any(|e| matches!(
        e,
        Event::DeviceDescribed(d) if d.mcu == "Stm32F746gDisco"
    )));
    let emulator = system.events(&AggregateId::Emulator(device.clone())).await;
    assert!(emulator.iter().any(
        |e| matches!(e, Event::EmulatorStarted(s) if s.backend == "sim" && s.mcu == "Stm32F746gDisco")
    ));
    stop(&system, &device).await.unwrap();
    system
        .wait_events(&AggregateId::Emulator(device), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::EmulatorExited(x) if x.reason == ExitReason::Stopped))
        })
        .await;
}
