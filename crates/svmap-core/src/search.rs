//! The gap searches: the kernel's `unmapped_area()` /
//! `unmapped_area_topdown()` to the bit, and an exact aligned fit.
//!
//! The kernel-exact search follows `docs/linux-semantics.md` (the
//! maple-tree era, Linux 6.1 and later, with `start_gap` from 6.10): it pads
//! the length by `align_mask + start_gap`, finds the lowest (highest) raw
//! hole that holds the padded length inside the window, aligns inside it,
//! and re-checks the guard gap of the VMA above the hole, searching again
//! with a narrowed window when the guard is violated.

use core::fmt;

use crate::btree::{Path, Track, NCLASS, ROOM_SHIFTS};
use crate::map::{AddressMap, Prune, SearchParams, VmaFlags, MAX_VMAS};

/// A gap-search request: the kernel's `struct vm_unmapped_area_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmappedAreaInfo {
    /// `VM_UNMAPPED_AREA_TOPDOWN`: highest fit first.
    pub topdown: bool,
    /// Length of the mapping in bytes.
    pub length: u64,
    /// Lowest acceptable start (inclusive; raised to `mmap_min_addr`).
    pub low_limit: u64,
    /// The mapping must end at or below this address (exclusive).
    pub high_limit: u64,
    /// With a contiguous mask (`2^k - 1`, what every kernel caller
    /// passes), the result satisfies `addr & align_mask == align_offset &
    /// align_mask`. Any other mask is accepted, as the kernel accepts it,
    /// and the result is what the kernel's arithmetic gives (bottom-up
    /// `gap + ((align_offset - gap) & align_mask)`, top-down
    /// `gap - ((gap - align_offset) & align_mask)`, both wrapping), which
    /// need not satisfy the congruence; the hole must still hold the
    /// padded length `length + align_mask + start_gap`.
    pub align_mask: u64,
    /// See `align_mask`.
    pub align_offset: u64,
    /// A guard the new mapping leaves below itself (shadow stacks).
    pub start_gap: u64,
}

/// True if `mask` is `2^k - 1` for some `k` (0 included): an alignment
/// minus one, for which the search's result satisfies the congruence of
/// [`UnmappedAreaInfo::align_mask`].
pub(crate) const fn mask_is_contiguous(mask: u64) -> bool {
    mask & mask.wrapping_add(1) == 0
}

/// Why a search found nothing. The kernel answers all of these with
/// `-ENOMEM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchError {
    /// `length + align_mask + start_gap` wrapped past 2^64.
    LengthOverflow,
    /// The window `[max(low_limit, mmap_min_addr), high_limit)` is empty or
    /// shorter than the padded length, or the length is zero (a trace's `find`
    /// answers `ENOMEM` for all three; the kernel is never asked for a zero length).
    EmptyWindow,
    /// No hole in the window is large enough.
    NoSpace,
    /// The guard-gap retries did not make progress. The kernel would loop
    /// forever here (only reachable with `mmap_min_addr == 0` and a
    /// grows-down VMA within `stack_guard_gap` of address 0); svmap stops.
    RetryLimit,
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchError::LengthOverflow => "length plus alignment padding overflows 64 bits",
            SearchError::EmptyWindow => "the search window is empty or shorter than the length",
            SearchError::NoSpace => "no free gap of that length in the window",
            SearchError::RetryLimit => "guard-gap retries made no progress",
        })
    }
}

impl core::error::Error for SearchError {}

/// Counters of one search, for measuring the retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchStats {
    /// Tree descents: 1 plus one per guard-gap retry.
    pub descents: u32,
    /// Candidate holes examined (the exact fit may examine several).
    pub holes: u32,
    /// Tree nodes (inner nodes and leaves) whose entries a descent scanned,
    /// summed over the descents. A descent of [`AddressMap::unmapped_area`]
    /// scans at most the nodes on the two root-to-leaf paths along the
    /// window's edges and on the path to the answer, so this grows with the
    /// tree's depth, not with the number of VMAs.
    pub nodes: u32,
    /// [`AddressMap::allocate`] only: inserts that split a hole holding one
    /// of its leaf's maxima (largest hole or aligned room), so the leaf's
    /// maxima were recomputed and carried up the path.
    pub rescans: u32,
}

