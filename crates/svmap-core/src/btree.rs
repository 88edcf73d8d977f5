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
//! 2. **Shape.** Every leaf is at depth `height`. Every node other than the
//!    root holds between `MIN` and `CAP` entries; the root holds at most
//!    `CAP` (a root leaf may be empty; a root inner node has at least 2
//!    children).
//! 3. **Augmentation.** An inner node keeps, for each child `c`, the
//!    child's aggregate: `min_start` and `max_end` over the subtree and
//!    `max_gap`, the largest *internal* hole of the subtree (the largest
//!    `q.start - p.end` over consecutive VMAs `p`, `q` both in it; 0 if none).
//!    The holes between two children are computed from their neighbours'
//!    `max_end`/`min_start`; the holes below the first VMA and above the last
//!    one belong to nobody and are handled in `map.rs`.
//!
//! Invariant 3 is local: a node's aggregate depends only on its entries, so
//! every mutation recomputes the aggregates on its path back up in
//! O(CAP) per level. Per-child aggregates sit in separate arrays, so the scans
//! of a search read one or two cache lines per array and level.
//!
//! Nodes are named by `u32` indices into the two arenas; freed nodes go on a
//! free list. No `unsafe`.

use alloc::vec::Vec;

/// Entries per node.
pub(crate) const CAP: usize = 16;
/// Minimum entries of a non-root node.
pub(crate) const MIN: usize = CAP / 2;

/// The aggregate of a subtree (invariant 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Agg {
    pub min_start: u64,
    pub max_end: u64,
    pub max_gap: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub len: u32,
    pub start: [u64; CAP],
    pub end: [u64; CAP],
    pub flags: [u8; CAP],
}

impl Leaf {
    const EMPTY: Leaf = Leaf {
        len: 0,
        start: [0; CAP],
        end: [0; CAP],
        flags: [0; CAP],
    };

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    pub fn agg(&self) -> Agg {
        let n = self.n();
        debug_assert!(n > 0);
        let mut gap = 0;
        for i in 1..n {
            gap = gap.max(self.start[i] - self.end[i - 1]);
        }
        Agg {
            min_start: self.start[0],
            max_end: self.end[n - 1],
            max_gap: gap,
        }
    }

    fn insert_at(&mut self, i: usize, start: u64, end: u64, flags: u8) {
        let n = self.n();
        debug_assert!(n < CAP);
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
    pub child: [u32; CAP],
    pub min_start: [u64; CAP],
    pub max_end: [u64; CAP],
    pub max_gap: [u64; CAP],
}

impl Inner {
    const EMPTY: Inner = Inner {
        len: 0,
        child: [0; CAP],
        min_start: [0; CAP],
        max_end: [0; CAP],
        max_gap: [0; CAP],
    };

    #[inline]
    fn n(&self) -> usize {
        self.len as usize
    }

    pub fn agg(&self) -> Agg {
        let n = self.n();
        debug_assert!(n > 0);
        let mut gap = self.max_gap[0];
        for i in 1..n {
            gap = gap
                .max(self.max_gap[i])
                .max(self.min_start[i] - self.max_end[i - 1]);
        }
        Agg {
            min_start: self.min_start[0],
            max_end: self.max_end[n - 1],
            max_gap: gap,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, a: Agg) {
        self.min_start[i] = a.min_start;
        self.max_end[i] = a.max_end;
        self.max_gap[i] = a.max_gap;
    }

    fn insert_at(&mut self, i: usize, child: u32, a: Agg) {
        let n = self.n();
        debug_assert!(n < CAP);
        self.child.copy_within(i..n, i + 1);
        self.min_start.copy_within(i..n, i + 1);
        self.max_end.copy_within(i..n, i + 1);
        self.max_gap.copy_within(i..n, i + 1);
        self.child[i] = child;
        self.set(i, a);
        self.len += 1;
    }

    fn remove_run(&mut self, a: usize, b: usize) {
        let n = self.n();
        self.child.copy_within(b..n, a);
        self.min_start.copy_within(b..n, a);
        self.max_end.copy_within(b..n, a);
        self.max_gap.copy_within(b..n, a);
        self.len -= (b - a) as u32;
    }

    fn append_from(&mut self, other: &Inner, from: usize) {
        let (n, m) = (self.n(), other.n());
        let k = m - from;
        self.child[n..n + k].copy_from_slice(&other.child[from..m]);
        self.min_start[n..n + k].copy_from_slice(&other.min_start[from..m]);
        self.max_end[n..n + k].copy_from_slice(&other.max_end[from..m]);
        self.max_gap[n..n + k].copy_from_slice(&other.max_gap[from..m]);
        self.len += k as u32;
    }

    /// The last child whose subtree starts at or below `key` (0 if none).
    #[inline]
    pub fn child_for(&self, key: u64) -> usize {
        let n = self.n();
        let mut i = 1;
        while i < n && self.min_start[i] <= key {
            i += 1;
        }
        i - 1
    }
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

/// What a recursive insert returns to its parent.
type Split = Option<(u32, Agg)>;

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
            self.leaves.push(Leaf::EMPTY);
            (self.leaves.len() - 1) as u32
        }
    }

