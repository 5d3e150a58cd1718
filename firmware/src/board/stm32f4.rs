//! STM32F405/F407 boards: QEMU's netduinoplus2 (an STM32F405, the MCU of the Olimex
//! STM32-H405) and Renode's STM32F4 Discovery (STM32F407). Same USART block, the same RAM
//! budget in the memory maps of each emulator's model (`memory/stm32f405.x`, `stm32f407.x`),
//! no Ethernet: the gateway is reached over a serial link.
//!
//! USART1 (`0x4001_1000`) is the console, USART2 (`0x4000_4400`, interrupt 38) the link to
//! the network co-processor (the renode-manager's bridge in emulation). Its receiver fills a
//! ring from the interrupt; when the ring is full the interrupt is switched off and the byte
//! stays in the USART, so the emulator (and a co-processor with flow control) holds the rest
//! back and nothing is lost. The core runs at 168 MHz, as both emulators clock it; the clock
//! tree and the pins are as the emulators leave them (real silicon would need the PLL and the
//! pins' alternate functions set: not done, because it could not be tested here).

use core::cell::RefCell;

use cortex_m::peripheral::NVIC;
use cortex_m_rt::exception;
use critical_section::Mutex;

use super::mmio::Registers;
use super::stm32_usart::StmUsart;
use super::{BoardInfo, Console};
use crate::serial::{SerialPort, SerialTransport};

/// The console's type.
pub type ConsoleUart = StmUsart;
/// How this board reaches a gateway.
pub type BoardTransport = SerialTransport<LinkUart>;

#[cfg(feature = "stm32f405")]
const MCU: &str = "OlimexStm32H405";
#[cfg(all(feature = "stm32f407", not(feature = "stm32f405")))]
const MCU: &str = "Stm32F4Disco";

/// This image's board. RAM (`memory/stm32f40x.x`): 128 KiB of SRAM for a 48 KiB stack,
/// `.data`, `.bss` and an 80 KiB heap; 64 KiB (the CCM on the real part) for the one app
/// page applications get. Modules are kept small enough that a module and its compiled form
/// fit the heap beside the session.
pub const INFO: BoardInfo = BoardInfo {
    mcu: MCU,
    cpu: "cortex-m4f",
    core_clock_hz: 168_000_000,
    app_ram_bytes: 64 * 1024,
    max_module_len: 16 * 1024,
    // The sensor's calls take 16.5 KiB; what is left of the heap beside the session.
    value_stack_bytes: 24 * 1024,
};

const RCC: usize = 0x4002_3800;
const RCC_APB1ENR: usize = 0x40;
const RCC_APB2ENR: usize = 0x44;
const USART2_EN: u32 = 1 << 17;
const USART1_EN: u32 = 1 << 4;
const USART1: usize = 0x4001_1000;
const USART2: usize = 0x4000_4400;
const USART2_IRQ: u16 = 38;
/// APB2 (USART1) and APB1 (USART2) at 168 MHz with the usual /2 and /4 dividers.
const APB2_HZ: u32 = 84_000_000;
const APB1_HZ: u32 = 42_000_000;
const BAUD: u32 = 115_200;
/// Received bytes the interrupt keeps until the main loop takes them.
const RX_RING: usize = 1024;

/// Turns on the bus clock of a peripheral (`bits` of an RCC enable register at `offset`).
fn enable_clock(offset: usize, bits: u32) {
    // SAFETY: the RCC; the firmware touches only its enable registers, once per peripheral at
    // start-up, and setting an enable bit has no other effect.
    let rcc = unsafe { Registers::at(RCC) };
    rcc.modify(offset, bits, 0);
}

/// The console USART. Call once.
pub fn console() -> StmUsart {
    enable_clock(RCC_APB2ENR, USART1_EN);
    // SAFETY: USART1, its clock just enabled; only the log module drives it.
    unsafe { StmUsart::new(USART1, APB2_HZ, BAUD) }
}

