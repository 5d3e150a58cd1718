//! A millisecond clock from SysTick, and the device's idea of wall-clock time.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;

static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));
static UNIX_BASE_S: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick at 1 kHz on a core clocked at `core_clock_hz`.
pub fn start(mut syst: SYST, core_clock_hz: u32) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(core_clock_hz / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // From here SysTick is only read, through `now_ms` and `jitter`.
}

/// Milliseconds since boot.
pub fn now_ms() -> u64 {
    critical_section::with(|cs| MILLIS.borrow(cs).get())
}

/// Sub-millisecond jitter (the SysTick down-counter), for mixing into the RNG seed.
pub fn jitter() -> u32 {
    SYST::get_current()
}

/// Sets the wall-clock time at boot (from the provisioning block): boards without an RTC
/// learn the time from whoever provisioned them.
pub fn set_unix_base(seconds: u64) {
    UNIX_BASE_S.store(
        u32::try_from(seconds).unwrap_or(u32::MAX),
        Ordering::Relaxed,
    );
}

/// Unix seconds now, if known.
pub fn unix_now() -> Option<u64> {
    let base = UNIX_BASE_S.load(Ordering::Relaxed);
    (base != 0).then(|| u64::from(base) + now_ms() / 1000)
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let millis = MILLIS.borrow(cs);
        millis.set(millis.get() + 1);
    });
}
