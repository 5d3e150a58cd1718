//! The system as separate processes, for tests that break things: a real nats-server (or a
//! 3-node JetStream cluster) and each service a `wasmbed serve …` child process of its own,
//! connected as its own NATS user. A service can be killed with SIGKILL and started again on the
//! same ports; a server can be killed and restarted on its store.

mod audit;
mod load;
mod nats;
mod reads;

pub use audit::{
    LogAudit, assert_ran_once, assert_registered_once, device_events, recorded_offline,
};
pub use load::{connections, register, register_continuously, wait_connected, wait_sessions};
pub use nats::Nats;
pub use reads::{all_events, event_stream_leader, last_sequence, running, wait_running};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use wasmbed_bus::{CallError, call};
use wasmbed_eventlog::{EventLog, LogOptions, StoredEvent};
use wasmbed_local_nats::free_port;
use wasmbed_schemas::command::{DeployApplication, GetCaCertificate};
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::subject::LEASES_BUCKET;
use wasmbed_schemas::subject::header;
use wasmbed_schemas::{AggregateId, AppId, DeviceId};
use wasmbed_sim::{Connector, SimConfig, SimDevice};
use wasmbed_test_support::{NatsCluster, NatsServer, http_get};

use crate::apps::{create_application, deploy_application};
use crate::{T, test_limits};

/// The heartbeat interval the gateways ask for (ms); telemetry calls a device offline after
/// three missed ones.
pub const HEARTBEAT_MS: u64 = 500;

/// How to run one service, and how to tell it is ready.
#[derive(Clone)]
struct Spec {
    principal: Principal,
    args: Vec<String>,
    ready: Ready,
    /// Where `/metrics` is served (with the api's bearer token for the api).
    metrics: Option<SocketAddr>,
}

#[derive(Clone, Copy)]
enum Ready {
    /// `GET path` on this address answers 200.
    Http(SocketAddr, &'static str),
    /// Enrollment answers `GetCaCertificate`.
    Enrollment,
    /// The deployer answers a command (any answer but silence).
    Deployer,
}

/// Which services a cluster runs.
struct Shape {
    /// Instances of enrollment, the deployer and telemetry.
    instances: usize,
    /// The gateways' ids.
    gateways: Vec<String>,
    /// The heartbeat interval (ms).
    heartbeat_ms: u64,
}

/// The system as processes.
pub struct Cluster {
    /// The server or the cluster (restartable on its store).
    pub nats: Nats,
    /// The test's own connection (the operator).
    pub client: async_nats::Client,
    /// The event log.
    pub log: EventLog,
    /// The CA the gateways' certificates chain to.
    pub ca_pem: String,
    binary: PathBuf,
    dir: tempfile::TempDir,
    specs: BTreeMap<String, Spec>,
    running: BTreeMap<String, Child>,
    gateways: Vec<(String, SocketAddr, SocketAddr)>,
    /// Set in every service's environment (besides NATS and logging).
    env: Vec<(String, String)>,
    /// How long a service may take to be ready when started.
    start_deadline: Duration,
    /// How long each service took to be ready, the last time it was started.
    pub start_times: BTreeMap<String, Duration>,
}

impl Cluster {
    /// Starts nats-server, enrollment, gateways `gw-a` and `gw-b`, the deployer and the
    /// telemetry service, each from `binary` (the `wasmbed` executable), and waits until each
    /// is ready.
    pub async fn start(binary: &Path) -> Self {
        Self::start_with_env(binary, Vec::new()).await
    }

    /// The same with `env` in every service's environment (an OTLP endpoint, say).
    pub async fn start_with_env(binary: &Path, env: Vec<(String, String)>) -> Self {
        let nats = Nats::One(NatsServer::start().await.unwrap());
        Self::start_on(binary, nats, 1, env).await
    }

