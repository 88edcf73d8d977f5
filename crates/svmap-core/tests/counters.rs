//! The counters of `SearchStats`: exact values where the search's work is
//! fixed by the map, and the O(log n) bound of one descent, measured by the
//! nodes it scans on maps of 10^3 to 10^6 VMAs (deterministic, no timing).

use svmap_core::{
    AddressMap, FitError, FitRequest, SearchError, SearchParams, SearchStats, UnmappedAreaInfo,
    VmaFlags,
};

const PAGE: u64 = 0x1000;
const BASE: u64 = 0x100000;
/// Extra room left between VMA 2 and VMA 3: the only hole near the bottom
/// longer than a page.
const LEFT_HOLE: u64 = 0x40000;

/// The start of VMA `k` of the test map: one-page VMAs separated by
/// one-page holes, except the hole of `LEFT_HOLE + PAGE` below VMA 3.
fn start(k: u64) -> u64 {
    BASE + 2 * PAGE * k + if k >= 3 { LEFT_HOLE } else { 0 }
}

fn end(k: u64) -> u64 {
    start(k) + PAGE
}

fn params() -> SearchParams {
    SearchParams::default()
}

fn area(length: u64, low_limit: u64, high_limit: u64, topdown: bool) -> UnmappedAreaInfo {
    UnmappedAreaInfo {
        topdown,
        length,
        low_limit,
        high_limit,
        ..Default::default()
    }
}

fn fit(length: u64, low: u64, high: u64, align: u64) -> FitRequest {
    FitRequest {
        length,
        low,
        high,
        align,
        align_offset: 0,
        topdown: false,
        respect_guard_gaps: true,
    }
}

fn ua(m: &AddressMap, i: &UnmappedAreaInfo) -> (Result<u64, SearchError>, SearchStats) {
    let mut st = SearchStats::default();
    let r = m.unmapped_area_stats(i, &params(), &mut st);
    (r, st)
}

fn ff(m: &AddressMap, r: &FitRequest) -> (Result<u64, FitError>, SearchStats) {
    let mut st = SearchStats::default();
    let a = m.find_fit_stats(r, &params(), &mut st);
    (a, st)
}

fn one_descent(st: &SearchStats, holes: u32) {
    assert_eq!((st.descents, st.holes, st.rescans), (1, holes, 0), "{st:?}");
}

/// The nodes each kind of search scanned at one size.
struct Row {
    n: u64,
    depth: u32,
    nodes: [u32; 6],
}

/// Runs every search on the map of `n` VMAs, with its exact answers and
/// counters, and returns the nodes they scanned.
fn searches(m: &mut AddressMap, n: u64) -> Row {
    let depth = m.depth() as u32;
    let top = end(n - 1);
    // A second long hole in the middle: VMAs mid..mid+32 unmapped.
    let mid = n / 2;
    assert_eq!(m.unmap(start(mid), end(mid + 31)), Ok(32));
    let (mid_start, mid_end) = (end(mid - 1), start(mid + 32));
    let mut nodes = [0; 6];

    // Top-down over the whole map: the highest hole of 3 pages is the
    // middle one; every subtree to its right is pruned.
    let (r, st) = ua(m, &area(3 * PAGE, BASE, top, true));
    assert_eq!(r, Ok(mid_end - 3 * PAGE));
    one_descent(&st, 1);
    nodes[0] = st.nodes;
    // Bottom-up from above the left hole: the window's lower edge cuts the
    // leftmost path, then the walk goes to the middle hole.
    let (r, st) = ua(m, &area(3 * PAGE, start(3), top, false));
    assert_eq!(r, Ok(mid_start));
    one_descent(&st, 1);
    nodes[1] = st.nodes;
    // Top-down below the middle hole: only the left hole is left, and the
    // window's upper edge cuts the path to the middle.
    let (r, st) = ua(m, &area(3 * PAGE, BASE, mid_start + PAGE, true));
    assert_eq!(r, Ok(start(3) - 3 * PAGE));
    one_descent(&st, 1);
    nodes[2] = st.nodes;
    // Longer than every hole: the root's scan prunes every child.
    let (r, st) = ua(m, &area(mid_end - mid_start + PAGE, BASE, top, false));
    assert_eq!(r, Err(SearchError::NoSpace));
    assert_eq!((st.descents, st.holes, st.nodes), (1, 0, 1), "{st:?}");
    // A 64 KiB-aligned 64 KiB fit: the cached aligned rooms lead straight
    // to the middle hole (the left hole holds one too, but lies below the
    // window).
    let (r, st) = ff(m, &fit(0x10000, start(3), top, 0x10000));
    assert_eq!(r, Ok(mid_start.next_multiple_of(0x10000)));
    one_descent(&st, 1);
    nodes[3] = st.nodes;
    // Top-down, the same fit lands at the top of the middle hole.
    let (r, st) = ff(
        m,
        &FitRequest {
            topdown: true,
            ..fit(0x10000, BASE, top, 0x10000)
        },
    );
    assert_eq!(r, Ok((mid_end - 0x10000) & !0xffff));
    one_descent(&st, 1);
    nodes[4] = st.nodes;
    // A 32 KiB alignment has no cached class: the walk prunes on the
    // length and offers every long enough hole; the first one fits.
    let (r, st) = ff(m, &fit(0x8000, start(3), top, 0x8000));
    assert_eq!(r, Ok(mid_start.next_multiple_of(0x8000)));
    one_descent(&st, 1);
    nodes[5] = st.nodes;

    for k in mid..mid + 32 {
        m.insert(start(k), end(k), VmaFlags::NONE).unwrap();
    }
    Row { n, depth, nodes }
}

