//! The stack's high-water mark: at boot the 64 KiB below the stack pointer are painted with a
//! pattern; later, the deepest word no longer holding it says how deep the stack has been.

const PAINT: u32 = 0xcccc_cccc;
/// How far below the boot stack pointer is painted (and so the most that can be measured).
pub const PAINTED: usize = 64 * 1024;
static mut BOOT_SP: usize = 0;

/// Paints the region. Call first thing in `main`, once.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    // Leave what `main`'s own frame may use right now untouched.
    let top = sp - 256;
    let bottom = top - PAINTED;
    let mut at = bottom;
    while at < top {
        // SAFETY: below the stack pointer, inside RAM (the stack has ~1.9 MiB below it) and
        // not in use: nothing lives there until the stack grows into it.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
    // SAFETY: written once here, before anything reads it; single core, no interrupts read it.
    unsafe { BOOT_SP = sp };
}

/// Bytes of stack used at most so far (below the boot stack pointer, up to [`PAINTED`]).
pub fn high_water() -> usize {
    // SAFETY: only `paint` writes it, before any caller of this function exists.
    let sp = unsafe { BOOT_SP };
    if sp == 0 {
        return 0;
    }
    let bottom = sp - 256 - PAINTED;
    let mut at = bottom;
    while at < sp - 256 {
        // SAFETY: the painted region, see `paint`.
        if unsafe { core::ptr::read_volatile(at as *const u32) } != PAINT {
            break;
        }
        at += 4;
    }
    sp - at
}