/// An exact-fit request: the lowest (or highest) aligned `[addr, addr +
/// length)` that really fits, without the kernel's worst-case padding.
///
/// # Boundary
///
/// [`AddressMap::find_fit_nocross`] and [`AddressMap::allocate_nocross`]
/// take a request and a **boundary** `B`: 0 for none (then they answer
/// exactly as [`AddressMap::find_fit`] and [`AddressMap::allocate`]), or a
/// power of two, and the placement `[addr, addr + length)` must then not
/// cross a multiple of `B`: it lies inside one block `[k * B, (k + 1) *
/// B)`. This is Mesa's `util_vma_heap` `nospan_minimum`, vmem's `nocross`
/// and a DMA segment boundary. The search finds the lowest (highest)
/// such placement exactly, with every other rule of the request (window,
/// alignment and offset, guard gaps) unchanged.
///
/// Every start congruent to `align_offset` modulo `align` has an offset
/// inside its block of at least `r = align_offset mod min(align, B)`, so a
/// request with `r + length > B` (in particular `length > B`) has no
/// placement anywhere: it is refused with
/// [`NoCrossError::BoundaryTooSmall`] before any search, not answered
/// with "no space". With `align >= B` every aligned start has the same
/// offset `r` in its block, so a request that passes that check needs
/// nothing more. (Mesa lets an allocation longer than its boundary cross
/// it; such a caller passes a boundary only for lengths up to it.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitRequest {
    /// Length in bytes (> 0).
    pub length: u64,
    /// Lowest acceptable start (inclusive).
    pub low: u64,
    /// Highest acceptable end (exclusive); `[addr, addr + length)` lies
    /// inside `[low, high)`.
    pub high: u64,
    /// Alignment: a power of two (1 for none).
    pub align: u64,
    /// The result is congruent to `align_offset` modulo `align`.
    pub align_offset: u64,
    /// Highest fit first.
    pub topdown: bool,
    /// Keep out of the guard gap of the hole's upper neighbour if it grows
    /// down (and, with [`SearchParams::growsup_guard`], of its lower
    /// neighbour if it grows up), as the kernel's non-fixed placements do;
    /// see [`AddressMap::find_fit`].
    pub respect_guard_gaps: bool,
}

/// Why [`AddressMap::find_fit`] found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitError {
    /// The length is zero.
    ZeroLength,
    /// The alignment is not a power of two.
    BadAlignment(u64),
    /// The window `[low, high)` is empty or shorter than the length.
    EmptyWindow {
        /// Requested low.
        low: u64,
        /// Requested high.
        high: u64,
    },
    /// No aligned placement fits in the window.
    NoSpace,
    /// [`AddressMap::allocate`] found the map already holding the maximum
    /// number of VMAs.
    TooManyVmas,
    /// [`crate::VaHeap::alloc`] would split a hole of a heap that already
    /// holds [`crate::VaHeap::MAX_HOLES`] holes.
    TooManyHoles,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FitError::ZeroLength => f.write_str("zero length"),
            FitError::BadAlignment(a) => write!(f, "alignment {a:#x} is not a power of two"),
            FitError::EmptyWindow { low, high } => {
                write!(f, "window [{low:#x}, {high:#x}) is empty or too short")
            }
            FitError::NoSpace => f.write_str("no aligned placement fits in the window"),
            FitError::TooManyVmas => f.write_str("the map holds the maximum number of VMAs"),
            FitError::TooManyHoles => f.write_str("the heap holds the maximum number of holes"),
        }
    }
}

impl core::error::Error for FitError {}

/// Why [`AddressMap::find_fit_nocross`] or [`AddressMap::allocate_nocross`]
/// found nothing: the failures of the plain fit, and the two of a bad
/// boundary. The checks run in this order: length, alignment, boundary,
/// boundary against length, window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoCrossError {
    /// The request fails as [`AddressMap::find_fit`] (or
    /// [`AddressMap::allocate`]) fails.
    Fit(FitError),
    /// The boundary is neither 0 nor a power of two.
    BadBoundary(u64),
    /// Every start the alignment allows lies at least `offset` bytes into
    /// its block of `boundary` bytes, and `offset + length > boundary`: no
    /// placement of the length avoids crossing a multiple of the boundary,
    /// whatever the map holds. `offset` is `align_offset mod min(align,
    /// boundary)`, 0 for the usual request, where this means `length >
    /// boundary`.
    BoundaryTooSmall {
        /// Requested length.
        length: u64,
        /// Requested boundary.
        boundary: u64,
        /// The least offset of an aligned start inside its block.
        offset: u64,
    },
}

