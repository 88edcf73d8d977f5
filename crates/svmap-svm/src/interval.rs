//! Two small interval structures beside the core [`AddressMap`]:
//!
//! - [`IntervalMap`]: non-overlapping `[start, end)` ranges with a value
//!   each (CPU protection, reservations, window pieces, device regions),
//!   with splitting removal in O(log n + k).
//! - [`CoverMap`]: a counted union of possibly overlapping ranges (the
//!   occupancy of several spaces at once), whose union sits in an
//!   [`AddressMap`] so that [`AddressMap::find_fit`] searches it in
//!   O(log n).
//! - [`union_of`] and [`union_map`]: the one-shot union of a list of
//!   possibly overlapping ranges, as a list or as an [`AddressMap`] to
//!   search for the holes free in every input (the device peer's window
//!   agreement between two processes uses it).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use svmap_core::{AddressMap, FitError, FitRequest, SearchParams, VmaFlags};

/// The hash of the exact-key maps of the SVM layer (allocation ids, range
/// and piece starts, cover segments): the key mixed with a per-map random
/// seed, multiplied by a constant in full width and the two halves of the
/// product folded together. Much cheaper than SipHash for a `u64`,
/// and the seed keeps the bucket of an address out of reach of whoever
/// chooses the addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MixState(u64);

impl Default for MixState {
    #[inline]
    fn default() -> Self {
        MixState(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for MixState {
    type Hasher = MixHasher;
    #[inline]
    fn build_hasher(&self) -> MixHasher {
        MixHasher(self.0)
    }
}

/// The odd multiplier of [`MixHasher`] (the fractional bits of pi).
const FOLD_MUL: u64 = 0x243f_6a88_85a3_08d3;

/// See [`MixState`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        // One full 64 x 64 -> 128-bit product, its halves folded: every
        // bit of the key reaches the low bits (the bucket) and the high
        // bits (the tag) alike, page-aligned keys included.
        let p = u128::from(x ^ self.0) * u128::from(FOLD_MUL);
        self.0 = (p as u64) ^ ((p >> 64) as u64);
    }
}

/// Non-overlapping ranges `[start, end)` (`end > start`) with a value each,
/// keyed by start.
#[derive(Clone, Debug, Default)]
pub struct IntervalMap<V> {
    m: BTreeMap<u64, (u64, V)>,
}

impl<V: Clone> IntervalMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        IntervalMap { m: BTreeMap::new() }
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// The range containing `addr`. O(log n).
    pub fn get(&self, addr: u64) -> Option<(u64, u64, &V)> {
        let (&s, (e, v)) = self.m.range(..=addr).next_back()?;
        (*e > addr).then_some((s, *e, v))
    }

    /// The range that starts exactly at `start`, as `(end, value)`: one key
    /// lookup, cheaper than [`Self::get`]. O(log n).
    pub fn get_exact(&self, start: u64) -> Option<(u64, &V)> {
        self.m.get(&start).map(|(e, v)| (*e, v))
    }

    /// The lowest range intersecting `[start, end)`. O(log n).
    pub fn first_overlap(&self, start: u64, end: u64) -> Option<(u64, u64, &V)> {
        if start >= end {
            // An empty or inverted query intersects nothing.
            return None;
        }
        if let Some((&s, (e, v))) = self.m.range(..start).next_back() {
            if *e > start {
                return Some((s, *e, v));
            }
        }
        let (&s, (e, v)) = self.m.range(start..).next()?;
        (s < end).then_some((s, *e, v))
    }

