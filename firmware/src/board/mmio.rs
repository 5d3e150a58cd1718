//! A peripheral's register block at a fixed address, read and written a 32-bit word at a time.

/// The registers of one peripheral.
#[derive(Clone, Copy)]
pub struct Registers {
    base: usize,
}

impl Registers {
    /// The register block at `base`.
    ///
    /// # Safety
    /// `base` must be the address of the peripheral's register block, and whoever holds the
    /// handle (and its copies) must be the only one driving the peripheral.
    pub const unsafe fn at(base: usize) -> Self {
        Self { base }
    }

    /// Reads the register at `offset`.
    pub fn read(self, offset: usize) -> u32 {
        // SAFETY: `at`'s contract: `base + offset` is a register of this peripheral.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    /// Writes the register at `offset`.
    pub fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Sets `set` and clears `clear` in the register at `offset` (read, modify, write).
    #[cfg_attr(
        board_family = "mps2",
        expect(dead_code, reason = "the mps2 drivers write whole registers")
    )]
    pub fn modify(self, offset: usize, set: u32, clear: u32) {
        self.write(offset, (self.read(offset) & !clear) | set);
    }
}
