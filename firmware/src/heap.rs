//! The heap, with a high-water mark: the module buffers, the apps' linear memories, and the
//! session's buffers live here.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// Bytes of heap this image sets aside.
pub const HEAP_SIZE: usize = 2 * 1024 * 1024;

/// The allocator with counters.
pub struct TrackedHeap {
    heap: LlffHeap,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl TrackedHeap {
    /// An empty heap; [`TrackedHeap::init`] gives it memory.
    pub const fn empty() -> Self {
        Self {
            heap: LlffHeap::empty(),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Gives the heap `size` bytes at `start`.
    ///
    /// # Safety
    /// Call once, before any allocation, with memory nothing else uses.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.heap.init(start, size) }
    }

    /// Bytes allocated now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever allocated at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded to `LlffHeap`, a sound allocator; the counters only observe.
unsafe impl GlobalAlloc for TrackedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let ptr = unsafe { self.heap.alloc(layout) };
        if !ptr.is_null() {
            let used = self.used.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(used, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { self.heap.dealloc(ptr, layout) };
        self.used.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