/// One descent scans O(log n) nodes: at most two root-to-leaf paths (the
/// window's edge and the answer), and the tree's depth is logarithmic. The
/// maps grow from 10^3 to 10^6 VMAs; a linear scan would grow 1000-fold.
#[test]
fn nodes_per_search_grow_with_the_depth_only() {
    let mut m = AddressMap::new();
    let mut rows = Vec::new();
    let mut k = 0;
    for n in [1_000u64, 10_000, 100_000, 1_000_000] {
        while k < n {
            m.insert(start(k), end(k), VmaFlags::NONE).unwrap();
            k += 1;
        }
        assert_eq!(m.len() as u64, n);
        rows.push(searches(&mut m, n));
    }
    for r in &rows {
        eprintln!(
            "n = {:>9}: depth {}, nodes scanned {:?}",
            r.n, r.depth, r.nodes
        );
        // The B+tree's bound on the depth (map.rs): 2 + log_8(n / 16).
        let bound = 2.0 + (r.n as f64 / 16.0).log(8.0);
        assert!(
            f64::from(r.depth) <= bound,
            "depth {} at n = {}",
            r.depth,
            r.n
        );
        for (q, &v) in r.nodes.iter().enumerate() {
            assert!(
                (1..=2 * r.depth).contains(&v),
                "search {q} scanned {v} nodes at n = {} (depth {})",
                r.n,
                r.depth
            );
        }
        // The top-down search over the whole map takes one path only.
        assert!(r.nodes[0] <= r.depth, "{}", r.nodes[0]);
    }
    // 1000 times the VMAs, a few more nodes per search.
    let (small, large) = (&rows[0], &rows[3]);
    assert!(large.depth > small.depth);
    for q in 0..small.nodes.len() {
        assert!(
            large.nodes[q] <= small.nodes[q] + 2 * (large.depth - small.depth),
            "search {q}: {} nodes at 1e3, {} at 1e6",
            small.nodes[q],
            large.nodes[q]
        );
    }
}

