//! The churn workload: a fixed-seed step sequence and the measuring loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::count_alloc;

/// Page size: every size is a whole number of pages.
pub const PAGE: u64 = 4096;
/// Largest size: 2 MiB (512 pages).
pub const MAX_PAGES: u64 = 512;
/// The address window every address-ordered implementation manages:
/// `[0, 2^47)`, the x86-64 user half with 4-level paging.
pub const WINDOW: u64 = 1 << 47;
/// The most live ranges a measurement is built for: the step stream draws
/// victims with 32-bit indices, and the live-range array and the maps stay
/// within a few GiB.
pub const MAX_LIVE: usize = 20_000_000;

/// The largest alignment with which `n` live ranges always fit in
/// [`WINDOW`], whatever the churn did to the free space: `None` if `n` is 0
/// or above [`MAX_LIVE`].
///
/// Before each allocation `n - 1` ranges of at most `MAX_PAGES * PAGE`
/// bytes are live and split the free space into at most `n` holes; a hole
/// of `size + align - PAGE` bytes holds an aligned fit. If no hole were that
/// large the free space would be below `n * (max + align)`, so
/// `n * (2 * max + align) <= WINDOW` guarantees a fit at every step. The
/// bound is a power of two, at most 2^46, and at least 2 MiB for every `n`
/// up to [`MAX_LIVE`].
pub fn max_align(n: usize) -> Option<u64> {
    if n == 0 || n > MAX_LIVE {
        return None;
    }
    let max = MAX_PAGES * PAGE;
    let room = (WINDOW / n as u64).checked_sub(2 * max)?;
    // The largest power of two at most `room` (room >= 2 MiB here).
    Some(1u64 << (63 - room.leading_zeros()))
}

/// The fixed seed of the step sequence.
pub const SEED: u64 = 0x5eed_c0de_2026_0003;

/// SplitMix64: a small, fast, statistically sound generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (multiply-shift; bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A size in bytes, log-uniform over 1..=512 pages (4 KiB..2 MiB):
    /// `floor(513^u)` pages for `u` uniform in `[0, 1)`.
    pub fn size(&mut self) -> u64 {
        let pages = (self.unit() * ((MAX_PAGES + 1) as f64).log2()).exp2() as u64;
        pages.clamp(1, MAX_PAGES) * PAGE
    }
}

/// One churn step: free `live[victim]`, then allocate `bytes` into its slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Step {
    /// Index into the live-range array.
    pub victim: u32,
    /// Size of the new range in bytes.
    pub bytes: u64,
}

/// An implementation under test: something that hands out and takes back
/// ranges. Alignment and placement order are fixed when it is built.
pub trait Churn {
    /// What the caller keeps to free a range later.
    type Handle: Copy + Default;
    /// Places a range of `bytes` bytes; panics if it cannot.
    fn alloc(&mut self, bytes: u64) -> Self::Handle;
    /// Frees a range returned by [`Churn::alloc`].
    fn free(&mut self, h: Self::Handle);
    /// The heap bytes the implementation reports itself, if it does.
    fn reported_heap_bytes(&self) -> Option<usize> {
        None
    }
    /// Candidate holes examined per search since the last
    /// [`Churn::reset_diag`], if the implementation counts them.
    fn holes_per_search(&self) -> Option<f64> {
        None
    }
    /// Allocations whose insert recomputed its leaf's maxima (the split
    /// hole held one) per allocation, since the last [`Churn::reset_diag`],
    /// if the implementation counts them.
    fn rescans_per_alloc(&self) -> Option<f64> {
        None
    }
    /// Restarts the counters of [`Churn::holes_per_search`] and
    /// [`Churn::rescans_per_alloc`].
    fn reset_diag(&mut self) {}
}

/// The parameters of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Number of live ranges.
    pub n: usize,
    /// Warm-up steps after the initial fill (2N in the standard plan).
    pub warmup: usize,
    /// Timed repetitions.
    pub reps: usize,
    /// Steps per repetition (at most).
    pub steps_per_rep: usize,
    /// If set, fewer steps per repetition (but at least
    /// [`Plan::MIN_STEPS`]) so that one repetition takes about this long at
    /// the warm-up's rate: keeps the O(n) peers within the time budget.
    pub rep_target: Option<Duration>,
}

impl Plan {
    /// The standard plan: warm-up 2N, 5 repetitions of `clamp(N, 20k, 200k)`
    /// steps.
    pub fn standard(n: usize) -> Self {
        Plan {
            n,
            warmup: 2 * n,
            reps: 5,
            steps_per_rep: n.clamp(20_000, 200_000),
            rep_target: Some(Duration::from_secs(1)),
        }
    }

    /// The `--quick` plan: 3 repetitions of at most `clamp(N, 5k, 20k)`
    /// steps, 0.2 s each at most.
    pub fn quick(n: usize) -> Self {
        Plan {
            n,
            warmup: 2 * n,
            reps: 3,
            steps_per_rep: n.clamp(5_000, 20_000),
            rep_target: Some(Duration::from_millis(200)),
        }
    }

    /// The fewest steps a repetition may have.
    pub const MIN_STEPS: usize = 2_000;

