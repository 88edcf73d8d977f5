//! [`VaHeap`] against a plain reference model and against [`AddressMap`].
//!
//! The model ([`HoleModel`]) keeps the holes in a sorted `Vec` and answers every
//! question by a linear scan: `free` merges with the holes it touches,
//! `alloc_at` splits the one hole that holds the range, and a fit tries
//! the holes in address order (reverse for top-down) with a per-hole rule
//! that is itself checked against exhaustive enumeration of every start in
//! small universes ([`model_fit_matches_enumeration`]). The third party is
//! an [`AddressMap`] kept as the complement of the free space (every
//! allocation is a VMA, every free an unmap): the heap promises the map's
//! `find_fit` and `find_fit_nocross` answers, errors included, with
//! `mmap_min_addr` 0 and no grows-down or grows-up VMAs.
//!
//! The property tests ([`run_prop`]) draw random words with proptest and
//! turn them into concrete operations against the model's state
//! ([`Builder`]): frees of allocated ranges (whole gaps between holes, so
//! that holes merge, or parts of them), frees of arbitrary ranges (mostly
//! refused), `alloc_at` of parts of holes and of arbitrary ranges, and fits
//! and allocations with random lengths, windows, alignments (1 to 2^22,
//! with 4 KiB, 64 KiB and 2 MiB often, zero and other offsets), both
//! orders and boundaries. Large cases build thousands of holes (every other
//! page of a range, or a hole punched page by page) and drain them again in
//! bulk, so that leaves split, borrow and merge and the tree changes
//! height; tiny cases keep 0, 1 or 2 holes. After every operation
//! ([`Runner::apply`]) the three answers must agree, `hole_count` and
//! `free_bytes` must match the model, and (every operation while the heap
//! is small, amortised over the hole count when it is large) `holes()`,
//! the map's complement and `check_invariants()` are checked.
//!
//! A failure is shrunk by removing runs of operations while it fails the
//! same way, and reported as a list of `Op`s that [`replay`] runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRunner};

use svmap_core::heap_model::{highest_in_hole, lowest_in_hole, HoleModel, SPACE};
use svmap_core::{
    AddressMap, FitError, FitRequest, HeapError, NoCrossError, SearchParams, VaHeap, VmaFlags,
};

const PAGE: u64 = 0x1000;
const KB64: u64 = 0x1_0000;
const MB2: u64 = 0x20_0000;

/// The search parameters under which the heap promises the map's answers.
fn params() -> SearchParams {
    SearchParams {
        mmap_min_addr: 0,
        ..SearchParams::default()
    }
}

/// A request, in the order the reports print it.
fn req(
    length: u64,
    low: u64,
    high: u64,
    align: u64,
    align_offset: u64,
    topdown: bool,
    respect_guard_gaps: bool,
) -> FitRequest {
    FitRequest {
        length,
        low,
        high,
        align,
        align_offset,
        topdown,
        respect_guard_gaps,
    }
}

/// A request over the whole address space, lowest first, no guard gaps.
fn plain(length: u64, align: u64, align_offset: u64, topdown: bool) -> FitRequest {
    req(length, 0, u64::MAX, align, align_offset, topdown, false)
}

// The reference model is `svmap_core::heap_model::HoleModel`.

// ----- the heap under test ------------------------------------------------

/// What the runner needs of a heap. [`VaHeap`] is the one under test; the
/// model implements it too, which tests the model and the runner against
/// the map on their own.
trait Heap {
    fn free(&mut self, s: u64, e: u64) -> Result<(), HeapError>;
    fn alloc_at(&mut self, s: u64, e: u64) -> Result<(), HeapError>;
    fn find_fit(&self, req: &FitRequest) -> Result<u64, FitError>;
    fn find_fit_nocross(&self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError>;
    fn alloc(&mut self, req: &FitRequest) -> Result<u64, FitError>;
    fn alloc_nocross(&mut self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError>;
    fn holes(&self) -> Vec<(u64, u64)>;
    fn hole_count(&self) -> usize;
    fn free_bytes(&self) -> u64;
    fn check(&self);
}

impl Heap for VaHeap {
    fn free(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        VaHeap::free(self, s, e)
    }
    fn alloc_at(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        VaHeap::alloc_at(self, s, e)
    }
    fn find_fit(&self, req: &FitRequest) -> Result<u64, FitError> {
        VaHeap::find_fit(self, req)
    }
    fn find_fit_nocross(&self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError> {
        VaHeap::find_fit_nocross(self, req, b)
    }
    fn alloc(&mut self, req: &FitRequest) -> Result<u64, FitError> {
        VaHeap::alloc(self, req)
    }
    fn alloc_nocross(&mut self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError> {
        VaHeap::alloc_nocross(self, req, b)
    }
    fn holes(&self) -> Vec<(u64, u64)> {
        VaHeap::holes(self).collect()
    }
    fn hole_count(&self) -> usize {
        VaHeap::hole_count(self)
    }
    fn free_bytes(&self) -> u64 {
        VaHeap::free_bytes(self)
    }
    fn check(&self) {
        self.check_invariants();
    }
}

impl Heap for HoleModel {
    fn free(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        HoleModel::free(self, s, e)
    }
    fn alloc_at(&mut self, s: u64, e: u64) -> Result<(), HeapError> {
        HoleModel::alloc_at(self, s, e)
    }
    fn find_fit(&self, req: &FitRequest) -> Result<u64, FitError> {
        self.fit(req, None).map_err(|e| match e {
            NoCrossError::Fit(e) => e,
            other => panic!("a fit without a boundary failed with {other:?}"),
        })
    }
    fn find_fit_nocross(&self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError> {
        self.fit(req, Some(b))
    }
    fn alloc(&mut self, req: &FitRequest) -> Result<u64, FitError> {
        let a = Heap::find_fit(self, req)?;
        HoleModel::alloc_at(self, a, a + req.length).expect("the fit is free");
        Ok(a)
    }
    fn alloc_nocross(&mut self, req: &FitRequest, b: u64) -> Result<u64, NoCrossError> {
        let a = self.fit(req, Some(b))?;
        HoleModel::alloc_at(self, a, a + req.length).expect("the fit is free");
        Ok(a)
    }
    fn holes(&self) -> Vec<(u64, u64)> {
        HoleModel::holes(self).to_vec()
    }
    fn hole_count(&self) -> usize {
        HoleModel::holes(self).len()
    }
    fn free_bytes(&self) -> u64 {
        HoleModel::free_bytes(self)
    }
    fn check(&self) {
        let holes = HoleModel::holes(self);
        assert!(holes.iter().all(|&(s, e)| s < e));
        assert!(holes.windows(2).all(|w| w[0].1 < w[1].0));
        assert_eq!(
            HoleModel::free_bytes(self),
            holes.iter().map(|&(s, e)| e - s).sum::<u64>()
        );
    }
}

// ----- operations and the runner ------------------------------------------

/// One concrete operation. `Find` and `Alloc` with `Some(boundary)` call
/// the `_nocross` functions (a boundary of 0 included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Free(u64, u64),
    AllocAt(u64, u64),
    Find(FitRequest, Option<u64>),
    Alloc(FitRequest, Option<u64>),
}

impl std::fmt::Display for Op {
    /// The operation as Rust source, for a regression test.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |f: &mut std::fmt::Formatter<'_>, r: &FitRequest| {
            write!(
                f,
                "req({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {}, {})",
                r.length, r.low, r.high, r.align, r.align_offset, r.topdown, r.respect_guard_gaps
            )
        };
        let b = |b: &Option<u64>| match b {
            None => "None".to_string(),
            Some(b) => format!("Some({b:#x})"),
        };
        match self {
            Op::Free(s, e) => write!(f, "Op::Free({s:#x}, {e:#x})"),
            Op::AllocAt(s, e) => write!(f, "Op::AllocAt({s:#x}, {e:#x})"),
            Op::Find(q, bd) => {
                f.write_str("Op::Find(")?;
                r(f, q)?;
                write!(f, ", {})", b(bd))
            }
            Op::Alloc(q, bd) => {
                f.write_str("Op::Alloc(")?;
                r(f, q)?;
                write!(f, ", {})", b(bd))
            }
        }
    }
}

/// The heap under test, the model, and the map of the allocated space.
struct Runner<H> {
    heap: H,
    model: HoleModel,
    map: AddressMap,
    /// Operations since the last full check.
    since_check: usize,
    /// Fits and allocations that found an address.
    found: u64,
    most_holes: usize,
    /// The hole count fell to 32 or fewer after reaching 1000 or more.
    drained: bool,
    /// The hole count fell to 100 or fewer after reaching 300 or more.
    dipped: bool,
}

/// The gaps between the map's VMAs in `[0, 2^64 - 1)`: the free space the
/// map describes.
fn map_holes(map: &AddressMap) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = 0;
    for v in map.iter() {
        if v.start > at {
            holes.push((at, v.start));
        }
        at = v.end;
    }
    if at < u64::MAX {
        holes.push((at, u64::MAX));
    }
    holes
}

impl<H: Heap> Runner<H> {
    fn new(heap: H) -> Self {
        let mut map = AddressMap::new();
        // No free space: everything a VMA can cover is allocated.
        map.insert(0, u64::MAX, VmaFlags::NONE).unwrap();
        Runner {
            heap,
            model: HoleModel::default(),
            map,
            since_check: 0,
            found: 0,
            most_holes: 0,
            drained: false,
            dipped: false,
        }
    }

