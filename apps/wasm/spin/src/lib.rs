//! A deliberately misbehaving app: its first tick never returns. The runtime's fuel limit
//! stops it and reports it as failed; tests use it to show the device and its other apps are
//! unaffected.

#![no_std]

#[unsafe(no_mangle)]
pub extern "C" fn init() {
    let _ = wasmbed_app::log(wasmbed_app::Level::Warn, "spin: about to loop forever");
}

#[unsafe(no_mangle)]
pub extern "C" fn tick() {
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}
