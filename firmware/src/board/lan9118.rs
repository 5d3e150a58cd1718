//! SMSC LAN9118 Ethernet controller, polled, as a smoltcp device.
//!
//! The mps2 boards carry one at `0x4020_0000` (QEMU models it; `-nic user,model=lan9118`).
//! Frames move through the chip's FIFOs a 32-bit word at a time: a status word then the data
//! for each received frame (the chip appends the 4-byte FCS), and two command words then the
//! data for each frame sent.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::mmio::Registers;

const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

const BYTE_TEST_VALUE: u32 = 0x8765_4321;
const HW_CFG_SOFT_RESET: u32 = 1;
const PMT_CTRL_READY: u32 = 1;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_STATUS_OVERRUN_OK: u32 = 1 << 2;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_FULL_DUPLEX: u32 = 1 << 20;
const MAC_CR_TX_ENABLE: u32 = 1 << 3;
const MAC_CR_RX_ENABLE: u32 = 1 << 2;
const RX_STATUS_ERROR: u32 = 1 << 15;
const TX_FIRST_SEGMENT: u32 = 1 << 13;
const TX_LAST_SEGMENT: u32 = 1 << 12;
const FCS_LEN: usize = 4;
/// Ethernet MTU plus header: the largest frame smoltcp sends or accepts.
const MAX_FRAME: usize = 1514;
/// Register polls before a register that should settle is declared stuck.
const SETTLE_POLLS: u32 = 100_000;

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicError {
    /// No LAN9118 answers at the address (byte-order test failed).
    NotPresent(u32),
    /// The chip did not come out of reset.
    ResetTimeout,
}

/// The chip's registers, and its operations built on them.
#[derive(Clone, Copy)]
struct Regs(Registers);

impl core::ops::Deref for Regs {
    type Target = Registers;

    fn deref(&self) -> &Registers {
        &self.0
    }
}

impl Regs {
    fn wait_clear(self, offset: usize, mask: u32) -> bool {
        (0..SETTLE_POLLS).any(|_| self.read(offset) & mask == 0)
    }

    fn mac_read(self, register: u32) -> u32 {
        self.wait_clear(MAC_CSR_CMD, MAC_CSR_BUSY);
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | register);
        self.wait_clear(MAC_CSR_CMD, MAC_CSR_BUSY);
        self.read(MAC_CSR_DATA)
    }

    fn mac_write(self, register: u32, value: u32) {
        self.wait_clear(MAC_CSR_CMD, MAC_CSR_BUSY);
        self.write(MAC_CSR_DATA, value);
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | register);
        self.wait_clear(MAC_CSR_CMD, MAC_CSR_BUSY);
    }

    fn send(self, frame: &[u8]) {
        let len = frame.len() as u32;
        self.write(TX_DATA_FIFO, TX_FIRST_SEGMENT | TX_LAST_SEGMENT | len);
        self.write(TX_DATA_FIFO, (len << 16) | len);
        for word in frame.chunks(4) {
            let mut bytes = [0u8; 4];
            bytes[..word.len()].copy_from_slice(word);
            self.write(TX_DATA_FIFO, u32::from_le_bytes(bytes));
        }
        // Transmit statuses are not needed: drain them so the status FIFO never fills.
        while (self.read(TX_FIFO_INF) >> 16) & 0xff != 0 {
            self.read(TX_STATUS_FIFO);
        }
    }
}

/// Frames received and dropped, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct NicStats {
    /// Frames handed to the stack.
    pub received: u32,
    /// Frames the chip flagged as bad or that were too large.
    pub dropped: u32,
    /// Frames sent.
    pub sent: u32,
}

/// A polled LAN9118.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx: [u8; 2048],
    tx: [u8; 2048],
    stats: NicStats,
}

impl Lan9118 {
    /// Resets the controller at `base` and enables transmit and receive.
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118 register block that nothing else drives.
    pub unsafe fn new(base: usize) -> Result<Self, NicError> {
        // SAFETY: forwarded contract.
        let regs = Regs(unsafe { Registers::at(base) });
        let test = regs.read(BYTE_TEST);
        if test != BYTE_TEST_VALUE {
            return Err(NicError::NotPresent(test));
        }
        regs.write(HW_CFG, HW_CFG_SOFT_RESET);
        if !regs.wait_clear(HW_CFG, HW_CFG_SOFT_RESET) {
            return Err(NicError::ResetTimeout);
        }
        if !(0..SETTLE_POLLS).any(|_| regs.read(PMT_CTRL) & PMT_CTRL_READY != 0) {
            return Err(NicError::ResetTimeout);
        }
        regs.write(INT_EN, 0);
        let low = regs.mac_read(MAC_ADDRL).to_le_bytes();
        let high = regs.mac_read(MAC_ADDRH).to_le_bytes();
        let mac = [low[0], low[1], low[2], low[3], high[0], high[1]];
        regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_STATUS_OVERRUN_OK);
        regs.mac_write(
            MAC_CR,
            MAC_CR_FULL_DUPLEX | MAC_CR_TX_ENABLE | MAC_CR_RX_ENABLE,
        );
        Ok(Self {
            regs,
            mac,
            rx: [0; 2048],
            tx: [0; 2048],
            stats: NicStats::default(),
        })
    }

    /// The chip's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Counters since boot.
    pub fn stats(&self) -> NicStats {
        self.stats
    }

    /// Reads the next good frame into `self.rx`; its length without the FCS.
    fn next_frame(&mut self) -> Option<usize> {
        loop {
            if (self.regs.read(RX_FIFO_INF) >> 16) & 0xff == 0 {
                return None;
            }
            let status = self.regs.read(RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3fff) as usize;
            let words = len.div_ceil(4);
            let fits = len <= self.rx.len() && len > FCS_LEN;
            for i in 0..words {
                let word = self.regs.read(RX_DATA_FIFO).to_le_bytes();
                if fits {
                    let at = i * 4;
                    let n = (len - at).min(4);
                    self.rx[at..at + n].copy_from_slice(&word[..n]);
                }
            }
            if fits && status & RX_STATUS_ERROR == 0 {
                self.stats.received += 1;
                return Some(len - FCS_LEN);
            }
            self.stats.dropped += 1;
        }
    }
}

impl phy::Device for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.next_frame()?;
        Some((
            RxToken {
                frame: &self.rx[..len],
            },
            TxToken {
                regs: self.regs,
                buffer: &mut self.tx,
                sent: &mut self.stats.sent,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            regs: self.regs,
            buffer: &mut self.tx,
            sent: &mut self.stats.sent,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(1);
        caps
    }
}

/// A received frame.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct TxToken<'a> {
    regs: Regs,
    buffer: &'a mut [u8; 2048],
    sent: &'a mut u32,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME);
        let result = f(&mut self.buffer[..len]);
        self.regs.send(&self.buffer[..len]);
        *self.sent += 1;
        result
    }
}
