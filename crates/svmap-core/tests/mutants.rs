//! Edge cases of the searches, each checked against the reference model
//! (`svmap_core::model::ModelMap`, which applies the kernel's rules
//! literally) and, where the answer is easy to derive by hand, against that
//! answer too. Every test here catches at least one mutant of `search.rs` or
//! `map.rs` that the rest of the suite let through (`docs/testing.md` lists
//! them): one-byte holes and windows, alignment offsets just below an
//! alignment class, unaligned window limits, the guard-gap boundary.

use svmap_core::linux::Space;
use svmap_core::model::ModelMap;
use svmap_core::{
    AddressMap, FitError, FitRequest, SearchError, SearchParams, SearchStats, UnmappedAreaInfo,
    VmaFlags,
};

const TOP: u64 = 1 << 47;
const NONE: VmaFlags = VmaFlags::NONE;
const DOWN: VmaFlags = VmaFlags::GROWSDOWN;
const UP: VmaFlags = VmaFlags::GROWSUP;

fn maps(vmas: &[(u64, u64, VmaFlags)]) -> (AddressMap, ModelMap) {
    let mut m = AddressMap::new();
    let mut model = ModelMap::new();
    for &(s, e, f) in vmas {
        m.insert(s, e, f).unwrap();
        Space::insert(&mut model, s, e, f).unwrap();
    }
    (m, model)
}

/// `unmapped_area` on both, asserting that they agree.
fn area(
    m: &AddressMap,
    model: &ModelMap,
    info: &UnmappedAreaInfo,
    p: &SearchParams,
) -> Result<u64, SearchError> {
    let got = m.unmapped_area(info, p);
    assert_eq!(got, model.unmapped_area(info, p), "{info:?} {p:?}");
    got
}

/// `find_fit` on both, asserting that they agree.
fn fit(
    m: &AddressMap,
    model: &ModelMap,
    req: &FitRequest,
    p: &SearchParams,
) -> Result<u64, FitError> {
    let got = m.find_fit(req, p);
    assert_eq!(got, model.find_fit(req, p), "{req:?} {p:?}");
    got
}

fn req(length: u64, low: u64, high: u64, align: u64, align_offset: u64) -> FitRequest {
    FitRequest {
        length,
        low,
        high,
        align,
        align_offset,
        topdown: false,
        respect_guard_gaps: false,
    }
}

fn info(length: u64, low_limit: u64, high_limit: u64) -> UnmappedAreaInfo {
    UnmappedAreaInfo {
        length,
        low_limit,
        high_limit,
        ..Default::default()
    }
}

/// Byte-granular parameters for small universes: no floor.
fn bytes(stack_guard_gap: u64, growsup_guard: bool) -> SearchParams {
    SearchParams {
        mmap_min_addr: 0,
        stack_guard_gap,
        growsup_guard,
        page_size: 1,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick(&mut self, xs: &[u64]) -> u64 {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ----- the five surviving mutants, one test each ----------------------

/// An offset of `align - 1` is not a multiple of any alignment class, so
/// the class prune must not be used. The only fit below the top is
/// `[0x1ffff, 0x30000)`, one byte short of holding a 64 KiB-aligned range of
/// the length: pruning with the 64 KiB room skips it.
#[test]
fn fit_with_an_offset_of_align_minus_one_is_not_class_pruned() {
    let (m, model) = maps(&[(0x10000, 0x1ffff, NONE), (0x30000, 0x40000, NONE)]);
    let p = SearchParams::default();
    let r = req(0x10001, 0, TOP, 0x10000, 0xffff);
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x1ffff));
    let down = FitRequest { topdown: true, ..r };
    // Top-down: the highest start congruent to 0xffff that ends below 2^47.
    let top = TOP - 0x10001;
    assert_eq!(
        fit(&m, &model, &down, &p),
        Ok(top - (top - 0xffff) % 0x10000)
    );
    // The same hole for a 2 MiB alignment with an offset one below it.
    let (m, model) = maps(&[(0x10000, 0x1fffff, NONE), (0x210000, 0x400000, NONE)]);
    let r = req(0x10001, 0, TOP, 0x200000, 0x1fffff);
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x1fffff));
}

