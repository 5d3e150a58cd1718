//! Wasmbed device firmware: boots, reads its provisioning block, gets an address by DHCP,
//! verifies the gateway over TLS 1.3, authenticates with its Ed25519 key, and runs the WASM
//! applications the gateway deploys.
//!
//! Module map: `board` (UART, clock, NIC; one module per board family), `net` (smoltcp, DHCP,
//! the TCP stream), `tls` (embedded-tls with the gateway check), `device` (the loop around
//! `wasmbed-device-core`), `heap`, `stack` (high-water marks), `log`.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod board;
mod device;
mod heap;
mod log;
mod net;
mod stack;
mod tls;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use wasmbed_schemas::provisioning::{self, Provisioning};

use board::{clock, mps2};

#[global_allocator]
static HEAP: heap::TrackedHeap = heap::TrackedHeap::empty();

unsafe extern "C" {
    /// First free byte after `.bss` (cortex-m-rt's linker script).
    static __sheap: u8;
    /// The provisioning block's region (the board's map in `memory/`).
    static _provisioning_start: u8;
}

#[entry]
fn main() -> ! {
    stack::paint();
    let Some(core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    clock::start(core.SYST, mps2::INFO.core_clock_hz);
    log::init(mps2::console());
    // SAFETY: called once, before any allocation; the linker script puts nothing after
    // `__sheap` but the stack, which grows down from the end of RAM, 2 MiB away.
    unsafe { HEAP.init(core::ptr::addr_of!(__sheap) as usize, heap::HEAP_SIZE) };
    log!(
        "boot: {} on {} ({})",
        device::FIRMWARE,
        mps2::INFO.mcu,
        mps2::INFO.cpu
    );
    // SAFETY: the memory map reserves this region for the block and places nothing in it; the
    // emulator wrote it before the CPU started, and nothing writes it afterwards.
    let region = unsafe {
        core::slice::from_raw_parts(
            core::ptr::addr_of!(_provisioning_start),
            provisioning::MAX_LEN,
        )
    };
    let provisioning = match Provisioning::decode(region) {
        Ok(p) => p,
        Err(e) => {
            log!("provisioning: {e}; halting");
            loop {
                net::idle();
            }
        }
    };
    log!(
        "provisioning: gateways {:?}, server name {}",
        provisioning.endpoints,
        provisioning.server_name
    );
    let nic = match mps2::nic() {
        Ok(nic) => nic,
        Err(e) => {
            log!("net: no ethernet controller: {e:?}; halting");
            loop {
                net::idle();
            }
        }
    };
    device::run(provisioning, nic)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log!("panic: {info}");
    loop {
        net::idle();
    }
}

/// A fault (a bus error on an address the board does not decode, most often) says where it
/// happened instead of hanging silently.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    log!("hard fault at pc {:#010x}; halting", frame.pc());
    loop {
        cortex_m::asm::wfi();
    }
}