/// A single-leaf map: every counter has one right value.
#[test]
fn exact_counters_on_a_small_map() {
    let p = SearchParams::default();
    let mut m = AddressMap::new();
    m.insert(0x100000, 0x101000, VmaFlags::NONE).unwrap();
    m.insert(0x110000, 0x200000, VmaFlags::GROWSDOWN).unwrap();
    m.insert(0x300000, 0x301000, VmaFlags::NONE).unwrap();
    assert_eq!(m.depth(), 1);

    // The hole below the stack holds the padded length but its guard gap
    // reaches below the hole: one retry, above the stack.
    let i = UnmappedAreaInfo {
        length: PAGE,
        low_limit: 0x101000,
        high_limit: 1 << 47,
        ..Default::default()
    };
    let mut st = SearchStats::default();
    assert_eq!(m.unmapped_area_stats(&i, &p, &mut st), Ok(0x200000));
    // Two descents, one hole each; the first scanned the leaf, the second
    // started above the stack's guard and found a hole inside the leaf too.
    assert_eq!(
        st,
        SearchStats {
            descents: 2,
            holes: 2,
            rescans: 0,
            nodes: 2
        }
    );
    // Counters add up over searches.
    assert_eq!(m.unmapped_area_stats(&i, &p, &mut st), Ok(0x200000));
    assert_eq!((st.descents, st.holes, st.nodes), (4, 4, 4));

    // Above every VMA: the walk never enters the tree.
    let i = UnmappedAreaInfo {
        low_limit: 0x301000,
        ..i
    };
    let mut st = SearchStats::default();
    assert_eq!(m.unmapped_area_stats(&i, &p, &mut st), Ok(0x301000));
    assert_eq!((st.descents, st.holes, st.nodes), (1, 1, 0));

    // The exact fit prunes on the length: for 1 MiB + 1 only the top hole
    // is long enough and the only one offered.
    let r = FitRequest {
        length: 0x100001,
        low: 0x101000,
        high: 1 << 47,
        align: PAGE,
        align_offset: 0,
        topdown: false,
        respect_guard_gaps: true,
    };
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(0x301000));
    assert_eq!((st.descents, st.holes, st.nodes, st.rescans), (1, 1, 1, 0));
    // Without the guard gaps a page fits in the first hole offered.
    let r = FitRequest {
        length: PAGE,
        respect_guard_gaps: false,
        ..r
    };
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(0x101000));
    assert_eq!((st.descents, st.holes, st.nodes), (1, 1, 1));
    // With them, the stack's guard gap covers that hole: the next one.
    let r = FitRequest {
        respect_guard_gaps: true,
        ..r
    };
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(0x200000));
    assert_eq!((st.descents, st.holes, st.nodes), (1, 2, 1));

    // allocate counts like find_fit and maps the answer.
    let mut st = SearchStats::default();
    assert_eq!(
        m.allocate_stats(&r, &p, VmaFlags::NONE, &mut st),
        Ok(0x200000)
    );
    assert_eq!((st.descents, st.holes, st.nodes), (1, 2, 1));
    assert_eq!(m.vma_at(0x200000).map(|v| v.end), Some(0x201000));
    // A failed search still counts its descent and the node it scanned.
    let r = FitRequest {
        length: 0x100001,
        high: 0x400000,
        ..r
    };
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Err(FitError::NoSpace));
    assert_eq!((st.descents, st.holes, st.nodes), (1, 0, 1));
}

/// The one search that makes no progress: top-down, with no floor, below a
/// stack whose guard gap reaches address 0. The retry sets `high` to 0,
/// which (as in the kernel) wraps to the whole address space, and the same
/// hole comes back. svmap gives up after `len + 2` descents.
#[test]
fn retry_limit_after_len_plus_two_descents() {
    let p = SearchParams {
        mmap_min_addr: 0,
        ..SearchParams::default()
    };
    let mut m = AddressMap::new();
    m.insert(0x1000, 0x2000, VmaFlags::GROWSDOWN).unwrap();
    m.insert(0x2000, u64::MAX, VmaFlags::NONE).unwrap();
    let i = UnmappedAreaInfo {
        topdown: true,
        length: PAGE,
        low_limit: 0,
        high_limit: 0x1000,
        ..Default::default()
    };
    let mut st = SearchStats::default();
    assert_eq!(
        m.unmapped_area_stats(&i, &p, &mut st),
        Err(SearchError::RetryLimit)
    );
    // Four descents find the hole [0, 0x1000) and retry; the fifth stops.
    // The first window ends below the VMAs, so only the three wrapped ones
    // scan the tree (its one leaf).
    assert_eq!((st.descents, st.holes, st.nodes), (5, 4, 3));
    assert_eq!(
        svmap_core::model::ModelMap::unmapped_area(&model_of(&m), &i, &p),
        Err(SearchError::RetryLimit)
    );
}

