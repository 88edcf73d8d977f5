//! [`AddressMap`]: an ordered map of VMAs with O(log n) gap search.
//!
//! # Bounds
//!
//! `n` is the number of VMAs, `k` the number of VMAs an operation removes or
//! splits. The tree is a treap, so the bounds are expected (over the fixed
//! pseudo-random priorities, not over the input):
//!
//! | operation | cost |
//! | --- | --- |
//! | [`AddressMap::insert`] | O(log n) |
//! | [`AddressMap::unmap`] | O(log n + k) |
//! | lookups ([`AddressMap::find_vma`], [`AddressMap::vma_at`], ...) | O(log n) |
//! | one descent of the hole search | O(log n) |
//! | [`AddressMap::unmapped_area`] | O(log n) per descent; one descent plus one per guard-gap retry, exactly where the kernel retries |
//! | [`AddressMap::find_fit`] | O(log n) per candidate hole; see its documentation |
//! | [`AddressMap::iter`] | O(1) amortised per VMA |
//!
//! Why one descent is O(log n): a subtree whose internal holes all lie inside
//! the search window and whose largest hole is long enough always contains an
//! answer, so the search enters at most one such subtree and finishes in it;
//! every other subtree it enters straddles one of the two window edges, and
//! there are at most two such root-to-leaf paths.

use alloc::vec::Vec;
use core::fmt;

use crate::tree::{Treap, NIL};

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
    /// The VMA just below (`NIL` if none).
    pub prev: u32,
    /// The VMA just above (`NIL` if none).
    pub next: u32,
}

/// True if `[max(gs, lo), min(ge, hi)]` holds at least `size` indices.
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
    pub(crate) t: Treap,
}

impl AddressMap {
    /// An empty address space.
    pub fn new() -> Self {
        AddressMap { t: Treap::new() }
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
        self.t = Treap::new();
    }

    /// Bytes of heap the map holds (its node arena).
    pub fn heap_bytes(&self) -> usize {
        self.t.heap_bytes()
    }

    /// Depth of the tree (O(n); for statistics).
    pub fn depth(&self) -> usize {
        self.t.depth()
    }

    pub(crate) fn vma_of(&self, t: u32) -> Vma {
        let n = self.t.n(t);
        Vma {
            start: n.start,
            end: n.end,
            flags: VmaFlags(n.flags),
        }
    }

    fn opt_vma(&self, t: u32) -> Option<Vma> {
        (t != NIL).then(|| self.vma_of(t))
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
        self.find_vma(start).filter(|v| v.start < end)
    }

    /// The lowest VMA, if any.
    pub fn first(&self) -> Option<Vma> {
        self.opt_vma(self.t.leftmost(self.t.root))
    }

    /// The highest VMA, if any.
    pub fn last(&self) -> Option<Vma> {
        self.opt_vma(self.t.rightmost(self.t.root))
    }

