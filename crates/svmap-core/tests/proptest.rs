//! Property tests: random operation sequences run on [`AddressMap`] (and
//! `Mm<AddressMap>`) and on the reference [`ModelMap`] (and `Mm<ModelMap>`)
//! through `svmap_core::fuzzing::run`, which asserts identical answers and
//! VMA lists and calls `check_invariants()` after every change; plus the
//! one-second run of the fuzz target's `check` on pseudo-random byte strings
//! (the STYLE.md "one-second arbtest").
//!
//! Every test counts the operations it ran and asserts a floor, so the
//! whole file runs well over 100,000 operations per `cargo test` (see the
//! `ops` lines with `--nocapture`). The seed is fixed unless
//! `PROPTEST_RNG_SEED` is set; `PROPTEST_CASES` overrides the case counts.
//!
//! Addresses come from a few scales (near 0, 2^32, 2^47 and 2^64), page- or
//! byte-granular, or relative to the edges of existing VMAs, so that
//! collisions, splits and guard gaps happen all the time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use svmap_core::fuzzing::{
    self, Addr, Edge, Extent, FitOp, MmapOp, Op, RunStats, SearchOp, TestCase,
};
use svmap_core::linux::{Fixed, Layout, MmConfig, DEFAULT_MAP_WINDOW, PAGE_SIZE, PMD_SIZE};
use svmap_core::model::ModelMap;
use svmap_core::{AddressMap, FitRequest, SearchParams, UnmappedAreaInfo, VmaFlags};

const PAGE: u64 = PAGE_SIZE;
const GUARD: u64 = 0x10_0000;

// ----- running ------------------------------------------------------------

/// Runs `cases` cases of `strategy` through `f` with a fixed seed (unless
/// `PROPTEST_RNG_SEED` is set), counts the operations `f` reports, prints
/// and returns the count.
fn run_prop<S: Strategy>(
    name: &str,
    cases: u32,
    shrink: bool,
    strategy: S,
    f: impl Fn(S::Value) -> Result<RunStats, TestCaseError>,
) -> u64 {
    let mut config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: if shrink { 4096 } else { 0 },
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config.cases = Config::default().cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_0000 ^ name.len() as u64);
    }
    let ops = AtomicU64::new(0);
    let found = AtomicU64::new(0);
    let max_vmas = AtomicU64::new(0);
    let start = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        let s = f(v)?;
        ops.fetch_add(s.ops, Ordering::Relaxed);
        found.fetch_add(s.found, Ordering::Relaxed);
        max_vmas.fetch_max(s.max_vmas as u64, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let ops = ops.into_inner();
    eprintln!(
        "{name}: {ops} ops ({} found an address), up to {} VMAs, {:.2?}",
        found.into_inner(),
        max_vmas.into_inner(),
        start.elapsed()
    );
    ops
}

/// Runs a differential case. On a failure, removes operations one at a time
/// while it still fails the same way (proptest's own shrinking is switched
/// off for these: operations address VMAs by index, which it cannot keep
/// meaningful) and reports the smallest case found.
fn run_case(case: TestCase) -> Result<RunStats, TestCaseError> {
    match try_run(&case) {
        Ok(s) => Ok(s),
        Err(first) => {
            let hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let mut small = case;
            let mut progress = true;
            while progress {
                progress = false;
                let mut i = 0;
                while i < small.ops.len() {
                    let mut c = small.clone();
                    c.ops.remove(i);
                    match try_run(&c) {
                        Err(e) if same_failure(&e, &first) => {
                            small = c;
                            progress = true;
                        }
                        _ => i += 1,
                    }
                }
            }
            std::panic::set_hook(hook);
            let last = try_run(&small).err().unwrap_or_default();
            Err(TestCaseError::fail(format!(
                "{first}\n\nminimal case ({} ops), failing with:\n{last}\n{small:#x?}",
                small.ops.len()
            )))
        }
    }
}

