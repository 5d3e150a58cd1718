//! The event log against a real nats-server (one per test).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use tokio::sync::mpsc;
use wasmbed_eventlog::{
    ACK_TIMEOUT, Aggregate, AppendError, EventLog, ExpectedVersion, LogOptions, ReadError,
    ReadModelError, StoredEvent,
};
use wasmbed_schemas::event::{
    DeviceConnected, DeviceDisconnected, DeviceRegistered, Event, EventEnvelope,
};
use wasmbed_schemas::{AggregateId, DeviceId, GatewayId, PublicKey, subject};
use wasmbed_test_support::NatsServer;

fn device(n: usize) -> DeviceId {
    DeviceId::new(format!("dev-{n}")).unwrap()
}

fn registered(n: usize) -> EventEnvelope {
    EventEnvelope::new(
        DeviceRegistered {
            device_id: device(n),
            public_key: PublicKey([n as u8; 32]),
            mcu: None,
            labels: Default::default(),
        }
        .into(),
    )
}

fn connected(n: usize) -> EventEnvelope {
    EventEnvelope::new(
        DeviceConnected {
            device_id: device(n),
            gateway_id: GatewayId::new("gw-1").unwrap(),
            remote_addr: "127.0.0.1:1".into(),
            session_id: None,
        }
        .into(),
    )
}

fn disconnected(n: usize) -> EventEnvelope {
    EventEnvelope::new(
        DeviceDisconnected {
            device_id: device(n),
            gateway_id: GatewayId::new("gw-1").unwrap(),
            reason: "test".into(),
            session_id: None,
        }
        .into(),
    )
}

/// A device as far as these tests care.
#[derive(Debug, Default, PartialEq)]
struct DeviceState {
    registered: bool,
    connected: bool,
    sessions: u32,
}

impl Aggregate for DeviceState {
    fn apply(&mut self, event: &StoredEvent) {
        match &event.envelope.event {
            Event::DeviceRegistered(_) => self.registered = true,
            Event::DeviceConnected(_) => {
                self.connected = true;
                self.sessions += 1;
            }
            Event::DeviceDisconnected(_) => self.connected = false,
            _ => {}
        }
    }
}

async fn open(server: &NatsServer) -> EventLog {
    EventLog::open(server.client().await.unwrap(), &LogOptions::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_aggregate_replays_to_its_state_and_version() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let id = AggregateId::Device(device(1));

    let empty = log.load::<DeviceState>(&id).await.unwrap();
    assert_eq!((empty.version, empty.events), (0, 0));

    let a = log
        .append(ExpectedVersion::NONE, &registered(1))
        .await
        .unwrap();
    // Another aggregate's event in between must not show up in device 1's history.
    log.append(ExpectedVersion::NONE, &registered(2))
        .await
        .unwrap();
    let b = log
        .append(ExpectedVersion::Exactly(a.sequence), &connected(1))
        .await
        .unwrap();
    assert!(!a.duplicate && !b.duplicate);

    let loaded = log.load::<DeviceState>(&id).await.unwrap();
    assert_eq!(loaded.version, b.sequence);
    assert_eq!(loaded.events, 2);
    assert_eq!(
        loaded.state,
        DeviceState {
            registered: true,
            connected: true,
            sessions: 1
        }
    );
}

#[tokio::test]
async fn of_two_concurrent_appends_exactly_one_wins() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let id = AggregateId::Device(device(1));
    log.append(ExpectedVersion::NONE, &registered(1))
        .await
        .unwrap();

    for round in 0..20 {
        let version = log.load::<DeviceState>(&id).await.unwrap().expected();
        let (l1, l2) = (log.clone(), log.clone());
        let (e1, e2) = (connected(1), disconnected(1));
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { l1.append(version, &e1).await }),
            tokio::spawn(async move { l2.append(version, &e2).await }),
        );
        let results = [r1.unwrap(), r2.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| {
                matches!(r, Err(AppendError::Conflict { aggregate, expected })
                if *aggregate == id && *expected == version)
            })
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {results:?}");
    }
    // One event per round made it, plus the registration.
    assert_eq!(log.read(&id).await.unwrap().len(), 21);
}

