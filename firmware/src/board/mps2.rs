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
use super::lan9118::{Lan9118, NicError};

#[cfg(not(any(
    feature = "mps2-an385",
    feature = "mps2-an386",
    feature = "mps2-an500",
    feature = "mps2-an505"
)))]
compile_error!("choose a board: --features mps2-an385, mps2-an386, mps2-an500 or mps2-an505");

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

/// The Ethernet controller. Call once.
pub fn nic() -> Result<Lan9118, NicError> {
    // SAFETY: the LAN9118 of this board's memory map; only the network stack drives it.
    unsafe { Lan9118::new(BOARD.lan9118) }
}
