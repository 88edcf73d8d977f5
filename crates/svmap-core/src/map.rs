//! [`AddressMap`]: an ordered map of VMAs with O(log n) gap search.
//!
//! # Bounds
//!
//! `n` is the number of VMAs, `k` the number of VMAs an operation removes or
//! splits. The tree is a B+tree (`btree.rs`) with 32 VMAs per leaf, 16
//! children per inner node and every node but the root at least half full,
//! so its height is at most `1 + log_8(n / 16)` and the bounds are worst
//! case:
//!
//! | operation | cost |
//! | --- | --- |
//! | [`AddressMap::insert`] | O(log n) |
//! | [`AddressMap::unmap`] | O(log n + k): subtrees inside the range are released whole |
//! | lookups ([`AddressMap::find_vma`], [`AddressMap::vma_at`], ...) | O(log n) |
//! | one descent of the hole search | O(log n) |
//! | [`AddressMap::unmapped_area`] | O(log n) per descent; one descent plus one per guard-gap retry, exactly where the kernel retries |
//! | [`AddressMap::find_fit`] | O(log n) for page, 64 KiB and 2 MiB alignment (cached aligned rooms); otherwise O(log n) per candidate hole |
//! | [`AddressMap::allocate`] | `find_fit`, then the insert into the leaf the search stopped in: no second descent unless the hole lies between two leaves or the leaf is full |
//! | [`AddressMap::iter`] | O(1) amortised per VMA |
//!
//! Why one descent is O(log n): a subtree whose internal holes all lie inside
//! the search window and whose largest hole is long enough always contains an
//! answer, so the search enters at most one such subtree and finishes in it;
//! every other subtree it enters straddles one of the two window edges, and
//! there are at most two such root-to-leaf paths. Each node visited costs
//! O(16) comparisons over arrays of per-child aggregates.

use alloc::vec::Vec;
use core::fmt;

use crate::btree::{room, BTree, Inner, Pos, Track, ROOM_SHIFTS};

/// Flags of a VMA. Only the guard-gap kinds affect the search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmaFlags(pub u8);

impl VmaFlags {
    /// No flags.
    pub const NONE: VmaFlags = VmaFlags(0);
    /// `VM_GROWSDOWN`: a stack; nothing may be placed in the
    /// `stack_guard_gap` below it by a non-fixed search.
    pub const GROWSDOWN: VmaFlags = VmaFlags(1);
    /// `VM_GROWSUP` (parisc only): a guard gap above the VMA. Ignored unless
    /// [`SearchParams::growsup_guard`] is set, as on x86 where the flag does
    /// not exist.
    pub const GROWSUP: VmaFlags = VmaFlags(2);

    /// True if every flag of `other` is set in `self`.
    pub fn contains(self, other: VmaFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One mapped range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vma {
    /// First byte (inclusive).
    pub start: u64,
    /// One past the last byte (exclusive). Always `> start`.
    pub end: u64,
    /// Guard-gap kind and other flags.
    pub flags: VmaFlags,
}

/// Errors of the map layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range `[start, end)` is empty or inverted.
    EmptyRange {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
    },
    /// The range overlaps an existing VMA (nothing was changed).
    Overlap {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// The lowest existing VMA that overlaps.
        existing: Vma,
    },
    /// The map already holds the maximum number of VMAs (`u32::MAX - 1`).
    TooManyVmas,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::EmptyRange { start, end } => {
                write!(f, "empty or inverted range [{start:#x}, {end:#x})")
            }
            MapError::Overlap {
                start,
                end,
                existing,
            } => write!(
                f,
                "[{start:#x}, {end:#x}) overlaps the VMA [{:#x}, {:#x})",
                existing.start, existing.end
            ),
            MapError::TooManyVmas => write!(f, "the map holds the maximum number of VMAs"),
        }
    }
}

impl core::error::Error for MapError {}

/// Parameters of the kernel that the search depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchParams {
    /// The kernel-internal `mmap_min_addr`: the search never returns
    /// anything below it (`low = max(low_limit, mmap_min_addr)`).
    pub mmap_min_addr: u64,
    /// `stack_guard_gap` in bytes (Linux default: 256 pages = 1 MiB).
    pub stack_guard_gap: u64,
    /// Honour `VM_GROWSUP` guard gaps above VMAs (parisc). False on x86.
    pub growsup_guard: bool,
    /// The page size, used only for the clamp of `vm_end_gap`.
    pub page_size: u64,
}