impl From<FitError> for NoCrossError {
    fn from(e: FitError) -> Self {
        NoCrossError::Fit(e)
    }
}

impl fmt::Display for NoCrossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoCrossError::Fit(e) => e.fmt(f),
            NoCrossError::BadBoundary(b) => {
                write!(f, "boundary {b:#x} is neither 0 nor a power of two")
            }
            NoCrossError::BoundaryTooSmall {
                length,
                boundary,
                offset,
            } => write!(
                f,
                "a length of {length:#x} at an offset of {offset:#x} into a block \
                 crosses every multiple of the boundary {boundary:#x}"
            ),
        }
    }
}

impl core::error::Error for NoCrossError {}

/// The boundary rule of a fit with `align < boundary`, in the form the
/// per-hole search uses: `bm = boundary - 1` and `r = align_offset mod
/// align`, with `r + length <= boundary` checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoCross {
    bm: u64,
    r: u64,
}

/// Checks `boundary` against the request (whose length and alignment are
/// already valid) and returns the rule the search must apply: `None` when
/// nothing constrains the placement beyond the plain fit (no boundary, or
/// `align >= boundary`, where every aligned start sits at the same offset
/// `r` in its block and `r + length <= boundary` was checked).
fn nocross_rule(req: &FitRequest, boundary: u64) -> Result<Option<NoCross>, NoCrossError> {
    if boundary == 0 {
        return Ok(None);
    }
    if !boundary.is_power_of_two() {
        return Err(NoCrossError::BadBoundary(boundary));
    }
    // Both are powers of two, so the smaller divides the larger, and every
    // start `a` congruent to `align_offset` modulo `align` has
    // `a mod g == align_offset mod g` for `g = min(align, boundary)`: its
    // offset in its block is at least `r`, and exactly `r` for the first
    // allowed start of every block (a block start is a multiple of `g`).
    let g = req.align.min(boundary);
    let r = req.align_offset & (g - 1);
    if req.length > boundary || r > boundary - req.length {
        return Err(NoCrossError::BoundaryTooSmall {
            length: req.length,
            boundary,
            offset: r,
        });
    }
    Ok((req.align < boundary).then_some(NoCross {
        bm: boundary - 1,
        r,
    }))
}

/// The lowest start `a` in the usable range `[s, e]` (inclusive, `e - s >=
/// len_m1`) with `a = align_offset (mod mask + 1)`, `a + len_m1 <= e` and,
/// with `nc`, `[a, a + len_m1]` inside one block of `nc.bm + 1` bytes.
///
/// Proof of the boundary step. Let `B = bm + 1`; `align = mask + 1 < B`
/// (else there is no rule), so `align` divides `B`, and `r + len <= B`.
/// Let `a0` be the lowest aligned start `>= s`; if `[a0, a0 + len)` does not
/// fit in the range, no aligned start does. If it stays in `a0`'s block
/// `[b0, b0 + B)` (its offset `a0 & bm` is at most `B - len`), `a0` is the
/// answer. Otherwise every aligned start in `[a0, b0 + B)` has an offset at
/// least `a0`'s and crosses too, and the lowest aligned start of the next
/// block is `a1 = b0 + B + r` (`b0 + B` is a multiple of `align`, and `r <
/// align`), whose range `[a1, a1 + len)` stays in that block because `r +
/// len <= B`. So the answer is `a1` if `a1 + len_m1 <= e`, and there is
/// none otherwise. No sum wraps: `a0 + len_m1 <= e` was checked before
/// `b0 + B <= a0 + len_m1`.
#[inline]
pub(crate) fn lowest_in(
    s: u64,
    e: u64,
    len_m1: u64,
    mask: u64,
    off: u64,
    nc: Option<NoCross>,
) -> Option<u64> {
    // Aligning may leave the range (past 2^64): then it holds no fit.
    let a0 = s.checked_add(off.wrapping_sub(s) & mask)?;
    if a0 > e || e - a0 < len_m1 {
        return None;
    }
    let Some(NoCross { bm, r }) = nc else {
        return Some(a0);
    };
    // `[a0, a0 + len)` stays in its block iff `(a0 & bm) + len <= B`, i.e.
    // `a0 & bm <= bm - len_m1` (`len <= B`, so no wrap).
    if a0 & bm <= bm - len_m1 {
        return Some(a0);
    }
    let a1 = (a0 | bm).checked_add(1)?.checked_add(r)?;
    (a1 <= e && e - a1 >= len_m1).then_some(a1)
}

