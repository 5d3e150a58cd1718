//! The board layer: what the firmware needs from a board, and the boards it runs on.
//!
//! A board gives a console (UART), a millisecond clock, and a way to the gateway (a
//! [`crate::transport::Transport`]: Ethernet under smoltcp, or a serial link). Everything above
//! this module is board-independent; another board adds a module here, not a fork. `this` is
//! the board of the image (`cfg(board_family)`, set by `build.rs` from the cargo feature).

pub mod clock;
#[cfg(board_family = "mps2")]
pub mod cmsdk_uart;
#[cfg(board_family = "mps2")]
pub mod lan9118;
pub mod mmio;
#[cfg(board_family = "mps2")]
pub mod mps2;
#[cfg(board_family = "stm32f4")]
pub mod stm32_usart;
#[cfg(board_family = "stm32f4")]
pub mod stm32f4;

#[cfg(board_family = "mps2")]
pub use mps2 as this;
#[cfg(board_family = "stm32f4")]
pub use stm32f4 as this;

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
    /// RAM the device offers applications (reported; the deployer refuses apps needing more).
    pub app_ram_bytes: u32,
    /// The largest module it accepts.
    pub max_module_len: u32,
    /// The most heap one call's wasm value stack may take.
    pub value_stack_bytes: u32,
}
