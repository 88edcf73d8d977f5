//! The raw search structure: a B+tree of VMAs in two arenas, augmented with
//! the largest free gap of every subtree.
//!
//! # Invariants
//!
//! Every function in this module relies on, and restores, these:
//!
//! 1. **Order.** Leaves hold VMAs sorted by `start`; an in-order walk of the
//!    tree yields all VMAs sorted, non-overlapping (`prev.end <= next.start`)
//!    and non-empty (`start < end`). So `end` is sorted too.
//! 2. **Shape.** Every leaf is at depth `height`. Every leaf other than the
//!    root holds between `LMIN` and `LCAP` VMAs, every inner node other than
//!    the root between `MIN` and `CAP` children; a root leaf may be empty, a
//!    root inner node has at least 2 children.
//! 3. **Augmentation.** An inner node keeps, for each child `c`, the
//!    child's aggregate: `min_start` and `max_end` over the subtree and
//!    `max_gap`, the largest *internal* hole of the subtree (the largest
//!    `q.start - p.end` over consecutive VMAs `p`, `q` both in it; 0 if none)
//!    and, per alignment class (64 KiB, 2 MiB), the largest aligned *room*
//!    of those holes (the longest class-aligned range inside one).
//!    The holes between two children are computed from their neighbours'
//!    `max_end`/`min_start`; the holes below the first VMA and above the last
//!    one belong to nobody and are handled in `map.rs`.
//!
//! 4. **Hole cache.** An inner node whose `bvalid` is set holds in `bmax`
//!    the maxima (largest hole, largest room per class) of the holes between
//!    its consecutive children, as their spans give them. Every change of a
//!    child's span or of the list of children clears `bvalid`; recomputing a
//!    node's maxima after a change of a child's maxima alone
//!    ([`Inner::agg_cached`]) then takes the per-child columns and the cache,
//!    not the `n - 1` holes.
//!
//! Invariant 3 is local: a node's aggregate depends only on its entries, so
//! every mutation recomputes the aggregates on its path back up, at most
//! O(CAP) per level, and usually O(1): each level reports a `Delta` to its
//! parent, a split hole or a merged hole is folded in without a rescan
//! unless it held a maximum, and the walk stops at the first level whose
//! aggregate did not change. Nobody computes the root's aggregate. Per-child aggregates sit in separate arrays, so the scans
//! of a search read one or two cache lines per array and level.
//!
//! Nodes are named by `u32` indices into the two arenas; freed nodes go on a
//! free list. No `unsafe`.

// Per-class columns are indexed `room[c][i]`; index loops read better than
// zipped iterators over two dimensions.
#![allow(clippy::needless_range_loop)]

use alloc::vec::Vec;

/// Children per inner node.
pub(crate) const CAP: usize = 16;
/// Entries per leaf: leaves are wider than inner nodes, so there are half
/// as many inner nodes (each carries six per-child columns) per VMA.
pub(crate) const LCAP: usize = 32;
/// Minimum entries of a non-root leaf.
pub(crate) const LMIN: usize = LCAP / 2;
/// Minimum children of a non-root inner node.
pub(crate) const MIN: usize = CAP / 2;

/// Alignment classes whose largest aligned room every subtree caches:
/// 64 KiB (the big page of most GPUs) and 2 MiB (a PMD, the huge page).
/// Larger alignments prune with the 2 MiB class: still correct (a
/// necessary condition), no longer exact.
pub(crate) const ROOM_SHIFTS: [u32; NCLASS] = [16, 21];
// `fold_hole` relies on the classes growing coarser.
const _: () = assert!(ROOM_SHIFTS[0] < ROOM_SHIFTS[1]);
/// Number of alignment classes.
pub(crate) const NCLASS: usize = 2;

/// The aggregate of a subtree (invariant 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Agg {
    pub min_start: u64,
    pub max_end: u64,
    pub max_gap: u64,
    /// Per alignment class `c`: the largest `room(hole, ROOM_SHIFTS[c])`
    /// over the internal holes of the subtree.
    pub room: [u64; NCLASS],
}

impl Agg {
    /// Raises the maxima to those of `other`.
    #[inline]
    fn take_max(&mut self, other: &Agg) {
        self.max_gap = self.max_gap.max(other.max_gap);
        for c in 0..NCLASS {
            self.room[c] = self.room[c].max(other.room[c]);
        }
    }

    /// Folds the hole `[gs, ge)` into the maxima (holes only ever merge
    /// into bigger ones on removal, so folding the merged hole is exact).
    #[inline]
    fn fold(&mut self, gs: u64, ge: u64) {
        fold_hole(&mut self.max_gap, &mut self.room, gs, ge);
    }

    /// True if splitting the hole `[gs, ge)` into smaller ones cannot lower
    /// any maximum: in every component the hole is below the maximum (or
    /// zero, which nothing can go below).
    #[inline]
    fn survives_split_of(&self, gs: u64, ge: u64) -> bool {
        let g = ge - gs;
        if !(g < self.max_gap || g == 0) {
            return false;
        }
        (0..NCLASS).all(|c| {
            let r = room(gs, ge, ROOM_SHIFTS[c]);
            r < self.room[c] || r == 0
        })
    }
}

/// The maxima of an aggregate (largest hole, largest room per class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Maxima {
    gap: u64,
    room: [u64; NCLASS],
}

impl Maxima {
    #[inline]
    fn of_agg(a: &Agg) -> Self {
        Maxima {
            gap: a.max_gap,
            room: a.room,
        }
    }

    /// Child `i`'s stored maxima.
    #[inline]
    fn of_child(node: &Inner, i: usize) -> Self {
        let mut room = [0; NCLASS];
        for k in 0..NCLASS {
            room[k] = node.room[k][i];
        }
        Maxima {
            gap: node.max_gap[i],
            room,
        }
    }

    /// The componentwise maximum of `self` and `other`.
    #[inline]
    fn raised_by(mut self, other: &Maxima) -> Self {
        self.gap = self.gap.max(other.gap);
        for k in 0..NCLASS {
            self.room[k] = self.room[k].max(other.room[k]);
        }
        self
    }
}

/// How a child's aggregate moved, as a leaf reports it to its parent.
#[derive(Clone, Copy, Debug)]
enum Delta {
    /// Unchanged.
    Same,
    /// Changed to this.
    New(Agg),
    /// Changed (or the leaf was not told the old value): recompute.
    Unknown,
}

/// The maxima contributed by the single hole `[gs, ge)` (span fields 0).
#[inline]
fn hole_agg(gs: u64, ge: u64) -> Agg {
    let mut a = Agg {
        min_start: 0,
        max_end: 0,
        max_gap: 0,
        room: [0; NCLASS],
    };
    if gs < ge {
        a.fold(gs, ge);
    }
    a
}

/// True if some maximum of `o` may have been held by `was` alone and
/// `now` is below it: then `o` must be recomputed.
#[inline]
fn shrank_a_max(o: &Agg, was: &Agg, now: &Agg) -> bool {
    let lost = |w: u64, n: u64, m: u64| n < w && w == m && m > 0;
    lost(was.max_gap, now.max_gap, o.max_gap)
        || (0..NCLASS).any(|c| lost(was.room[c], now.room[c], o.room[c]))
}