/// The highest start `a` in the usable range `[s, e]` (inclusive, `e - s >=
/// len_m1`) with `a = align_offset (mod mask + 1)`, `a + len_m1 <= e` and,
/// with `nc`, `[a, a + len_m1]` inside one block of `nc.bm + 1` bytes.
///
/// Proof of the boundary step. With `B`, `align` and `r` as in
/// [`lowest_in`], let `t0` be the highest aligned start with `t0 + len_m1
/// <= e`; if `t0 < s`, no aligned start fits. If `[t0, t0 + len)` stays in
/// `t0`'s block `[b0, b0 + B)`, `t0` is the answer. Otherwise the starts of
/// that block whose range stays in it are those at most `u = b0 + B -
/// len`; the highest aligned one, `t1 = u - ((u - off) & mask)`, is at
/// least `b0 + r` (which is aligned and at most `u`, as `r + len <= B`), so
/// `t1` lies in the same block and below `t0`, and every aligned start in
/// `(t1, t0]` lies in that block above `u` and crosses. So the answer is
/// `t1` if `t1 >= s`, and there is none otherwise.
#[inline]
pub(crate) fn highest_in(
    s: u64,
    e: u64,
    len_m1: u64,
    mask: u64,
    off: u64,
    nc: Option<NoCross>,
) -> Option<u64> {
    let top = e - len_m1;
    // Aligning may leave the range (below 0): then it holds no fit.
    let t0 = top.checked_sub(top.wrapping_sub(off) & mask)?;
    if t0 < s {
        return None;
    }
    let Some(NoCross { bm, .. }) = nc else {
        return Some(t0);
    };
    if t0 & bm <= bm - len_m1 {
        return Some(t0);
    }
    let u = (t0 & !bm) + (bm - len_m1);
    let t1 = u - (u.wrapping_sub(off) & mask);
    (t1 >= s).then_some(t1)
}

/// A [`Track`] that counts the nodes a walk scans and passes everything on.
struct CountNodes<'a, T> {
    inner: &'a mut T,
    nodes: u32,
}

impl<'a, T: Track> CountNodes<'a, T> {
    fn new(inner: &'a mut T) -> Self {
        CountNodes { inner, nodes: 0 }
    }
}

impl<T: Track> Track for CountNodes<'_, T> {
    #[inline]
    fn visit(&mut self) {
        self.nodes += 1;
        self.inner.visit();
    }
    #[inline]
    fn enter(&mut self, level: u32, id: u32, i: usize) {
        self.inner.enter(level, id, i);
    }
    #[inline]
    fn offer_leaf_hole(&mut self, id: u32, i: usize) {
        self.inner.offer_leaf_hole(id, i);
    }
    #[inline]
    fn offer_other_hole(&mut self) {
        self.inner.offer_other_hole();
    }
}

impl AddressMap {
    /// The kernel's `vm_unmapped_area(info)` over this map, to the bit.
    ///
    /// A successful result `addr` satisfies (for windows that do not wrap):
    /// `addr >= max(low_limit, mmap_min_addr)`, `addr + length <= high_limit`,
    /// `addr & align_mask == align_offset & align_mask` (for a contiguous
    /// mask, see [`UnmappedAreaInfo::align_mask`]),
    /// and `[addr - start_gap, addr + length)` is free. Like the kernel it
    /// may skip a hole in which an aligned slot would have fitted: the hole
    /// must hold the padded length `padded = length + align_mask +
    /// start_gap`.
    ///
    /// Guard gaps follow the kernel's rule, which looks only at the two
    /// neighbours of the chosen hole: the VMA just above it when that VMA
    /// grows down, otherwise the VMA just below it when that VMA grows up
    /// (with [`SearchParams::growsup_guard`]). When the rule rejects the
    /// hole, the search retries with the window narrowed past it.
    ///
    /// - Top-down, the result lies below the guard gap of a grows-down VMA
    ///   above the hole: the gap starts at or above the end of the hole
    ///   clipped to the window.
    /// - Bottom-up, the kernel compares the guard gap's start `g` with the
    ///   last byte of the *padded* area and accepts `g >= addr + padded - 1`.
    ///   svmap keeps that comparison literally. With `align_mask` or
    ///   `start_gap` non-zero, `padded - 1 >= length`, so the area
    ///   `[addr, addr + length)` ends at or below `g`. With both zero, an area
    ///   whose last byte is exactly `g` is accepted: it reaches one byte into
    ///   the guard gap. That needs `addr + length - 1` to be a multiple of the
    ///   page when the VMAs, the limits and `stack_guard_gap` are page
    ///   aligned, so it never happens for page-multiple lengths (the only
    ///   lengths the kernel searches for); svmap answers exactly what the
    ///   kernel's code would for the others too.
    /// - A grows-up VMA below the hole (checked only when the VMA above does
    ///   not grow down) has its guard gap end at or below `addr`.
    ///
    /// One deliberate deviation (`docs/linux-semantics.md`): `low_limit >=
    /// high_limit` is [`SearchError::EmptyWindow`] even for `high_limit == 0`,
    /// which the kernel would read as 2^64 (`high_limit - 1` wraps). No
    /// kernel caller passes 0.
    pub fn unmapped_area(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
    ) -> Result<u64, SearchError> {
        self.unmapped_area_stats(info, params, &mut SearchStats::default())
    }