#[tokio::test]
async fn expecting_no_events_conflicts_once_there_are_some() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    log.append(ExpectedVersion::NONE, &registered(1))
        .await
        .unwrap();
    let err = log
        .append(ExpectedVersion::NONE, &connected(1))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
    assert_eq!(err.metric_label(), "conflict");
    // A stale exact version conflicts too.
    let err = log
        .append(ExpectedVersion::Exactly(999), &connected(1))
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn a_resent_event_id_is_stored_once() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let event = registered(1);
    let first = log.append(ExpectedVersion::NONE, &event).await.unwrap();
    // A retry after a lost ack: same envelope, same expectation.
    let again = log.append(ExpectedVersion::NONE, &event).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    // And with no expectation at all.
    let third = log.append(ExpectedVersion::Any, &event).await.unwrap();
    assert!(third.duplicate);
    // With an exact version: the retry is recognised as the same event, while a different
    // event at that stale version is a real conflict.
    let next = connected(1);
    let at = ExpectedVersion::Exactly(first.sequence);
    let stored = log.append(at, &next).await.unwrap();
    let retried = log.append(at, &next).await.unwrap();
    assert_eq!(
        (retried.sequence, retried.duplicate),
        (stored.sequence, true)
    );
    assert!(matches!(
        log.append(at, &disconnected(1)).await,
        Err(AppendError::Conflict { .. })
    ));
    let history = log.read(&AggregateId::Device(device(1))).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].envelope, event);
    assert_eq!(history[1].envelope, next);
}

#[tokio::test]
async fn an_aggregate_replays_the_same_after_a_server_restart() {
    let mut server = NatsServer::start().await.unwrap();
    let id = AggregateId::Device(device(7));
    let before = {
        let log = open(&server).await;
        let mut version = ExpectedVersion::NONE;
        for event in [registered(7), connected(7), disconnected(7), connected(7)] {
            version = ExpectedVersion::Exactly(log.append(version, &event).await.unwrap().sequence);
        }
        log.load::<DeviceState>(&id).await.unwrap()
    };
    server.restart().await.unwrap();
    let log = open(&server).await;
    let after = log.load::<DeviceState>(&id).await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.state.sessions, 2);
    // And the log goes on from where it was.
    let next = log
        .append(after.expected(), &disconnected(7))
        .await
        .unwrap();
    assert!(next.sequence > after.version);
}

#[tokio::test]
async fn pipelined_appends_keep_order_and_report_each_result() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    log.append(ExpectedVersion::NONE, &registered(0))
        .await
        .unwrap();
    // 300 new aggregates, and one append that must conflict (device 0 exists) in the middle.
    let mut batch: Vec<_> = (1..=300)
        .map(|n| (ExpectedVersion::NONE, registered(n)))
        .collect();
    batch.insert(150, (ExpectedVersion::NONE, connected(0)));
    let results = log.append_pipelined(batch, 32).await;
    assert_eq!(results.len(), 301);
    assert!(matches!(results[150], Err(AppendError::Conflict { .. })));
    let sequences: Vec<u64> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 150)
        .map(|(_, r)| r.as_ref().unwrap().sequence)
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "log order");
    assert_eq!(
        log.read(&AggregateId::Device(device(300)))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Acks that never come (the server is frozen with SIGSTOP) fail each append once its own
/// wait, counted from when it was sent, is over: a pipeline of them gives up together, not one
/// ack timeout after another.
#[tokio::test]
async fn a_pipeline_of_lost_acks_gives_up_after_one_ack_timeout() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let pid = server.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, pid.as_str()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    // A stop is delivered asynchronously: on a loaded machine the server could still answer
    // for a moment. Append only once the kernel says it is stopped (state `T`).
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(')')?.1.to_owned();
                after_name.split_whitespace().next().map(str::to_owned)
            })
    };
    let waiting = std::time::Instant::now();
    while state().as_deref() != Some("T") {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(5),
            "nats-server {pid} not stopped: state {:?}",
            state()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let batch: Vec<_> = (0..8)
        .map(|n| (ExpectedVersion::NONE, registered(n)))
        .collect();
    let started = std::time::Instant::now();
    let results = log.append_pipelined(batch, 8).await;
    let waited = started.elapsed();
    signal("-CONT");
    assert_eq!(results.len(), 8);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AppendError::Publish(_)))),
        "{results:?} from the server on port {} (ours: {}), state {:?}",
        log.jetstream().client().server_info().port,
        server.url(),
        state()
    );
    assert!(
        waited < ACK_TIMEOUT * 2,
        "eight lost acks took {waited:?}, not about one ack timeout ({ACK_TIMEOUT:?})"
    );
}

