//! [`VaHeap`]: an exact, address-ordered allocator of address ranges,
//! keyed by its free holes.
//!
//! See the type's documentation.

// The node code indexes several parallel columns with one index.
#![allow(clippy::needless_range_loop)]

use alloc::vec::Vec;
use core::fmt;

use crate::search::{highest_in, lowest_in, FitError, FitRequest, NoCross, NoCrossError};
use crate::AddressMap;

/// Why a [`VaHeap`] refused to change its free space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// `end <= start`.
    EmptyRange {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
    },
    /// [`VaHeap::free`]: part of `[start, end)` is already free (a double
    /// free, or a range the heap never handed out); `[hole_start, hole_end)`
    /// is the lowest free hole it meets.
    AlreadyFree {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// Start of the free hole in the way.
        hole_start: u64,
        /// End of the free hole in the way.
        hole_end: u64,
    },
    /// [`VaHeap::alloc_at`]: `[start, end)` does not lie inside one free
    /// hole.
    NotFree {
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
    },
    /// The change would need more than [`VaHeap::MAX_HOLES`] holes.
    TooManyHoles,
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeapError::EmptyRange { start, end } => {
                write!(f, "empty range [{start:#x}, {end:#x})")
            }
            HeapError::AlreadyFree {
                start,
                end,
                hole_start,
                hole_end,
            } => write!(
                f,
                "[{start:#x}, {end:#x}) meets the free hole [{hole_start:#x}, {hole_end:#x})"
            ),
            HeapError::NotFree { start, end } => {
                write!(f, "[{start:#x}, {end:#x}) is not inside one free hole")
            }
            HeapError::TooManyHoles => f.write_str("the heap holds the maximum number of holes"),
        }
    }
}

impl core::error::Error for HeapError {}

/// An exact, address-ordered allocator of address ranges: the free space is
/// a set of disjoint holes `[start, end)`, kept in a B+tree keyed by hole
/// (not by allocation), with every subtree's largest hole and largest
/// 64 KiB- and 2 MiB-aligned room cached in its parent.
///
/// A new heap has no free space; [`Self::free`] adds a range (the caller
/// hands the heap its universe this way, and gives back what it
/// allocated), [`Self::alloc`] takes the lowest (highest) range that
/// satisfies a [`FitRequest`] (length, window, alignment and offset, order)
/// and [`Self::alloc_at`] takes an exact range. Adjacent holes always merge,
/// so the heap never holds two holes that touch. The heap records no
/// allocations: a free of any range that is entirely allocated is accepted
/// (a part of an allocation, or several adjacent ones, as `munmap` accepts
/// them), and a free that meets free space is refused
/// ([`HeapError::AlreadyFree`]) without changing anything.
///
/// ```
/// use svmap_core::{FitRequest, VaHeap};
///
/// # fn main() -> Result<(), Box<dyn core::error::Error>> {
/// let mut heap = VaHeap::with_free(0x1000, 1 << 40)?;
/// let req = FitRequest {
///     length: 0x20_0000,
///     low: 0,
///     high: 1 << 40,
///     align: 0x20_0000,
///     align_offset: 0,
///     topdown: false,
///     respect_guard_gaps: false,
/// };
/// let a = heap.alloc(&req)?;
/// assert_eq!(a, 0x20_0000); // the lowest 2 MiB-aligned fit
/// assert_eq!(heap.hole_count(), 2); // [0x1000, 2 MiB) and [4 MiB, 2^40)
/// heap.free(a, a + req.length)?;
/// assert_eq!(heap.holes().collect::<Vec<_>>(), [(0x1000, 1 << 40)]);
/// # Ok(())
/// # }
/// ```
///
/// # Semantics
///
/// For the same free space, [`Self::find_fit`] answers exactly what
/// [`crate::AddressMap::find_fit`] answers on a map whose VMAs are the
/// complement of the holes (with `mmap_min_addr` 0 and no grows-down or
/// grows-up VMAs, so guard gaps never apply: the request's
/// `respect_guard_gaps` has no effect here). Addresses are `u64`; the last
/// byte, `u64::MAX`, can never be free (ends are exclusive).
///
/// # Cost
///
/// `alloc` is one root-to-leaf descent when the alignment is at most the
/// page of the holes (the holes and lengths are multiples of it), or
/// 64 KiB or 2 MiB with an offset that is a multiple of it; other
/// alignments prune with the largest cached class that is necessary and
/// may try several holes, each in O(log n). `free` is one descent (two
/// when the freed range merges with a hole in the neighbouring leaf).
/// Memory ([`Self::heap_bytes`]) is 16 bytes per hole in the array and
/// 26 to 39 in the tree on the churn benchmark (a full leaf passes a hole
/// to a neighbour with room before it splits); a heap under lowest-first
/// churn of 4 KiB-aligned ranges holds about 0.35 holes per allocation,
/// one of 2 MiB-aligned ranges about one (each leaves its alignment slack
/// free).
/// A heap of at most 256 holes keeps them in one sorted array and scans
/// it (faster than any tree at that size); it moves into the tree past
/// 256 holes and back below 128.
#[derive(Clone)]
pub struct VaHeap {
    leaves: Vec<Leaf>,
    inners: Vec<Inner>,
    /// Indices of unused slots in `leaves` / `inners`, reused first.
    spare_leaves: Vec<u32>,
    spare_inners: Vec<u32>,
    root: u32,
    /// 0: the root is a leaf.
    height: u32,
    holes: usize,
    bytes: u64,
    /// Small heaps keep their holes in `list` (sorted, no two touching)
    /// and leave the tree empty; see [`FLAT_MAX`].
    flat: bool,
    list: Vec<(u64, u64)>,
}

/// A heap of at most this many holes keeps them in one sorted array and
/// scans it, as Mesa's `util_vma_heap` does: below a few hundred holes a
/// linear scan of 16-byte entries is faster than any walk of a tree. A
/// heap that grows past it moves into the tree; one that shrinks below
/// [`FLAT_MIN`] moves back (the gap between the two keeps a heap near the
/// limit from moving at every change).
const FLAT_MAX: usize = 256;
const FLAT_MIN: usize = 128;
// A tree holds more holes than one leaf does, so its root is an inner node.
const _: () = assert!(FLAT_MIN > LC);

/// Holes per leaf.
const LC: usize = 16;
/// Fewest holes in a non-root leaf.
const LMIN: usize = LC / 4;
/// Children per inner node.
const IC: usize = 16;
/// Fewest children of a non-root inner node.
const IMIN: usize = IC / 4;
/// Two siblings whose entries fit in this many merge into one node; more
/// are shared out evenly instead (so a node just merged or just split
/// takes several changes before it splits or merges again).
const LMERGE: usize = LC * 3 / 4;
const IMERGE: usize = IC * 3 / 4;
/// Summary columns: 0 the largest hole, 1 and 2 the largest room aligned
/// to 64 KiB and 2 MiB (see `room`).
const NSUM: usize = 3;
const SHIFTS: [u32; 2] = [16, 21];
/// The height of a tree of `MAX_HOLES` holes whose nodes are each at
/// their minimum is below 16 (`4^15 > 2^30`).
const MAX_HEIGHT: usize = 16;
const NIL: u32 = u32::MAX;

type Sum = [u64; NSUM];

#[derive(Clone)]
struct Leaf {
    /// Hole `i` is `[s[i], e[i])`, in address order; no two touch.
    s: [u64; LC],
    e: [u64; LC],
    n: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone)]
struct Inner {
    /// `key[i]` for `i >= 1` separates child `i - 1` from child `i`: the
    /// highest hole `p` under child `i - 1` and the lowest hole `q` under
    /// child `i` have `p.end <= key[i] <= q.start`. `key[0]` means
    /// nothing.
    key: [u64; IC],
    child: [u32; IC],
    /// `mx[k][i]`: column `k` of child `i`'s summary.
    mx: [[u64; IC]; NSUM],
    n: u32,
}

impl Leaf {
    const EMPTY: Leaf = Leaf {
        s: [0; LC],
        e: [0; LC],
        n: 0,
        prev: NIL,
        next: NIL,
    };
}

impl Inner {
    const EMPTY: Inner = Inner {
        key: [0; IC],
        child: [NIL; IC],
        mx: [[0; IC]; NSUM],
        n: 0,
    };
}

/// The longest range aligned to `2^shift` inside `[s, e)`.
#[inline]
fn room(s: u64, e: u64, shift: u32) -> u64 {
    let mask = (1u64 << shift) - 1;
    // Branch-free; `up < s` only when aligning up passes 2^64.
    let up = s.wrapping_add(mask) & !mask;
    if up < s {
        0
    } else {
        e.saturating_sub(up)
    }
}

/// Makes room for one more node, growing a full arena by an eighth (at
/// least 4 nodes) rather than doubling it: the arenas are the heap's
/// memory, and an eighth keeps the unused part below 12% while the pushes
/// stay amortised O(1) (each growth copies the arena once, and the next
/// eighth of pushes pays for it).
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(4));
    }
}