    /// [`Self::unmapped_area`], counting descents into `stats`.
    pub fn unmapped_area_stats(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
        stats: &mut SearchStats,
    ) -> Result<u64, SearchError> {
        if info.low_limit >= info.high_limit || info.length == 0 {
            return Err(SearchError::EmptyWindow);
        }
        // Step 1: the padded length. The kernel tests `length < info.length`
        // after the sum, which catches every wrap its callers can produce
        // (start_gap is 0 or a page, align_mask far below 2^63); svmap
        // checks each addition, so a double wrap is an error too, as
        // the trace format requires ("padding that wraps").
        let length = info
            .length
            .checked_add(info.align_mask)
            .and_then(|l| l.checked_add(info.start_gap))
            .ok_or(SearchError::LengthOverflow)?;
        let low = info.low_limit.max(params.mmap_min_addr);
        if info.topdown {
            self.topdown(info, params, length, low, info.high_limit, stats)
        } else {
            self.bottomup(info, params, length, low, info.high_limit, stats)
        }
    }

    /// `mas_empty_area*`'s argument checks for the window `[low, high - 1]`.
    fn window_ok(low: u64, max: u64, size: u64) -> bool {
        !(low > max || size == 0 || max - low < size - 1)
    }

    // Each retry raises `low` past the VMA above the hole (its guard gap
    // violated) or past the guard gap of the VMA below it; a retry of the
    // second kind that passes no VMA is followed by the answer, in the same
    // hole. So a bottom-up search takes at most len() + 2 descents, exactly
    // the limit, which it never exceeds: the check guards against a broken
    // invariant only (top-down retries can repeat, see
    // SearchError::RetryLimit).
    fn bottomup(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
        length: u64,
        mut low: u64,
        high: u64,
        stats: &mut SearchStats,
    ) -> Result<u64, SearchError> {
        let limit = self.len() as u64 + 2;
        let mut descents = 0u64;
        loop {
            stats.descents += 1;
            descents += 1;
            if descents > limit {
                return Err(SearchError::RetryLimit);
            }
            let max = high.wrapping_sub(1);
            if !Self::window_ok(low, max, length) {
                return Err(SearchError::EmptyWindow);
            }
            let mut no_path = ();
            let mut count = CountNodes::new(&mut no_path);
            let hole = self.walk_low(low, max, Prune::size(length), &mut count, &mut |_, h| {
                Some(h)
            });
            stats.nodes += count.nodes;
            let hole = hole.ok_or(SearchError::NoSpace)?;
            stats.holes += 1;
            let index = hole.start.max(low);
            let mut gap = index.wrapping_add(info.start_gap);
            gap = gap.wrapping_add(info.align_offset.wrapping_sub(gap) & info.align_mask);
            // The kernel checks prev only when next has no start gap.
            if let Some(next) = hole.next.filter(Self::has_start_gap) {
                if Self::start_gap_of(&next, params) < gap.wrapping_add(length).wrapping_sub(1) {
                    low = next.end;
                    continue;
                }
            } else if let Some(prev) = hole.prev {
                let pe = Self::end_gap_of(&prev, params);
                if pe > gap {
                    low = pe;
                    continue;
                }
            }
            // The congruence holds for a contiguous mask (`2^k - 1`); for
            // any other mask the kernel's arithmetic, kept here, need not
            // produce it.
            debug_assert!(
                !mask_is_contiguous(info.align_mask)
                    || gap & info.align_mask == info.align_offset & info.align_mask,
                "unaligned result {gap:#x}"
            );
            debug_assert!(
                index
                    .checked_add(length - 1)
                    .is_none_or(|end| gap >= index && gap + (info.length - 1) <= end),
                "result {gap:#x} outside the found area"
            );
            return Ok(gap);
        }
    }