/// The serial link to the network co-processor. Call once.
pub fn transport(_random_seed: u64) -> Result<BoardTransport, &'static str> {
    enable_clock(RCC_APB1ENR, USART2_EN);
    // SAFETY: USART2, its clock just enabled; from here only `LinkUart` and the interrupt
    // (which takes the ring's lock, as `LinkUart` does) drive it.
    let usart = unsafe { StmUsart::new(USART2, APB1_HZ, BAUD) };
    // SAFETY: the interrupt's handle; it reads the data register only inside the lock.
    let for_interrupt = unsafe { usart.alias() };
    critical_section::with(|cs| RX.borrow(cs).replace(Some((for_interrupt, Ring::new()))));
    usart.set_receive_interrupt(true);
    // SAFETY: its handler (`DefaultHandler` below) only touches what the lock guards.
    unsafe { NVIC::unmask(Irq(USART2_IRQ)) };
    crate::log!("net: serial link on usart2 at {BAUD} baud, no ethernet");
    Ok(SerialTransport::new(LinkUart { usart }))
}

/// A fixed-size ring of received bytes.
struct Ring {
    bytes: [u8; RX_RING],
    start: usize,
    len: usize,
}

impl Ring {
    const fn new() -> Self {
        Self {
            bytes: [0; RX_RING],
            start: 0,
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        self.bytes[(self.start + self.len) % RX_RING] = byte;
        self.len += 1;
    }

    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for slot in &mut out[..n] {
            *slot = self.bytes[self.start];
            self.start = (self.start + 1) % RX_RING;
        }
        self.len -= n;
        n
    }
}

static RX: Mutex<RefCell<Option<(StmUsart, Ring)>>> = Mutex::new(RefCell::new(None));

/// Moves received bytes into the ring; a full ring switches the interrupt off, in the USART
/// and in the NVIC: the byte left in the USART keeps its interrupt line raised (QEMU does not
/// lower it when the enable bit goes), and an unmasked line would call the handler forever.
fn drain_receiver(usart: &StmUsart, ring: &mut Ring) {
    while ring.len < RX_RING {
        match usart.try_read_byte() {
            Some(byte) => ring.push(byte),
            None => return,
        }
    }
    usart.set_receive_interrupt(false);
    NVIC::mask(Irq(USART2_IRQ));
}

/// The link USART as the serial transport uses it.
pub struct LinkUart {
    usart: StmUsart,
}

impl SerialPort for LinkUart {
    fn write_all(&mut self, bytes: &[u8]) {
        self.usart.write_bytes(bytes);
    }

    fn read_available(&mut self, out: &mut [u8]) -> usize {
        critical_section::with(|cs| {
            let mut rx = RX.borrow(cs).borrow_mut();
            let Some((usart, ring)) = rx.as_mut() else {
                return 0;
            };
            let n = ring.take(out);
            // Room again: what waited in the USART comes in, and the interrupt with it.
            drain_receiver(usart, ring);
            if ring.len < RX_RING {
                usart.set_receive_interrupt(true);
                // SAFETY: the handler touches only what this lock guards.
                unsafe { NVIC::unmask(Irq(USART2_IRQ)) };
            }
            n
        })
    }
}

/// An interrupt number for the NVIC.
#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: 38 is USART2's line on the STM32F405/F407, below the 82 lines they have.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// Every device interrupt lands here (the vector table is cortex-m-rt's generic one): the
/// link's receiver is served; anything else is masked, once, and logged.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == USART2_IRQ as i16 {
        critical_section::with(|cs| {
            if let Some((usart, ring)) = RX.borrow(cs).borrow_mut().as_mut() {
                drain_receiver(usart, ring);
            }
        });
        return;
    }
    if let Ok(line) = u16::try_from(irqn) {
        NVIC::mask(Irq(line));
    }
    crate::log!("interrupt {irqn} unexpected; masked");
}