impl Default for SearchParams {
    /// x86-64 Linux defaults: floor 64 KiB, 1 MiB stack guard gap.
    fn default() -> Self {
        SearchParams {
            mmap_min_addr: 0x10000,
            stack_guard_gap: 0x10_0000,
            growsup_guard: false,
            page_size: 0x1000,
        }
    }
}

/// A maximal free run `[start, last]` (inclusive) and its neighbours.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hole {
    pub start: u64,
    pub last: u64,
    /// The VMA just below, if any.
    pub prev: Option<Vma>,
    /// The VMA just above, if any.
    pub next: Option<Vma>,
}

/// What lets a search skip a subtree: its largest hole is shorter than
/// `size`, or (for an aligned exact fit) its largest room for an alignment
/// class is shorter than the length. Both are necessary conditions for a
/// fit, so skipping never loses an answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prune {
    /// Raw hole length needed.
    pub size: u64,
    /// `(class, length)`: the subtree's room for alignment class `class`
    /// must be at least `length`.
    pub class: Option<(usize, u64)>,
}

impl Prune {
    /// Prune on the raw hole length only.
    pub fn size(size: u64) -> Self {
        Prune { size, class: None }
    }

    /// True unless the single hole `[gs, ge]` (inclusive) is known to hold
    /// no class-aligned range of the length.
    #[inline]
    fn admits_hole(&self, gs: u64, ge: u64) -> bool {
        self.class
            .is_none_or(|(c, l)| ge == u64::MAX || room(gs, ge + 1, ROOM_SHIFTS[c]) >= l)
    }

    #[inline]
    fn admits_child(&self, node: &Inner, i: usize) -> bool {
        node.max_gap[i] >= self.size && self.class.is_none_or(|(c, l)| node.room[c][i] >= l)
    }
}

/// The fixed arguments of a hole walk: the window `[lo, hi]` (inclusive)
/// and what prunes.
struct Walk {
    lo: u64,
    hi: u64,
    prune: Prune,
}

/// True if `[max(gs, lo), min(ge, hi)]` holds at least `size >= 1` indices.
#[inline]
fn clipped_fits(gs: u64, ge: u64, lo: u64, hi: u64, size: u64) -> bool {
    let s = gs.max(lo);
    let e = ge.min(hi);
    s <= e && e - s >= size - 1
}

/// An ordered map of non-overlapping VMAs with the largest gap of every
/// subtree cached, so that gap searches skip whole subtrees.
#[derive(Clone, Debug, Default)]
pub struct AddressMap {
    pub(crate) t: BTree,
}

impl AddressMap {
    /// An empty address space.
    pub fn new() -> Self {
        AddressMap { t: BTree::new() }
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// True if nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.t.len() == 0
    }

    /// Removes every VMA.
    pub fn clear(&mut self) {
        self.t = BTree::new();
    }

    /// Bytes of heap the map holds (its node arenas).
    pub fn heap_bytes(&self) -> usize {
        self.t.heap_bytes()
    }

    /// Number of levels of the tree (1 for a single leaf).
    pub fn depth(&self) -> usize {
        self.t.height as usize + 1
    }

    #[inline]
    pub(crate) fn vma_at_pos(&self, p: Pos) -> Vma {
        let l = self.t.leaf(p.leaf);
        let i = p.slot as usize;
        Vma {
            start: l.start[i],
            end: l.end[i],
            flags: VmaFlags(l.flags[i]),
        }
    }

    fn opt_vma(&self, p: Option<Pos>) -> Option<Vma> {
        p.map(|p| self.vma_at_pos(p))
    }

    /// The first VMA with `end > addr`: the kernel's `find_vma()`. It may
    /// contain `addr` or lie above it.
    pub fn find_vma(&self, addr: u64) -> Option<Vma> {
        self.opt_vma(self.t.first_ending_after(addr))
    }

