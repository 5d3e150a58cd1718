//! The Arm CMSDK APB UART (transmit only): the console of the mps2 boards.

use super::Console;
use super::mmio::Registers;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1;
const CTRL_TX_ENABLE: u32 = 1;

/// A CMSDK UART at a fixed address.
pub struct CmsdkUart {
    regs: Registers,
}

impl CmsdkUart {
    /// Enables the transmitter of the UART at `base`.
    ///
    /// # Safety
    /// `base` must be the address of a CMSDK APB UART that nothing else drives.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: forwarded contract.
        let regs = unsafe { Registers::at(base) };
        regs.write(BAUDDIV, 16);
        regs.write(CTRL, CTRL_TX_ENABLE);
        Self { regs }
    }
}

impl Console for CmsdkUart {
    fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.regs.read(STATE) & STATE_TX_FULL != 0 {}
            self.regs.write(DATA, u32::from(b));
        }
    }
}
