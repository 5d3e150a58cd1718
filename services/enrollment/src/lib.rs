//! The enrollment service: device identities, the CA, and every enrollment decision.
//!
//! It answers `wasmbed.cmd.v1.enrollment.*` and appends its decisions to the event log
//! (`DeviceRegistered`, `DeviceEnrolled`, `EnrollmentRefused`, `DeviceDecommissioned`). Its
//! view of the devices is rebuilt from the log at start; it keeps no other store.

mod ca;
mod handlers;
mod pairing;
mod registry;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;
use wasmbed_eventlog::EventLog;
use wasmbed_schemas::AggregateKind;
use wasmbed_schemas::subject::{self, Service};
use wasmbed_service::{Runtime, RuntimeError, RuntimeOptions};

pub use ca::{CaError, CertificateAuthority, IssuedCertificate};
pub use registry::{DeviceRecord, Registry};

/// Settings of the enrollment service.
#[derive(Debug, Clone)]
pub struct EnrollmentConfig {
    /// Where the CA key and certificate are kept (a Secret mount in the cluster).
    pub ca_dir: PathBuf,
    /// How long a gateway certificate is valid; gateways renew at two thirds of it.
    pub gateway_certificate_validity: Duration,
    /// The longest pairing window an operator may open.
    pub max_pairing_window: Duration,
    /// Replicas, health endpoint, drain grace.
    pub runtime: RuntimeOptions,
    /// Refusals are audited per gateway in windows of this length: the first `audit_in_full`
    /// of each reason from each source in full, the rest counted (`RefusalsCounted`).
    pub audit_window: Duration,
    /// See `audit_window`.
    pub audit_in_full: u32,
}

impl EnrollmentConfig {
    /// Defaults with the CA in `ca_dir`: 30-day gateway certificates, pairing windows of at
    /// most an hour.
    pub fn new(ca_dir: PathBuf) -> Self {
        Self {
            ca_dir,
            gateway_certificate_validity: Duration::from_secs(30 * 24 * 3600),
            max_pairing_window: Duration::from_secs(3600),
            runtime: RuntimeOptions::default(),
            audit_window: Duration::from_secs(10),
            audit_in_full: 3,
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// The service runtime failed (log, follow, commands, health endpoint).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Shared state of the handlers.
pub(crate) struct Enrollment {
    pub(crate) client: async_nats::Client,
    pub(crate) log: EventLog,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) pairing: Mutex<pairing::PairingWindows>,
    /// Refusals, counted per gateway.
    pub(crate) refusals: wasmbed_eventlog::refusals::RefusalAudit,
    pub(crate) ca: CertificateAuthority,
    pub(crate) config: EnrollmentConfig,
}

impl Enrollment {
    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn pairing(&self) -> std::sync::MutexGuard<'_, pairing::PairingWindows> {
        self.pairing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Folds a `PairingWindowOpened` into the open windows.
fn pairing_window(windows: &mut pairing::PairingWindows, event: &wasmbed_schemas::event::Event) {
    if let wasmbed_schemas::event::Event::PairingWindowOpened(e) = event {
        windows.open_digest(e.token_sha256.0, e.expires_at);
    }
}

/// Runs the service until `shutdown` completes: loads the CA, catches up on device history,
/// then answers commands while following new device events.
pub async fn run(
    client: async_nats::Client,
    config: EnrollmentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EnrollmentError> {
    let mut runtime = Runtime::start(client.clone(), SERVICE.as_str(), &config.runtime).await?;
    let ca = CertificateAuthority::load_or_create(&config.ca_dir)?;
    let mut registry = Registry::default();
    let (follow, _) = runtime
        .restore_snapshotted(
            vec![
                subject::events_of_kind(AggregateKind::Device),
                subject::events_of_kind(AggregateKind::Pairing),
            ],
            &mut registry,
            Registry::apply_followed,
        )
        .await?;
    info!(devices = registry.len(), "device history loaded");
    let mut pairing = pairing::PairingWindows::default();
    let opened = runtime
        .log()
        .read(&wasmbed_schemas::AggregateId::Pairing)
        .await
        .map_err(RuntimeError::from)?;
    for stored in &opened {
        pairing_window(&mut pairing, &stored.envelope.event);
    }

    let state = Arc::new(Enrollment {
        client,
        log: runtime.log().clone(),
        registry: Mutex::new(registry),
        pairing: Mutex::new(pairing),
        refusals: wasmbed_eventlog::refusals::RefusalAudit::new(
            config.audit_window,
            config.audit_in_full,
        ),
        ca,
        config,
    });
    let following = state.clone();
    runtime.keep_following(follow, move |event| {
        following.registry().apply_followed(event);
        pairing_window(&mut following.pairing(), &event.envelope.event);
    });
    let (position, snapshot) = (state.clone(), state.clone());
    runtime.keep_snapshotting::<Registry>(
        move || position.registry().followed(),
        move || {
            let registry = snapshot.registry();
            Ok((
                registry.followed(),
                wasmbed_service::encode_snapshot(&*registry)?,
            ))
        },
    );
    let auditor = state.clone();
    runtime.spawn(async move { auditor.refusals.close_windows(&auditor.log).await });
    runtime.serve(handlers::router(), state, shutdown).await?;
    Ok(())
}

/// The service this crate answers for.
pub const SERVICE: Service = Service::Enrollment;