/// Runs the projection `name` until `want` events were accepted (and 200 ms more, so that a
/// wrong redelivery would show), then stops it; returns the accepted sequences in order.
/// `handler` decides per event whether the projection's handler fails.
async fn project(
    log: &EventLog,
    name: &str,
    want: usize,
    mut handler: impl FnMut(&StoredEvent) -> Result<(), &'static str> + Send + 'static,
) -> Vec<u64> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let projection = log.projection(name, vec![]).await.unwrap();
    let task = tokio::spawn(projection.run(
        move |e: &StoredEvent| {
            let accepted =
                handler(e).and_then(|()| tx.send(e.sequence).map_err(|_| "receiver gone"));
            async move { accepted }
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut seen = Vec::new();
    while seen.len() < want {
        let seq = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("projection delivered in time")
            .unwrap();
        seen.push(seq);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    while let Ok(extra) = rx.try_recv() {
        seen.push(extra);
    }
    seen
}

#[tokio::test]
async fn a_projection_resumes_after_the_last_event_it_accepted() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    for n in 0..5 {
        log.append(ExpectedVersion::NONE, &registered(n))
            .await
            .unwrap();
    }
    assert_eq!(
        project(&log, "resuming", 5, |_| Ok(())).await,
        [1, 2, 3, 4, 5]
    );
    for n in 5..8 {
        log.append(ExpectedVersion::NONE, &registered(n))
            .await
            .unwrap();
    }
    assert_eq!(
        project(&log, "resuming", 3, |_| Ok(())).await,
        [6, 7, 8],
        "only what came after the last ack"
    );
}

#[tokio::test]
async fn a_failing_handler_is_retried_in_place_without_skipping() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    for n in 0..3 {
        log.append(ExpectedVersion::NONE, &registered(n))
            .await
            .unwrap();
    }
    let mut failures_left = 2;
    let seen = project(&log, "flaky", 3, move |e| {
        if e.sequence == 2 && failures_left > 0 {
            failures_left -= 1;
            return Err("read model unavailable");
        }
        Ok(())
    })
    .await;
    assert_eq!(seen, [1, 2, 3]);
}

#[tokio::test]
async fn garbage_on_an_event_subject_is_a_typed_error_not_a_panic() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let id = AggregateId::Device(device(1));
    log.append(ExpectedVersion::NONE, &registered(1))
        .await
        .unwrap();
    log.jetstream()
        .publish(subject::event(&id), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    match log.read(&id).await {
        Err(ReadError::Decode { sequence, .. }) => assert_eq!(sequence, 2),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // A projection logs and skips it, and goes on with what follows.
    log.append(ExpectedVersion::NONE, &registered(2))
        .await
        .unwrap();
    assert_eq!(project(&log, "skipper", 2, |_| Ok(())).await, [1, 3]);
}

#[tokio::test]
async fn read_models_store_values_with_compare_and_set() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    let model = log.read_model::<Vec<u32>>("test-devices").await.unwrap();
    assert_eq!(model.get("dev-1").await.unwrap(), None);
    let r1 = model.update("dev-1", &vec![1], 0).await.unwrap();
    assert!(matches!(
        model.update("dev-1", &vec![9], 0).await,
        Err(ReadModelError::Conflict(_))
    ));
    let r2 = model.update("dev-1", &vec![1, 2], r1).await.unwrap();
    assert!(matches!(
        model.update("dev-1", &vec![9], r1).await,
        Err(ReadModelError::Conflict(_))
    ));
    let got = model.get("dev-1").await.unwrap().unwrap();
    assert_eq!((got.value, got.revision), (vec![1, 2], r2));
    model.put("dev-2", &vec![]).await.unwrap();
    let mut keys = model.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["dev-1", "dev-2"]);
    model.delete("dev-1").await.unwrap();
    assert_eq!(model.get("dev-1").await.unwrap(), None);
    // Reopening finds the same bucket.
    let again = log.read_model::<Vec<u32>>("test-devices").await.unwrap();
    assert_eq!(
        again.get("dev-2").await.unwrap().unwrap().value,
        Vec::<u32>::new()
    );
    // A value of another type is a typed error.
    let wrong = log.read_model::<String>("test-devices").await.unwrap();
    assert!(matches!(
        wrong.get("dev-2").await,
        Err(ReadModelError::Decode { .. })
    ));
}

#[tokio::test]
async fn opening_is_idempotent_and_creates_every_definition() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    for _ in 0..2 {
        EventLog::open(client.clone(), &LogOptions::default())
            .await
            .unwrap();
    }
    let js = async_nats::jetstream::new(client);
    let mut events = js.get_stream(subject::EVENTS_STREAM).await.unwrap();
    let info = events.info().await.unwrap();
    assert_eq!(info.config.subjects, [subject::EVENTS_ALL]);
    assert!(info.config.deny_purge && info.config.deny_delete);
    js.get_stream(subject::TELEMETRY_STREAM).await.unwrap();
    js.get_object_store(subject::MODULES_OBJECT_STORE)
        .await
        .unwrap();
}

