//! The board layer: what the firmware needs from a board, and the boards it runs on.
//!
//! A board gives a console (UART), a millisecond clock, and an Ethernet NIC as a smoltcp
//! [`smoltcp::phy::Device`]. Everything above this module is board-independent; another board
//! (one of the Renode boards of the MCU catalogue) adds a module here, not a fork.

pub mod clock;
pub mod cmsdk_uart;
pub mod lan9118;
pub mod mps2;

/// A byte sink for log lines.
pub trait Console {
    /// Writes every byte, blocking while the transmitter is full.
    fn write_bytes(&mut self, bytes: &[u8]);
}

/// What the firmware knows about the board it was built for.
#[derive(Debug, Clone, Copy)]
pub struct BoardInfo {
    /// The MCU type as the catalogue names it.
    pub mcu: &'static str,
    /// The CPU core.
    pub cpu: &'static str,
    /// The core clock, Hz (SysTick counts it).
    pub core_clock_hz: u32,
}
