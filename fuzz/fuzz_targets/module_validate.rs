//! WASM modules as users upload them: the deployer's validator answers with facts or a reason,
//! never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmbed_schemas::frame::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        fuel_per_invocation: 1_000_000,
        max_memory_pages: 4,
        tick_interval_ms: 1000,
    };
    let _ = wasmbed_deployer::validate(data, &limits);
});
