//! The workload of Mesa's random test of its VMA heap
//! (`src/util/tests/vma/vma_random_test.cpp`), as a benchmark for exact
//! address heaps that take their alignment per call.
//!
//! # The workload
//!
//! Mesa's test drives a `util_vma_heap` over `[4 KiB, 2^64)` with its
//! defaults (`alloc_high`: highest address first; no `nospan_shift`) and
//! checks it against a set of holes. Each step draws a number from 1 to
//! 1000: 1 fills the heap, 2 empties it, 3 to 373 free a live allocation
//! chosen uniformly at random (371 in 1000) and 374 to 1000 allocate (627
//! in 1000). An allocation is `2^s` pages long and aligned to `2^a` pages
//! (4 KiB pages), `s` and `a` each drawn from a geometric distribution
//! with p = 1/2 (0 with probability 1/2, 1 with 1/4, ...) and capped at 51.
//! A fill allocates blocks of `2^51` pages down to one page, page aligned,
//! each size until it no longer fits, leaving no free space; an empty
//! frees every live allocation in random order. By default the test runs
//! 2459 steps.
//!
//! Here the heap is `[4 KiB, 2^64 - 4 KiB)`, one page shorter than Mesa's
//! (ends are exclusive `u64`s here), and the random numbers come from
//! [`SplitMix64`], so the sequences are not Mesa's, only drawn the same
//! way.
//!
//! [`Trace::mesa_test`] records that test. Mesa's test has no steady
//! state: allocations outnumber frees, so the live count grows by about
//! 0.26 per step until a fill or an empty. [`Trace::steady`] holds the live
//! count near a target instead, to time allocations and frees separately:
//! it grows the heap with the test's mix of frees and allocations (fills
//! and empties left out) to the target, then repeats rounds of `block`
//! frees of random live allocations followed by `block` allocations, so
//! the live count moves between `n - block / 2` and `n + block / 2`.
//!
//! # Replay
//!
//! A trace is recorded once on a reference heap ([`SvmapHeapVma`]): every
//! allocation with its answer, every free with the range it frees. Exact
//! lowest-first (highest-first) heaps answer every allocation alike, so
//! each implementation replays the same operations, [`verify`] checks that
//! it answers every allocation as the trace does, and [`replay`] times the
//! marked blocks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use svmap_core::{AddressMap, FitError, FitRequest, SearchParams, VaHeap, VmaFlags};

use crate::peers::holelist::HoleList;
use crate::workload::{Churn, SplitMix64};

/// Page size of the workload.
pub const PAGE: u64 = 4096;
/// Lowest address of the heap (Mesa's heap starts at its page 1).
pub const LO: u64 = PAGE;
/// End of the heap: `2^64 - 4 KiB`.
pub const HI: u64 = PAGE.wrapping_neg();
/// Largest size and alignment order, in pages (`2^51` pages).
pub const MAX_ORDER: u32 = 51;
/// Steps of Mesa's test when it is run without arguments.
pub const MESA_COUNT: usize = 2459;
/// The fixed seed (the number Mesa's test uses by default, here for a
/// different generator).
pub const SEED: u64 = 8_675_309;

/// An address heap that takes its alignment per call.
pub trait VmaHeap {
    /// Places `size` bytes at a multiple of `align` (a power of two);
    /// `None` if no such place is free.
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64>;
    /// Frees `[addr, addr + size)`, an earlier answer of [`VmaHeap::alloc`].
    fn free(&mut self, addr: u64, size: u64);
}

/// The request of an allocation over the workload's heap.
fn request(size: u64, align: u64, topdown: bool) -> FitRequest {
    FitRequest {
        length: size,
        low: LO,
        high: HI,
        align,
        align_offset: 0,
        topdown,
        respect_guard_gaps: false,
    }
}

/// svmap's [`VaHeap`] (`svmap-heap`), its free space `[LO, HI)` at first.
pub struct SvmapHeapVma {
    heap: VaHeap,
    topdown: bool,
}

impl SvmapHeapVma {
    /// A heap placing lowest first, or highest first if `topdown`.
    pub fn new(topdown: bool) -> Self {
        SvmapHeapVma {
            heap: VaHeap::with_free(LO, HI).expect("[LO, HI) is not empty"),
            topdown,
        }
    }

    /// Number of free holes.
    pub fn hole_count(&self) -> usize {
        self.heap.hole_count()
    }