    fn topdown(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
        length: u64,
        low: u64,
        mut high: u64,
        stats: &mut SearchStats,
    ) -> Result<u64, SearchError> {
        let limit = self.len() as u64 + 2;
        let mut descents = 0u64;
        loop {
            stats.descents += 1;
            descents += 1;
            if descents > limit {
                return Err(SearchError::RetryLimit);
            }
            // A retry may set high to 0; like the kernel, `high - 1` then
            // wraps to the top of the address space.
            let max = high.wrapping_sub(1);
            if !Self::window_ok(low, max, length) {
                return Err(SearchError::EmptyWindow);
            }
            let mut no_path = ();
            let mut count = CountNodes::new(&mut no_path);
            let hole = self.walk_high(low, max, Prune::size(length), &mut count, &mut |_, h| {
                Some(h)
            });
            stats.nodes += count.nodes;
            let hole = hole.ok_or(SearchError::NoSpace)?;
            stats.holes += 1;
            let gap_end = hole.last.min(max).wrapping_add(1);
            let mut gap = gap_end.wrapping_sub(info.length);
            gap = gap.wrapping_sub(gap.wrapping_sub(info.align_offset) & info.align_mask);
            if let Some(next) = hole.next.filter(Self::has_start_gap) {
                let sg = Self::start_gap_of(&next, params);
                if sg < gap_end {
                    high = sg;
                    continue;
                }
            } else if let Some(prev) = hole.prev {
                if Self::end_gap_of(&prev, params) > gap {
                    high = prev.start;
                    continue;
                }
            }
            debug_assert!(
                !mask_is_contiguous(info.align_mask)
                    || gap & info.align_mask == info.align_offset & info.align_mask,
                "unaligned result {gap:#x}"
            );
            return Ok(gap);
        }
    }

    /// The lowest (or, with `topdown`, highest) start `addr` such that
    /// `[addr, addr + length)` lies in `[low, high)`, is free, is congruent
    /// to `align_offset` modulo `align`, and (with `respect_guard_gaps`)
    /// keeps out of the guard gaps of the two VMAs around the hole it lies
    /// in: below the VMA just above the hole if that VMA grows down, above
    /// the VMA just below the hole if that VMA grows up (with
    /// [`SearchParams::growsup_guard`]). Both neighbours are always checked,
    /// and only they: like the kernel's placements, the fit ignores the guard
    /// gap of a grows-down VMA further up even where `stack_guard_gap`
    /// reaches down past the VMAs below it. Unlike
    /// [`Self::unmapped_area`] it needs no worst-case padding: a 2 MiB-aligned
    /// 2 MiB request fits in a 3 MiB hole that happens to contain an aligned
    /// 2 MiB slot, where the kernel requires a 4 MiB - 4 KiB hole.
    ///
    /// Cost: one O(log n) descent when the alignment is at most a page
    /// (for page-granular maps), 64 KiB or 2 MiB, and the offset is a
    /// multiple of it: besides its largest hole, every subtree caches its
    /// largest 64 KiB- and 2 MiB-aligned room, so the walk enters only
    /// subtrees that hold an aligned fit. Other alignments prune with the
    /// largest class that divides them (a necessary condition) and then try
    /// candidate holes in address order, O(log n) each; so do holes cut
    /// short by a stack's guard gap, which the cached values do not know.
    pub fn find_fit(&self, req: &FitRequest, params: &SearchParams) -> Result<u64, FitError> {
        self.find_fit_stats(req, params, &mut SearchStats::default())
    }

    /// [`Self::find_fit`], counting examined holes into `stats`.
    pub fn find_fit_stats(
        &self,
        req: &FitRequest,
        params: &SearchParams,
        stats: &mut SearchStats,
    ) -> Result<u64, FitError> {
        Self::check_fit(req)?;
        self.find_fit_path(req, None, params, stats, &mut ())
    }

