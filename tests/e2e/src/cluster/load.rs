//! Load on a [`Cluster`](super::Cluster) while a test breaks it: devices registered and
//! connected, registrations sent continuously.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::time::Instant;
use wasmbed_bus::{CallError, call};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::command::RegisterDevice;
use wasmbed_sim::{SimDevice, random_key};

use wasmbed_eventlog::StoredEvent;
use wasmbed_schemas::event::Event;

use super::{Cluster, device_events};
use crate::T;

/// Registers `n` devices `dev-0..`; returns their ids and keys.
pub async fn register(cluster: &Cluster, n: usize) -> (Vec<DeviceId>, Vec<SigningKey>) {
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = random_key();
        let id = DeviceId::new(format!("dev-{i}")).unwrap();
        call(&cluster.client, &crate::registration(&id, &key), T)
            .await
            .unwrap();
        ids.push(id);
        keys.push(key);
    }
    (ids, keys)
}

/// Waits until every device is connected with at least `sessions` sessions so far; returns the
/// time each took from `since`, shortest first.
pub async fn wait_connected(
    devices: &mut [SimDevice],
    sessions: u32,
    since: Instant,
) -> Vec<Duration> {
    let waits = devices.iter_mut().map(|device| async move {
        device
            .wait_for(|s| s.connected && s.sessions >= sessions, T)
            .await
            .unwrap();
        since.elapsed()
    });
    let mut times = futures::future::join_all(waits).await;
    times.sort();
    times
}

/// Sends `RegisterDevice` for fresh ids every 20 ms until told to stop; returns the ids whose
/// registration was acknowledged, refused, and unanswered.
pub fn register_continuously(
    client: async_nats::Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(Vec<DeviceId>, usize, usize)> {
    tokio::spawn(async move {
        let (mut acknowledged, mut refused, mut unanswered) = (Vec::new(), 0, 0);
        for i in 0.. {
            if *stop.borrow() {
                break;
            }
            let id = DeviceId::new(format!("cmd-{i}")).unwrap();
            let command = RegisterDevice {
                device_id: id.clone(),
                public_key: wasmbed_device_core::Signer::public_key(&random_key()),
                mcu: None,
                labels: BTreeMap::new(),
            };
            match call(&client, &command, Duration::from_millis(500)).await {
                Ok(_) => acknowledged.push(id),
                Err(CallError::Refused(_)) => refused += 1,
                Err(_) => unanswered += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (acknowledged, refused, unanswered)
    })
}

/// How many sessions `device` opened, by the log.
pub fn connections(events: &[StoredEvent], device: &DeviceId) -> usize {
    device_events(events, device)
        .filter(|e| matches!(e, Event::DeviceConnected(_)))
        .count()
}

/// Waits until every one of `devices` connected at least `at_least` times.
pub async fn wait_sessions(cluster: &Cluster, devices: &[DeviceId], at_least: usize) {
    let deadline = Instant::now() + T;
    loop {
        let events = cluster.all_events().await;
        if devices.iter().all(|d| connections(&events, d) >= at_least) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "devices never connected {at_least} times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