    /// The free holes in address order.
    pub fn holes(&self) -> Vec<(u64, u64)> {
        self.heap.holes().collect()
    }
}

impl VmaHeap for SvmapHeapVma {
    #[inline]
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        match self.heap.alloc(&request(size, align, self.topdown)) {
            Ok(a) => Some(a),
            Err(FitError::NoSpace) => None,
            Err(e) => panic!("svmap-heap: alloc({size:#x}, {align:#x}): {e}"),
        }
    }

    #[inline]
    fn free(&mut self, addr: u64, size: u64) {
        if let Err(e) = self.heap.free(addr, addr + size) {
            panic!("svmap-heap: free({addr:#x}, {size:#x}): {e}");
        }
    }
}

/// svmap's [`AddressMap`] (`svmap`): allocate = [`AddressMap::allocate`]
/// in the window `[LO, HI)`, free = [`AddressMap::unmap`].
pub struct SvmapVma {
    map: AddressMap,
    params: SearchParams,
    topdown: bool,
}

impl SvmapVma {
    /// An empty map placing lowest first, or highest first if `topdown`.
    pub fn new(topdown: bool) -> Self {
        SvmapVma {
            map: AddressMap::new(),
            params: SearchParams::default(),
            topdown,
        }
    }
}

impl VmaHeap for SvmapVma {
    #[inline]
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let req = request(size, align, self.topdown);
        match self.map.allocate(&req, &self.params, VmaFlags::NONE) {
            Ok(a) => Some(a),
            Err(FitError::NoSpace) => None,
            Err(e) => panic!("svmap: allocate({size:#x}, {align:#x}): {e}"),
        }
    }

    #[inline]
    fn free(&mut self, addr: u64, size: u64) {
        if let Err(e) = self.map.unmap(addr, addr + size) {
            panic!("svmap: unmap({addr:#x}, {size:#x}): {e}");
        }
    }
}

/// The sorted hole list (`hole-list`, Mesa's design) over `[LO, HI)`.
pub fn hole_list(topdown: bool) -> HoleList {
    HoleList::with_window(LO, HI, topdown)
}

impl VmaHeap for HoleList {
    #[inline]
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        self.alloc_aligned(size, align)
    }

    #[inline]
    fn free(&mut self, addr: u64, size: u64) {
        Churn::free(self, (addr, addr + size));
    }
}

/// The exact gap tree (`gap-tree-exact`) over `[LO, HI)`.
#[cfg(feature = "peers")]
pub fn gap_tree(topdown: bool) -> crate::peers::gaptree::GapTree {
    crate::peers::gaptree::GapTree::with_window(LO, HI, topdown)
}

#[cfg(feature = "peers")]
impl VmaHeap for crate::peers::gaptree::GapTree {
    #[inline]
    fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        self.alloc_aligned(size, align)
    }

    #[inline]
    fn free(&mut self, addr: u64, size: u64) {
        Churn::free(self, (addr, addr + size));
    }
}

/// One operation of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// An allocation and the reference heap's answer.
    Alloc {
        /// Length in bytes.
        size: u64,
        /// Alignment in bytes.
        align: u64,
        /// Where the reference placed it (`None`: no room).
        at: Option<u64>,
    },
    /// The free of `[addr, addr + size)`.
    Free {
        /// Start.
        addr: u64,
        /// Length in bytes.
        size: u64,
    },
}

/// What a timed block of a trace holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Allocations only.
    Alloc,
    /// Frees only.
    Free,
    /// Both, in the test's order.
    Mixed,
}

/// A timed part of a trace: the operations `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// First operation.
    pub start: usize,
    /// One past the last operation.
    pub end: usize,
    /// What it holds.
    pub kind: Kind,
}

/// Counts of a trace, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TraceStats {
    /// Timed allocations that found room.
    pub allocs: usize,
    /// Timed allocations that found none.
    pub failed: usize,
    /// Timed frees.
    pub frees: usize,
    /// Fills (Mesa's action 1).
    pub fills: usize,
    /// Empties (Mesa's action 2).
    pub empties: usize,
    /// Mean live allocations over the timed operations.
    pub mean_live: f64,
    /// Most live allocations at any point.
    pub max_live: usize,
    /// Live allocations at the end.
    pub final_live: usize,
    /// Free holes of the reference heap where the timed part starts.
    pub holes_at_start: usize,
    /// Free holes of the reference heap at the end.
    pub holes_at_end: usize,
}

