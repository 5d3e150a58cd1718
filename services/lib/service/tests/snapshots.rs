//! Restoring from snapshots against a real nats-server: a restore folds only what came after
//! the last snapshot; a snapshot that is corrupt, of another layout, or of another log is
//! ignored and the whole log folded; a service can write only its own snapshot.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmbed_eventlog::snapshot::{SnapshotStore, Snapshotted};
use wasmbed_eventlog::{ExpectedVersion, StoredEvent};
use wasmbed_schemas::GatewayId;
use wasmbed_schemas::bytes::Sha256;
use wasmbed_schemas::event::{Event, EventEnvelope, GatewayStarted};
use wasmbed_schemas::permissions::Principal;
use wasmbed_service::{RestoreReport, Runtime, RuntimeOptions, SnapshotPolicy};
use wasmbed_test_support::NatsServer;

/// How many times each gateway started, and the order events came in: a fold that is wrong
/// when an event is folded twice or skipped.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Starts {
    by_gateway: BTreeMap<String, u32>,
    sequences: Vec<u64>,
}

impl Snapshotted for Starts {
    const FORMAT: u32 = 7;
}

fn fold(model: &mut Starts, event: &StoredEvent) {
    if let Event::GatewayStarted(e) = &event.envelope.event {
        *model
            .by_gateway
            .entry(e.gateway_id.as_str().to_owned())
            .or_default() += 1;
    }
    model.sequences.push(event.sequence);
}

async fn append(runtime: &Runtime, from: u8, to: u8) {
    for n in from..to {
        let event = EventEnvelope::new(
            GatewayStarted {
                gateway_id: GatewayId::new(format!("gw-{}", n % 4)).unwrap(),
                endpoint: format!("127.0.0.1:{n}"),
                certificate_sha256: Sha256([n; 32]),
            }
            .into(),
        );
        runtime
            .log()
            .append(ExpectedVersion::Any, &event)
            .await
            .unwrap();
    }
}

fn options() -> RuntimeOptions {
    RuntimeOptions {
        snapshots: SnapshotPolicy {
            after_events: 10,
            check_every: Duration::from_millis(50),
        },
        ..RuntimeOptions::default()
    }
}

async fn restore(server: &NatsServer) -> (Runtime, Starts, RestoreReport) {
    let mut runtime = Runtime::start(server.client().await.unwrap(), "starts", &options())
        .await
        .unwrap();
    let mut model = Starts::default();
    let (_, report) = runtime
        .restore_snapshotted(Vec::new(), &mut model, fold)
        .await
        .unwrap();
    (runtime, model, report)
}

/// The whole log folded from the start, without snapshots.
async fn whole(runtime: &Runtime) -> Starts {
    let mut model = Starts::default();
    runtime.restore(Vec::new(), &mut model, fold).await.unwrap();
    model
}