    /// [`Self::find_fit`] with a boundary (see [`FitRequest`]): the lowest
    /// (highest) start that satisfies every rule of `req` and whose range
    /// `[addr, addr + length)` does not cross a multiple of `boundary`. A
    /// boundary of 0 is no constraint (the answer is `find_fit`'s); any
    /// other must be a power of two ([`NoCrossError::BadBoundary`]), and
    /// one that no aligned range of the length fits in between two of its
    /// multiples is refused ([`NoCrossError::BoundaryTooSmall`]).
    ///
    /// Cost: the search is `find_fit`'s, pruned by the same necessary
    /// conditions (hole length, aligned room); each candidate hole is
    /// decided in O(1) (the lowest or highest non-crossing start in a hole
    /// is one correction of the plain answer, see the proofs at
    /// `lowest_in` and `highest_in` in the source). A hole the boundary
    /// alone rejects holds a multiple of `boundary` and is shorter than
    /// `2 * (length + align)`, so the walk tries at most one such hole per
    /// multiple of `boundary` in the window before the answer (none when
    /// `align >= boundary`, where the boundary constrains nothing). The
    /// map caches no per-boundary summary, so no walk can skip those
    /// holes for every boundary: a map of holes that each straddle a
    /// multiple of a small boundary looks, to every cached maximum, like
    /// one whose holes each hold a fit.
    pub fn find_fit_nocross(
        &self,
        req: &FitRequest,
        boundary: u64,
        params: &SearchParams,
    ) -> Result<u64, NoCrossError> {
        self.find_fit_nocross_stats(req, boundary, params, &mut SearchStats::default())
    }

    /// [`Self::find_fit_nocross`], counting examined holes into `stats`.
    pub fn find_fit_nocross_stats(
        &self,
        req: &FitRequest,
        boundary: u64,
        params: &SearchParams,
        stats: &mut SearchStats,
    ) -> Result<u64, NoCrossError> {
        let nc = Self::check_nocross(req, boundary)?;
        Ok(self.find_fit_path(req, nc, params, stats, &mut ())?)
    }

    /// Finds a range as [`Self::find_fit`] does and maps it with `flags`:
    /// an allocator's whole `alloc`. The search records its path to the
    /// hole, so the insert usually needs no second descent (it takes one
    /// only when the hole borders two leaves or the leaf must split).
    /// Returns the start of the new VMA `[addr, addr + req.length)`.
    pub fn allocate(
        &mut self,
        req: &FitRequest,
        params: &SearchParams,
        flags: VmaFlags,
    ) -> Result<u64, FitError> {
        self.allocate_stats(req, params, flags, &mut SearchStats::default())
    }

    /// [`Self::allocate`], counting examined holes into `stats`.
    pub fn allocate_stats(
        &mut self,
        req: &FitRequest,
        params: &SearchParams,
        flags: VmaFlags,
        stats: &mut SearchStats,
    ) -> Result<u64, FitError> {
        Self::check_fit(req)?;
        self.allocate_checked(req, None, params, flags, stats)
    }

    /// Finds a range as [`Self::find_fit_nocross`] does and maps it with
    /// `flags`, as [`Self::allocate`] does.
    pub fn allocate_nocross(
        &mut self,
        req: &FitRequest,
        boundary: u64,
        params: &SearchParams,
        flags: VmaFlags,
    ) -> Result<u64, NoCrossError> {
        self.allocate_nocross_stats(req, boundary, params, flags, &mut SearchStats::default())
    }

    /// [`Self::allocate_nocross`], counting examined holes into `stats`.
    pub fn allocate_nocross_stats(
        &mut self,
        req: &FitRequest,
        boundary: u64,
        params: &SearchParams,
        flags: VmaFlags,
        stats: &mut SearchStats,
    ) -> Result<u64, NoCrossError> {
        let nc = Self::check_nocross(req, boundary)?;
        Ok(self.allocate_checked(req, nc, params, flags, stats)?)
    }

    /// The argument checks of a fit: length, alignment, window.
    pub(crate) fn check_fit(req: &FitRequest) -> Result<(), FitError> {
        Self::check_length_align(req)?;
        Self::check_window(req)
    }

    fn check_length_align(req: &FitRequest) -> Result<(), FitError> {
        if req.length == 0 {
            return Err(FitError::ZeroLength);
        }
        if !req.align.is_power_of_two() {
            return Err(FitError::BadAlignment(req.align));
        }
        Ok(())
    }