/// Forces a rescan in [`VaHeap::fix_up`].
const FULL: Sum = [u64::MAX; NSUM];

#[inline]
fn max_sum(a: Sum, b: Sum) -> Sum {
    [a[0].max(b[0]), a[1].max(b[1]), a[2].max(b[2])]
}

#[inline]
fn hole_sum(s: u64, e: u64) -> Sum {
    [e - s, room(s, e, SHIFTS[0]), room(s, e, SHIFTS[1])]
}

/// The inner nodes from the root down to a leaf's parent and the child
/// taken in each.
#[derive(Clone, Copy)]
struct Path {
    n: usize,
    node: [u32; MAX_HEIGHT],
    idx: [u8; MAX_HEIGHT],
}

impl Path {
    const EMPTY: Path = Path {
        n: 0,
        node: [0; MAX_HEIGHT],
        idx: [0; MAX_HEIGHT],
    };
    #[inline]
    fn push(&mut self, node: u32, idx: usize) {
        self.node[self.n] = node;
        self.idx[self.n] = idx as u8;
        self.n += 1;
    }
}

/// A fit request reduced to what the walk needs.
struct Want {
    lo: u64,
    /// Inclusive.
    hi: u64,
    len_m1: u64,
    mask: u64,
    off: u64,
    nc: Option<NoCross>,
    /// The summary column that prunes, and the length it must reach.
    col: usize,
    need: u64,
}

impl Want {
    fn new(req: &FitRequest, nc: Option<NoCross>) -> Self {
        // Prune with the coarsest cached class that every fit is aligned
        // to: exact when the class is the alignment.
        let col = (0..SHIFTS.len())
            .rev()
            .find(|&c| {
                let a = 1u64 << SHIFTS[c];
                a <= req.align && req.align_offset & (a - 1) == 0
            })
            .map_or(0, |c| c + 1);
        Want {
            lo: req.low,
            hi: req.high - 1,
            len_m1: req.length - 1,
            mask: req.align - 1,
            off: req.align_offset,
            nc,
            col,
            need: req.length,
        }
    }

    /// The fit inside the hole `[s, e)`, if any.
    #[inline]
    fn fit(&self, s: u64, e: u64, top: bool) -> Option<u64> {
        let s = s.max(self.lo);
        let e = (e - 1).min(self.hi);
        if s > e || e - s < self.len_m1 {
            return None;
        }
        if top {
            highest_in(s, e, self.len_m1, self.mask, self.off, self.nc)
        } else {
            lowest_in(s, e, self.len_m1, self.mask, self.off, self.nc)
        }
    }

    /// Whether a run of holes from `s` to `e` lies inside the window and
    /// the offset is a multiple of the alignment, so that a fit needs no
    /// clipping and no offset.
    #[inline]
    fn inside(&self, s: u64, e: u64) -> bool {
        self.lo <= s && e - 1 <= self.hi && self.off & self.mask == 0
    }

    /// [`Self::fit`] without a boundary, lowest first, in straight-line
    /// code: what `lowest_in` computes, with its early returns folded into
    /// one condition.
    #[inline]
    fn low_plain(&self, s: u64, e: u64) -> Option<u64> {
        let s = s.max(self.lo);
        let top = (e - 1).min(self.hi);
        let (a, wrapped) = s.overflowing_add(self.off.wrapping_sub(s) & self.mask);
        (!wrapped & (a <= top) & (top.wrapping_sub(a) >= self.len_m1)).then_some(a)
    }

    /// [`Self::fit`] without a boundary, highest first (`highest_in`
    /// folded the same way).
    #[inline]
    fn high_plain(&self, s: u64, e: u64) -> Option<u64> {
        let s = s.max(self.lo);
        let top = (e - 1).min(self.hi);
        let (t, under) = top.overflowing_sub(self.len_m1);
        let a = t.wrapping_sub(t.wrapping_sub(self.off) & self.mask);
        (!under & (a <= t) & (a >= s)).then_some(a)
    }

    /// The lowest fit among holes `from..n` of a sorted run, `hole(i)`
    /// giving hole `i`.
    #[inline]
    fn scan_low(
        &self,
        from: usize,
        n: usize,
        hole: impl Fn(usize) -> (u64, u64),
    ) -> Option<(usize, u64)> {
        if from >= n {
            return None;
        }
        if self.nc.is_none() {
            if self.inside(hole(from).0, hole(n - 1).1) {
                // Every hole lies in the window and the offset is aligned:
                // the lowest aligned start of a hole is its start rounded
                // up.
                let len_m1 = self.len_m1;
                let mask = self.mask;
                for i in from..n {
                    let (s, e) = hole(i);
                    let a = s.wrapping_add(mask) & !mask;
                    if (a >= s) & (a < e) && e - a > len_m1 {
                        return Some((i, a));
                    }
                }
                return None;
            }
            for i in from..n {
                let (s, e) = hole(i);
                if s > self.hi {
                    return None;
                }
                if let Some(a) = self.low_plain(s, e) {
                    return Some((i, a));
                }
            }
            return None;
        }
        for i in from..n {
            let (s, e) = hole(i);
            if e - s > self.len_m1 {
                if s > self.hi {
                    return None;
                }
                if let Some(a) = self.fit(s, e, false) {
                    return Some((i, a));
                }
            }
        }
        None
    }

    /// The highest fit among holes `0..end` of a sorted run.
    #[inline]
    fn scan_high(&self, end: usize, hole: impl Fn(usize) -> (u64, u64)) -> Option<(usize, u64)> {
        if end == 0 {
            return None;
        }
        if self.nc.is_none() {
            if self.inside(hole(0).0, hole(end - 1).1) {
                // As in `scan_low`: the highest aligned start of a hole is
                // its end less the length, rounded down.
                let len = self.len_m1 + 1;
                let mask = self.mask;
                for i in (0..end).rev() {
                    let (s, e) = hole(i);
                    let (t, under) = e.overflowing_sub(len);
                    let a = t & !mask;
                    if !under & (a >= s) {
                        return Some((i, a));
                    }
                }
                return None;
            }
            for i in (0..end).rev() {
                let (s, e) = hole(i);
                if e <= self.lo {
                    return None;
                }
                if let Some(a) = self.high_plain(s, e) {
                    return Some((i, a));
                }
            }
            return None;
        }
        for i in (0..end).rev() {
            let (s, e) = hole(i);
            if e - s > self.len_m1 {
                if e <= self.lo {
                    return None;
                }
                if let Some(a) = self.fit(s, e, true) {
                    return Some((i, a));
                }
            }
        }
        None
    }
}

/// Where a search found its fit.
struct Found {
    path: Path,
    leaf: u32,
    slot: usize,
    addr: u64,
}

impl Default for VaHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VaHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaHeap")
            .field("holes", &self.hole_count())
            .field("free_bytes", &self.free_bytes())
            .finish()
    }
}

impl VaHeap {
    /// The most holes a heap holds; a change that would need more fails
    /// with [`HeapError::TooManyHoles`] ([`FitError::TooManyHoles`] from the
    /// fits).
    pub const MAX_HOLES: usize = 1 << 30;

    /// A heap with no free space.
    pub fn new() -> Self {
        // The flat form uses no node: the arenas start empty, and a root
        // leaf appears when the heap moves into the tree.
        VaHeap {
            leaves: Vec::new(),
            inners: Vec::new(),
            spare_leaves: Vec::new(),
            spare_inners: Vec::new(),
            root: 0,
            height: 0,
            holes: 0,
            bytes: 0,
            flat: true,
            list: Vec::new(),
        }
    }

    /// A heap whose free space is `[start, end)`.
    pub fn with_free(start: u64, end: u64) -> Result<Self, HeapError> {
        let mut h = Self::new();
        h.free(start, end)?;
        Ok(h)
    }

    /// Number of free holes.
    pub fn hole_count(&self) -> usize {
        self.holes
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of heap memory the heap holds: the capacity of its array or of
    /// its node arenas and their lists of freed nodes. In the tree form
    /// freed nodes are kept for reuse, so this is the most the tree has
    /// needed; a heap that moves back into the array gives the tree's
    /// memory back.
    pub fn heap_bytes(&self) -> usize {
        self.leaves.capacity() * core::mem::size_of::<Leaf>()
            + self.inners.capacity() * core::mem::size_of::<Inner>()
            + (self.spare_leaves.capacity() + self.spare_inners.capacity()) * 4
            + self.list.capacity() * core::mem::size_of::<(u64, u64)>()
    }

    /// Forgets all free space (and gives the nodes' memory back).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The free holes `[start, end)` in address order.
    pub fn holes(&self) -> Holes<'_> {
        if self.flat {
            return Holes {
                heap: self,
                leaf: NIL,
                slot: 0,
            };
        }
        let mut id = self.root;
        for _ in 0..self.height {
            id = self.inners[id as usize].child[0];
        }
        Holes {
            heap: self,
            leaf: id,
            slot: 0,
        }
    }

