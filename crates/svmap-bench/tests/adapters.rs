//! Every adapter places valid ranges; the exact address-ordered ones place
//! exactly where svmap does on the same sequence.

use svmap_bench::peers::{
    gaptree::GapTree, holelist::HoleList, offsetalloc::OffsetAlloc, rangealloc::RangeAlloc,
    svmap::Svmap, vmalloc::VmAlloc,
};
use svmap_bench::workload::{Churn, SplitMix64, PAGE};

const N: usize = 300;
const STEPS: usize = 3000;

/// Runs the churn sequence and returns every allocated (start, end).
fn trace<C: Churn>(mut c: C, to_range: impl Fn(C::Handle) -> (u64, u64)) -> Vec<(u64, u64)> {
    let mut rng = SplitMix64::new(7);
    let mut live: Vec<C::Handle> = (0..N).map(|_| c.alloc(rng.size())).collect();
    let mut out: Vec<(u64, u64)> = live.iter().map(|h| to_range(*h)).collect();
    for _ in 0..STEPS {
        let i = rng.below(N as u32) as usize;
        c.free(live[i]);
        live[i] = c.alloc(rng.size());
        out.push(to_range(live[i]));
        let mut r: Vec<(u64, u64)> = live.iter().map(|h| to_range(*h)).collect();
        r.sort_unstable();
        assert!(r.windows(2).all(|w| w[0].1 <= w[1].0), "overlap");
    }
    out
}

#[test]
fn ordered_peers_match_svmap() {
    for align in [4096u64, 2 << 20] {
        for top in [false, true] {
            let want = trace(Svmap::new(align, top), |h| h);
            assert!(want.iter().all(|r| r.0 % align == 0));
            assert_eq!(
                trace(GapTree::new(align, top), |h| h),
                want,
                "gap tree {align} {top}"
            );
            assert_eq!(
                trace(HoleList::new(align, top), |h| h),
                want,
                "hole list {align} {top}"
            );
            let vm = trace(VmAlloc::new(align, top), |h| (h.0, h.1 + 1));
            assert_eq!(vm, want, "vm-allocator {align} {top}");
        }
    }
}

#[test]
fn unordered_peers_are_valid() {
    for align in [4096u64, 2 << 20] {
        let r = trace(RangeAlloc::new(align), |h| h);
        assert!(r.iter().all(|r| r.0 % align == 0));
    }
    trace(OffsetAlloc::new(N), |h| {
        let a = h.unwrap();
        let s = u64::from(a.offset) * PAGE;
        (s, s + PAGE) // sizes are not exposed; check offsets are distinct
    });
}
