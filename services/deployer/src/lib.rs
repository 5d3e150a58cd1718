//! The deployer: applications (WASM modules) to devices.
//!
//! - Commands on `wasmbed.cmd.v1.deployer.*` create, deploy, update, stop and delete
//!   applications; each is validated and recorded as application events.
//! - A reconciler compares what should run (application events) with what the log says each
//!   device has (deployment events) and closes the gap: it records `DeploymentRequested` (or
//!   `DeploymentRefused` when the app does not fit the device), streams the module in chunks
//!   over the device's downlink, and records `Delivered`, `Running`, `Failed`, `Stopped` from
//!   what the device reports on its uplink.
//! - Its view is rebuilt from the log at start; in-flight transfers are not persisted because
//!   the device says how far it got, so a restart neither loses nor repeats a delivery.

mod handlers;
mod metrics;
mod reconciler;
mod release;
pub mod rollout;
mod trust;
mod validate;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};
use wasmbed_eventlog::{AppendError, EventLog, ExpectedVersion, StoredEvent};
use wasmbed_fleet::Fleet;
use wasmbed_schemas::AggregateKind;
use wasmbed_schemas::event::{Event, EventEnvelope};
use wasmbed_schemas::subject::{self, Service};
use wasmbed_service::{Lease, Runtime, RuntimeError, RuntimeOptions};

/// How long a command waits for this instance's view to reach what the log holds for its
/// aggregate (well inside the callers' timeouts).
const CATCH_UP: Duration = Duration::from_secs(5);

pub use validate::{ModuleFacts, validate};
pub use wasmbed_eventlog::modules::{
    MAX_MODULE_LEN, ModuleError, ModuleStore, digest, upload_module,
};

/// The service this crate answers for.
pub const SERVICE: Service = Service::Deployer;

/// Settings of the deployer.
#[derive(Debug, Clone)]
pub struct DeployerConfig {
    /// RAM budget for apps on a device that has not reported its own.
    pub default_app_ram_bytes: u32,
    /// How long a step (transfer, deploy, stop) may go without an answer before it is sent
    /// again; doubled on each retry, up to a minute.
    pub step_timeout: Duration,
    /// Deliveries of one version to one device that may fail (digest mismatch) before the
    /// deployment is recorded as failed.
    pub max_delivery_attempts: u32,
    /// Only modules with a signed release by a trusted publisher are accepted.
    pub require_signed: bool,
    /// Replicas, health endpoint, drain grace.
    pub runtime: RuntimeOptions,
}