/// The room of the hole `[gs, ge)` after aligning its start up to
/// `2^shift`: the longest `2^shift`-aligned range that fits in it.
/// Branch-free: an alignment that wraps past 2^64 leaves no room.
#[inline]
pub(crate) fn room(gs: u64, ge: u64, shift: u32) -> u64 {
    let mask = (1u64 << shift) - 1;
    let up = gs.wrapping_add(mask) & !mask;
    let r = ge.saturating_sub(up);
    if up >= gs {
        r
    } else {
        0
    }
}

/// Folds the hole `[gs, ge)` into the running maxima.
#[inline]
fn fold_hole(gap: &mut u64, rooms: &mut [u64; NCLASS], gs: u64, ge: u64) {
    let g = ge - gs;
    *gap = (*gap).max(g);
    // A room never exceeds its hole, so a hole no longer than the best room
    // so far cannot raise it. The classes grow coarser with `c`, so every
    // hole's (and every maximum's) room shrinks with `c`, and the last
    // class has the smallest best room: one test decides for all classes,
    // which are then folded without branches.
    debug_assert!(rooms.windows(2).all(|w| w[0] >= w[1]), "rooms out of order");
    if g > rooms[NCLASS - 1] {
        for c in 0..NCLASS {
            rooms[c] = rooms[c].max(room(gs, ge, ROOM_SHIFTS[c]));
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub len: u32,
    pub start: [u64; LCAP],
    pub end: [u64; LCAP],
    pub flags: [u8; LCAP],
}

impl Leaf {
    const EMPTY: Leaf = Leaf {
        len: 0,
        start: [0; LCAP],
        end: [0; LCAP],
        flags: [0; LCAP],
    };

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    pub fn agg(&self) -> Agg {
        let n = self.n();
        debug_assert!(n > 0);
        let mut gap = 0;
        let mut rooms = [0; NCLASS];
        for i in 1..n {
            fold_hole(&mut gap, &mut rooms, self.end[i - 1], self.start[i]);
        }
        Agg {
            min_start: self.start[0],
            max_end: self.end[n - 1],
            max_gap: gap,
            room: rooms,
        }
    }

    fn insert_at(&mut self, i: usize, start: u64, end: u64, flags: u8) {
        let n = self.n();
        debug_assert!(n < LCAP);
        self.start.copy_within(i..n, i + 1);
        self.end.copy_within(i..n, i + 1);
        self.flags.copy_within(i..n, i + 1);
        self.start[i] = start;
        self.end[i] = end;
        self.flags[i] = flags;
        self.len += 1;
    }

    fn remove_run(&mut self, a: usize, b: usize) {
        let n = self.n();
        self.start.copy_within(b..n, a);
        self.end.copy_within(b..n, a);
        self.flags.copy_within(b..n, a);
        self.len -= (b - a) as u32;
    }

    /// Appends `other[from..]` to `self`.
    fn append_from(&mut self, other: &Leaf, from: usize) {
        let (n, m) = (self.n(), other.n());
        let k = m - from;
        self.start[n..n + k].copy_from_slice(&other.start[from..m]);
        self.end[n..n + k].copy_from_slice(&other.end[from..m]);
        self.flags[n..n + k].copy_from_slice(&other.flags[from..m]);
        self.len += k as u32;
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Inner {
    pub len: u32,
    /// `bmax` holds the maxima of the holes between consecutive children.
    /// Cleared by every change of a child's span or of the children.
    bvalid: bool,
    pub child: [u32; CAP],
    pub min_start: [u64; CAP],
    pub max_end: [u64; CAP],
    pub max_gap: [u64; CAP],
    /// `room[c][i]`: child `i`'s aggregate room for alignment class `c`.
    pub room: [[u64; CAP]; NCLASS],
    /// See `bvalid`: lets [`Inner::agg_cached`] recompute the node's
    /// maxima from the per-child columns alone when only a child's maxima
    /// moved (the common case: a hole inside a leaf split or merged).
    bmax: Maxima,
}

/// Applies `$op` to every per-child column of an inner node.
macro_rules! columns {
    ($node:expr, |$col:ident| $op:expr) => {{
        {
            let $col = &mut $node.child;
            $op;
        }
        {
            let $col = &mut $node.min_start;
            $op;
        }
        {
            let $col = &mut $node.max_end;
            $op;
        }
        {
            let $col = &mut $node.max_gap;
            $op;
        }
        for c in 0..NCLASS {
            let $col = &mut $node.room[c];
            $op;
        }
    }};
}

/// Like `columns!`, over the same column of two inner nodes.
macro_rules! columns2 {
    ($x:expr, $y:expr, |$a:ident, $b:ident| $op:expr) => {{
        {
            let ($a, $b) = (&mut $x.child, &mut $y.child);
            $op;
        }
        {
            let ($a, $b) = (&mut $x.min_start, &mut $y.min_start);
            $op;
        }
        {
            let ($a, $b) = (&mut $x.max_end, &mut $y.max_end);
            $op;
        }
        {
            let ($a, $b) = (&mut $x.max_gap, &mut $y.max_gap);
            $op;
        }
        for c in 0..NCLASS {
            let ($a, $b) = (&mut $x.room[c], &mut $y.room[c]);
            $op;
        }
    }};
}

impl Inner {
    const EMPTY: Inner = Inner {
        len: 0,
        bvalid: false,
        child: [0; CAP],
        min_start: [0; CAP],
        max_end: [0; CAP],
        max_gap: [0; CAP],
        room: [[0; CAP]; NCLASS],
        bmax: Maxima {
            gap: 0,
            room: [0; NCLASS],
        },
    };

    /// [`Self::agg`], with the maxima of the holes between children taken
    /// from the cache (filled first if it is not valid): `agg` without the
    /// `n - 1` hole folds when no span moved since the last call.
    pub fn agg_cached(&mut self) -> Agg {
        let n = self.n();
        debug_assert!(n > 0);
        if !self.bvalid {
            let mut gap = 0;
            let mut rooms = [0; NCLASS];
            for i in 1..n {
                fold_hole(&mut gap, &mut rooms, self.max_end[i - 1], self.min_start[i]);
            }
            self.bmax = Maxima { gap, room: rooms };
            self.bvalid = true;
        }
        let mut m = self.bmax;
        for i in 0..n {
            m.gap = m.gap.max(self.max_gap[i]);
            for c in 0..NCLASS {
                m.room[c] = m.room[c].max(self.room[c][i]);
            }
        }
        Agg {
            min_start: self.min_start[0],
            max_end: self.max_end[n - 1],
            max_gap: m.gap,
            room: m.room,
        }
    }

    /// True unless the cache of the holes between children is valid and
    /// differs from them (for the invariant check).
    pub fn cache_ok(&self) -> bool {
        if !self.bvalid {
            return true;
        }
        let mut gap = 0;
        let mut rooms = [0; NCLASS];
        for i in 1..self.n() {
            fold_hole(&mut gap, &mut rooms, self.max_end[i - 1], self.min_start[i]);
        }
        self.bmax == Maxima { gap, room: rooms }
    }

    /// Marks the cache of the holes between children stale.
    #[inline]
    fn touch(&mut self) {
        self.bvalid = false;
    }

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    pub fn agg(&self) -> Agg {
        let n = self.n();
        debug_assert!(n > 0);
        let mut gap = self.max_gap[0];
        let mut rooms = [0; NCLASS];
        for c in 0..NCLASS {
            rooms[c] = self.room[c][0];
        }
        for i in 1..n {
            gap = gap.max(self.max_gap[i]);
            for c in 0..NCLASS {
                rooms[c] = rooms[c].max(self.room[c][i]);
            }
            fold_hole(&mut gap, &mut rooms, self.max_end[i - 1], self.min_start[i]);
        }
        Agg {
            min_start: self.min_start[0],
            max_end: self.max_end[n - 1],
            max_gap: gap,
            room: rooms,
        }
    }

    /// The stored aggregate of child `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Agg {
        let mut room = [0; NCLASS];
        for c in 0..NCLASS {
            room[c] = self.room[c][i];
        }
        Agg {
            min_start: self.min_start[i],
            max_end: self.max_end[i],
            max_gap: self.max_gap[i],
            room,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, a: Agg) {
        if self.min_start[i] != a.min_start || self.max_end[i] != a.max_end {
            self.touch();
        }
        self.min_start[i] = a.min_start;
        self.max_end[i] = a.max_end;
        self.max_gap[i] = a.max_gap;
        for c in 0..NCLASS {
            self.room[c][i] = a.room[c];
        }
    }

    fn insert_at(&mut self, i: usize, child: u32, a: Agg) {
        let n = self.n();
        debug_assert!(n < CAP);
        columns!(self, |col| col.copy_within(i..n, i + 1));
        self.touch();
        self.child[i] = child;
        self.set(i, a);
        self.len += 1;
    }

    fn remove_run(&mut self, a: usize, b: usize) {
        let n = self.n();
        columns!(self, |col| col.copy_within(b..n, a));
        self.touch();
        self.len -= (b - a) as u32;
    }

    /// Appends `other[from..]` to `self`.
    fn append_from(&mut self, other: &mut Inner, from: usize) {
        let (n, m) = (self.n(), other.n());
        let k = m - from;
        columns2!(self, other, |x, y| x[n..n + k].copy_from_slice(&y[from..m]));
        self.touch();
        self.len += k as u32;
    }

    /// The last child whose subtree starts at or below `key` (0 if none).
    #[inline]
    pub fn child_for(&self, key: u64) -> usize {
        upper_bound(&self.min_start, self.n(), key).saturating_sub(1)
    }
}

/// Longest root-to-leaf path a [`Path`] records. A tree of the largest
/// allowed size is far lower (every node at least half full); a taller one
/// would only take the general code paths.
pub(crate) const MAX_PATH: usize = 16;

/// The route a hole search took to the hole it offered last: the child
/// taken at every inner level and, if the hole lies between two VMAs of one
/// leaf, that leaf and the slot of the upper VMA. Lets the caller insert
/// into the hole it was offered without a second descent
/// ([`BTree::insert_at_path`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path {
    /// `at[level] = (inner node, child index)` for levels `1..=height`.
    at: [(u32, u32); MAX_PATH],
    /// The leaf of the last hole offered, or [`Path::NONE`] if that hole
    /// was not inside one leaf.
    leaf: u32,
    /// The slot of the VMA just above that hole.
    slot: u32,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            at: [(0, 0); MAX_PATH],
            leaf: Path::NONE,
            slot: 0,
        }
    }
}

impl Path {
    const NONE: u32 = u32::MAX;
}

/// What a hole search tells about its way to the holes it offers: a
/// [`Path`] records it, `()` ignores it (so searches that insert nothing
/// pay nothing for it).
pub(crate) trait Track {
    /// The search scans the entries of one node (inner node or leaf).
    fn visit(&mut self);
    /// The search descends from inner node `id` at `level` into child `i`.
    fn enter(&mut self, level: u32, id: u32, i: usize);
    /// The search offers the hole below slot `i` of leaf `id`.
    fn offer_leaf_hole(&mut self, id: u32, i: usize);
    /// The search offers a hole between two subtrees or beyond every VMA.
    fn offer_other_hole(&mut self);
}

impl Track for Path {
    #[inline]
    fn visit(&mut self) {}

    #[inline]
    fn enter(&mut self, level: u32, id: u32, i: usize) {
        if let Some(e) = self.at.get_mut(level as usize) {
            *e = (id, i as u32);
        }
    }

    #[inline]
    fn offer_leaf_hole(&mut self, id: u32, i: usize) {
        self.leaf = id;
        self.slot = i as u32;
    }

    #[inline]
    fn offer_other_hole(&mut self) {
        self.leaf = Path::NONE;
    }
}

impl Track for () {
    #[inline]
    fn visit(&mut self) {}
    #[inline]
    fn enter(&mut self, _: u32, _: u32, _: usize) {}
    #[inline]
    fn offer_leaf_hole(&mut self, _: u32, _: usize) {}
    #[inline]
    fn offer_other_hole(&mut self) {}
}

/// The number of indices `i < n` for which the monotone predicate `pred`
/// holds (`pred` true on a prefix of `0..n`, false after it), for `n <= N`,
/// `N` a power of two: a binary search with a fixed number of steps,
/// `log2(N) + 1`, whatever `n` and the data. Every step is a comparison
/// turned into arithmetic, so a random key mispredicts no branch; indices
/// at or past `n` count as false without being trusted (they are read, but
/// masked into the array).
#[inline(always)]
fn count_prefix<const N: usize>(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    debug_assert!(N.is_power_of_two() && n <= N);
    let mut base = 0;
    let mut half = N / 2;
    while half > 0 {
        let p = base + half - 1;
        base += usize::from((p < n) & pred(p & (N - 1))) * half;
        half /= 2;
    }
    base + usize::from((base < n) & pred(base & (N - 1)))
}

/// The index of the first of the sorted `a[..n]` that is `>= key` (`n` if
/// none).
#[inline]
pub(crate) fn lower_bound<const N: usize>(a: &[u64; N], n: usize, key: u64) -> usize {
    count_prefix::<N>(n, |i| a[i] < key)
}

/// The index of the first of the sorted `a[..n]` that is `> key` (`n` if
/// none).
#[inline]
pub(crate) fn upper_bound<const N: usize>(a: &[u64; N], n: usize, key: u64) -> usize {
    count_prefix::<N>(n, |i| a[i] <= key)
}

/// A position of one VMA: leaf id and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub leaf: u32,
    pub slot: u32,
}