    fn check_window(req: &FitRequest) -> Result<(), FitError> {
        if req.high <= req.low || req.high - req.low < req.length {
            return Err(FitError::EmptyWindow {
                low: req.low,
                high: req.high,
            });
        }
        Ok(())
    }

    /// The argument checks of a fit with a boundary, in the documented
    /// order (length, alignment, boundary, boundary against length,
    /// window), and the rule the search applies.
    pub(crate) fn check_nocross(
        req: &FitRequest,
        boundary: u64,
    ) -> Result<Option<NoCross>, NoCrossError> {
        Self::check_length_align(req)?;
        let nc = nocross_rule(req, boundary)?;
        Self::check_window(req)?;
        Ok(nc)
    }

    /// `allocate` after the argument checks.
    fn allocate_checked(
        &mut self,
        req: &FitRequest,
        nc: Option<NoCross>,
        params: &SearchParams,
        flags: VmaFlags,
        stats: &mut SearchStats,
    ) -> Result<u64, FitError> {
        let mut path = Path::default();
        let addr = self.find_fit_path(req, nc, params, stats, &mut path)?;
        if self.t.len() >= MAX_VMAS {
            return Err(FitError::TooManyVmas);
        }
        // The search proved `[addr, addr + length)` free and inside the
        // window, so neither the sum nor the insert can fail.
        let end = addr + req.length;
        match self.t.insert_at_path(&path, addr, end, flags.0) {
            Some(rescanned) => stats.rescans += u32::from(rescanned),
            None => self
                .t
                .insert(addr, end, flags.0)
                .expect("find_fit answered a range that is not free"),
        }
        Ok(addr)
    }

    /// The fit of a checked request (`check_fit` or `check_nocross`), with
    /// the boundary rule `nc`.
    fn find_fit_path(
        &self,
        req: &FitRequest,
        nc: Option<NoCross>,
        params: &SearchParams,
        stats: &mut SearchStats,
        path: &mut impl Track,
    ) -> Result<u64, FitError> {
        let mask = req.align - 1;
        let (lo, hi) = (req.low, req.high - 1);
        let len_m1 = req.length - 1;
        stats.descents += 1;
        let mut fit = |_: &AddressMap, h: crate::map::Hole| -> Option<u64> {
            stats.holes += 1;
            let mut s = h.start.max(lo);
            let mut e = h.last.min(hi);
            if req.respect_guard_gaps {
                if let Some(next) = h.next.filter(AddressMap::has_start_gap) {
                    let sg = AddressMap::start_gap_of(&next, params);
                    if sg == 0 {
                        return None;
                    }
                    e = e.min(sg - 1);
                }
                if let Some(prev) = h.prev {
                    s = s.max(AddressMap::end_gap_of(&prev, params));
                }
            }
            if s > e || e - s < len_m1 {
                return None;
            }
            if req.topdown {
                highest_in(s, e, len_m1, mask, req.align_offset, nc)
            } else {
                lowest_in(s, e, len_m1, mask, req.align_offset, nc)
            }
        };
        // Prune with the largest cached alignment class that divides both
        // the alignment and the offset: every fit is aligned to it, so a
        // subtree whose room for that class is shorter than the length
        // holds no fit. With the class equal to the alignment (64 KiB,
        // 2 MiB, 1 GiB) the pruning is exact and the search one descent.
        let class = (0..NCLASS).rev().find(|&c| {
            let a = 1u64 << ROOM_SHIFTS[c];
            a <= req.align && req.align_offset & (a - 1) == 0
        });
        let prune = Prune {
            size: req.length,
            class: class.map(|c| (c, req.length)),
        };
        let mut count = CountNodes::new(path);
        let found = if req.topdown {
            self.walk_high(lo, hi, prune, &mut count, &mut fit)
        } else {
            self.walk_low(lo, hi, prune, &mut count, &mut fit)
        };
        stats.nodes += count.nodes;
        let addr = found.ok_or(FitError::NoSpace)?;
        debug_assert!(addr >= req.low && addr + len_m1 <= hi);
        debug_assert!((addr.wrapping_sub(req.align_offset)) & mask == 0);
        debug_assert!(nc.is_none_or(|nc| addr & nc.bm <= nc.bm - len_m1));
        debug_assert!(self.first_overlap(addr, addr + req.length).is_none());
        Ok(addr)
    }
}