/// Waits until the stored snapshot is at `sequence`.
async fn snapshot_at(store: &SnapshotStore, sequence: u64) {
    for _ in 0..200 {
        if let Some(restored) = store
            .load::<Starts>("starts", Starts::FORMAT)
            .await
            .unwrap()
        {
            if restored.sequence == sequence {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no snapshot at {sequence}");
}

#[tokio::test]
async fn a_restore_folds_only_the_events_after_the_last_snapshot() {
    let server = NatsServer::start().await.unwrap();
    let (runtime, _, _) = restore(&server).await;
    append(&runtime, 0, 30).await;
    runtime.stop().await;

    // 30 events to fold, over the policy's 10: a snapshot is written at 30.
    let (runtime, model, report) = restore(&server).await;
    assert_eq!(
        report,
        RestoreReport {
            from_snapshot: 0,
            folded: 30,
            last: 30
        }
    );
    let store = runtime.log().snapshots().await.unwrap();
    snapshot_at(&store, 30).await;
    assert_eq!(model, whole(&runtime).await);
    append(&runtime, 30, 35).await;
    runtime.stop().await;

    let (runtime, model, report) = restore(&server).await;
    assert_eq!(
        report,
        RestoreReport {
            from_snapshot: 30,
            folded: 5,
            last: 35
        }
    );
    assert_eq!(model, whole(&runtime).await);
    assert_eq!(model.sequences, (1..=35).collect::<Vec<_>>());
    runtime.stop().await;
}

#[tokio::test]
async fn a_running_service_writes_a_snapshot_as_the_log_grows() {
    let server = NatsServer::start().await.unwrap();
    let (mut runtime, model, _) = restore(&server).await;
    let model = std::sync::Arc::new(std::sync::Mutex::new(model));
    let (position, snapshot) = (model.clone(), model.clone());
    runtime.keep_snapshotting::<Starts>(
        move || {
            position
                .lock()
                .unwrap()
                .sequences
                .last()
                .copied()
                .unwrap_or(0)
        },
        move || {
            let model = snapshot.lock().unwrap();
            let at = model.sequences.last().copied().unwrap_or(0);
            Ok((at, wasmbed_service::encode_snapshot(&*model)?))
        },
    );
    append(&runtime, 0, 12).await;
    let log = runtime.log().clone();
    for event in log.page(None, 0, usize::MAX).await.unwrap() {
        fold(&mut model.lock().unwrap(), &event);
    }
    snapshot_at(&log.snapshots().await.unwrap(), 12).await;
    runtime.stop().await;
    let (runtime, restored, report) = restore(&server).await;
    assert_eq!((report.from_snapshot, report.folded), (12, 0));
    assert_eq!(restored, *model.lock().unwrap());
    runtime.stop().await;
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_trusted_is_ignored_and_the_whole_log_folded() {
    let server = NatsServer::start().await.unwrap();
    let (runtime, _, _) = restore(&server).await;
    append(&runtime, 0, 20).await;
    let truth = whole(&runtime).await;
    let store = runtime.log().snapshots().await.unwrap();
    let log = runtime.log().clone();
    runtime.stop().await;

    // What a wrong snapshot would make the model say, were it trusted.
    let mut lie = truth.clone();
    lie.by_gateway.insert("gw-forged".into(), 99);
    let at_10 = log.event_id_at(10).await.unwrap().unwrap();
    let body = wasmbed_eventlog::snapshot::body(&lie).unwrap();
    let encode = |format, sequence, id: &str| {
        wasmbed_eventlog::snapshot::encode("starts", format, sequence, id, &body)
    };
    let mut flipped = encode(Starts::FORMAT, 10, &at_10);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let cases: [(&str, Vec<u8>); 6] = [
        ("garbage", b"not a snapshot at all".to_vec()),
        ("an older layout", encode(Starts::FORMAT - 1, 10, &at_10)),
        (
            "another event at its sequence",
            encode(Starts::FORMAT, 10, "other-log"),
        ),
        (
            "a sequence past the log's end",
            encode(Starts::FORMAT, 500, &at_10),
        ),
        ("a body changed after it was written", flipped),
        (
            "a body of another model",
            wasmbed_eventlog::snapshot::encode(
                "starts",
                Starts::FORMAT,
                10,
                &at_10,
                &wasmbed_eventlog::snapshot::body(&vec!["x"; 3]).unwrap(),
            ),
        ),
    ];
    for (what, bytes) in cases {
        store.put_raw("starts", &bytes).await.unwrap();
        let (runtime, model, report) = restore(&server).await;
        assert_eq!(report.from_snapshot, 0, "{what} was trusted");
        assert_eq!(report.folded, 20, "{what}");
        assert_eq!(model, truth, "{what}");
        runtime.stop().await;
    }
    // The same bytes, honestly made, are used: the cases above fail for their one reason.
    store
        .put_raw("starts", &encode(Starts::FORMAT, 10, &at_10))
        .await
        .unwrap();
    let (runtime, model, report) = restore(&server).await;
    assert_eq!((report.from_snapshot, report.folded), (10, 10));
    assert_eq!(model.by_gateway.get("gw-forged"), Some(&99));
    runtime.stop().await;
}

#[tokio::test]
async fn a_service_writes_its_own_snapshot_and_no_other() {
    let server = NatsServer::start().await.unwrap();
    let operator = Runtime::start(server.client().await.unwrap(), "setup", &options())
        .await
        .unwrap();
    operator.log().snapshots().await.unwrap();
    operator.stop().await;
    let api = server.client_as(Principal::Api).await.unwrap();
    let runtime = Runtime::start(api, "api", &options()).await.unwrap();
    let store = runtime.log().snapshots().await.unwrap();
    let model = Starts::default();
    store.save("api", Starts::FORMAT, 0, &model).await.unwrap();
    assert!(
        store
            .load::<Starts>("api", Starts::FORMAT)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(server.permission_violations(), Vec::<String>::new());
    let forged = tokio::time::timeout(
        Duration::from_secs(10),
        store.save("deployer", Starts::FORMAT, 0, &model),
    )
    .await
    .unwrap();
    assert!(forged.is_err(), "the api wrote the deployer's snapshot");
    // The server refused the deployer's metadata subject (`deployer`, URL-safe base64).
    assert!(
        server
            .permission_violations()
            .iter()
            .any(|line| line.contains("$O.wasmbed-snapshots.M.ZGVwbG95ZXI=")),
        "{:?}",
        server.permission_violations()
    );
    runtime.stop().await;
}
