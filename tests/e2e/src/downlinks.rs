//! What the deployers sent devices, read off their downlink subjects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use wasmbed_schemas::frame::Frame;
use wasmbed_schemas::frame::codec::decode;
use wasmbed_schemas::subject;

/// Module transfers per (device, version): the `ModuleBegin` frames on every device's downlink,
/// counted as they pass (a subscription left undrained while modules stream would drop some).
pub struct Transfers(Arc<Mutex<BTreeMap<(String, u32), usize>>>);

impl Transfers {
    /// Starts counting on `client`; returns once subscribed.
    pub async fn count(client: &async_nats::Client) -> Self {
        let mut downlinks = client
            .subscribe(subject::DEVICE_DOWNLINK_ALL)
            .await
            .expect("subscribing to the downlinks");
        client.flush().await.expect("flushing the subscription");
        let counts: Arc<Mutex<BTreeMap<(String, u32), usize>>> = Arc::default();
        let counting = counts.clone();
        tokio::spawn(async move {
            while let Some(message) = downlinks.next().await {
                if let Ok((Frame::ModuleBegin(begin), _)) = decode(&message.payload) {
                    let device = message.subject.as_str().rsplit('.').next().unwrap_or("");
                    let mut counts = counting.lock().unwrap_or_else(|e| e.into_inner());
                    *counts
                        .entry((device.to_owned(), begin.version))
                        .or_default() += 1;
                }
            }
        });
        Self(counts)
    }

    /// The counts so far.
    pub fn so_far(&self) -> BTreeMap<(String, u32), usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
