//! Staged rollout benchmark, both sides in one run on one fleet: a plain deployment of a 64 KiB
//! module to N simulated devices, then a rollout of the same module (another application) in
//! four waves (1%, 10%, 50%, 100%) with a zero soak, each timed until every device runs it and,
//! for the rollout, until it is recorded completed. Then a new version reaches every device and
//! is aborted: the rollback is timed until it is recorded finished (every device confirmed back).
//!
//! `cargo bench -p wasmbed-e2e --bench rollout` runs 1,000 devices; `WASMBED_BENCH_DEVICES=N`
//! sets another count. Targets: the rollout at most 1.3x the plain deployment; the rollback of
//! 1,000 devices under 2 s. Everything shares this machine's cores with one nats-server.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

mod fleet;

use wasmbed_e2e::timed::{BenchFleet, bench_module, create, deploy, rollback, staged};
use wasmbed_schemas::AppId;
use wasmbed_schemas::rollout::WaveSize;

fn main() {
    fleet::run(|system, devices, timeout| async move {
        let fleet = BenchFleet::start(&system, devices).await;
        let module = bench_module(64 * 1024, 1);
        println!(
            "staged rollout vs plain deployment of a {} KiB module to {devices} simulated devices \
             (connected in {:.2?})",
            module.len() / 1024,
            fleet.connected
        );

        let plain = AppId::new("plain").unwrap();
        create(&system, &plain, &module).await;
        let deployed = deploy(&system, &fleet, &plain, timeout).await;
        println!(
            "  plain deployment:  all running after {:.2?} (p50 {:.2?})",
            deployed.all_running,
            deployed.quantile(0.5)
        );

        let waves = vec![
            WaveSize::Percent(1),
            WaveSize::Percent(10),
            WaveSize::Percent(50),
            WaveSize::Percent(100),
        ];
        let app = AppId::new("staged").unwrap();
        create(&system, &app, &module).await;
        let rolled = staged(&system, &fleet, &app, &module, 1, waves, timeout).await;
        let ratio = rolled.all_running.as_secs_f64() / deployed.all_running.as_secs_f64();
        println!(
            "  rollout, 4 waves, zero soak: completed after {:.2?} (p50 device {:.2?})",
            rolled.all_running,
            rolled.quantile(0.5)
        );
        println!("  rollout / plain deployment: {ratio:.2}x  (target: at most 1.3x)");

        let next = bench_module(64 * 1024, 2);
        let back = rollback(&system, &fleet, &app, &next, 2, timeout).await;
        println!(
            "  rollback of {devices} devices (abort to every device confirmed back): {back:.2?}  \
             (target: under 2 s for 1,000)"
        );
        fleet.stop().await;
    });
}