    /// Adds `[start, end)` to the free space, merging it with the holes it
    /// touches. Fails without changing anything if the range is empty
    /// ([`HeapError::EmptyRange`]), meets free space
    /// ([`HeapError::AlreadyFree`]) or would need a hole beyond
    /// [`Self::MAX_HOLES`].
    pub fn free(&mut self, start: u64, end: u64) -> Result<(), HeapError> {
        if end <= start {
            return Err(HeapError::EmptyRange { start, end });
        }
        if self.flat {
            self.flat_free(start, end)?;
        } else {
            self.tree_free(start, end)?;
        }
        self.settle();
        Ok(())
    }

    fn tree_free(&mut self, start: u64, end: u64) -> Result<(), HeapError> {
        let (a, b) = (start, end);
        let (path, z) = self.descend(a);
        let zl = &self.leaves[z as usize];
        let n = zl.n as usize;
        let mut pos = 0;
        while pos < n && zl.s[pos] <= a {
            pos += 1;
        }
        // The holes just below and just above the range: `p` ends at or
        // below `a` and `q` starts above it, or they overlap the range.
        let p = if pos > 0 {
            Some((z, pos - 1))
        } else if zl.prev != NIL {
            let pl = &self.leaves[zl.prev as usize];
            Some((zl.prev, pl.n as usize - 1))
        } else {
            None
        };
        let q = if pos < n {
            Some((z, pos))
        } else if zl.next != NIL {
            Some((zl.next, 0))
        } else {
            None
        };
        let hole = |h: (u32, usize)| {
            let l = &self.leaves[h.0 as usize];
            (l.s[h.1], l.e[h.1])
        };
        let ph = p.map(hole);
        let qh = q.map(hole);
        if let Some((ps, pe)) = ph.filter(|&(_, pe)| pe > a) {
            return Err(HeapError::AlreadyFree {
                start,
                end,
                hole_start: ps,
                hole_end: pe,
            });
        }
        if let Some((qs, qe)) = qh.filter(|&(qs, _)| qs < b) {
            return Err(HeapError::AlreadyFree {
                start,
                end,
                hole_start: qs,
                hole_end: qe,
            });
        }
        let p_touch = ph.is_some_and(|(_, pe)| pe == a);
        let q_touch = qh.is_some_and(|(qs, _)| qs == b);
        if !p_touch && !q_touch && self.holes >= Self::MAX_HOLES {
            return Err(HeapError::TooManyHoles);
        }
        self.bytes += b - a;
        match (p, q) {
            (Some((pid, pi)), Some((qid, qi))) if p_touch && q_touch => {
                let (_, qe) = qh.unwrap_or_default();
                let ps = ph.unwrap_or_default().0;
                self.holes -= 1;
                if pid == z && qid == z {
                    // The merged hole holds both: no column can fall, so
                    // nothing need count as removed.
                    self.leaves[z as usize].e[pi] = qe;
                    self.delete_slot(path, z, qi, ps, [0; NSUM], hole_sum(ps, qe));
                } else if pid == z {
                    // `q` is the first hole of the next leaf.
                    let (qpath, _) = self.descend(b);
                    self.leaves[z as usize].e[pi] = qe;
                    self.set_sep_right(&path, qe);
                    self.delete_slot(qpath, qid, 0, qe, FULL, [0; NSUM]);
                    self.resync(ps);
                } else {
                    // `p` is the last hole of the previous leaf, `q` the
                    // first of `z`.
                    self.leaves[pid as usize].e[pi] = qe;
                    self.set_sep_left(&path, qe);
                    self.delete_slot(path, z, qi, qe, FULL, [0; NSUM]);
                    self.resync(ps);
                }
            }
            (Some((pid, pi)), _) if p_touch => {
                self.leaves[pid as usize].e[pi] = b;
                if pid == z {
                    if pi + 1 == n {
                        self.set_sep_right(&path, b);
                    }
                    let (ps, pe) = ph.unwrap_or_default();
                    self.fix_up(&path, z, hole_sum(ps, pe), hole_sum(ps, b));
                } else {
                    self.set_sep_left(&path, b);
                    let ps = ph.unwrap_or_default().0;
                    self.resync(ps);
                }
            }
            (_, Some((qid, qi))) if q_touch => {
                if qid == z {
                    self.leaves[z as usize].s[qi] = a;
                    let (qs, qe) = qh.unwrap_or_default();
                    self.fix_up(&path, z, hole_sum(qs, qe), hole_sum(a, qe));
                } else {
                    self.leaves[qid as usize].s[qi] = a;
                    self.set_sep_right(&path, a);
                    self.resync(a);
                }
            }
            _ => {
                self.holes += 1;
                if pos == n {
                    self.set_sep_right(&path, b);
                }
                self.insert_slot(path, z, pos, a, b, [0; NSUM], hole_sum(a, b));
            }
        }
        Ok(())
    }

    /// Takes exactly `[start, end)`, which must lie inside one hole
    /// ([`HeapError::NotFree`] otherwise; [`HeapError::EmptyRange`] if
    /// `end <= start`). Nothing changes on an error.
    pub fn alloc_at(&mut self, start: u64, end: u64) -> Result<(), HeapError> {
        if end <= start {
            return Err(HeapError::EmptyRange { start, end });
        }
        if self.flat {
            let pos = self.list.partition_point(|h| h.0 <= start);
            if pos == 0 || self.list[pos - 1].1 < end {
                return Err(HeapError::NotFree { start, end });
            }
            self.flat_take(pos - 1, start, end - start)
                .map_err(|_| HeapError::TooManyHoles)?;
        } else {
            self.tree_alloc_at(start, end)?;
        }
        self.settle();
        Ok(())
    }

    fn tree_alloc_at(&mut self, start: u64, end: u64) -> Result<(), HeapError> {
        let (path, z) = self.descend(start);
        let zl = &self.leaves[z as usize];
        let n = zl.n as usize;
        let mut pos = 0;
        while pos < n && zl.s[pos] <= start {
            pos += 1;
        }
        // A hole holding `start` starts at or below it, and it lies in `z`:
        // every hole of an earlier leaf ends at or below `z`'s left key.
        if pos == 0 || zl.e[pos - 1] < end {
            return Err(HeapError::NotFree { start, end });
        }
        let f = Found {
            path,
            leaf: z,
            slot: pos - 1,
            addr: start,
        };
        self.take(f, end - start)
            .map_err(|_| HeapError::TooManyHoles)
    }

    /// The lowest (with `req.topdown`, highest) start `a` with `[a, a +
    /// length)` inside `[low, high)` and inside one hole, `a` congruent to
    /// `align_offset` modulo `align`. Errors as [`crate::AddressMap::find_fit`].
    pub fn find_fit(&self, req: &FitRequest) -> Result<u64, FitError> {
        AddressMap::check_fit(req)?;
        self.fit_addr(req, None)
    }

    /// [`Self::find_fit`] whose range must also not cross a multiple of
    /// `boundary` (0: no constraint); the rules and errors of
    /// [`crate::AddressMap::find_fit_nocross`].
    pub fn find_fit_nocross(&self, req: &FitRequest, boundary: u64) -> Result<u64, NoCrossError> {
        let nc = AddressMap::check_nocross(req, boundary)?;
        Ok(self.fit_addr(req, nc)?)
    }

    /// [`Self::find_fit`] and takes the range found. Returns its start.
    pub fn alloc(&mut self, req: &FitRequest) -> Result<u64, FitError> {
        AddressMap::check_fit(req)?;
        self.alloc_checked(req, None)
    }

    fn alloc_checked(&mut self, req: &FitRequest, nc: Option<NoCross>) -> Result<u64, FitError> {
        if self.flat {
            let w = Want::new(req, nc);
            let (i, a) = self.flat_walk(&w, req.topdown).ok_or(FitError::NoSpace)?;
            self.flat_take(i, a, req.length)?;
            self.settle();
            return Ok(a);
        }
        let f = self.search(req, nc)?;
        let a = f.addr;
        self.take(f, req.length)?;
        self.settle();
        Ok(a)
    }

    /// [`Self::find_fit_nocross`] and takes the range found.
    pub fn alloc_nocross(&mut self, req: &FitRequest, boundary: u64) -> Result<u64, NoCrossError> {
        let nc = AddressMap::check_nocross(req, boundary)?;
        Ok(self.alloc_checked(req, nc)?)
    }

    // ---- the flat form ----

    /// [`Self::free`] on the sorted array.
    fn flat_free(&mut self, a: u64, b: u64) -> Result<(), HeapError> {
        let pos = self.list.partition_point(|h| h.0 <= a);
        let p = pos.checked_sub(1).map(|i| self.list[i]);
        let q = self.list.get(pos).copied();
        if let Some((ps, pe)) = p.filter(|&(_, pe)| pe > a) {
            return Err(HeapError::AlreadyFree {
                start: a,
                end: b,
                hole_start: ps,
                hole_end: pe,
            });
        }
        if let Some((qs, qe)) = q.filter(|&(qs, _)| qs < b) {
            return Err(HeapError::AlreadyFree {
                start: a,
                end: b,
                hole_start: qs,
                hole_end: qe,
            });
        }
        let p_touch = p.is_some_and(|(_, pe)| pe == a);
        let q_touch = q.is_some_and(|(qs, _)| qs == b);
        match (p_touch, q_touch) {
            (true, true) => {
                self.list[pos - 1].1 = self.list[pos].1;
                self.list.remove(pos);
                self.holes -= 1;
            }
            (true, false) => self.list[pos - 1].1 = b,
            (false, true) => self.list[pos].0 = a,
            (false, false) => {
                if self.holes >= Self::MAX_HOLES {
                    return Err(HeapError::TooManyHoles);
                }
                self.list.insert(pos, (a, b));
                self.holes += 1;
            }
        }
        self.bytes += b - a;
        Ok(())
    }