    /// The ranges intersecting `[start, end)`, unclipped, in order.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64, &V)> + '_ {
        let first = self
            .m
            .range(..start)
            .next_back()
            .filter(|(_, (e, _))| *e > start)
            .map(|(&s, _)| s)
            .unwrap_or(start);
        self.m
            .range(first..)
            // An empty or inverted query intersects nothing.
            .take_while(move |(&s, _)| s < end && start < end)
            .map(|(&s, (e, v))| (s, *e, v))
    }

    /// All ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64, &V)> + '_ {
        self.m.iter().map(|(&s, (e, v))| (s, *e, v))
    }

    /// Inserts `[start, end)`. The caller guarantees that it overlaps
    /// nothing (checked in debug builds).
    pub fn insert(&mut self, start: u64, end: u64, v: V) {
        debug_assert!(start < end);
        debug_assert!(self.first_overlap(start, end).is_none());
        self.m.insert(start, (end, v));
    }

    /// The range with the highest start below `addr`, if any (it may end
    /// at or above `addr`). O(log n).
    pub fn last_before(&self, addr: u64) -> Option<(u64, u64, &V)> {
        let (&s, (e, v)) = self.m.range(..addr).next_back()?;
        Some((s, *e, v))
    }

    /// Removes everything in `[start, end)`, splitting ranges that
    /// straddle an edge, and returns the removed pieces (clipped) in order.
    /// O(log n + k).
    pub fn remove_range(&mut self, start: u64, end: u64) -> Vec<(u64, u64, V)> {
        let mut out = Vec::new();
        self.remove_range_each(start, end, |s, e, v| out.push((s, e, v)));
        out
    }

    /// [`Self::remove_range`] that hands each removed piece (clipped, in
    /// order) to `f` instead of collecting them: no allocation. O((1 + k)
    /// log n).
    #[inline]
    pub fn remove_range_each(&mut self, start: u64, end: u64, f: impl FnMut(u64, u64, V)) {
        // Most maps are empty (no protection or reservation was ever set):
        // that check stays with the caller.
        if start < end && !self.m.is_empty() {
            self.remove_range_each_slow(start, end, f);
        }
    }

    /// [`Self::remove_range_each`] of a non-empty range in a non-empty map.
    fn remove_range_each_slow(&mut self, start: u64, end: u64, mut f: impl FnMut(u64, u64, V)) {
        let mut from = start;
        if let Some((e, v)) = self.m.remove(&start) {
            // A range starts at `start` (the common case: one descent when
            // it reaches `end`).
            if e > end {
                f(start, end, v.clone());
                self.m.insert(end, (e, v));
                return;
            }
            f(start, e, v);
            from = e;
        } else if let Some((_, (e, v))) = self.m.range_mut(..start).next_back() {
            // A range that straddles `start` keeps its part below `start`
            // in place; its part past `end`, if any, goes back at `end`.
            if *e > start {
                let old_end = std::mem::replace(e, start);
                let v = v.clone();
                if old_end > end {
                    f(start, end, v.clone());
                    self.m.insert(end, (old_end, v));
                    return;
                }
                f(start, old_end, v);
                from = old_end;
            }
        }
        // The ranges that start in `[from, end)`, in order; the last one
        // may reach past `end`.
        while from < end {
            let Some((&s, _)) = self.m.range(from..).next().filter(|(&s, _)| s < end) else {
                return;
            };
            let (e, v) = self.m.remove(&s).expect("key just found");
            if e > end {
                f(s, end, v.clone());
                self.m.insert(end, (e, v));
                return;
            }
            f(s, e, v);
            from = e;
        }
    }

    /// Sets `[start, end)` to `v` (replacing what was there).
    pub fn set(&mut self, start: u64, end: u64, v: V) {
        self.remove_range(start, end);
        self.insert(start, end, v);
    }

    /// Checks order and non-overlap. Panics on a violation.
    pub fn check_invariants(&self) {
        let mut prev_end = 0u64;
        for (i, (&s, (e, _))) in self.m.iter().enumerate() {
            assert!(s < *e, "empty range [{s:#x}, {e:#x})");
            assert!(i == 0 || s >= prev_end, "overlap at {s:#x}");
            prev_end = *e;
        }
    }
}

/// A counted union of ranges. [`CoverMap::add`] and [`CoverMap::remove`]
/// keep, for every elementary segment, how many added ranges cover it; the
/// segments with a count sit in [`CoverMap::index`], an [`AddressMap`], so
/// its gap searches see exactly the union. Segments are not merged: the
/// segment count is at most twice the number of ranges added and live.
/// Each segment is one VMA of the index, so the counts sit in a hash map
/// by start and every ordered question walks the index.
#[derive(Clone, Debug, Default)]
pub struct CoverMap {
    index: AddressMap,
    /// `start -> (end, count)` of every segment.
    counts: HashMap<u64, (u64, u32), MixState>,
}

impl CoverMap {
    /// An empty union.
    pub fn new() -> Self {
        CoverMap::default()
    }

    /// The union as an address map (one VMA per segment).
    pub fn index(&self) -> &AddressMap {
        &self.index
    }

    /// Number of segments.
    pub fn segments(&self) -> usize {
        self.counts.len()
    }

    fn put(&mut self, s: u64, e: u64, c: u32) {
        self.counts.insert(s, (e, c));
        // Cannot overlap: the counts map mirrors the index exactly.
        let r = self.index.insert(s, e, VmaFlags::NONE);
        debug_assert!(r.is_ok(), "cover index out of step: {r:?}");
    }

    /// Takes every segment that intersects `[start, end)` out of the counts
    /// and the index, in order, with its count; the parts of segments that
    /// straddle an edge stay, with their count.
    fn take(&mut self, start: u64, end: u64) -> Vec<(u64, u64, u32)> {
        let old: Vec<(u64, u64, u32)> = self
            .index
            .range(start, end)
            .map(|v| {
                let (e, c) = self
                    .counts
                    .remove(&v.start)
                    .expect("cover index out of step");
                debug_assert_eq!(e, v.end, "cover index out of step");
                (v.start, v.end, c)
            })
            .collect();
        let _ = self.index.unmap(start, end);
        // The unmap leaves the outer parts of straddling segments as VMAs.
        if let Some(&(s, _, c)) = old.first().filter(|x| x.0 < start) {
            self.counts.insert(s, (start, c));
        }
        if let Some(&(_, e, c)) = old.last().filter(|x| x.1 > end) {
            self.counts.insert(end, (e, c));
        }
        old
    }

