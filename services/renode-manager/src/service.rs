//! The renode-manager service: commands on `wasmbed.cmd.v1.renode-manager.*` start, stop and
//! restart a device's emulator; lifecycle events go to the log; UART lines go to
//! `wasmbed.emulator.v1.uart.<device>`.
//!
//! The gateways devices dial come from the log (`GatewayStarted`/`GatewayStopped`); the CA
//! comes from enrollment over the bus; each device's identity is registered with enrollment
//! over the bus before its first boot. Nothing is asked of another service but by command.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use wasmbed_eventlog::{EventLog, ExpectedVersion};
use wasmbed_fleet::Publishers;
use wasmbed_schemas::command::{
    Accepted, CommandError, ErrorCode, GetCaCertificate, RegisterDevice, RestartEmulator,
    StartEmulator, StopEmulator,
};
use wasmbed_schemas::event::{Event, EventEnvelope};
use wasmbed_schemas::subject::{self, Service};
use wasmbed_schemas::{AggregateId, AggregateKind, DeviceId, GatewayId, PublicKey};
use wasmbed_service::{Lease, LeaseError, Runtime, RuntimeError, RuntimeOptions};

use crate::backend::{Backend, Launch};
use crate::catalogue::{Catalogue, Mcu};
use crate::keys::KeyStore;
use crate::supervisor::{self, Supervised};

/// The service this crate answers for.
pub const SERVICE: Service = Service::RenodeManager;

/// When an emulator that ended by itself is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Never.
    Never,
    /// When it failed (non-zero exit, signal, lost container).
    OnFailure,
    /// Whenever it ended without being asked to.
    Always,
}

/// The restart policy.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// When.
    pub mode: RestartMode,
    /// The first delay; doubled on each restart in a row.
    pub backoff_base: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
    /// A run at least this long resets the back-off.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::OnFailure,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `attempt` (1-based) in a row.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Settings of the renode-manager.
#[derive(Clone)]
pub struct ManagerConfig {
    /// What runs the devices.
    pub backend: Backend,
    /// The MCU types.
    pub catalogue: Catalogue,
    /// Where device secrets are kept.
    pub key_dir: PathBuf,
    /// The name the gateways' certificates carry.
    pub server_name: String,
    /// Restarts of emulators that end by themselves.
    pub restart: RestartPolicy,
    /// Replicas, health endpoint, drain grace.
    pub runtime: RuntimeOptions,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The service runtime failed (log, follow, commands, health endpoint).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The lease could not be set up.
    #[error(transparent)]
    Lease(LeaseError),
}

/// State shared by the handlers and the supervisors.
pub(crate) struct Manager {
    pub(crate) client: async_nats::Client,
    pub(crate) log: EventLog,
    pub(crate) config: ManagerConfig,
    keys: KeyStore,
    gateways: Mutex<BTreeMap<GatewayId, String>>,
    pub(crate) running: Mutex<HashMap<DeviceId, Supervised>>,
    ca_pem: tokio::sync::OnceCell<String>,
    /// Serialises starts so two commands for one device cannot both launch it.
    starting: tokio::sync::Mutex<()>,
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
    }
}

impl Manager {
    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Supervised>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gateway_endpoints(&self) -> Vec<String> {
        let gateways = self
            .gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Two gateways may announce one address (behind one service): dial it once.
        let endpoints: std::collections::BTreeSet<String> = gateways.values().cloned().collect();
        endpoints.into_iter().collect()
    }