/// A recorded operation sequence with its timed blocks.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Every operation, in order.
    pub ops: Vec<Op>,
    /// The timed blocks, in order; operations outside them are set-up.
    pub blocks: Vec<Block>,
    /// Highest address first.
    pub topdown: bool,
    /// Counts.
    pub stats: TraceStats,
}

/// Records a trace on the reference heap.
struct Recorder {
    heap: SvmapHeapVma,
    rng: SplitMix64,
    live: Vec<(u64, u64)>,
    ops: Vec<Op>,
    stats: TraceStats,
    /// Sum of the live count before each timed operation.
    live_sum: u128,
    timed: usize,
    timing: bool,
}

impl Recorder {
    fn new(seed: u64, topdown: bool) -> Self {
        Recorder {
            heap: SvmapHeapVma::new(topdown),
            rng: SplitMix64::new(seed),
            live: Vec::new(),
            ops: Vec::new(),
            stats: TraceStats::default(),
            live_sum: 0,
            timed: 0,
            timing: false,
        }
    }

    /// A geometric draw with p = 1/2, capped at [`MAX_ORDER`].
    fn order(&mut self) -> u32 {
        self.rng.next_u64().trailing_zeros().min(MAX_ORDER)
    }

    /// Counts an operation of the timed part: `slot` of the stats and the
    /// live count before it.
    fn count(&mut self, slot: fn(&mut TraceStats) -> &mut usize) {
        if self.timing {
            self.live_sum += self.live.len() as u128;
            self.timed += 1;
            *slot(&mut self.stats) += 1;
        }
    }

    /// One allocation of `2^size_order` pages aligned to `2^align_order`
    /// pages (drawn if `None`, the alignment first as in Mesa's test).
    fn alloc(&mut self, size_order: Option<u32>, align_order: Option<u32>) -> bool {
        let ao = align_order.unwrap_or_else(|| self.order());
        let so = size_order.unwrap_or_else(|| self.order());
        let (size, align) = (PAGE << so, PAGE << ao);
        let at = self.heap.alloc(size, align);
        match at {
            Some(_) => self.count(|s| &mut s.allocs),
            None => self.count(|s| &mut s.failed),
        }
        self.ops.push(Op::Alloc { size, align, at });
        match at {
            Some(a) => {
                self.live.push((a, size));
                self.stats.max_live = self.stats.max_live.max(self.live.len());
                true
            }
            None => false,
        }
    }

    /// Frees a uniformly chosen live allocation (swapped with the last and
    /// popped, as Mesa's test does); nothing if none is live.
    fn dealloc(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let i = self.rng.below(self.live.len() as u32) as usize;
        self.count(|s| &mut s.frees);
        let (addr, size) = self.live.swap_remove(i);
        self.heap.free(addr, size);
        self.ops.push(Op::Free { addr, size });
    }

    fn fill(&mut self) {
        self.stats.fills += 1;
        for so in (0..=MAX_ORDER).rev() {
            while self.alloc(Some(so), Some(0)) {}
        }
    }

    fn empty(&mut self) {
        self.stats.empties += 1;
        while !self.live.is_empty() {
            self.dealloc();
        }
    }

    /// One step of Mesa's test.
    fn mesa_step(&mut self) {
        match self.rng.below(1000) + 1 {
            1 => self.fill(),
            2 => self.empty(),
            3..=373 => self.dealloc(),
            _ => {
                self.alloc(None, None);
            }
        }
    }

    /// One step of the test's mix without fills and empties.
    fn grow_step(&mut self) {
        if self.rng.below(998) < 371 {
            self.dealloc();
        } else {
            self.alloc(None, None);
        }
    }

    /// `block` frees, then allocations up to `top` live (at most `2 *
    /// block` tries: an allocation that finds no room, which the
    /// 2^64-byte heap makes all but impossible, is followed by another);
    /// records the two as blocks if `blocks` is given.
    fn round(&mut self, block: usize, top: usize, blocks: Option<&mut Vec<Block>>) {
        let s = self.ops.len();
        for _ in 0..block {
            self.dealloc();
        }
        let m = self.ops.len();
        let mut tries = 0;
        while self.live.len() < top && tries < 2 * block {
            self.alloc(None, None);
            tries += 1;
        }
        if let Some(b) = blocks {
            b.push(Block {
                start: s,
                end: m,
                kind: Kind::Free,
            });
            b.push(Block {
                start: m,
                end: self.ops.len(),
                kind: Kind::Alloc,
            });
        }
    }