    /// Runs `op` on all three, asserts that they agree, and checks the
    /// heap's state (fully every time when `full`, else amortised).
    fn apply(&mut self, i: usize, op: &Op, full: bool) {
        let p = params();
        match *op {
            Op::Free(s, e) => {
                let want = self.model.free(s, e);
                let got = self.heap.free(s, e);
                assert_eq!(got, want, "free differs at op #{i} {op}");
                if want.is_ok() {
                    self.map.unmap(s, e).unwrap();
                }
            }
            Op::AllocAt(s, e) => {
                let want = self.model.alloc_at(s, e);
                let got = self.heap.alloc_at(s, e);
                assert_eq!(got, want, "alloc_at differs at op #{i} {op}");
                let mapped = self.map.insert(s, e, VmaFlags::NONE);
                assert_eq!(
                    mapped.is_ok(),
                    want.is_ok(),
                    "the map's insert disagrees with the model at op #{i} {op}: {mapped:?}"
                );
            }
            Op::Find(q, b) => {
                let want = self.model.fit(&q, b);
                let (got, map) = match b {
                    None => (
                        self.heap.find_fit(&q).map_err(NoCrossError::Fit),
                        self.map.find_fit(&q, &p).map_err(NoCrossError::Fit),
                    ),
                    Some(b) => (
                        self.heap.find_fit_nocross(&q, b),
                        self.map.find_fit_nocross(&q, b, &p),
                    ),
                };
                assert!(
                    got == want && map == want,
                    "find differs at op #{i} {op}: heap {got:x?}, model {want:x?}, map {map:x?}"
                );
                self.found += u64::from(want.is_ok());
            }
            Op::Alloc(q, b) => {
                let want = self.model.fit(&q, b);
                let (got, map) = match b {
                    None => (
                        self.heap.alloc(&q).map_err(NoCrossError::Fit),
                        self.map
                            .allocate(&q, &p, VmaFlags::NONE)
                            .map_err(NoCrossError::Fit),
                    ),
                    Some(b) => (
                        self.heap.alloc_nocross(&q, b),
                        self.map.allocate_nocross(&q, b, &p, VmaFlags::NONE),
                    ),
                };
                assert!(
                    got == want && map == want,
                    "alloc differs at op #{i} {op}: heap {got:x?}, model {want:x?}, map {map:x?}"
                );
                if let Ok(a) = want {
                    self.model.alloc_at(a, a + q.length).unwrap();
                    self.found += 1;
                }
            }
        }
        assert_eq!(
            self.heap.hole_count(),
            self.model.holes().len(),
            "hole_count differs after op #{i} {op}"
        );
        assert_eq!(
            self.heap.free_bytes(),
            self.model.free_bytes(),
            "free_bytes differs after op #{i} {op}"
        );
        self.most_holes = self.most_holes.max(self.model.holes().len());
        self.drained |= self.most_holes >= 1000 && self.model.holes().len() <= 32;
        self.dipped |= self.most_holes >= 300 && self.model.holes().len() <= 100;
        self.since_check += 1;
        if full || self.since_check * 32 >= self.model.holes().len() {
            self.full_check(&format!("op #{i} {op}"));
        }
    }