    fn apply(&self, event: &Event) {
        let mut gateways = self
            .gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Event::GatewayStarted(e) => {
                gateways.insert(e.gateway_id.clone(), e.endpoint.clone());
            }
            Event::GatewayStopped(e) => {
                gateways.remove(&e.gateway_id);
            }
            _ => {}
        }
    }

    /// Appends an event of `device`'s emulator; returns its sequence.
    pub(crate) async fn record(&self, event: Event) -> Result<u64, CommandError> {
        self.log
            .append(ExpectedVersion::Any, &EventEnvelope::new(event))
            .await
            .map(|a| a.sequence)
            .map_err(|e| refuse(ErrorCode::Unavailable, format!("recording the event: {e}")))
    }

    async fn refused(
        &self,
        device: &DeviceId,
        mcu: &str,
        backend: &Backend,
        error: CommandError,
    ) -> CommandError {
        let event = wasmbed_schemas::event::EmulatorStartRefused {
            device_id: device.clone(),
            mcu: mcu.to_owned(),
            backend: backend.name().to_owned(),
            reason: error.message.clone(),
        };
        if let Err(e) = self.record(event.into()).await {
            warn!(error = %e, "the refusal was not recorded");
        }
        error
    }

    async fn ca_pem(&self) -> Result<String, CommandError> {
        self.ca_pem
            .get_or_try_init(|| async {
                wasmbed_bus::call(&self.client, &GetCaCertificate {}, Duration::from_secs(5))
                    .await
                    .map(|ca| ca.certificate_pem)
                    .map_err(|e| {
                        refuse(
                            ErrorCode::Unavailable,
                            format!("the CA from enrollment: {e}"),
                        )
                    })
            })
            .await
            .cloned()
    }

    /// Everything a start of `device` as `mcu` on `how` needs but the backend itself: its
    /// secret (registered with enrollment, with `how`'s labels), the CA and the gateways.
    pub(crate) async fn prepare(
        &self,
        device: &DeviceId,
        mcu: &Mcu,
        how: &Emulation,
    ) -> Result<Prepared, CommandError> {
        let secret = self
            .keys
            .secret(device)
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let public_key = PublicKey(SigningKey::from_bytes(&secret).verifying_key().to_bytes());
        wasmbed_bus::call(
            &self.client,
            &RegisterDevice {
                device_id: device.clone(),
                public_key,
                mcu: Some(mcu.name.clone()),
                labels: how.registration_labels(),
            },
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| match e {
            wasmbed_bus::CallError::Refused(e) => {
                refuse(e.code, format!("registering {device}: {}", e.message))
            }
            other => refuse(
                ErrorCode::Unavailable,
                format!("registering {device}: {other}"),
            ),
        })?;
        let ca_pem = self.ca_pem().await?;
        let gateways = self.gateway_endpoints();
        if gateways.is_empty() {
            return Err(refuse(
                ErrorCode::Unavailable,
                "no gateway has announced itself yet; start one first",
            ));
        }
        let publishers = self.publishers().await?;
        Ok(Prepared {
            secret,
            gateways,
            ca_pem,
            trust_serial: publishers.serial,
            publishers: publishers.trusted(),
        })
    }

    /// The fleet's trusted publisher keys now, read from the log at each start, so a board
    /// provisioned right after a rotation already has it.
    async fn publishers(&self) -> Result<Publishers, CommandError> {
        let events = self.log.read(&AggregateId::Trust).await.map_err(|e| {
            refuse(
                ErrorCode::Unavailable,
                format!("reading the trusted publishers: {e}"),
            )
        })?;
        let mut publishers = Publishers::default();
        for stored in &events {
            publishers.apply(&stored.envelope.event, stored.envelope.time);
        }
        Ok(publishers)
    }
}

/// What [`Manager::prepare`] gathered.
pub(crate) struct Prepared {
    pub(crate) secret: [u8; 32],
    pub(crate) gateways: Vec<String>,
    pub(crate) ca_pem: String,
    pub(crate) publishers: Vec<PublicKey>,
    pub(crate) trust_serial: u32,
}

impl Prepared {
    pub(crate) fn launch<'a>(
        &'a self,
        manager: &'a Manager,
        device: &'a DeviceId,
        mcu: &'a Mcu,
    ) -> Launch<'a> {
        Launch {
            device,
            mcu,
            secret: self.secret,
            gateways: &self.gateways,
            ca_pem: &self.ca_pem,
            server_name: &manager.config.server_name,
            publishers: &self.publishers,
            trust_serial: self.trust_serial,
        }
    }
}

/// How one emulator runs: its backend and the labels it is registered with.
#[derive(Clone)]
pub(crate) struct Emulation {
    pub(crate) backend: Backend,
    pub(crate) labels: BTreeMap<String, String>,
}