/// A hole of one byte holds a fit of length 1 (`s == e` is not empty).
#[test]
fn fit_of_one_byte_in_a_one_byte_hole() {
    let (m, model) = maps(&[(0x1000, 0x2000, NONE), (0x2001, 0x3000, NONE)]);
    let p = SearchParams::default();
    let r = req(1, 0x1000, 0x3000, 1, 0);
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x2000));
    let down = FitRequest { topdown: true, ..r };
    assert_eq!(fit(&m, &model, &down, &p), Ok(0x2000));
    // Length 2 does not fit in it.
    let r2 = req(2, 0x1000, 0x3000, 1, 0);
    assert_eq!(fit(&m, &model, &r2, &p), Err(FitError::NoSpace));
}

/// A window of one byte holds an area of length 1.
#[test]
fn unmapped_area_in_a_one_byte_window() {
    let (m, model) = maps(&[]);
    let p = SearchParams::default();
    let i = info(1, 0x10000, 0x10001);
    assert_eq!(area(&m, &model, &i, &p), Ok(0x10000));
    let down = UnmappedAreaInfo { topdown: true, ..i };
    assert_eq!(area(&m, &model, &down, &p), Ok(0x10000));
    let two = info(2, 0x10000, 0x10001);
    assert_eq!(area(&m, &model, &two, &p), Err(SearchError::EmptyWindow));
}

/// The kernel's bottom-up guard test `vm_start_gap(next) < gap + length - 1`
/// is strict: an area whose last byte is the guard gap's first byte is
/// accepted (see the doc of `unmapped_area`). Here the area
/// `[0x101000, 0x200001)` ends one byte into the guard gap
/// `[0x200000, 0x200800)` of the stack.
#[test]
fn bottom_up_guard_test_is_strict_like_the_kernel() {
    let (m, model) = maps(&[(0x100000, 0x101000, NONE), (0x200800, 0x300000, DOWN)]);
    let p = SearchParams {
        stack_guard_gap: 0x800,
        ..SearchParams::default()
    };
    let i = info(0xff001, 0x101000, TOP);
    assert_eq!(area(&m, &model, &i, &p), Ok(0x101000));
    // One byte longer and the padded area's last byte is past the guard
    // start: retry above the stack.
    let i = info(0xff002, 0x101000, TOP);
    assert_eq!(area(&m, &model, &i, &p), Ok(0x300000));
    // With any padding the padded area is longer than the area, so the
    // area stays out of the guard gap: an align_mask of 1 (and offset 1)
    // or a start_gap of 1 makes the same request retry.
    for (align_mask, align_offset, start_gap) in [(1, 1, 0), (0, 0, 1)] {
        let i = UnmappedAreaInfo {
            align_mask,
            align_offset,
            start_gap,
            ..info(0xff001 - start_gap, 0x101000 - start_gap, TOP)
        };
        let got = area(&m, &model, &i, &p).unwrap();
        assert!(got >= 0x300000, "{i:?} -> {got:#x}");
    }
}

/// A `low_limit` that is not aligned clips the hole below it to less than
/// the padded length: no answer, in particular nothing below the window.
#[test]
fn unaligned_low_limit_clips_the_hole() {
    let (m, model) = maps(&[(0x10002, 0x20000, NONE)]);
    let p = SearchParams::default();
    let i = UnmappedAreaInfo {
        topdown: true,
        align_mask: 1,
        ..info(1, 0x10001, 0x20000)
    };
    // The hole [0, 0x10002) clipped to the window is the single byte
    // 0x10001; the padded length is 2.
    assert_eq!(area(&m, &model, &i, &p), Err(SearchError::NoSpace));
    let up = UnmappedAreaInfo {
        topdown: false,
        ..i
    };
    assert_eq!(area(&m, &model, &up, &p), Err(SearchError::NoSpace));
    // Without the alignment the one byte is the answer, both ways.
    let i = info(1, 0x10001, 0x20000);
    assert_eq!(area(&m, &model, &i, &p), Ok(0x10001));
    let down = UnmappedAreaInfo { topdown: true, ..i };
    assert_eq!(area(&m, &model, &down, &p), Ok(0x10001));
}

// ----- the classes they belong to ------------------------------------

/// The VMAs of a map over a universe of `cells` bytes: bit `i` of `mask`
/// maps byte `i`; every maximal run of set bits is one VMA. With `flagged`
/// the runs alternate grows-down and grows-up, starting with grows-down.
fn small_map(mask: u32, cells: u32, flagged: bool) -> Vec<(u64, u64, VmaFlags)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cells {
        if mask >> i & 1 == 0 {
            i += 1;
            continue;
        }
        let s = i;
        while i < cells && mask >> i & 1 == 1 {
            i += 1;
        }
        let f = match (flagged, out.len() % 2) {
            (false, _) => NONE,
            (true, 0) => DOWN,
            (true, _) => UP,
        };
        out.push((u64::from(s), u64::from(i), f));
    }
    out
}

