//! The heap, with a high-water mark: the module buffers, the apps' linear memories, and the
//! session's buffers live here.
//!
//! A board with little RAM sets aside a region for the apps' linear memories (whole 64 KiB
//! pages; its map's `_pages_start.._pages_end`): allocations of [`LARGE`] bytes or more are
//! served there first. The small, long- and short-lived allocations of the session, the
//! transfer and the interpreter then cannot fragment the space a page needs (on one 126 KiB
//! heap, 79 KiB free held no 64 KiB block).

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// Allocations this large go to the page region first.
pub const LARGE: usize = 32 * 1024;

/// The allocator with counters.
pub struct TrackedHeap {
    heap: LlffHeap,
    pages: LlffHeap,
    pages_start: AtomicUsize,
    pages_end: AtomicUsize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl TrackedHeap {
    /// An empty heap; [`TrackedHeap::init`] gives it memory.
    pub const fn empty() -> Self {
        Self {
            heap: LlffHeap::empty(),
            pages: LlffHeap::empty(),
            pages_start: AtomicUsize::new(0),
            pages_end: AtomicUsize::new(0),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Gives the heap `heap` (start, end) and, unless it is empty, `pages` for large
    /// allocations.
    ///
    /// # Safety
    /// Call once, before any allocation, with two disjoint regions nothing else uses.
    pub unsafe fn init(&self, heap: (usize, usize), pages: (usize, usize)) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.init(heap.0, heap.1.saturating_sub(heap.0)) }
        if pages.1 > pages.0 {
            // SAFETY: as above; disjoint from `heap`.
            unsafe { self.pages.init(pages.0, pages.1 - pages.0) }
            self.pages_start.store(pages.0, Ordering::Relaxed);
            self.pages_end.store(pages.1, Ordering::Relaxed);
        }
    }

    /// Bytes allocated now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever allocated at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn in_pages(&self, ptr: *mut u8) -> bool {
        let at = ptr as usize;
        at >= self.pages_start.load(Ordering::Relaxed)
            && at < self.pages_end.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded to one of two `LlffHeap`s over disjoint regions, sound
// allocators; a block is freed by the heap whose region holds it. The counters only observe.
unsafe impl GlobalAlloc for TrackedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut ptr = core::ptr::null_mut();
        if layout.size() >= LARGE && self.pages_end.load(Ordering::Relaxed) != 0 {
            // SAFETY: forwarded.
            ptr = unsafe { self.pages.alloc(layout) };
        }
        if ptr.is_null() {
            // SAFETY: forwarded.
            ptr = unsafe { self.heap.alloc(layout) };
        }
        if ptr.is_null() {
            // The panic that follows says only the size: say what the heap held.
            crate::log!(
                "heap: {} bytes refused (used {}, peak {})",
                layout.size(),
                self.used(),
                self.peak()
            );
        } else {
            let used = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(used, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.in_pages(ptr) {
            // SAFETY: forwarded: the page region's heap handed it out.
            unsafe { self.pages.dealloc(ptr, layout) };
        } else {
            // SAFETY: forwarded.
            unsafe { self.heap.dealloc(ptr, layout) };
        }
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