    fn start_timing(&mut self) {
        self.timing = true;
        self.stats.holes_at_start = self.heap.hole_count();
    }

    fn finish(mut self, blocks: Vec<Block>) -> Trace {
        self.stats.mean_live = self.live_sum as f64 / self.timed.max(1) as f64;
        self.stats.final_live = self.live.len();
        self.stats.holes_at_end = self.heap.hole_count();
        Trace {
            ops: self.ops,
            blocks,
            topdown: self.heap.topdown,
            stats: self.stats,
        }
    }
}

/// The largest `block` [`Trace::steady`] accepts for a target `n`.
pub fn max_block(n: usize) -> usize {
    n / 2
}

/// Why a trace could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceError {
    /// `block` is 0 or above [`max_block`] of `n`.
    BadBlock {
        /// Target live count.
        n: usize,
        /// Requested block.
        block: usize,
    },
    /// The target live count is 0 or above [`MAX_TARGET`].
    BadTarget(usize),
}

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            TraceError::BadBlock { n, block } => write!(
                f,
                "block {block} must be from 1 to {} for {n} live allocations",
                max_block(n)
            ),
            TraceError::BadTarget(n) => {
                write!(f, "live count {n} must be from 2 to {MAX_TARGET}")
            }
        }
    }
}

impl std::error::Error for TraceError {}

/// The largest target live count of [`Trace::steady`].
pub const MAX_TARGET: usize = 10_000_000;

impl Trace {
    /// Mesa's test: `count` steps from an empty heap, every operation
    /// timed as one block.
    pub fn mesa_test(count: usize, seed: u64, topdown: bool) -> Trace {
        let mut r = Recorder::new(seed, topdown);
        r.start_timing();
        for _ in 0..count {
            r.mesa_step();
        }
        let end = r.ops.len();
        r.finish(vec![Block {
            start: 0,
            end,
            kind: Kind::Mixed,
        }])
    }

    /// The steady form (see the module documentation): grow to `n + block
    /// / 2` live allocations with the test's mix, warm up with `warmup`
    /// allocations in rounds, then `rounds` timed rounds of `block` frees
    /// and `block` allocations.
    pub fn steady(
        n: usize,
        block: usize,
        warmup: usize,
        rounds: usize,
        seed: u64,
        topdown: bool,
    ) -> Result<Trace, TraceError> {
        if !(2..=MAX_TARGET).contains(&n) {
            return Err(TraceError::BadTarget(n));
        }
        if block == 0 || block > max_block(n) {
            return Err(TraceError::BadBlock { n, block });
        }
        let top = n + block / 2;
        let mut r = Recorder::new(seed, topdown);
        while r.live.len() < top {
            r.grow_step();
        }
        for _ in 0..warmup.div_ceil(block) {
            r.round(block, top, None);
        }
        r.start_timing();
        let mut blocks = Vec::with_capacity(2 * rounds);
        for _ in 0..rounds {
            r.round(block, top, Some(&mut blocks));
        }
        Ok(r.finish(blocks))
    }
}

/// The first answer of an implementation that differs from the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the operation in the trace.
    pub op: usize,
    /// Requested length.
    pub size: u64,
    /// Requested alignment.
    pub align: u64,
    /// The trace's answer.
    pub expected: Option<u64>,
    /// The implementation's answer.
    pub got: Option<u64>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |a: Option<u64>| a.map_or("no room".to_owned(), |a| format!("{a:#x}"));
        write!(
            f,
            "operation {}: alloc({:#x}, align {:#x}) answered {}, the trace {}",
            self.op,
            self.size,
            self.align,
            show(self.got),
            show(self.expected)
        )
    }
}

/// Runs the whole trace on `h`, checking every answer; stops at the first
/// that differs (the frees after it would not be the implementation's own
/// ranges).
pub fn verify<H: VmaHeap>(h: &mut H, t: &Trace) -> Result<(), Divergence> {
    for (i, op) in t.ops.iter().enumerate() {
        match *op {
            Op::Alloc { size, align, at } => {
                let got = h.alloc(size, align);
                if got != at {
                    return Err(Divergence {
                        op: i,
                        size,
                        align,
                        expected: at,
                        got,
                    });
                }
            }
            Op::Free { addr, size } => h.free(addr, size),
        }
    }
    Ok(())
}