/// The guard-gap contract of `unmapped_area` (its doc) for one answer.
/// Answers outside a window that does not wrap (a top-down retry can wrap
/// the window past 2^64, as in the kernel) are outside the contract.
fn check_area_guards(m: &AddressMap, i: &UnmappedAreaInfo, p: &SearchParams, addr: u64) {
    assert!(
        addr >= i.low_limit.max(p.mmap_min_addr),
        "{i:?} -> {addr:#x}"
    );
    let Some(end) = addr.checked_add(i.length) else {
        return;
    };
    if addr < i.low_limit || end > i.high_limit {
        return;
    }
    let next = m.find_vma(addr);
    let prev = m.prev_vma(addr);
    if let Some(n) = next.filter(|n| n.flags.contains(DOWN)) {
        let g = n.start.saturating_sub(p.stack_guard_gap);
        let one_byte_in = !i.topdown && i.align_mask == 0 && i.start_gap == 0 && g == end - 1;
        assert!(g >= end || one_byte_in, "{i:?} -> {addr:#x}: guard {g:#x}");
    } else if let Some(pr) = prev.filter(|v| p.growsup_guard && v.flags.contains(UP)) {
        assert!(pr.end + p.stack_guard_gap <= addr, "{i:?} -> {addr:#x}");
    }
}