    fn full_check(&mut self, at: &str) {
        self.since_check = 0;
        self.heap.check();
        let holes = self.heap.holes();
        if holes != self.model.holes() {
            panic!(
                "holes differ after {at}: heap {} holes, model {}; first difference: {}",
                holes.len(),
                self.model.holes().len(),
                first_difference(&holes, self.model.holes())
            );
        }
        let mapped = map_holes(&self.map);
        if mapped != self.model.holes() {
            panic!(
                "the map's complement differs from the model after {at}: {}",
                first_difference(&mapped, self.model.holes())
            );
        }
    }
}

fn first_difference(a: &[(u64, u64)], b: &[(u64, u64)]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    format!("#{i}: {:x?} vs {:x?}", a.get(i), b.get(i))
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    ops: u64,
    found: u64,
    most_holes: usize,
    /// Cases whose hole count fell to 32 or fewer after reaching 1000.
    drained: u64,
    /// Cases whose hole count fell to 100 or fewer after reaching 300.
    dipped: u64,
}

/// Runs `ops` on a fresh `H` (full checks after every operation when
/// `full`) and checks the end state fully.
fn run_ops<H: Heap>(heap: H, ops: &[Op], full: bool) -> Stats {
    let mut r = Runner::new(heap);
    for (i, op) in ops.iter().enumerate() {
        r.apply(i, op, full);
    }
    r.full_check("the last op");
    Stats {
        ops: ops.len() as u64,
        found: r.found,
        most_holes: r.most_holes,
        drained: u64::from(r.drained),
        dipped: u64::from(r.dipped),
    }
}

/// Runs `ops` on a [`VaHeap`], checking everything after every operation.
fn replay(ops: &[Op]) {
    run_ops(VaHeap::new(), ops, true);
}

fn try_run<H: Heap>(new: &impl Fn() -> H, ops: &[Op]) -> Result<Stats, String> {
    catch_unwind(AssertUnwindSafe(|| run_ops(new(), ops, false))).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// The same kind of failure: the same message up to the operation number.
fn same_failure(a: &str, b: &str) -> bool {
    let key = |s: &str| -> String {
        let line = s.lines().next().unwrap_or("");
        let line = line.split(" op #").next().unwrap_or(line);
        line.chars().take(48).collect()
    };
    key(a) == key(b)
}

/// Runs `ops`; on a failure, removes runs of operations (halving the run
/// length down to one) while the failure stays the same, for at most 20
/// seconds, and reports the smallest list found.
fn run_or_shrink<H: Heap>(new: impl Fn() -> H, ops: &[Op]) -> Result<Stats, String> {
    let first = match try_run(&new, ops) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let budget = Instant::now() + Duration::from_secs(20);
    let mut small = ops.to_vec();
    let mut chunk = small.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < small.len() && Instant::now() < budget {
            let mut c = small.clone();
            c.drain(i..(i + chunk).min(small.len()));
            match try_run(&new, &c) {
                Err(e) if same_failure(&e, &first) => small = c,
                _ => i += chunk,
            }
        }
        if chunk == 1 || Instant::now() >= budget {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    std::panic::set_hook(hook);
    let last = try_run(&new, &small).err().unwrap_or_default();
    let list: Vec<String> = small.iter().map(|op| format!("    {op},")).collect();
    Err(format!(
        "{first}\n\nminimal case ({} of {} ops), failing with:\n{last}\nreplay(&[\n{}\n]);",
        small.len(),
        ops.len(),
        list.join("\n")
    ))
}

// ----- operations from random words ---------------------------------------

/// SplitMix64: turns one proptest-drawn word into the fields of operations.
struct Gen(u64);

impl Gen {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.u64() % (hi - lo)
    }
    fn bool(&mut self) -> bool {
        self.u64() & 1 != 0
    }
    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.u64() % den < num
    }
    /// An index into `weights`, chosen with those weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.u64() % weights.iter().sum::<u64>();
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        unreachable!()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.u64() % xs.len() as u64) as usize]
    }
}

/// How big a case's heap gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    /// 0, 1 or 2 holes to start with, a few operations.
    Tiny,
    /// Up to a thousand holes or so, rising and falling through the
    /// hundreds in bulk runs.
    Medium,
    /// Thousands of holes, built and drained in bulk.
    Large,
}

/// Builds a case's concrete operations against a model of its state.
struct Builder {
    m: HoleModel,
    ops: Vec<Op>,
    /// 4 KiB (page-granular values) or 1 (byte-granular).
    gran: u64,
    /// Where the case's holes cluster: `[base, base + span)`.
    base: u64,
    span: u64,
}

impl Builder {
    fn push(&mut self, op: Op) {
        match op {
            Op::Free(s, e) => {
                let _ = self.m.free(s, e);
            }
            Op::AllocAt(s, e) => {
                let _ = self.m.alloc_at(s, e);
            }
            Op::Find(..) => {}
            Op::Alloc(q, b) => {
                if let Ok(a) = self.m.fit(&q, b) {
                    self.m.alloc_at(a, a + q.length).unwrap();
                }
            }
        }
        self.ops.push(op);
    }

    fn hole(&self, g: &mut Gen) -> Option<(u64, u64)> {
        let n = self.m.holes().len();
        (n > 0).then(|| self.m.holes()[g.range(0, n as u64) as usize])
    }

    /// The allocated gap number `j` (below hole `j`; `n` is the gap above
    /// the last hole), within `[0, 2^64 - 1)`.
    fn gap(&self, j: usize) -> (u64, u64) {
        let h = &self.m.holes();
        let lo = if j == 0 { 0 } else { h[j - 1].1 };
        let hi = if j == h.len() { u64::MAX } else { h[j].0 };
        (lo, hi)
    }

    /// An address: in the case's region, at an edge of a hole give or take
    /// a few granules, inside a hole, at the ends of the address space, or
    /// anything.
    fn addr(&self, g: &mut Gen) -> u64 {
        let gr = self.gran;
        match g.weighted(&[3, 4, 2, 1, 1]) {
            0 => self.base + g.range(0, self.span / gr + 1) * gr,
            1 => match self.hole(g) {
                Some((s, e)) => {
                    let edge = if g.bool() { s } else { e };
                    let d = g.range(0, 4) * gr;
                    if g.bool() {
                        edge.saturating_add(d)
                    } else {
                        edge.saturating_sub(d)
                    }
                }
                None => self.base,
            },
            2 => match self.hole(g) {
                Some((s, e)) => s + g.range(0, ((e - s) / gr).saturating_add(1)) * gr,
                None => self.base,
            },
            3 => g.pick(&[
                0,
                gr,
                u64::MAX,
                u64::MAX - 1,
                !(PAGE - 1),
                (!(PAGE - 1)) - PAGE,
                1 << 47,
            ]),
            _ => g.u64(),
        }
    }

    /// A length: a few granules mostly, runs of them, powers of two,
    /// bytes, 0, or huge.
    fn len(&self, g: &mut Gen) -> u64 {
        let gr = self.gran;
        match g.weighted(&[8, 3, 2, 2, 1, 1]) {
            0 => g.range(1, 9) * gr,
            1 => g.range(1, 512) * gr,
            2 => 1 << g.range(0, 40),
            3 => g.range(1, 10_000),
            4 => 0,
            _ => u64::MAX - g.range(0, 3) * gr,
        }
    }

    /// A window `[low, high)`: the whole space, around the region or a
    /// hole, near the top, empty or inverted, or anything.
    fn window(&self, g: &mut Gen) -> (u64, u64) {
        match g.weighted(&[4, 3, 2, 1, 1, 1]) {
            0 => (0, u64::MAX),
            1 => {
                let (a, b) = (self.addr(g), self.addr(g));
                (a.min(b), a.max(b))
            }
            2 => match self.hole(g) {
                Some((s, e)) => {
                    let d = g.range(0, 3) * self.gran;
                    (s.saturating_add(d), e.saturating_sub(d))
                }
                None => (0, u64::MAX),
            },
            3 => (u64::MAX - g.range(0, 1 << 24), u64::MAX),
            4 => {
                let a = self.addr(g);
                (a, a.saturating_sub(g.range(0, 2) * self.gran))
            }
            _ => (g.u64(), g.u64()),
        }
    }

