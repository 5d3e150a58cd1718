//! The example applications, compiled to WebAssembly by this crate's build script from the
//! sources in `apps/wasm/`. Each uses the `wasmbed` host API through the `wasmbed-app` crate.

/// Publishes a temperature reading as JSON on topic `temperature` every tick; logs on start;
/// reads a room name from its configuration bytes.
pub const SENSOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sensor.wasm"));

/// Publishes an increasing count on topic `count` every tick.
pub const COUNTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/counter.wasm"));

/// Never returns from its first tick: the runtime's fuel limit must stop it.
pub const SPIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/spin.wasm"));

/// Every example by name, for the CLI.
pub const ALL: &[(&str, &[u8])] = &[("sensor", SENSOR), ("counter", COUNTER), ("spin", SPIN)];

/// The telemetry topics each example publishes on (what its signed release must grant).
pub fn topics(name: &str) -> &'static [&'static str] {
    match name {
        "sensor" => &["temperature"],
        "counter" => &["count"],
        _ => &[],
    }
}
