//! Every peer places valid ranges (inside its window, aligned, overlapping
//! no live range); the address-ordered ones place exactly where svmap (or,
//! for the padded gap tree at 2 MiB, a simple model of Linux's padded
//! search) places on the same sequence, and svmap's hole-keyed heap holds
//! exactly the complement of the live ranges as its holes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use svmap_bench::peers::{
    gaptree::GapTree, holelist::HoleList, holetree::HoleTree, offsetalloc::OffsetAlloc,
    rangealloc::RangeAlloc, svmap::Svmap, svmapheap::SvmapHeap, vmalloc::VmAlloc,
};
use svmap_bench::workload::{Churn, SplitMix64, PAGE, WINDOW};

const N: usize = 300;
const STEPS: usize = 3000;
const K4: u64 = PAGE;
const M2: u64 = 2 << 20;

/// The live ranges, checked on every allocation.
struct Live {
    by_start: BTreeMap<u64, u64>,
    window: u64,
    align: u64,
}

impl Live {
    fn new(window: u64, align: u64) -> Self {
        Live {
            by_start: BTreeMap::new(),
            window,
            align,
        }
    }

    /// Checks `[s, e)` for `bytes` bytes and records it.
    fn add(&mut self, (s, e): (u64, u64), bytes: u64, who: &str) {
        assert_eq!(e - s, bytes, "{who}: [{s:#x}, {e:#x}) has the wrong length");
        assert!(
            e <= self.window,
            "{who}: [{s:#x}, {e:#x}) leaves the window"
        );
        assert_eq!(s % self.align, 0, "{who}: {s:#x} is not aligned");
        if let Some((&ps, &pe)) = self.by_start.range(..e).next_back() {
            assert!(
                pe <= s,
                "{who}: [{s:#x}, {e:#x}) overlaps live [{ps:#x}, {pe:#x})"
            );
        }
        self.by_start.insert(s, e);
    }

    fn remove(&mut self, (s, e): (u64, u64)) {
        assert_eq!(self.by_start.remove(&s), Some(e), "freed an unknown range");
    }

    /// The free space of the window: the gaps between the live ranges,
    /// adjacent live ranges taken together.
    fn complement(&self) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let mut at = 0;
        for (&s, &e) in &self.by_start {
            if s > at {
                holes.push((at, s));
            }
            at = e;
        }
        if at < self.window {
            holes.push((at, self.window));
        }
        holes
    }
}

/// Runs the churn sequence of `seed` (N live ranges, STEPS steps),
/// checking every placement, and returns every allocated (start, end).
fn trace<C: Churn>(
    mut c: C,
    who: &str,
    window: u64,
    align: u64,
    to_range: impl Fn(C::Handle, u64) -> (u64, u64),
    seed: u64,
) -> Vec<(u64, u64)> {
    trace_live(&mut c, who, window, align, to_range, seed).0
}

/// [`trace`] on a borrowed implementation; also returns the live ranges at
/// the end.
fn trace_live<C: Churn>(
    c: &mut C,
    who: &str,
    window: u64,
    align: u64,
    to_range: impl Fn(C::Handle, u64) -> (u64, u64),
    seed: u64,
) -> (Vec<(u64, u64)>, Live) {
    let mut rng = SplitMix64::new(seed);
    let mut live = Live::new(window, align);
    let mut handles: Vec<(C::Handle, u64)> = Vec::with_capacity(N);
    let mut out = Vec::new();
    for _ in 0..N {
        let bytes = rng.size();
        let h = c.alloc(bytes);
        let r = to_range(h, bytes);
        live.add(r, bytes, who);
        out.push(r);
        handles.push((h, bytes));
    }
    for _ in 0..STEPS {
        let i = rng.below(N as u32) as usize;
        let (h, b) = handles[i];
        live.remove(to_range(h, b));
        c.free(h);
        let bytes = rng.size();
        let h = c.alloc(bytes);
        let r = to_range(h, bytes);
        live.add(r, bytes, who);
        out.push(r);
        handles[i] = (h, bytes);
    }
    (out, live)
}

fn same(h: (u64, u64), _bytes: u64) -> (u64, u64) {
    h
}

/// Linux's padded placement on a plain sorted list of holes: the lowest
/// (highest) hole of at least `length + align - PAGE` bytes, the range at
/// its aligned bottom (top).
struct PaddedModel {
    holes: Vec<(u64, u64)>,
    align: u64,
    topdown: bool,
}

impl PaddedModel {
    fn new(align: u64, topdown: bool) -> Self {
        PaddedModel {
            holes: vec![(0, WINDOW)],
            align,
            topdown,
        }
    }
}

impl Churn for PaddedModel {
    type Handle = (u64, u64);