    /// The search on the sorted array: the first (last) hole that holds a
    /// fit, from where the window starts (ends).
    fn flat_walk(&self, w: &Want, top: bool) -> Option<(usize, u64)> {
        let l = &self.list;
        if top {
            let end = if l.last().is_some_and(|h| h.0 > w.hi) {
                l.partition_point(|h| h.0 <= w.hi)
            } else {
                l.len()
            };
            w.scan_high(end, |i| l[i])
        } else {
            let start = if l.first().is_some_and(|h| h.1 <= w.lo) {
                l.partition_point(|h| h.1 <= w.lo)
            } else {
                0
            };
            w.scan_low(start, l.len(), |i| l[i])
        }
    }

    /// Takes `[a, a + len)` out of hole `i` of the sorted array.
    fn flat_take(&mut self, i: usize, a: u64, len: u64) -> Result<(), FitError> {
        let (s, e) = self.list[i];
        let b = a + len;
        debug_assert!(s <= a && b <= e);
        match (a > s, b < e) {
            (true, true) => {
                if self.holes >= Self::MAX_HOLES {
                    return Err(FitError::TooManyHoles);
                }
                self.list[i].1 = a;
                self.list.insert(i + 1, (b, e));
                self.holes += 1;
            }
            (true, false) => self.list[i].1 = a,
            (false, true) => self.list[i].0 = b,
            (false, false) => {
                self.list.remove(i);
                self.holes -= 1;
            }
        }
        self.bytes -= len;
        Ok(())
    }

    /// Moves a heap that left its form's range into the other form.
    #[inline]
    fn settle(&mut self) {
        if self.flat && self.holes > FLAT_MAX {
            self.make_tree();
        } else if !self.flat && self.holes < FLAT_MIN {
            self.make_flat();
        }
    }

    fn make_flat(&mut self) {
        let mut list = Vec::with_capacity(FLAT_MAX + 1);
        list.extend(self.holes());
        let (holes, bytes) = (self.holes, self.bytes);
        *self = Self::new();
        self.list = list;
        (self.holes, self.bytes) = (holes, bytes);
    }

    /// Builds the tree from the sorted array, every node three quarters
    /// full.
    fn make_tree(&mut self) {
        let list = core::mem::take(&mut self.list);
        let (holes, bytes) = (self.holes, self.bytes);
        *self = Self::new();
        (self.holes, self.bytes, self.flat) = (holes, bytes, false);
        if list.is_empty() {
            return;
        }
        self.leaves.clear();
        // Leaves: as even as possible, about 3/4 full.
        let nl = list.len().div_ceil(LMERGE);
        let mut level: Vec<(u32, u64, Sum)> = Vec::with_capacity(nl);
        let mut at = 0;
        for k in 0..nl {
            let take = (list.len() - at) / (nl - k);
            let id = self.new_leaf();
            let l = &mut self.leaves[id as usize];
            for (i, &(s, e)) in list[at..at + take].iter().enumerate() {
                l.s[i] = s;
                l.e[i] = e;
            }
            l.n = take as u32;
            l.prev = if k == 0 { NIL } else { id - 1 };
            l.next = if k + 1 == nl { NIL } else { id + 1 };
            level.push((id, list[at].0, self.leaf_sum(id)));
            at += take;
        }
        // Inner levels, bottom up.
        while level.len() > 1 {
            let ni = level.len().div_ceil(IMERGE);
            let mut up = Vec::with_capacity(ni);
            let mut at = 0;
            for k in 0..ni {
                let take = (level.len() - at) / (ni - k);
                let id = self.new_inner();
                let node = &mut self.inners[id as usize];
                for (i, &(c, key, sum)) in level[at..at + take].iter().enumerate() {
                    node.child[i] = c;
                    node.key[i] = key;
                    for col in 0..NSUM {
                        node.mx[col][i] = sum[col];
                    }
                }
                node.n = take as u32;
                up.push((id, level[at].1, self.inner_sum(id)));
                at += take;
            }
            level = up;
            self.height += 1;
        }
        self.root = level[0].0;
    }

    // ---- search ----

    /// The start of the fit of `req`, in either form.
    fn fit_addr(&self, req: &FitRequest, nc: Option<NoCross>) -> Result<u64, FitError> {
        if self.flat {
            let w = Want::new(req, nc);
            let (_, a) = self.flat_walk(&w, req.topdown).ok_or(FitError::NoSpace)?;
            return Ok(a);
        }
        Ok(self.search(req, nc)?.addr)
    }

    /// The fit of `req` in the tree form, with the path to it.
    fn search(&self, req: &FitRequest, nc: Option<NoCross>) -> Result<Found, FitError> {
        let w = Want::new(req, nc);
        let mut path = Path::EMPTY;
        let r = self.walk(&w, req.topdown, &mut path);
        let (leaf, slot, addr) = r.ok_or(FitError::NoSpace)?;
        Ok(Found {
            path,
            leaf,
            slot,
            addr,
        })
    }

    /// The index of the child of `node` whose subtree `addr` belongs to:
    /// the last `i >= 1` with `key[i] <= addr`, else 0.
    #[inline]
    fn route(node: &Inner, addr: u64) -> usize {
        let n = node.n as usize;
        let mut i = 1;
        while i < n && node.key[i] <= addr {
            i += 1;
        }
        i - 1
    }

    /// The children of `node` a search for `w` must consider: `first..=last`.
    /// Every hole under a child before `route(lo) - 1` ends below the
    /// lowest hole of that child, whose start is below `lo`; every hole
    /// under a child `j >= 1` with `key[j] > hi` starts above the window.
    #[inline]
    fn span(node: &Inner, w: &Want) -> (usize, usize) {
        let n = node.n as usize;
        let first = if n > 1 && node.key[1] <= w.lo {
            Self::route(node, w.lo).saturating_sub(1)
        } else {
            0
        };
        let mut last = n - 1;
        while last > 0 && node.key[last] > w.hi {
            last -= 1;
        }
        (first, last)
    }

    /// The lowest fit in a leaf.
    #[inline]
    fn leaf_low(&self, id: u32, w: &Want) -> Option<(usize, u64)> {
        let l = &self.leaves[id as usize];
        w.scan_low(0, l.n as usize, |i| (l.s[i], l.e[i]))
    }

    /// The highest fit in a leaf.
    #[inline]
    fn leaf_high(&self, id: u32, w: &Want) -> Option<(usize, u64)> {
        let l = &self.leaves[id as usize];
        w.scan_high(l.n as usize, |i| (l.s[i], l.e[i]))
    }

    /// The walk of a search: depth first, children in address order (in
    /// reverse with `top`), entering only children whose cached summary
    /// reaches the length. With the pruning column exact for the request
    /// (see [`VaHeap`]'s costs), the first leaf entered holds the fit and
    /// the walk is one descent; otherwise it backs up and goes on.
    fn walk(&self, w: &Want, top: bool, path: &mut Path) -> Option<(u32, usize, u64)> {
        let leaf_fit = |id: u32| {
            if top {
                self.leaf_high(id, w)
            } else {
                self.leaf_low(id, w)
            }
        };
        // The tree form holds at least `FLAT_MIN` holes, more than one
        // leaf holds: the root is an inner node.
        let h = self.height as usize;
        debug_assert!(h > 0);
        // `lo[d]..=hi[d]`: the children still to try at depth `d`; the
        // next one is `next` (counting down with `top`).
        let mut lo = [0usize; MAX_HEIGHT];
        let mut hi = [0usize; MAX_HEIGHT];
        let mut d = 0;
        let mut id = self.root;
        let (f, l) = Self::span(&self.inners[id as usize], w);
        (lo[0], hi[0]) = (f, l);
        let mut next = if top { l as isize } else { f as isize };
        loop {
            let node = &self.inners[id as usize];
            let col = &node.mx[w.col];
            // The next child, in order, whose summary reaches the length.
            let mut j = next;
            if top {
                while j >= lo[d] as isize && col[j as usize] < w.need {
                    j -= 1;
                }
            } else {
                while j <= hi[d] as isize && col[j as usize] < w.need {
                    j += 1;
                }
            }
            if j < lo[d] as isize || j > hi[d] as isize {
                // This node holds no fit: back up to its parent.
                if d == 0 {
                    return None;
                }
                d -= 1;
                id = path.node[d];
                let i = path.idx[d] as isize;
                next = if top { i - 1 } else { i + 1 };
                continue;
            }
            let ju = j as usize;
            path.node[d] = id;
            path.idx[d] = ju as u8;
            let child = node.child[ju];
            if d + 1 == h {
                if let Some((i, a)) = leaf_fit(child) {
                    path.n = h;
                    return Some((child, i, a));
                }
                next = if top { j - 1 } else { j + 1 };
                continue;
            }
            d += 1;
            id = child;
            let (f, l) = Self::span(&self.inners[id as usize], w);
            (lo[d], hi[d]) = (f, l);
            next = if top { l as isize } else { f as isize };
        }
    }