fn try_run(case: &TestCase) -> Result<RunStats, String> {
    std::panic::catch_unwind(|| fuzzing::run(case)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Same kind of failure: the same first words (up to the op number).
fn same_failure(a: &str, b: &str) -> bool {
    let key = |s: &str| -> String {
        let line = s.lines().next().unwrap_or("");
        let line = line.split(" op #").next().unwrap_or(line);
        line.chars().take(48).collect()
    };
    key(a) == key(b)
}

// ----- strategies ------------------------------------------------------------

/// Where a case's addresses cluster, and their granularity.
#[derive(Clone, Copy, Debug)]
struct Scale {
    base: u64,
    gran: u64,
}

fn scale() -> impl Strategy<Value = Scale> {
    let base = prop_oneof![
        Just(0u64),
        Just(1u64 << 32),
        Just(1u64 << 47),
        Just(DEFAULT_MAP_WINDOW),
        // Near 2^64: offsets up to 16 MiB either side wrap past the top.
        Just(0u64.wrapping_sub(8 << 20)),
    ];
    let gran = prop_oneof![3 => Just(PAGE), 1 => Just(1u64)];
    (base, gran).prop_map(|(base, gran)| Scale { base, gran })
}

/// An address of the scale: an offset of up to 4096 granules either side of
/// the base, an edge of an existing VMA (or its guard gap) plus a little, or
/// anything.
fn addr(sc: Scale) -> impl Strategy<Value = Addr> {
    let g = sc.gran as i64;
    prop_oneof![
        5 => (-4096i64..4096).prop_map(move |k| Addr::Abs(sc.base.wrapping_add((k * g) as u64))),
        4 => (any::<u16>(), any::<bool>(), -8i64..8).prop_map(move |(index, start, k)| {
            Addr::Near {
                index,
                edge: if start { Edge::Start } else { Edge::End },
                delta: k * g,
            }
        }),
        1 => (any::<u16>(), -4i64..4).prop_map(move |(index, k)| Addr::Near {
            index,
            edge: Edge::Start,
            delta: -(GUARD as i64) + k * g,
        }),
        1 => any::<u64>().prop_map(Addr::Abs),
    ]
}

/// A length: mostly a few granules, sometimes PMD multiples, huge values or
/// values near 2^64.
fn len(sc: Scale) -> impl Strategy<Value = u64> {
    let g = sc.gran;
    prop_oneof![
        8 => (1u64..64).prop_map(move |k| k * g),
        2 => (1u64..4, prop_oneof![Just(0u64), Just(PAGE), Just(PAGE.wrapping_neg())])
            .prop_map(|(k, d)| (k * PMD_SIZE).wrapping_add(d)),
        1 => (1u64..1024).prop_map(move |k| k * 64 * g),
        1 => (0u32..64).prop_map(|k| 1u64 << k),
        1 => (0u64..16).prop_map(move |k| 0u64.wrapping_sub(k * g)),
        1 => Just(0u64),
    ]
}

fn extent(sc: Scale) -> impl Strategy<Value = Extent> {
    prop_oneof![
        6 => (len(sc), any::<bool>()).prop_map(|(len, clip)| Extent::Len { len, clip }),
        1 => addr(sc).prop_map(Extent::End),
    ]
}

fn flags() -> impl Strategy<Value = VmaFlags> {
    prop_oneof![
        6 => Just(VmaFlags::NONE),
        2 => Just(VmaFlags::GROWSDOWN),
        1 => Just(VmaFlags::GROWSUP),
    ]
}

fn mask() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        2 => prop_oneof![Just(0xfffu64), Just(0xffff), Just(0x1f_ffff)],
        1 => (0u32..=64).prop_map(|k| if k == 64 { u64::MAX } else { (1u64 << k) - 1 }),
    ]
}

fn params() -> impl Strategy<Value = SearchParams> {
    (
        prop_oneof![Just(0u64), Just(0x1000), Just(0x10000)],
        prop_oneof![4 => Just(GUARD), 1 => Just(0u64), 1 => Just(0x3000u64), 1 => Just(0x1234u64)],
        any::<bool>(),
    )
        .prop_map(
            |(mmap_min_addr, stack_guard_gap, growsup_guard)| SearchParams {
                mmap_min_addr,
                stack_guard_gap,
                growsup_guard,
                page_size: PAGE,
            },
        )
}

