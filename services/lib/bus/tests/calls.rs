//! Request/reply against a real nats-server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use wasmbed_bus::{CallError, Router, call, serve};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::command::*;
use wasmbed_schemas::subject::Service;
use wasmbed_test_support::NatsServer;

const TIMEOUT: Duration = Duration::from_secs(2);

async fn start_enrollment_stub(client: async_nats::Client) {
    let router = Router::<()>::new(Service::Enrollment)
        .route(async |_, _: GetCaCertificate| {
            Ok(CaCertificate {
                certificate_pem: "PEM".into(),
            })
        })
        .route(async |_, c: DecommissionDevice| {
            Err(CommandError {
                code: ErrorCode::NotFound,
                message: format!("no device {}", c.device_id),
            })
        });
    serving(
        client,
        router,
        Arc::new(()),
        std::future::pending(),
        wasmbed_bus::DEFAULT_DRAIN_GRACE,
    )
    .await;
}

/// Serves `router` in the background and returns once the server has its subscription.
async fn serving<S: Send + Sync + 'static>(
    client: async_nats::Client,
    router: Router<S>,
    state: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> tokio::task::JoinHandle<Result<usize, async_nats::SubscribeError>> {
    let (subscribed, in_place) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(serve(client, router, state, shutdown, grace, move || {
        let _ = subscribed.send(());
    }));
    in_place.await.expect("serve subscribed");
    task
}

#[tokio::test]
async fn typed_replies_refusals_and_transport_failures_are_told_apart() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    start_enrollment_stub(client.clone()).await;

    let ca = call(&client, &GetCaCertificate {}, TIMEOUT).await.unwrap();
    assert_eq!(ca.certificate_pem, "PEM");

    let refused = call(
        &client,
        &DecommissionDevice {
            device_id: DeviceId::new("ghost").unwrap(),
            reason: "x".into(),
        },
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, CallError::Refused(e) if e.code == ErrorCode::NotFound && e.message.contains("ghost")),
        "{refused}"
    );

    // Nobody serves the renode-manager: a transport failure, not a refusal.
    let nobody = call(
        &client,
        &StopEmulator {
            device_id: DeviceId::new("d").unwrap(),
        },
        TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(matches!(nobody, CallError::Transport { .. }), "{nobody}");
}

#[tokio::test]
async fn bad_bodies_and_unknown_commands_get_a_clear_invalid_request() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    start_enrollment_stub(client.clone()).await;

    let answer = |subject: &'static str, body: &'static str| {
        let client = client.clone();
        async move {
            let reply = client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<Reply<serde_json::Value>>(&reply.payload)
                .unwrap()
                .into_result()
                .unwrap_err()
        }
    };
    let bad = answer(
        "wasmbed.cmd.v1.enrollment.decommission_device",
        r#"{"device_id": "Not.Valid", "reason": "x"}"#,
    )
    .await;
    assert_eq!(bad.code, ErrorCode::InvalidRequest);
    assert!(
        bad.message.contains("decommission_device"),
        "{}",
        bad.message
    );

    let missing = answer(
        "wasmbed.cmd.v1.enrollment.decommission_device",
        r#"{"device_id": "d1"}"#,
    )
    .await;
    assert!(missing.message.contains("reason"), "{}", missing.message);

    let unknown = answer("wasmbed.cmd.v1.enrollment.make_coffee", "{}").await;
    assert_eq!(unknown.code, ErrorCode::InvalidRequest);
    assert!(unknown.message.contains("make_coffee"));

    // The service is still answering after all that.
    assert!(call(&client, &GetCaCertificate {}, TIMEOUT).await.is_ok());
}

/// A CA stub whose handler says when it starts and then takes `takes` to answer.
fn slow_router(takes: Duration) -> Router<tokio::sync::Notify> {
    Router::new(Service::Enrollment).route(
        move |started: Arc<tokio::sync::Notify>, _: GetCaCertificate| async move {
            started.notify_one();
            tokio::time::sleep(takes).await;
            Ok(CaCertificate {
                certificate_pem: "PEM".into(),
            })
        },
    )
}

#[tokio::test]
async fn a_command_being_handled_when_the_service_stops_is_still_answered() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = serving(
        client.clone(),
        slow_router(Duration::from_millis(500)),
        started.clone(),
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    )
    .await;

    let caller = client.clone();
    let in_flight =
        tokio::spawn(
            async move { call(&caller, &GetCaCertificate {}, Duration::from_secs(5)).await },
        );
    started.notified().await;
    stop.send(()).unwrap();
    let answered = in_flight.await.unwrap().unwrap();
    assert_eq!(answered.certificate_pem, "PEM");
    assert_eq!(served.await.unwrap().unwrap(), 0, "nothing was cut off");

    // Stopped: nobody takes commands any more.
    let after = call(&client, &GetCaCertificate {}, Duration::from_millis(300)).await;
    assert!(
        matches!(after, Err(CallError::Transport { .. })),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_command_that_outlives_the_grace_period_is_dropped_and_counted() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = serving(
        client.clone(),
        slow_router(Duration::from_secs(60)),
        started.clone(),
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(200),
    )
    .await;
    let caller = client.clone();
    let in_flight =
        tokio::spawn(
            async move { call(&caller, &GetCaCertificate {}, Duration::from_secs(2)).await },
        );
    started.notified().await;
    stop.send(()).unwrap();
    let left = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns once the grace period is over")
        .unwrap()
        .unwrap();
    assert_eq!(left, 1);
    let unanswered = in_flight.await.unwrap();
    assert!(
        matches!(unanswered, Err(CallError::Transport { .. })),
        "{unanswered:?}"
    );
}