impl Emulation {
    fn registration_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("emulated".to_owned(), self.backend.name().to_owned());
        labels
    }
}

async fn start(state: Arc<Manager>, c: StartEmulator) -> Result<Accepted, CommandError> {
    let _one_at_a_time = state.starting.lock().await;
    let how = Emulation {
        backend: if c.simulated {
            Backend::Sim
        } else {
            state.config.backend.clone()
        },
        labels: c.labels.clone(),
    };
    let mcu = match state.config.catalogue.get(&c.mcu) {
        Ok(mcu) => mcu.clone(),
        Err(e) => {
            return Err(state
                .refused(
                    &c.device_id,
                    &c.mcu,
                    &how.backend,
                    refuse(ErrorCode::InvalidRequest, e.to_string()),
                )
                .await);
        }
    };
    if let Err(e) = how.backend.check(&mcu) {
        return Err(state
            .refused(
                &c.device_id,
                &c.mcu,
                &how.backend,
                refuse(ErrorCode::Refused, e.to_string()),
            )
            .await);
    }
    if let Some(running) = state.running().get(&c.device_id) {
        return if running.mcu == mcu.name {
            Ok(Accepted {
                sequence: running.started_sequence(),
            })
        } else {
            Err(refuse(
                ErrorCode::Conflict,
                format!(
                    "{} already runs as {}; stop it first",
                    c.device_id, running.mcu
                ),
            ))
        };
    }
    let prepared = match state.prepare(&c.device_id, &mcu, &how).await {
        Ok(p) => p,
        Err(e) => return Err(state.refused(&c.device_id, &c.mcu, &how.backend, e).await),
    };
    let emulator = match how
        .backend
        .start(&prepared.launch(&state, &c.device_id, &mcu))
        .await
    {
        Ok(emulator) => emulator,
        Err(e) => {
            return Err(state
                .refused(
                    &c.device_id,
                    &c.mcu,
                    &how.backend,
                    refuse(ErrorCode::Unavailable, e.to_string()),
                )
                .await);
        }
    };
    let sequence = supervisor::supervise(state.clone(), c.device_id, mcu, how, emulator).await?;
    Ok(Accepted { sequence })
}

async fn stop(state: Arc<Manager>, c: StopEmulator) -> Result<Accepted, CommandError> {
    let control = state.running().get(&c.device_id).map(|s| s.control.clone());
    let Some(control) = control else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no emulator runs for {}", c.device_id),
        ));
    };
    supervisor::ask(&control, supervisor::Request::Stop).await
}

async fn restart(state: Arc<Manager>, c: RestartEmulator) -> Result<Accepted, CommandError> {
    let control = state.running().get(&c.device_id).map(|s| s.control.clone());
    let Some(control) = control else {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("no emulator runs for {}", c.device_id),
        ));
    };
    supervisor::ask(&control, supervisor::Request::Restart).await
}

