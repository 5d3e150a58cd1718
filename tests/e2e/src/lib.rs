//! A whole system for end-to-end tests: a real nats-server, enrollment, a gateway on real TLS,
//! the deployer, the telemetry service, and simulated devices — every service in this process, talking only over NATS.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // a test fixture: failing is failing

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmbed_bus::{CallError, call};
use wasmbed_deployer::DeployerConfig;
use wasmbed_device_core::Signer;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_gateway::GatewayConfig;
use wasmbed_schemas::command::{DeployApplication, GetCaCertificate, RegisterDevice};
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{AggregateId, AppId, DeviceId, GatewayId};
use wasmbed_sim::{Connector, SimConfig, SimDevice, random_key};
use wasmbed_test_support::{NatsServer, http_get};

pub mod apps;
pub mod cluster;
pub mod docker;
pub mod downlinks;
pub mod emulated;
pub mod fleet;
pub mod gateway;
pub mod history;
pub mod otlp;
pub mod processes;
pub mod releases;
pub mod timed;
pub mod workers;

/// How long any single wait in these tests may take.
pub const T: Duration = Duration::from_secs(20);

/// A service task that can be stopped cleanly or killed.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) fn spawn<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Self {
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Asks it to stop and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Drops it mid-flight: no goodbye, nothing flushed.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Everything but the devices.
pub struct System {
    /// The server.
    pub nats: NatsServer,
    /// A client for the test itself.
    pub client: async_nats::Client,
    /// The event log.
    pub log: EventLog,
    /// Where devices dial.
    pub gateway_addr: SocketAddr,
    /// The CA devices verify the gateway against.
    pub ca_pem: String,
    /// The gateway.
    pub gateway: Option<gateway::RunningGateway>,
    /// The deployer.
    pub deployer: Option<Running>,
    /// The telemetry service.
    pub telemetry: Option<Running>,
    deployer_config: DeployerConfig,
    gateway_heartbeat: Duration,
    _enrollment: Running,
    /// The second instances of enrollment, the deployer and telemetry, when
    /// `WASMBED_E2E_INSTANCES=2` runs the suite with two of each.
    _second: Vec<Running>,
    _ca_dir: tempfile::TempDir,
}

