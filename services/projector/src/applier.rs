//! Server-side apply of the projection's changes: spec and status of each resource under the
//! field manager `wasmbed-projector`, deletes for what the log removed. Conflicts (409),
//! throttling (429) and server errors (5xx) are errors the projection retries with back-off;
//! other refusals are logged and skipped, so one invalid object cannot stall the log.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::crd::{Application, Device, Gateway};
use crate::projection::{Change, Key};

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

static APPLY: std::sync::LazyLock<wasmbed_metrics::Histograms<Outcome>> =
    std::sync::LazyLock::new(|| {
        wasmbed_metrics::durations(
            "projection_apply",
            "Time to carry one change to the Kubernetes API (server-side apply, status, delete); \
             outcome done (applied, or refused for good and skipped) or retry.",
            wasmbed_metrics::traced_request_buckets,
        )
    });

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "wasmbed-projector";

/// A change the API server did not take; the event is retried.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {kind}/{name}: {source}")]
pub struct ApplyError {
    verb: &'static str,
    kind: String,
    name: String,
    source: Box<kube::Error>,
}

/// Applies changes to one namespace.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    namespace: String,
}

fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            let code = status.code;
            code == 409 || code == 429 || code >= 500
        }
        // Transport trouble: the server may come back.
        _ => true,
    }
}

impl Applier {
    /// An applier over `client` into `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// Carries out one change.
    pub async fn apply(&self, change: &Change) -> Result<(), ApplyError> {
        let started = std::time::Instant::now();
        let result = self.apply_change(change).await;
        let outcome = if result.is_ok() { "done" } else { "retry" };
        let histogram = APPLY.get_or_create(&Outcome { outcome });
        wasmbed_metrics::observe(&histogram, started.elapsed(), None);
        result
    }

    async fn apply_change(&self, change: &Change) -> Result<(), ApplyError> {
        match change {
            Change::Device(d) => self.apply_one(d.as_ref()).await,
            Change::Application(a) => self.apply_one(a.as_ref()).await,
            Change::Gateway(g) => self.apply_one(g.as_ref()).await,
            Change::Delete(Key::Device(id)) => self.delete::<Device>(id.as_str()).await,
            Change::Delete(Key::Application(id)) => self.delete::<Application>(id.as_str()).await,
            Change::Delete(Key::Gateway(id)) => self.delete::<Gateway>(id.as_str()).await,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn apply_one<K>(&self, object: &K) -> Result<(), ApplyError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let name = object.name_any();
        let mut body = serde_json::to_value(object).unwrap_or(Value::Null);
        let status = body.as_object_mut().and_then(|o| o.remove("status"));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.api::<K>();
        let kind = K::kind(&()).into_owned();
        self.outcome(
            "apply",
            &kind,
            &name,
            api.patch(&name, &params, &Patch::Apply(&body))
                .await
                .map(drop),
        )?;
        if let Some(status) = status {
            let body = json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "metadata": { "name": name },
                "status": status,
            });
            self.outcome(
                "apply status of",
                &kind,
                &name,
                api.patch_status(&name, &params, &Patch::Apply(&body))
                    .await
                    .map(drop),
            )?;
        }
        Ok(())
    }

    async fn delete<K>(&self, name: &str) -> Result<(), ApplyError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        match self.api::<K>().delete(name, &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => self.outcome("delete", &K::kind(&()), name, other.map(drop)),
        }
    }

    fn outcome(
        &self,
        verb: &'static str,
        kind: &str,
        name: &str,
        result: Result<(), kube::Error>,
    ) -> Result<(), ApplyError> {
        match result {
            Ok(()) => {
                debug!(verb, name, "applied");
                Ok(())
            }
            Err(source) if retryable(&source) => Err(ApplyError {
                verb,
                kind: kind.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            }),
            Err(e) => {
                warn!(verb, kind, name, error = %e, "refused by the API server; skipped");
                Ok(())
            }
        }
    }
}
