//! Arm MPS2 FPGA boards as QEMU models them: AN385 (Cortex-M3), AN386 (Cortex-M4), AN500
//! (Cortex-M7) and AN505 (Cortex-M33 with TrustZone, an SSE-200 subsystem).
//!
//! AN385/386/500 share one memory map: UART0 (CMSDK) at `0x4000_4000`, RAM, a 25 MHz core
//! clock; the LAN9118 is at `0x4020_0000`, on the AN500 at `0xa000_0000`. The AN505 boots in the secure state, and its
//! peripherals sit behind protection controllers that leave them secure-only after reset: the
//! firmware stays secure and uses the secure aliases (bit 28 set) of UART0 (`0x5020_0000`)
//! and the LAN9118 (`0x5200_0000`); its core clock is 20 MHz. Its RAM differs too, which is
//! `memory-an505.x`'s business.

use super::BoardInfo;
use super::cmsdk_uart::CmsdkUart;
use super::lan9118::Lan9118;
use crate::net::Net;

/// The console's type.
pub type ConsoleUart = CmsdkUart;
/// How this board reaches a gateway.
pub type BoardTransport = Net;

/// Applications get 1 MiB of the 4 MiB of data RAM; modules up to 512 KiB.
const APP_RAM_BYTES: u32 = 1024 * 1024;
const MAX_MODULE_LEN: u32 = 512 * 1024;
const VALUE_STACK_BYTES: u32 = 256 * 1024;

#[cfg(not(any(
    feature = "mps2-an385",
    feature = "mps2-an386",
    feature = "mps2-an500",
    feature = "mps2-an505"
)))]
compile_error!(
    "choose a board: --features mps2-an385, mps2-an386, mps2-an500, mps2-an505, stm32f405 or stm32f407"
);

/// One board's addresses and figures.
struct Board {
    info: BoardInfo,
    uart0: usize,
    lan9118: usize,
}

#[cfg(not(feature = "mps2-an505"))]
const CLASSIC_UART0: usize = 0x4000_4000;
#[cfg(any(feature = "mps2-an385", feature = "mps2-an386"))]
const CLASSIC_LAN9118: usize = 0x4020_0000;

#[cfg(feature = "mps2-an385")]
const BOARD: Board = Board {
    info: BoardInfo {
        mcu: "Mps2An385",
        cpu: "cortex-m3",
        core_clock_hz: 25_000_000,
        app_ram_bytes: APP_RAM_BYTES,
        max_module_len: MAX_MODULE_LEN,
        value_stack_bytes: VALUE_STACK_BYTES,
    },
    uart0: CLASSIC_UART0,
    lan9118: CLASSIC_LAN9118,
};
#[cfg(feature = "mps2-an386")]
const BOARD: Board = Board {
    info: BoardInfo {
        mcu: "Mps2An386",
        cpu: "cortex-m4f",
        core_clock_hz: 25_000_000,
        app_ram_bytes: APP_RAM_BYTES,
        max_module_len: MAX_MODULE_LEN,
        value_stack_bytes: VALUE_STACK_BYTES,
    },
    uart0: CLASSIC_UART0,
    lan9118: CLASSIC_LAN9118,
};
#[cfg(feature = "mps2-an500")]
const BOARD: Board = Board {
    info: BoardInfo {
        mcu: "Mps2An500",
        cpu: "cortex-m7",
        core_clock_hz: 25_000_000,
        app_ram_bytes: APP_RAM_BYTES,
        max_module_len: MAX_MODULE_LEN,
        value_stack_bytes: VALUE_STACK_BYTES,
    },
    uart0: CLASSIC_UART0,
    lan9118: 0xa000_0000,
};
#[cfg(feature = "mps2-an505")]
const BOARD: Board = Board {
    info: BoardInfo {
        mcu: "Mps2An505",
        cpu: "cortex-m33",
        core_clock_hz: 20_000_000,
        app_ram_bytes: APP_RAM_BYTES,
        max_module_len: MAX_MODULE_LEN,
        value_stack_bytes: VALUE_STACK_BYTES,
    },
    uart0: 0x5020_0000,
    lan9118: 0x5200_0000,
};

/// This image's board.
pub const INFO: BoardInfo = BOARD.info;

/// The console UART. Call once.
pub fn console() -> CmsdkUart {
    // SAFETY: UART0 of this board's memory map; only the log module drives it.
    unsafe { CmsdkUart::new(BOARD.uart0) }
}

/// The network: the Ethernet controller under smoltcp. Call once.
pub fn transport(random_seed: u64) -> Result<Net, &'static str> {
    // SAFETY: the LAN9118 of this board's memory map; only the network stack drives it.
    match unsafe { Lan9118::new(BOARD.lan9118) } {
        Ok(nic) => Ok(Net::new(nic, random_seed)),
        Err(e) => {
            crate::log!("net: lan9118: {e:?}");
            Err("no ethernet controller")
        }
    }
}