    // ---- changes ----

    /// Takes `[f.addr, f.addr + len)` out of the hole `f` found.
    fn take(&mut self, f: Found, len: u64) -> Result<(), FitError> {
        debug_assert!(!self.flat);
        let l = &self.leaves[f.leaf as usize];
        let (s, e) = (l.s[f.slot], l.e[f.slot]);
        let (a, b) = (f.addr, f.addr + len);
        debug_assert!(s <= a && b <= e);
        match (a > s, b < e) {
            (true, true) => {
                if self.holes >= Self::MAX_HOLES {
                    return Err(FitError::TooManyHoles);
                }
                self.holes += 1;
                self.bytes -= len;
                self.leaves[f.leaf as usize].e[f.slot] = a;
                let added = max_sum(hole_sum(s, a), hole_sum(b, e));
                self.insert_slot(f.path, f.leaf, f.slot + 1, b, e, hole_sum(s, e), added);
            }
            (true, false) => {
                self.bytes -= len;
                self.leaves[f.leaf as usize].e[f.slot] = a;
                self.fix_up(&f.path, f.leaf, hole_sum(s, e), hole_sum(s, a));
            }
            (false, true) => {
                self.bytes -= len;
                self.leaves[f.leaf as usize].s[f.slot] = b;
                self.fix_up(&f.path, f.leaf, hole_sum(s, e), hole_sum(b, e));
            }
            (false, false) => {
                self.bytes -= len;
                self.holes -= 1;
                self.delete_slot(f.path, f.leaf, f.slot, s, hole_sum(s, e), [0; NSUM]);
            }
        }
        Ok(())
    }

    fn descend(&self, addr: u64) -> (Path, u32) {
        let mut path = Path::EMPTY;
        let mut id = self.root;
        for _ in 0..self.height {
            let node = &self.inners[id as usize];
            let i = Self::route(node, addr);
            path.push(id, i);
            id = node.child[i];
        }
        (path, id)
    }

    fn leaf_sum(&self, id: u32) -> Sum {
        let l = &self.leaves[id as usize];
        let mut m = [0u64; NSUM];
        for i in 0..l.n as usize {
            let h = hole_sum(l.s[i], l.e[i]);
            for k in 0..NSUM {
                m[k] = m[k].max(h[k]);
            }
        }
        m
    }

    /// Column `k` of a leaf's summary.
    fn leaf_col(&self, id: u32, k: usize) -> u64 {
        let l = &self.leaves[id as usize];
        let n = l.n as usize;
        let (s, e) = (&l.s[..n], &l.e[..n]);
        let mut m = 0;
        if k == 0 {
            for i in 0..n {
                m = m.max(e[i] - s[i]);
            }
        } else {
            let shift = SHIFTS[k - 1];
            for i in 0..n {
                m = m.max(room(s[i], e[i], shift));
            }
        }
        m
    }

    /// Column `k` of an inner node's summary.
    fn inner_col(&self, id: u32, k: usize) -> u64 {
        let node = &self.inners[id as usize];
        node.mx[k][..node.n as usize]
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }

    fn inner_sum(&self, id: u32) -> Sum {
        let node = &self.inners[id as usize];
        let n = node.n as usize;
        let mut m = [0u64; NSUM];
        for k in 0..NSUM {
            m[k] = node.mx[k][..n].iter().copied().max().unwrap_or(0);
        }
        m
    }

    #[inline]
    fn set_entry(&mut self, parent: u32, i: usize, s: Sum) {
        let p = &mut self.inners[parent as usize];
        for k in 0..NSUM {
            p.mx[k][i] = s[k];
        }
    }

    /// After `leaf` changed in place (holes whose summaries reach at most
    /// `removed` went, holes whose summaries reach at most `added` came):
    /// refreshes the summaries on `path`, stopping where one does not
    /// change. A column is rescanned only where its maximum went and
    /// nothing as large came.
    fn fix_up(&mut self, path: &Path, leaf: u32, removed: Sum, added: Sum) {
        let d = path.n;
        if d == 0 {
            return;
        }
        let (p, i) = (path.node[d - 1], path.idx[d - 1] as usize);
        let old = self.entry(p, i);
        let mut new = Self::combine(old, removed, added, |k| self.leaf_col(leaf, k));
        let mut old = old;
        for k in (0..d).rev() {
            let (p, i) = (path.node[k], path.idx[k] as usize);
            if old == new {
                return;
            }
            self.set_entry(p, i, new);
            if k == 0 {
                return;
            }
            let (gp, gi) = (path.node[k - 1], path.idx[k - 1] as usize);
            let old_node = self.entry(gp, gi);
            let new_node = Self::combine(old_node, old, new, |k| self.inner_col(p, k));
            old = old_node;
            new = new_node;
        }
    }

    /// A node's summary after one of its parts went from `removed` to
    /// `added` (column by column), given the node's old summary `old`;
    /// `rescan(k)` computes column `k` from scratch where that is needed
    /// (its maximum went, and nothing as large came).
    #[inline]
    fn combine(old: Sum, removed: Sum, added: Sum, rescan: impl Fn(usize) -> u64) -> Sum {
        let mut out = old;
        for k in 0..NSUM {
            if added[k] >= old[k] {
                out[k] = added[k];
            } else if removed[k] >= old[k] {
                out[k] = rescan(k);
            }
        }
        out
    }

    #[inline]
    fn entry(&self, p: u32, i: usize) -> Sum {
        let node = &self.inners[p as usize];
        [node.mx[0][i], node.mx[1][i], node.mx[2][i]]
    }

    /// Recomputes every summary on the path to the leaf `addr` routes to.
    fn resync(&mut self, addr: u64) {
        let (path, leaf) = self.descend(addr);
        let mut s = self.leaf_sum(leaf);
        for k in (0..path.n).rev() {
            let (p, i) = (path.node[k], path.idx[k] as usize);
            self.set_entry(p, i, s);
            s = self.inner_sum(p);
        }
    }

    /// The separator between the subtree of `path`'s leaf and the next
    /// subtree to its right, if there is one.
    fn sep_right_slot(&self, path: &Path) -> Option<(u32, usize)> {
        (0..path.n).rev().find_map(|k| {
            let (p, i) = (path.node[k], path.idx[k] as usize);
            (i + 1 < self.inners[p as usize].n as usize).then_some((p, i + 1))
        })
    }

    fn set_sep_right(&mut self, path: &Path, v: u64) {
        if let Some((p, i)) = self.sep_right_slot(path) {
            self.inners[p as usize].key[i] = v;
        }
    }

    fn set_sep_left(&mut self, path: &Path, v: u64) {
        let slot = (0..path.n).rev().find_map(|k| {
            let (p, i) = (path.node[k], path.idx[k] as usize);
            (i > 0).then_some((p, i))
        });
        if let Some((p, i)) = slot {
            self.inners[p as usize].key[i] = v;
        }
    }

    fn new_leaf(&mut self) -> u32 {
        if let Some(id) = self.spare_leaves.pop() {
            self.leaves[id as usize] = Leaf::EMPTY;
            id
        } else {
            grow(&mut self.leaves);
            self.leaves.push(Leaf::EMPTY);
            (self.leaves.len() - 1) as u32
        }
    }

    fn new_inner(&mut self) -> u32 {
        if let Some(id) = self.spare_inners.pop() {
            self.inners[id as usize] = Inner::EMPTY;
            id
        } else {
            grow(&mut self.inners);
            self.inners.push(Inner::EMPTY);
            (self.inners.len() - 1) as u32
        }
    }

