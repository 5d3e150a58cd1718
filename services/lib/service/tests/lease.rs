//! Leases against a real nats-server: one holder at a time, a crashed holder replaced after
//! the TTL, a released lease taken at once, a holder whose key changed under it giving up.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::subject::LEASES_BUCKET;
use wasmbed_service::{LEASE_TTL, Lease};
use wasmbed_test_support::NatsServer;

async fn log(server: &NatsServer) -> EventLog {
    EventLog::open(server.client().await.unwrap(), &LogOptions::default())
        .await
        .unwrap()
}

/// Waits until `condition` holds, sampling every 10 ms; fails if both leases are ever held at
/// once meanwhile. Returns how long it took.
async fn until(a: &Lease, b: &Lease, within: Duration, condition: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        assert!(
            !(a.term().is_some() && b.term().is_some()),
            "both held the lease at once"
        );
        if condition() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_holder_at_a_time_and_the_other_takes_over_when_it_goes() {
    let server = NatsServer::start().await.unwrap();
    let log = log(&server).await;
    let a = Lease::start(&log, "deployer", "a".into()).await.unwrap();
    let b = Lease::start(&log, "deployer", "b".into()).await.unwrap();
    until(&a, &b, Duration::from_secs(5), || {
        a.term().is_some() || b.term().is_some()
    })
    .await;
    // It stays with one for a while (renewals keep it).
    let held = until(&a, &b, LEASE_TTL * 4, || false);
    assert!(
        tokio::time::timeout(LEASE_TTL * 2, held).await.is_err(),
        "the holder changed without a reason"
    );
    let (holder, other) = if a.term().is_some() { (a, b) } else { (b, a) };
    let first_term = holder.term().unwrap();

    // The holder crashes (its task stops, nothing is deleted): the other takes the lease once
    // the key expires, never while the first could still act.
    drop(holder);
    let crashed = Instant::now();
    while other.term().is_none() {
        assert!(crashed.elapsed() < LEASE_TTL * 3, "never taken over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = crashed.elapsed();
    eprintln!("lease: a crashed holder was replaced after {took:?} (TTL {LEASE_TTL:?})");
    assert!(
        took >= LEASE_TTL / 2,
        "taken before the key could expire: {took:?}"
    );
    assert!(other.term().unwrap() > first_term, "terms only grow");

    // A released lease is taken at once.
    let third = Lease::start(&log, "deployer", "d".into()).await.unwrap();
    let term = other.term().unwrap();
    other.release().await;
    let started = Instant::now();
    while third.term().is_none() {
        assert!(
            started.elapsed() < LEASE_TTL,
            "a released lease waits for its TTL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "lease: a released lease was taken after {:?}",
        started.elapsed()
    );
    assert!(third.term().unwrap() > term);
}

#[tokio::test]
async fn a_holder_whose_key_changed_under_it_gives_the_lease_up() {
    let server = NatsServer::start().await.unwrap();
    let log = log(&server).await;
    let lease = Lease::start(&log, "projector", "a".into()).await.unwrap();
    let started = Instant::now();
    while lease.term().is_none() {
        assert!(started.elapsed() < LEASE_TTL);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Someone writes the key (an operator, a bug): the holder's next renewal fails.
    let kv = log.jetstream().get_key_value(LEASES_BUCKET).await.unwrap();
    kv.put("projector", "intruder".into()).await.unwrap();
    let started = Instant::now();
    while lease.term().is_some() {
        assert!(
            started.elapsed() < LEASE_TTL,
            "still acting on a lease it lost"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