    /// The VMA containing `addr`, if any.
    pub fn vma_at(&self, addr: u64) -> Option<Vma> {
        self.find_vma(addr).filter(|v| v.start <= addr)
    }

    /// The last VMA that starts below `addr`.
    pub fn prev_vma(&self, addr: u64) -> Option<Vma> {
        self.opt_vma(self.t.last_starting_before(addr))
    }

    /// The first VMA that starts at or above `addr`.
    pub fn next_vma(&self, addr: u64) -> Option<Vma> {
        self.opt_vma(self.t.first_starting_at_or_after(addr))
    }

    /// The lowest VMA that intersects `[start, end)`, if any
    /// (`find_vma_intersection`).
    pub fn first_overlap(&self, start: u64, end: u64) -> Option<Vma> {
        if end <= start {
            return None;
        }
        self.find_vma(start).filter(|v| v.start < end)
    }

    /// The lowest VMA, if any.
    pub fn first(&self) -> Option<Vma> {
        self.opt_vma(self.t.leftmost(self.t.root, self.t.height))
    }

    /// The highest VMA, if any.
    pub fn last(&self) -> Option<Vma> {
        self.opt_vma(self.t.rightmost(self.t.root, self.t.height))
    }

    /// Inserts the VMA `[start, end)`. Fails without changing anything if the
    /// range is empty or overlaps an existing VMA. O(log n).
    pub fn insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), MapError> {
        if end <= start {
            return Err(MapError::EmptyRange { start, end });
        }
        if self.t.len() >= MAX_VMAS {
            return Err(MapError::TooManyVmas);
        }
        // One descent checks for overlap and inserts; only a failure pays
        // for a second descent to name the VMA in the way.
        self.t
            .insert(start, end, flags.0)
            .map_err(|()| MapError::Overlap {
                start,
                end,
                existing: self
                    .first_overlap(start, end)
                    .expect("insert refused without an overlapping VMA"),
            })
    }

    /// Removes everything mapped in `[start, end)`, splitting the VMAs that
    /// straddle either edge (the pieces keep their flags). Unmapping nothing
    /// is fine. Returns the number of VMAs removed or cut. O(log n + k).
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<usize, MapError> {
        if end < start {
            return Err(MapError::EmptyRange { start, end });
        }
        if end == start {
            return Ok(0);
        }
        // An allocator's free: exactly one VMA, removed in one descent.
        if self.t.remove_exact(start, end) {
            return Ok(1);
        }
        let Some(first) = self.first_overlap(start, end) else {
            return Ok(0);
        };
        if first.end >= end {
            // `first` is the only VMA in the range: trim, split or remove it.
            match (first.start < start, first.end > end) {
                (false, false) => {
                    self.t.remove_starts_in(first.start, first.start + 1);
                }
                (true, false) => self.t.set_bounds(first.start, first.start, start),
                (false, true) => self.t.set_bounds(first.start, end, first.end),
                (true, true) => {
                    if self.t.len() >= MAX_VMAS {
                        return Err(MapError::TooManyVmas);
                    }
                    self.t.set_bounds(first.start, first.start, start);
                    let tail = self.t.insert(end, first.end, first.flags.0);
                    debug_assert!(tail.is_ok(), "the tail of a split VMA overlaps");
                }
            }
            return Ok(1);
        }
        let mut touched = 0;
        if first.start < start {
            // It straddles `start` (and ends inside the range): keep
            // [first.start, start).
            self.t.set_bounds(first.start, first.start, start);
            touched += 1;
        }
        // The highest VMA starting inside the range may reach past its end.
        if let Some(last) = self.prev_vma(end) {
            if last.start >= start && last.end > end {
                self.t.set_bounds(last.start, end, last.end);
                touched += 1;
            }
        }
        touched += self.t.remove_starts_in(start, end);
        Ok(touched)
    }

    /// Iterates over the VMAs in address order.
    pub fn iter(&self) -> Iter<'_> {
        Iter::seek(self, 0)
    }

    /// Iterates over the VMAs that intersect `[start, end)`, in address
    /// order, starting with an O(log n) descent.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = Vma> + '_ {
        let end = end.max(start); // an empty or inverted range is empty
        Iter::seek(self, start).take_while(move |v| v.start < end && start < end)
    }

    // ----- hole search primitives -------------------------------------

    fn hole_between(&self, prev: Option<Pos>, next: Option<Pos>) -> Hole {
        let prev = self.opt_vma(prev);
        let next = self.opt_vma(next);
        Hole {
            start: prev.map_or(0, |v| v.end),
            last: next.map_or(u64::MAX, |v| v.start - 1),
            prev,
            next,
        }
    }

    /// The lowest hole whose part inside `[lo, hi]` (inclusive) holds at
    /// least `size >= 1` indices: the maple tree's `mas_empty_area` without
    /// its argument checks. `f` may reject a hole; the walk then goes on to
    /// the next candidate in address order and returns `f`'s first answer.
    pub(crate) fn walk_low<R>(
        &self,
        lo: u64,
        hi: u64,
        prune: Prune,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let size = prune.size;
        let t = &self.t;
        let Some((min_start, max_end)) = t.root_span() else {
            if !clipped_fits(0, u64::MAX, lo, hi, size) {
                return None;
            }
            path.offer_other_hole();
            return f(self, self.hole_between(None, None));
        };
        if min_start > 0 && clipped_fits(0, min_start - 1, lo, hi, size) {
            let h = self.hole_between(None, t.leftmost(t.root, t.height));
            path.offer_other_hole();
            if let Some(r) = f(self, h) {
                return Some(r);
            }
        }
        if clipped_fits(min_start, max_end - 1, lo, hi, size) {
            let w = Walk { lo, hi, prune };
            // The whole map inside the window (an allocator's usual case):
            // no hole anywhere needs clipping.
            let inside = lo <= min_start && max_end - 1 <= hi;
            if let Some(r) = self.low_rec(t.root, t.height, &w, inside, path, f) {
                return Some(r);
            }
        }
        if clipped_fits(max_end, u64::MAX, lo, hi, size) {
            let h = self.hole_between(t.rightmost(t.root, t.height), None);
            path.offer_other_hole();
            return f(self, h);
        }
        None
    }

    /// The holes of subtree `id` at `level`, lowest first; `inside`: the
    /// whole map lies inside the window, so no hole needs clipping.
    fn low_rec<R>(
        &self,
        id: u32,
        level: u32,
        w: &Walk,
        inside: bool,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        path.visit();
        let (lo, hi, prune, size) = (w.lo, w.hi, w.prune, w.prune.size);
        if level == 0 {
            let l = self.t.leaf(id);
            let n = l.len as usize;
            if inside && prune.class.is_none() {
                // The whole leaf lies in the window and only the length
                // matters: a hole fits iff it is long enough.
                for i in 1..n {
                    if l.start[i] - l.end[i - 1] >= size {
                        if let Some(r) = self.offer_leaf_hole(id, i, path, f) {
                            return Some(r);
                        }
                    }
                }
                return None;
            }
            for i in 1..n {
                let (gs, next) = (l.end[i - 1], l.start[i]);
                if gs > hi {
                    break;
                }
                if gs < next
                    && clipped_fits(gs, next - 1, lo, hi, size)
                    && prune.admits_hole(gs, next - 1)
                {
                    if let Some(r) = self.offer_leaf_hole(id, i, path, f) {
                        return Some(r);
                    }
                }
            }
            return None;
        }
        let node = self.t.inner(id);
        for i in 0..node.len as usize {
            if i > 0 {
                let gs = node.max_end[i - 1];
                if gs > hi {
                    break;
                }
                let next = node.min_start[i];
                let fits = if inside {
                    next - gs >= size
                } else {
                    gs < next && clipped_fits(gs, next - 1, lo, hi, size)
                };
                if fits && prune.admits_hole(gs, next - 1) {
                    if let Some(r) = self.offer_boundary_hole(node, i, level, path, f) {
                        return Some(r);
                    }
                }
            }
            if !prune.admits_child(node, i) {
                continue;
            }
            let (cs, ce) = (node.min_start[i], node.max_end[i] - 1);
            if inside || clipped_fits(cs, ce, lo, hi, size) {
                path.enter(level, id, i);
                if let Some(r) = self.low_rec(node.child[i], level - 1, w, inside, path, f) {
                    return Some(r);
                }
            }
        }
        None
    }

    /// Offers `f` the hole below slot `i` of leaf `id`.
    #[inline]
    fn offer_leaf_hole<R>(
        &self,
        id: u32,
        i: usize,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let h = self.hole_between(
            Some(Pos {
                leaf: id,
                slot: i as u32 - 1,
            }),
            Some(Pos {
                leaf: id,
                slot: i as u32,
            }),
        );
        path.offer_leaf_hole(id, i);
        f(self, h)
    }

    /// Offers `f` the hole between children `i - 1` and `i` of `node`.
    fn offer_boundary_hole<R>(
        &self,
        node: &Inner,
        i: usize,
        level: u32,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let h = self.hole_between(
            self.t.rightmost(node.child[i - 1], level - 1),
            self.t.leftmost(node.child[i], level - 1),
        );
        path.offer_other_hole();
        f(self, h)
    }

    /// The mirror image of [`Self::walk_low`]: candidate holes from the
    /// highest down (`mas_empty_area_rev`).
    pub(crate) fn walk_high<R>(
        &self,
        lo: u64,
        hi: u64,
        prune: Prune,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let size = prune.size;
        let t = &self.t;
        let Some((min_start, max_end)) = t.root_span() else {
            if !clipped_fits(0, u64::MAX, lo, hi, size) {
                return None;
            }
            path.offer_other_hole();
            return f(self, self.hole_between(None, None));
        };
        if clipped_fits(max_end, u64::MAX, lo, hi, size) {
            let h = self.hole_between(t.rightmost(t.root, t.height), None);
            path.offer_other_hole();
            if let Some(r) = f(self, h) {
                return Some(r);
            }
        }
        if clipped_fits(min_start, max_end - 1, lo, hi, size) {
            let w = Walk { lo, hi, prune };
            let inside = lo <= min_start && max_end - 1 <= hi;
            if let Some(r) = self.high_rec(t.root, t.height, &w, inside, path, f) {
                return Some(r);
            }
        }
        if min_start > 0 && clipped_fits(0, min_start - 1, lo, hi, size) {
            let h = self.hole_between(None, t.leftmost(t.root, t.height));
            path.offer_other_hole();
            return f(self, h);
        }
        None
    }

    fn high_rec<R>(
        &self,
        id: u32,
        level: u32,
        w: &Walk,
        inside: bool,
        path: &mut impl Track,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        path.visit();
        let (lo, hi, prune, size) = (w.lo, w.hi, w.prune, w.prune.size);
        if level == 0 {
            let l = self.t.leaf(id);
            let n = l.len as usize;
            if inside && prune.class.is_none() {
                for i in (1..n).rev() {
                    if l.start[i] - l.end[i - 1] >= size {
                        if let Some(r) = self.offer_leaf_hole(id, i, path, f) {
                            return Some(r);
                        }
                    }
                }
                return None;
            }
            for i in (1..n).rev() {
                let (gs, next) = (l.end[i - 1], l.start[i]);
                if next <= lo {
                    break;
                }
                if gs < next
                    && clipped_fits(gs, next - 1, lo, hi, size)
                    && prune.admits_hole(gs, next - 1)
                {
                    if let Some(r) = self.offer_leaf_hole(id, i, path, f) {
                        return Some(r);
                    }
                }
            }
            return None;
        }
        let node = self.t.inner(id);
        for i in (0..node.len as usize).rev() {
            if prune.admits_child(node, i) {
                let (cs, ce) = (node.min_start[i], node.max_end[i] - 1);
                if inside || clipped_fits(cs, ce, lo, hi, size) {
                    path.enter(level, id, i);
                    if let Some(r) = self.high_rec(node.child[i], level - 1, w, inside, path, f) {
                        return Some(r);
                    }
                }
            }
            if i > 0 {
                let next = node.min_start[i];
                if next <= lo {
                    break;
                }
                let gs = node.max_end[i - 1];
                let fits = if inside {
                    next - gs >= size
                } else {
                    gs < next && clipped_fits(gs, next - 1, lo, hi, size)
                };
                if fits && prune.admits_hole(gs, next - 1) {
                    if let Some(r) = self.offer_boundary_hole(node, i, level, path, f) {
                        return Some(r);
                    }
                }
            }
        }
        None
    }

    /// The kernel's `vm_start_gap()`: the start minus the guard below a
    /// grows-down VMA, saturating at 0.
    #[inline]
    pub(crate) fn start_gap_of(v: &Vma, p: &SearchParams) -> u64 {
        if v.flags.contains(VmaFlags::GROWSDOWN) {
            v.start.saturating_sub(p.stack_guard_gap)
        } else {
            v.start
        }
    }

    /// The kernel's `vm_end_gap()`: the end plus the guard above a grows-up
    /// VMA (only with [`SearchParams::growsup_guard`]), clamped to
    /// `-page_size` on overflow.
    #[inline]
    pub(crate) fn end_gap_of(v: &Vma, p: &SearchParams) -> u64 {
        if p.growsup_guard && v.flags.contains(VmaFlags::GROWSUP) {
            let e = v.end.wrapping_add(p.stack_guard_gap);
            if e < v.end {
                p.page_size.wrapping_neg()
            } else {
                e
            }
        } else {
            v.end
        }
    }

    /// True if the VMA has a start guard (`VM_STARTGAP_FLAGS`).
    #[inline]
    pub(crate) fn has_start_gap(v: &Vma) -> bool {
        v.flags.contains(VmaFlags::GROWSDOWN)
    }

    /// Recomputes every cached aggregate from scratch and checks order,
    /// non-overlap, node fill, the free lists and the counts. Panics with a
    /// dump of the tree on any violation. For tests and fuzzing.
    pub fn check_invariants(&self) {
        crate::check::check(self);
    }
}

