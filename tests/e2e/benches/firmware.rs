//! Firmware benchmark: image sizes, QEMU start → enrolled, and RAM while TLS is up and an app
//! runs, for each board.
//!
//! `cargo bench -p wasmbed-e2e --bench firmware` (`WASMBED_BENCH_RUNS=N` boots per board,
//! default 5). Sizes come from the ELF (`arm-none-eabi-size`); the times are the host's, from
//! spawning `qemu-system-arm` to the UART line that says the session is established, so they
//! include QEMU's own start-up; RAM comes from the firmware's own counters on the UART.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

use std::process::Command;
use std::time::{Duration, Instant};

use wasmbed_e2e::emulated::qemu_config;
use wasmbed_e2e::{System, test_limits};
use wasmbed_example_apps::SENSOR;
use wasmbed_renode_manager::firmware::Board;
use wasmbed_renode_manager::qemu::QemuDevice;
use wasmbed_schemas::AppId;
use wasmbed_schemas::event::Target;

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
                board.qemu_machine(),
                (text + data) / 1024,
                text,
                data,
                data + bss
            );
            let mut host_ms = Vec::new();
            let mut device_ms = Vec::new();
            for run in 0..runs {
                let name = format!("bench-{}-{run}", board.qemu_machine());
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
                    ram(&system, &qemu, &device).await;
                }
                qemu.stop().await;
            }
            host_ms.sort_by(f64::total_cmp);
            device_ms.sort_by(f64::total_cmp);
            println!(
                "{}: QEMU start -> enrolled over {runs} runs: median {:.0} ms, max {:.0} ms \
                 (of which firmware boot -> enrolled: median {:.0} ms)",
                board.qemu_machine(),
                host_ms[host_ms.len() / 2],
                host_ms[host_ms.len() - 1],
                device_ms[device_ms.len() / 2],
            );
        }
    });
}

/// Deploys the sensor app to the board and reads its RAM figures from the UART.
async fn ram(system: &System, qemu: &QemuDevice, device: &wasmbed_schemas::DeviceId) {
    let app = AppId::new(format!("ram-{device}")).unwrap();
    system
        .create_app(
            &app,
            SENSOR,
            Target::Devices(vec![device.clone()]),
            test_limits(),
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