    fn alloc(&mut self, len: u64) -> (u64, u64) {
        let need = len + self.align - PAGE;
        let fits = |&(s, e): &(u64, u64)| e - s >= need;
        let i = if self.topdown {
            self.holes.iter().rposition(fits)
        } else {
            self.holes.iter().position(fits)
        }
        .expect("model: no space");
        let (s, e) = self.holes[i];
        let a = if self.topdown {
            (e - len) / self.align * self.align
        } else {
            s.div_ceil(self.align) * self.align
        };
        let mut parts = Vec::new();
        if a > s {
            parts.push((s, a));
        }
        if a + len < e {
            parts.push((a + len, e));
        }
        self.holes.splice(i..=i, parts);
        (a, a + len)
    }

    fn free(&mut self, (s, e): (u64, u64)) {
        self.holes.push((s, e));
        self.holes.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(hs, he) in &self.holes {
            match merged.last_mut() {
                Some(last) if last.1 == hs => last.1 = he,
                _ => merged.push((hs, he)),
            }
        }
        self.holes = merged;
    }
}

#[test]
fn ordered_peers_match_svmap() {
    for align in [K4, M2] {
        for top in [false, true] {
            let want = trace(Svmap::new(align, top), "svmap", WINDOW, align, same, 7);
            assert_eq!(
                trace(
                    GapTree::new(align, top),
                    "gap-tree-exact",
                    WINDOW,
                    align,
                    same,
                    7
                ),
                want,
                "gap-tree-exact {align} {top}"
            );
            assert_eq!(
                trace(
                    HoleList::new(align, top),
                    "hole-list",
                    WINDOW,
                    align,
                    same,
                    7
                ),
                want,
                "hole-list {align} {top}"
            );
            let vm = trace(
                VmAlloc::new(align, top),
                "vm-allocator",
                WINDOW,
                align,
                |h, _| (h.0, h.1 + 1),
                7,
            );
            assert_eq!(vm, want, "vm-allocator {align} {top}");
            // Without padding (4 KiB) the padded search is the exact one.
            if align == K4 {
                assert_eq!(
                    trace(
                        HoleTree::new(align, top),
                        "gap-tree",
                        WINDOW,
                        align,
                        same,
                        7
                    ),
                    want,
                    "gap-tree {align} {top}"
                );
            }
        }
    }
}

#[test]
fn svmap_heap_places_as_svmap() {
    for align in [K4, 64 << 10, M2] {
        for top in [false, true] {
            for seed in [7, 8] {
                let want = trace(Svmap::new(align, top), "svmap", WINDOW, align, same, seed);
                let mut heap = SvmapHeap::new(align, top);
                let (got, live) = trace_live(&mut heap, "svmap-heap", WINDOW, align, same, seed);
                // The first placement that differs, with its step (the
                // first N placements are the fill).
                if let Some(i) = (0..want.len()).find(|&i| got.get(i) != Some(&want[i])) {
                    panic!(
                        "svmap-heap align {align:#x} topdown {top} seed {seed}: placement {i} \
                         (step {}) is {:x?}, svmap placed {:x?}",
                        i.checked_sub(N)
                            .map_or("fill".to_owned(), |s| s.to_string()),
                        got.get(i),
                        want[i]
                    );
                }
                assert_eq!(got.len(), want.len());
                heap.check();
                assert_eq!(
                    heap.holes(),
                    live.complement(),
                    "svmap-heap holes {align:#x} {top} {seed}"
                );
                // Giving every live range back leaves the whole window.
                for (&s, &e) in &live.by_start {
                    heap.free((s, e));
                }
                heap.check();
                assert_eq!(heap.holes(), vec![(0, WINDOW)]);
            }
        }
    }
}

#[test]
fn svmap_heap_takes_the_lowest_page() {
    // `find_fit` has no `mmap_min_addr` floor: both start at address 0
    // (lowest first) and end at the window's top (highest first).
    for (top, want) in [(false, (0, PAGE)), (true, (WINDOW - PAGE, WINDOW))] {
        assert_eq!(Svmap::new(K4, top).alloc(PAGE), want);
        let mut heap = SvmapHeap::new(K4, top);
        assert_eq!(heap.alloc(PAGE), want);
        let rest = if top {
            (0, WINDOW - PAGE)
        } else {
            (PAGE, WINDOW)
        };
        assert_eq!(heap.holes(), vec![rest]);
    }
}

#[test]
fn gap_tree_matches_the_padded_model() {
    for align in [K4, 64 << 10, M2] {
        for top in [false, true] {
            for seed in [7, 8] {
                let want = trace(
                    PaddedModel::new(align, top),
                    "model",
                    WINDOW,
                    align,
                    same,
                    seed,
                );
                let got = trace(
                    HoleTree::new(align, top),
                    "gap-tree",
                    WINDOW,
                    align,
                    same,
                    seed,
                );
                assert_eq!(got, want, "gap-tree {align} {top} seed {seed}");
            }
        }
    }
}

