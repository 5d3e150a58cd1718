//! The event log on a real 3-node JetStream cluster (`NatsCluster`): streams with three
//! replicas keep every acknowledged event when a node is killed mid-append, and the node
//! restarted on its store catches up.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wasmbed_eventlog::{EventLog, ExpectedVersion, LogOptions};
use wasmbed_schemas::event::{DeviceRegistered, EventEnvelope};
use wasmbed_schemas::{DeviceId, PublicKey, subject};
use wasmbed_test_support::NatsCluster;

fn registered(n: usize) -> EventEnvelope {
    EventEnvelope::new(
        DeviceRegistered {
            device_id: DeviceId::new(format!("dev-{n}")).unwrap(),
            public_key: PublicKey([(n % 251) as u8; 32]),
            mcu: None,
            labels: Default::default(),
        }
        .into(),
    )
}

/// The whole log; a read that fails while the cluster settles (a consumer request meeting an
/// election) is read again.
async fn read_all(log: &EventLog) -> Vec<wasmbed_eventlog::StoredEvent> {
    let mut attempts = 0;
    loop {
        match log.page(None, 0, usize::MAX).await {
            Ok(events) => return events,
            Err(e) => {
                attempts += 1;
                assert!(attempts < 20, "the log cannot be read: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test]
async fn no_acknowledged_event_is_lost_or_doubled_when_a_node_is_killed_mid_append() {
    let mut cluster = NatsCluster::start().await.unwrap();
    let log = EventLog::open(cluster.client().await.unwrap(), &LogOptions { replicas: 3 })
        .await
        .unwrap();
    let info = log
        .jetstream()
        .get_stream(subject::EVENTS_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    // The node that leads the event stream is the one killed: its followers must elect.
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    let victim = leader
        .strip_prefix("node-")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap()
        - 1;

    // Appends one after another; the leader is killed after the first 200. An append that fails
    // (no answer while the stream elects a new leader) is retried with the same event id,
    // which the stream's de-duplication makes safe.
    const EVENTS: usize = 600;
    let mut acknowledged: HashMap<uuid::Uuid, u64> = HashMap::new();
    let (mut retries, mut longest) = (0, Duration::ZERO);
    let mut killed_at = None;
    for n in 0..EVENTS {
        if n == 200 {
            cluster.kill(victim);
            killed_at = Some(Instant::now());
        }
        let envelope = registered(n);
        let started = Instant::now();
        loop {
            match log.append(ExpectedVersion::Any, &envelope).await {
                Ok(appended) => {
                    acknowledged.insert(envelope.event_id, appended.sequence);
                    break;
                }
                Err(_) => {
                    retries += 1;
                    assert!(started.elapsed() < Duration::from_secs(30), "no recovery");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        longest = longest.max(started.elapsed());
    }

    // The whole log: every acknowledged event exactly once, at the sequence acknowledged.
    let mut seen: HashMap<uuid::Uuid, u64> = HashMap::new();
    for stored in read_all(&log).await {
        assert!(
            seen.insert(stored.envelope.event_id, stored.sequence)
                .is_none(),
            "event {} twice",
            stored.envelope.event_id
        );
    }
    assert_eq!(seen.len(), EVENTS);
    for (id, sequence) in &acknowledged {
        assert_eq!(
            seen.get(id),
            Some(sequence),
            "acknowledged {id} not where it was"
        );
    }

    // The killed node comes back on its store and catches up (its health check passes only
    // when its copies are current).
    let restarted = Instant::now();
    cluster.restart(victim).await.unwrap();
    cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();
    eprintln!(
        "cluster: {EVENTS} events, the stream leader {leader} killed after 200; {} \
         acknowledged, 0 lost, 0 doubled; {retries} appends retried, longest append {:?} (the \
         rest done {:?} after the kill); {leader} restarted and current in {:?}",
        acknowledged.len(),
        longest,
        killed_at.map(|k| k.elapsed()),
        restarted.elapsed()
    );
}
