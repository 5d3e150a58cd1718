//! A fleet of simulated devices for tests against a running system: registered as the
//! operator, connected over real TLS, and who among them is heard on `wasmbed.telemetry.>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmbed_bus::call;
use wasmbed_schemas::{DeviceId, subject};
use wasmbed_sim::{Connector, SimConfig, SimDevice, random_key};

/// Registers `n` devices named `<prefix>-<i>` through `client` (the operator), starts a
/// simulated device for each with `config`, and waits until every one is connected.
pub async fn connected_fleet(
    client: &async_nats::Client,
    ca_pem: &str,
    config: SimConfig,
    prefix: &str,
    n: usize,
    within: Duration,
) -> (Vec<DeviceId>, Vec<SimDevice>) {
    let connector = Connector::new(ca_pem, "localhost").expect("the CA parses");
    let config = Arc::new(config);
    let mut ids = Vec::new();
    let mut sims = Vec::new();
    for i in 0..n {
        let key = random_key();
        let id = DeviceId::new(format!("{prefix}-{i}")).expect("a valid id");
        call(client, &crate::registration(&id, &key), within)
            .await
            .expect("the device registers");
        ids.push(id);
        sims.push(SimDevice::spawn(connector.clone(), config.clone(), key));
    }
    for sim in &mut sims {
        sim.wait_for(|s| s.connected, within)
            .await
            .expect("the device connects");
    }
    (ids, sims)
}

/// When each device was last heard on `wasmbed.telemetry.>`.
#[derive(Clone, Default)]
pub struct Heard(Arc<Mutex<HashMap<String, Instant>>>);

impl Heard {
    /// Starts listening through `client`.
    pub async fn follow(client: &async_nats::Client) -> Self {
        let heard = Self::default();
        let mut sub = client
            .subscribe(subject::TELEMETRY_ALL)
            .await
            .expect("subscribing to telemetry");
        let hearing = heard.clone();
        tokio::spawn(async move {
            while let Some(message) = sub.next().await {
                if let Some(device) = message.subject.split('.').nth(2) {
                    hearing.lock().insert(device.to_owned(), Instant::now());
                }
            }
        });
        heard
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many devices were heard after `after`.
    pub fn since(&self, after: Instant) -> usize {
        self.lock().values().filter(|t| **t > after).count()
    }

    /// How many of `ids` were heard after `after`.
    pub fn of_since(&self, ids: &[DeviceId], after: Instant) -> usize {
        let heard = self.lock();
        ids.iter()
            .filter(|id| heard.get(id.as_str()).is_some_and(|t| *t > after))
            .count()
    }

    /// How many devices were ever heard.
    pub fn devices(&self) -> usize {
        self.lock().len()
    }
}