impl Default for DeployerConfig {
    fn default() -> Self {
        Self {
            default_app_ram_bytes: 256 * 1024,
            step_timeout: Duration::from_secs(5),
            max_delivery_attempts: 3,
            require_signed: false,
            runtime: RuntimeOptions::default(),
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployerError {
    /// The service runtime failed (log, follow, commands, health endpoint).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The module store could not be opened.
    #[error(transparent)]
    Modules(#[from] ModuleError),
    /// The read model could not be opened.
    #[error(transparent)]
    ReadModel(#[from] wasmbed_eventlog::ReadModelError),
    /// Subscribing failed.
    #[error("subscribing: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The lease could not be set up.
    #[error(transparent)]
    Lease(wasmbed_service::LeaseError),
}

/// State shared by the command handlers and the reconciler.
pub(crate) struct Deployer {
    pub(crate) log: EventLog,
    pub(crate) modules: ModuleStore,
    pub(crate) fleet: Mutex<Fleet>,
    pub(crate) touched: mpsc::UnboundedSender<wasmbed_fleet::Touched>,
    pub(crate) config: DeployerConfig,
}

impl Deployer {
    pub(crate) fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (up to [`CATCH_UP`]) until the view holds every event of `aggregate` in the log,
    /// so a command answered by another instance a moment ago is seen by this one. An
    /// instance still behind after that (one just back from a pause, re-reading the log)
    /// refuses as unavailable rather than decide on a stale view: "no such application" from
    /// an instance that has not yet read its creation would be wrong, and retrying is right.
    pub(crate) async fn catch_up(
        &self,
        aggregate: &wasmbed_schemas::AggregateId,
    ) -> Result<(), wasmbed_schemas::command::CommandError> {
        use wasmbed_schemas::command::{CommandError, ErrorCode};
        let last = self
            .log
            .last_version(aggregate)
            .await
            .map_err(|e| CommandError {
                code: ErrorCode::Unavailable,
                message: format!("event log: {e}"),
            })?;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let seen = self.fleet().version(aggregate);
            if seen >= last {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CommandError {
                    code: ErrorCode::Unavailable,
                    message: format!(
                        "this deployer instance is still reading the log ({aggregate:?} at \
                         {seen} of {last}); try again"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Appends `event` and applies it at once, so the next decision sees it even before the
    /// log follower does; tells the reconciler what changed.
    pub(crate) async fn record(
        &self,
        expected: ExpectedVersion,
        event: Event,
    ) -> Result<u64, AppendError> {
        let envelope = EventEnvelope::new(event);
        let appended = self.log.append(expected, &envelope).await?;
        let touched = self.fleet().apply(&StoredEvent {
            sequence: appended.sequence,
            envelope,
            trace: wasmbed_bus::trace::current_traceparent(),
        });
        let _ = self.touched.send(touched);
        Ok(appended.sequence)
    }
}

/// The aggregates the deployer's view is folded from.
fn followed_subjects() -> Vec<String> {
    [
        AggregateKind::Device,
        AggregateKind::Application,
        AggregateKind::Deployment,
        AggregateKind::Rollout,
        AggregateKind::Trust,
    ]
    .into_iter()
    .map(subject::events_of_kind)
    .collect()
}

/// Runs the service until `shutdown` completes: catches up on history, then answers commands
/// and reconciles.
pub async fn run(
    client: async_nats::Client,
    config: DeployerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DeployerError> {
    let mut runtime = Runtime::start(client.clone(), SERVICE.as_str(), &config.runtime).await?;
    let log = runtime.log().clone();
    let modules = ModuleStore::open(log.jetstream()).await?;
    let statuses = log
        .read_model::<wasmbed_schemas::device_message::DeploymentStatus>(
            subject::DEPLOYMENTS_BUCKET,
        )
        .await?;
    let mut fleet = Fleet::default();
    let (follow, _) = runtime
        .restore_snapshotted(followed_subjects(), &mut fleet, |fleet, event| {
            fleet.apply_followed(event);
        })
        .await?;
    info!(
        devices = fleet.devices.len(),
        apps = fleet.apps.len(),
        deployments = fleet.deployment_count(),
        "history loaded"
    );

    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let state = Arc::new(Deployer {
        log: log.clone(),
        modules,
        fleet: Mutex::new(fleet),
        touched: touched_tx.clone(),
        config,
    });
    // Every instance folds the log (its commands read the view); only the holder of the lease
    // reconciles, talks to devices and drives rollouts.
    let folding = state.clone();
    runtime.spawn(async move {
        let mut follow = follow;
        while let Some(next) = follow.next().await {
            match next {
                Ok((event, _)) => {
                    let touched = folding.fleet().apply_followed(&event);
                    let _ = touched_tx.send(touched);
                }
                Err(e) => warn!(error = %e, "event skipped"),
            }
        }
        warn!("event log follow ended");
    });
    let (position, snapshot) = (state.clone(), state.clone());
    runtime.keep_snapshotting::<Fleet>(
        move || position.fleet().followed,
        move || {
            let fleet = snapshot.fleet();
            Ok((fleet.followed, wasmbed_service::encode_snapshot(&*fleet)?))
        },
    );
    let holder = wasmbed_service::holder_name(SERVICE.as_str());
    let lease = Lease::start(&log, SERVICE.as_str(), holder)
        .await
        .map_err(DeployerError::Lease)?;
    runtime.spawn(lead(
        state.clone(),
        client.clone(),
        statuses,
        touched_rx,
        lease.watch(),
    ));
    runtime.serve(handlers::router(), state, shutdown).await?;
    lease.release().await;
    Ok(())
}

/// While this instance holds the lease: subscribes to the devices' uplinks and reconciles;
/// when the lease ends, stops at once and waits to hold it again (starting afresh: what is in
/// flight is re-derived from the log and the devices' answers).
async fn lead(
    state: Arc<Deployer>,
    client: async_nats::Client,
    statuses: wasmbed_eventlog::ReadModel<wasmbed_schemas::device_message::DeploymentStatus>,
    mut touched: mpsc::UnboundedReceiver<wasmbed_fleet::Touched>,
    mut term: tokio::sync::watch::Receiver<Option<u64>>,
) {
    loop {
        // Not acting: what changes meanwhile is dropped (a reconciler starts from the whole
        // view), so a stale backlog (old session changes among it) cannot void what the new
        // reconciler sends.
        while term.borrow().is_none() {
            tokio::select! {
                changed = term.changed() => if changed.is_err() { return },
                t = touched.recv() => if t.is_none() { return },
            }
        }
        while touched.try_recv().is_ok() {}
        let taken = *term.borrow();
        info!(term = ?taken, "deployer lease held; reconciling");
        let uplink = match client
            .queue_subscribe(subject::DEVICE_UPLINK_ALL, "deployer".to_owned())
            .await
        {
            Ok(uplink) => uplink,
            Err(e) => {
                warn!(error = %e, "subscribing to the uplinks failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let reconciler =
            reconciler::Reconciler::new(state.clone(), client.clone(), statuses.clone());
        // Dropped, not asked, when the lease ends: an append or a send it is waiting on must
        // not complete after another instance may have started.
        tokio::select! {
            () = reconciler.run(uplink, &mut touched) => {}
            () = wasmbed_service::lost(term.clone()) => {}
        }
        info!("deployer lease ended; reconciling stopped");
    }
}