#[test]
fn padded_search_skips_holes_an_exact_fit_would_take() {
    // One 2 MiB-aligned hole of exactly 2 MiB below the rest of the
    // window: the exact fit takes it, the padded search (which needs
    // 4 MiB - 4 KiB) goes above it.
    let mut exact = GapTree::new(M2, false);
    let mut padded = HoleTree::new(M2, false);
    for c in [
        &mut exact as &mut dyn Churn<Handle = (u64, u64)>,
        &mut padded,
    ] {
        let a = c.alloc(M2);
        let b = c.alloc(PAGE);
        assert_eq!((a, b), ((0, M2), (M2, M2 + PAGE)));
        c.free(a);
    }
    assert_eq!(exact.alloc(M2), (0, M2));
    assert_eq!(padded.alloc(M2), (2 * M2, 3 * M2));
}

#[test]
fn gap_tree_stays_consistent() {
    for align in [K4, M2] {
        for top in [false, true] {
            let mut t = HoleTree::new(align, top);
            let mut rng = SplitMix64::new(11);
            let mut live: Vec<(u64, u64)> = (0..200).map(|_| t.alloc(rng.size())).collect();
            assert!(t.is_consistent());
            for _ in 0..2000 {
                let i = rng.below(200) as usize;
                t.free(live[i]);
                assert!(t.is_consistent(), "after a free ({align} {top})");
                live[i] = t.alloc(rng.size());
                assert!(t.is_consistent(), "after an allocation ({align} {top})");
            }
            // Freeing everything leaves the one hole of the empty window.
            for r in live {
                t.free(r);
            }
            assert_eq!(t.holes(), vec![(0, WINDOW)]);
        }
    }
}

#[test]
fn unordered_peers_are_valid() {
    for align in [K4, M2] {
        trace(
            RangeAlloc::new(align),
            "range-alloc",
            WINDOW,
            align,
            same,
            7,
        );
    }
    // offset-allocator counts pages with u32 offsets.
    trace(
        OffsetAlloc::new(N),
        "offset-allocator",
        u64::from(u32::MAX) * PAGE,
        PAGE,
        |h, bytes| {
            let s = u64::from(h.expect("handle").offset) * PAGE;
            (s, s + bytes)
        },
        7,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random interleavings of allocations and frees with sizes up to
    /// 4 MiB: every peer stays valid, the gap tree places exactly as
    /// the padded model and stays consistent, and svmap's heap places
    /// exactly as svmap and holds the complement of the live ranges.
    #[test]
    fn random_sequences(
        ops in prop::collection::vec((any::<bool>(), 1u64..=1024, any::<u32>()), 1..400),
        align_sel in 0usize..3,
        top in any::<bool>(),
    ) {
        let align = [K4, 64 << 10, M2][align_sel];
        let mut tree = HoleTree::new(align, top);
        let mut model = PaddedModel::new(align, top);
        let mut exact = GapTree::new(align, top);
        let mut list = HoleList::new(align, top);
        let mut sv = Svmap::new(align, top);
        let mut heap = SvmapHeap::new(align, top);
        let mut ra = RangeAlloc::new(align);
        let mut lt = Live::new(WINDOW, align);
        let mut le = Live::new(WINDOW, align);
        let mut ll = Live::new(WINDOW, align);
        let mut la = Live::new(WINDOW, align);
        let mut live: Vec<[(u64, u64); 4]> = Vec::new();
        for (alloc, pages, pick) in ops {
            if alloc || live.is_empty() {
                let bytes = pages * PAGE;
                let t = tree.alloc(bytes);
                prop_assert_eq!(t, model.alloc(bytes));
                lt.add(t, bytes, "gap-tree");
                let e = exact.alloc(bytes);
                prop_assert_eq!(e, sv.alloc(bytes));
                le.add(e, bytes, "gap-tree-exact");
                prop_assert_eq!(heap.alloc(bytes), e);
                let l = list.alloc(bytes);
                prop_assert_eq!(l, e);
                ll.add(l, bytes, "hole-list");
                let a = ra.alloc(bytes);
                la.add(a, bytes, "range-alloc");
                live.push([t, e, l, a]);
            } else {
                let [t, e, l, a] = live.swap_remove(pick as usize % live.len());
                tree.free(t);
                model.free(t);
                lt.remove(t);
                exact.free(e);
                sv.free(e);
                heap.free(e);
                le.remove(e);
                list.free(l);
                ll.remove(l);
                ra.free(a);
                la.remove(a);
            }
            prop_assert!(tree.is_consistent());
            prop_assert_eq!(tree.holes(), model.holes.clone());
            heap.check();
            prop_assert_eq!(heap.holes(), le.complement());
        }
    }
}