/// How many instances of enrollment, the deployer and telemetry a [`System`] runs:
/// `WASMBED_E2E_INSTANCES` (1 or 2; the test command runs the deploy, rollout and release suites
/// with 2 as well, which must give the same results as one).
pub fn instances() -> usize {
    std::env::var("WASMBED_E2E_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .clamp(1, 2)
}

/// Limits for the example apps in tests: 100k fuel per call, 2 pages, a tick every 100 ms.
pub fn test_limits() -> Limits {
    Limits {
        fuel_per_invocation: 100_000,
        max_memory_pages: 2,
        tick_interval_ms: 100,
    }
}

/// The deployer settings tests use: quick retries.
pub fn deployer_config() -> DeployerConfig {
    DeployerConfig {
        step_timeout: Duration::from_millis(1500),
        ..DeployerConfig::default()
    }
}

/// What a [`System`] runs beside nats-server and enrollment, and how.
#[derive(Clone)]
pub struct Services {
    /// The system's own gateway (`gw-e2e`).
    pub gateway: bool,
    /// Its heartbeat interval (three missed end a session): 500 ms, so that liveness tests
    /// are quick; emulated boards on a loaded machine want more (production's is 5 s).
    pub gateway_heartbeat: Duration,
    /// The deployer, with this configuration.
    pub deployer: Option<DeployerConfig>,
    /// The telemetry service.
    pub telemetry: bool,
    /// How long the gateway certificates enrollment issues are valid.
    pub certificate_validity: Duration,
}

impl Default for Services {
    /// Everything, the deployer with quick retries.
    fn default() -> Self {
        Self {
            gateway: true,
            gateway_heartbeat: Duration::from_millis(500),
            deployer: Some(deployer_config()),
            telemetry: true,
            certificate_validity: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Services {
    /// Everything, for emulated boards: QEMU starved of CPU by a parallel test run can spend
    /// more than 1.5 s compiling a module, so the gateway's heartbeats are 2 s apart.
    pub fn for_emulated_boards() -> Self {
        Self {
            gateway_heartbeat: Duration::from_secs(2),
            ..Self::default()
        }
    }

    /// Enrollment alone: for tests that start their own gateways.
    pub fn enrollment_only() -> Self {
        Self {
            gateway: false,
            deployer: None,
            telemetry: false,
            ..Self::default()
        }
    }
}

impl System {
    /// Starts nats-server, enrollment, a gateway, the deployer (with quick retries) and the
    /// telemetry service.
    pub async fn start() -> Self {
        Self::start_services(Services::default()).await
    }

    /// The same with the deployer configured by `deployer`.
    pub async fn start_with(deployer: DeployerConfig) -> Self {
        Self::start_services(Services {
            deployer: Some(deployer),
            ..Services::default()
        })
        .await
    }

    /// nats-server, enrollment, and `services`.
    pub async fn start_services(services: Services) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.client().await.unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let enrollment = Running::spawn({
            let client = nats.client_as(Principal::Enrollment).await.unwrap();
            let mut config = wasmbed_enrollment::EnrollmentConfig::new(ca_dir.path().to_path_buf());
            config.gateway_certificate_validity = services.certificate_validity;
            |stopped| async move {
                let _ = wasmbed_enrollment::run(client, config, async move {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        let mut ca_pem = None;
        for _ in 0..200 {
            if let Ok(ca) = call(&client, &GetCaCertificate {}, Duration::from_millis(200)).await {
                ca_pem = Some(ca.certificate_pem);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = EventLog::open(client.clone(), &LogOptions::default())
            .await
            .unwrap();
        let mut system = Self {
            nats,
            client,
            log,
            gateway_addr: "127.0.0.1:0".parse().unwrap(),
            ca_pem: ca_pem.expect("enrollment came up"),
            gateway: None,
            deployer: None,
            telemetry: None,
            deployer_config: services.deployer.clone().unwrap_or_else(deployer_config),
            gateway_heartbeat: services.gateway_heartbeat,
            _enrollment: enrollment,
            _second: Vec::new(),
            _ca_dir: ca_dir,
        };
        if instances() > 1 {
            let client = system.nats.client_as(Principal::Enrollment).await.unwrap();
            let mut config =
                wasmbed_enrollment::EnrollmentConfig::new(system._ca_dir.path().to_path_buf());
            config.gateway_certificate_validity = services.certificate_validity;
            system._second.push(Running::spawn(|stopped| async move {
                let _ = wasmbed_enrollment::run(client, config, async move {
                    let _ = stopped.await;
                })
                .await;
            }));
        }
        if services.gateway {
            system.start_gateway().await;
        }
        if services.deployer.is_some() {
            system.start_deployer().await;
            if instances() > 1 {
                let second = system.another_deployer().await;
                system._second.push(second);
            }
        }
        if services.telemetry {
            system.start_telemetry().await;
            if instances() > 1 {
                let second = system.spawn_telemetry().await;
                system._second.push(second);
            }
        }
        system
    }

    /// Starts the telemetry service (liveness with the gateway's 500 ms heartbeats).
    async fn start_telemetry(&mut self) {
        self.telemetry = Some(self.spawn_telemetry().await);
    }

    /// One telemetry instance, once it answers `/health`.
    async fn spawn_telemetry(&self) -> Running {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        let client = self.nats.client_as(Principal::Telemetry).await.unwrap();
        let config = wasmbed_telemetry::TelemetryConfig {
            heartbeat_interval: Duration::from_millis(500),
            missed_heartbeats: 3,
            sweep_interval: Duration::from_millis(100),
            runtime: Default::default(),
        };
        let running = Running::spawn(|stopped| async move {
            let _ = wasmbed_telemetry::run(client, config, http, async move {
                let _ = stopped.await;
            })
            .await;
        });
        wait_ok(addr, "/health").await;
        running
    }

    /// Starts the gateway (again) on the same address.
    pub async fn start_gateway(&mut self) {
        let mut config = GatewayConfig::new(GatewayId::new("gw-e2e").unwrap());
        config.heartbeat_interval = self.gateway_heartbeat;
        let gateway = self
            .start_gateway_with(config, self.gateway_addr.port())
            .await;
        self.gateway_addr = gateway.tls_addr;
        self.gateway = Some(gateway);
    }

    /// Starts a deployer and waits until it answers commands.
    pub async fn start_deployer(&mut self) {
        self.deployer = Some(self.another_deployer().await);
    }

    /// One more deployer instance beside any running (it waits for the lease to reconcile),
    /// once it answers commands.
    pub async fn another_deployer(&self) -> Running {
        let client = self.nats.client_as(Principal::Deployer).await.unwrap();
        let config = self.deployer_config.clone();
        let running = Running::spawn(|stopped| async move {
            let _ = wasmbed_deployer::run(client, config, async move {
                let _ = stopped.await;
            })
            .await;
        });
        let probe = DeployApplication {
            app_id: AppId::new("readiness-probe").unwrap(),
        };
        let deadline = tokio::time::Instant::now() + T;
        // An answer, even "not found", means it is serving.
        while let Err(CallError::Transport { .. }) =
            call(&self.client, &probe, Duration::from_millis(200)).await
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "deployer never answered"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        running
    }

    /// Uploads `module` and creates application `app` for `target` (config `lab`), unsigned.
    pub async fn create_app(&self, app: &AppId, module: &[u8], target: Target, limits: Limits) {
        self.create_signed_app(app, module, target, limits, None)
            .await
            .unwrap();
    }

    /// Waits until `app` failed on `device`; returns why.
    pub async fn wait_failed(&self, app: &AppId, device: &DeviceId) -> String {
        let events = self
            .wait_events(&deployment(app, device), |e| {
                matches!(e.last(), Some(Event::DeploymentFailed(_)))
            })
            .await;
        match events.last() {
            Some(Event::DeploymentFailed(failed)) => failed.reason.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Deploys application `app` to its target.
    pub async fn deploy_app(&self, app: &AppId) {
        apps::deploy_application(&self.client, app).await.unwrap();
    }

    /// A device client connector trusting this system's CA.
    pub fn connector(&self) -> Connector {
        Connector::new(&self.ca_pem, "localhost").unwrap()
    }

    /// Registers a fresh key as `name` with `labels`; returns the id and the key.
    pub async fn register(&self, name: &str, labels: &[(&str, &str)]) -> (DeviceId, SigningKey) {
        let key = random_key();
        let id = self.register_key(name, &key, labels).await;
        (id, key)
    }

    /// Registers `key` as `name` with `labels`.
    pub async fn register_key(
        &self,
        name: &str,
        key: &SigningKey,
        labels: &[(&str, &str)],
    ) -> DeviceId {
        let device_id = DeviceId::new(name).unwrap();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        call(
            &self.client,
            &RegisterDevice {
                device_id: device_id.clone(),
                public_key: key.public_key(),
                mcu: None,
                labels,
            },
            T,
        )
        .await
        .unwrap();
        device_id
    }

    /// A simulated device with `key`, dialling this system's gateway.
    pub fn sim(&self, key: SigningKey) -> SimDevice {
        self.sim_to(vec![self.gateway_addr], key)
    }

    /// A simulated device with `key`, dialling `gateways` in turn (the first one first).
    pub fn sim_to(&self, gateways: Vec<SocketAddr>, key: SigningKey) -> SimDevice {
        let mut config = SimConfig::new(gateways);
        config.backoff_base = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        SimDevice::spawn(self.connector(), Arc::new(config), key)
    }

    /// Registers `name` and starts its simulated device: connected, and described (so the
    /// deployer knows its RAM).
    pub async fn device(&self, name: &str, labels: &[(&str, &str)]) -> (DeviceId, SimDevice) {
        let (id, key) = self.register(name, labels).await;
        let mut sim = self.sim(key);
        sim.wait_for(|s| s.connected, T).await.unwrap();
        self.wait_events(&AggregateId::Device(id.clone()), |events| {
            events
                .iter()
                .any(|e| matches!(e, Event::DeviceDescribed(_)))
        })
        .await;
        (id, sim)
    }

    /// The events of one aggregate.
    pub async fn events(&self, aggregate: &AggregateId) -> Vec<Event> {
        self.log
            .read(aggregate)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.envelope.event)
            .collect()
    }

    /// Waits until an aggregate's history satisfies `condition`.
    pub async fn wait_events(
        &self,
        aggregate: &AggregateId,
        condition: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let events = self.events(aggregate).await;
            if condition(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events of {aggregate:?} never matched: {:#?}",
                names(&events)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until `GET path` answers 200 (a status, not a TCP connect, is readiness).
pub async fn wait_ok(addr: SocketAddr, path: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while http_get(addr, path).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}{path} never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The deployment aggregate of `app` on `device`.
pub fn deployment(app: &AppId, device: &DeviceId) -> AggregateId {
    AggregateId::Deployment {
        app: app.clone(),
        device: device.clone(),
    }
}

/// Event type names, for assertions that read like the log.
pub fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::type_name).collect()
}

/// `module` grown to at least `len` bytes with a custom section (ignored by the runtime), so
/// transfers of realistic sizes can be measured with a tiny app.
pub fn padded(module: &[u8], len: usize) -> Vec<u8> {
    let build = |payload: usize| {
        let name = b"wasmbed-padding";
        let mut body = Vec::new();
        leb128(&mut body, name.len());
        body.extend_from_slice(name);
        body.resize(body.len() + payload, 0xa5);
        let mut out = module.to_vec();
        out.push(0);
        leb128(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    };
    // The section length's own encoding grows with the payload: settle in a few steps.
    let mut payload = 1;
    for _ in 0..4 {
        let size = build(payload).len();
        if size == len || (size > len && payload == 1) {
            break;
        }
        payload = (payload + len).saturating_sub(size).max(1);
    }
    build(payload)
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The columns of a table as the header places them: each row's cells start where the header's
/// names do, and the character before each start is a space.
pub fn assert_table_aligned(table: &str) {
    let lines: Vec<Vec<char>> = table.lines().map(|l| l.chars().collect()).collect();
    let header = &lines[0];
    let starts: Vec<usize> = (0..header.len())
        // Columns are two spaces apart; a name may hold one ("PUBLIC KEY").
        .filter(|&i| header[i] != ' ' && (i == 0 || (i >= 2 && header[i - 2..i] == [' ', ' '])))
        .collect();
    assert!(starts.len() >= 2, "{table}");
    for line in &lines[1..] {
        for &start in &starts[1..] {
            assert!(
                line.len() > start && line[start] != ' ' && line[start - 1] == ' ',
                "a cell does not start at its column ({start}):\n{table}"
            );
        }
    }
}

/// The registration of device `id` with `key`'s public key (no MCU, no labels).
pub fn registration(
    id: &DeviceId,
    key: &ed25519_dalek::SigningKey,
) -> wasmbed_schemas::command::RegisterDevice {
    wasmbed_schemas::command::RegisterDevice {
        device_id: id.clone(),
        public_key: wasmbed_device_core::Signer::public_key(key),
        mcu: None,
        labels: std::collections::BTreeMap::new(),
    }
}