fn model_of(m: &AddressMap) -> svmap_core::model::ModelMap {
    use svmap_core::linux::Space;
    let mut model = svmap_core::model::ModelMap::new();
    for v in m.iter() {
        model.insert(v.start, v.end, v.flags).unwrap();
    }
    model
}

/// An aligned fit whose alignment and offset are multiples of a cached
/// class (64 KiB, 2 MiB) never offers a hole that is long enough but holds
/// no class-aligned range of the length; an offset that is not a multiple
/// prunes on the length only and offers it.
#[test]
fn class_prune_skips_holes_without_aligned_room() {
    let p = SearchParams::default();
    for class in [0x10000u64, 0x200000] {
        let mut m = AddressMap::new();
        // Hole [class + 0x1000, 2 class + 0x2000): longer than `class`, but
        // its class-aligned part [2 class, 2 class + 0x2000) is short.
        m.insert(0x10000, class + 0x1000, VmaFlags::NONE).unwrap();
        m.insert(2 * class + 0x2000, 4 * class, VmaFlags::NONE)
            .unwrap();
        m.insert(6 * class, 7 * class, VmaFlags::NONE).unwrap();
        let r = FitRequest {
            length: class,
            low: 0x10000,
            high: 1 << 47,
            align: class,
            align_offset: 0,
            topdown: false,
            respect_guard_gaps: true,
        };
        let mut st = SearchStats::default();
        assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(4 * class));
        assert_eq!((st.descents, st.holes, st.nodes), (1, 1, 1), "{class:#x}");
        // Offset 0x1000: the first hole holds [class + 0x1000, 2 class +
        // 0x1000), which no class prune may skip.
        let r = FitRequest {
            align_offset: 0x1000,
            ..r
        };
        let mut st = SearchStats::default();
        assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(class + 0x1000));
        assert_eq!((st.descents, st.holes, st.nodes), (1, 1, 1), "{class:#x}");
        // Offset 0x3000: offered, too short after aligning, then the next.
        let r = FitRequest {
            align_offset: 0x3000,
            ..r
        };
        let mut st = SearchStats::default();
        assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(4 * class + 0x3000));
        assert_eq!((st.descents, st.holes, st.nodes), (1, 2, 1), "{class:#x}");
    }
}

/// Thousands of holes that are long enough for 64 KiB but hold a
/// 64 KiB-aligned range one byte short of it, in leaves and between
/// subtrees, and two holes that hold one: a 64 KiB-aligned fit offers
/// exactly one hole, the right one, in either direction.
#[test]
fn holes_one_byte_short_of_an_aligned_room_are_never_offered() {
    const N: u64 = 3000;
    let a = |k: u64| 0x100000 + k * 0x20000;
    let mut m = AddressMap::new();
    // VMA k is [a(k + 1) - 1, a(k + 1) + 1): the hole below it runs from
    // a(k) + 1 to a(k + 1) - 1, whose aligned room [a(k) + 0x10000,
    // a(k + 1) - 1) is 0xffff bytes.
    for k in 0..N {
        m.insert(a(k + 1) - 1, a(k + 1) + 1, VmaFlags::NONE)
            .unwrap();
    }
    // Two holes that do hold an aligned 64 KiB: VMAs 1 and N - 2 removed.
    for k in [1, N - 2] {
        assert_eq!(m.unmap(a(k + 1) - 1, a(k + 1) + 1), Ok(1));
    }
    assert!(m.depth() >= 3);
    let p = params();
    let r = fit(0x10000, a(4), 1 << 47, 0x10000);
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(a(N - 2) + 0x10000));
    assert_eq!((st.descents, st.holes), (1, 1), "{st:?}");
    let r = FitRequest {
        topdown: true,
        ..fit(0x10000, 0x10000, a(N - 3), 0x10000)
    };
    let mut st = SearchStats::default();
    assert_eq!(m.find_fit_stats(&r, &p, &mut st), Ok(a(2)));
    assert_eq!((st.descents, st.holes), (1, 1), "{st:?}");
}