/// Runs the service until `shutdown` completes; then stops every emulator it started.
pub async fn run(
    client: async_nats::Client,
    config: ManagerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ManagerError> {
    let mut runtime = Runtime::start(client.clone(), SERVICE.as_str(), &config.runtime).await?;
    let mut state = Arc::new(Manager {
        client,
        log: runtime.log().clone(),
        keys: KeyStore::new(config.key_dir.clone()),
        config,
        gateways: Mutex::default(),
        running: Mutex::default(),
        ca_pem: tokio::sync::OnceCell::new(),
        starting: tokio::sync::Mutex::new(()),
    });
    let follow = runtime
        .restore(
            vec![subject::events_of_kind(AggregateKind::Gateway)],
            &mut state,
            |state, event| state.apply(&event.envelope.event),
        )
        .await?;
    info!(
        backend = state.config.backend.name(),
        gateways = state.gateway_endpoints().len(),
        "renode-manager ready"
    );
    let following = state.clone();
    runtime.keep_following(follow, move |event| following.apply(&event.envelope.event));
    // One instance owns the emulators and answers the commands: the lease holder. Taking the
    // lease, it adopts what the log shows running; losing it, it lets its emulators go quietly
    // (no exit recorded), for the next holder to adopt.
    let holder = wasmbed_service::holder_name(SERVICE.as_str());
    let lease = Lease::start(runtime.log(), SERVICE.as_str(), holder)
        .await
        .map_err(ManagerError::Lease)?;
    let owner = state.clone();
    let mut term = lease.watch();
    runtime.spawn(async move {
        loop {
            if term.borrow().is_some() {
                adopt(&owner).await;
            } else {
                owner.running().clear();
            }
            if term.changed().await.is_err() {
                return;
            }
        }
    });
    let router = || {
        wasmbed_bus::Router::new(SERVICE)
            .route::<StartEmulator, _, _>(start)
            .route::<StopEmulator, _, _>(stop)
            .route::<RestartEmulator, _, _>(restart)
    };
    let served = runtime
        .serve_while_held(router, state.clone(), &lease, shutdown)
        .await;
    let controls: Vec<_> = state
        .running()
        .values()
        .map(|s| s.control.clone())
        .collect();
    for control in controls {
        let _ = supervisor::ask(&control, supervisor::Request::Stop).await;
    }
    lease.release().await;
    served?;
    Ok(())
}

/// Starts again, under this instance, every emulator the log shows running that it does not
/// supervise (its owner died or let it go). A QEMU process the dead owner left behind on this
/// host is killed first, so one board never runs twice.
async fn adopt(state: &Arc<Manager>) {
    let filter = Some(subject::events_of_kind(AggregateKind::Emulator));
    let events = match state.log.page(filter, 0, usize::MAX).await {
        Ok(events) => events,
        Err(e) => {
            warn!(error = %e, "reading the emulators to adopt failed");
            return;
        }
    };
    let mut last: BTreeMap<DeviceId, Option<(String, String, String)>> = BTreeMap::new();
    for stored in &events {
        match &stored.envelope.event {
            Event::EmulatorStarted(e) => {
                last.insert(
                    e.device_id.clone(),
                    Some((e.mcu.clone(), e.backend.clone(), e.instance.clone())),
                );
            }
            Event::EmulatorExited(e) if e.restart_in_ms.is_none() => {
                last.insert(e.device_id.clone(), None);
            }
            _ => {}
        }
    }
    for (device, running) in last {
        let Some((mcu, backend, instance)) = running else {
            continue;
        };
        if state.running().contains_key(&device) {
            continue;
        }
        if let Some(pid) = instance.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
            kill_orphaned_qemu(pid);
        }
        let labels = registered_labels(state, &device).await;
        let simulated = backend == "sim" && !matches!(state.config.backend, Backend::Sim);
        let command = StartEmulator {
            device_id: device.clone(),
            mcu,
            simulated,
            labels,
        };
        match start(state.clone(), command).await {
            Ok(_) => info!(%device, "emulator adopted"),
            Err(e) => warn!(%device, error = %e.message, "emulator not adopted"),
        }
    }
}

/// The labels `device` was registered with, but the manager's own `emulated`.
async fn registered_labels(state: &Manager, device: &DeviceId) -> BTreeMap<String, String> {
    let events = state
        .log
        .read(&wasmbed_schemas::AggregateId::Device(device.clone()))
        .await
        .unwrap_or_default();
    let mut labels = events
        .iter()
        .find_map(|stored| match &stored.envelope.event {
            Event::DeviceRegistered(e) => Some(e.labels.clone()),
            _ => None,
        })
        .unwrap_or_default();
    labels.remove("emulated");
    labels
}

/// Kills `pid` if it is a QEMU that is not this process's child (left by a dead owner).
fn kill_orphaned_qemu(pid: u32) {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let parent = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    let is_qemu = String::from_utf8_lossy(&cmdline).contains("qemu-system");
    if is_qemu && parent != Some(std::process::id()) {
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        info!(pid, ?killed, "orphaned QEMU of a dead owner killed");
    }
}

/// Sends `request` and waits for the supervisor's answer.
pub(crate) type Reply = oneshot::Sender<Result<Accepted, CommandError>>;
/// A supervisor's inbox.
pub(crate) type Inbox = mpsc::Sender<(supervisor::Request, Reply)>;
