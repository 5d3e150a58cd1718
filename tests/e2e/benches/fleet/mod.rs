//! What the fleet benchmarks share: logging, their settings and the system they run on.

use std::future::Future;
use std::time::Duration;

use wasmbed_e2e::System;

/// Runs `body` with a system on the deployer's production settings (not the tests' quick
/// retries), the fleet size (`WASMBED_BENCH_DEVICES`, default 1,000) and the time allowed for
/// one fleet-wide operation (`WASMBED_BENCH_TIMEOUT_SECS`, default 300 s).
pub fn run<F, Fut>(body: F)
where
    F: FnOnce(System, usize, Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMBED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let devices = env("WASMBED_BENCH_DEVICES", 1000) as usize;
    let timeout = Duration::from_secs(env("WASMBED_BENCH_TIMEOUT_SECS", 300));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let system = System::start_with(wasmbed_deployer::DeployerConfig::default()).await;
        body(system, devices, timeout).await;
    });
}