    /// Inserts the hole `[s, e)` at `pos` of `leaf` (the caller has made
    /// the separators allow it there), splitting nodes as needed.
    /// `removed` and `added` are as in [`Self::fix_up`], for the leaf's
    /// change including this hole.
    #[allow(clippy::too_many_arguments)]
    fn insert_slot(
        &mut self,
        path: Path,
        leaf: u32,
        pos: usize,
        s: u64,
        e: u64,
        removed: Sum,
        added: Sum,
    ) {
        let l = &mut self.leaves[leaf as usize];
        let n = l.n as usize;
        if n < LC {
            l.s.copy_within(pos..n, pos + 1);
            l.e.copy_within(pos..n, pos + 1);
            l.s[pos] = s;
            l.e[pos] = e;
            l.n += 1;
            self.fix_up(&path, leaf, removed, added);
            return;
        }
        if path.n > 0 && self.spill(&path, leaf, pos, s, e) {
            return;
        }
        // Split: the upper half moves to a new leaf on the right.
        let r = self.new_leaf();
        let half = LC / 2;
        let (ls, le, lnext) = {
            let l = &self.leaves[leaf as usize];
            (l.s, l.e, l.next)
        };
        {
            let rl = &mut self.leaves[r as usize];
            rl.s[..LC - half].copy_from_slice(&ls[half..]);
            rl.e[..LC - half].copy_from_slice(&le[half..]);
            rl.n = (LC - half) as u32;
            rl.prev = leaf;
            rl.next = lnext;
        }
        if lnext != NIL {
            self.leaves[lnext as usize].prev = r;
        }
        {
            let l = &mut self.leaves[leaf as usize];
            l.n = half as u32;
            l.next = r;
        }
        let (tgt, tpos) = if pos <= half {
            (leaf, pos)
        } else {
            (r, pos - half)
        };
        {
            let t = &mut self.leaves[tgt as usize];
            let tn = t.n as usize;
            t.s.copy_within(tpos..tn, tpos + 1);
            t.e.copy_within(tpos..tn, tpos + 1);
            t.s[tpos] = s;
            t.e[tpos] = e;
            t.n += 1;
        }
        let sep = self.leaves[r as usize].s[0];
        let (sl, sr) = (self.leaf_sum(leaf), self.leaf_sum(r));
        self.insert_child(&path, path.n, sep, r, sl, sr);
        self.resync(s);
    }

    /// Inserts `[s, e)` at `pos` of the full `leaf` by passing its last
    /// hole to the next leaf under the same parent, or its first to the
    /// previous one, where that leaf has room for two more; false (and
    /// nothing changed) where neither has. Leaves stay fuller than splits
    /// alone leave them: the heap's memory per hole.
    fn spill(&mut self, path: &Path, leaf: u32, pos: usize, s: u64, e: u64) -> bool {
        let (p, i) = (path.node[path.n - 1], path.idx[path.n - 1] as usize);
        let (right, left) = {
            let node = &self.inners[p as usize];
            let n = node.n as usize;
            (
                (i + 1 < n).then(|| node.child[i + 1]),
                (i > 0).then(|| node.child[i - 1]),
            )
        };
        let room = |id: u32| (self.leaves[id as usize].n as usize) < LC - 1;
        let (to_right, sib) = match (right.filter(|&r| room(r)), left.filter(|&l| room(l))) {
            (Some(r), _) => (true, r),
            (None, Some(l)) => (false, l),
            (None, None) => return false,
        };
        // The leaf's holes with the new one, in order.
        let mut hs = [0u64; LC + 1];
        let mut he = [0u64; LC + 1];
        {
            let l = &self.leaves[leaf as usize];
            hs[..pos].copy_from_slice(&l.s[..pos]);
            he[..pos].copy_from_slice(&l.e[..pos]);
            hs[pos] = s;
            he[pos] = e;
            hs[pos + 1..].copy_from_slice(&l.s[pos..]);
            he[pos + 1..].copy_from_slice(&l.e[pos..]);
        }
        if to_right {
            let l = &mut self.leaves[leaf as usize];
            l.s.copy_from_slice(&hs[..LC]);
            l.e.copy_from_slice(&he[..LC]);
            let r = &mut self.leaves[sib as usize];
            let rn = r.n as usize;
            r.s.copy_within(0..rn, 1);
            r.e.copy_within(0..rn, 1);
            r.s[0] = hs[LC];
            r.e[0] = he[LC];
            r.n += 1;
            self.inners[p as usize].key[i + 1] = hs[LC];
        } else {
            let l = &mut self.leaves[leaf as usize];
            l.s.copy_from_slice(&hs[1..]);
            l.e.copy_from_slice(&he[1..]);
            let lf = &mut self.leaves[sib as usize];
            let ln = lf.n as usize;
            lf.s[ln] = hs[0];
            lf.e[ln] = he[0];
            lf.n += 1;
            self.inners[p as usize].key[i] = hs[1];
        }
        let sib_i = if to_right { i + 1 } else { i - 1 };
        let (sl, ss) = (self.leaf_sum(leaf), self.leaf_sum(sib));
        self.set_entry(p, i, sl);
        self.set_entry(p, sib_i, ss);
        self.resync(s);
        true
    }

    /// The node at depth `d` of `path` (depth `path.n` is the leaf, 0 the
    /// root) split, and `right` (summary `sr`) goes into its parent just
    /// after it, with separator `sep`; the split node's summary is now
    /// `sl`. Splits upwards as needed; a split root makes a new root.
    fn insert_child(&mut self, path: &Path, d: usize, sep: u64, right: u32, sl: Sum, sr: Sum) {
        if d == 0 {
            let old = self.root;
            let nr = self.new_inner();
            let node = &mut self.inners[nr as usize];
            node.n = 2;
            node.child[0] = old;
            node.child[1] = right;
            node.key[1] = sep;
            for k in 0..NSUM {
                node.mx[k][0] = sl[k];
                node.mx[k][1] = sr[k];
            }
            self.root = nr;
            self.height += 1;
            return;
        }
        let (p, i) = (path.node[d - 1], path.idx[d - 1] as usize);
        self.set_entry(p, i, sl);
        let n = self.inners[p as usize].n as usize;
        if n < IC {
            let node = &mut self.inners[p as usize];
            node.key.copy_within(i + 1..n, i + 2);
            node.child.copy_within(i + 1..n, i + 2);
            for k in 0..NSUM {
                node.mx[k].copy_within(i + 1..n, i + 2);
                node.mx[k][i + 1] = sr[k];
            }
            node.key[i + 1] = sep;
            node.child[i + 1] = right;
            node.n += 1;
            return;
        }
        // Split the parent: entries `half..` move to a new node.
        let r = self.new_inner();
        let half = IC / 2;
        let old = self.inners[p as usize].clone();
        {
            let rn = &mut self.inners[r as usize];
            rn.key[..IC - half].copy_from_slice(&old.key[half..]);
            rn.child[..IC - half].copy_from_slice(&old.child[half..]);
            for k in 0..NSUM {
                rn.mx[k][..IC - half].copy_from_slice(&old.mx[k][half..]);
            }
            rn.n = (IC - half) as u32;
        }
        self.inners[p as usize].n = half as u32;
        let (t, ti) = if i < half { (p, i) } else { (r, i - half) };
        {
            let node = &mut self.inners[t as usize];
            let tn = node.n as usize;
            node.key.copy_within(ti + 1..tn, ti + 2);
            node.child.copy_within(ti + 1..tn, ti + 2);
            for k in 0..NSUM {
                node.mx[k].copy_within(ti + 1..tn, ti + 2);
                node.mx[k][ti + 1] = sr[k];
            }
            node.key[ti + 1] = sep;
            node.child[ti + 1] = right;
            node.n += 1;
        }
        // The first key of the new node separates it from `p`.
        let sep2 = self.inners[r as usize].key[0];
        let (sp, srr) = (self.inner_sum(p), self.inner_sum(r));
        self.insert_child(path, d - 1, sep2, r, sp, srr);
    }

    /// Deletes hole `pos` of `leaf` (reached by `path`), merging or
    /// levelling nodes that fall below their minimum. `addr` is an address
    /// whose leaf afterwards holds what changed (for the summaries).
    /// `removed` and `added` are as in [`Self::fix_up`].
    fn delete_slot(
        &mut self,
        path: Path,
        leaf: u32,
        pos: usize,
        addr: u64,
        removed: Sum,
        added: Sum,
    ) {
        let l = &mut self.leaves[leaf as usize];
        let n = l.n as usize;
        l.s.copy_within(pos + 1..n, pos);
        l.e.copy_within(pos + 1..n, pos);
        l.n -= 1;
        if path.n == 0 || n > LMIN {
            self.fix_up(&path, leaf, removed, added);
            return;
        }
        self.rebalance_leaf(&path, leaf);
        self.resync(addr);
    }