    /// A request: random length, window, alignment (mostly a power of two
    /// up to 2^22, 4 KiB, 64 KiB and 2 MiB often, now and then a bad one),
    /// offset (mostly 0 or a multiple of the granule) and order.
    fn request(&self, g: &mut Gen) -> FitRequest {
        let length = self.len(g);
        let (low, high) = if g.chance(1, 3) {
            (0, u64::MAX)
        } else {
            self.window(g)
        };
        let align = match g.weighted(&[4, 4, 4, 1, 1]) {
            0 => 1,
            1 => g.pick(&[PAGE, KB64, MB2]),
            2 => 1 << g.range(0, 23),
            3 => 1 << g.range(23, 64),
            _ => g.pick(&[0, 3, 0x3000, u64::MAX]),
        };
        let align_offset = match g.weighted(&[6, 3, 2, 1]) {
            0 => 0,
            1 if align > self.gran => g.range(0, align / self.gran) * self.gran,
            2 if align > 1 => g.range(0, align),
            3 => g.u64(),
            _ => 0,
        };
        FitRequest {
            length,
            low,
            high,
            align,
            align_offset,
            topdown: g.bool(),
            respect_guard_gaps: g.chance(1, 4),
        }
    }

    /// No boundary (the plain fit), 0, a power of two (mostly between a
    /// page and 16 MiB), or a bad one.
    fn boundary(&self, g: &mut Gen) -> Option<u64> {
        match g.weighted(&[5, 1, 4, 1]) {
            0 => None,
            1 => Some(0),
            2 => Some(1 << g.range(0, 25).max(g.range(0, 25))),
            _ => Some(g.pick(&[3, 0x3000, 1 << 63, u64::MAX])),
        }
    }

    /// Frees a part of an allocated gap: between two holes mostly (so
    /// that the hole count changes), all of it, a prefix, a suffix or a
    /// middle.
    fn free_gap(&mut self, g: &mut Gen, whole: bool) {
        let n = self.m.holes().len();
        let j = if n >= 2 && g.chance(4, 5) {
            g.range(1, n as u64) as usize
        } else {
            g.range(0, n as u64 + 1) as usize
        };
        let (lo, hi) = self.gap(j);
        if lo >= hi {
            return;
        }
        let glen = hi - lo;
        let l = (g.range(1, 17) * self.gran).min(glen);
        let (s, e) = match if whole { 0 } else { g.weighted(&[3, 2, 2, 2]) } {
            0 => (lo, hi),
            1 => (lo, lo + l),
            2 => (hi - l, hi),
            _ => {
                let room = (glen - l) / self.gran;
                let s = lo + g.range(0, room + 1) * self.gran;
                (s, s + l)
            }
        };
        self.push(Op::Free(s, e));
    }

    /// Takes a part of a hole with `alloc_at`.
    fn take_part(&mut self, g: &mut Gen) {
        let Some((s, e)) = self.hole(g) else {
            return;
        };
        let units = ((e - s) / self.gran).max(1);
        let a = s + g.range(0, units) * self.gran;
        let l = g.range(1, 9) * self.gran;
        let b = if g.chance(1, 4) {
            e
        } else {
            a.saturating_add(l).min(e)
        };
        self.push(Op::AllocAt(a, b));
    }

    /// Cuts every other granule (or run of `w` granules) out of a hole:
    /// up to `count` new holes.
    fn punch(&mut self, g: &mut Gen, count: u64) {
        let Some((s, e)) = self.hole(g) else {
            return;
        };
        let w = self.gran * g.pick(&[1, 1, 2, 3]);
        let mut a = s.saturating_add(w);
        for _ in 0..count {
            let Some(b) = a.checked_add(w).filter(|&b| b <= e) else {
                break;
            };
            self.push(Op::AllocAt(a, b));
            a = b.saturating_add(w);
        }
    }

    /// The initial free space of a case.
    fn setup(&mut self, g: &mut Gen, size: Size) {
        let gr = self.gran;
        let kind = match size {
            Size::Tiny => g.range(0, 7),
            Size::Medium => g.pick(&[1, 4, 5, 7, 8, 8, 8]),
            Size::Large => g.pick(&[1, 8, 8]),
        };
        match kind {
            // No free space.
            0 => {}
            // One hole, the whole region.
            1 => self.push(Op::Free(self.base, self.base + self.span)),
            // Two holes.
            2 => {
                let a = self.base + g.range(0, 8) * gr;
                let b = a + g.range(1, 8) * gr;
                let c = b + g.range(1, 8) * gr;
                let d = c + g.range(1, 8) * gr;
                self.push(Op::Free(a, b));
                self.push(Op::Free(c, d));
            }
            // A hole at 0.
            3 => self.push(Op::Free(0, g.range(1, 64) * gr)),
            // A hole up to the last byte that can be free.
            4 => self.push(Op::Free(u64::MAX - g.range(1, 1 << 16) * gr, u64::MAX)),
            // The whole address space.
            5 => self.push(Op::Free(0, u64::MAX)),
            // A one-byte hole.
            6 => {
                let a = self.addr(g);
                self.push(Op::Free(a.min(u64::MAX - 1), a.min(u64::MAX - 1) + 1));
            }
            // A few random holes.
            7 => {
                for _ in 0..g.range(3, 12) {
                    self.free_gap(g, false);
                }
            }
            // Stripes: every other granule (or other widths) of the region.
            _ => {
                let n = match size {
                    Size::Large => g.range(1500, 6000),
                    _ => g.range(100, 1200),
                };
                let period = g.pick(&[2, 2, 2, 3, 5]) * gr;
                let width = gr * g.range(1, period / gr);
                for k in 0..n {
                    let s = self.base + k * period;
                    if s + width > self.base + self.span {
                        break;
                    }
                    self.push(Op::Free(s, s + width));
                }
            }
        }
    }