    /// The same on a log that `write` filled first (a long history, say), giving each service
    /// up to `start_deadline` to be ready.
    pub async fn start_on_history(
        binary: &Path,
        write: impl AsyncFnOnce(&EventLog),
        start_deadline: Duration,
    ) -> Self {
        let server = NatsServer::start().await.unwrap();
        let log = EventLog::open(server.client().await.unwrap(), &LogOptions::default())
            .await
            .unwrap();
        write(&log).await;
        Self::start_until(binary, Nats::One(server), 1, Vec::new(), start_deadline).await
    }

    /// A fleet's system: `gateways` gateways `gw-1`, `gw-2`, … and one of every other service,
    /// with heartbeats every `heartbeat_ms` (the telemetry service's liveness follows it), and
    /// `env` in every service's environment.
    pub async fn start_fleet(
        binary: &Path,
        gateways: usize,
        heartbeat_ms: u64,
        env: Vec<(String, String)>,
    ) -> Self {
        let nats = Nats::One(NatsServer::start().await.unwrap());
        let shape = Shape {
            instances: 1,
            gateways: (1..=gateways).map(|n| format!("gw-{n}")).collect(),
            heartbeat_ms,
        };
        Self::start_shaped(binary, nats, &shape, env, T).await
    }

    /// The same on a 3-node JetStream cluster, with two instances of enrollment, the deployer
    /// and telemetry (the second of each named `<service>-2`).
    pub async fn start_replicated(binary: &Path) -> Self {
        let nats = Nats::Three(NatsCluster::start().await.unwrap());
        Self::start_on(binary, nats, 2, Vec::new()).await
    }

    async fn start_on(
        binary: &Path,
        nats: Nats,
        instances: usize,
        env: Vec<(String, String)>,
    ) -> Self {
        Self::start_until(binary, nats, instances, env, T).await
    }

    async fn start_until(
        binary: &Path,
        nats: Nats,
        instances: usize,
        env: Vec<(String, String)>,
        start_deadline: Duration,
    ) -> Self {
        let shape = Shape {
            instances,
            gateways: vec!["gw-a".into(), "gw-b".into()],
            heartbeat_ms: HEARTBEAT_MS,
        };
        Self::start_shaped(binary, nats, &shape, env, start_deadline).await
    }

