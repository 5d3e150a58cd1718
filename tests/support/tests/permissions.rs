//! The test server runs the project's NATS users (`nats/permissions.conf`): a service may use
//! the subjects it needs and nothing else, and a wrong password gets nowhere.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use wasmbed_local_nats::connect_options;
use wasmbed_schemas::permissions::Principal;
use wasmbed_test_support::NatsServer;

/// `principal`'s connection, and the errors the server sends it.
async fn connect_as(
    nats: &NatsServer,
    principal: Principal,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (errors, received) = mpsc::unbounded_channel();
    let client = connect_options(principal, Some(nats.users().password(principal)))
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    (client, received)
}

/// The next error the server sent, within a second.
async fn next_error(errors: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(1), errors.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_service_cannot_publish_or_subscribe_outside_its_permissions() {
    let nats = NatsServer::start().await.unwrap();
    // No credentials: the operator, who sees everything.
    let operator = nats.client().await.unwrap();
    let mut everything = operator.subscribe("wasmbed.>").await.unwrap();
    operator.flush().await.unwrap();

    let (gateway, mut errors) = connect_as(&nats, Principal::Gateway).await;
    // Allowed: telemetry and its own kinds of events.
    gateway
        .publish("wasmbed.telemetry.dev-1.app", "ok".into())
        .await
        .unwrap();
    // Not allowed: another service's events, and a command it does not call.
    for subject in [
        "wasmbed.events.v1.application.evil",
        "wasmbed.cmd.v1.deployer.delete_application",
        "wasmbed.device.v1.downlink.dev-1",
    ] {
        gateway.publish(subject, "forged".into()).await.unwrap();
        gateway.flush().await.unwrap();
        let error = next_error(&mut errors).await.unwrap_or_default();
        assert!(
            error.contains("Permissions Violation for Publish") && error.contains(subject),
            "{subject}: {error:?}"
        );
    }
    // Not allowed: answering the deployer's commands.
    let _sub = gateway
        .subscribe("wasmbed.cmd.v1.deployer.*")
        .await
        .unwrap();
    let error = next_error(&mut errors).await.unwrap_or_default();
    assert!(
        error.contains("Permissions Violation for Subscription"),
        "{error:?}"
    );
    // Only the allowed message reached the bus.
    let first = tokio::time::timeout(Duration::from_secs(1), everything.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.subject.as_str(), "wasmbed.telemetry.dev-1.app");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), everything.next())
            .await
            .is_err()
    );

    // The projector only reads: it cannot record any event, nor delete the log.
    let js = async_nats::jetstream::new(operator.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "WASMBED_EVENTS".into(),
        subjects: vec!["wasmbed.events.v1.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (projector, mut errors) = connect_as(&nats, Principal::Projector).await;
    projector
        .publish("wasmbed.events.v1.device.dev-1", "forged".into())
        .await
        .unwrap();
    projector.flush().await.unwrap();
    assert!(
        next_error(&mut errors)
            .await
            .is_some_and(|e| e.contains("Permissions Violation")),
    );
    let projector_js = async_nats::jetstream::new(projector.clone());
    assert!(projector_js.delete_stream("WASMBED_EVENTS").await.is_err());
    let mut info = js.get_stream("WASMBED_EVENTS").await.unwrap();
    assert_eq!(info.info().await.unwrap().state.messages, 0);

    // A service's reply prefix is its own: the telemetry service cannot read the gateway's.
    let (telemetry, mut errors) = connect_as(&nats, Principal::Telemetry).await;
    let _sub = telemetry.subscribe("_INBOX_gateway.>").await.unwrap();
    assert!(
        next_error(&mut errors)
            .await
            .is_some_and(|e| e.contains("Permissions Violation for Subscription")),
    );
    // The server's log names each refusal (what the end-to-end tests look for).
    let log = nats.log();
    assert!(
        log.contains("Publish Violation") && log.contains("wasmbed.events.v1.application.evil"),
        "{log}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused() {
    let nats = NatsServer::start().await.unwrap();
    let refused = connect_options(Principal::Deployer, Some("not-the-password"))
        .connect(nats.url())
        .await;
    assert!(refused.is_err());
    // The right one gets in, as the deployer.
    let (deployer, _errors) = connect_as(&nats, Principal::Deployer).await;
    deployer.flush().await.unwrap();
    // Credentials in the URL work too (how the CLI reaches a cluster), with that user's rights
    // (async-nats ignores them; `with_url_credentials` reads them).
    let url = nats.url().replace(
        "nats://",
        &format!(
            "nats://deployer:{}@",
            nats.users().password(Principal::Deployer)
        ),
    );
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let by_url = wasmbed_local_nats::with_url_credentials(async_nats::ConnectOptions::new(), &url)
        .event_callback(move |event| {
            let errors = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        })
        .connect(&url)
        .await
        .unwrap();
    by_url
        .publish("wasmbed.telemetry.dev-1.app", "forged".into())
        .await
        .unwrap();
    by_url.flush().await.unwrap();
    assert!(
        next_error(&mut errors)
            .await
            .is_some_and(|e| e.contains("Permissions Violation for Publish")),
        "the URL's user was not the deployer"
    );
}
