//! The stack's high-water mark: at boot the stack below the stack pointer (at most 64 KiB of
//! it, never below the map's `_stack_limit`) is painted with a pattern; later, the deepest word
//! no longer holding it says how deep the stack has been.

const PAINT: u32 = 0xcccc_cccc;
/// How far below the boot stack pointer is painted at most.
pub const PAINTED: usize = 64 * 1024;
/// What `main`'s own frame may use while painting; left untouched.
const MARGIN: usize = 256;
static mut BOOT_SP: usize = 0;

unsafe extern "C" {
    /// The lowest address of the stack's region (the board's map in `memory/`).
    static _stack_limit: u8;
    /// The top of the stack (cortex-m-rt's `_stack_start`, or the map's).
    static _stack_start: u8;
}

fn limit() -> usize {
    core::ptr::addr_of!(_stack_limit) as usize
}

/// The stack region's size, bytes.
pub fn size() -> usize {
    (core::ptr::addr_of!(_stack_start) as usize).saturating_sub(limit())
}

/// The painted region below `sp`.
fn painted(sp: usize) -> (usize, usize) {
    let top = sp - MARGIN;
    let bottom = top.saturating_sub(PAINTED).max(limit());
    (bottom, top)
}

/// Paints the region. Call first thing in `main`, once.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let (bottom, top) = painted(sp);
    let mut at = bottom;
    while at < top {
        // SAFETY: below the stack pointer and above the stack region's limit, inside RAM and
        // not in use: nothing lives there until the stack grows into it.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
    // SAFETY: written once here, before anything reads it; single core, no interrupts read it.
    unsafe { BOOT_SP = sp };
}

/// Bytes of stack used at most so far (below the boot stack pointer, up to what was painted).
pub fn high_water() -> usize {
    // SAFETY: only `paint` writes it, before any caller of this function exists.
    let sp = unsafe { BOOT_SP };
    if sp == 0 {
        return 0;
    }
    let (bottom, top) = painted(sp);
    let mut at = bottom;
    while at < top {
        // SAFETY: the painted region, see `paint`.
        if unsafe { core::ptr::read_volatile(at as *const u32) } != PAINT {
            break;
        }
        at += 4;
    }
    sp - at
}