/// `allocate` rescans a leaf's maxima only when the hole it splits held
/// one: a hole high in the address space whose length and 64 KiB room are
/// below the leaf's largest ones (and whose 2 MiB room is zero) is split
/// without a rescan; the leaf's largest hole is not.
#[test]
fn allocate_rescans_only_when_the_split_hole_held_a_maximum() {
    let mut m = AddressMap::new();
    // The leaf's largest hole (and largest rooms) is [0x101000, 0x501000).
    m.insert(0x100000, 0x101000, VmaFlags::NONE).unwrap();
    m.insert(0x501000, 0x502000, VmaFlags::NONE).unwrap();
    m.insert(0x800000, 0x810000, VmaFlags::NONE).unwrap();
    // [0x810000, 0x830000): 128 KiB, all of it 64 KiB-aligned room.
    m.insert(0x830000, 0x840000, VmaFlags::NONE).unwrap();
    // One-page VMAs up to 34 in all: the 33rd splits the leaf, so there is
    // a level above the leaves, and the first leaf keeps the lowest 16 VMAs
    // with room to spare (a full leaf would take the general insert).
    for j in 0..30 {
        let s = 0x841000 + j * 0x2000;
        m.insert(s, s + 0x1000, VmaFlags::NONE).unwrap();
    }
    assert!(m.depth() >= 2);
    let p = params();
    let r = FitRequest {
        respect_guard_gaps: false,
        ..fit(PAGE, 0x810000, 1 << 47, PAGE)
    };
    let mut st = SearchStats::default();
    assert_eq!(
        m.allocate_stats(&r, &p, VmaFlags::NONE, &mut st),
        Ok(0x810000)
    );
    assert_eq!((st.descents, st.holes, st.rescans), (1, 1, 0), "{st:?}");
    m.check_invariants();
    let r = FitRequest { low: 0x101000, ..r };
    let mut st = SearchStats::default();
    assert_eq!(
        m.allocate_stats(&r, &p, VmaFlags::NONE, &mut st),
        Ok(0x101000)
    );
    assert_eq!((st.descents, st.holes, st.rescans), (1, 1, 1), "{st:?}");
    m.check_invariants();
}

/// A window whose lower edge leaves one byte less than the length of a
/// subtree's last VMA inside it scans no more nodes than the window one
/// byte higher: no subtree (nor the whole tree) whose part inside the
/// window is shorter than the length is entered, whichever VMA ends a leaf
/// or a subtree.
#[test]
fn subtrees_shorter_than_the_length_inside_the_window_are_not_entered() {
    const N: u64 = 2000;
    const LEN: u64 = 0x8000;
    let start = |k: u64| 0x100000 + k * 0x10000;
    let end = |k: u64| start(k) + LEN;
    let mut m = AddressMap::new();
    for k in 0..N {
        m.insert(start(k), end(k), VmaFlags::NONE).unwrap();
    }
    assert!(m.depth() >= 3);
    let p = params();
    for k in 0..N {
        // [end(k) - LEN + 1 + d, end(k) + LEN - 1): the hole after VMA k
        // is cut one byte short, so nothing fits; d = 0 leaves LEN - 1 bytes
        // of VMA k inside, d = 1 one byte fewer.
        let nodes = |d: u64, topdown: bool| {
            let lo = end(k) - LEN + 1 + d;
            let hi = end(k) + LEN - 1;
            let mut st = SearchStats::default();
            let i = area(LEN, lo, hi, topdown);
            assert_eq!(
                m.unmapped_area_stats(&i, &p, &mut st),
                Err(SearchError::NoSpace)
            );
            let r = FitRequest {
                topdown,
                ..fit(LEN, lo, hi, PAGE)
            };
            assert_eq!(m.find_fit_stats(&r, &p, &mut st), Err(FitError::NoSpace));
            assert_eq!((st.descents, st.holes), (2, 0), "{st:?}");
            st.nodes
        };
        for topdown in [false, true] {
            assert_eq!(nodes(0, topdown), nodes(1, topdown), "VMA {k}, {topdown}");
        }
    }
}
