//! The projector service: one durable consumer on the whole log, rendering each event's
//! resources and applying them. It acknowledges an event only once every change it caused was
//! applied, so a restart resumes after the last applied event without gaps.

use std::future::Future;

use tokio::sync::watch;
use tracing::info;
use wasmbed_eventlog::StoredEvent;
use wasmbed_service::{
    Lease, LeaseError, Runtime, RuntimeError, RuntimeOptions, held_unless_stopped, stopped_or_lost,
};

use crate::applier::{Applier, ApplyError};
use crate::projection::Projection;

/// Settings of the projector.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// The namespace the resources live in.
    pub namespace: String,
    /// The durable consumer's name (its position in the log).
    pub consumer: String,
    /// Replicas, health endpoint.
    pub runtime: RuntimeOptions,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            namespace: "wasmbed".into(),
            consumer: "projector".into(),
            runtime: RuntimeOptions::default(),
        }
    }
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The service runtime failed (log, health endpoint).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading history failed.
    #[error(transparent)]
    Read(#[from] wasmbed_eventlog::ReadError),
    /// The durable consumer failed.
    #[error(transparent)]
    Projection(#[from] wasmbed_eventlog::ProjectionError),
    /// The lease could not be set up.
    #[error(transparent)]
    Lease(LeaseError),
}

/// Runs until `shutdown` completes. Any number of instances may run: only the holder of the
/// projector's lease reads the durable consumer and applies (one applier keeps the log's
/// order); another takes over from the consumer's acknowledged position when it goes.
pub async fn run(
    nats: async_nats::Client,
    kube: kube::Client,
    config: ProjectorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let runtime = Runtime::start(nats, "projector", &config.runtime).await?;
    let holder = wasmbed_service::holder_name("projector");
    let lease = Lease::start(runtime.log(), "projector", holder)
        .await
        .map_err(ProjectorError::Lease)?;
    runtime.mark_ready();
    let (stop_tx, stop) = watch::channel(false);
    let (_, projected) = tokio::join!(
        async {
            shutdown.await;
            let _ = stop_tx.send(true);
        },
        project_while_held(&runtime, &config, kube, lease.watch(), stop)
    );
    lease.release().await;
    runtime.stop().await;
    projected
}

async fn project_while_held(
    runtime: &Runtime,
    config: &ProjectorConfig,
    kube: kube::Client,
    mut term: watch::Receiver<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProjectorError> {
    let log = runtime.log();
    let applier = Applier::new(kube, config.namespace.clone());
    loop {
        if !held_unless_stopped(&mut stop, &mut term).await {
            return Ok(());
        }
        let mut durable = log.projection(&config.consumer, Vec::new()).await?;
        let applied = durable.acknowledged().await?;
        let mut model = Projection::new(config.namespace.clone());
        if applied > 0 {
            // The resources already show everything up to `applied`: rebuild the view to there.
            let mut history = log.follow(Vec::new()).await?;
            while let Some(next) = history.next().await {
                let (event, _) = next?;
                model.fold(&event);
                if event.sequence >= applied {
                    break;
                }
            }
        }
        info!(resumed_after = applied, namespace = %config.namespace, "projector lease held; applying");
        durable
            .run(
                |event: &StoredEvent| {
                    let changes = model.apply(event);
                    let applier = applier.clone();
                    async move {
                        for change in changes {
                            applier.apply(&change).await?;
                        }
                        Ok::<(), ApplyError>(())
                    }
                },
                stopped_or_lost(stop.clone(), term.clone()),
            )
            .await?;
        info!("projector stopped applying");
    }
}
