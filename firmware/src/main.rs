//! Wasmbed device firmware: boots, reads its provisioning block, reaches a gateway (Ethernet
//! and DHCP, or a serial link to a network co-processor), verifies it over TLS 1.3,
//! authenticates with its Ed25519 key, and runs the WASM applications the gateway deploys.
//!
//! Module map: `board` (UART, clock, NIC or link UART; one module per board family),
//! `transport` (what the device needs of a way to the gateway, and the blocking stream over
//! it), `net` (smoltcp, DHCP, TCP) or `serial` (the serial link), `tls` (embedded-tls with the
//! gateway check), `device` (the loop around `wasmbed-device-core`), `heap`, `stack`
//! (high-water marks), `log`.

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod board;
mod device;
mod heap;
mod log;
#[cfg(board_family = "mps2")]
mod net;
#[cfg(board_family = "stm32f4")]
mod serial;
mod stack;
mod tls;
mod transport;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use wasmbed_schemas::provisioning::{self, Provisioning};

use board::{clock, this};
use transport::idle;

#[global_allocator]
static HEAP: heap::TrackedHeap = heap::TrackedHeap::empty();

unsafe extern "C" {
    /// First free byte after `.bss` (cortex-m-rt's linker script).
    static __sheap: u8;
    /// Where the heap ends (the board's map in `memory/`).
    static _heap_end: u8;
    /// The region for app pages (empty on boards whose map sets none aside).
    static _pages_start: u8;
    static _pages_end: u8;
    /// The provisioning block's region (the board's map in `memory/`).
    static _provisioning_start: u8;
}

#[entry]
fn main() -> ! {
    stack::paint();
    let Some(core) = cortex_m::Peripherals::take() else {
        panic!("core peripherals taken twice");
    };
    clock::start(core.SYST, this::INFO.core_clock_hz);
    log::init(this::console());
    let heap = (
        core::ptr::addr_of!(__sheap) as usize,
        core::ptr::addr_of!(_heap_end) as usize,
    );
    let pages = (
        core::ptr::addr_of!(_pages_start) as usize,
        core::ptr::addr_of!(_pages_end) as usize,
    );
    // SAFETY: called once, before any allocation; the memory map gives `__sheap..._heap_end`
    // and `_pages_start.._pages_end` to nothing else (the stack has a region of its own).
    unsafe { HEAP.init(heap, pages) };
    log!(
        "boot: {} on {} ({})",
        device::FIRMWARE,
        this::INFO.mcu,
        this::INFO.cpu
    );
    log!(
        "memory: heap {} KiB, app pages {} KiB, stack {} KiB",
        heap.1.saturating_sub(heap.0) / 1024,
        pages.1.saturating_sub(pages.0) / 1024,
        stack::size() / 1024
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
                idle();
            }
        }
    };
    log!(
        "provisioning: gateways {:?}, server name {}",
        provisioning.endpoints,
        provisioning.server_name
    );
    device::run(provisioning)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    log!("panic: {info}");
    loop {
        idle();
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
