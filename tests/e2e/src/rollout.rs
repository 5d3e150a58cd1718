//! A timed rollout: N simulated devices, one padded module, until every device runs it. The
//! benchmark prints it at scale; a quick test runs it in CI.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmbed_bus::call;
use wasmbed_deployer::upload_module;
use wasmbed_device_core::Signer;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{CreateApplication, DeployApplication, RegisterDevice};
use wasmbed_schemas::event::{Event, EventEnvelope, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::{AggregateKind, AppId, DeviceId, subject};
use wasmbed_sim::{SimConfig, SimDevice, random_key};

use crate::{System, deployment, names, padded};

/// What a rollout measured.
#[derive(Debug)]
pub struct Rollout {
    /// Devices.
    pub devices: usize,
    /// Module size, bytes.
    pub module_len: usize,
    /// Registering every device.
    pub registered: Duration,
    /// Every device connected.
    pub connected: Duration,
    /// From the deploy command to the last `DeploymentRunning`.
    pub all_running: Duration,
    /// Each device's time to `DeploymentRunning`, sorted.
    pub latencies: Vec<Duration>,
}

impl Rollout {
    /// The `p`-quantile (0..=1) of the per-device latencies.
    pub fn quantile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// Rolls a module of `module_len` bytes out to `n` simulated devices on `system`; panics with
/// where each device got to when not all run within `timeout`.
pub async fn rollout(system: &System, n: usize, module_len: usize, timeout: Duration) -> Rollout {
    let started = Instant::now();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let key = random_key();
        let device_id = DeviceId::new(format!("bench-{i}")).unwrap();
        call(
            &system.client,
            &RegisterDevice {
                device_id,
                public_key: key.public_key(),
                mcu: None,
                labels: Default::default(),
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        keys.push(key);
    }
    let registered = started.elapsed();

    let started = Instant::now();
    let mut config = SimConfig::new(vec![system.gateway_addr]);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(30);
    let config = Arc::new(config);
    let connector = system.connector();
    let mut sims: Vec<SimDevice> = keys
        .into_iter()
        .map(|key| SimDevice::spawn(connector.clone(), config.clone(), key))
        .collect();
    for sim in &mut sims {
        sim.wait_for(|s| s.connected, Duration::from_secs(120))
            .await
            .unwrap();
    }
    let connected = started.elapsed();
    // Let the devices describe themselves before the rollout is timed.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let module = padded(wasmbed_example_apps::COUNTER, module_len);
    let sha = upload_module(system.log.jetstream(), &module)
        .await
        .unwrap();
    let app = AppId::new("bench").unwrap();
    call(
        &system.client,
        &CreateApplication {
            app_id: app.clone(),
            name: "bench".into(),
            module_sha256: sha,
            target: Target::All,
            config: Blob::default(),
            limits: Limits {
                fuel_per_invocation: 100_000,
                max_memory_pages: 2,
                tick_interval_ms: 60_000,
            },
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut events = system
        .client
        .subscribe(format!(
            "{}.{app}.>",
            subject::events_of_kind(AggregateKind::Deployment).trim_end_matches(".>")
        ))
        .await
        .unwrap();

    let started = Instant::now();
    call(
        &system.client,
        &DeployApplication {
            app_id: app.clone(),
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut running = HashSet::new();
    let mut latencies = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + timeout;
    while running.len() < n {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await else {
            let mut last = std::collections::BTreeMap::new();
            for i in 0..n {
                let device = DeviceId::new(format!("bench-{i}")).unwrap();
                let history = system.events(&deployment(&app, &device)).await;
                *last
                    .entry(names(&history).last().copied().unwrap_or("none"))
                    .or_insert(0) += 1;
            }
            panic!("only {} of {n} devices running: {last:?}", running.len());
        };
        let envelope = EventEnvelope::from_json(&message.payload).unwrap();
        if let Event::DeploymentRunning(r) = envelope.event {
            if running.insert(r.device_id) {
                latencies.push(started.elapsed());
            }
        }
    }
    let rollout = started.elapsed();
    latencies.sort();
    for sim in sims {
        sim.stop().await;
    }
    Rollout {
        devices: n,
        module_len: module.len(),
        registered,
        connected,
        all_running: rollout,
        latencies,
    }
}
