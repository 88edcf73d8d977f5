//! The workload of Mesa's random VMA heap test: every exact implementation
//! answers every allocation as the recorded trace does, and the trace is
//! right: each answer is aligned, inside the heap, disjoint from the live
//! allocations, and the lowest (highest) such place in the free space,
//! and an allocation finds no room only when none exists.

use std::collections::BTreeMap;

use svmap_bench::vma_random::{
    answers, gap_tree, hole_list, list_walks, replay, verify, Block, Kind, ListWalks, Op,
    SvmapHeapVma, SvmapVma, Trace, TraceError, TraceStats, VmaHeap, HI, LO, MESA_COUNT, PAGE, SEED,
};

/// The live allocations of a trace, by start.
#[derive(Default)]
struct Model {
    live: BTreeMap<u64, u64>,
}

impl Model {
    /// The free space: the gaps of `[LO, HI)` between live allocations.
    fn holes(&self) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        let mut at = LO;
        for (&s, &e) in &self.live {
            if s > at {
                holes.push((at, s));
            }
            at = e;
        }
        if at < HI {
            holes.push((at, HI));
        }
        holes
    }

    /// The lowest (highest) aligned place of `size` bytes in the free
    /// space, by a plain scan of the holes.
    fn best(&self, size: u64, align: u64, topdown: bool) -> Option<u64> {
        let mask = align - 1;
        let holes = self.holes();
        let fit = |&(s, e): &(u64, u64)| {
            if topdown {
                let a = e.checked_sub(size)? & !mask;
                (a >= s).then_some(a)
            } else {
                let a = s.checked_add(mask)? & !mask;
                (a <= e && e - a >= size).then_some(a)
            }
        };
        if topdown {
            holes.iter().rev().find_map(fit)
        } else {
            holes.iter().find_map(fit)
        }
    }

    /// Checks the trace operation by operation; returns the live count
    /// before each operation.
    fn check(t: &Trace) -> Vec<usize> {
        let mut m = Model::default();
        let mut counts = Vec::with_capacity(t.ops.len());
        for (i, op) in t.ops.iter().enumerate() {
            counts.push(m.live.len());
            match *op {
                Op::Alloc { size, align, at } => {
                    assert!(
                        size.is_power_of_two() && size >= PAGE,
                        "op {i}: size {size:#x}"
                    );
                    assert!(
                        align.is_power_of_two() && align >= PAGE,
                        "op {i}: align {align:#x}"
                    );
                    let best = m.best(size, align, t.topdown);
                    assert_eq!(at, best, "op {i}: alloc({size:#x}, {align:#x})");
                    if let Some(a) = at {
                        let e = a + size;
                        assert!(a >= LO && e <= HI, "op {i}: outside the heap");
                        assert_eq!(a % align, 0, "op {i}: unaligned");
                        if let Some((&ps, &pe)) = m.live.range(..e).next_back() {
                            assert!(pe <= a, "op {i}: overlaps live [{ps:#x}, {pe:#x})");
                        }
                        m.live.insert(a, e);
                    }
                }
                Op::Free { addr, size } => {
                    assert_eq!(
                        m.live.remove(&addr),
                        Some(addr + size),
                        "op {i}: frees a range that is not live"
                    );
                }
            }
        }
        counts
    }
}

/// Every exact implementation answers as the trace does, both untimed
/// ([`verify`]) and through the timed [`replay`].
fn all_agree(t: &Trace) {
    fn one<H: VmaHeap>(name: &str, make: impl Fn() -> H, t: &Trace) {
        if let Err(d) = verify(&mut make(), t) {
            panic!("{name}: {d}");
        }
        let mut out = Vec::new();
        replay(&mut make(), t, &mut out);
        assert_eq!(out, answers(t), "{name}: replay");
    }
    let top = t.topdown;
    one("svmap-heap", || SvmapHeapVma::new(top), t);
    one("svmap", || SvmapVma::new(top), t);
    one("hole-list", || hole_list(top), t);
    one("gap-tree-exact", || gap_tree(top), t);
}

