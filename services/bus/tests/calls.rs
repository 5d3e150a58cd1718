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
    tokio::spawn(serve(client, router, Arc::new(()), std::future::pending()));
    // Let the subscription reach the server.
    tokio::time::sleep(Duration::from_millis(100)).await;
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