    async fn start_shaped(
        binary: &Path,
        nats: Nats,
        shape: &Shape,
        env: Vec<(String, String)>,
        start_deadline: Duration,
    ) -> Self {
        let (instances, heartbeat_ms) = (shape.instances, shape.heartbeat_ms.to_string());
        let client = nats.client().await.unwrap();
        let options = LogOptions {
            replicas: nats.replicas(),
        };
        let log = EventLog::open(client.clone(), &options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Self {
            nats,
            client,
            log,
            ca_pem: String::new(),
            binary: binary.to_path_buf(),
            specs: BTreeMap::new(),
            running: BTreeMap::new(),
            gateways: Vec::new(),
            env,
            dir,
            start_deadline,
            start_times: BTreeMap::new(),
        };
        let ca_dir = cluster.dir.path().join("ca").display().to_string();
        for name in instance_names("enrollment", instances) {
            let health: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            cluster.add(
                &name,
                Spec {
                    principal: Principal::Enrollment,
                    args: args(&[
                        "serve",
                        "enrollment",
                        "--ca-dir",
                        &ca_dir,
                        "--health-listen",
                        &health.to_string(),
                    ]),
                    ready: Ready::Enrollment,
                    metrics: Some(health),
                },
            );
            cluster.start_service(&name).await;
        }
        let ca = call(&cluster.client, &GetCaCertificate {}, T)
            .await
            .unwrap();
        cluster.ca_pem = ca.certificate_pem;
        for id in &shape.gateways {
            let tls: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            let http: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            cluster.add(
                id,
                Spec {
                    principal: Principal::Gateway,
                    args: args(&[
                        "serve",
                        "gateway",
                        "--gateway-id",
                        id,
                        "--tls-listen",
                        &tls.to_string(),
                        "--http-listen",
                        &http.to_string(),
                        "--heartbeat-interval-ms",
                        &heartbeat_ms,
                    ]),
                    ready: Ready::Http(http, "/ready"),
                    metrics: Some(http),
                },
            );
            cluster.gateways.push((id.to_owned(), tls, http));
            cluster.start_service(id).await;
        }
        for name in instance_names("deployer", instances) {
            let health: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            cluster.add(
                &name,
                Spec {
                    principal: Principal::Deployer,
                    args: args(&["serve", "deployer", "--health-listen", &health.to_string()]),
                    ready: Ready::Deployer,
                    metrics: Some(health),
                },
            );
            cluster.start_service(&name).await;
        }
        for name in instance_names("telemetry", instances) {
            let http: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            cluster.add(
                &name,
                Spec {
                    principal: Principal::Telemetry,
                    args: args(&[
                        "serve",
                        "telemetry",
                        "--http-listen",
                        &http.to_string(),
                        "--heartbeat-interval-ms",
                        &heartbeat_ms,
                        "--missed-heartbeats",
                        "3",
                    ]),
                    ready: Ready::Http(http, "/health"),
                    metrics: Some(http),
                },
            );
            cluster.start_service(&name).await;
        }
        cluster
    }

    /// Which instance holds lease `lease` now (`deployer`, `renode-manager`): the one whose
    /// process id the lease's value names.
    pub async fn lease_holder(&self, lease: &str) -> Option<String> {
        let kv = self
            .log
            .jetstream()
            .get_key_value(LEASES_BUCKET)
            .await
            .ok()?;
        let value = kv.get(lease).await.ok()??;
        let holder = String::from_utf8_lossy(&value).into_owned();
        self.running
            .iter()
            .find(|(_, child)| {
                child
                    .id()
                    .is_some_and(|pid| holder.contains(&format!("pid {pid}")))
            })
            .map(|(name, _)| name.clone())
    }

    fn add(&mut self, name: &str, spec: Spec) {
        self.specs.insert(name.to_owned(), spec);
    }

    /// Adds and starts a renode-manager `name` with the simulator backend; every manager of the
    /// cluster shares one device key directory (the factory's secrets), as adoption needs.
    pub async fn start_renode_manager(&mut self, name: &str) -> Duration {
        self.add_renode_manager(name);
        self.start_service(name).await
    }

    /// Adds a renode-manager `name` as above without starting it.
    pub fn add_renode_manager(&mut self, name: &str) {
        let health: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let keys = self.dir.path().join("device-keys").display().to_string();
        self.add(
            name,
            Spec {
                principal: Principal::RenodeManager,
                args: args(&[
                    "serve",
                    "renode-manager",
                    "--backend",
                    "sim",
                    "--key-dir",
                    &keys,
                    "--health-listen",
                    &health.to_string(),
                ]),
                ready: Ready::Http(health, "/ready"),
                metrics: Some(health),
            },
        );
    }

    /// Adds and starts the api `name` (REST on a free port, one read-write token); returns
    /// its address and token.
    pub async fn start_api(&mut self, name: &str) -> (SocketAddr, String) {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        let token = format!("cluster-test-token-{}", free_port().unwrap());
        self.add(
            name,
            Spec {
                principal: Principal::Api,
                args: args(&[
                    "serve",
                    "api",
                    "--listen",
                    &listen.to_string(),
                    "--token",
                    &format!("test={token}"),
                ]),
                ready: Ready::Http(listen, "/health"),
                metrics: Some(listen),
            },
        );
        self.start_service(name).await;
        (listen, token)
    }

    /// Adds and starts the projector `name`; it reaches the Kubernetes API its environment's
    /// `KUBECONFIG` names (give it with [`Cluster::start_with_env`]).
    pub async fn start_projector(&mut self, name: &str) {
        let health: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
        self.add(
            name,
            Spec {
                principal: Principal::Projector,
                args: args(&["serve", "projector", "--health-listen", &health.to_string()]),
                ready: Ready::Http(health, "/health"),
                metrics: Some(health),
            },
        );
        self.start_service(name).await;
    }

    /// Where each running service serves `/metrics`, by name (the api's needs its token).
    pub fn metrics_endpoints(&self) -> Vec<(String, SocketAddr)> {
        self.running
            .keys()
            .filter_map(|name| Some((name.clone(), self.specs.get(name)?.metrics?)))
            .collect()
    }

    /// The TLS address of gateway `id`.
    pub fn gateway(&self, id: &str) -> SocketAddr {
        self.gateways.iter().find(|g| g.0 == id).unwrap().1
    }

    /// The HTTP address (`/ready`, `/metrics`) of gateway `id`.
    pub fn gateway_http(&self, id: &str) -> SocketAddr {
        self.gateways.iter().find(|g| g.0 == id).unwrap().2
    }

    /// Starts service `name` (again, on the same ports and state) and waits until it is
    /// ready; returns how long that took.
    pub async fn start_service(&mut self, name: &str) -> Duration {
        self.start_services(&[name]).await
    }

    /// Starts services `names` at the same moment, then waits until each is ready; returns
    /// how long that took.
    pub async fn start_services(&mut self, names: &[&str]) -> Duration {
        let started = Instant::now();
        for name in names {
            self.spawn(name);
        }
        let deadline = started + self.start_deadline;
        for name in names {
            while !self.is_ready(self.specs[*name].ready).await {
                assert!(
                    Instant::now() < deadline,
                    "{name} was not ready within {:?}; its log:\n{}",
                    self.start_deadline,
                    self.service_log(name)
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            self.start_times
                .insert((*name).to_owned(), started.elapsed());
        }
        started.elapsed()
    }

    fn spawn(&mut self, name: &str) {
        let spec = &self.specs[name];
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(&self.binary)
            .args(&spec.args)
            .env("NATS_URL", self.nats.url())
            .env("WASMBED_REPLICAS", self.nats.replicas().to_string())
            .env(
                "WASMBED_NATS_PASSWORD",
                self.nats.users().password(spec.principal),
            )
            .env(
                "WASMBED_LOG",
                std::env::var("WASMBED_CLUSTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.running.insert(name.to_owned(), child);
    }

    async fn is_ready(&self, ready: Ready) -> bool {
        let quick = Duration::from_millis(300);
        match ready {
            Ready::Http(addr, path) => http_get(addr, path).await.0 == 200,
            Ready::Enrollment => call(&self.client, &GetCaCertificate {}, quick)
                .await
                .is_ok(),
            Ready::Deployer => {
                let probe = DeployApplication {
                    app_id: AppId::new("readiness-probe").unwrap(),
                };
                !matches!(
                    call(&self.client, &probe, quick).await,
                    Err(CallError::Transport { .. })
                )
            }
        }
    }

    /// What service `name` wrote to stderr.
    pub fn service_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `kill -9` of service `name`: no goodbye, nothing flushed. Returns when it is gone.
    pub async fn kill(&mut self, name: &str) {
        let mut child = self.running.remove(name).unwrap();
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "{name} had already exited: {status}");
    }

    /// Simulated devices with `keys`, dialling `gateways` in turn (the first one first).
    pub fn devices(
        &self,
        keys: &[ed25519_dalek::SigningKey],
        gateways: Vec<SocketAddr>,
    ) -> Vec<SimDevice> {
        let connector = Connector::new(&self.ca_pem, "localhost").unwrap();
        let mut config = SimConfig::new(gateways);
        config.backoff_base = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let config = Arc::new(config);
        keys.iter()
            .map(|key| SimDevice::spawn(connector.clone(), config.clone(), key.clone()))
            .collect()
    }

    /// The process id of service `name`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running.get(name).and_then(Child::id)
    }

    /// Counts telemetry on the bus from now on, in the background.
    pub async fn count_telemetry(&self) -> Arc<Mutex<TelemetryCount>> {
        let count = Arc::new(Mutex::new(TelemetryCount::default()));
        let mut sub = self
            .client
            .subscribe(wasmbed_schemas::subject::TELEMETRY_ALL)
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        let shared = count.clone();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                let headers = message.headers.unwrap_or_default();
                let get = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default()
                };
                let seq: u64 = get(header::SEQUENCE).parse().unwrap_or(0);
                let mut count = shared.lock().unwrap();
                let entry = count
                    .per_stream
                    .entry((get(header::DEVICE), get(header::APP)))
                    .or_insert((0, seq.saturating_sub(1)));
                entry.0 += 1;
                entry.1 = entry.1.max(seq);
            }
        });
        count
    }

