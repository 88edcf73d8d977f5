//! rust-vmm `vm-allocator`'s `AddressAllocator` (`FirstMatch` / `LastMatch`).

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use crate::workload::{Churn, WINDOW};

/// `AddressAllocator` over `[0, WINDOW)`.
pub struct VmAlloc {
    a: AddressAllocator,
    align: u64,
    policy: AllocPolicy,
}

impl VmAlloc {
    /// `FirstMatch` (lowest) or, with `topdown`, `LastMatch` (highest).
    pub fn new(align: u64, topdown: bool) -> Self {
        VmAlloc {
            a: AddressAllocator::new(0, WINDOW).expect("vm-allocator: window"),
            align,
            policy: if topdown {
                AllocPolicy::LastMatch
            } else {
                AllocPolicy::FirstMatch
            },
        }
    }
}

/// A copyable stand-in for `RangeInclusive` (which has no `Default`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Range(pub u64, pub u64);

impl Churn for VmAlloc {
    type Handle = Range;

    fn alloc(&mut self, bytes: u64) -> Range {
        let r = self
            .a
            .allocate(bytes, self.align, self.policy)
            .expect("vm-allocator: allocate");
        Range(r.start(), r.end())
    }

    fn free(&mut self, h: Range) {
        let r = RangeInclusive::new(h.0, h.1).expect("vm-allocator: range");
        self.a.free(&r).expect("vm-allocator: free");
    }
}
