//! `offset-allocator` (Sebastian Aaltonen's two-level bitmap bins): O(1),
//! no alignment beyond its unit, no address order. The speed reference.

use offset_allocator::{Allocation, Allocator};

use crate::workload::{Churn, PAGE};

/// `Allocator<u32>` counting in 4 KiB pages over `u32::MAX` pages (16 TiB;
/// its offsets are `u32`, so it cannot span the 2^47 window).
pub struct OffsetAlloc {
    a: Allocator<u32>,
}

impl OffsetAlloc {
    /// An allocator with room for `n` live ranges (and their free regions).
    pub fn new(n: usize) -> Self {
        let max_allocs = (2 * n + 64).min(u32::MAX as usize - 2) as u32;
        OffsetAlloc {
            a: Allocator::with_max_allocs(u32::MAX, max_allocs),
        }
    }
}

impl Churn for OffsetAlloc {
    type Handle = Option<Allocation<u32>>;

    #[inline]
    fn alloc(&mut self, bytes: u64) -> Self::Handle {
        let pages = (bytes / PAGE) as u32;
        Some(self.a.allocate(pages).expect("offset-allocator: allocate"))
    }

    #[inline]
    fn free(&mut self, h: Self::Handle) {
        self.a.free(h.expect("offset-allocator: free of nothing"));
    }
}
