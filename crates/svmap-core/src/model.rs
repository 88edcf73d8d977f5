//! A reference model of [`crate::AddressMap`]: a sorted `Vec` of VMAs with
//! linear scans, written to be obviously right rather than fast. Property
//! tests and the fuzz target run random operations on both and compare.
//!
//! The model's search enumerates every hole in address order and applies
//! the rules of `docs/linux-semantics.md` literally.

use alloc::vec::Vec;

use crate::linux::Space;
use crate::map::{MapError, SearchParams, Vma, VmaFlags};
use crate::search::{FitError, FitRequest, NoCrossError, SearchError, UnmappedAreaInfo};

/// A sorted list of VMAs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelMap {
    vmas: Vec<Vma>,
}

/// A hole `[start, last]` with the indices of its neighbours in the list.
#[derive(Clone, Copy, Debug)]
struct Hole {
    start: u64,
    last: u64,
    prev: Option<usize>,
    next: Option<usize>,
}

impl ModelMap {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The VMAs in address order.
    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }

    /// Every hole, lowest first.
    fn holes(&self) -> Vec<Hole> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0; // first free index candidate
        let mut prev = None;
        for (i, v) in self.vmas.iter().enumerate() {
            if v.start > cursor {
                out.push(Hole {
                    start: cursor,
                    last: v.start - 1,
                    prev,
                    next: Some(i),
                });
            }
            cursor = v.end;
            prev = Some(i);
        }
        // The VMA end is at most u64::MAX, so the top hole is never empty.
        out.push(Hole {
            start: cursor,
            last: u64::MAX,
            prev,
            next: None,
        });
        out
    }

    fn start_gap(&self, i: usize, p: &SearchParams) -> u64 {
        let v = self.vmas[i];
        if v.flags.contains(VmaFlags::GROWSDOWN) {
            v.start.saturating_sub(p.stack_guard_gap)
        } else {
            v.start
        }
    }

    fn end_gap(&self, i: usize, p: &SearchParams) -> u64 {
        let v = self.vmas[i];
        if p.growsup_guard && v.flags.contains(VmaFlags::GROWSUP) {
            match v.end.checked_add(p.stack_guard_gap) {
                Some(e) => e,
                None => p.page_size.wrapping_neg(),
            }
        } else {
            v.end
        }
    }

    /// `mas_empty_area(min, max, size)` / `mas_empty_area_rev`: the chosen
    /// hole and the clipped area `[index, last]`.
    fn empty_area(&self, min: u64, max: u64, size: u64, rev: bool) -> Option<(Hole, u64, u64)> {
        if min > max || size == 0 || max - min < size - 1 {
            return None;
        }
        let holes = self.holes();
        let fits = |h: &Hole| {
            let s = h.start.max(min);
            let e = h.last.min(max);
            s <= e && e - s >= size - 1
        };
        let h = if rev {
            *holes.iter().rev().find(|h| fits(h))?
        } else {
            *holes.iter().find(|h| fits(h))?
        };
        if rev {
            let last = h.last.min(max);
            Some((h, last - (size - 1), last))
        } else {
            let index = h.start.max(min);
            Some((h, index, index + (size - 1)))
        }
    }

    /// The kernel's `vm_unmapped_area()`, literally.
    pub fn unmapped_area(
        &self,
        info: &UnmappedAreaInfo,
        p: &SearchParams,
    ) -> Result<u64, SearchError> {
        if info.low_limit >= info.high_limit || info.length == 0 {
            return Err(SearchError::EmptyWindow);
        }
        // The padded length in u128: any wrap past 2^64 is an error.
        let padded = info.length as u128 + info.align_mask as u128 + info.start_gap as u128;
        if padded > u64::MAX as u128 {
            return Err(SearchError::LengthOverflow);
        }
        let length = padded as u64;
        let mut low = info.low_limit.max(p.mmap_min_addr);
        let mut high = info.high_limit;
        for _ in 0..self.vmas.len() + 2 {
            let max = high.wrapping_sub(1);
            let Some((h, index, last)) = self.empty_area(low, max, length, info.topdown) else {
                return Err(if low > max || length == 0 || max - low < length - 1 {
                    SearchError::EmptyWindow
                } else {
                    SearchError::NoSpace
                });
            };
            if info.topdown {
                let gap_end = last.wrapping_add(1);
                let mut gap = gap_end.wrapping_sub(info.length);
                gap = gap.wrapping_sub(gap.wrapping_sub(info.align_offset) & info.align_mask);
                // The kernel checks prev only when next has no start gap.
                let next_guarded = h
                    .next
                    .filter(|&n| self.vmas[n].flags.contains(VmaFlags::GROWSDOWN));
                if let Some(n) = next_guarded {
                    if self.start_gap(n, p) < gap_end {
                        high = self.start_gap(n, p);
                        continue;
                    }
                } else if let Some(pr) = h.prev {
                    if self.end_gap(pr, p) > gap {
                        high = self.vmas[pr].start;
                        continue;
                    }
                }
                return Ok(gap);
            } else {
                let mut gap = index.wrapping_add(info.start_gap);
                gap = gap.wrapping_add(info.align_offset.wrapping_sub(gap) & info.align_mask);
                let next_guarded = h
                    .next
                    .filter(|&n| self.vmas[n].flags.contains(VmaFlags::GROWSDOWN));
                if let Some(n) = next_guarded {
                    if self.start_gap(n, p) < gap.wrapping_add(length).wrapping_sub(1) {
                        low = self.vmas[n].end;
                        continue;
                    }
                } else if let Some(pr) = h.prev {
                    if self.end_gap(pr, p) > gap {
                        low = self.end_gap(pr, p);
                        continue;
                    }
                }
                return Ok(gap);
            }
        }
        Err(SearchError::RetryLimit)
    }

    /// The exact aligned fit, by trying every hole.
    pub fn find_fit(&self, req: &FitRequest, p: &SearchParams) -> Result<u64, FitError> {
        if req.length == 0 {
            return Err(FitError::ZeroLength);
        }
        if !req.align.is_power_of_two() {
            return Err(FitError::BadAlignment(req.align));
        }
        if req.high <= req.low || req.high - req.low < req.length {
            return Err(FitError::EmptyWindow {
                low: req.low,
                high: req.high,
            });
        }
        self.best_fit(req, p, |s, e| Self::fit_in(req, s, e))
            .ok_or(FitError::NoSpace)
    }

    /// The exact aligned fit that does not cross a multiple of `boundary`
    /// (0: none), by trying every hole, and in a hole the pieces its
    /// multiples of `boundary` cut it into.
    pub fn find_fit_nocross(
        &self,
        req: &FitRequest,
        boundary: u64,
        p: &SearchParams,
    ) -> Result<u64, NoCrossError> {
        if req.length == 0 {
            return Err(FitError::ZeroLength.into());
        }
        if !req.align.is_power_of_two() {
            return Err(FitError::BadAlignment(req.align).into());
        }
        if boundary != 0 && !boundary.is_power_of_two() {
            return Err(NoCrossError::BadBoundary(boundary));
        }
        let b = boundary as u128;
        // The offset of the first allowed start of a block: starts are
        // `align_offset + k * align`; modulo the smaller of the two powers
        // of two they all equal `align_offset`, and that is their least
        // possible offset in a block.
        let offset = if boundary == 0 {
            0
        } else {
            req.align_offset % req.align.min(boundary)
        };
        if boundary != 0 && offset as u128 + req.length as u128 > b {
            return Err(NoCrossError::BoundaryTooSmall {
                length: req.length,
                boundary,
                offset,
            });
        }
        if req.high <= req.low || req.high - req.low < req.length {
            return Err(FitError::EmptyWindow {
                low: req.low,
                high: req.high,
            }
            .into());
        }
        let best = self.best_fit(req, p, |s, e| {
            if boundary == 0 || req.align >= boundary {
                // Every aligned start sits `offset` into its block, and
                // `offset + length <= boundary`: nothing crosses.
                return Self::fit_in(req, s, e);
            }
            // Any placement lies in one block, so the lowest (highest) one
            // lies in the lowest (highest) piece of the hole that holds
            // one. A full block holds one (the start `offset` into it), so
            // it is in one of the first (last) two pieces.
            let pieces: Vec<(u128, u128)> = if req.topdown {
                let k = (e - 1) / b; // the block of the last index
                let mut v = Vec::new();
                v.push((s.max(k * b), e));
                if k > 0 && (k * b) > s {
                    v.push((s.max((k - 1) * b), k * b));
                }
                v
            } else {
                let k = s / b + 1; // the first multiple above s
                let mut v = Vec::new();
                v.push((s, e.min(k * b)));
                if k * b < e {
                    v.push((k * b, e.min((k + 1) * b)));
                }
                v
            };
            let fits = pieces
                .iter()
                .filter_map(|&(ps, pe)| Self::fit_in(req, ps, pe));
            if req.topdown {
                fits.max()
            } else {
                fits.min()
            }
        });
        best.ok_or(NoCrossError::Fit(FitError::NoSpace))
    }

    /// The best of `fit(s, e)` over every hole's usable range `[s, e)` (in
    /// `u128`, to keep the model simple): the window, and with
    /// `respect_guard_gaps` the guard gaps of the hole's two neighbours.
    fn best_fit(
        &self,
        req: &FitRequest,
        p: &SearchParams,
        fit: impl Fn(u128, u128) -> Option<u128>,
    ) -> Option<u64> {
        let mut best = None;
        for h in self.holes() {
            let mut s = h.start.max(req.low) as u128;
            let mut e = (h.last as u128 + 1).min(req.high as u128); // exclusive
            if req.respect_guard_gaps {
                if let Some(n) = h.next {
                    e = e.min(self.start_gap(n, p) as u128);
                }
                if let Some(pr) = h.prev {
                    s = s.max(self.end_gap(pr, p) as u128);
                }
            }
            if e <= s {
                continue;
            }
            if let Some(c) = fit(s, e) {
                let c = c as u64;
                best = Some(match best {
                    None => c,
                    Some(b) if req.topdown => c.max(b),
                    Some(b) => c.min(b),
                });
            }
        }
        best
    }

    /// The lowest (highest) start congruent to the offset in `[s, e -
    /// length]`.
    fn fit_in(req: &FitRequest, s: u128, e: u128) -> Option<u128> {
        let len = req.length as u128;
        let a = req.align as u128;
        let off = req.align_offset as u128 % a;
        // Every aligned start congruent to `off` in [s, e - len].
        if e < s + len {
            return None;
        }
        if req.topdown {
            let top = e - len;
            let down = (top + a - off) % a; // distance above an aligned slot
            top.checked_sub(down).filter(|x| *x >= s)
        } else {
            let up = (off + a - s % a) % a;
            Some(s + up).filter(|x| x + len <= e)
        }
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.vmas.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }
}