    /// One operation (or, in a medium or large case, a bulk run of them)
    /// from `g`.
    fn op(&mut self, g: &mut Gen, size: Size) {
        let (bulk, most) = match size {
            Size::Tiny => (0, 2),
            Size::Medium => (1, 400),
            Size::Large => (3, 3000),
        };
        match g.weighted(&[4, 4, 4, 1, 2, 1, bulk, bulk, bulk]) {
            0 => {
                let q = self.request(g);
                let b = self.boundary(g);
                self.push(Op::Find(q, b));
            }
            1 => {
                let q = self.request(g);
                let b = self.boundary(g);
                self.push(Op::Alloc(q, b));
            }
            2 => self.free_gap(g, false),
            3 => {
                let a = self.addr(g);
                let e = if g.chance(1, 8) {
                    self.addr(g)
                } else {
                    a.saturating_add(self.len(g))
                };
                self.push(Op::Free(a, e));
            }
            4 => self.take_part(g),
            5 => {
                let a = self.addr(g);
                let e = a.saturating_add(self.len(g));
                self.push(Op::AllocAt(a, e));
            }
            // Drain: many frees of whole gaps between holes.
            6 => {
                for _ in 0..g.range(1, most) {
                    let whole = g.chance(3, 4);
                    self.free_gap(g, whole);
                }
            }
            // Churn: the same small request many times.
            7 => {
                let mut q = self.request(g);
                q.length = g.range(1, 5) * self.gran;
                let b = if g.bool() { None } else { self.boundary(g) };
                for _ in 0..g.range(1, most / 2) {
                    let ok = self.m.fit(&q, b).is_ok();
                    self.push(Op::Alloc(q, b));
                    if !ok {
                        break;
                    }
                }
            }
            // Fragment a hole.
            _ => {
                let count = g.range(1, most);
                self.punch(g, count);
            }
        }
    }
}

/// The concrete operations of a case drawn as `setup` and `words`.
fn build(size: Size, setup: u64, words: &[u64]) -> Vec<Op> {
    let mut g = Gen(setup);
    let gran = if g.chance(3, 4) { PAGE } else { 1 };
    let span = gran
        * match size {
            Size::Tiny => 64,
            Size::Medium => 8192,
            Size::Large => 1 << 16,
        };
    let base = match g.range(0, 5) {
        0 => 0,
        1 => 1 << 32,
        2 => 1 << 47,
        3 => 0x5555_5555_5000 & !(gran * 16 - 1),
        // The region ends at the last page boundary.
        _ => (!(PAGE - 1)) - span,
    };
    let mut b = Builder {
        m: HoleModel::default(),
        ops: Vec::new(),
        gran,
        base,
        span,
    };
    b.setup(&mut g, size);
    for &w in words {
        b.op(&mut Gen(w), size);
    }
    b.ops
}

