//! The Arm CMSDK APB UART (transmit only): the console of the mps2 boards.

use super::Console;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1;
const CTRL_TX_ENABLE: u32 = 1;

/// A CMSDK UART at a fixed address.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// Enables the transmitter of the UART at `base`.
    ///
    /// # Safety
    /// `base` must be the address of a CMSDK APB UART that nothing else drives.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self { base };
        uart.write(BAUDDIV, 16);
        uart.write(CTRL, CTRL_TX_ENABLE);
        uart
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: `new`'s contract: `base` is this UART's register block.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: as in `write`.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }
}

impl Console for CmsdkUart {
    fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.read(STATE) & STATE_TX_FULL != 0 {}
            self.write(DATA, u32::from(b));
        }
    }
}