/// The tree: two arenas and the root.
#[derive(Clone, Debug)]
pub(crate) struct BTree {
    pub leaves: Vec<Leaf>,
    pub inners: Vec<Inner>,
    free_leaves: Vec<u32>,
    free_inners: Vec<u32>,
    /// The root: a leaf if `height == 0`, else an inner node.
    pub root: u32,
    /// Number of inner levels above the leaves.
    pub height: u32,
    len: usize,
}

impl Default for BTree {
    fn default() -> Self {
        Self::new()
    }
}

impl BTree {
    pub fn new() -> Self {
        BTree {
            leaves: alloc::vec![Leaf::EMPTY],
            inners: Vec::new(),
            free_leaves: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn leaf(&self, id: u32) -> &Leaf {
        &self.leaves[id as usize]
    }

    #[inline]
    pub fn inner(&self, id: u32) -> &Inner {
        &self.inners[id as usize]
    }

    fn new_leaf(&mut self) -> u32 {
        if let Some(id) = self.free_leaves.pop() {
            self.leaves[id as usize].len = 0;
            id
        } else {
            grow(&mut self.leaves, 16);
            self.leaves.push(Leaf::EMPTY);
            (self.leaves.len() - 1) as u32
        }
    }

    fn new_inner(&mut self) -> u32 {
        if let Some(id) = self.free_inners.pop() {
            self.inners[id as usize].len = 0;
            self.inners[id as usize].touch();
            id
        } else {
            grow(&mut self.inners, 32);
            self.inners.push(Inner::EMPTY);
            (self.inners.len() - 1) as u32
        }
    }

    /// The aggregate of the whole tree, or `None` if it is empty (O(CAP);
    /// for checks).
    pub fn root_agg(&self) -> Option<Agg> {
        (self.len > 0).then(|| self.node_agg(self.root, self.height))
    }

    /// `(min_start, max_end)` of the whole tree, or `None` if it is empty.
    /// Searches need only these at the top: the root's own children carry
    /// the rest, so no aggregate of the root is ever computed or stored.
    #[inline]
    pub fn root_span(&self) -> Option<(u64, u64)> {
        if self.len == 0 {
            return None;
        }
        Some(if self.height == 0 {
            let l = self.leaf(self.root);
            (l.start[0], l.end[l.n() - 1])
        } else {
            let n = self.inner(self.root);
            (n.min_start[0], n.max_end[n.n() - 1])
        })
    }

    fn node_agg(&self, id: u32, level: u32) -> Agg {
        if level == 0 {
            self.leaf(id).agg()
        } else {
            self.inner(id).agg()
        }
    }

    fn node_len(&self, id: u32, level: u32) -> usize {
        if level == 0 {
            self.leaf(id).n()
        } else {
            self.inner(id).n()
        }
    }

    // ----- insert --------------------------------------------------------

    /// Inserts `[start, end)` in one descent, or returns `Err(())` without
    /// changing anything if it overlaps a VMA. On the way down each level
    /// checks the neighbours that could overlap: the child that would hold
    /// the new VMA (its predecessor can only be there or further left, where
    /// an ancestor already checked) and the first VMA of the next child.
    pub fn insert(&mut self, start: u64, end: u64, flags: u8) -> Result<(), ()> {
        let (_, split) = self.insert_rec(self.root, self.height, start, end, flags, None)?;
        if let Some(right) = split {
            let left = self.root;
            let lagg = self.node_agg(left, self.height);
            let ragg = self.node_agg(right, self.height);
            let r = self.new_inner();
            let node = &mut self.inners[r as usize];
            node.insert_at(0, left, lagg);
            node.insert_at(1, right, ragg);
            self.root = r;
            self.height += 1;
        }
        self.len += 1;
        Ok(())
    }

    /// Returns whether the node's aggregate may have changed, and the new
    /// right sibling of a split. Aggregates are computed lazily by the
    /// parent, and only for children that changed: most inserts stop
    /// recomputing one or two levels above the leaf, and nobody computes
    /// the root's.
    fn insert_rec(
        &mut self,
        id: u32,
        level: u32,
        start: u64,
        end: u64,
        flags: u8,
        old: Option<Agg>,
    ) -> Result<(Delta, Option<u32>), ()> {
        if level == 0 {
            return self.insert_leaf(id, start, end, flags, old);
        }
        let mut i = self.inner(id).child_for(start);
        if level == 1 && self.leaf(self.inner(id).child[i]).n() == LCAP {
            // Before splitting a full leaf, try to pass entries to a
            // neighbour with room: leaves stay fuller (less memory per
            // VMA, fewer nodes), as in a B*-tree. The set of VMAs (and so
            // every aggregate above) does not change, so a refused insert
            // below still changes nothing.
            self.shift_to_neighbour(id, i);
            i = self.inner(id).child_for(start);
        }
        let node = self.inner(id);
        // A VMA of child i can reach past `start` only if it is the
        // predecessor, which the leaf checks; the next child's first VMA
        // overlaps if it starts below `end`.
        if i + 1 < node.n() && node.min_start[i + 1] < end {
            return Err(());
        }
        if start < node.min_start[0] && end > node.min_start[0] {
            return Err(());
        }
        let (child, child_old) = (node.child[i], node.get(i));
        let (delta, split) =
            self.insert_rec(child, level - 1, start, end, flags, Some(child_old))?;
        let Some(nc) = split else {
            return Ok((self.update_child(id, level, i, delta, old), None));
        };
        self.refresh_child(id, level, i);
        let nagg = self.node_agg(nc, level - 1);
        let node = &mut self.inners[id as usize];
        if node.n() < CAP {
            node.insert_at(i + 1, nc, nagg);
            return Ok((Delta::Unknown, None));
        }
        let r = self.new_inner();
        let (lo, hi) = split_pair(&mut self.inners, id, r);
        hi.len = 0;
        hi.append_from(lo, MIN);
        lo.len = MIN as u32;
        lo.touch();
        if i < MIN {
            lo.insert_at(i + 1, nc, nagg);
        } else {
            hi.insert_at(i + 1 - MIN, nc, nagg);
        }
        Ok((Delta::Unknown, Some(r)))
    }

    /// Inserts into leaf `id` (overlap checked against its entries). With
    /// the leaf's old aggregate, works out the new one in O(1) where it can:
    /// an insert at either end only adds a hole; an insert inside a hole
    /// splits it, which lowers no maximum unless that hole held one.
    fn insert_leaf(
        &mut self,
        id: u32,
        start: u64,
        end: u64,
        flags: u8,
        old: Option<Agg>,
    ) -> Result<(Delta, Option<u32>), ()> {
        let leaf = &self.leaves[id as usize];
        let n = leaf.n();
        let i = lower_bound(&leaf.start, n, start);
        if (i > 0 && leaf.end[i - 1] > start) || (i < n && leaf.start[i] < end) {
            return Err(());
        }
        if n < LCAP {
            let leaf = &mut self.leaves[id as usize];
            leaf.insert_at(i, start, end, flags);
            let delta = match old {
                Some(mut o) if n > 0 => {
                    if i == 0 {
                        o.min_start = start;
                        o.fold(end, leaf.start[1]);
                        Delta::New(o)
                    } else if i == n {
                        o.max_end = end;
                        o.fold(leaf.end[n - 1], start);
                        Delta::New(o)
                    } else if o.survives_split_of(leaf.end[i - 1], leaf.start[i + 1]) {
                        Delta::Same
                    } else {
                        Delta::New(leaf.agg())
                    }
                }
                _ => Delta::Unknown,
            };
            return Ok((delta, None));
        }
        // Split: the upper half moves to a new right sibling.
        let r = self.new_leaf();
        let (lo, hi) = split_pair(&mut self.leaves, id, r);
        lo.len = LMIN as u32;
        hi.len = 0;
        hi.append_from_raw(lo, LMIN, LCAP);
        if i <= LMIN {
            lo.insert_at(i, start, end, flags);
        } else {
            hi.insert_at(i - LMIN, start, end, flags);
        }
        Ok((Delta::Unknown, Some(r)))
    }

    /// Stores child `i`'s new aggregate as `delta` reports it and works out
    /// how the node's own aggregate moved, given its old value `old` (when
    /// the caller has it). O(1) unless a value that shrank was a maximum of
    /// the node: then a full O(CAP) recomputation.
    fn update_child(
        &mut self,
        id: u32,
        level: u32,
        i: usize,
        delta: Delta,
        old: Option<Agg>,
    ) -> Delta {
        let new = match delta {
            Delta::Same => return Delta::Same,
            Delta::New(a) => a,
            Delta::Unknown => {
                let child = self.inner(id).child[i];
                if self.node_len(child, level - 1) == 0 {
                    return Delta::Unknown;
                }
                self.node_agg(child, level - 1)
            }
        };
        let node = &mut self.inners[id as usize];
        let prev = node.get(i);
        if prev == new {
            return Delta::Same;
        }
        node.set(i, new);
        let Some(mut o) = old else {
            return Delta::Unknown;
        };
        let n = node.n();
        // Every value that feeds the node's maxima and may have moved:
        // child i's own maxima and the holes on either side of it. If one
        // that shrank held a maximum, recompute; else fold in the new ones.
        if shrank_a_max(&o, &prev, &new) {
            return Delta::New(node.agg_cached());
        }
        o.take_max(&new);
        if i > 0 && prev.min_start != new.min_start {
            let gs = node.max_end[i - 1];
            let (was, now) = (hole_agg(gs, prev.min_start), hole_agg(gs, new.min_start));
            if shrank_a_max(&o, &was, &now) {
                return Delta::New(node.agg_cached());
            }
            o.take_max(&now);
        }
        if i + 1 < n && prev.max_end != new.max_end {
            let ge = node.min_start[i + 1];
            let (was, now) = (hole_agg(prev.max_end, ge), hole_agg(new.max_end, ge));
            if shrank_a_max(&o, &was, &now) {
                return Delta::New(node.agg_cached());
            }
            o.take_max(&now);
        }
        o.min_start = node.min_start[0];
        o.max_end = node.max_end[n - 1];
        Delta::New(o)
    }

    /// Child `i` of the level-1 node `id` is a full leaf about to receive a
    /// VMA. If a neighbouring leaf has room, evens the two out.
    fn shift_to_neighbour(&mut self, id: u32, i: usize) {
        let n = self.inner(id).n();
        let room = |t: &Self, j: usize| LCAP - t.leaf(t.inner(id).child[j]).n();
        let (a, b) = if i > 0 && room(self, i - 1) >= 2 {
            (i - 1, i)
        } else if i + 1 < n && room(self, i + 1) >= 2 {
            (i, i + 1)
        } else {
            return;
        };
        let (ca, cb) = (self.inner(id).child[a], self.inner(id).child[b]);
        let total = self.leaf(ca).n() + self.leaf(cb).n();
        let (x, y) = split_pair(&mut self.leaves, ca, cb);
        rebalance_leaves(x, y, total.div_ceil(2));
        let (aa, ba) = (self.leaf(ca).agg(), self.leaf(cb).agg());
        let node = &mut self.inners[id as usize];
        node.set(a, aa);
        node.set(b, ba);
    }

    // ----- lookups -------------------------------------------------------

    /// The first VMA with `end > addr`.
    pub fn first_ending_after(&self, addr: u64) -> Option<Pos> {
        let (mut id, mut level) = (self.root, self.height);
        while level > 0 {
            let node = self.inner(id);
            let n = node.n();
            let i = upper_bound(&node.max_end, n, addr);
            if i == n {
                return None;
            }
            id = node.child[i];
            level -= 1;
        }
        let leaf = self.leaf(id);
        let n = leaf.n();
        let i = upper_bound(&leaf.end, n, addr);
        (i < n).then_some(Pos {
            leaf: id,
            slot: i as u32,
        })
    }

    /// The last VMA with `start < addr`.
    pub fn last_starting_before(&self, addr: u64) -> Option<Pos> {
        let (mut id, mut level) = (self.root, self.height);
        while level > 0 {
            let node = self.inner(id);
            if node.min_start[0] >= addr {
                return None;
            }
            let i = lower_bound(&node.min_start, node.n(), addr);
            id = node.child[i - 1];
            level -= 1;
        }
        let leaf = self.leaf(id);
        let i = lower_bound(&leaf.start, leaf.n(), addr);
        (i > 0).then(|| Pos {
            leaf: id,
            slot: i as u32 - 1,
        })
    }

    /// The first VMA with `start >= addr`.
    pub fn first_starting_at_or_after(&self, addr: u64) -> Option<Pos> {
        // The answer is the successor of last_starting_before(addr), or the
        // first VMA.
        match self.last_starting_before(addr) {
            None => self.leftmost(self.root, self.height),
            Some(p) => self.successor_of_start(p),
        }
    }

    /// The VMA after the one at `p`, found by a fresh descent.
    fn successor_of_start(&self, p: Pos) -> Option<Pos> {
        let leaf = self.leaf(p.leaf);
        if (p.slot as usize) + 1 < leaf.n() {
            return Some(Pos {
                leaf: p.leaf,
                slot: p.slot + 1,
            });
        }
        // The first VMA ending after this one's end.
        self.first_ending_after(leaf.end[p.slot as usize])
    }

    /// The lowest VMA of the subtree `id` at `level`.
    pub fn leftmost(&self, mut id: u32, mut level: u32) -> Option<Pos> {
        while level > 0 {
            id = self.inner(id).child[0];
            level -= 1;
        }
        (self.leaf(id).len > 0).then_some(Pos { leaf: id, slot: 0 })
    }

    /// The highest VMA of the subtree `id` at `level`.
    pub fn rightmost(&self, mut id: u32, mut level: u32) -> Option<Pos> {
        while level > 0 {
            let node = self.inner(id);
            id = node.child[node.n() - 1];
            level -= 1;
        }
        let n = self.leaf(id).len;
        (n > 0).then(|| Pos {
            leaf: id,
            slot: n - 1,
        })
    }

    // ----- in-place changes ----------------------------------------------

    /// Moves the bounds of the VMA that starts at `key` to `[start, end)`.
    /// The caller guarantees that order and non-overlap still hold.
    pub fn set_bounds(&mut self, key: u64, start: u64, end: u64) {
        self.set_rec(self.root, self.height, key, start, end);
    }

    /// Returns whether the node's aggregate may have changed.
    fn set_rec(&mut self, id: u32, level: u32, key: u64, start: u64, end: u64) -> bool {
        if level == 0 {
            let leaf = &mut self.leaves[id as usize];
            let n = leaf.n();
            let i = lower_bound(&leaf.start, n, key);
            debug_assert!(
                i < n && leaf.start[i] == key,
                "set_bounds: no VMA starts at {key:#x}"
            );
            if i == n || leaf.start[i] != key {
                return false;
            }
            leaf.start[i] = start;
            leaf.end[i] = end;
            return true;
        }
        let i = self.inner(id).child_for(key);
        let child = self.inner(id).child[i];
        if !self.set_rec(child, level - 1, key, start, end) {
            return false;
        }
        self.refresh_child(id, level, i)
    }

    // ----- range removal -------------------------------------------------

    /// Removes every VMA whose start lies in `[s, e)`; returns how many.
    /// O(log n + k): subtrees entirely inside the range are released whole,
    /// and only the two boundary paths are rebalanced.
    pub fn remove_starts_in(&mut self, s: u64, e: u64) -> usize {
        self.remove_starts_in_if(s, e, None)
    }

    /// Removes the VMA `[start, end)` if the map holds exactly that VMA, in
    /// one descent; returns false (changing nothing) otherwise. The common
    /// case of an allocator's free.
    pub fn remove_exact(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        match self.remove_exact_fast(start, end) {
            Some(found) => found,
            None => self.remove_starts_in_if(start, start + 1, Some(end)) == 1,
        }
    }

    /// [`Self::remove_exact`] without recursion, for the common case that
    /// the leaf keeps at least `LMIN` entries: one descent that records its
    /// path, the removal, and the aggregates fixed on the way back up.
    /// `None` (nothing changed) if the leaf would need rebalancing.
    fn remove_exact_fast(&mut self, start: u64, end: u64) -> Option<bool> {
        let h = self.height as usize;
        if h >= MAX_PATH {
            return None;
        }
        let mut path = Path::default();
        let mut id = self.root;
        for level in (1..=h).rev() {
            let node = self.inner(id);
            let i = node.child_for(start);
            path.at[level] = (id, i as u32);
            id = node.child[i];
        }
        let leaf = self.leaf(id);
        let n = leaf.n();
        let a = lower_bound(&leaf.start, n, start);
        if a == n || leaf.start[a] != start || leaf.end[a] != end {
            return Some(false);
        }
        if h > 0 && n <= LMIN {
            return None;
        }
        let old = self.parent_view(&path, 1);
        let leaf = &mut self.leaves[id as usize];
        leaf.remove_run(a, a + 1);
        let m = n - 1;
        match old {
            // An inner entry: its two holes merge into one, which can
            // only raise the maxima; the leaf's span stays.
            Some(mut o) if a > 0 && a < m => {
                o.fold(leaf.end[a - 1], leaf.start[a]);
                self.propagate_maxima(&path, Maxima::of_agg(&o));
            }
            Some(_) => {
                let agg = leaf.agg();
                self.propagate(&path, Delta::New(agg));
            }
            None => {}
        }
        self.len -= 1;
        Some(true)
    }

    /// The aggregate the parent at `level + 1` of the path stores for the
    /// node the path passes at `level` (`None` above the root).
    #[inline]
    fn parent_view(&self, path: &Path, level: usize) -> Option<Agg> {
        if level > self.height as usize {
            return None;
        }
        let (p, c) = path.at[level];
        Some(self.inner(p).get(c as usize))
    }

    /// Carries a leaf's `delta` up the recorded path (invariant 3), stopping
    /// at the first level whose aggregate did not change.
    fn propagate(&mut self, path: &Path, mut delta: Delta) {
        let h = self.height as usize;
        for level in 1..=h {
            if let Delta::Same = delta {
                return;
            }
            let (p, c) = path.at[level];
            let old = self.parent_view(path, level + 1);
            delta = self.update_child(p, level as u32, c as usize, delta, old);
        }
    }

    /// [`Self::propagate`] for a change inside one leaf that moved neither
    /// its first nor its last VMA: no span and no hole between two children
    /// changed anywhere on the path, only the leaf's maxima, now `m`. Per
    /// level: store the child's maxima; if one of them was the node's
    /// maximum and shrank, recompute the node's, else they are the old ones
    /// (as the grandparent stores them) raised by `m`. Stops at the first
    /// level where nothing changed.
    fn propagate_maxima(&mut self, path: &Path, mut m: Maxima) {
        let h = self.height as usize;
        for level in 1..=h {
            let (p, c) = path.at[level];
            let (p, c) = (p as usize, c as usize);
            let node = &mut self.inners[p];
            let prev = Maxima::of_child(node, c);
            if prev == m {
                return;
            }
            node.max_gap[c] = m.gap;
            for k in 0..NCLASS {
                node.room[k][c] = m.room[k];
            }
            if level == h {
                return;
            }
            let (gp, gc) = path.at[level + 1];
            let o = Maxima::of_child(&self.inners[gp as usize], gc as usize);
            let lost = |was: u64, now: u64, max: u64| now < was && was == max;
            m = if lost(prev.gap, m.gap, o.gap)
                || (0..NCLASS).any(|k| lost(prev.room[k], m.room[k], o.room[k]))
            {
                Maxima::of_agg(&self.inners[p].agg_cached())
            } else {
                o.raised_by(&m)
            };
        }
    }

    /// Inserts `[start, end)` into the hole inside one leaf that the search
    /// which filled `path` offered last, without a descent. The caller
    /// guarantees the range lies in that hole (the search's answer does).
    /// Returns whether the leaf's maxima had to be recomputed (the split
    /// hole held one), or `None`, changing nothing, if the last hole was not
    /// inside a leaf or the leaf is full: then [`Self::insert`] must do it.
    pub fn insert_at_path(&mut self, path: &Path, start: u64, end: u64, flags: u8) -> Option<bool> {
        let h = self.height as usize;
        if path.leaf == Path::NONE || h >= MAX_PATH {
            return None;
        }
        let (id, i) = (path.leaf, path.slot as usize);
        let leaf = self.leaf(id);
        let n = leaf.n();
        if n == LCAP {
            return None;
        }
        debug_assert!(h == 0 || self.inner(path.at[1].0).child[path.at[1].1 as usize] == id);
        debug_assert!(i > 0 && i < n, "not a hole inside the leaf");
        debug_assert!(leaf.end[i - 1] <= start && start < end && end <= leaf.start[i]);
        // The leaf's aggregate as its parent stores it: exact (invariant 3).
        let old = self.parent_view(path, 1);
        let leaf = &mut self.leaves[id as usize];
        leaf.insert_at(i, start, end, flags);
        // The hole [end[i-1], start[i+1]) was split in two: no maximum
        // moves unless that hole held one.
        let mut rescanned = false;
        if let Some(o) = old {
            if !o.survives_split_of(leaf.end[i - 1], leaf.start[i + 1]) {
                let m = Maxima::of_agg(&leaf.agg());
                self.propagate_maxima(path, m);
                rescanned = true;
            }
        }
        self.len += 1;
        Some(rescanned)
    }

    /// [`Self::remove_starts_in`]; with `exact = Some(end)` only a single
    /// VMA ending at `end` is removed (else nothing).
    fn remove_starts_in_if(&mut self, s: u64, e: u64, exact: Option<u64>) -> usize {
        let (removed, _) = self.remove_rec(self.root, self.height, s, e, None, exact);
        self.len -= removed;
        // Collapse a root with a single child.
        while self.height > 0 && self.inner(self.root).len <= 1 {
            let old = self.root;
            if self.inner(old).len == 0 {
                self.free_inners.push(old);
                self.root = self.new_leaf();
                self.height = 0;
                break;
            }
            self.root = self.inner(old).child[0];
            self.free_inners.push(old);
            self.height -= 1;
        }
        removed
    }

    /// Returns how many VMAs were removed and whether this node's aggregate
    /// (or shape) may have changed.
    fn remove_rec(
        &mut self,
        id: u32,
        level: u32,
        s: u64,
        e: u64,
        old: Option<Agg>,
        exact: Option<u64>,
    ) -> (usize, Delta) {
        if level == 0 {
            return self.remove_leaf(id, s, e, old, exact);
        }
        let node = self.inner(id);
        let n = node.n();
        if node.min_start[0] >= e {
            return (0, Delta::Same);
        }
        let i0 = node.child_for(s);
        let mut i1 = i0;
        while i1 + 1 < n && node.min_start[i1 + 1] < e {
            i1 += 1;
        }
        let mut removed = 0;
        for c in i0 + 1..i1 {
            removed += self.release_subtree(self.inner(id).child[c], level - 1);
        }
        let (r0, d0) = self.remove_child(id, level, i0, s, e, exact);
        removed += r0;
        if i1 == i0 {
            // One child touched: report the change incrementally unless the
            // child needs rebalancing.
            let child = self.inner(id).child[i0];
            if self.node_len(child, level - 1) >= min_of(level - 1) {
                return (removed, self.update_child(id, level, i0, d0, old));
            }
            self.update_child(id, level, i0, d0, None);
            self.fix_child(id, level, i0);
            return (removed, Delta::Unknown);
        }
        let (r1, d1) = self.remove_child(id, level, i1, s, e, exact);
        removed += r1;
        self.inners[id as usize].remove_run(i0 + 1, i1);
        // Refresh the touched children's aggregates, then restore their
        // fill (higher index first, so the lower one stays put).
        self.update_child(id, level, i0 + 1, d1, None);
        self.update_child(id, level, i0, d0, None);
        self.fix_child(id, level, i0 + 1);
        if i0 < self.inner(id).n() {
            self.fix_child(id, level, i0);
        }
        (removed, Delta::Unknown)
    }

    /// Removes the starts in `[s, e)` from child `c` of inner node `id`.
    fn remove_child(
        &mut self,
        id: u32,
        level: u32,
        c: usize,
        s: u64,
        e: u64,
        exact: Option<u64>,
    ) -> (usize, Delta) {
        let (child, old) = (self.inner(id).child[c], self.inner(id).get(c));
        self.remove_rec(child, level - 1, s, e, Some(old), exact)
    }

    /// Removes the run of entries of leaf `id` whose starts lie in
    /// `[s, e)`. With the old aggregate, removing one inner entry merges
    /// two holes into one, which is folded into the maxima in O(1).
    fn remove_leaf(
        &mut self,
        id: u32,
        s: u64,
        e: u64,
        old: Option<Agg>,
        exact: Option<u64>,
    ) -> (usize, Delta) {
        let leaf = &mut self.leaves[id as usize];
        let n = leaf.n();
        let a = lower_bound(&leaf.start, n, s);
        let b = lower_bound(&leaf.start, n, e).max(a);
        if a == b || exact.is_some_and(|x| b - a != 1 || leaf.end[a] != x) {
            return (0, Delta::Same);
        }
        leaf.remove_run(a, b);
        let m = leaf.n();
        let delta = match old {
            Some(mut o) if b - a == 1 && a > 0 && a < m => {
                o.fold(leaf.end[a - 1], leaf.start[a]);
                Delta::New(o)
            }
            Some(_) if m > 0 => Delta::New(leaf.agg()),
            _ => Delta::Unknown,
        };
        (b - a, delta)
    }

    /// Recomputes the stored aggregate of child `c` of inner node `id` (if
    /// the child is not empty); returns true if it changed.
    fn refresh_child(&mut self, id: u32, level: u32, c: usize) -> bool {
        let child = self.inner(id).child[c];
        if self.node_len(child, level - 1) == 0 {
            return true;
        }
        let a = self.node_agg(child, level - 1);
        let node = &mut self.inners[id as usize];
        if node.get(c) == a {
            return false;
        }
        node.set(c, a);
        true
    }

    /// Restores invariant 2 for child `c` of inner node `id` at `level`:
    /// removes it if empty; if it holds fewer than `MIN` entries, merges it
    /// with a neighbour or evens the two out. A merge or a shift can bring
    /// an underfull grandchild next to new siblings; those are fixed in turn.
    /// Returns true if it changed anything.
    fn fix_child(&mut self, id: u32, level: u32, c: usize) -> bool {
        let child = self.inner(id).child[c];
        let clen = self.node_len(child, level - 1);
        if clen == 0 {
            self.free_node(child, level - 1);
            self.inners[id as usize].remove_run(c, c + 1);
            return true;
        }
        if clen >= min_of(level - 1) || self.inner(id).n() < 2 {
            return false;
        }
        let n = self.inner(id).n();
        let (a, b) = if c + 1 < n { (c, c + 1) } else { (c - 1, c) };
        let (ca, cb) = (self.inner(id).child[a], self.inner(id).child[b]);
        let (la, lb) = (self.node_len(ca, level - 1), self.node_len(cb, level - 1));
        if la + lb <= cap_of(level - 1) {
            // Merge b into a.
            if level == 1 {
                let (x, y) = split_pair(&mut self.leaves, ca, cb);
                x.append_from(y, 0);
            } else {
                let (x, y) = split_pair(&mut self.inners, ca, cb);
                x.append_from(y, 0);
            }
            self.free_node(cb, level - 1);
            self.inners[id as usize].remove_run(b, b + 1);
            self.refresh_child(id, level, a);
            if level >= 2 {
                self.fix_grandchildren(ca, level - 1);
            }
            // The merged node may still be short if both were.
            self.fix_child(id, level, a);
        } else {
            // Even out: move entries across the seam so both hold >= MIN.
            let total = la + lb;
            let want_a = total / 2;
            if level == 1 {
                let (x, y) = split_pair(&mut self.leaves, ca, cb);
                rebalance_leaves(x, y, want_a);
            } else {
                let (x, y) = split_pair(&mut self.inners, ca, cb);
                rebalance_inners(x, y, want_a);
            }
            self.refresh_child(id, level, a);
            self.refresh_child(id, level, b);
            if level >= 2 {
                self.fix_grandchildren(ca, level - 1);
                self.fix_grandchildren(cb, level - 1);
                // Fixing a grandchild may merge two of them and leave `a` or
                // `b` short again. Every merge removes a node, so this ends.
                if self.node_len(cb, level - 1) < min_of(level - 1) {
                    self.fix_child(id, level, b);
                }
                if self.node_len(ca, level - 1) < min_of(level - 1) {
                    self.fix_child(id, level, a);
                }
            }
        }
        true
    }

    /// Fixes every underfull child of inner node `id` (rare: only nodes
    /// that sat alone under a short parent can be underfull).
    fn fix_grandchildren(&mut self, id: u32, level: u32) {
        let mut c = 0;
        while c < self.inner(id).n() {
            let child = self.inner(id).child[c];
            let before = self.inner(id).n();
            if self.node_len(child, level - 1) < min_of(level - 1) {
                self.fix_child(id, level, c);
            }
            // A merge removed an entry; look at the same index again only
            // if it changed.
            if self.inner(id).n() == before {
                c += 1;
            }
        }
    }

    fn free_node(&mut self, id: u32, level: u32) {
        if level == 0 {
            self.free_leaves.push(id);
        } else {
            self.free_inners.push(id);
        }
    }

    /// Releases a whole subtree; returns the number of VMAs it held.
    fn release_subtree(&mut self, id: u32, level: u32) -> usize {
        if level == 0 {
            self.free_leaves.push(id);
            return self.leaf(id).n();
        }
        let mut count = 0;
        for c in 0..self.inner(id).n() {
            count += self.release_subtree(self.inner(id).child[c], level - 1);
        }
        self.free_inners.push(id);
        count
    }

    /// Bytes held by the arenas.
    pub fn heap_bytes(&self) -> usize {
        self.leaves.capacity() * core::mem::size_of::<Leaf>()
            + self.inners.capacity() * core::mem::size_of::<Inner>()
            + (self.free_leaves.capacity() + self.free_inners.capacity()) * 4
    }

    /// Number of live leaves and inner nodes (for the invariant check).
    pub fn free_counts(&self) -> (usize, usize) {
        (self.free_leaves.len(), self.free_inners.len())
    }
}

impl Leaf {
    /// Sets `self` to `src[from..to]` (raw copy used by the split).
    fn append_from_raw(&mut self, src: &Leaf, from: usize, to: usize) {
        let k = to - from;
        let n = self.n();
        self.start[n..n + k].copy_from_slice(&src.start[from..to]);
        self.end[n..n + k].copy_from_slice(&src.end[from..to]);
        self.flags[n..n + k].copy_from_slice(&src.flags[from..to]);
        self.len += k as u32;
    }
}

/// Grows an arena by a `1/div` instead of doubling, so that a large map
/// wastes at most `1/div` of its node memory on spare capacity (the copy on
/// growth stays amortised O(1) per node). Leaves grow by a sixteenth, inner
/// nodes (about one per dozen leaves, so the copy costs little) by a
/// thirty-second.
fn grow<T>(v: &mut Vec<T>, div: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / div + 4);
    }
}