/// Runs `cases` cases of `size`, each a setup word and `words` operation
/// words, on `new()` heaps; prints the totals and returns them.
fn run_prop<H: Heap>(
    name: &str,
    size: Size,
    cases: u32,
    words: std::ops::Range<usize>,
    new: impl Fn() -> H,
) -> Stats {
    let mut config = Config {
        cases,
        failure_persistence: None,
        // run_or_shrink shrinks the concrete operations.
        max_shrink_iters: 0,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_some() {
        config.cases = Config::default().cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        let seed = name.bytes().fold(0x5eed_u64, |h, b| {
            h.wrapping_mul(0x100_0000_01b3) ^ b as u64
        });
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let ops = AtomicU64::new(0);
    let found = AtomicU64::new(0);
    let most = AtomicUsize::new(0);
    let drained = AtomicU64::new(0);
    let dipped = AtomicU64::new(0);
    let start = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &(any::<u64>(), vec(any::<u64>(), words)),
        |(setup, words)| {
            let list = build(size, setup, &words);
            let s = run_or_shrink(&new, &list).map_err(TestCaseError::fail)?;
            ops.fetch_add(s.ops, Ordering::Relaxed);
            found.fetch_add(s.found, Ordering::Relaxed);
            most.fetch_max(s.most_holes, Ordering::Relaxed);
            drained.fetch_add(s.drained, Ordering::Relaxed);
            dipped.fetch_add(s.dipped, Ordering::Relaxed);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let total = Stats {
        ops: ops.into_inner(),
        found: found.into_inner(),
        most_holes: most.into_inner(),
        drained: drained.into_inner(),
        dipped: dipped.into_inner(),
    };
    eprintln!(
        "{name}: {} ops, {} fits found, up to {} holes, cases from 300 holes to 100: {}, \
         from 1000 to 32: {}, {:.2?}",
        total.ops,
        total.found,
        total.most_holes,
        total.dipped,
        total.drained,
        start.elapsed()
    );
    total
}

/// True when the case counts are the file's own, so that the floors apply.
fn default_counts() -> bool {
    std::env::var_os("PROPTEST_CASES").is_none()
}

// ----- property tests -----------------------------------------------------

#[test]
fn tiny_heaps_match_model_and_map() {
    let s = run_prop("tiny", Size::Tiny, 3000, 1..24, VaHeap::new);
    assert!(
        !default_counts() || (s.ops > 30_000 && s.found > 4000),
        "{s:?}"
    );
}

#[test]
fn medium_heaps_match_model_and_map() {
    let s = run_prop("medium", Size::Medium, 120, 20..120, VaHeap::new);
    assert!(
        !default_counts() || (s.ops > 50_000 && s.most_holes >= 1000 && s.dipped >= 20),
        "{s:?}"
    );
}

#[test]
fn large_heaps_match_model_and_map() {
    let s = run_prop("large", Size::Large, 16, 10..40, VaHeap::new);
    // Thousands of holes (several levels of the tree), and back to a
    // single leaf.
    assert!(
        !default_counts() || (s.most_holes >= 4000 && s.drained >= 4),
        "{s:?}"
    );
}

/// The model and the runner against the map alone: the model is the
/// heap here, so a failure is the model's (or the map's).
#[test]
fn model_matches_map() {
    let s = run_prop("model", Size::Medium, 30, 20..120, HoleModel::default);
    assert!(!default_counts() || s.found > 1500, "{s:?}");
}

/// The model's per-hole fit against every start of small holes, near 0,
/// 2^63 and the top of the address space.
#[test]
fn model_fit_matches_enumeration() {
    let mut g = Gen(0x5eed);
    let mut found = 0;
    for _ in 0..60_000 {
        let base = g.pick(&[0u128, 1 << 63, SPACE - 64]);
        let s = base + g.range(0, 64) as u128;
        let e = (s + g.range(0, 40) as u128).min(SPACE);
        let len = g.range(1, 24) as u128;
        let align = 1u128 << g.range(0, 7);
        let offs = [0, g.range(0, 64), g.u64()];
        let off = g.pick(&offs) as u128;
        let b = g.pick(&[0u128, 1, 2, 4, 8, 16, 32, 64, 128]);
        let ok = |a: u128| {
            a >= s
                && a + len <= e
                && (a + SPACE - off % align).is_multiple_of(align)
                && (b == 0 || a / b == (a + len - 1) / b)
        };
        let all: Vec<u128> = (s..e).filter(|&a| ok(a)).collect();
        let (lo, hi) = (
            lowest_in_hole(s, e, len, align, off, b),
            highest_in_hole(s, e, len, align, off, b),
        );
        assert_eq!(
            lo,
            all.first().copied(),
            "lowest in [{s:#x}, {e:#x}) len {len} align {align} off {off} b {b}"
        );
        assert_eq!(
            hi,
            all.last().copied(),
            "highest in [{s:#x}, {e:#x}) len {len} align {align} off {off} b {b}"
        );
        found += usize::from(lo.is_some());
    }
    assert!(found > 5000, "{found}");
}

// ----- deterministic tests ------------------------------------------------

/// A heap with holes `[s, e)`, checked.
fn heap_with(holes: &[(u64, u64)]) -> VaHeap {
    let mut h = VaHeap::new();
    for &(s, e) in holes {
        h.free(s, e).unwrap();
    }
    h.check_invariants();
    h
}

fn holes_of(h: &VaHeap) -> Vec<(u64, u64)> {
    h.holes().collect()
}

#[test]
fn new_heap_is_empty() {
    let h = VaHeap::new();
    h.check_invariants();
    assert_eq!(h.hole_count(), 0);
    assert_eq!(h.free_bytes(), 0);
    assert_eq!(holes_of(&h), vec![]);
    assert_eq!(h.find_fit(&plain(1, 1, 0, false)), Err(FitError::NoSpace));
    assert_eq!(h.find_fit(&plain(1, 1, 0, true)), Err(FitError::NoSpace));
    assert_eq!(
        h.find_fit_nocross(&plain(1, 1, 0, false), PAGE),
        Err(NoCrossError::Fit(FitError::NoSpace))
    );
    let d = VaHeap::default();
    assert_eq!(d.hole_count(), 0);
}

#[test]
fn empty_ranges_are_refused() {
    let mut h = heap_with(&[(0x1000, 0x3000)]);
    for (s, e) in [(0x5000, 0x5000), (0x6000, 0x5000), (0, 0), (u64::MAX, 0)] {
        let err = HeapError::EmptyRange { start: s, end: e };
        assert_eq!(h.free(s, e), Err(err));
        assert_eq!(h.alloc_at(s, e), Err(err));
        assert_eq!(VaHeap::with_free(s, e).err(), Some(err));
    }
    // Inside a hole too: nothing changes.
    assert_eq!(
        h.alloc_at(0x2000, 0x2000),
        Err(HeapError::EmptyRange {
            start: 0x2000,
            end: 0x2000
        })
    );
    assert_eq!(holes_of(&h), vec![(0x1000, 0x3000)]);
    assert_eq!(h.free_bytes(), 0x2000);
    h.check_invariants();
}

#[test]
fn double_free_names_the_lowest_hole_it_meets() {
    let holes = [(0x1000, 0x2000), (0x3000, 0x4000), (0x5000, 0x6000)];
    let mut h = heap_with(&holes);
    let cases = [
        // Meets all three: the lowest is named.
        ((0x1800, 0x5800), (0x1000, 0x2000)),
        ((0x0, u64::MAX), (0x1000, 0x2000)),
        // Touches the first hole (no meeting), meets the second and third.
        ((0x2000, 0x5001), (0x3000, 0x4000)),
        // Exactly a hole.
        ((0x5000, 0x6000), (0x5000, 0x6000)),
        // One byte of the last hole.
        ((0x5fff, 0x7000), (0x5000, 0x6000)),
        // Inside a hole.
        ((0x3100, 0x3200), (0x3000, 0x4000)),
    ];
    for ((s, e), (hs, he)) in cases {
        assert_eq!(
            h.free(s, e),
            Err(HeapError::AlreadyFree {
                start: s,
                end: e,
                hole_start: hs,
                hole_end: he
            }),
            "free({s:#x}, {e:#x})"
        );
        assert_eq!(holes_of(&h), holes);
        assert_eq!(h.free_bytes(), 0x3000);
        h.check_invariants();
    }
    // Touching both neighbours is a merge, not a double free.
    h.free(0x2000, 0x3000).unwrap();
    assert_eq!(holes_of(&h), vec![(0x1000, 0x4000), (0x5000, 0x6000)]);
    h.free(0x4000, 0x5000).unwrap();
    assert_eq!(holes_of(&h), vec![(0x1000, 0x6000)]);
    assert_eq!(h.hole_count(), 1);
    assert_eq!(h.free_bytes(), 0x5000);
    h.check_invariants();
}

#[test]
fn alloc_at_outside_one_hole_is_refused() {
    let holes = [(0x1000, 0x2000), (0x3000, 0x4000)];
    let mut h = heap_with(&holes);
    for (s, e) in [
        (0x1000, 0x4000),
        (0x1800, 0x3800),
        (0x0, 0x1000),
        (0x800, 0x1800),
        (0x1800, 0x2001),
        (0x2000, 0x3000),
        (0x4000, 0x5000),
        (0x3fff, u64::MAX),
    ] {
        assert_eq!(
            h.alloc_at(s, e),
            Err(HeapError::NotFree { start: s, end: e }),
            "alloc_at({s:#x}, {e:#x})"
        );
        assert_eq!(holes_of(&h), holes);
    }
    // The edges of a hole are inside it.
    h.alloc_at(0x1000, 0x1001).unwrap();
    h.alloc_at(0x1fff, 0x2000).unwrap();
    h.alloc_at(0x3000, 0x4000).unwrap();
    assert_eq!(holes_of(&h), vec![(0x1001, 0x1fff)]);
    assert_eq!(h.free_bytes(), 0xffe);
    h.check_invariants();
}

#[test]
fn fit_errors_follow_the_documented_order() {
    let h = heap_with(&[(0x10_0000, 0x20_0000)]);
    let mut m = HoleModel::default();
    for (s, e) in holes_of(&h) {
        m.free(s, e).unwrap();
    }
    let cases = [
        (req(0, 0, 0, 3, 0, false, false), Some(3)),
        (req(1, 0, 0, 3, 0, false, false), Some(3)),
        (req(1, 0, 0, 1, 0, false, false), Some(3)),
        (req(0x2000, 0, 0, 1, 0, false, false), Some(0x1000)),
        (req(0x800, 0, 0, 0x1000, 0x900, false, false), Some(0x1000)),
        (req(0x800, 0, 0, 0x1000, 0x800, false, false), Some(0x1000)),
        (req(0x1000, 0x5000, 0x5fff, 1, 0, true, false), None),
        (req(0x1000, 0x5000, 0x4000, 1, 0, true, false), Some(0)),
        (req(0x20_0000, 0, u64::MAX, 1, 0, false, false), None),
        (req(0x1000, 0, u64::MAX, 1 << 63, 0, false, false), None),
        (req(u64::MAX, 0, u64::MAX, 1, 0, false, false), None),
    ];
    let map = {
        let mut map = AddressMap::new();
        map.insert(0, 0x10_0000, VmaFlags::NONE).unwrap();
        map.insert(0x20_0000, u64::MAX, VmaFlags::NONE).unwrap();
        map
    };
    for (q, b) in cases {
        let want = m.fit(&q, b);
        assert!(want.is_err(), "{q:x?}");
        let (got, mapped) = match b {
            None => (
                h.find_fit(&q).map_err(NoCrossError::Fit),
                map.find_fit(&q, &params()).map_err(NoCrossError::Fit),
            ),
            Some(b) => (
                h.find_fit_nocross(&q, b),
                map.find_fit_nocross(&q, b, &params()),
            ),
        };
        assert_eq!(got, want, "{q:x?} {b:?}");
        assert_eq!(mapped, want, "{q:x?} {b:?}");
    }
}

/// Builds `n` holes (every other page of a range), frees the pages between
/// them in the order `order` gives, checking everything every `every`
/// operations, and builds them again by punching.
fn merge_through_leaves(n: u64, order: impl Fn(u64) -> u64, every: usize) {
    let base = 0x4000_0000;
    let mut ops: Vec<Op> = (0..n)
        .map(|k| Op::Free(base + 2 * k * PAGE, base + (2 * k + 1) * PAGE))
        .collect();
    // The pages between the holes, in the given order.
    ops.extend((0..n - 1).map(|k| {
        let j = order(k);
        Op::Free(base + (2 * j + 1) * PAGE, base + (2 * j + 2) * PAGE)
    }));
    // And back: punch it into n holes again, from the top.
    ops.extend(
        (0..n - 1)
            .rev()
            .map(|j| Op::AllocAt(base + (2 * j + 1) * PAGE, base + (2 * j + 2) * PAGE)),
    );
    let mut r = Runner::new(VaHeap::new());
    for (i, op) in ops.iter().enumerate() {
        r.apply(i, op, i % every == 0);
        if i as u64 == 2 * n - 2 {
            assert_eq!(r.model.holes(), vec![(base, base + (2 * n - 1) * PAGE)]);
        }
    }
    r.full_check("the end");
    assert_eq!(r.heap.hole_count() as u64, n);
}

#[test]
fn merges_with_both_neighbours_in_every_position() {
    // 1500 holes span a hundred leaves or more; every merge position is
    // met, those at leaf edges included, in ascending, descending and
    // scattered order.
    merge_through_leaves(1500, |k| k, 1);
    merge_through_leaves(1500, |k| 1498 - k, 1);
    merge_through_leaves(1500, |k| (k * 137) % 1499, 1);
    // Thousands: two and three levels.
    merge_through_leaves(5000, |k| (k * 2999) % 4999, 97);
}

/// The hole count rises and falls between a handful and several hundred,
/// many times, with everything checked after every operation: whatever
/// the heap does as it grows and shrinks through the hundreds, its answers
/// stay the model's.
#[test]
fn hole_counts_rise_and_fall_through_the_hundreds() {
    let base = 1u64 << 36;
    let mut r = Runner::new(VaHeap::new());
    let mut i = 0;
    let mut apply = |r: &mut Runner<VaHeap>, op: Op| {
        r.apply(i, &op, true);
        i += 1;
    };
    apply(&mut r, Op::Free(base, base + (1 << 14) * PAGE));
    let mut g = Gen(7);
    for round in 0..12u64 {
        let high = [300, 600, 260, 1000][round as usize % 4];
        // Punch single pages out of the holes until there are `high`
        // (16384 pages leave room for many more).
        let mut tries = 0;
        while r.model.holes().len() < high {
            tries += 1;
            assert!(tries < 100_000, "no hole of three pages left");
            let (s, e) = r.model.holes()[g.range(0, r.model.holes().len() as u64) as usize];
            if e - s >= 3 * PAGE {
                let a = s + g.range(1, (e - s) / PAGE - 1) * PAGE;
                apply(&mut r, Op::AllocAt(a, a + PAGE));
            }
        }
        // Free whole gaps between holes until a few are left, with an
        // allocation now and then.
        let low = [5, 120, 1, 40][round as usize % 4];
        while r.model.holes().len() > low {
            let n = r.model.holes().len();
            let j = g.range(1, n as u64) as usize;
            let (s, e) = (r.model.holes()[j - 1].1, r.model.holes()[j].0);
            apply(&mut r, Op::Free(s, e));
            if g.chance(1, 8) {
                let q = plain(PAGE * g.range(1, 4), PAGE, 0, g.bool());
                apply(&mut r, Op::Alloc(q, None));
            }
        }
    }
    assert!(r.most_holes >= 1000);
}

/// Bursts of splits next to bursts of merges at random positions of 2000
/// holes: one stretch of holes gains holes while the stretch beside it
/// loses them, then both are put back. Crowded and emptied neighbours
/// meet in every combination.
#[test]
fn splits_beside_merges() {
    let base = 0x4000_0000u64;
    let n = 2000u64;
    // Hole k is pages [4k, 4k + 3) of the range: its middle page can be
    // taken (one more hole), the page after it freed (one fewer).
    let middle = |k: u64| base + (4 * k + 1) * PAGE;
    let gap = |k: u64| base + (4 * k + 3) * PAGE;
    let mut r = Runner::new(VaHeap::new());
    let mut i = 0;
    let mut apply = |r: &mut Runner<VaHeap>, op: Op| {
        r.apply(i, &op, false);
        i += 1;
    };
    for k in 0..n {
        apply(
            &mut r,
            Op::Free(base + 4 * k * PAGE, base + (4 * k + 3) * PAGE),
        );
    }
    let mut g = Gen(11);
    for round in 0..400u64 {
        let at = g.range(0, n - 64);
        let w = 4 + round % 13;
        let d = 4 + round % 17;
        for k in at..at + w {
            apply(&mut r, Op::AllocAt(middle(k), middle(k) + PAGE));
        }
        for k in at + w..at + w + d {
            apply(&mut r, Op::Free(gap(k), gap(k) + PAGE));
        }
        for k in at..at + w {
            apply(&mut r, Op::Free(middle(k), middle(k) + PAGE));
        }
        for k in at + w..at + w + d {
            apply(&mut r, Op::AllocAt(gap(k), gap(k) + PAGE));
        }
        if round % 8 == 0 {
            r.full_check(&format!("round {round}"));
        }
        assert_eq!(r.model.holes().len() as u64, n);
    }
    r.full_check("the end");
}

#[test]
fn drains_to_empty_and_refills() {
    for topdown in [false, true] {
        let (lo, hi) = (0x1_0000_0000, 0x1_0000_0000 + 3000 * PAGE);
        let mut h = VaHeap::with_free(lo, hi).unwrap();
        let mut got = Vec::new();
        while let Ok(a) = h.alloc(&plain(PAGE, PAGE, 0, topdown)) {
            got.push(a);
            assert!(got.len() <= 3000);
        }
        // Every page once, in address order (reversed top-down).
        let mut want: Vec<u64> = (0..3000).map(|k| lo + k * PAGE).collect();
        if topdown {
            want.reverse();
        }
        assert_eq!(got, want);
        h.check_invariants();
        assert_eq!(h.hole_count(), 0);
        assert_eq!(h.free_bytes(), 0);
        assert_eq!(holes_of(&h), vec![]);
        assert_eq!(h.alloc(&plain(1, 1, 0, false)), Err(FitError::NoSpace));
        // Free them in a scattered order: they merge back into one hole.
        let mut m = HoleModel::default();
        for k in 0..3000u64 {
            let a = lo + (k * 1999 % 3000) * PAGE;
            assert_eq!(h.free(a, a + PAGE), m.free(a, a + PAGE));
            assert_eq!(h.hole_count(), m.holes().len());
            if k % 101 == 0 {
                h.check_invariants();
                assert_eq!(holes_of(&h), m.holes());
            }
        }
        h.check_invariants();
        assert_eq!(holes_of(&h), vec![(lo, hi)]);
        // And again, one allocation at a time with other sizes.
        h.alloc_at(lo, hi).unwrap();
        assert_eq!(h.hole_count(), 0);
        h.free(lo, hi).unwrap();
        assert_eq!(holes_of(&h), vec![(lo, hi)]);
        h.clear();
        assert_eq!(h.hole_count(), 0);
        assert_eq!(h.free_bytes(), 0);
        assert_eq!(holes_of(&h), vec![]);
        h.check_invariants();
        h.free(lo, hi).unwrap();
        assert_eq!(holes_of(&h), vec![(lo, hi)]);
        h.check_invariants();
    }
}

#[test]
fn the_ends_of_the_address_space() {
    let mut h = VaHeap::with_free(0, u64::MAX).unwrap();
    assert_eq!(h.free_bytes(), u64::MAX);
    assert_eq!(holes_of(&h), vec![(0, u64::MAX)]);
    // Lowest: 0. Highest page-aligned page: the page below the last,
    // partial one (u64::MAX - 0xfff is not page-aligned).
    assert_eq!(h.find_fit(&plain(PAGE, PAGE, 0, false)), Ok(0));
    assert_eq!(
        h.find_fit(&plain(PAGE, PAGE, 0, true)),
        Ok((!(PAGE - 1)) - PAGE)
    );
    // Unaligned, the last byte that can be allocated is u64::MAX - 1.
    assert_eq!(h.find_fit(&plain(1, 1, 0, true)), Ok(u64::MAX - 1));
    assert_eq!(h.find_fit(&plain(u64::MAX, 1, 0, true)), Ok(0));
    // An odd start leaves no room for u64::MAX bytes.
    assert_eq!(
        h.find_fit(&plain(u64::MAX, 2, 1, true)),
        Err(FitError::NoSpace)
    );
    h.alloc_at(u64::MAX - 1, u64::MAX).unwrap();
    h.alloc_at(0, 1).unwrap();
    assert_eq!(holes_of(&h), vec![(1, u64::MAX - 1)]);
    h.free(u64::MAX - 1, u64::MAX).unwrap();
    h.free(0, 1).unwrap();
    assert_eq!(holes_of(&h), vec![(0, u64::MAX)]);
    assert_eq!(
        h.free(u64::MAX - 1, u64::MAX),
        Err(HeapError::AlreadyFree {
            start: u64::MAX - 1,
            end: u64::MAX,
            hole_start: 0,
            hole_end: u64::MAX
        })
    );
    h.check_invariants();
    // Near the top with the map and the model.
    let top = !(MB2 - 1);
    replay(&[
        Op::Free(top - 4 * MB2, u64::MAX),
        Op::Alloc(plain(MB2, MB2, 0, true), None),
        Op::Alloc(plain(PAGE, PAGE, 0, true), None),
        Op::Alloc(plain(0x10, 0x10, 0x8, true), Some(0x20)),
        Op::Find(plain(3 * MB2, MB2, 0, true), None),
        Op::Alloc(req(PAGE, top - MB2, u64::MAX, PAGE, 0, false, false), None),
        Op::Free(top - MB2, top - MB2 + PAGE),
        Op::Find(req(1, u64::MAX - 1, u64::MAX, 1, 0, false, false), None),
        Op::Alloc(plain(1, 1, 0, true), None),
        Op::Find(plain(1, 1, 0, true), None),
    ]);
}

/// Holes grow to `peak` and shrink to one, `cycles` times, with
/// allocations in between; the heap's memory stays within a fixed number
/// of bytes per hole of the most it ever held.
#[test]
fn heap_bytes_stay_bounded_by_the_most_holes() {
    // The documentation says about 24 bytes per hole; allow ten times that
    // (nodes a quarter full, arenas twice their need). A heap that did not
    // reuse the nodes it frees would pass that after a few cycles.
    const PER_HOLE: usize = 256;
    let peak: u64 = 15_000;
    let cycles = 10;
    let base = 1u64 << 40;
    let top = base + 2 * peak * PAGE;
    let mut h = VaHeap::with_free(base, top).unwrap();
    let mut most = 1usize;
    let check = |h: &VaHeap, most: &mut usize| {
        *most = (*most).max(h.hole_count());
        assert!(
            h.heap_bytes() <= PER_HOLE * *most + 64 * 1024,
            "{} heap bytes with at most {} holes",
            h.heap_bytes(),
            most
        );
    };
    for c in 0..cycles {
        // Punch every other page: `peak` holes.
        for k in 0..peak {
            let a = base + (2 * k + 1) * PAGE;
            h.alloc_at(a, a + PAGE).unwrap();
            if k % 1000 == 0 {
                check(&h, &mut most);
            }
        }
        assert_eq!(h.hole_count() as u64, peak);
        check(&h, &mut most);
        h.check_invariants();
        // Churn at the peak: take and give back pages.
        let mut taken = Vec::new();
        for _ in 0..2000 {
            taken.push(h.alloc(&plain(PAGE, PAGE, 0, c % 2 == 1)).unwrap());
        }
        check(&h, &mut most);
        for a in taken {
            h.free(a, a + PAGE).unwrap();
        }
        assert_eq!(h.hole_count() as u64, peak);
        // Free the punched pages in a scattered order: one hole again.
        for k in 0..peak {
            let j = (k * 7919 + c) % peak;
            let a = base + (2 * j + 1) * PAGE;
            h.free(a, a + PAGE).unwrap();
            if k % 1000 == 0 {
                check(&h, &mut most);
            }
        }
        h.check_invariants();
        assert_eq!(h.hole_count(), 1);
        assert_eq!(holes_of(&h), vec![(base, top)]);
        check(&h, &mut most);
    }
    assert_eq!(most as u64, peak);
    // Clearing gives the nodes back.
    h.clear();
    assert!(h.heap_bytes() <= VaHeap::new().heap_bytes());
    assert_eq!(h.hole_count(), 0);
    h.check_invariants();
}
