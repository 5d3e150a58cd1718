//! Arm MPS2 FPGA boards as QEMU models them: AN385 (Cortex-M3) and AN386 (Cortex-M4).
//! Same memory map and peripherals: UART0 (CMSDK) at `0x4000_4000`, a LAN9118 at
//! `0x4020_0000`, a 25 MHz core clock.

use super::BoardInfo;
use super::cmsdk_uart::CmsdkUart;
use super::lan9118::{Lan9118, NicError};

#[cfg(not(any(feature = "mps2-an385", feature = "mps2-an386")))]
compile_error!("choose a board: --features mps2-an385 or mps2-an386");
#[cfg(all(feature = "mps2-an385", feature = "mps2-an386"))]
compile_error!("one board per image: mps2-an385 or mps2-an386, not both");

const UART0: usize = 0x4000_4000;
const LAN9118: usize = 0x4020_0000;

/// This image's board.
#[cfg(feature = "mps2-an385")]
pub const INFO: BoardInfo = BoardInfo {
    mcu: "Mps2An385",
    cpu: "cortex-m3",
    core_clock_hz: 25_000_000,
};
/// This image's board.
#[cfg(feature = "mps2-an386")]
pub const INFO: BoardInfo = BoardInfo {
    mcu: "Mps2An386",
    cpu: "cortex-m4f",
    core_clock_hz: 25_000_000,
};

/// The console UART. Call once.
pub fn console() -> CmsdkUart {
    // SAFETY: UART0 of the mps2 memory map; only the log module drives it.
    unsafe { CmsdkUart::new(UART0) }
}

/// The Ethernet controller. Call once.
pub fn nic() -> Result<Lan9118, NicError> {
    // SAFETY: the LAN9118 of the mps2 memory map; only the network stack drives it.
    unsafe { Lan9118::new(LAN9118) }
}
