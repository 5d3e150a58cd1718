//! Timed fleet operations for benchmarks (and their quick CI variants): N simulated devices
//! connected once, then a plain deployment or a staged rollout of one padded module, timed until
//! every device reports it running.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmbed_bus::call;
use wasmbed_deployer::upload_module;
use wasmbed_device_core::Signer;
use wasmbed_schemas::command::{AbortRollout, DeployApplication, RegisterDevice, StartRollout};
use wasmbed_schemas::event::{Event, EventEnvelope, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::rollout::{MaxFailures, WaveSize};
use wasmbed_schemas::{AggregateId, AggregateKind, AppId, DeviceId, subject};
use wasmbed_sim::{SimConfig, SimDevice, random_key};

use crate::{System, deployment, names, padded};

/// N simulated devices `bench-0..`, registered and connected.
pub struct BenchFleet {
    /// Their ids.
    pub ids: Vec<DeviceId>,
    /// The devices.
    pub sims: Vec<SimDevice>,
    /// Registering every device took.
    pub registered: Duration,
    /// Connecting every device took.
    pub connected: Duration,
}

impl BenchFleet {
    /// Registers and connects `n` devices to `system`'s gateway.
    pub async fn start(system: &System, n: usize) -> Self {
        let started = Instant::now();
        let mut keys = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let key = random_key();
            let device_id = DeviceId::new(format!("bench-{i}")).unwrap();
            call(
                &system.client,
                &RegisterDevice {
                    device_id: device_id.clone(),
                    public_key: key.public_key(),
                    mcu: None,
                    labels: Default::default(),
                },
                Duration::from_secs(10),
            )
            .await
            .unwrap();
            keys.push(key);
            ids.push(device_id);
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
        // Let the devices describe themselves before anything is timed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Self {
            ids,
            sims,
            registered,
            connected,
        }
    }

    /// Stops every device.
    pub async fn stop(self) {
        for sim in self.sims {
            sim.stop().await;
        }
    }
}

/// Limits of the benchmark apps: a tick a minute, so delivery is what is measured.
pub fn bench_limits() -> Limits {
    Limits {
        fuel_per_invocation: 100_000,
        max_memory_pages: 2,
        tick_interval_ms: 60_000,
    }
}

/// The counter example padded to `len` bytes, `variant` making its bytes its own.
pub fn bench_module(len: usize, variant: u8) -> Vec<u8> {
    let mut module = padded(wasmbed_example_apps::COUNTER, len);
    if let Some(last) = module.last_mut() {
        *last = variant;
    }
    module
}

/// Creates `app` for every device with `module` (not deployed).
pub async fn create(system: &System, app: &AppId, module: &[u8]) {
    let (client, log) = (&system.client, &system.log);
    crate::apps::create_application(client, log, app, module, Target::All, bench_limits(), None)
        .await
        .unwrap();
}

/// How long until every device reported a version running.
#[derive(Debug)]
pub struct Timed {
    /// Until the last device ran it.
    pub all_running: Duration,
    /// Each device's time to `DeploymentRunning`, sorted.
    pub latencies: Vec<Duration>,
}

impl Timed {
    /// The `p`-quantile (0..=1) of the per-device latencies.
    pub fn quantile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len() - 1);
        self.latencies[i]
    }
}

/// Runs `start` and times until every device of `fleet` records `app` v`version` running;
/// panics with where each device got to when not within `timeout`. Returns what `start` did.
pub async fn time_until_running<T, F: std::future::Future<Output = T>>(
    system: &System,
    fleet: &BenchFleet,
    app: &AppId,
    version: u32,
    timeout: Duration,
    start: F,
) -> (Timed, T) {
    let mut events = deployment_events(&system.client, app).await;
    let started = Instant::now();
    let done = start.await;
    let n = fleet.ids.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let latencies = match running_times(&mut events, n, version, started, deadline).await {
        Ok(latencies) => latencies,
        Err(running) => {
            let mut last = BTreeMap::new();
            for device in &fleet.ids {
                let history = system.events(&deployment(app, device)).await;
                *last
                    .entry(names(&history).last().copied().unwrap_or("none"))
                    .or_insert(0) += 1;
            }
            panic!("only {running} of {n} devices running: {last:?}");
        }
    };
    let all_running = started.elapsed();
    let timed = Timed {
        all_running,
        latencies,
    };
    (timed, done)
}

/// `app`'s deployment events from now on (subscribed before the command that causes them).
pub async fn deployment_events(client: &async_nats::Client, app: &AppId) -> async_nats::Subscriber {
    let events = client
        .subscribe(format!(
            "{}.{app}.>",
            subject::events_of_kind(AggregateKind::Deployment).trim_end_matches(".>")
        ))
        .await
        .unwrap();
    client.flush().await.unwrap();
    events
}

