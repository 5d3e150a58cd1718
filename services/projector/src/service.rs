//! The projector service: one durable consumer on the whole log, rendering each event's
//! resources and applying them. It acknowledges an event only once every change it caused was
//! applied, so a restart resumes after the last applied event without gaps.

use std::future::Future;

use tracing::info;
use wasmbed_eventlog::StoredEvent;
use wasmbed_service::{Runtime, RuntimeError, RuntimeOptions};

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
}

/// Runs until `shutdown` completes.
pub async fn run(
    nats: async_nats::Client,
    kube: kube::Client,
    config: ProjectorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectorError> {
    let runtime = Runtime::start(nats, "projector", &config.runtime).await?;
    let log = runtime.log();
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
    info!(resumed_after = applied, namespace = %config.namespace, "projector ready");
    runtime.mark_ready();
    let applier = Applier::new(kube, config.namespace);
    let projected = durable
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
            shutdown,
        )
        .await;
    runtime.stop().await;
    projected?;
    Ok(())
}