    /// Creates `app` from `module` for every device and deploys it.
    pub async fn deploy(&self, app: &AppId, module: &[u8]) {
        let (client, log) = (&self.client, &self.log);
        create_application(client, log, app, module, Target::All, test_limits(), None)
            .await
            .unwrap();
        deploy_application(client, app).await.unwrap();
    }

    /// The devices `app` has run on so far, each with the time its `DeploymentRunning` was
    /// recorded.
    pub async fn running(&self, app: &AppId) -> BTreeMap<DeviceId, DateTime<Utc>> {
        reads::running(&self.log, app).await.unwrap()
    }

    /// On how many of `devices` `app` is running now.
    pub async fn running_on(&self, app: &AppId, devices: &[DeviceId]) -> usize {
        let running = self.running(app).await;
        devices.iter().filter(|d| running.contains_key(*d)).count()
    }

    /// Waits until `app` runs on every device (`within` bounds the wait); returns when the
    /// last one started it, as recorded in the log.
    pub async fn wait_running(
        &self,
        app: &AppId,
        devices: &[DeviceId],
        within: Duration,
    ) -> DateTime<Utc> {
        reads::wait_running(&self.log, app, devices, std::time::Instant::now() + within).await
    }

    /// Waits until the telemetry service has recorded `device` offline.
    pub async fn wait_offline(&self, device: &DeviceId) {
        let deadline = Instant::now() + T;
        loop {
            let events = self
                .log
                .read(&AggregateId::Device(device.clone()))
                .await
                .unwrap();
            if events
                .iter()
                .any(|e| matches!(e.envelope.event, Event::DeviceWentOffline(_)))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{device} never went offline");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every event in the log, oldest first.
    pub async fn all_events(&self) -> Vec<StoredEvent> {
        reads::all_events(&self.log).await
    }
}

/// Telemetry seen on the bus: messages per (device, app) and the highest sequence number.
#[derive(Default)]
pub struct TelemetryCount {
    per_stream: BTreeMap<(String, String), (u64, u64)>,
}

impl TelemetryCount {
    /// Messages received.
    pub fn received(&self) -> u64 {
        self.per_stream.values().map(|(n, _)| n).sum()
    }

    /// Sequence numbers the apps used that never arrived (e.g. sent into a dying gateway).
    pub fn missing(&self) -> u64 {
        self.per_stream
            .values()
            .map(|(n, max)| max.saturating_sub(*n))
            .sum()
    }

    /// Messages received from `device`.
    pub fn of(&self, device: &DeviceId) -> u64 {
        self.per_stream
            .iter()
            .filter(|((d, _), _)| d == device.as_str())
            .map(|(_, (n, _))| n)
            .sum()
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// From `from` to `to`, in milliseconds.
pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// `service`, then `service-2`, … : `instances` names.
fn instance_names(service: &str, instances: usize) -> Vec<String> {
    (1..=instances)
        .map(|n| match n {
            1 => service.to_owned(),
            n => format!("{service}-{n}"),
        })
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}