/// Time spent in the timed blocks of one replay.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Time in [`Kind::Alloc`] blocks and their allocation count.
    pub alloc: (Duration, usize),
    /// Time in [`Kind::Free`] blocks and their free count.
    pub free: (Duration, usize),
    /// Time in [`Kind::Mixed`] blocks and their operation count.
    pub mixed: (Duration, usize),
}

#[inline(always)]
fn apply<H: VmaHeap>(h: &mut H, ops: &[Op], out: &mut Vec<Option<u64>>) {
    for op in ops {
        match *op {
            Op::Alloc { size, align, .. } => out.push(black_box(h.alloc(size, align))),
            Op::Free { addr, size } => h.free(addr, size),
        }
    }
}

/// Runs the whole trace on `h`, timing its blocks; `out` receives every
/// allocation's answer, in order (compare them with [`answers`]). The
/// operations outside the blocks run untimed.
pub fn replay<H: VmaHeap>(h: &mut H, t: &Trace, out: &mut Vec<Option<u64>>) -> Timing {
    out.clear();
    out.reserve(t.ops.len());
    let mut tm = Timing::default();
    let mut at = 0;
    for b in &t.blocks {
        apply(h, &t.ops[at..b.start], out);
        let t0 = Instant::now();
        apply(h, &t.ops[b.start..b.end], out);
        let d = t0.elapsed();
        let slot = match b.kind {
            Kind::Alloc => &mut tm.alloc,
            Kind::Free => &mut tm.free,
            Kind::Mixed => &mut tm.mixed,
        };
        slot.0 += d;
        slot.1 += b.end - b.start;
        at = b.end;
    }
    apply(h, &t.ops[at..], out);
    tm
}

/// The trace's answers to its allocations, in order.
pub fn answers(t: &Trace) -> Vec<Option<u64>> {
    t.ops
        .iter()
        .filter_map(|op| match *op {
            Op::Alloc { at, .. } => Some(at),
            Op::Free { .. } => None,
        })
        .collect()
}

/// What Mesa's list-based heap walks on a trace: its holes sit in a list
/// ordered from the highest address down.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ListWalks {
    /// Holes an allocation examines, mean over the timed allocations: it
    /// scans from the highest hole down (from the lowest up when placing
    /// lowest first) to the first that holds the range, or all of them.
    pub alloc: f64,
    /// Holes a free examines, mean over the timed frees: it walks from the
    /// highest hole down to the first that starts at or below the freed
    /// range.
    pub free: f64,
}

/// [`ListWalks`] of `t`, counted on a sorted hole list replaying it.
pub fn list_walks(t: &Trace) -> ListWalks {
    let mut h = HoleList::with_window(LO, HI, t.topdown);
    let (mut a_sum, mut a_n, mut f_sum, mut f_n) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = t.blocks.iter().peekable();
    for (i, op) in t.ops.iter().enumerate() {
        while blocks.peek().is_some_and(|b| b.end <= i) {
            blocks.next();
        }
        let timed = blocks.peek().is_some_and(|b| b.start <= i);
        let holes = h.holes();
        let len = holes.len() as u64;
        match *op {
            Op::Alloc { size, align, at } => {
                if timed {
                    // The hole holding the answer, counted from the end the
                    // scan starts at.
                    a_sum += match at {
                        None => len,
                        Some(a) => {
                            let idx = holes.partition_point(|&(_, e)| e <= a) as u64;
                            if t.topdown {
                                len - idx
                            } else {
                                idx + 1
                            }
                        }
                    };
                    a_n += 1;
                }
                // Keeps the list in step (its answers are the trace's).
                let got = h.alloc_aligned(size, align);
                debug_assert_eq!(got, at, "operation {i}");
            }
            Op::Free { addr, size } => {
                if timed {
                    let below = holes.partition_point(|&(s, _)| s <= addr) as u64;
                    f_sum += (len - below) + u64::from(below > 0);
                    f_n += 1;
                }
                Churn::free(&mut h, (addr, addr + size));
            }
        }
    }
    ListWalks {
        alloc: a_sum as f64 / a_n.max(1) as f64,
        free: f_sum as f64 / f_n.max(1) as f64,
    }
}