    fn rebalance_leaf(&mut self, path: &Path, leaf: u32) {
        let d = path.n;
        let (p, i) = (path.node[d - 1], path.idx[d - 1] as usize);
        let (li, ri) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
        let (lid, rid) = {
            let node = &self.inners[p as usize];
            (node.child[li], node.child[ri])
        };
        let _ = leaf;
        let (ln, rn) = (
            self.leaves[lid as usize].n as usize,
            self.leaves[rid as usize].n as usize,
        );
        if ln + rn <= LMERGE {
            // Merge the right leaf into the left one.
            let r = self.leaves[rid as usize].clone();
            {
                let l = &mut self.leaves[lid as usize];
                l.s[ln..ln + rn].copy_from_slice(&r.s[..rn]);
                l.e[ln..ln + rn].copy_from_slice(&r.e[..rn]);
                l.n = (ln + rn) as u32;
                l.next = r.next;
            }
            if r.next != NIL {
                self.leaves[r.next as usize].prev = lid;
            }
            self.spare_leaves.push(rid);
            let sl = self.leaf_sum(lid);
            self.set_entry(p, li, sl);
            self.remove_entry(path, d - 1, ri);
        } else {
            // Level the two: the left takes the first half.
            let total = ln + rn;
            let want_l = total / 2;
            let (l, r) = (
                self.leaves[lid as usize].clone(),
                self.leaves[rid as usize].clone(),
            );
            let mut s = [0u64; 2 * LC];
            let mut e = [0u64; 2 * LC];
            s[..ln].copy_from_slice(&l.s[..ln]);
            s[ln..total].copy_from_slice(&r.s[..rn]);
            e[..ln].copy_from_slice(&l.e[..ln]);
            e[ln..total].copy_from_slice(&r.e[..rn]);
            {
                let l = &mut self.leaves[lid as usize];
                l.s[..want_l].copy_from_slice(&s[..want_l]);
                l.e[..want_l].copy_from_slice(&e[..want_l]);
                l.n = want_l as u32;
            }
            {
                let r = &mut self.leaves[rid as usize];
                r.s[..total - want_l].copy_from_slice(&s[want_l..total]);
                r.e[..total - want_l].copy_from_slice(&e[want_l..total]);
                r.n = (total - want_l) as u32;
            }
            self.inners[p as usize].key[ri] = s[want_l];
            let (sl, sr) = (self.leaf_sum(lid), self.leaf_sum(rid));
            self.set_entry(p, li, sl);
            self.set_entry(p, ri, sr);
        }
    }

    /// Removes entry `i` of the inner node at depth `d` of `path` (whose
    /// child was merged into its left sibling), then repairs that node.
    fn remove_entry(&mut self, path: &Path, d: usize, i: usize) {
        let id = path.node[d];
        {
            let node = &mut self.inners[id as usize];
            let n = node.n as usize;
            node.key.copy_within(i + 1..n, i);
            node.child.copy_within(i + 1..n, i);
            for k in 0..NSUM {
                node.mx[k].copy_within(i + 1..n, i);
            }
            node.n -= 1;
        }
        let n = self.inners[id as usize].n as usize;
        if d == 0 {
            if n == 1 {
                // The root has one child left: it becomes the root.
                self.root = self.inners[id as usize].child[0];
                self.height -= 1;
                self.spare_inners.push(id);
            }
            return;
        }
        if n >= IMIN {
            return;
        }
        let (p, pi) = (path.node[d - 1], path.idx[d - 1] as usize);
        let (li, ri) = if pi > 0 { (pi - 1, pi) } else { (pi, pi + 1) };
        let (lid, rid, sep) = {
            let node = &self.inners[p as usize];
            (node.child[li], node.child[ri], node.key[ri])
        };
        let (ln, rn) = (
            self.inners[lid as usize].n as usize,
            self.inners[rid as usize].n as usize,
        );
        if ln + rn <= IMERGE {
            let mut r = self.inners[rid as usize].clone();
            r.key[0] = sep;
            {
                let l = &mut self.inners[lid as usize];
                l.key[ln..ln + rn].copy_from_slice(&r.key[..rn]);
                l.child[ln..ln + rn].copy_from_slice(&r.child[..rn]);
                for k in 0..NSUM {
                    l.mx[k][ln..ln + rn].copy_from_slice(&r.mx[k][..rn]);
                }
                l.n = (ln + rn) as u32;
            }
            self.spare_inners.push(rid);
            let sl = self.inner_sum(lid);
            self.set_entry(p, li, sl);
            self.remove_entry(path, d - 1, ri);
        } else {
            let total = ln + rn;
            let want_l = total / 2;
            let (l, mut r) = (
                self.inners[lid as usize].clone(),
                self.inners[rid as usize].clone(),
            );
            r.key[0] = sep;
            let mut key = [0u64; 2 * IC];
            let mut child = [0u32; 2 * IC];
            let mut mx = [[0u64; 2 * IC]; NSUM];
            key[..ln].copy_from_slice(&l.key[..ln]);
            key[ln..total].copy_from_slice(&r.key[..rn]);
            child[..ln].copy_from_slice(&l.child[..ln]);
            child[ln..total].copy_from_slice(&r.child[..rn]);
            for k in 0..NSUM {
                mx[k][..ln].copy_from_slice(&l.mx[k][..ln]);
                mx[k][ln..total].copy_from_slice(&r.mx[k][..rn]);
            }
            {
                let l = &mut self.inners[lid as usize];
                l.key[..want_l].copy_from_slice(&key[..want_l]);
                l.child[..want_l].copy_from_slice(&child[..want_l]);
                for k in 0..NSUM {
                    l.mx[k][..want_l].copy_from_slice(&mx[k][..want_l]);
                }
                l.n = want_l as u32;
            }
            {
                let rr = &mut self.inners[rid as usize];
                let m = total - want_l;
                rr.key[..m].copy_from_slice(&key[want_l..total]);
                rr.child[..m].copy_from_slice(&child[want_l..total]);
                for k in 0..NSUM {
                    rr.mx[k][..m].copy_from_slice(&mx[k][want_l..total]);
                }
                rr.n = m as u32;
            }
            self.inners[p as usize].key[ri] = key[want_l];
            let (sl, sr) = (self.inner_sum(lid), self.inner_sum(rid));
            self.set_entry(p, li, sl);
            self.set_entry(p, ri, sr);
        }
    }

    /// Panics if the tree breaks one of its invariants (for tests).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        if self.flat {
            assert!(
                self.holes <= FLAT_MAX,
                "{} holes in the flat form",
                self.holes
            );
            assert!(self.height == 0 && self.leaves.is_empty() && self.inners.is_empty());
            for w in self.list.windows(2) {
                assert!(
                    w[0].1 < w[1].0,
                    "holes out of order or touching at {:#x}",
                    w[1].0
                );
            }
            assert!(self.list.iter().all(|h| h.0 < h.1), "an empty hole");
            assert_eq!(self.list.len(), self.holes, "hole count");
            let bytes: u64 = self.list.iter().map(|h| h.1 - h.0).sum();
            assert_eq!(bytes, self.bytes, "free bytes");
            return;
        }
        assert!(self.list.is_empty());
        assert!(
            self.holes >= FLAT_MIN,
            "{} holes in the tree form",
            self.holes
        );
        let mut leaves = Vec::new();
        let sum = self.check_node(self.root, self.height, true, &mut leaves);
        let _ = sum;
        // Leaf links and global order.
        let mut holes = 0usize;
        let mut bytes = 0u64;
        let mut last_end: Option<u64> = None;
        for (k, &id) in leaves.iter().enumerate() {
            let l = &self.leaves[id as usize];
            let want_prev = if k == 0 { NIL } else { leaves[k - 1] };
            let want_next = leaves.get(k + 1).copied().unwrap_or(NIL);
            assert_eq!(l.prev, want_prev, "leaf {id} prev link");
            assert_eq!(l.next, want_next, "leaf {id} next link");
            for i in 0..l.n as usize {
                assert!(l.s[i] < l.e[i], "empty hole in leaf {id}");
                if let Some(pe) = last_end {
                    assert!(
                        pe < l.s[i],
                        "holes out of order or touching at {:#x}",
                        l.s[i]
                    );
                }
                last_end = Some(l.e[i]);
                holes += 1;
                bytes += l.e[i] - l.s[i];
            }
        }
        assert_eq!(holes, self.holes, "hole count");
        assert_eq!(bytes, self.bytes, "free bytes");
        let reached = leaves.len() + self.count_inners(self.root, self.height);
        assert_eq!(
            reached + self.spare_leaves.len() + self.spare_inners.len(),
            self.leaves.len() + self.inners.len(),
            "nodes lost or shared"
        );
    }

    fn count_inners(&self, id: u32, level: u32) -> usize {
        if level == 0 {
            return 0;
        }
        let node = &self.inners[id as usize];
        1 + (0..node.n as usize)
            .map(|i| self.count_inners(node.child[i], level - 1))
            .sum::<usize>()
    }

    /// Checks the subtree; returns its summary and (lowest start, highest
    /// end) of its holes.
    fn check_node(
        &self,
        id: u32,
        level: u32,
        root: bool,
        leaves: &mut Vec<u32>,
    ) -> (Sum, Option<(u64, u64)>) {
        if level == 0 {
            let l = &self.leaves[id as usize];
            let n = l.n as usize;
            assert!(n <= LC);
            assert!(root || n >= LMIN, "leaf {id} has {n} holes");
            leaves.push(id);
            let span = (n > 0).then(|| (l.s[0], l.e[n - 1]));
            return (self.leaf_sum(id), span);
        }
        let node = &self.inners[id as usize];
        let n = node.n as usize;
        assert!(n <= IC);
        assert!(
            if root { n >= 2 } else { n >= IMIN },
            "inner {id} has {n} children"
        );
        let mut span: Option<(u64, u64)> = None;
        let mut prev_end: Option<u64> = None;
        for i in 0..n {
            let (s, cs) = self.check_node(node.child[i], level - 1, false, leaves);
            for k in 0..NSUM {
                assert_eq!(node.mx[k][i], s[k], "inner {id} child {i} column {k}");
            }
            let (lo, hi) = cs.expect("a non-root node without holes");
            if i > 0 {
                let pe = prev_end.expect("previous child's end");
                assert!(
                    pe <= node.key[i] && node.key[i] <= lo,
                    "inner {id} key {i} {:#x} not in [{pe:#x}, {lo:#x}]",
                    node.key[i]
                );
            }
            prev_end = Some(hi);
            span = Some(span.map_or((lo, hi), |(a, _)| (a, hi)));
        }
        (self.inner_sum(id), span)
    }
}