fn search(sc: Scale) -> impl Strategy<Value = SearchOp> {
    (
        any::<bool>(),
        len(sc),
        addr(sc),
        addr(sc),
        mask(),
        prop_oneof![3 => Just(0u64), 1 => (0u64..64).prop_map(|k| k * PAGE), 1 => any::<u64>()],
        prop_oneof![4 => Just(0u64), 1 => Just(PAGE), 1 => Just(1u64)],
    )
        .prop_map(
            |(topdown, length, low, high, align_mask, align_offset, start_gap)| SearchOp {
                topdown,
                length,
                low,
                high,
                align_mask,
                align_offset,
                start_gap,
            },
        )
}

fn fit(sc: Scale) -> impl Strategy<Value = FitOp> {
    (
        len(sc),
        addr(sc),
        addr(sc),
        prop_oneof![
            6 => (0u32..24).prop_map(|k| 1u64 << k),
            1 => (24u32..64).prop_map(|k| 1u64 << k),
            1 => any::<u64>(),
        ],
        prop_oneof![3 => Just(0u64), 1 => (0u64..64).prop_map(|k| k * PAGE), 1 => any::<u64>()],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(length, low, high, align, align_offset, topdown, respect_guard_gaps)| FitOp {
                length,
                low,
                high,
                align,
                align_offset,
                topdown,
                respect_guard_gaps,
            },
        )
}

fn mmap_op(sc: Scale) -> impl Strategy<Value = MmapOp> {
    (
        len(sc),
        prop_oneof![3 => Just(Addr::Abs(0)), 2 => addr(sc)],
        prop_oneof![6 => Just(Fixed::No), 1 => Just(Fixed::Fixed), 1 => Just(Fixed::NoReplace)],
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(length, hint, fixed, growsdown, map32bit)| MmapOp {
            length,
            hint,
            fixed,
            growsdown,
            map32bit,
        })
}

/// Every kind of operation, the map-level ones weighted up.
fn op(sc: Scale) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (addr(sc), extent(sc), flags())
            .prop_map(|(start, extent, flags)| Op::Insert { start, extent, flags }),
        3 => (addr(sc), extent(sc)).prop_map(|(start, extent)| Op::Unmap { start, extent }),
        4 => (search(sc), params()).prop_map(|(s, p)| Op::Search(s, p)),
        2 => (fit(sc), params()).prop_map(|(f, p)| Op::Fit(f, p)),
        2 => (addr(sc), extent(sc)).prop_map(|(addr, extent)| Op::Lookup { addr, extent }),
        2 => mmap_op(sc).prop_map(Op::Mmap),
        1 => (mmap_op(sc), 0u8..16).prop_map(|(o, n)| Op::MmapRepeat(o, n)),
        1 => (addr(sc), len(sc)).prop_map(|(start, len)| Op::Munmap { start, len }),
    ]
}

/// A process configuration: mostly the defaults, sometimes odd values.
fn config() -> impl Strategy<Value = MmConfig> {
    let d = MmConfig::default();
    (
        prop_oneof![
            6 => Just(d.task_size),
            1 => Just((1u64 << 56) - PAGE),
            1 => Just(1u64 << 32),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ],
        prop_oneof![Just(0x10000u64), Just(0), Just(0x1000), Just(0x10001)],
        prop_oneof![4 => Just(GUARD), 1 => Just(0u64), 1 => Just(0x1234u64)],
        prop_oneof![Just(Layout::TopDown), Just(Layout::Legacy)],
        prop_oneof![
            6 => Just(d.mmap_base),
            1 => Just(0x1555_5555_6000u64),
            1 => Just(0u64),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ],
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(task_size, mmap_min_addr, stack_guard_gap, layout, mmap_base, thp_align)| MmConfig {
                task_size,
                mmap_min_addr,
                stack_guard_gap,
                layout,
                mmap_base,
                thp_align,
            },
        )
}

