//! A review of [`VaHeap`] at its edges: holes at address 0 and ending at
//! `u64::MAX`, requests with huge lengths, alignments up to 2^63 and
//! offsets beyond the alignment, windows that clip a hole by one byte,
//! merges across leaf boundaries, the moves between the flat and the tree
//! form, and refused changes that must leave the heap as it was.
//!
//! Every answer is checked twice: against a sorted `Vec` of holes whose fit
//! is computed in `u128` arithmetic (no wrapping possible), and against an
//! [`AddressMap`] kept as the complement of the free space (`mmap_min_addr`
//! 0), whose `find_fit` the heap promises to answer exactly.

use svmap_core::heap_model::HoleModel;
use svmap_core::{AddressMap, FitRequest, HeapError, NoCrossError, SearchParams, VaHeap, VmaFlags};

const MAX: u64 = u64::MAX;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)` (`lo < hi`).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn params() -> SearchParams {
    SearchParams {
        mmap_min_addr: 0,
        ..SearchParams::default()
    }
}

// The model is `svmap_core::heap_model::HoleModel`, the one of the
// property tests: its fits are checked here against the map too.

fn map_holes(map: &AddressMap) -> Vec<(u64, u64)> {
    let mut holes = Vec::new();
    let mut at = 0;
    for v in map.iter() {
        if v.start > at {
            holes.push((at, v.start));
        }
        at = v.end;
    }
    if at < MAX {
        holes.push((at, MAX));
    }
    holes
}

// ----- the three together ----------------------------------------------------

struct World {
    heap: VaHeap,
    model: HoleModel,
    map: AddressMap,
    ops: u64,
    found: u64,
    most: usize,
    /// Times the heap went from more than 256 holes to fewer than 128.
    drains: u32,
    was_big: bool,
}

impl World {
    fn new() -> Self {
        let mut map = AddressMap::new();
        map.insert(0, MAX, VmaFlags::NONE).unwrap();
        World {
            heap: VaHeap::new(),
            model: HoleModel::default(),
            map,
            ops: 0,
            found: 0,
            most: 0,
            drains: 0,
            was_big: false,
        }
    }

    fn after(&mut self, what: &str) {
        self.ops += 1;
        let n = self.model.holes().len();
        assert_eq!(self.heap.hole_count(), n, "hole_count after {what}");
        assert_eq!(
            self.heap.free_bytes(),
            self.model.free_bytes(),
            "free_bytes after {what}"
        );
        self.most = self.most.max(n);
        if n > 256 {
            self.was_big = true;
        }
        if self.was_big && n < 128 {
            self.was_big = false;
            self.drains += 1;
        }
        // Full checks every operation near the form changes and while
        // small, amortised otherwise.
        let near = (120..=136).contains(&n) || (250..=262).contains(&n);
        if near || n < 64 || self.ops.is_multiple_of(1 + n as u64 / 48) {
            self.full(what);
        }
    }

    fn full(&self, what: &str) {
        self.heap.check_invariants();
        let got: Vec<_> = self.heap.holes().collect();
        if got != self.model.holes() {
            let i = got
                .iter()
                .zip(self.model.holes())
                .take_while(|(a, b)| a == b)
                .count();
            panic!(
                "holes differ after {what} at #{i}: heap {:x?} model {:x?}",
                got.get(i),
                self.model.holes().get(i)
            );
        }
        assert_eq!(map_holes(&self.map), self.model.holes(), "map after {what}");
    }

    fn free(&mut self, a: u64, b: u64) -> Result<(), HeapError> {
        let want = self.model.free(a, b);
        let got = self.heap.free(a, b);
        let what = format!("free({a:#x}, {b:#x})");
        assert_eq!(got, want, "{what}");
        if want.is_ok() {
            self.map.unmap(a, b).unwrap();
        }
        self.after(&what);
        got
    }

    fn alloc_at(&mut self, a: u64, b: u64) -> Result<(), HeapError> {
        let want = self.model.alloc_at(a, b);
        let got = self.heap.alloc_at(a, b);
        let what = format!("alloc_at({a:#x}, {b:#x})");
        assert_eq!(got, want, "{what}");
        if want.is_ok() {
            self.map.insert(a, b, VmaFlags::NONE).unwrap();
        }
        self.after(&what);
        got
    }

    /// The map's answer (errors included), checked against the model.
    fn oracle(&self, q: &FitRequest, b: Option<u64>) -> Result<u64, NoCrossError> {
        let p = params();
        let map = match b {
            None => self.map.find_fit(q, &p).map_err(NoCrossError::Fit),
            Some(b) => self.map.find_fit_nocross(q, b, &p),
        };
        if self.model.holes().len() > 5_000 {
            return map;
        }
        assert_eq!(map, self.model.fit(q, b), "model {q:x?} {b:?}");
        map
    }

    fn find(&mut self, q: &FitRequest, b: Option<u64>) -> Result<u64, NoCrossError> {
        let want = self.oracle(q, b);
        let got = match b {
            None => self.heap.find_fit(q).map_err(NoCrossError::Fit),
            Some(b) => self.heap.find_fit_nocross(q, b),
        };
        assert_eq!(got, want, "find {q:x?} boundary {b:?}");
        self.found += u64::from(got.is_ok());
        got
    }

    fn alloc(&mut self, q: &FitRequest, b: Option<u64>) -> Result<u64, NoCrossError> {
        let want = self.oracle(q, b);
        let got = match b {
            None => self.heap.alloc(q).map_err(NoCrossError::Fit),
            Some(b) => self.heap.alloc_nocross(q, b),
        };
        let what = format!("alloc {q:x?} boundary {b:?}");
        assert_eq!(got, want, "{what}");
        if let Ok(a) = got {
            self.model.alloc_at(a, a + q.length).unwrap();
            self.map.insert(a, a + q.length, VmaFlags::NONE).unwrap();
            self.found += 1;
        }
        self.after(&what);
        got
    }

    /// The allocated gap below hole `j` (`j == n`: above the last hole),
    /// clipped to `[0, MAX)`; may be empty.
    fn gap(&self, j: usize) -> (u64, u64) {
        let h = &self.model.holes();
        let lo = if j == 0 { 0 } else { h[j - 1].1 };
        let hi = if j == h.len() { MAX } else { h[j].0 };
        (lo, hi)
    }
}

// ----- adversarial parameters ----------------------------------------------

/// Where a case's free space lies, and its granule.
#[derive(Clone, Copy, Debug)]
struct Place {
    base: u64,
    /// Exclusive; `MAX` for the top of the address space.
    top: u64,
    gran: u64,
}

fn place(g: &mut Rng) -> Place {
    let gran: u64 = g.pick(&[1, 0x1000, 0x1000, 0x3000, 0x1_0000, 0x20_0000, 0x10_0000]);
    let count = g.range(4_000, 12_000);
    let span = gran.saturating_mul(count);
    let (base, top) = match g.range(0, 5) {
        0 => (0, span),
        1 => (MAX - span, MAX),
        2 => ((1 << 63) - span / 2, (1 << 63) + span / 2),
        3 => (0, MAX),
        _ => {
            let b = g.range(0, MAX - span);
            (b, b + span)
        }
    };
    Place { base, top, gran }
}

/// An address near an interesting point.
fn addr(g: &mut Rng, w: &World, p: Place) -> u64 {
    let h = &w.model.holes();
    let jitter = |g: &mut Rng, x: u64| {
        let d = g.pick(&[0, 0, 1, p.gran, p.gran - 1, p.gran + 1, 2 * p.gran]);
        if g.chance(1, 2) {
            x.saturating_add(d)
        } else {
            x.saturating_sub(d)
        }
    };
    match g.range(0, 6) {
        0 | 1 if !h.is_empty() => {
            let (s, e) = g.pick(h);
            let x = if g.chance(1, 2) { s } else { e };
            jitter(g, x)
        }
        2 if !h.is_empty() => {
            let (s, e) = g.pick(h);
            s + g.next() % (e - s)
        }
        3 => g.pick(&[0, 1, MAX, MAX - 1, MAX - p.gran, 1 << 63, (1 << 63) - 1]),
        4 => {
            let x = p.base + g.next() % (p.top - p.base);
            jitter(g, x)
        }
        _ => g.next(),
    }
}

fn length(g: &mut Rng, w: &World, p: Place) -> u64 {
    let h = &w.model.holes();
    match g.range(0, 10) {
        0..=3 => p.gran * g.range(1, 9),
        4 => p.gran * g.range(1, 300),
        5 if !h.is_empty() => {
            let (s, e) = g.pick(h);
            let d = g.pick(&[0u64, 1, p.gran]);
            if g.chance(1, 2) {
                (e - s).saturating_add(d)
            } else {
                (e - s).saturating_sub(d).max(1)
            }
        }
        6 => 1 << g.range(0, 64),
        7 => g.pick(&[1, MAX, MAX - 1, 1 << 63, (1 << 63) + 1, MAX - p.gran + 1]),
        _ => g.range(1, 1 << 20),
    }
}

fn align(g: &mut Rng) -> u64 {
    match g.range(0, 12) {
        0 => 1,
        1 => g.pick(&[0x1000, 0x1_0000, 0x20_0000]),
        2 => g.pick(&[0x2000, 0x10_0000, 0x40_0000, 1 << 30, 0x8000, 0x4_0000]),
        3 => 1 << g.range(0, 64),
        4 => g.pick(&[1 << 62, 1 << 63]),
        5 if g.chance(1, 4) => g.pick(&[0, 3, 0x3000, MAX]),
        _ => 1 << g.range(0, 23),
    }
}

fn offset(g: &mut Rng, align: u64, gran: u64) -> u64 {
    match g.range(0, 10) {
        0..=3 => 0,
        4 if align > 1 => g.next() % align,
        5 => g.pick(&[0x1000, 0x1_0000, 0x20_0000, 0x21_0000, 1 << 63, MAX]),
        6 => align
            .wrapping_mul(g.range(1, 4))
            .wrapping_add(g.pick(&[0, gran, 0x1_0000])),
        7 => g.next(),
        _ => gran.wrapping_mul(g.range(0, 64)),
    }
}

fn window(g: &mut Rng, w: &World, p: Place) -> (u64, u64) {
    let h = &w.model.holes();
    match g.range(0, 8) {
        0 | 1 => (0, MAX),
        2 if !h.is_empty() => {
            let (s, e) = g.pick(h);
            let d = g.pick(&[0, 1, p.gran]);
            (s.saturating_add(d), e.saturating_sub(d))
        }
        3 if !h.is_empty() => {
            // A window spanning many holes, clipped inside two of them.
            let (s1, e1) = g.pick(h);
            let (s2, e2) = g.pick(h);
            let lo = s1 + (e1 - s1) / 2;
            let hi = s2 + (e2 - s2) / 2;
            (lo.min(hi), lo.max(hi))
        }
        4 => (addr(g, w, p), MAX),
        5 => (0, addr(g, w, p)),
        6 => {
            let (a, b) = (addr(g, w, p), addr(g, w, p));
            (a.min(b), a.max(b))
        }
        _ => (g.next(), g.next()),
    }
}

fn request(g: &mut Rng, w: &World, p: Place) -> FitRequest {
    let align = align(g);
    let (low, high) = window(g, w, p);
    FitRequest {
        length: length(g, w, p),
        low,
        high,
        align,
        align_offset: offset(g, align, p.gran),
        topdown: g.chance(1, 2),
        respect_guard_gaps: g.chance(1, 4),
    }
}

fn boundary(g: &mut Rng) -> Option<u64> {
    match g.range(0, 10) {
        0..=4 => None,
        5 => Some(0),
        6 => Some(g.pick(&[3, 1 << 63, MAX])),
        _ => Some(1 << g.range(0, 64).min(g.range(10, 40))),
    }
}

/// One random operation; `grow` biases towards more holes.
fn step(g: &mut Rng, w: &mut World, p: Place, grow: Option<bool>) {
    let n = w.model.holes().len();
    let k = match grow {
        Some(true) => g.pick(&[0, 0, 1, 1, 1, 2, 3, 4, 5]),
        Some(false) => g.pick(&[0, 0, 0, 0, 0, 6, 2, 4]),
        None => g.range(0, 7),
    };
    match k {
        // A part of a hole taken exactly: usually splits it.
        1 if n > 0 => {
            let (s, e) = g.pick(w.model.holes());
            let len = (e - s).min(p.gran * g.range(1, 4));
            let a = s + (g.next() % (e - s - len + 1)) / p.gran.max(1) * p.gran.max(1);
            let a = a.min(e - len);
            let _ = w.alloc_at(a, a + len);
        }
        // A free of an allocated gap: whole (both merges), touching one
        // side only, or inside.
        0 | 6 => {
            let j = g.range(0, n as u64 + 1) as usize;
            let (lo, hi) = w.gap(j);
            if lo >= hi {
                return;
            }
            let l = hi - lo;
            let (a, b) = match g.range(0, 5) {
                0 | 1 => (lo, hi),
                2 => (lo, lo + 1 + g.next() % l),
                3 => (hi - 1 - g.next() % l, hi),
                _ => {
                    let a = lo + g.next() % l;
                    (a, a + 1 + g.next() % (hi - a))
                }
            };
            assert!(w.free(a, b).is_ok(), "a free inside an allocated gap");
        }
        // Anything: mostly refused, and then nothing may change.
        2 => {
            let (a, b) = (addr(g, w, p), addr(g, w, p));
            let before = w.model.clone();
            let r = if g.chance(1, 2) {
                w.free(a.min(b), a.max(b))
            } else {
                w.alloc_at(a.min(b), a.max(b))
            };
            if r.is_err() {
                assert_eq!(w.model, before);
                w.full("a refused change");
            }
        }
        3 => {
            let q = request(g, w, p);
            let b = boundary(g);
            let _ = w.alloc(&q, b);
        }
        _ => {
            let q = request(g, w, p);
            let b = boundary(g);
            let _ = w.find(&q, b);
        }
    }
}

fn run_seed(seed: u64, steps: usize) -> World {
    let mut g = Rng(seed);
    let p = place(&mut g);
    let mut w = World::new();
    w.free(p.base, p.top).unwrap();
    // Build up past the tree limit, churn, drain below the flat limit,
    // several times; the targets vary per round.
    let mut i = 0;
    while i < steps {
        let target = g.pick(&[300, 700, 2_000, 260]);
        while w.model.holes().len() < target && i < steps {
            step(&mut g, &mut w, p, Some(true));
            i += 1;
        }
        for _ in 0..g.range(100, 1500) {
            step(&mut g, &mut w, p, None);
            i += 1;
        }
        let floor = g.pick(&[0, 10, 100, 127]);
        while w.model.holes().len() > floor && i < steps {
            step(&mut g, &mut w, p, Some(false));
            i += 1;
        }
    }
    w.full("the end");
    w
}

#[test]
fn random_edges_against_model_and_map() {
    let mut drains = 0;
    let mut most = 0;
    let mut found = 0;
    for seed in 0..24 {
        let w = run_seed(0x5eed_0000 + seed, 9_000);
        drains += w.drains;
        most = most.max(w.most);
        found += w.found;
    }
    // The runs crossed between the forms and found fits.
    assert!(drains >= 20, "drains {drains}");
    assert!(most >= 1_500, "most holes {most}");
    assert!(found >= 20_000, "found {found}");
}

// ----- targeted cases --------------------------------------------------------

/// `n` holes of `g` bytes every `2g` bytes from `base`; with `to_max` the
/// last one ends at `u64::MAX`.
fn striped(base: u64, g: u64, n: u64, to_max: bool) -> World {
    let mut w = World::new();
    for i in 0..n {
        let s = base + 2 * i * g;
        let e = if to_max && i + 1 == n { MAX } else { s + g };
        w.free(s, e).unwrap();
    }
    w
}

/// Requests over every combination of edge parameters.
fn edge_requests(w: &mut World) {
    let h = w.model.holes().to_vec();
    let (fs, fe) = h[0];
    let (ls, le) = *h.last().unwrap();
    let (ms, me) = h[h.len() / 2];
    let lens = [
        1,
        0x1000,
        fe - fs,
        (me - ms) / 2 + 1,
        le - ls,
        le - ls + 1,
        1 << 63,
        MAX - 1,
        MAX,
    ];
    let windows = [
        (0, MAX),
        (ls, MAX),
        (ls + 1, le - 1),
        (fs, fe),
        (fs + 1, fe),
        (0, fe),
        (ms, me),
        (ms + 1, me - 1),
        (fs, le),
        (fe - 1, ls + 1),
        (MAX - 1, MAX),
    ];
    let aligns = [
        1,
        2,
        0x1000,
        0x2000,
        0x1_0000,
        0x10_0000,
        0x20_0000,
        0x40_0000,
        1 << 30,
        1 << 62,
        1 << 63,
    ];
    for &length in &lens {
        for &(low, high) in &windows {
            for &align in &aligns {
                let offs = [
                    0,
                    1,
                    align - 1,
                    align,
                    align + 0x1000,
                    0x1_0000,
                    0x20_0000,
                    1 << 63,
                    MAX,
                ];
                for &align_offset in &offs {
                    for topdown in [false, true] {
                        let q = FitRequest {
                            length,
                            low,
                            high,
                            align,
                            align_offset,
                            topdown,
                            respect_guard_gaps: false,
                        };
                        for b in [None, Some(0), Some(0x1000), Some(0x20_0000), Some(1 << 63)] {
                            let _ = w.find(&q, b);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn edge_requests_at_both_ends_flat_and_tree() {
    for n in [1, 2, 100, 300, 1000] {
        // At the bottom, the first hole starting at 0.
        let mut w = striped(0, 0x3000, n, false);
        edge_requests(&mut w);
        // At the top, the last hole ending at u64::MAX.
        let g = 0x20_1000;
        let mut w = striped(MAX - 2 * n * g, g, n, true);
        edge_requests(&mut w);
        // One byte holes at the very top.
        let mut w = striped(MAX - 2 * n, 1, n, true);
        edge_requests(&mut w);
        assert!(w.found > 0);
    }
}

#[test]
fn allocations_at_the_ends_of_the_space() {
    for n in [3, 400] {
        for to_max in [false, true] {
            let base = if to_max { MAX - 2 * n * 0x1000 } else { 0 };
            let mut w = striped(base, 0x1000, n, to_max);
            // Take the last hole's last bytes, its first bytes, then all.
            let (s, e) = *w.model.holes().last().unwrap();
            w.alloc_at(e - 1, e).unwrap();
            w.alloc_at(s, s + 1).unwrap();
            let q = FitRequest {
                length: e - 1 - (s + 1),
                low: 0,
                high: MAX,
                align: 1,
                align_offset: 0,
                topdown: true,
                respect_guard_gaps: false,
            };
            assert_eq!(w.alloc(&q, None), Ok(s + 1));
            // Give it all back in pieces that merge.
            w.free(s + 1, e - 1).unwrap();
            w.free(e - 1, e).unwrap();
            w.free(s, s + 1).unwrap();
            assert_eq!(w.model.holes().last(), Some(&(s, e)));
            // Free the space up to u64::MAX above the last hole.
            if e < MAX {
                w.free(e, MAX).unwrap();
                assert_eq!(w.model.holes().last(), Some(&(s, MAX)));
            }
            // A hole starting at 0.
            let (s0, _) = w.model.holes()[0];
            if s0 > 0 {
                w.free(0, s0).unwrap();
            }
            assert_eq!(w.model.holes()[0].0, 0);
            // Huge requests.
            for topdown in [false, true] {
                for align in [1, 1 << 63] {
                    let q = FitRequest {
                        length: MAX - 1,
                        low: 0,
                        high: MAX,
                        align,
                        align_offset: MAX,
                        topdown,
                        respect_guard_gaps: false,
                    };
                    let _ = w.alloc(&q, None);
                    let _ = w.alloc(&q, Some(1 << 63));
                }
            }
        }
    }
}

/// Frees that merge with holes in the neighbouring leaf (and touch only one
/// side, or none), in orders that meet every leaf boundary.
#[test]
fn merges_across_leaf_boundaries() {
    for (base, to_max) in [(0, false), (MAX - 2 * 1500 * 0x1000, true), (0x7000, false)] {
        for order in 0..5u64 {
            let n = 1500u64;
            let mut w = striped(base, 0x1000, n, to_max);
            let mut g = Rng(order);
            // Shrink some gaps from one side first, so that frees touch
            // one hole only.
            for j in (1..n as usize).step_by(7) {
                let (lo, hi) = w.gap(j.min(w.model.holes().len() - 1));
                if hi - lo >= 2 {
                    let _ = w.free(lo, lo + 1);
                }
            }
            // Then merge everything, gap by gap.
            while w.model.holes().len() > 1 {
                let m = w.model.holes().len();
                let j = match order {
                    0 => 1,
                    1 => m - 1,
                    2 => (m / 2).max(1),
                    3 => 1 + ((w.ops as usize * 11) % (m - 1)),
                    _ => g.range(1, m as u64) as usize,
                };
                let (lo, hi) = w.gap(j);
                match g.range(0, 3) {
                    0 if hi - lo >= 2 => {
                        w.free(lo + 1, hi).unwrap();
                        w.free(lo, lo + 1).unwrap();
                    }
                    1 if hi - lo >= 2 => {
                        w.free(lo, hi - 1).unwrap();
                        w.free(hi - 1, hi).unwrap();
                    }
                    _ => w.free(lo, hi).unwrap(),
                }
                if m.is_multiple_of(50) {
                    w.full("merges");
                }
            }
            w.full("all merged");
        }
    }
}

/// Refused frees (overlapping one hole, several, or touching ones) leave the
/// heap exactly as it was, in both forms.
#[test]
fn refused_frees_change_nothing() {
    for n in [5, 200, 600] {
        let mut w = striped(0x10_0000, 0x4000, n, false);
        let h = w.model.holes().to_vec();
        for (i, &(s, e)) in h.iter().enumerate() {
            let next = h.get(i + 1).map_or(MAX, |x| x.1);
            let tries = [
                (s, e),
                (s - 1, e + 1),
                (s - 0x4000, s + 1),
                (e - 1, e + 0x4000),
                (s + 1, e - 1),
                (s - 0x4000, next),
                (s, MAX),
                (0, e),
            ];
            for (a, b) in tries {
                let before = w.model.clone();
                assert!(matches!(w.free(a, b), Err(HeapError::AlreadyFree { .. })));
                assert_eq!(w.model, before);
            }
            assert!(matches!(
                w.alloc_at(s, e + 1),
                Err(HeapError::NotFree { .. })
            ));
            assert!(matches!(
                w.alloc_at(s - 1, e),
                Err(HeapError::NotFree { .. })
            ));
            assert!(matches!(w.free(e, e), Err(HeapError::EmptyRange { .. })));
            assert!(matches!(
                w.alloc_at(e, s),
                Err(HeapError::EmptyRange { .. })
            ));
        }
        w.full("refusals");
    }
}

/// A heap kept right at the form limits moves between the forms many
/// times; every state is checked.
#[test]
fn hysteresis_at_the_limits() {
    let g = 0x1000;
    let mut w = striped(0, g, 600, false);
    let mut rng = Rng(7);
    for round in 0..40 {
        let target = if round % 2 == 0 { 126 } else { 258 };
        while w.model.holes().len() != target {
            if w.model.holes().len() > target {
                // Merge two holes by freeing a random inner gap.
                let j = rng.range(1, w.model.holes().len() as u64) as usize;
                let (lo, hi) = w.gap(j);
                w.free(lo, hi).unwrap();
            } else {
                // Split a random hole of at least 3 granules.
                let big: Vec<_> = w
                    .model
                    .holes()
                    .iter()
                    .copied()
                    .filter(|&(s, e)| e - s >= 3 * g)
                    .collect();
                let (s, e) = rng.pick(&big);
                let a = s + g * rng.range(1, (e - s) / g - 1);
                w.alloc_at(a, a + g).unwrap();
            }
            w.full("hysteresis");
            let q = FitRequest {
                length: g * rng.range(1, 5),
                low: 0,
                high: MAX,
                align: rng.pick(&[0x1000, 0x2000, 0x10_0000, 0x20_0000, 0x40_0000]),
                align_offset: 0,
                topdown: rng.chance(1, 2),
                respect_guard_gaps: false,
            };
            let _ = w.find(&q, None);
        }
    }
}

/// Alignments between and beyond the cached classes, with offsets, over
/// holes whose 64 KiB or 2 MiB room is large but whose fits are rare, so
/// that the walk backs up across many leaves and inner nodes.
#[test]
fn backtracking_with_odd_alignments() {
    let mut rng = Rng(99);
    for round in 0..6u64 {
        let mut w = World::new();
        // Holes of 2 MiB + a bit starting on odd 2 MiB multiples: 2 MiB
        // room is 2 MiB, but a 4 MiB-aligned 2 MiB range fits nowhere but
        // in the few holes made longer.
        let mb2 = 0x20_0000u64;
        let base = if round % 2 == 0 {
            1 << 40
        } else {
            MAX - (1 << 36)
        };
        for i in 0..1200u64 {
            let s = base + (4 * i + 1) * mb2;
            let extra = if i % 397 == 396 { 2 * mb2 } else { 0x1000 };
            w.free(s, s + mb2 + extra).unwrap();
        }
        for _ in 0..3000 {
            let align = rng.pick(&[
                0x2000,
                0x8000,
                0x10_0000,
                0x40_0000,
                1 << 30,
                1 << 24,
                0x20_0000,
            ]);
            let off = match rng.range(0, 4) {
                0 => 0,
                1 => mb2,
                2 => 0x1_0000 * rng.range(0, 64),
                _ => rng.next() % (align * 2),
            };
            let (low, high) = match rng.range(0, 3) {
                0 => (0, MAX),
                1 => (base + rng.range(0, 1 << 32), MAX),
                _ => (0, base + rng.range(1 << 30, 1 << 33)),
            };
            let q = FitRequest {
                length: rng.pick(&[mb2, mb2 + 0x1000, 0x1000, 0x10_0000, 3 * mb2]),
                low,
                high,
                align,
                align_offset: off,
                topdown: rng.chance(1, 2),
                respect_guard_gaps: false,
            };
            let b = rng.pick(&[None, None, Some(0x40_0000), Some(1 << 30)]);
            if rng.chance(1, 8) {
                if let Ok(a) = w.alloc(&q, b) {
                    w.free(a, a + q.length).unwrap();
                }
            } else {
                let _ = w.find(&q, b);
            }
        }
        assert!(w.found > 0);
    }
}

/// Memory returns when a large heap drains, and a clone is independent.
#[test]
fn memory_and_clones() {
    let mut w = striped(0, 0x1000, 5000, false);
    let big = w.heap.heap_bytes();
    let copy = w.heap.clone();
    for j in (1..5000).rev() {
        let (lo, hi) = w.gap(j);
        w.free(lo, hi).unwrap();
    }
    assert_eq!(w.model.holes().len(), 1);
    assert_eq!(copy.hole_count(), 5000);
    copy.check_invariants();
    assert!(
        w.heap.heap_bytes() * 20 < big,
        "{} bytes after draining, {big} at 5000 holes",
        w.heap.heap_bytes()
    );
}

/// A tree several levels high: built by ascending frees (leaves left half
/// full, so the height grows fast), churned, then merged back into one hole
/// gap by gap in random order (merges across every level, root collapses).
#[test]
fn tall_tree_built_and_drained() {
    let g = 0x1000;
    let n = 30_000u64;
    let mut w = striped(0, g, n, false);
    let mut rng = Rng(2024);
    let p = Place {
        base: 0,
        top: 2 * n * g,
        gran: g,
    };
    for _ in 0..6_000 {
        step(&mut rng, &mut w, p, None);
    }
    while w.model.holes().len() > 1 {
        let m = w.model.holes().len() as u64;
        let j = rng.range(1, m) as usize;
        let (lo, hi) = w.gap(j);
        w.free(lo, hi).unwrap();
        if rng.chance(1, 16) {
            let q = request(&mut rng, &w, p);
            let b = boundary(&mut rng);
            let _ = w.find(&q, b);
        }
    }
    w.full("drained");
}

/// Byte-sized holes (in the tree form) at both ends of the space, against
/// small lengths, alignments, offsets and boundaries in every combination.
#[test]
fn byte_holes_in_the_tree_exhaustively() {
    for base in [0, MAX - 1500] {
        let mut rng = Rng(base ^ 77);
        let mut w = World::new();
        let mut at = base + rng.range(0, 3);
        while at < base + 1400 {
            let e = at + rng.range(1, 4);
            w.free(at, e).unwrap();
            at = e + rng.range(1, 4);
        }
        if base > 0 {
            w.free(at, MAX).unwrap();
        }
        assert!(w.model.holes().len() > 300);
        for round in 0..3 {
            let mut windows = vec![(0, MAX), (base, base + 1500)];
            for _ in 0..8 {
                let a = base + rng.range(0, 1500);
                let b = a.saturating_add(rng.range(1, 200));
                windows.push((a, b));
            }
            for length in 1..=6 {
                for align in [1, 2, 4, 8, 16, 32] {
                    for align_offset in [0, 1, 3, align - 1, align, align + 1, 33, MAX] {
                        for &(low, high) in &windows {
                            for topdown in [false, true] {
                                let q = FitRequest {
                                    length,
                                    low,
                                    high,
                                    align,
                                    align_offset,
                                    topdown,
                                    respect_guard_gaps: false,
                                };
                                for b in [None, Some(4), Some(8), Some(64)] {
                                    let _ = w.find(&q, b);
                                }
                            }
                        }
                    }
                }
            }
            // Change the heap between rounds (still in the tree form).
            for _ in 0..20 {
                let q = FitRequest {
                    length: rng.range(1, 3),
                    low: 0,
                    high: MAX,
                    align: rng.pick(&[1, 2, 4]),
                    align_offset: round,
                    topdown: rng.chance(1, 2),
                    respect_guard_gaps: false,
                };
                let _ = w.alloc(&q, None);
                let j = rng.range(1, w.model.holes().len() as u64) as usize;
                let (lo, hi) = w.gap(j);
                w.free(lo, hi).unwrap();
            }
            // Still the tree form: it leaves it only below 128 holes.
            assert!(w.model.holes().len() > 200);
        }
    }
}
