//! Firmware benchmark: image sizes, QEMU start → enrolled, and RAM while TLS is up and an app
//! runs, for each board.
//!
//! `cargo bench -p wasmbed-e2e --bench firmware` (`WASMBED_BENCH_RUNS=N` boots per board,
//! default 5). Sizes come from the ELF (`arm-none-eabi-size`); the times are the host's, from
//! spawning `qemu-system-arm` to the UART line that says the session is established, so they
//! include QEMU's own start-up; RAM comes from the firmware's own counters on the UART. The
//! interpreter's speed on the board is one call of `spin` (a loop that never returns) burning a
//! budget of fuel, timed by the board's own clock between the UART lines that say it started
//! and that it ran out: QEMU's speed on this host, not a real MCU's. A board QEMU does not
//! model (the STM32F407 of Renode's boards) gets its sizes only. The serial board's RAM and
//! interpreter figures come from two boots (its app RAM holds one app at a time).

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

use std::process::Command;
use std::time::{Duration, Instant};

use wasmbed_e2e::System;
use wasmbed_e2e::emulated::{limits_for, qemu_config};
use wasmbed_example_apps::{SENSOR, SPIN};
use wasmbed_renode_manager::firmware::{Board, GatewayLink};
use wasmbed_renode_manager::qemu::QemuDevice;
use wasmbed_schemas::AppId;
use wasmbed_schemas::event::Target;
use wasmbed_schemas::frame::Limits;

const APP_PAGE: u64 = 64 * 1024;

fn main() {
    let runs: usize = std::env::var("WASMBED_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let system = System::start().await;
        for board in Board::ALL {
            let config = qemu_config(board);
            let size = Command::new("arm-none-eabi-size")
                .arg(&config.image)
                .output()
                .unwrap();
            let size = String::from_utf8_lossy(&size.stdout).to_string();
            let fields: Vec<u64> = size
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .take(3)
                .map(|f| f.parse().unwrap())
                .collect();
            let (text, data, bss) = (fields[0], fields[1], fields[2]);
            println!(
                "{}: flash {} KiB (text {} + data {} bytes), static RAM {} bytes (data + bss)",
                board.feature(),
                (text + data) / 1024,
                text,
                data,
                data + bss
            );
            if board.qemu_machine().is_none() {
                println!("  (no QEMU model: built, not booted here)");
                continue;
            }
            let serial = board.gateway_link() == GatewayLink::Serial;
            let mut host_ms = Vec::new();
            let mut device_ms = Vec::new();
            for run in 0..runs {
                let name = format!("bench-{}-{run}", board.feature());
                let (device, key) = system.register(&name, &[]).await;
                let started = Instant::now();
                let qemu = QemuDevice::start(&config, &system.provisioning(&key, &device, None))
                    .await
                    .unwrap();
                let line = qemu
                    .wait_for_line("enrolled:", Duration::from_secs(30))
                    .await
                    .unwrap();
                host_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                // "[    112 ms] enrolled: ..."
                let at: f64 = line
                    .trim_start_matches('[')
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                device_ms.push(at);
                if run == 0 {
                    memory_line(&qemu);
                    ram(&system, &qemu, &device, board).await;
                }
                if run == usize::from(serial && runs > 1) {
                    interpreter_speed(&system, &qemu, &device, board).await;
                }
                qemu.stop().await;
            }
            host_ms.sort_by(f64::total_cmp);
            device_ms.sort_by(f64::total_cmp);
            println!(
                "{}: QEMU start -> enrolled over {runs} runs: median {:.0} ms, max {:.0} ms \
                 (of which firmware boot -> enrolled: median {:.0} ms)",
                board.feature(),
                host_ms[host_ms.len() / 2],
                host_ms[host_ms.len() - 1],
                device_ms[device_ms.len() / 2],
            );
        }
    });
}

/// The firmware's own account of its RAM regions (its boot line).
fn memory_line(qemu: &QemuDevice) {
    if let Some(line) = qemu.lines().iter().find(|l| l.contains("] memory: ")) {
        println!("  {}", line.split("] ").nth(1).unwrap_or(line));
    }
}

/// Deploys the sensor app to the board and reads its RAM figures from the UART.
async fn ram(system: &System, qemu: &QemuDevice, device: &wasmbed_schemas::DeviceId, board: Board) {
    let app = AppId::new(format!("ram-{device}")).unwrap();
    system
        .create_app(
            &app,
            SENSOR,
            Target::Devices(vec![device.clone()]),
            limits_for(board),
        )
        .await;
    system.deploy_app(&app).await;
    let line = qemu
        .wait_for_line(&format!("app: {app} v1 started"), Duration::from_secs(30))
        .await
        .unwrap();
    // "... (1 pages, fuel 138) | heap used 143318 peak 143832, stack peak 9000"
    let number_after = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap()
            .parse()
            .unwrap()
    };
    let pages = number_after("(");
    let heap_peak = number_after("peak ");
    let stack_peak = number_after("stack peak ");
    println!(
        "  RAM with TLS up and one app running: heap peak {} KiB (of which the app's linear \
         memory {} KiB), stack peak {} KiB => firmware RAM without app memory {} KiB",
        heap_peak / 1024,
        pages * APP_PAGE / 1024,
        stack_peak / 1024,
        (heap_peak - pages * APP_PAGE + stack_peak) / 1024
    );
}

/// Deploys `spin` with a budget of [`SPIN_FUEL`] and prints how fast the board burned it.
async fn interpreter_speed(
    system: &System,
    qemu: &QemuDevice,
    device: &wasmbed_schemas::DeviceId,
    board: Board,
) {
    let app = AppId::new(format!("spin-{device}")).unwrap();
    let limits = Limits {
        fuel_per_invocation: SPIN_FUEL,
        ..limits_for(board)
    };
    system
        .create_app(&app, SPIN, Target::Devices(vec![device.clone()]), limits)
        .await;
    system.deploy_app(&app).await;
    let timeout = Duration::from_secs(60);
    let started = qemu
        .wait_for_line(&format!("app: {app} v1 started"), timeout)
        .await
        .unwrap();
    let trapped = qemu
        .wait_for_line(&format!("app: {app} v1 trapped"), timeout)
        .await
        .unwrap();
    let at = |line: &str| -> f64 {
        line.trim_start_matches('[')
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let ms = (at(&trapped) - at(&started)).max(1.0);
    println!(
        "  interpreter on the board: {SPIN_FUEL} fuel in one tick took {ms:.0} ms: {:.2} M fuel/s \
         ({:.0} fuel per ms of tick)",
        SPIN_FUEL as f64 / ms / 1000.0,
        SPIN_FUEL as f64 / ms
    );
}

/// The budget `spin` burns: long enough to time in milliseconds, short of a heartbeat.
const SPIN_FUEL: u64 = 1_000_000;