// ----- the differential runs ---------------------------------------------

/// Every operation kind, at every scale.
#[test]
fn random_ops_match_the_model() {
    let strategy = (scale(), config()).prop_flat_map(|(sc, cfg)| {
        prop::collection::vec(op(sc), 50..250).prop_map(move |ops| TestCase { cfg, ops })
    });
    let ops = run_prop("random_ops_match_the_model", 256, false, strategy, run_case);
    assert!(ops >= 30_000, "only {ops} operations");
}

/// The mmap policy: mmap (hints near existing VMAs, fixed modes,
/// grows-down, MAP_32BIT, THP lengths), fills and munmap on both layouts
/// with random configurations, around `mmap_base` and the legacy base.
#[test]
fn mmap_policy_matches_the_model() {
    let base = prop_oneof![
        Just(0x7fff_f7ff_f000u64 - (16 << 20)),
        Just(0x2aaa_aaaa_b000u64),
        Just(0x4000_0000u64),
        Just(0x1_0000u64),
    ];
    let strategy = (base, config()).prop_flat_map(|(base, cfg)| {
        let sc = Scale { base, gran: PAGE };
        let op = prop_oneof![
            6 => mmap_op(sc).prop_map(Op::Mmap),
            1 => (mmap_op(sc), 0u8..32).prop_map(|(o, n)| Op::MmapRepeat(o, n)),
            3 => (addr(sc), len(sc)).prop_map(|(start, len)| Op::Munmap { start, len }),
            1 => (addr(sc), extent(sc), flags())
                .prop_map(|(start, extent, flags)| Op::Insert { start, extent, flags }),
            1 => (search(sc), params()).prop_map(|(s, p)| Op::Search(s, p)),
        ];
        prop::collection::vec(op, 20..150).prop_map(move |ops| TestCase { cfg, ops })
    });
    let ops = run_prop("mmap_policy_matches_the_model", 200, false, strategy, run_case);
    assert!(ops >= 15_000, "only {ops} operations");
}

/// One big VMA split into many pieces by small unmaps (and small inserts
/// back into the holes), then unmaps that each cover many VMAs.
#[test]
fn heavy_unmap_splitting() {
    let strategy = (scale(), any::<bool>(), 256u64..2048).prop_flat_map(|(sc, guard, pages)| {
        let g = sc.gran;
        let big = Op::Insert {
            start: Addr::Abs(sc.base),
            extent: Extent::Len {
                len: pages * g,
                clip: true,
            },
            flags: if guard {
                VmaFlags::GROWSDOWN
            } else {
                VmaFlags::NONE
            },
        };
        let inside = move |k: u64| Addr::Abs(sc.base.wrapping_add(k * g));
        let small_unmap = (0..pages, 1u64..4).prop_map(move |(k, n)| Op::Unmap {
            start: inside(k),
            extent: Extent::Len {
                len: n * g,
                clip: true,
            },
        });
        let refill = (0..pages, 1u64..3).prop_map(move |(k, n)| Op::Insert {
            start: inside(k),
            extent: Extent::Len {
                len: n * g,
                clip: true,
            },
            flags: VmaFlags::NONE,
        });
        let wide_unmap = (0..pages, 16u64..512).prop_map(move |(k, n)| Op::Unmap {
            start: inside(k),
            extent: Extent::Len {
                len: n * g,
                clip: true,
            },
        });
        let lookup = (any::<u16>(), -2i64..2).prop_map(move |(index, k)| Op::Lookup {
            addr: Addr::Near {
                index,
                edge: Edge::End,
                delta: k * g as i64,
            },
            extent: Extent::Len {
                len: 64 * g,
                clip: true,
            },
        });
        let phase1 = prop::collection::vec(
            prop_oneof![6 => small_unmap, 1 => refill, 1 => lookup.clone()],
            100..300,
        );
        let phase2 = prop::collection::vec(prop_oneof![2 => wide_unmap, 1 => lookup], 5..30);
        (phase1, phase2).prop_map(move |(p1, p2)| {
            let mut ops = vec![big];
            ops.extend(p1);
            ops.extend(p2);
            TestCase {
                cfg: MmConfig::default(),
                ops,
            }
        })
    });
    let ops = run_prop("heavy_unmap_splitting", 64, false, strategy, |case| {
        let s = run_case(case)?;
        prop_assert!(s.max_vmas >= 20, "too few pieces: {}", s.max_vmas);
        Ok(s)
    });
    assert!(ops >= 10_000, "only {ops} operations");
}

