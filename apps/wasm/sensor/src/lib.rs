//! A sensor-style app: every tick it publishes a temperature reading on topic `temperature`,
//! as JSON with the device id and the `room` from its configuration.

#![no_std]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use wasmbed_app::{Buf, Level};

static READINGS: AtomicU32 = AtomicU32::new(0);

#[unsafe(no_mangle)]
pub extern "C" fn init() {
    let _ = wasmbed_app::log(Level::Info, "sensor started");
}

#[unsafe(no_mangle)]
pub extern "C" fn tick() {
    let n = READINGS.fetch_add(1, Ordering::Relaxed) + 1;
    // A slow saw-tooth between 20.000 and 23.999 °C, so dashboards have something to draw.
    let millicelsius = 20_000 + (n * 137) % 4_000;
    let mut id = [0u8; 64];
    let device = wasmbed_app::device_id(&mut id).unwrap_or("?");
    let mut config = [0u8; 64];
    let room = wasmbed_app::config(&mut config)
        .and_then(|c| core::str::from_utf8(c).ok())
        .unwrap_or("");
    let mut payload = Buf::<256>::default();
    let _ = write!(
        payload,
        "{{\"n\":{n},\"millicelsius\":{millicelsius},\"device\":\"{device}\",\"room\":\"{room}\"}}"
    );
    let _ = wasmbed_app::publish("temperature", payload.as_bytes());
}