/// At most this many VMAs (node ids are `u32`).
pub(crate) const MAX_VMAS: usize = (u32::MAX as usize / 2) * crate::btree::MIN;

/// In-order iterator over the VMAs of an [`AddressMap`].
pub struct Iter<'a> {
    map: &'a AddressMap,
    /// Inner nodes on the path and the index of the child being visited.
    path: Vec<(u32, u32)>,
    leaf: u32,
    slot: u32,
}

impl<'a> Iter<'a> {
    /// Positioned at the first VMA with `end > addr`.
    fn seek(map: &'a AddressMap, addr: u64) -> Self {
        let t = &map.t;
        let mut path = Vec::with_capacity(t.height as usize);
        let (mut id, mut level) = (t.root, t.height);
        while level > 0 {
            let node = t.inner(id);
            let n = node.len as usize;
            let mut i = 0;
            while i < n && node.max_end[i] <= addr {
                i += 1;
            }
            if i == n {
                // Nothing ends above addr: an exhausted iterator.
                return Iter {
                    map,
                    path: Vec::new(),
                    leaf: t.root,
                    slot: u32::MAX,
                };
            }
            path.push((id, i as u32));
            id = node.child[i];
            level -= 1;
        }
        let leaf = t.leaf(id);
        let mut slot = 0;
        while slot < leaf.len && leaf.end[slot as usize] <= addr {
            slot += 1;
        }
        Iter {
            map,
            path,
            leaf: id,
            slot,
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Vma;
    fn next(&mut self) -> Option<Vma> {
        let t = &self.map.t;
        if self.slot == u32::MAX {
            return None;
        }
        loop {
            if self.slot < t.leaf(self.leaf).len {
                let v = self.map.vma_at_pos(Pos {
                    leaf: self.leaf,
                    slot: self.slot,
                });
                self.slot += 1;
                return Some(v);
            }
            // Climb to the first ancestor with a next child, then descend
            // to its leftmost leaf.
            loop {
                let Some((id, i)) = self.path.pop() else {
                    self.slot = u32::MAX;
                    return None;
                };
                if i + 1 < t.inner(id).len {
                    self.path.push((id, i + 1));
                    let mut child = t.inner(id).child[i as usize + 1];
                    let mut level = t.height - self.path.len() as u32;
                    while level > 0 {
                        self.path.push((child, 0));
                        child = t.inner(child).child[0];
                        level -= 1;
                    }
                    self.leaf = child;
                    self.slot = 0;
                    break;
                }
            }
        }
    }
}

impl<'a> IntoIterator for &'a AddressMap {
    type Item = Vma;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}