    /// Estimated seconds for the whole measurement at `ns_per_pair`.
    pub fn estimate_s(&self, ns_per_pair: f64) -> f64 {
        let setup = (self.n + self.warmup) as f64 * ns_per_pair * 1e-9;
        let mut rep = self.steps_per_rep as f64 * ns_per_pair * 1e-9;
        if let Some(t) = self.rep_target {
            rep = rep.min(
                t.as_secs_f64()
                    .max(Self::MIN_STEPS as f64 * ns_per_pair * 1e-9),
            );
        }
        setup + self.reps as f64 * rep
    }

    /// Steps in total (fill, warm-up and timed).
    pub fn total_steps(&self) -> usize {
        self.n + self.warmup + self.reps * self.steps_per_rep
    }
}

/// The result of one measurement.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Median over the repetitions of ns per (free + allocate) pair.
    pub ns_per_pair: f64,
    /// Every repetition's ns per pair.
    pub reps_ns: Vec<f64>,
    /// ns per pair during the warm-up.
    pub warmup_ns_per_pair: f64,
    /// Live heap bytes the implementation holds after the warm-up, per live
    /// range (counting global allocator).
    pub bytes_per_range: f64,
    /// Heap bytes per range as the implementation reports them itself.
    pub reported_bytes_per_range: Option<f64>,
    /// Candidate holes examined per search in the timed part (svmap only).
    pub holes_per_search: Option<f64>,
    /// Leaf rescans per allocation in the timed part (svmap only).
    pub rescans_per_alloc: Option<f64>,
    /// Steps per repetition actually run.
    pub steps_per_rep: usize,
    /// Wall time of the whole measurement, setup included.
    pub wall: Duration,
}

const CHUNK: usize = 1 << 16;

/// The step stream: the same for every implementation (fixed seed).
struct Stream {
    rng: SplitMix64,
    buf: Vec<Step>,
}

impl Stream {
    fn refill(&mut self, count: usize, n: u32) {
        self.buf.clear();
        for _ in 0..count {
            let victim = self.rng.below(n);
            let bytes = self.rng.size();
            self.buf.push(Step { victim, bytes });
        }
    }
}

/// Runs `steps` churn steps in chunks; returns the time spent applying them
/// (the generation of the sequence is not timed).
fn churn<C: Churn>(c: &mut C, live: &mut [C::Handle], s: &mut Stream, steps: usize) -> Duration {
    let mut left = steps;
    let mut t = Duration::ZERO;
    let n = live.len() as u32;
    while left > 0 {
        let k = left.min(CHUNK);
        s.refill(k, n);
        let t0 = Instant::now();
        for st in &s.buf {
            let slot = &mut live[st.victim as usize];
            c.free(*slot);
            *slot = black_box(c.alloc(st.bytes));
        }
        t += t0.elapsed();
        left -= k;
    }
    t
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Builds an implementation with `make`, fills it with `plan.n` ranges,
/// warms it up and measures it.
pub fn measure<C: Churn>(make: impl FnOnce() -> C, plan: &Plan) -> Measurement {
    let wall = Instant::now();
    let mut stream = Stream {
        rng: SplitMix64::new(SEED),
        buf: Vec::with_capacity(CHUNK),
    };
    let mut live: Vec<C::Handle> = vec![C::Handle::default(); plan.n];
    let base = count_alloc::live_bytes();
    let mut c = make();
    // Initial fill.
    let mut done = 0;
    while done < plan.n {
        let k = (plan.n - done).min(CHUNK);
        stream.refill(k, 1);
        for (slot, st) in live[done..done + k].iter_mut().zip(&stream.buf) {
            *slot = c.alloc(st.bytes);
        }
        done += k;
    }
    let tw = churn(&mut c, &mut live, &mut stream, plan.warmup);
    let heap = count_alloc::live_bytes().saturating_sub(base);
    let bytes_per_range = heap as f64 / plan.n as f64;
    let reported_bytes_per_range = c.reported_heap_bytes().map(|b| b as f64 / plan.n as f64);
    let warm_ns = tw.as_nanos() as f64 / plan.warmup.max(1) as f64;
    let steps = match plan.rep_target {
        Some(t) if warm_ns > 0.0 => {
            let fit = (t.as_nanos() as f64 / warm_ns) as usize;
            plan.steps_per_rep.min(fit.max(Plan::MIN_STEPS))
        }
        _ => plan.steps_per_rep,
    };
    c.reset_diag();
    let mut reps_ns = Vec::with_capacity(plan.reps);
    for _ in 0..plan.reps {
        let t = churn(&mut c, &mut live, &mut stream, steps);
        reps_ns.push(t.as_nanos() as f64 / steps as f64);
    }
    let holes_per_search = c.holes_per_search();
    let rescans_per_alloc = c.rescans_per_alloc();
    for h in live.iter().copied() {
        c.free(h);
    }
    drop(c);
    Measurement {
        ns_per_pair: median(&reps_ns),
        reps_ns,
        warmup_ns_per_pair: warm_ns,
        steps_per_rep: steps,
        holes_per_search,
        rescans_per_alloc,
        bytes_per_range,
        reported_bytes_per_range,
        wall: wall.elapsed(),
    }
}
