//! The smallest useful app: publishes an increasing count on topic `count`.

#![no_std]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use wasmbed_app::Buf;

static COUNT: AtomicU32 = AtomicU32::new(0);

#[unsafe(no_mangle)]
pub extern "C" fn tick() {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let mut payload = Buf::<16>::default();
    let _ = write!(payload, "{n}");
    let _ = wasmbed_app::publish("count", payload.as_bytes());
}
