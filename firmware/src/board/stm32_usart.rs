//! The STM32 USART (the F2/F4 register block, as QEMU's `stm32f2xx_usart` and Renode's
//! `STM32_UART` model it): transmit polled, receive one byte at a time for the interrupt.

use super::Console;
use super::mmio::Registers;

const SR: usize = 0x00;
const DR: usize = 0x04;
const BRR: usize = 0x08;
const CR1: usize = 0x0c;
const SR_RXNE: u32 = 1 << 5;
const SR_TXE: u32 = 1 << 7;
const CR1_UE: u32 = 1 << 13;
const CR1_RXNEIE: u32 = 1 << 5;
const CR1_TE: u32 = 1 << 3;
const CR1_RE: u32 = 1 << 2;

/// A USART at a fixed address.
pub struct StmUsart {
    regs: Registers,
}

impl StmUsart {
    /// Enables the transmitter and receiver of the USART at `base`, `clock_hz / baud` apart
    /// (16× oversampling), the receive interrupt off.
    ///
    /// # Safety
    /// `base` must be the address of an STM32 USART whose bus clock is on and that nothing
    /// else drives.
    pub unsafe fn new(base: usize, clock_hz: u32, baud: u32) -> Self {
        // SAFETY: forwarded contract.
        let regs = unsafe { Registers::at(base) };
        regs.write(BRR, clock_hz / baud);
        regs.write(CR1, CR1_UE | CR1_TE | CR1_RE);
        Self { regs }
    }

    /// Another handle on the same USART (the interrupt's, beside the main loop's).
    ///
    /// # Safety
    /// The two must not read the data register concurrently: the caller serialises them.
    pub unsafe fn alias(&self) -> Self {
        Self { regs: self.regs }
    }

    /// Turns the receive interrupt on or off.
    pub fn set_receive_interrupt(&self, on: bool) {
        if on {
            self.regs.modify(CR1, CR1_RXNEIE, 0);
        } else {
            self.regs.modify(CR1, 0, CR1_RXNEIE);
        }
    }

    /// The received byte, if one is waiting (reading it frees the receiver for the next).
    pub fn try_read_byte(&self) -> Option<u8> {
        (self.regs.read(SR) & SR_RXNE != 0).then(|| (self.regs.read(DR) & 0xff) as u8)
    }
}

impl Console for StmUsart {
    fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.regs.read(SR) & SR_TXE == 0 {}
            self.regs.write(DR, u32::from(b));
        }
    }
}