/// Iterator over a [`VaHeap`]'s holes, see [`VaHeap::holes`].
pub struct Holes<'a> {
    heap: &'a VaHeap,
    leaf: u32,
    slot: usize,
}

impl Iterator for Holes<'_> {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        if self.heap.flat {
            let h = self.heap.list.get(self.slot).copied();
            self.slot += 1;
            return h;
        }
        loop {
            if self.leaf == NIL {
                return None;
            }
            let l = &self.heap.leaves[self.leaf as usize];
            if self.slot < l.n as usize {
                let h = (l.s[self.slot], l.e[self.slot]);
                self.slot += 1;
                return Some(h);
            }
            self.leaf = l.next;
            self.slot = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap_model::HoleModel;
    use alloc::vec;

    /// A tiny deterministic generator (SplitMix64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_against_a_hole_list() {
        const P: u64 = 0x1000;
        let mut tallest = 0;
        for seed in 0..6u64 {
            let mut rng = Rng(seed);
            let mut h = VaHeap::new();
            let mut m = HoleModel::default();
            let mut live: Vec<(u64, u64)> = Vec::new();
            let span = 1u64 << (24 + seed * 4);
            assert!(h.free(0, span).is_ok());
            assert!(m.free(0, span).is_ok());
            for step in 0..6000 {
                let grow = step < 3000;
                if live.is_empty() || (grow && rng.below(3) > 0) || rng.below(2) == 0 {
                    let pages = 1 + rng.below(if seed % 2 == 0 { 8 } else { 600 });
                    let align = P << [0, 0, 0, 4, 9, 3][rng.below(6) as usize];
                    let req = FitRequest {
                        length: pages * P,
                        low: rng.below(4) * (span / 8),
                        high: span - rng.below(3) * (span / 16),
                        align,
                        align_offset: if rng.below(4) == 0 {
                            P * rng.below(4)
                        } else {
                            0
                        },
                        topdown: rng.below(2) == 0,
                        respect_guard_gaps: false,
                    };
                    let want = m.fit(&req, None).ok();
                    let got = h.alloc(&req).ok();
                    assert_eq!(got, want, "seed {seed} step {step} {req:?}");
                    if let Some(a) = got {
                        m.alloc_at(a, a + req.length).unwrap();
                        live.push((a, a + req.length));
                    }
                } else {
                    let i = rng.below(live.len() as u64) as usize;
                    let (a, b) = live.swap_remove(i);
                    assert!(h.free(a, b).is_ok(), "seed {seed} step {step}");
                    assert!(m.free(a, b).is_ok());
                    // A second free of the same range is refused.
                    assert!(matches!(h.free(a, b), Err(HeapError::AlreadyFree { .. })));
                }
                tallest = tallest.max(h.height);
                if step % 97 == 0 || h.hole_count() < 40 {
                    h.check_invariants();
                    assert!(
                        h.holes().eq(m.holes().iter().copied()),
                        "seed {seed} step {step}"
                    );
                }
            }
            h.check_invariants();
            for (a, b) in live.drain(..) {
                h.free(a, b).unwrap();
                m.free(a, b).unwrap();
            }
            h.check_invariants();
            assert_eq!(h.holes().collect::<Vec<_>>(), vec![(0, span)]);
            assert_eq!(h.height, 0);
        }
        // The runs built trees of several levels (splits and merges of
        // inner nodes happened).
        assert!(tallest >= 2, "tallest tree {tallest}");
    }

    /// The node bytes a heap reaches from its root, its spare lists and
    /// its array: what `heap_bytes` must at least count.
    fn reached_bytes(h: &VaHeap) -> usize {
        let leaves = if h.flat {
            0
        } else {
            let mut n = 0;
            let mut id = h.root;
            for _ in 0..h.height {
                id = h.inners[id as usize].child[0];
            }
            while id != NIL {
                n += 1;
                id = h.leaves[id as usize].next;
            }
            n
        };
        let inners = if h.flat {
            0
        } else {
            h.count_inners(h.root, h.height)
        };
        leaves * core::mem::size_of::<Leaf>()
            + inners * core::mem::size_of::<Inner>()
            + (h.spare_leaves.len() + h.spare_inners.len()) * 4
            + h.list.len() * core::mem::size_of::<(u64, u64)>()
    }

    #[test]
    fn memory_is_counted_and_grows_by_an_eighth() {
        const P: u64 = 0x1000;
        let mut h = VaHeap::new();
        // Every other page of a range: one hole per page pair.
        for k in 0..20_000u64 {
            h.free(2 * k * P, (2 * k + 1) * P).unwrap();
            if k % 997 == 0 || k == 200 || k == 300 {
                let (reached, counted) = (reached_bytes(&h), h.heap_bytes());
                assert!(counted >= reached, "{counted} < {reached} at {k}");
                // Arenas at most an eighth (or 4 nodes) over what they hold.
                for (len, cap) in [
                    (h.leaves.len(), h.leaves.capacity()),
                    (h.inners.len(), h.inners.capacity()),
                ] {
                    assert!(cap - len <= (len / 8).max(4), "{len} nodes in {cap}");
                }
                if !h.flat {
                    let slack = counted - reached;
                    assert!(
                        slack * 6 <= counted,
                        "{slack} of {counted} bytes unused at {k}"
                    );
                }
            }
        }
        assert!(!h.flat && h.height >= 2);
        // The tree at 20,000 holes appended in order: leaves pass holes
        // to their neighbours before they split, so they stay nearly full.
        let per_hole = h.heap_bytes() / h.hole_count();
        assert!((16..=24).contains(&per_hole), "{per_hole} bytes per hole");
        // Draining gives the tree back.
        for k in 0..20_000u64 {
            h.alloc_at(2 * k * P, (2 * k + 1) * P).unwrap();
        }
        // The same holes freed from the top down: the full leaf is the
        // first of its parent's, and passes its last hole to the right.
        let mut d = VaHeap::new();
        for k in (0..20_000u64).rev() {
            d.free(2 * k * P, (2 * k + 1) * P).unwrap();
        }
        d.check_invariants();
        let per_hole = d.heap_bytes() / d.hole_count();
        assert!(
            (16..=24).contains(&per_hole),
            "{per_hole} bytes per hole, top down"
        );
        assert_eq!(h.hole_count(), 0);
        assert!(h.flat);
        let most = (FLAT_MAX + 1) * core::mem::size_of::<(u64, u64)>();
        assert!(h.heap_bytes() <= most, "{} bytes left", h.heap_bytes());
    }

    /// The separator right of a leaf must follow its last hole up when a
    /// free extends that hole: build trees where the separator equals the
    /// last hole's end (a free that lands at the end of a leaf sets it
    /// so), then extend the hole.
    #[test]
    fn a_separator_follows_the_last_hole_of_its_leaf() {
        const P: u64 = 0x1000;
        let mut exercised = 0;
        for skip in 0..40u64 {
            let mut h = VaHeap::new();
            for k in 0..400u64 {
                h.free(k * 8 * P, k * 8 * P + P).unwrap();
            }
            assert!(!h.flat);
            // A leaf (not the last) of the tree, picked by `skip`.
            let mut id = h.root;
            for _ in 0..h.height {
                id = h.inners[id as usize].child[0];
            }
            for _ in 0..skip {
                id = h.leaves[id as usize].next;
            }
            let l = &h.leaves[id as usize];
            if l.next == NIL {
                break;
            }
            let x = l.s[l.n as usize - 1];
            // A hole between the leaf's last hole and the next leaf's
            // first, touching neither: it goes at the end of this leaf and
            // its end becomes the separator. Taking its top page back
            // leaves the separator above the hole's end.
            h.free(x + 3 * P, x + 5 * P).unwrap();
            h.alloc_at(x + 4 * P, x + 5 * P).unwrap();
            h.check_invariants();
            let (path, leaf) = h.descend(x + 3 * P);
            let l = &h.leaves[leaf as usize];
            let last = l.n as usize - 1;
            let sep = h
                .sep_right_slot(&path)
                .map(|(p, i)| h.inners[p as usize].key[i]);
            if l.s[last] != x + 3 * P || sep != Some(x + 5 * P) {
                continue;
            }
            // Extend the hole past the separator (from below it, so the
            // free lands in this leaf): the separator must move up.
            h.free(x + 4 * P, x + 6 * P).unwrap();
            h.check_invariants();
            assert_eq!(
                h.sep_right_slot(&path)
                    .map(|(p, i)| h.inners[p as usize].key[i]),
                Some(x + 6 * P)
            );
            exercised += 1;
        }
        assert!(exercised >= 10, "{exercised} leaves exercised");
    }
}