/// `find_vma`, `vma_at`, `prev_vma`, `next_vma`, `first_overlap`, `range`,
/// `first` and `last` against the model's linear scans (inside `run`), on
/// maps built from random inserts, at VMA edges and in between.
#[test]
fn lookups_match_linear_scans() {
    let strategy = scale().prop_flat_map(|sc| {
        let g = sc.gran;
        let insert =
            (-4096i64..4096, 1u64..32, flags()).prop_map(move |(k, n, flags)| Op::Insert {
                start: Addr::Abs(sc.base.wrapping_add((k * g as i64) as u64)),
                extent: Extent::Len {
                    len: n * g,
                    clip: true,
                },
                flags,
            });
        let lookup = (addr(sc), extent(sc)).prop_map(|(addr, extent)| Op::Lookup { addr, extent });
        (
            prop::collection::vec(insert, 20..200),
            prop::collection::vec(lookup, 50..200),
        )
            .prop_map(|(mut ops, lookups)| {
                ops.extend(lookups);
                TestCase {
                    cfg: MmConfig::default(),
                    ops,
                }
            })
    });
    let ops = run_prop("lookups_match_linear_scans", 128, false, strategy, run_case);
    assert!(ops >= 10_000, "only {ops} operations");
}

// ----- the search's postconditions -----------------------------------------

/// A page-granular map around `base` with some grows-down VMAs.
fn page_map(base: u64) -> impl Strategy<Value = Vec<(u64, u64, VmaFlags)>> {
    prop::collection::vec((0u64..4096, 1u64..64, flags()), 0..150).prop_map(move |v| {
        v.into_iter()
            .map(|(k, n, f)| (base + k * PAGE, base + (k + n) * PAGE, f))
            .collect()
    })
}

fn build(vmas: &[(u64, u64, VmaFlags)]) -> (AddressMap, ModelMap) {
    let mut a = AddressMap::new();
    let mut m = ModelMap::new();
    for &(s, e, f) in vmas {
        let r = a.insert(s, e, f);
        assert_eq!(r, svmap_core::linux::Space::insert(&mut m, s, e, f));
    }
    a.check_invariants();
    (a, m)
}

/// `unmapped_area` results satisfy the documented postconditions (aligned,
/// inside the window, free, clear of the guard gap above) whenever no
/// wrap-around is involved, and equal the model's.
#[test]
fn unmapped_area_postconditions() {
    let base = prop_oneof![Just(1u64 << 24), Just(1u64 << 32), Just(1u64 << 46)];
    let strategy = base.prop_flat_map(|base| {
        let span = 4096 * PAGE;
        let info = (
            any::<bool>(),
            1u64..128,
            0..span,
            0..span + (64 << 20),
            mask(),
            (0u64..512).prop_map(|k| k * PAGE),
            prop_oneof![3 => Just(0u64), 1 => Just(PAGE)],
        )
            .prop_map(move |(topdown, n, lo, hi, m, off, sg)| UnmappedAreaInfo {
                topdown,
                length: n * PAGE,
                low_limit: base - (8 << 20) + lo,
                high_limit: base - (8 << 20) + hi,
                // Keep the padding well inside 64 bits.
                align_mask: m & 0xff_ffff_ffff,
                align_offset: off,
                start_gap: sg,
            });
        (
            page_map(base),
            prop::collection::vec(info, 20..80),
            params(),
        )
    });
    let ops = run_prop(
        "unmapped_area_postconditions",
        256,
        true,
        strategy,
        |(vmas, infos, p)| {
            let (a, m) = build(&vmas);
            let mut stats = RunStats {
                max_vmas: a.len(),
                ..RunStats::default()
            };
            for info in &infos {
                let r = a.unmapped_area(info, &p);
                prop_assert_eq!(r, m.unmapped_area(info, &p), "{:#x?}", info);
                stats.ops += 1;
                let Ok(addr) = r else { continue };
                stats.found += 1;
                // The map's base is far from 0, so no guard gap saturates
                // and no retry moves a limit to 0: nothing wraps.
                prop_assert!(addr >= info.low_limit.max(p.mmap_min_addr));
                prop_assert!(addr + info.length <= info.high_limit);
                prop_assert_eq!(addr & info.align_mask, info.align_offset & info.align_mask);
                prop_assert!(a
                    .first_overlap(addr - info.start_gap, addr + info.length)
                    .is_none());
                fuzzing::check_search_postconditions(&a, info, &p, addr);
            }
            Ok(stats)
        },
    );
    assert!(ops >= 10_000, "only {ops} operations");
}

