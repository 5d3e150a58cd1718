//! Applications as the tests make them: the module stored, the application created, deployed.

use wasmbed_bus::{CallError, call};
use wasmbed_eventlog::EventLog;
use wasmbed_eventlog::modules::upload_module;
use wasmbed_schemas::AppId;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{CreateApplication, DeployApplication};
use wasmbed_schemas::event::Target;
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::release::SignedRelease;

use crate::T;

/// Stores `module` and creates application `app` from it for `target` (configuration `lab`),
/// signed by `release` when given. Not deployed yet.
pub async fn create_application(
    client: &async_nats::Client,
    log: &EventLog,
    app: &AppId,
    module: &[u8],
    target: Target,
    limits: Limits,
    release: Option<SignedRelease>,
) -> Result<(), CallError> {
    let sha = upload_module(log.jetstream(), module)
        .await
        .expect("the module store takes the module");
    let create = CreateApplication {
        app_id: app.clone(),
        name: app.to_string(),
        module_sha256: sha,
        target,
        config: Blob(b"lab".to_vec()),
        limits,
        release,
    };
    call(client, &create, T).await.map(drop)
}

/// Asks the deployer to deploy `app` to its target.
pub async fn deploy_application(client: &async_nats::Client, app: &AppId) -> Result<(), CallError> {
    let deploy = DeployApplication {
        app_id: app.clone(),
    };
    call(client, &deploy, T).await.map(drop)
}