/// Reads `events` until `n` devices have recorded v`version` running: each one's time since
/// `started`, sorted; or, at `deadline`, how many had.
pub async fn running_times(
    events: &mut async_nats::Subscriber,
    n: usize,
    version: u32,
    started: Instant,
    deadline: tokio::time::Instant,
) -> Result<Vec<Duration>, usize> {
    let mut running = HashSet::new();
    let mut latencies = Vec::with_capacity(n);
    while running.len() < n {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await else {
            return Err(running.len());
        };
        let envelope = EventEnvelope::from_json(&message.payload).unwrap();
        if let Event::DeploymentRunning(r) = envelope.event {
            if r.version == version && running.insert(r.device_id) {
                latencies.push(started.elapsed());
            }
        }
    }
    latencies.sort();
    Ok(latencies)
}

/// Deploys `app` (created, not yet deployed) and times it.
pub async fn deploy(system: &System, fleet: &BenchFleet, app: &AppId, timeout: Duration) -> Timed {
    time_until_running(system, fleet, app, 1, timeout, async {
        call(
            &system.client,
            &DeployApplication {
                app_id: app.clone(),
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    })
    .await
    .0
}

/// Rolls `module` out to `app` in `waves` with a zero soak and times it until every device
/// runs it and the rollout is recorded completed.
pub async fn staged(
    system: &System,
    fleet: &BenchFleet,
    app: &AppId,
    module: &[u8],
    version: u32,
    waves: Vec<WaveSize>,
    timeout: Duration,
) -> Timed {
    let (mut timed, number) =
        start_rollout(system, fleet, app, module, version, waves, 0, timeout).await;
    let started = Instant::now();
    wait_rollout(system, app, number, "RolloutCompleted", timeout).await;
    timed.all_running += started.elapsed();
    timed
}

/// Starts a rollout of `module` to every device at once with a long soak, waits until every
/// device runs it, aborts it and times the rollback until it is recorded finished.
pub async fn rollback(
    system: &System,
    fleet: &BenchFleet,
    app: &AppId,
    module: &[u8],
    version: u32,
    timeout: Duration,
) -> Duration {
    let waves = vec![WaveSize::Rest];
    let hour = 3_600_000;
    let (_, number) =
        start_rollout(system, fleet, app, module, version, waves, hour, timeout).await;
    let started = Instant::now();
    let abort = AbortRollout {
        app_id: app.clone(),
        reason: Some("benchmark".into()),
    };
    call(&system.client, &abort, Duration::from_secs(10))
        .await
        .unwrap();
    wait_rollout(system, app, number, "RolloutRollbackFinished", timeout).await;
    started.elapsed()
}

/// Starts a rollout of `module` (its `version` once recorded) and times it until every device
/// runs it; returns the timing and the rollout's number.
#[allow(clippy::too_many_arguments)] // a benchmark step: each is a knob of the run
async fn start_rollout(
    system: &System,
    fleet: &BenchFleet,
    app: &AppId,
    module: &[u8],
    version: u32,
    waves: Vec<WaveSize>,
    soak_ms: u64,
    timeout: Duration,
) -> (Timed, u32) {
    let sha = upload_module(system.log.jetstream(), module).await.unwrap();
    let start = StartRollout {
        app_id: app.clone(),
        module_sha256: sha,
        waves,
        soak_ms,
        deadline_ms: Some(soak_ms + timeout.as_millis() as u64),
        max_failures: MaxFailures::Count(0),
        approve_each: false,
        rehearse: false,
        limits: None,
        config: None,
        release: None,
    };
    let (timed, started) = time_until_running(system, fleet, app, version, timeout, async {
        call(&system.client, &start, Duration::from_secs(10))
            .await
            .unwrap()
    })
    .await;
    (timed, started.number)
}

/// Waits until the rollout's last event is `last`.
async fn wait_rollout(system: &System, app: &AppId, number: u32, last: &str, timeout: Duration) {
    let aggregate = AggregateId::Rollout {
        app: app.clone(),
        number,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = system.events(&aggregate).await;
        if events.last().is_some_and(|e| e.type_name() == last) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout {number} of {app} never reached {last}: {:?}",
            names(&events)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The quick variant of the deploy benchmark: a fresh fleet, one deployment.
pub async fn deploy_to_new_fleet(
    system: &System,
    n: usize,
    module_len: usize,
    timeout: Duration,
) -> (BenchFleet, Timed) {
    let fleet = BenchFleet::start(system, n).await;
    let app = AppId::new("bench").unwrap();
    create(system, &app, &bench_module(module_len, 0)).await;
    let timed = deploy(system, &fleet, &app, timeout).await;
    (fleet, timed)
}