/// Capacity of a node at `level` (0: a leaf).
#[inline]
fn cap_of(level: u32) -> usize {
    if level == 0 {
        LCAP
    } else {
        CAP
    }
}

/// Minimum fill of a non-root node at `level` (0: a leaf).
#[inline]
pub(crate) fn min_of(level: u32) -> usize {
    if level == 0 {
        LMIN
    } else {
        MIN
    }
}

/// Two distinct elements of an arena, mutably.
fn split_pair<T>(v: &mut [T], a: u32, b: u32) -> (&mut T, &mut T) {
    let (a, b) = (a as usize, b as usize);
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

fn rebalance_leaves(x: &mut Leaf, y: &mut Leaf, want_x: usize) {
    let (nx, ny) = (x.n(), y.n());
    if nx < want_x {
        // Move the first (want_x - nx) of y to the end of x.
        let k = want_x - nx;
        x.append_from_raw(y, 0, k);
        y.remove_run(0, k);
    } else if nx > want_x {
        // Move the last (nx - want_x) of x to the front of y.
        let k = nx - want_x;
        y.start.copy_within(0..ny, k);
        y.end.copy_within(0..ny, k);
        y.flags.copy_within(0..ny, k);
        y.start[..k].copy_from_slice(&x.start[want_x..nx]);
        y.end[..k].copy_from_slice(&x.end[want_x..nx]);
        y.flags[..k].copy_from_slice(&x.flags[want_x..nx]);
        y.len += k as u32;
        x.len = want_x as u32;
    }
}

fn rebalance_inners(x: &mut Inner, y: &mut Inner, want_x: usize) {
    let (nx, ny) = (x.n(), y.n());
    x.touch();
    y.touch();
    if nx < want_x {
        let k = want_x - nx;
        columns2!(x, y, |a, b| a[nx..nx + k].copy_from_slice(&b[..k]));
        x.len += k as u32;
        y.remove_run(0, k);
    } else if nx > want_x {
        let k = nx - want_x;
        columns2!(x, y, |a, b| {
            b.copy_within(0..ny, k);
            b[..k].copy_from_slice(&a[want_x..nx]);
        });
        y.len += k as u32;
        x.len = want_x as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{AddressMap, VmaFlags};
    use crate::search::FitRequest;
    use crate::SearchParams;

    /// The cache of the holes between an inner node's children gives what
    /// `agg` computes, and the invariant check sees a span that moved
    /// behind its back.
    #[test]
    fn boundary_cache_matches_agg_and_a_stale_one_is_caught() {
        let mut t = BTree::new();
        for k in 0..600u64 {
            t.insert(k * 0x5000, k * 0x5000 + 0x1000 * (1 + k % 4), 0)
                .unwrap();
        }
        assert!(t.height >= 2);
        let mut node = t.inner(t.root).clone();
        assert_eq!(node.agg_cached(), node.agg());
        assert!(node.cache_ok());
        // Cached now: the second call reads the cache and agrees.
        assert_eq!(node.agg_cached(), node.agg());
        node.max_end[0] -= 0x1000;
        assert!(!node.cache_ok(), "a moved span left the cache valid");
        node.touch();
        assert!(node.cache_ok());
        assert_eq!(node.agg_cached(), node.agg());
    }

    /// Allocations and frees (exact, trimming and splitting unmaps) on maps
    /// that grow from one leaf through leaf splits to three inner levels and
    /// shrink back, against a sorted list: after every operation the VMAs
    /// agree and `check_invariants` (every cached aggregate, the cache of
    /// the holes between children) holds; up to 2,000 VMAs after every
    /// operation, above that after every 97th.
    #[test]
    fn churn_through_every_height_against_a_list() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut m = AddressMap::new();
        let mut model: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new();
        let p = SearchParams::default();
        let mut max_height = 0;
        let steps = 24_000;
        for step in 0..steps {
            // Grow for the first two thirds, then shrink.
            let grow = step < steps * 2 / 3;
            let alloc = model.is_empty() || rnd(100) < if grow { 70 } else { 30 };
            if alloc {
                let req = FitRequest {
                    length: (1 + rnd(64)) * 0x1000,
                    low: 0x10000,
                    high: 1 << 40,
                    align: 1 << [12, 12, 16, 21][rnd(4) as usize],
                    align_offset: 0,
                    topdown: rnd(4) == 0,
                    respect_guard_gaps: false,
                };
                let a = m.allocate(&req, &p, VmaFlags::NONE).unwrap();
                let i = model.partition_point(|v| v.0 < a);
                model.insert(i, (a, a + req.length));
            } else {
                let i = rnd(model.len() as u64) as usize;
                let (s, e) = model[i];
                match rnd(4) {
                    // Trim the top page, or split a page out of the middle.
                    0 if e - s >= 0x3000 => {
                        m.unmap(s + 0x1000, s + 0x2000).unwrap();
                        model[i] = (s, s + 0x1000);
                        model.insert(i + 1, (s + 0x2000, e));
                    }
                    1 if e - s >= 0x2000 => {
                        m.unmap(e - 0x1000, e).unwrap();
                        model[i] = (s, e - 0x1000);
                    }
                    _ => {
                        m.unmap(s, e).unwrap();
                        model.remove(i);
                    }
                }
            }
            max_height = max_height.max(m.t.height);
            if model.len() <= 2_000 || step % 97 == 0 {
                let got: alloc::vec::Vec<_> = m.iter().map(|v| (v.start, v.end)).collect();
                assert_eq!(got, model, "step {step}");
                m.check_invariants();
            }
        }
        assert!(max_height >= 3, "the tree stayed {max_height} levels high");
    }

    /// The fixed-step searches agree with a linear scan for every length,
    /// every key around every value, and runs of equal values (no column
    /// they search holds any, but the searches must not depend on that).
    #[test]
    fn fixed_step_searches_match_a_linear_scan() {
        let mut a = [0u64; 32];
        for n in 0..=32usize {
            for dup in [1u64, 3] {
                for (i, x) in a.iter_mut().enumerate() {
                    // Entries past `n` hold garbage below the keys, which
                    // must not count.
                    *x = if i < n { 10 + 10 * (i as u64 / dup) } else { 0 };
                }
                let mut keys = alloc::vec![0, 1, u64::MAX];
                for x in &a[..n] {
                    keys.extend([x - 1, *x, x + 1]);
                }
                for key in keys {
                    let lt = a[..n].iter().filter(|&&x| x < key).count();
                    let le = a[..n].iter().filter(|&&x| x <= key).count();
                    assert_eq!(lower_bound(&a, n, key), lt, "n {n} key {key}");
                    assert_eq!(upper_bound(&a, n, key), le, "n {n} key {key}");
                    if n <= 16 {
                        let b: &[u64; 16] = a[..16].try_into().unwrap();
                        assert_eq!(lower_bound(b, n, key), lt, "16: n {n} key {key}");
                        assert_eq!(upper_bound(b, n, key), le, "16: n {n} key {key}");
                    }
                }
            }
        }
    }
}
