//! What the deployers sent devices, read off their downlink subjects.

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt};
use wasmbed_schemas::frame::Frame;
use wasmbed_schemas::frame::codec::decode;

/// Adds the `ModuleBegin` frames per (device, version) that `downlinks` (a subscription to
/// every device's downlink) has received so far to `seen`: each is one module transfer.
pub fn count_transfers(
    seen: &mut BTreeMap<(String, u32), usize>,
    downlinks: &mut async_nats::Subscriber,
) {
    while let Some(Some(message)) = downlinks.next().now_or_never() {
        if let Ok((Frame::ModuleBegin(begin), _)) = decode(&message.payload) {
            let device = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_owned();
            *seen.entry((device, begin.version)).or_default() += 1;
        }
    }
}