#[tokio::test]
async fn follow_reads_history_then_live_events_in_order() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    log.append(ExpectedVersion::NONE, &registered(1))
        .await
        .unwrap();
    log.append(ExpectedVersion::NONE, &registered(2))
        .await
        .unwrap();
    let mut follow = log
        .follow(vec![subject::event(&AggregateId::Device(device(2)))])
        .await
        .unwrap();
    assert_eq!(follow.pending_at_start, 1);
    let (first, pending) = follow.next().await.unwrap().unwrap();
    assert_eq!((first.sequence, pending), (2, 0));
    let appended = log
        .append(ExpectedVersion::Any, &connected(2))
        .await
        .unwrap();
    let (live, _) = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.sequence, appended.sequence);
}

#[tokio::test]
async fn a_follow_of_several_subjects_folds_exactly_the_matching_events_then_live_ones() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    // Devices 1..=6, each registered then connected: the follow wants devices 2 and 5 only,
    // and the log ends with an event it does not want.
    for n in 1..=6 {
        for event in [registered(n), connected(n)] {
            log.append(ExpectedVersion::Any, &event).await.unwrap();
        }
    }
    let wanted = |n| subject::event(&AggregateId::Device(device(n)));
    let mut follow = log.follow(vec![wanted(2), wanted(5)]).await.unwrap();
    let mut folded = Vec::new();
    let count = tokio::time::timeout(
        Duration::from_secs(5),
        follow.catch_up(|e| folded.push((e.sequence, e.envelope.aggregate.clone()))),
    )
    .await
    .expect("caught up although the last events match nothing");
    assert_eq!(count, 4);
    assert_eq!(
        folded.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [3, 4, 9, 10]
    );
    assert!(
        folded
            .iter()
            .all(|(_, a)| *a == AggregateId::Device(device(2))
                || *a == AggregateId::Device(device(5)))
    );
    // Live: an unwanted event is passed over, the wanted one after it delivered.
    log.append(ExpectedVersion::Any, &disconnected(3))
        .await
        .unwrap();
    let appended = log
        .append(ExpectedVersion::Any, &disconnected(5))
        .await
        .unwrap();
    let (live, _) = tokio::time::timeout(Duration::from_secs(5), follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.sequence, appended.sequence);
}

#[tokio::test]
async fn a_follow_resumes_after_a_server_restart_without_skipping_or_repeating() {
    let mut server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    for event in [registered(1), connected(1)] {
        log.append(ExpectedVersion::Any, &event).await.unwrap();
    }
    let mut follow = log.follow(Vec::new()).await.unwrap();
    for expected in [1, 2] {
        let (event, _) = follow.next().await.unwrap().unwrap();
        assert_eq!(event.sequence, expected);
    }
    // The server forgets its (ephemeral, in-memory) consumers; the file store keeps the log.
    server.restart().await.unwrap();
    let mut appended = Vec::new();
    for event in [registered(2), connected(2)] {
        // The client reconnects on its own; an append made meanwhile is retried.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match log.append(ExpectedVersion::Any, &event).await {
                Ok(a) => break appended.push(a.sequence),
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
            }
        }
    }
    // Both arrive, in order, once, and well before the client library's own recovery (it
    // would wait for missed idle heartbeats, about 15 s).
    for expected in appended {
        let (event, _) = tokio::time::timeout(Duration::from_secs(5), follow.next())
            .await
            .expect("the follow did not resume")
            .unwrap()
            .unwrap();
        assert_eq!(event.sequence, expected);
    }
}

#[tokio::test]
async fn pages_walk_the_log_in_order_with_an_optional_filter() {
    let server = NatsServer::start().await.unwrap();
    let log = open(&server).await;
    for n in 1..=5 {
        log.append(ExpectedVersion::NONE, &registered(n))
            .await
            .unwrap();
    }
    let first = log.page(None, 0, 2).await.unwrap();
    assert_eq!(first.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2]);
    let second = log.page(None, 2, 2).await.unwrap();
    assert_eq!(
        second.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3, 4]
    );
    let rest = log.page(None, 4, 100).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.sequence).collect::<Vec<_>>(), [5]);
    assert!(log.page(None, 5, 100).await.unwrap().is_empty());

    let one = subject::event(&AggregateId::Device(device(3)));
    let filtered = log.page(Some(one), 0, 100).await.unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].sequence, 3);
}