    /// Adds one cover of `[start, end)` (nothing for an empty range).
    /// O(log n + k) plus O(log n) per segment written.
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The common case: nothing covers any of it yet.
        if self.index.first_overlap(start, end).is_none() {
            self.put(start, end, 1);
            return;
        }
        let mut at = start;
        for (s, e, c) in self.take(start, end) {
            let (s, e) = (s.max(start), e.min(end));
            if at < s {
                self.put(at, s, 1);
            }
            self.put(s, e, c + 1);
            at = e;
        }
        if at < end {
            self.put(at, end, 1);
        }
    }

    /// The lowest or highest aligned range of `req` that no added range
    /// covers ([`AddressMap::allocate`] on the union), added once. One
    /// descent of the index for the search and the insertion.
    pub fn allocate(&mut self, req: &FitRequest, params: &SearchParams) -> Result<u64, FitError> {
        let a = self.index.allocate(req, params, VmaFlags::NONE)?;
        self.counts.insert(a, (a + req.length, 1));
        Ok(a)
    }

    /// Removes one cover of `[start, end)`, which must have been added.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The common case: one segment `[start, end)` covered once.
        if self.counts.get(&start) == Some(&(end, 1)) {
            self.counts.remove(&start);
            let r = self.index.unmap(start, end);
            debug_assert!(r.is_ok(), "cover index out of step: {r:?}");
            return;
        }
        let mut at = start;
        for (s, e, c) in self.take(start, end) {
            let (s, e) = (s.max(start), e.min(end));
            debug_assert_eq!(s, at, "removing an uncovered range at {at:#x}");
            if c > 1 {
                self.put(s, e, c - 1);
            }
            at = e;
        }
        debug_assert_eq!(at, end, "removing an uncovered range up to {end:#x}");
    }

    /// The union as maximal disjoint ranges, merged (O(n); for checks).
    pub fn union(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for v in self.index.iter() {
            match out.last_mut() {
                Some(last) if last.1 == v.start => last.1 = v.end,
                _ => out.push((v.start, v.end)),
            }
        }
        out
    }

    /// Checks the index against the counts. Panics on a violation.
    pub fn check_invariants(&self) {
        self.index.check_invariants();
        assert_eq!(self.index.len(), self.counts.len(), "cover index size");
        for v in self.index.iter() {
            let (s, e) = (v.start, v.end);
            let (ce, c) = self
                .counts
                .get(&s)
                .copied()
                .expect("segment without a count");
            assert_eq!(ce, e, "cover index segment [{s:#x}, {e:#x})");
            assert!(c > 0, "zero-count segment [{s:#x}, {e:#x})");
        }
    }
}

/// Merges a list of ranges into their union: sorted, disjoint, with
/// overlapping and adjacent ranges joined; empty ranges (`start >= end`)
/// are dropped. O(n log n).
pub fn union_of(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|r| r.0 < r.1);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The union of `ranges` ([`union_of`]) as an [`AddressMap`], one VMA
/// (flags [`VmaFlags::NONE`]) per maximal range: its holes are exactly the
/// addresses no input range covers, so [`AddressMap::find_fit`] on it finds
/// a range free in every input at once. O(n log n).
pub fn union_map(ranges: impl IntoIterator<Item = (u64, u64)>) -> AddressMap {
    let mut map = AddressMap::new();
    for (s, e) in union_of(ranges.into_iter().collect()) {
        // The merged ranges are disjoint and non-empty, so this cannot fail.
        let r = map.insert(s, e, VmaFlags::NONE);
        debug_assert!(r.is_ok(), "union ranges overlap: {r:?}");
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_of_merges_overlapping_and_adjacent_ranges() {
        let u = union_of(vec![
            (0x50, 0x60),
            (0x10, 0x20),
            (0x18, 0x30),
            (0x30, 0x40),
            (0x70, 0x70),
            (0x90, 0x80),
        ]);
        assert_eq!(u, [(0x10, 0x40), (0x50, 0x60)]);
        assert_eq!(union_of(Vec::new()), []);
    }

    #[test]
    fn union_map_holes_are_free_in_every_input() {
        let m = union_map([(0x1000, 0x3000), (0x2000, 0x5000), (0x8000, 0x9000)]);
        let got: Vec<(u64, u64)> = m.iter().map(|v| (v.start, v.end)).collect();
        assert_eq!(got, [(0x1000, 0x5000), (0x8000, 0x9000)]);
        m.check_invariants();
        // The same union as a CoverMap built range by range.
        let mut c = CoverMap::new();
        for (s, e) in [(0x1000, 0x3000), (0x2000, 0x5000), (0x8000, 0x9000)] {
            c.add(s, e);
        }
        assert_eq!(c.union(), got);
        assert!(union_map([]).is_empty());
    }
}
