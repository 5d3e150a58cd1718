//! Rollout benchmark: deploy a 64 KiB module to N simulated devices and time until every one
//! reports it running (`DeploymentRunning` in the log).
//!
//! `cargo bench -p wasmbed-e2e --bench deploy` runs 1,000 devices; `WASMBED_BENCH_DEVICES=N`
//! sets another count. Everything (gateway, enrollment, deployer, the devices' TLS clients and
//! their wasmi runtimes) shares this machine's cores with one nats-server, so the figure is an
//! upper bound for a deployment where devices are separate machines.

#![allow(clippy::unwrap_used)] // a benchmark: failing is failing

mod fleet;

use wasmbed_e2e::timed::deploy_to_new_fleet;

fn main() {
    fleet::run(|system, devices, timeout| async move {
        let module_len = 64 * 1024;
        let (fleet, r) = deploy_to_new_fleet(&system, devices, module_len, timeout).await;
        println!(
            "deployment of a {} KiB module to {devices} simulated devices",
            module_len / 1024
        );
        println!(
            "  setup: registered in {:.2?}, connected in {:.2?}",
            fleet.registered, fleet.connected
        );
        println!(
            "  all running after {:.2?}  (first {:.2?}, p50 {:.2?}, p99 {:.2?})",
            r.all_running,
            r.latencies[0],
            r.quantile(0.50),
            r.quantile(0.99)
        );
        let megabytes = (devices * module_len) as f64 / 1e6;
        let secs = r.all_running.as_secs_f64();
        println!(
            "  {:.0} devices/s, {megabytes:.1} MB of module bytes delivered, {:.1} MB/s",
            devices as f64 / secs,
            megabytes / secs
        );
        fleet.stop().await;
        let target = if devices <= 1000 {
            "< 2 s for 1,000"
        } else {
            "< 15 s for 10,000"
        };
        println!("  target: {target}");
    });
}