    /// Inserts the VMA `[start, end)`. Fails without changing anything if the
    /// range is empty or overlaps an existing VMA. O(log n).
    pub fn insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), MapError> {
        if end <= start {
            return Err(MapError::EmptyRange { start, end });
        }
        if let Some(existing) = self.first_overlap(start, end) {
            return Err(MapError::Overlap {
                start,
                end,
                existing,
            });
        }
        if self.t.len() >= (u32::MAX - 1) as usize {
            return Err(MapError::TooManyVmas);
        }
        let node = self.t.alloc(start, end, flags.0);
        let (a, b) = self.t.split(self.t.root, start);
        let a = self.t.merge(a, node);
        self.t.root = self.t.merge(a, b);
        Ok(())
    }

    /// Removes everything mapped in `[start, end)`, splitting the VMAs that
    /// straddle either edge (the pieces keep their flags). Unmapping nothing
    /// is fine. Returns the number of VMAs removed or cut. O(log n + k).
    pub fn unmap(&mut self, start: u64, end: u64) -> Result<usize, MapError> {
        if end < start {
            return Err(MapError::EmptyRange { start, end });
        }
        if end == start || self.first_overlap(start, end).is_none() {
            return Ok(0);
        }
        // A straddling VMA may cover the whole range and need two pieces;
        // make sure the arena can hold one more node.
        if self.t.len() >= (u32::MAX - 1) as usize {
            return Err(MapError::TooManyVmas);
        }
        let t = &mut self.t;
        // below: starts < start; mid: starts in [start, end); above: >= end.
        let (mut below, rest) = t.split(t.root, start);
        let (mut mid, mut above) = t.split(rest, end);
        let mut touched = 0;
        // The highest VMA below `start` may reach into the range.
        if below != NIL && t.n(t.rightmost(below)).end > start {
            let (rest, v) = t.pop_max(below);
            let (vs, ve, flags) = (t.n(v).start, t.n(v).end, t.n(v).flags);
            if ve > end {
                let tail = t.alloc(end, ve, flags);
                above = t.merge(tail, above);
            }
            t.set_range(v, vs, start);
            below = t.merge(rest, v);
            touched += 1;
        }
        // The highest VMA starting inside the range may reach past its end.
        if mid != NIL {
            let (rest, v) = t.pop_max(mid);
            let ve = t.n(v).end;
            if ve > end {
                t.set_range(v, end, ve);
                above = t.merge(v, above);
            } else {
                t.release(v);
            }
            touched += 1;
            mid = rest;
        }
        touched += subtree_len(t, mid);
        t.release_subtree(mid);
        t.root = t.merge(below, above);
        Ok(touched)
    }

    /// Iterates over the VMAs in address order.
    pub fn iter(&self) -> Iter<'_> {
        let mut it = Iter {
            map: self,
            stack: Vec::new(),
        };
        it.push_left(self.t.root);
        it
    }

    /// Iterates over the VMAs that intersect `[start, end)`, in address
    /// order, starting with an O(log n) descent.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = Vma> + '_ {
        let mut it = Iter {
            map: self,
            stack: Vec::new(),
        };
        // Push the path of nodes with end > start, like find_vma.
        let mut t = self.t.root;
        while t != NIL {
            let n = self.t.n(t);
            if n.end > start {
                it.stack.push(t);
                t = n.left;
            } else {
                t = n.right;
            }
        }
        it.take_while(move |v| v.start < end)
    }

    // ----- hole search primitives -------------------------------------

    /// The lowest hole whose part inside `[lo, hi]` (inclusive) holds at
    /// least `size >= 1` indices: the maple tree's `mas_empty_area` without
    /// its argument checks. `f` may reject a hole; the walk then goes on to
    /// the next candidate in address order and returns `f`'s first answer.
    pub(crate) fn walk_low<R>(
        &self,
        lo: u64,
        hi: u64,
        size: u64,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let t = &self.t;
        if t.root == NIL {
            if !clipped_fits(0, u64::MAX, lo, hi, size) {
                return None;
            }
            return f(
                self,
                Hole {
                    start: 0,
                    last: u64::MAX,
                    prev: NIL,
                    next: NIL,
                },
            );
        }
        let root = *t.n(t.root);
        if root.min_start > 0 && clipped_fits(0, root.min_start - 1, lo, hi, size) {
            let h = Hole {
                start: 0,
                last: root.min_start - 1,
                prev: NIL,
                next: t.leftmost(t.root),
            };
            if let Some(r) = f(self, h) {
                return Some(r);
            }
        }
        if let Some(r) = self.low_in(t.root, lo, hi, size, f) {
            return Some(r);
        }
        if clipped_fits(root.max_end, u64::MAX, lo, hi, size) {
            let h = Hole {
                start: root.max_end,
                last: u64::MAX,
                prev: t.rightmost(t.root),
                next: NIL,
            };
            return f(self, h);
        }
        None
    }

    fn low_in<R>(
        &self,
        t: u32,
        lo: u64,
        hi: u64,
        size: u64,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        if t == NIL {
            return None;
        }
        let n = *self.t.n(t);
        // Internal holes of this subtree lie in [min_start, max_end - 1].
        if n.max_gap < size || !clipped_fits(n.min_start, n.max_end - 1, lo, hi, size) {
            return None;
        }
        if let Some(r) = self.low_in(n.left, lo, hi, size, f) {
            return Some(r);
        }
        if n.left != NIL {
            let le = self.t.n(n.left).max_end;
            if le < n.start && clipped_fits(le, n.start - 1, lo, hi, size) {
                let h = Hole {
                    start: le,
                    last: n.start - 1,
                    prev: self.t.rightmost(n.left),
                    next: t,
                };
                if let Some(r) = f(self, h) {
                    return Some(r);
                }
            }
        }
        if n.right != NIL {
            let rs = self.t.n(n.right).min_start;
            if n.end < rs && clipped_fits(n.end, rs - 1, lo, hi, size) {
                let h = Hole {
                    start: n.end,
                    last: rs - 1,
                    prev: t,
                    next: self.t.leftmost(n.right),
                };
                if let Some(r) = f(self, h) {
                    return Some(r);
                }
            }
        }
        self.low_in(n.right, lo, hi, size, f)
    }

    /// The mirror image of [`Self::walk_low`]: candidate holes from the
    /// highest down (`mas_empty_area_rev`).
    pub(crate) fn walk_high<R>(
        &self,
        lo: u64,
        hi: u64,
        size: u64,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        let t = &self.t;
        if t.root == NIL {
            if !clipped_fits(0, u64::MAX, lo, hi, size) {
                return None;
            }
            return f(
                self,
                Hole {
                    start: 0,
                    last: u64::MAX,
                    prev: NIL,
                    next: NIL,
                },
            );
        }
        let root = *t.n(t.root);
        if clipped_fits(root.max_end, u64::MAX, lo, hi, size) {
            let h = Hole {
                start: root.max_end,
                last: u64::MAX,
                prev: t.rightmost(t.root),
                next: NIL,
            };
            if let Some(r) = f(self, h) {
                return Some(r);
            }
        }
        if let Some(r) = self.high_in(t.root, lo, hi, size, f) {
            return Some(r);
        }
        if root.min_start > 0 && clipped_fits(0, root.min_start - 1, lo, hi, size) {
            let h = Hole {
                start: 0,
                last: root.min_start - 1,
                prev: NIL,
                next: t.leftmost(t.root),
            };
            return f(self, h);
        }
        None
    }

    fn high_in<R>(
        &self,
        t: u32,
        lo: u64,
        hi: u64,
        size: u64,
        f: &mut impl FnMut(&Self, Hole) -> Option<R>,
    ) -> Option<R> {
        if t == NIL {
            return None;
        }
        let n = *self.t.n(t);
        if n.max_gap < size || !clipped_fits(n.min_start, n.max_end - 1, lo, hi, size) {
            return None;
        }
        if let Some(r) = self.high_in(n.right, lo, hi, size, f) {
            return Some(r);
        }
        if n.right != NIL {
            let rs = self.t.n(n.right).min_start;
            if n.end < rs && clipped_fits(n.end, rs - 1, lo, hi, size) {
                let h = Hole {
                    start: n.end,
                    last: rs - 1,
                    prev: t,
                    next: self.t.leftmost(n.right),
                };
                if let Some(r) = f(self, h) {
                    return Some(r);
                }
            }
        }
        if n.left != NIL {
            let le = self.t.n(n.left).max_end;
            if le < n.start && clipped_fits(le, n.start - 1, lo, hi, size) {
                let h = Hole {
                    start: le,
                    last: n.start - 1,
                    prev: self.t.rightmost(n.left),
                    next: t,
                };
                if let Some(r) = f(self, h) {
                    return Some(r);
                }
            }
        }
        self.high_in(n.left, lo, hi, size, f)
    }

    /// The kernel's `vm_start_gap()` of node `t`: its start minus the guard
    /// below a grows-down VMA, saturating at 0.
    #[inline]
    pub(crate) fn start_gap_of(&self, t: u32, p: &SearchParams) -> u64 {
        let n = self.t.n(t);
        if n.flags & VmaFlags::GROWSDOWN.0 != 0 {
            n.start.saturating_sub(p.stack_guard_gap)
        } else {
            n.start
        }
    }

    /// The kernel's `vm_end_gap()` of node `t`: its end plus the guard above
    /// a grows-up VMA (only with [`SearchParams::growsup_guard`]), clamped to
    /// `-page_size` on overflow.
    #[inline]
    pub(crate) fn end_gap_of(&self, t: u32, p: &SearchParams) -> u64 {
        let n = self.t.n(t);
        if p.growsup_guard && n.flags & VmaFlags::GROWSUP.0 != 0 {
            let e = n.end.wrapping_add(p.stack_guard_gap);
            if e < n.end {
                p.page_size.wrapping_neg()
            } else {
                e
            }
        } else {
            n.end
        }
    }

    /// True if node `t` has a start guard (`VM_STARTGAP_FLAGS`).
    #[inline]
    pub(crate) fn has_start_gap(&self, t: u32) -> bool {
        self.t.n(t).flags & VmaFlags::GROWSDOWN.0 != 0
    }

    /// Recomputes every cached aggregate from scratch and checks order,
    /// non-overlap, the heap property, the free list and the counts. Panics
    /// with a dump of the tree on any violation. For tests and fuzzing.
    pub fn check_invariants(&self) {
        crate::check::check(self);
    }
}

fn subtree_len(t: &Treap, root: u32) -> usize {
    let mut count = 0;
    let mut stack = Vec::new();
    if root != NIL {
        stack.push(root);
    }
    while let Some(x) = stack.pop() {
        count += 1;
        let n = t.n(x);
        if n.left != NIL {
            stack.push(n.left);
        }
        if n.right != NIL {
            stack.push(n.right);
        }
    }
    count
}

/// In-order iterator over the VMAs of an [`AddressMap`].
pub struct Iter<'a> {
    map: &'a AddressMap,
    stack: Vec<u32>,
}

impl Iter<'_> {
    fn push_left(&mut self, mut t: u32) {
        while t != NIL {
            self.stack.push(t);
            t = self.map.t.n(t).left;
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Vma;
    fn next(&mut self) -> Option<Vma> {
        let t = self.stack.pop()?;
        self.push_left(self.map.t.n(t).right);
        Some(self.map.vma_of(t))
    }
}

impl<'a> IntoIterator for &'a AddressMap {
    type Item = Vma;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}