#[test]
fn mesa_test_traces_are_exact_and_every_implementation_agrees() {
    let mut fills = 0;
    let mut failed = 0;
    let mut empties = 0;
    for (seed, topdown) in [(SEED, true), (SEED, false), (7, true), (8, false)] {
        let t = Trace::mesa_test(MESA_COUNT, seed, topdown);
        Model::check(&t);
        all_agree(&t);
        let s = t.stats;
        assert_eq!(s.allocs + s.failed + s.frees, t.ops.len());
        assert_eq!(t.blocks.len(), 1);
        assert_eq!(t.blocks[0].kind, Kind::Mixed);
        assert_eq!((t.blocks[0].start, t.blocks[0].end), (0, t.ops.len()));
        fills += s.fills;
        empties += s.empties;
        failed += s.failed;
    }
    // The seeds exercise the test's rare actions: a fill leaves no room,
    // so it ends with allocations that fail.
    assert!(
        fills > 0 && empties > 0 && failed > 0,
        "{fills} {empties} {failed}"
    );
}

#[test]
fn a_fill_leaves_no_free_space() {
    // Every fill ends when a one-page, page-aligned allocation finds no
    // room, which only an empty free space refuses.
    let t = Trace::mesa_test(MESA_COUNT, SEED, true);
    let mut m = Model::default();
    let mut seen = 0;
    for op in &t.ops {
        match *op {
            Op::Alloc { size, align, at } => {
                if let Some(a) = at {
                    m.live.insert(a, a + size);
                } else if size == PAGE && align == PAGE {
                    assert!(m.holes().is_empty());
                    seen += 1;
                }
            }
            Op::Free { addr, .. } => {
                m.live.remove(&addr);
            }
        }
    }
    assert!(seen > 0);
}

#[test]
fn steady_traces_hold_the_live_count_and_every_implementation_agrees() {
    for (n, block, topdown) in [
        (40, 8, true),
        (40, 8, false),
        (300, 32, true),
        (7, 3, false),
    ] {
        let t = Trace::steady(n, block, 2 * n, 60, SEED, topdown).unwrap();
        let counts = Model::check(&t);
        all_agree(&t);
        assert_eq!(t.blocks.len(), 120);
        let half = block / 2;
        for (j, b) in t.blocks.iter().enumerate() {
            let want = if j % 2 == 0 { Kind::Free } else { Kind::Alloc };
            assert_eq!(b.kind, want);
            assert_eq!(b.end - b.start, block, "block {j}");
            let ops = t.ops[b.start..b.end].iter().zip(&counts[b.start..b.end]);
            for (op, live) in ops {
                assert_eq!(matches!(op, Op::Free { .. }), want == Kind::Free);
                assert!((n - block + half..=n + half).contains(live));
            }
        }
        assert!(
            (t.stats.mean_live - n as f64).abs() <= 1.0,
            "{}",
            t.stats.mean_live
        );
        assert_eq!(t.stats.failed, 0);
        // The counts cover the timed rounds only.
        assert_eq!((t.stats.allocs, t.stats.frees), (60 * block, 60 * block));
    }
}

#[test]
fn steady_rejects_bad_parameters() {
    assert_eq!(
        Trace::steady(10, 0, 0, 1, SEED, true).unwrap_err(),
        TraceError::BadBlock { n: 10, block: 0 }
    );
    assert_eq!(
        Trace::steady(10, 6, 0, 1, SEED, true).unwrap_err(),
        TraceError::BadBlock { n: 10, block: 6 }
    );
    assert_eq!(
        Trace::steady(1, 1, 0, 1, SEED, true).unwrap_err(),
        TraceError::BadTarget(1)
    );
}

/// A heap placing in the other order: it must be caught at the first
/// allocation where the orders differ.
#[test]
fn verify_reports_the_first_differing_answer() {
    let t = Trace::steady(50, 10, 100, 20, SEED, true).unwrap();
    let d = verify(&mut hole_list(false), &t).unwrap_err();
    let Op::Alloc { size, align, at } = t.ops[d.op] else {
        panic!("{d:?} is not an allocation");
    };
    assert_eq!((d.size, d.align, d.expected), (size, align, at));
    assert_ne!(d.got, d.expected);
    // Every earlier allocation agreed: the lowest-first heap answers them
    // as the trace does.
    let mut h = hole_list(false);
    for op in &t.ops[..d.op] {
        match *op {
            Op::Alloc { size, align, at } => assert_eq!(h.alloc(size, align), at),
            Op::Free { addr, size } => h.free(addr, size),
        }
    }
}