impl Space for ModelMap {
    fn insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), MapError> {
        if end <= start {
            return Err(MapError::EmptyRange { start, end });
        }
        if let Some(v) = self.vmas.iter().find(|v| v.start < end && start < v.end) {
            return Err(MapError::Overlap {
                start,
                end,
                existing: *v,
            });
        }
        let pos = self.vmas.iter().position(|v| v.start > start);
        let vma = Vma { start, end, flags };
        match pos {
            Some(i) => self.vmas.insert(i, vma),
            None => self.vmas.push(vma),
        }
        Ok(())
    }

    fn unmap(&mut self, start: u64, end: u64) -> Result<usize, MapError> {
        if end < start {
            return Err(MapError::EmptyRange { start, end });
        }
        let mut out = Vec::with_capacity(self.vmas.len() + 1);
        let mut touched = 0;
        for v in &self.vmas {
            if v.end <= start || v.start >= end || start == end {
                out.push(*v);
                continue;
            }
            touched += 1;
            if v.start < start {
                out.push(Vma { end: start, ..*v });
            }
            if v.end > end {
                out.push(Vma { start: end, ..*v });
            }
        }
        self.vmas = out;
        Ok(touched)
    }

    fn find_vma(&self, addr: u64) -> Option<Vma> {
        self.vmas.iter().find(|v| v.end > addr).copied()
    }

    fn unmapped_area(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
    ) -> Result<u64, SearchError> {
        ModelMap::unmapped_area(self, info, params)
    }
}
