//! SIGTERM on a service process: the command it is handling is still answered, new ones are not
//! taken, and the process exits cleanly.
//!
//! The service is `wasmbed serve renode-manager` (sim backend) as its own process and NATS user.
//! The test holds the command in flight deterministically: a start asks enrollment to register
//! the device, and the test plays enrollment, answering only after the SIGTERM was sent.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::process::Command;
use wasmbed_bus::CallError;
use wasmbed_local_nats::free_port;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::command::{
    Accepted, CaCertificate, Command as _, ErrorCode, GetCaCertificate, RegisterDevice, Reply,
    StartEmulator,
};
use wasmbed_schemas::permissions::Principal;
use wasmbed_test_support::{NatsServer, http_get};

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");
const T: Duration = Duration::from_secs(20);

async fn next_request(requests: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    tokio::time::timeout(T, requests.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} request within {T:?}"))
        .unwrap()
}

/// Answers `request` with `reply` (a `Reply<T>` as JSON, as every service answers).
async fn answer(
    client: &async_nats::Client,
    request: &async_nats::Message,
    reply: serde_json::Value,
) {
    let to = request
        .reply
        .clone()
        .expect("a request has a reply subject");
    client
        .publish(to, serde_json::to_vec(&reply).unwrap().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_flight_at_sigterm_is_answered_and_new_ones_are_not_taken() {
    let nats = NatsServer::start().await.unwrap();
    let operator = nats.client().await.unwrap();
    // The test plays enrollment: it receives the manager's calls and decides when to answer.
    let enrollment = nats.client_as(Principal::Enrollment).await.unwrap();
    let mut registrations = enrollment
        .subscribe(RegisterDevice::subject())
        .await
        .unwrap();
    let mut ca_requests = enrollment
        .subscribe(GetCaCertificate::subject())
        .await
        .unwrap();
    enrollment.flush().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let health: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let mut manager = Command::new(WASMBED)
        .args(["serve", "renode-manager", "--backend", "sim"])
        .arg("--key-dir")
        .arg(dir.path().join("keys"))
        .args(["--health-listen", &health.to_string()])
        .env("NATS_URL", nats.url())
        .env(
            "WASMBED_NATS_PASSWORD",
            nats.users().password(Principal::RenodeManager),
        )
        .env("WASMBED_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while http_get(health, "/ready").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready in {T:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A start goes in; the manager's handler is now waiting on "enrollment".
    let start = StartEmulator {
        device_id: DeviceId::new("sim-term").unwrap(),
        mcu: "Nrf52840DK".into(),
        simulated: false,
        labels: Default::default(),
    };
    let caller = operator.clone();
    let in_flight = tokio::spawn(async move { wasmbed_bus::call(&caller, &start, T).await });
    let registration = next_request(&mut registrations, "RegisterDevice").await;

    // SIGTERM while the handler is in the middle of its work.
    let pid = manager.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    // Once it stopped taking requests, a new command has no responder.
    let refused_new = async {
        loop {
            let probe = StartEmulator {
                device_id: DeviceId::new("sim-late").unwrap(),
                mcu: "Nrf52840DK".into(),
                simulated: false,
                labels: Default::default(),
            };
            match wasmbed_bus::call(&operator, &probe, Duration::from_millis(500)).await {
                Err(CallError::Transport { .. }) => break,
                other => {
                    // Answered before the unsubscribe took effect; it will not be for long.
                    assert!(other.is_err(), "a late start succeeded: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    tokio::time::timeout(T, refused_new)
        .await
        .expect("new commands were still taken after SIGTERM");

    // The held call is answered now; the handler goes on (it asks for the CA next) and ends.
    answer(
        &enrollment,
        &registration,
        serde_json::to_value(Reply::Ok {
            payload: Accepted { sequence: 1 },
        })
        .unwrap(),
    )
    .await;
    let ca = next_request(&mut ca_requests, "GetCaCertificate").await;
    answer(
        &enrollment,
        &ca,
        serde_json::to_value(Reply::Ok {
            payload: CaCertificate {
                certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            },
        })
        .unwrap(),
    )
    .await;
    // No gateway has announced itself, so the start ends refused: an answer, not a timeout.
    let reply = in_flight.await.unwrap();
    match reply {
        Err(CallError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
            assert!(e.message.contains("no gateway"), "{e:?}");
        }
        other => panic!("the in-flight command was not answered as it should be: {other:?}"),
    }

    let exit = tokio::time::timeout(T, manager.wait())
        .await
        .expect("the manager did not exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
}