/// Every map over 6 bytes, every window inside 8 bytes (one-byte holes and
/// windows, unaligned limits everywhere), small alignments with every
/// offset, start gaps and guard gaps of both kinds: `unmapped_area` and
/// `find_fit` agree with the model, and `unmapped_area` keeps its guard
/// contract.
#[test]
fn every_small_map_and_window_matches_the_model() {
    const CELLS: u32 = 6;
    let mut answers = 0u64;
    for mask in 0..1u32 << CELLS {
        for flagged in [false, true] {
            let (m, model) = maps(&small_map(mask, CELLS, flagged));
            let p = bytes(2, flagged);
            for low in 0..=CELLS as u64 {
                for high in low + 1..=CELLS as u64 + 2 {
                    for length in 1..=3 {
                        for topdown in [false, true] {
                            for (align_mask, align_offset) in
                                [(0, 0), (1, 0), (1, 1), (3, 1), (3, 2), (3, 3)]
                            {
                                for start_gap in [0, 1] {
                                    let i = UnmappedAreaInfo {
                                        topdown,
                                        length,
                                        low_limit: low,
                                        high_limit: high,
                                        align_mask,
                                        align_offset,
                                        start_gap,
                                    };
                                    if let Ok(a) = area(&m, &model, &i, &p) {
                                        answers += 1;
                                        check_area_guards(&m, &i, &p, a);
                                    }
                                }
                            }
                            for align in [1, 2, 4] {
                                for align_offset in 0..align + 1 {
                                    for respect_guard_gaps in [false, true] {
                                        let r = FitRequest {
                                            length,
                                            low,
                                            high,
                                            align,
                                            align_offset,
                                            topdown,
                                            respect_guard_gaps,
                                        };
                                        answers += u64::from(fit(&m, &model, &r, &p).is_ok());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Not a vacuous loop: most requests have an answer.
    assert!(answers > 100_000, "{answers}");
}

/// A map deep enough for inner nodes (several hundred VMAs) whose holes
/// start on, one byte before and one byte after 64 KiB and 2 MiB
/// boundaries, with lengths on either side of the class sizes.
fn class_map(rng: &mut Rng) -> Vec<(u64, u64, VmaFlags)> {
    let mut out = Vec::new();
    let mut addr = 0x100000u64;
    for k in 0..700 {
        let len = rng.pick(&[1, 0x1000, 0xffff, 0x10000, 0x10001, 0x30000]);
        let flags = if k % 37 == 36 { DOWN } else { NONE };
        out.push((addr, addr + len, flags));
        addr += len;
        // Move to near a boundary of a random class, then leave a hole.
        let class = rng.pick(&[0x10000, 0x200000]);
        let next = addr.next_multiple_of(class);
        let start = next - rng.pick(&[0, 1]) + rng.pick(&[0, 1, 0xffff]);
        let start = start.max(addr + 1);
        let hole = rng.pick(&[
            1, 2, 0x1000, 0xffff, 0x10000, 0x10001, 0x1ffff, 0x1fffff, 0x200000, 0x200001,
        ]);
        addr = start + hole;
    }
    out
}

/// Odd offsets against every power-of-two alignment from 1 to 2^23 (below,
/// at and above both cached classes) on a deep map: the exact fit agrees
/// with the model for every offset that is, or is one off, a multiple of a
/// class.
#[test]
fn odd_offsets_against_every_alignment_class() {
    let mut rng = Rng(0x0dd0_ff5e_7000_0001);
    let vmas = class_map(&mut rng);
    let (m, model) = maps(&vmas);
    assert!(m.depth() >= 3, "depth {}", m.depth());
    let p = SearchParams {
        stack_guard_gap: 0x20000,
        ..SearchParams::default()
    };
    let top = vmas.last().unwrap().1;
    let mut found = 0;
    for shift in 0..=23 {
        let align = 1u64 << shift;
        let mut offsets = vec![0, 1, align / 2, align - 1, align, align + 1];
        offsets.extend([0xffff, 0x10000, 0x10001, 0x1fffff, 0x200000, 0x200001]);
        offsets.sort_unstable();
        offsets.dedup();
        for &off in &offsets {
            for length in [1, 0xffff, 0x10000, 0x10001, 0x200000, 0x200001] {
                // Whole map, and windows whose limits are not aligned.
                let windows = [(0, TOP), (0x100001, top - 1), (0x3ffff, top / 2 + 1)];
                for (low, high) in windows {
                    for topdown in [false, true] {
                        let r = FitRequest {
                            length,
                            low,
                            high,
                            align,
                            align_offset: off,
                            topdown,
                            respect_guard_gaps: shift % 2 == 0,
                        };
                        found += u32::from(fit(&m, &model, &r, &p).is_ok());
                    }
                }
            }
        }
    }
    assert!(found > 1000, "{found}");
}

/// Random unaligned windows and lengths on the deep map, for both searches:
/// the window edges cut holes anywhere, including one byte into a hole or
/// one byte before its end.
#[test]
fn unaligned_limits_on_a_deep_map() {
    let mut rng = Rng(0x1_1a17_ed00_0003);
    let vmas = class_map(&mut rng);
    let (m, model) = maps(&vmas);
    let p = SearchParams {
        stack_guard_gap: 0x20000,
        ..SearchParams::default()
    };
    // Window edges near VMA edges: +-0, 1 or 2 bytes.
    let edges: Vec<u64> = vmas.iter().flat_map(|v| [v.0, v.1]).collect();
    let near = |rng: &mut Rng| {
        let e = edges[rng.below(edges.len() as u64) as usize];
        e + rng.below(5) - 2
    };
    let mut found = 0;
    for _ in 0..3000 {
        let (a, b) = (near(&mut rng), near(&mut rng));
        let (low, high) = (a.min(b), a.max(b) + 1);
        let length = rng.pick(&[1, 2, 3, 0x1000, 0xffff, 0x10000, 0x10001]);
        let topdown = rng.below(2) == 0;
        let align_mask = rng.pick(&[0, 1, 0xfff, 0xffff]);
        let i = UnmappedAreaInfo {
            topdown,
            length,
            low_limit: low,
            high_limit: high,
            align_mask,
            align_offset: rng.below(align_mask + 1),
            start_gap: rng.pick(&[0, 0, 1]),
        };
        if let Ok(a) = area(&m, &model, &i, &p) {
            found += 1;
            assert!(a >= low && a + length <= high, "{i:?} -> {a:#x}");
            check_area_guards(&m, &i, &p, a);
        }
        let r = FitRequest {
            length,
            low,
            high,
            align: align_mask + 1,
            align_offset: rng.next(),
            topdown,
            respect_guard_gaps: rng.below(2) == 0,
        };
        if let Ok(a) = fit(&m, &model, &r, &p) {
            found += 1;
            assert!(a >= low && a + length <= high, "{r:?} -> {a:#x}");
        }
    }
    assert!(found > 500, "{found}");
}

/// The guard-gap boundary at page scale: a stack whose guard gap starts at
/// or one page around the end of the area, lengths on either side of the
/// boundary, with and without padding. Page-aligned inputs never put the
/// area into the guard gap; the only overlap is the one-byte case of the
/// strict kernel test, with no padding.
#[test]
fn guard_gap_boundary_against_the_model() {
    let mut overlaps = 0;
    for guard in [0x800u64, 0x1000, 0x2000, 0x100000] {
        for stack in [0x200000u64, 0x200800, 0x201000, 0x202000] {
            let (m, model) = maps(&[(0x100000, 0x101000, NONE), (stack, 0x300000, DOWN)]);
            let p = SearchParams {
                stack_guard_gap: guard,
                ..SearchParams::default()
            };
            let g = stack - guard;
            for delta in [-0x2001i64, -0x1001, -0x1000, -2, -1, 0, 1, 2, 0x1000] {
                // The length that makes the area end exactly at `g`.
                let Some(length) = (g as i64 - 0x101000 + delta).try_into().ok() else {
                    continue;
                };
                if length == 0 {
                    continue;
                }
                for (align_mask, start_gap) in [(0, 0), (0xfff, 0), (0, 0x1000), (0x1fff, 0x1000)] {
                    for topdown in [false, true] {
                        let i = UnmappedAreaInfo {
                            topdown,
                            length,
                            low_limit: 0x101000 - start_gap,
                            high_limit: TOP,
                            align_mask,
                            align_offset: 0,
                            start_gap,
                        };
                        let Ok(a) = area(&m, &model, &i, &p) else {
                            continue;
                        };
                        check_area_guards(&m, &i, &p, a);
                        let aligned =
                            length % 0x1000 == 0 && stack % 0x1000 == 0 && g % 0x1000 == 0;
                        let end = a + length;
                        if a < stack && end > g {
                            overlaps += 1;
                            assert!(!aligned, "{i:?} -> {a:#x} overlaps the guard at {g:#x}");
                            assert_eq!(end - 1, g, "{i:?} -> {a:#x}");
                        }
                    }
                }
            }
        }
    }
    // The strict test does let some unaligned areas touch the guard gap.
    assert!(overlaps > 0);
}

/// `find_fit` keeps out of the guard gaps of the hole's two neighbours
/// only: a stack's guard gap that reaches down past a smaller VMA below the
/// stack does not protect the hole below that VMA (the kernel's rule).
#[test]
fn fit_checks_the_neighbours_guard_gaps_only() {
    // The stack at 0x202000 has a 1 MiB guard gap [0x102000, 0x202000),
    // which covers the small VMA [0x200000, 0x201000) and the hole below it.
    let (m, model) = maps(&[
        (0x10000, 0x11000, UP),
        (0x200000, 0x201000, NONE),
        (0x202000, 0x300000, DOWN),
    ]);
    let p = SearchParams::default();
    let r = FitRequest {
        respect_guard_gaps: true,
        ..req(0x1000, 0x1f0000, TOP, 0x1000, 0)
    };
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x1f0000));
    // The hole just below the stack is inside its guard gap: skipped.
    let r = FitRequest { low: 0x201000, ..r };
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x300000));
    let unguarded = FitRequest {
        respect_guard_gaps: false,
        ..r
    };
    assert_eq!(fit(&m, &model, &unguarded, &p), Ok(0x201000));
    // Top-down below the stack: the hole just below it is skipped, and the
    // highest fit ends at the small VMA, inside the stack's guard gap.
    let down = FitRequest {
        topdown: true,
        low: 0,
        high: 0x300000,
        ..r
    };
    assert_eq!(fit(&m, &model, &down, &p), Ok(0x1ff000));
    // A grows-up VMA below the hole pushes the fit up, with growsup_guard.
    let up = SearchParams {
        growsup_guard: true,
        ..p
    };
    let r = FitRequest { low: 0x11000, ..r };
    assert_eq!(fit(&m, &model, &r, &up), Ok(0x111000));
    assert_eq!(fit(&m, &model, &r, &p), Ok(0x11000));
}

/// `allocate` inserts where `find_fit` answers, through the path its search
/// recorded, also when the search rejected holes inside leaves before
/// accepting one between subtrees or beyond every VMA (guard gaps, odd
/// offsets): the map stays equal to the model plus the same inserts, and
/// every cached aggregate stays exact.
#[test]
fn allocate_inserts_where_the_model_fits() {
    let mut rng = Rng(0xa110_c47e_0000_0005);
    let vmas = class_map(&mut rng);
    let (mut m, mut model) = maps(&vmas);
    let p = SearchParams {
        stack_guard_gap: 0x20000,
        ..SearchParams::default()
    };
    let top = vmas.last().unwrap().1;
    let mut placed = 0;
    for step in 0..2500 {
        let align = rng.pick(&[1, 0x1000, 0x8000, 0x10000, 0x200000]);
        let (a, b) = (rng.below(top + 0x400000), rng.below(top + 0x400000));
        let r = FitRequest {
            length: rng.pick(&[1, 0x1000, 0x3000, 0xffff, 0x10000, 0x10001]),
            low: a.min(b),
            high: a.max(b) + 1,
            align,
            align_offset: rng.pick(&[0, 1, 0x1000, 0xffff, align - 1]),
            topdown: rng.below(2) == 0,
            respect_guard_gaps: rng.below(4) != 0,
        };
        let want = model.find_fit(&r, &p);
        let got = m.allocate(&r, &p, NONE);
        assert_eq!(got, want, "step {step}: {r:?}");
        if let Ok(addr) = got {
            placed += 1;
            Space::insert(&mut model, addr, addr + r.length, NONE).unwrap();
        }
        // Free a random VMA now and then, so that holes open up again.
        if step % 3 == 0 {
            let vs = model.vmas();
            let v = vs[rng.below(vs.len() as u64) as usize];
            assert_eq!(m.unmap(v.start, v.end), Ok(1));
            Space::unmap(&mut model, v.start, v.end).unwrap();
        }
        if step % 100 == 0 {
            m.check_invariants();
            assert!(m.iter().eq(model.vmas().iter().copied()), "step {step}");
        }
    }
    m.check_invariants();
    assert!(m.iter().eq(model.vmas().iter().copied()));
    assert!(placed > 500, "{placed}");
}

/// One-byte VMAs separated by one-byte holes, deep enough that many holes
/// lie between two leaves or two subtrees: every hole, wherever it sits in
/// the tree, is found through a one-byte window that ends on its first
/// byte, and none is taken for longer than it is.
#[test]
fn one_byte_holes_at_every_node_boundary() {
    const N: u64 = 2000;
    let vmas: Vec<_> = (0..N).map(|k| (2 * k, 2 * k + 1, NONE)).collect();
    let (m, model) = maps(&vmas);
    assert!(m.depth() >= 3, "depth {}", m.depth());
    let p = bytes(0, false);
    for k in 0..N {
        let hole = 2 * k + 1;
        for topdown in [false, true] {
            let i = UnmappedAreaInfo {
                topdown,
                ..info(1, hole, hole + 1)
            };
            assert_eq!(m.unmapped_area(&i, &p), Ok(hole), "{i:?}");
            let r = FitRequest {
                topdown,
                ..req(1, hole, hole + 1, 1, 0)
            };
            assert_eq!(m.find_fit(&r, &p), Ok(hole), "{r:?}");
        }
    }
    // Two bytes fit only above the last VMA; windows that do not hold the
    // whole map start at every 97th hole.
    let top = 2 * N - 1;
    for k in (0..N).step_by(97) {
        for topdown in [false, true] {
            let i = UnmappedAreaInfo {
                topdown,
                ..info(2, 2 * k + 1, top + 4)
            };
            let want = if topdown { top + 2 } else { top };
            assert_eq!(area(&m, &model, &i, &p), Ok(want), "{i:?}");
            let r = FitRequest {
                topdown,
                ..req(2, 2 * k + 1, top + 4, 1, 0)
            };
            assert_eq!(fit(&m, &model, &r, &p), Ok(want), "{r:?}");
            // Below the top hole there is no room for two bytes, and no
            // hole is even offered: a one-byte hole taken for longer would
            // cost a guard-check retry (top-down) or a wrong answer.
            let i = UnmappedAreaInfo {
                topdown,
                ..info(2, 2 * k + 1, top)
            };
            assert_eq!(area(&m, &model, &i, &p), Err(SearchError::NoSpace));
            let mut st = SearchStats::default();
            let _ = m.unmapped_area_stats(&i, &p, &mut st);
            assert_eq!((st.descents, st.holes), (1, 0), "{i:?}");
            let r = FitRequest {
                topdown,
                ..req(2, 2 * k + 1, top, 1, 0)
            };
            assert_eq!(fit(&m, &model, &r, &p), Err(FitError::NoSpace));
        }
    }
}

/// A deep map whose last VMA ends at 2^64 - 1, the highest end there is:
/// no search computes past it.
#[test]
fn a_vma_ending_at_the_top_of_the_address_space() {
    let mut vmas: Vec<_> = (0..1000u64)
        .map(|k| (0x100000 + k * 0x3000, 0x101000 + k * 0x3000, NONE))
        .collect();
    let last_end = vmas.last().unwrap().1;
    vmas.push((last_end + 0x2000, u64::MAX, NONE));
    let (m, model) = maps(&vmas);
    assert!(m.depth() >= 2);
    let p = SearchParams::default();
    for (low, high) in [(0, u64::MAX), (0x10000, 1 << 47), (0x100001, u64::MAX)] {
        for length in [0x1000, 0x2000, 0x3000] {
            for topdown in [false, true] {
                let i = UnmappedAreaInfo {
                    topdown,
                    ..info(length, low, high)
                };
                let got = area(&m, &model, &i, &p);
                // Above the first VMA only the two-page holes are free.
                let fits = low < 0x100000 || length <= 0x2000;
                assert_eq!(got.is_ok(), fits, "{i:?} -> {got:?}");
                let r = FitRequest {
                    topdown,
                    ..req(length, low, high, 0x1000, 0)
                };
                let got = fit(&m, &model, &r, &p);
                assert_eq!(got.is_ok(), fits, "{r:?} -> {got:?}");
            }
        }
    }
}

/// `vm_end_gap()` of a grows-up VMA (with `growsup_guard`): the end plus
/// the guard, clamped to the last page when the sum wraps, and the end
/// itself when the guard is 0.
#[test]
fn grows_up_guard_gap_clamps_at_the_top() {
    let up = SearchParams {
        growsup_guard: true,
        ..SearchParams::default()
    };
    // The guard of [2^64 - 1 MiB, 2^64 - 512 KiB) wraps: everything above
    // the VMA up to the last page is its guard, and the last page is one
    // byte too short for a page inside a window ending at 2^64 - 1.
    let low = 0u64.wrapping_sub(0x100000);
    let (m, model) = maps(&[(low, low + 0x80000, UP)]);
    for topdown in [false, true] {
        // Bottom-up the guard moves the window to the last page; top-down
        // the retry moves it below the VMA: nothing is left either way.
        let i = UnmappedAreaInfo {
            topdown,
            ..info(0x1000, low + 0x80000, u64::MAX)
        };
        assert_eq!(area(&m, &model, &i, &up), Err(SearchError::EmptyWindow));
        let r = FitRequest {
            topdown,
            respect_guard_gaps: true,
            ..req(0x1000, low + 0x80000, u64::MAX, 0x1000, 0)
        };
        assert_eq!(fit(&m, &model, &r, &up), Err(FitError::NoSpace));
    }
    // A guard of 0 leaves the end where it is.
    let zero = SearchParams {
        stack_guard_gap: 0,
        ..up
    };
    let (m, model) = maps(&[(0x10000, 0x20000, UP)]);
    for topdown in [false, true] {
        let i = UnmappedAreaInfo {
            topdown,
            ..info(0x1000, 0x20000, 0x21000)
        };
        assert_eq!(area(&m, &model, &i, &zero), Ok(0x20000));
        let r = FitRequest {
            topdown,
            respect_guard_gaps: true,
            ..req(0x1000, 0x20000, 0x21000, 0x1000, 0)
        };
        assert_eq!(fit(&m, &model, &r, &zero), Ok(0x20000));
    }
}

/// The most descents a bottom-up search can need is `len + 2`, the retry
/// limit itself: a VMA that grows both ways (with `growsup_guard`) is
/// passed by one retry (its guard below) and costs another above it (its
/// guard above), and the third descent answers.
#[test]
fn bottom_up_search_may_use_every_descent_up_to_the_limit() {
    let p = SearchParams {
        growsup_guard: true,
        ..SearchParams::default()
    };
    let both = VmaFlags(DOWN.0 | UP.0);
    let (m, model) = maps(&[(0x400000, 0x500000, both)]);
    let i = info(0x1000, 0x300000, TOP);
    assert_eq!(area(&m, &model, &i, &p), Ok(0x600000));
    let mut st = SearchStats::default();
    assert_eq!(m.unmapped_area_stats(&i, &p, &mut st), Ok(0x600000));
    assert_eq!((st.descents, st.holes), (3, 3));
}
