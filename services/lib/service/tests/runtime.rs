//! The service shape against a real nats-server: restore, follow, readiness, stop.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmbed_eventlog::{ExpectedVersion, StoredEvent};
use wasmbed_schemas::GatewayId;
use wasmbed_schemas::bytes::Sha256;
use wasmbed_schemas::event::{EventEnvelope, GatewayStarted};
use wasmbed_schemas::subject;
use wasmbed_service::{Runtime, RuntimeOptions};
use wasmbed_test_support::{NatsServer, http_get};

fn started(n: u8) -> EventEnvelope {
    EventEnvelope::new(
        GatewayStarted {
            gateway_id: GatewayId::new(format!("gw-{n}")).unwrap(),
            endpoint: format!("127.0.0.1:{n}"),
            certificate_sha256: Sha256([n; 32]),
        }
        .into(),
    )
}

async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_read_model_is_restored_from_the_log_then_kept_current() {
    let server = NatsServer::start().await.unwrap();
    let options = RuntimeOptions::default();
    let mut runtime = Runtime::start(server.client().await.unwrap(), "test", &options)
        .await
        .unwrap();
    for n in 1..=3 {
        runtime
            .log()
            .append(ExpectedVersion::Any, &started(n))
            .await
            .unwrap();
    }

    let mut seen: Vec<u64> = Vec::new();
    let follow = runtime
        .restore(
            vec![subject::events_of_kind(
                wasmbed_schemas::AggregateKind::Gateway,
            )],
            &mut seen,
            |seen, event: &StoredEvent| seen.push(event.sequence),
        )
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![1, 2, 3],
        "restore folds exactly what the log held"
    );

    let shared = Arc::new(Mutex::new(seen));
    let model = shared.clone();
    runtime.keep_following(follow, move |event| {
        model.lock().unwrap().push(event.sequence);
    });
    runtime
        .log()
        .append(ExpectedVersion::Any, &started(4))
        .await
        .unwrap();
    wait_until("the new event is folded", || {
        shared.lock().unwrap().len() == 4
    })
    .await;
    assert_eq!(*shared.lock().unwrap(), vec![1, 2, 3, 4]);

    // Once stopped, nothing is folded any more.
    runtime.stop().await;
    let log = wasmbed_eventlog::EventLog::open(
        server.client().await.unwrap(),
        &wasmbed_eventlog::LogOptions::default(),
    )
    .await
    .unwrap();
    log.append(ExpectedVersion::Any, &started(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(shared.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn health_answers_from_the_start_and_ready_only_while_serving() {
    let server = NatsServer::start().await.unwrap();
    let options = RuntimeOptions {
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::start(server.client().await.unwrap(), "test", &options)
        .await
        .unwrap();
    let addr = runtime.health_addr().unwrap();
    assert_eq!(http_get(addr, "/health").await, (200, "ok\n".into()));
    assert_eq!(
        http_get(addr, "/ready").await,
        (503, "not serving\n".into())
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(runtime.run_until(async move {
        let _ = stopped.await;
    }));
    let mut ready = (0, String::new());
    for _ in 0..100 {
        ready = http_get(addr, "/ready").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, (200, "ready\n".into()));

    stop.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(http_get(addr, "/health").await.0, 0, "the endpoint is gone");
}

/// A leased service says it is ready only once a command sent then is taken: the holder once
/// it has subscribed, a standby once it knows another instance holds the lease. (It used to say
/// ready before even asking for the lease: a command sent on "ready" found nobody.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_service_is_ready_once_a_command_is_taken_or_it_stands_by() {
    use wasmbed_bus::{CallError, Router, call};
    use wasmbed_schemas::DeviceId;
    use wasmbed_schemas::command::{CommandError, ErrorCode, StopEmulator};
    use wasmbed_service::{Lease, holder_name};

    let server = NatsServer::start().await.unwrap();
    let options = RuntimeOptions {
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..RuntimeOptions::default()
    };
    let router = || {
        Router::new(subject::Service::RenodeManager).route(async |_, c: StopEmulator| {
            Err::<wasmbed_schemas::command::Accepted, _>(CommandError {
                code: ErrorCode::NotFound,
                message: format!("no emulator {}", c.device_id),
            })
        })
    };
    let stop = StopEmulator {
        device_id: DeviceId::new("dev-1").unwrap(),
    };
    let (quit, quitting) = tokio::sync::watch::channel(false);
    let mut instances = Vec::new();
    for n in 0..2 {
        let runtime = Runtime::start(server.client().await.unwrap(), "test", &options)
            .await
            .unwrap();
        let addr = runtime.health_addr().unwrap();
        let lease = Lease::start(runtime.log(), "test-manager", holder_name("test"))
            .await
            .unwrap();
        let mut quitting = quitting.clone();
        let term = lease.watch();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = quitting.wait_for(|q| *q).await;
            };
            runtime
                .serve_while_held(router, Arc::new(()), &lease, shutdown)
                .await
                .unwrap();
        });
        let mut waited = 0;
        while http_get(addr, "/ready").await.0 != 200 {
            waited += 1;
            assert!(waited < 500, "instance {n} never ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Ready: the command is answered at once, by the holder.
        let answer = call(
            &server.client().await.unwrap(),
            &stop,
            Duration::from_secs(2),
        )
        .await;
        assert!(
            matches!(answer, Err(CallError::Refused(ref e)) if e.code == ErrorCode::NotFound),
            "instance {n} ready, yet the command got {answer:?}"
        );
        let holds = term.borrow().is_some();
        assert_eq!(
            holds,
            n == 0,
            "the first instance holds the lease, the second stands by"
        );
        instances.push(addr);
    }
    let _ = quit.send(true);
}