    fn new_inner(&mut self) -> u32 {
        if let Some(id) = self.free_inners.pop() {
            self.inners[id as usize].len = 0;
            id
        } else {
            self.inners.push(Inner::EMPTY);
            (self.inners.len() - 1) as u32
        }
    }

    /// The aggregate of the whole tree, or `None` if it is empty.
    pub fn root_agg(&self) -> Option<Agg> {
        if self.len == 0 {
            None
        } else {
            Some(self.node_agg(self.root, self.height))
        }
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

    /// Inserts a VMA that overlaps nothing (the caller checked).
    pub fn insert(&mut self, start: u64, end: u64, flags: u8) {
        let (_, split) = self.insert_rec(self.root, self.height, start, end, flags);
        if let Some((right, ragg)) = split {
            let left = self.root;
            let lagg = self.node_agg(left, self.height);
            let r = self.new_inner();
            let node = &mut self.inners[r as usize];
            node.insert_at(0, left, lagg);
            node.insert_at(1, right, ragg);
            self.root = r;
            self.height += 1;
        }
        self.len += 1;
    }

    fn insert_rec(&mut self, id: u32, level: u32, start: u64, end: u64, flags: u8) -> (Agg, Split) {
        if level == 0 {
            let leaf = &self.leaves[id as usize];
            let n = leaf.n();
            let mut i = 0;
            while i < n && leaf.start[i] < start {
                i += 1;
            }
            if n < CAP {
                let leaf = &mut self.leaves[id as usize];
                leaf.insert_at(i, start, end, flags);
                return (leaf.agg(), None);
            }
            // Split: the upper half moves to a new right sibling.
            let r = self.new_leaf();
            let (lo, hi) = split_pair(&mut self.leaves, id, r);
            lo.len = MIN as u32;
            hi.len = 0;
            hi.append_from_raw(lo, MIN, CAP);
            if i <= MIN {
                lo.insert_at(i, start, end, flags);
            } else {
                hi.insert_at(i - MIN, start, end, flags);
            }
            return (lo.agg(), Some((r, hi.agg())));
        }
        let i = self.inner(id).child_for(start);
        let child = self.inner(id).child[i];
        let (cagg, split) = self.insert_rec(child, level - 1, start, end, flags);
        let node = &mut self.inners[id as usize];
        node.set(i, cagg);
        let Some((nc, nagg)) = split else {
            return (node.agg(), None);
        };
        if node.n() < CAP {
            node.insert_at(i + 1, nc, nagg);
            return (node.agg(), None);
        }
        let r = self.new_inner();
        let (lo, hi) = split_pair(&mut self.inners, id, r);
        hi.len = 0;
        hi.append_from(lo, MIN);
        lo.len = MIN as u32;
        if i < MIN {
            lo.insert_at(i + 1, nc, nagg);
        } else {
            hi.insert_at(i + 1 - MIN, nc, nagg);
        }
        (lo.agg(), Some((r, hi.agg())))
    }

    // ----- lookups -------------------------------------------------------

    /// The first VMA with `end > addr`.
    pub fn first_ending_after(&self, addr: u64) -> Option<Pos> {
        let (mut id, mut level) = (self.root, self.height);
        while level > 0 {
            let node = self.inner(id);
            let n = node.n();
            let mut i = 0;
            while i < n && node.max_end[i] <= addr {
                i += 1;
            }
            if i == n {
                return None;
            }
            id = node.child[i];
            level -= 1;
        }
        let leaf = self.leaf(id);
        let n = leaf.n();
        let mut i = 0;
        while i < n && leaf.end[i] <= addr {
            i += 1;
        }
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
            let n = node.n();
            let mut i = n;
            while node.min_start[i - 1] >= addr {
                i -= 1;
            }
            id = node.child[i - 1];
            level -= 1;
        }
        let leaf = self.leaf(id);
        let mut i = leaf.n();
        while i > 0 && leaf.start[i - 1] >= addr {
            i -= 1;
        }
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

    fn set_rec(&mut self, id: u32, level: u32, key: u64, start: u64, end: u64) -> Agg {
        if level == 0 {
            let leaf = &mut self.leaves[id as usize];
            let i = leaf.start[..leaf.n()]
                .iter()
                .position(|s| *s == key)
                .expect("set_bounds: no VMA starts at key");
            leaf.start[i] = start;
            leaf.end[i] = end;
            return leaf.agg();
        }
        let i = self.inner(id).child_for(key);
        let child = self.inner(id).child[i];
        let a = self.set_rec(child, level - 1, key, start, end);
        let node = &mut self.inners[id as usize];
        node.set(i, a);
        node.agg()
    }

    // ----- range removal -------------------------------------------------

    /// Removes every VMA whose start lies in `[s, e)`; returns how many.
    /// O(log n + k): subtrees entirely inside the range are released whole,
    /// and only the two boundary paths are rebalanced.
    pub fn remove_starts_in(&mut self, s: u64, e: u64) -> usize {
        let removed = self.remove_rec(self.root, self.height, s, e);
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

    fn remove_rec(&mut self, id: u32, level: u32, s: u64, e: u64) -> usize {
        if level == 0 {
            let leaf = &mut self.leaves[id as usize];
            let n = leaf.n();
            let a = leaf.start[..n].iter().position(|x| *x >= s).unwrap_or(n);
            let mut b = a;
            while b < n && leaf.start[b] < e {
                b += 1;
            }
            leaf.remove_run(a, b);
            return b - a;
        }
        let node = self.inner(id);
        let n = node.n();
        if node.min_start[0] >= e {
            return 0;
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
        let first = self.inner(id).child[i0];
        removed += self.remove_rec(first, level - 1, s, e);
        let mut touched = [i0, usize::MAX];
        if i1 > i0 {
            let last = self.inner(id).child[i1];
            removed += self.remove_rec(last, level - 1, s, e);
            let node = &mut self.inners[id as usize];
            node.remove_run(i0 + 1, i1);
            touched[1] = i0 + 1;
        }
        // Refresh the touched children's aggregates, then restore their
        // fill (higher index first, so the lower one stays put).
        for &c in touched.iter().rev() {
            if c != usize::MAX {
                self.refresh_child(id, level, c);
            }
        }
        if touched[1] != usize::MAX {
            self.fix_child(id, level, touched[1]);
        }
        if (touched[0]) < self.inner(id).n() {
            self.fix_child(id, level, touched[0]);
        }
        removed
    }

    /// Recomputes the stored aggregate of child `c` of inner node `id` (if
    /// the child is not empty).
    fn refresh_child(&mut self, id: u32, level: u32, c: usize) {
        let child = self.inner(id).child[c];
        if self.node_len(child, level - 1) > 0 {
            let a = self.node_agg(child, level - 1);
            self.inners[id as usize].set(c, a);
        }
    }

    /// Restores invariant 2 for child `c` of inner node `id` at `level`:
    /// removes it if empty; if it holds fewer than `MIN` entries, merges it
    /// with a neighbour or evens the two out. A merge or a shift can bring
    /// an underfull grandchild next to new siblings; those are fixed in turn.
    fn fix_child(&mut self, id: u32, level: u32, c: usize) {
        let child = self.inner(id).child[c];
        let clen = self.node_len(child, level - 1);
        if clen == 0 {
            self.free_node(child, level - 1);
            self.inners[id as usize].remove_run(c, c + 1);
            return;
        }
        if clen >= MIN || self.inner(id).n() < 2 {
            return;
        }
        let n = self.inner(id).n();
        let (a, b) = if c + 1 < n { (c, c + 1) } else { (c - 1, c) };
        let (ca, cb) = (self.inner(id).child[a], self.inner(id).child[b]);
        let (la, lb) = (self.node_len(ca, level - 1), self.node_len(cb, level - 1));
        if la + lb <= CAP {
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
            }
        }
    }

    /// Fixes every underfull child of inner node `id` (rare: only nodes
    /// that sat alone under a short parent can be underfull).
    fn fix_grandchildren(&mut self, id: u32, level: u32) {
        let mut c = 0;
        while c < self.inner(id).n() {
            let child = self.inner(id).child[c];
            let before = self.inner(id).n();
            if self.node_len(child, level - 1) < MIN {
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
    if nx < want_x {
        let k = want_x - nx;
        let n = x.n();
        x.child[n..n + k].copy_from_slice(&y.child[..k]);
        x.min_start[n..n + k].copy_from_slice(&y.min_start[..k]);
        x.max_end[n..n + k].copy_from_slice(&y.max_end[..k]);
        x.max_gap[n..n + k].copy_from_slice(&y.max_gap[..k]);
        x.len += k as u32;
        y.remove_run(0, k);
    } else if nx > want_x {
        let k = nx - want_x;
        y.child.copy_within(0..ny, k);
        y.min_start.copy_within(0..ny, k);
        y.max_end.copy_within(0..ny, k);
        y.max_gap.copy_within(0..ny, k);
        y.child[..k].copy_from_slice(&x.child[want_x..nx]);
        y.min_start[..k].copy_from_slice(&x.min_start[want_x..nx]);
        y.max_end[..k].copy_from_slice(&x.max_end[want_x..nx]);
        y.max_gap[..k].copy_from_slice(&x.max_gap[want_x..nx]);
        y.len += k as u32;
        x.len = want_x as u32;
    }
}
