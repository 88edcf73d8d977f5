//! gfx-rs `range-alloc`: a sorted `Vec` of free ranges, best fit.

use range_alloc::RangeAllocator;

use crate::workload::{Churn, WINDOW};

/// `RangeAllocator<u64>` over `[0, WINDOW)`. It has one policy, best fit
/// (smallest fitting free range); it cannot place lowest or highest first.
pub struct RangeAlloc {
    a: RangeAllocator<u64>,
    align: u64,
}

impl RangeAlloc {
    /// Best fit with `align` bytes alignment.
    pub fn new(align: u64) -> Self {
        RangeAlloc {
            a: RangeAllocator::new(0..WINDOW),
            align,
        }
    }
}

impl Churn for RangeAlloc {
    type Handle = (u64, u64);

    fn alloc(&mut self, bytes: u64) -> (u64, u64) {
        let r = self
            .a
            .allocate_range_aligned(bytes, self.align)
            .expect("range-alloc: allocate");
        (r.start, r.end)
    }

    fn free(&mut self, (s, e): (u64, u64)) {
        self.a.free_range(s..e);
    }
}
