//! svmap's [`VaHeap`]: allocate = [`VaHeap::alloc`] (the exact fit and the
//! carve of the hole it found), free = [`VaHeap::free`] (the merge with the
//! neighbouring holes).
//!
//! The heap starts with `[0, WINDOW)` free. [`AddressMap::find_fit`], which
//! the [`Svmap`] adapter uses, applies no `mmap_min_addr` floor (only the
//! kernel's `unmapped_area` search does), so on the same request sequence
//! both place every range at the same address.
//!
//! [`AddressMap::find_fit`]: svmap_core::AddressMap::find_fit
//! [`Svmap`]: super::svmap::Svmap

use svmap_core::VaHeap;

use crate::workload::{Churn, WINDOW};

/// svmap's hole-keyed heap over `[0, WINDOW)`.
pub struct SvmapHeap {
    heap: VaHeap,
    align: u64,
    topdown: bool,
}

impl SvmapHeap {
    /// A heap whose free space is the whole window, placing with `align`
    /// bytes alignment, highest first if `topdown`.
    pub fn new(align: u64, topdown: bool) -> Self {
        SvmapHeap {
            heap: VaHeap::with_free(0, WINDOW).expect("svmap-heap: the window is not empty"),
            align,
            topdown,
        }
    }

    /// The free holes in address order.
    pub fn holes(&self) -> Vec<(u64, u64)> {
        self.heap.holes().collect()
    }

    /// Panics if the heap's tree breaks one of its invariants.
    pub fn check(&self) {
        self.heap.check_invariants();
    }
}

impl Churn for SvmapHeap {
    type Handle = (u64, u64);

    #[inline]
    fn alloc(&mut self, bytes: u64) -> (u64, u64) {
        let a = self
            .heap
            .alloc(&super::svmap::request(bytes, self.align, self.topdown))
            .expect("svmap-heap: no space");
        (a, a + bytes)
    }

    #[inline]
    fn free(&mut self, (s, e): (u64, u64)) {
        self.heap.free(s, e).expect("svmap-heap: free");
    }

    fn reported_heap_bytes(&self) -> Option<usize> {
        Some(self.heap.heap_bytes())
    }
}