/// `find_fit` results are aligned, inside the window, free and out of the
/// guard gaps, and equal the model's exhaustive search.
#[test]
fn find_fit_postconditions() {
    let base = 1u64 << 32;
    let req = (
        1u64..256,
        0u64..4096 + 512,
        0u64..4096 + 512,
        (0u32..24).prop_map(|k| 1u64 << k),
        (0u64..64).prop_map(|k| k * PAGE),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(n, lo, hi, align, align_offset, topdown, guards)| FitRequest {
                length: n * PAGE,
                low: base - 256 * PAGE + lo * PAGE,
                high: base - 256 * PAGE + hi * PAGE,
                align: align.max(PAGE),
                align_offset,
                topdown,
                respect_guard_gaps: guards,
            },
        );
    let strategy = (page_map(base), prop::collection::vec(req, 20..80), params());
    let ops = run_prop(
        "find_fit_postconditions",
        128,
        true,
        strategy,
        |(vmas, reqs, p)| {
            let (a, m) = build(&vmas);
            let mut stats = RunStats {
                max_vmas: a.len(),
                ..RunStats::default()
            };
            for req in &reqs {
                let r = a.find_fit(req, &p);
                prop_assert_eq!(r, m.find_fit(req, &p), "{:#x?}", req);
                stats.ops += 1;
                if let Ok(addr) = r {
                    stats.found += 1;
                    fuzzing::check_fit_postconditions(&a, req, &p, addr);
                }
            }
            Ok(stats)
        },
    );
    assert!(ops >= 5_000, "only {ops} operations");
}

// ----- the fuzz target's check, for about one second -------------------------

/// xorshift64: the fixed-seed byte source of the one-second run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `fuzzing::check` (the cargo-fuzz target's body) on pseudo-random byte
/// strings for about a second, bounded by time and by iterations.
#[test]
fn fuzz_check_for_one_second() {
    let budget = Duration::from_secs(1);
    let max_iters = if cfg!(miri) { 4 } else { 100_000 };
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let start = Instant::now();
    let mut iters = 0u64;
    let mut ops = 0u64;
    while iters < max_iters && (iters < 16 || start.elapsed() < budget) {
        let len = (rng.next() % 1536) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let case = fuzzing::decode(&data);
        ops += fuzzing::run(&case).ops;
        iters += 1;
    }
    eprintln!(
        "fuzz_check_for_one_second: {iters} inputs, {ops} ops, {:.2?}",
        start.elapsed()
    );
    assert!(iters >= 16);
}

#[test]
fn zz_gen_only() {
    let strategy = (scale(), config()).prop_flat_map(|(sc, cfg)| {
        prop::collection::vec(op(sc), 50..250).prop_map(move |ops| TestCase { cfg, ops })
    });
    run_prop("gen_only", 256, false, strategy, |c| Ok(RunStats { ops: c.ops.len() as u64, ..Default::default() }));
}
