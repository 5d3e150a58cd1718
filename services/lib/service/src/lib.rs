//! The one shape of every Wasmbed service.
//!
//! ```text
//! start (open the log, bind /health and /ready)
//!   → restore (fold what the log holds into the service's read model, from its last snapshot)
//!   → keep following (fold each new event) + background tasks
//!   → serve commands (or just run) until shutdown
//!   → drain (commands being handled are answered, up to a grace period)
//!   → stop background tasks
//! ```
//!
//! A service supplies its fold and its handlers; everything else is here, once.

mod health;
mod lease;
mod snapshots;

pub use lease::{
    LEASE_TTL, Lease, LeaseError, held_unless_stopped, holder_name, lost, stopped_or_lost,
};
pub use snapshots::{RestoreReport, SnapshotPolicy, SnapshotWriter, encode as encode_snapshot};
pub use wasmbed_eventlog::snapshot::Snapshotted;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};
use wasmbed_bus::Router;
use wasmbed_eventlog::{EventLog, Follow, LogOptions, StoredEvent};

/// How a service runs, whichever service it is.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Replicas of the streams and buckets the service creates (3 in a cluster).
    pub replicas: usize,
    /// Where to answer `GET /health` (NATS connected) and `GET /ready` (caught up and serving),
    /// for a service without HTTP of its own.
    pub health_listen: Option<SocketAddr>,
    /// How long commands being handled at shutdown may take to finish.
    pub drain_grace: Duration,
    /// When the read model's snapshot is written.
    pub snapshots: SnapshotPolicy,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            health_listen: None,
            drain_grace: wasmbed_bus::DEFAULT_DRAIN_GRACE,
            snapshots: SnapshotPolicy::default(),
        }
    }
}

/// Why a service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The event log could not be opened.
    #[error(transparent)]
    Log(#[from] wasmbed_eventlog::SetupError),
    /// Following the log failed.
    #[error(transparent)]
    Read(#[from] wasmbed_eventlog::ReadError),
    /// Subscribing to commands failed.
    #[error("subscribing to commands: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The health endpoint could not be bound.
    #[error("binding the health endpoint {addr}: {source}")]
    Health {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running service's shared machinery: its log, its background tasks, its readiness.
pub struct Runtime {
    service: &'static str,
    client: async_nats::Client,
    log: EventLog,
    options: RuntimeOptions,
    background: JoinSet<()>,
    ready: Arc<AtomicBool>,
    health_addr: Option<SocketAddr>,
    /// The sequence of the read model's last snapshot, read or written.
    snapshotted: u64,
}

impl Runtime {
    /// Opens the event log for the service called `service` and, when asked, starts answering `/health` and `/ready` (not ready
    /// until [`Runtime::serve`] or [`Runtime::run_until`]).
    pub async fn start(
        client: async_nats::Client,
        service: &'static str,
        options: &RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let log = EventLog::open(
            client.clone(),
            &LogOptions {
                replicas: options.replicas,
            },
        )
        .await?;
        let ready = Arc::new(AtomicBool::new(false));
        let mut background = JoinSet::new();
        let mut health_addr = None;
        if let Some(addr) = options.health_listen {
            let bound = async {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                Ok::<_, std::io::Error>((listener, local))
            };
            let (listener, local) = bound
                .await
                .map_err(|source| RuntimeError::Health { addr, source })?;
            health_addr = Some(local);
            background.spawn(health::serve(listener, client.clone(), ready.clone()));
        }
        Ok(Self {
            service,
            client,
            log,
            options: options.clone(),
            background,
            ready,
            health_addr,
            snapshotted: 0,
        })
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The NATS connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Where `/health` and `/ready` are answered, if they are.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// How this service runs.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Folds every event the log holds on `subjects` (all when empty) into `model`, and
    /// returns the follow positioned after them, for [`Runtime::keep_following`].
    pub async fn restore<M>(
        &self,
        subjects: Vec<String>,
        model: &mut M,
        mut apply: impl FnMut(&mut M, &StoredEvent),
    ) -> Result<Follow, RuntimeError> {
        let mut follow = self.log.follow(subjects).await?;
        let folded = follow.catch_up(|event| apply(model, event)).await;
        info!(
            service = self.service,
            events = folded,
            "read model restored"
        );
        Ok(follow)
    }

    /// Keeps folding new events with `apply` until the service stops.
    pub fn keep_following(
        &mut self,
        follow: Follow,
        apply: impl FnMut(&StoredEvent) + Send + 'static,
    ) {
        let span = info_span!("follow", service = self.service);
        self.background
            .spawn(follow.keep_applying(apply).instrument(span));
    }

    /// Says the service is ready (caught up and serving), for a service whose serving loop is
    /// its own; [`Runtime::serve`] and [`Runtime::run_until`] say it themselves.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Runs `task` beside the service until it stops.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.spawn(task);
    }

    /// Serves `router`'s commands until `shutdown` completes, answers the commands being
    /// handled then (up to the grace period), and stops everything else.
    pub async fn serve<S: Send + Sync + 'static>(
        self,
        router: Router<S>,
        state: Arc<S>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        info!(service = self.service, "serving");
        let served = wasmbed_bus::serve(
            self.client.clone(),
            router,
            state,
            shutdown,
            self.options.drain_grace,
            || self.mark_ready(),
        )
        .await;
        self.stop().await;
        served?;
        Ok(())
    }

    /// Serves the commands of `router()` only while this instance holds `lease`, until
    /// `shutdown` completes: an instance without the lease does not even subscribe, so every
    /// command reaches the holder.
    ///
    /// Ready once it serves, or once the lease's bucket said another instance holds it (a
    /// standby that takes over by itself): never before the first answer, when a command
    /// would find nobody.
    pub async fn serve_while_held<S: Send + Sync + 'static>(
        mut self,
        router: impl Fn() -> Router<S>,
        state: Arc<S>,
        lease: &Lease,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RuntimeError> {
        let mut term = lease.watch();
        let standby = {
            let (mut contended, term, ready) =
                (lease.contended(), lease.watch(), self.ready.clone());
            async move {
                if contended.wait_for(|answered| *answered).await.is_ok() && term.borrow().is_none()
                {
                    ready.store(true, Ordering::Relaxed);
                }
            }
        };
        self.background.spawn(standby);
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let serving = async {
            loop {
                if !held_unless_stopped(&mut stop, &mut term).await {
                    return Ok(());
                }
                info!(service = self.service, term = ?*term.borrow(), "lease held; serving");
                let ended = stopped_or_lost(stop.clone(), term.clone());
                wasmbed_bus::serve(
                    self.client.clone(),
                    router(),
                    state.clone(),
                    ended,
                    self.options.drain_grace,
                    || self.mark_ready(),
                )
                .await?;
                info!(service = self.service, "lease ended; not serving");
            }
        };
        let (_, served): ((), Result<(), RuntimeError>) = tokio::join!(
            async {
                shutdown.await;
                let _ = stop_tx.send(true);
            },
            serving
        );
        self.stop().await;
        served
    }

    /// Runs the background tasks until `shutdown` completes (a service without commands).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        self.mark_ready();
        info!(service = self.service, "running");
        shutdown.await;
        self.stop().await;
    }

    /// Stops the background tasks (followers, timers, the health endpoint).
    pub async fn stop(mut self) {
        self.ready.store(false, Ordering::Relaxed);
        self.background.shutdown().await;
        info!(service = self.service, "stopped");
    }
}