/// Mesa's loops, literally: the holes in a list from the highest down; an
/// allocation tries them from one end until one holds the range, a free
/// walks from the top to the first hole starting at or below it. Returns
/// the mean holes visited per timed allocation and per timed free.
fn walk_by_hand(t: &Trace) -> (f64, f64) {
    let mut m = Model::default();
    let timed = |i: usize| t.blocks.iter().any(|b| (b.start..b.end).contains(&i));
    let (mut a, mut an, mut f, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    for (i, op) in t.ops.iter().enumerate() {
        let mut list = m.holes();
        list.reverse();
        match *op {
            Op::Alloc { size, align, at } => {
                let mask = align - 1;
                let mut visited = 0;
                let order: Vec<_> = if t.topdown {
                    list.clone()
                } else {
                    list.iter().rev().copied().collect()
                };
                for (s, e) in order {
                    visited += 1;
                    let fits = if t.topdown {
                        e.checked_sub(size).is_some_and(|x| x & !mask >= s)
                    } else {
                        s.checked_add(mask)
                            .is_some_and(|x| x & !mask <= e && e - (x & !mask) >= size)
                    };
                    if fits {
                        break;
                    }
                }
                if timed(i) {
                    a += visited;
                    an += 1;
                }
                if let Some(x) = at {
                    m.live.insert(x, x + size);
                }
            }
            Op::Free { addr, .. } => {
                let mut visited = 0;
                for (s, _) in list {
                    visited += 1;
                    if s <= addr {
                        break;
                    }
                }
                if timed(i) {
                    f += visited;
                    fn_ += 1;
                }
                m.live.remove(&addr);
            }
        }
    }
    (a as f64 / an as f64, f as f64 / fn_ as f64)
}

#[test]
fn list_walks_count_what_mesa_loops_visit() {
    // By hand, highest first: three pages from the top, the middle one
    // freed, two pages (the freed page is too short: two holes tried), the
    // top page freed (one hole walked), the two pages freed (two walked),
    // and a range that fits nowhere (both holes tried).
    let p = PAGE;
    let ops = vec![
        Op::Alloc {
            size: p,
            align: p,
            at: Some(HI - p),
        },
        Op::Alloc {
            size: p,
            align: p,
            at: Some(HI - 2 * p),
        },
        Op::Alloc {
            size: p,
            align: p,
            at: Some(HI - 3 * p),
        },
        Op::Free {
            addr: HI - 2 * p,
            size: p,
        },
        Op::Alloc {
            size: 2 * p,
            align: p,
            at: Some(HI - 5 * p),
        },
        Op::Free {
            addr: HI - p,
            size: p,
        },
        Op::Free {
            addr: HI - 5 * p,
            size: 2 * p,
        },
        Op::Alloc {
            size: 1 << 63,
            align: 1 << 63,
            at: None,
        },
    ];
    let t = Trace {
        blocks: vec![Block {
            start: 0,
            end: ops.len(),
            kind: Kind::Mixed,
        }],
        ops,
        topdown: true,
        stats: TraceStats::default(),
    };
    Model::check(&t);
    all_agree(&t);
    let w = list_walks(&t);
    assert_eq!(
        w,
        ListWalks {
            alloc: 7.0 / 5.0,
            free: 4.0 / 3.0
        }
    );
    assert_eq!(walk_by_hand(&t), (w.alloc, w.free));
    // Generated traces, both orders, timed parts only.
    for topdown in [true, false] {
        for t in [
            Trace::mesa_test(MESA_COUNT, SEED, topdown),
            Trace::steady(200, 16, 400, 40, SEED, topdown).unwrap(),
        ] {
            let w = list_walks(&t);
            let (a, f) = walk_by_hand(&t);
            assert!((w.alloc - a).abs() < 1e-9 && (w.free - f).abs() < 1e-9);
            assert!(w.alloc >= 1.0 && w.free >= 1.0);
        }
    }
}
