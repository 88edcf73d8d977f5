//! The raw search structure: an arena-allocated treap of VMAs, augmented
//! with the largest free gap of every subtree.
//!
//! # Invariants
//!
//! Every function in this module relies on, and restores, these:
//!
//! 1. **Order.** An in-order walk yields VMAs sorted by `start`; VMAs do not
//!    overlap (`prev.end <= next.start`) and are never empty
//!    (`start < end`). Because they do not overlap, `end` is sorted too.
//! 2. **Heap.** A node's `prio` is `>=` the `prio` of both children (a
//!    treap: the shape is that of a random binary search tree, so the
//!    expected depth is `O(log n)` whatever the insertion order).
//! 3. **Augmentation.** For every node `t` with subtree `S(t)`:
//!    `min_start = min(start)`, `max_end = max(end)` over `S(t)` and
//!    `max_gap` is the length of the largest *internal* hole of `S(t)`: the
//!    largest `q.start - p.end` over consecutive VMAs `p, q` both in `S(t)`
//!    (0 if there is none). The holes at the edges of a subtree belong to its
//!    ancestors; the holes below the first VMA and above the last one belong
//!    to nobody and are handled by the callers in `map.rs`.
//!
//! Invariant 3 is *local*: a node's aggregate depends only on its own VMA and
//! its children's aggregates, never on its predecessor, so rotations, splits
//! and merges recompute it bottom-up in O(1) per touched node.
//!
//! Nodes live in a `Vec` and are named by `u32` indices (`NIL` is none);
//! freed slots are chained through `left` into a free list. No `unsafe`.

use alloc::vec::Vec;

/// The "no node" index.
pub(crate) const NIL: u32 = u32::MAX;

/// One VMA plus the aggregates of its subtree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub start: u64,
    pub end: u64,
    pub min_start: u64,
    pub max_end: u64,
    pub max_gap: u64,
    pub left: u32,
    pub right: u32,
    pub prio: u32,
    pub flags: u8,
}

/// The arena and the root of the treap.
#[derive(Clone, Debug)]
pub(crate) struct Treap {
    pub nodes: Vec<Node>,
    pub root: u32,
    free: u32,
    len: usize,
    rng: u64,
}

impl Default for Treap {
    fn default() -> Self {
        Self::new()
    }
}

impl Treap {
    pub fn new() -> Self {
        Treap {
            nodes: Vec::new(),
            root: NIL,
            free: NIL,
            len: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn n(&self, t: u32) -> &Node {
        &self.nodes[t as usize]
    }

    #[inline]
    fn n_mut(&mut self, t: u32) -> &mut Node {
        &mut self.nodes[t as usize]
    }

    /// Allocates a detached node for `[start, end)`. Capacity of the arena is
    /// bounded by `u32::MAX - 1` nodes; callers check `len()` first.
    pub fn alloc(&mut self, start: u64, end: u64, flags: u8) -> u32 {
        // xorshift64*: a fixed seed keeps the shape, and so every benchmark,
        // reproducible.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let prio = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32;
        let node = Node {
            start,
            end,
            min_start: start,
            max_end: end,
            max_gap: 0,
            left: NIL,
            right: NIL,
            prio,
            flags,
        };
        self.len += 1;
        if self.free != NIL {
            let t = self.free;
            self.free = self.n(t).left;
            *self.n_mut(t) = node;
            t
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Returns a detached node to the free list.
    pub fn release(&mut self, t: u32) {
        self.len -= 1;
        let free = self.free;
        let n = self.n_mut(t);
        n.left = free;
        n.right = NIL;
        self.free = t;
    }

    /// Releases every node of the subtree `t` (O(size of the subtree)).
    pub fn release_subtree(&mut self, t: u32) {
        let mut stack = Vec::new();
        if t != NIL {
            stack.push(t);
        }
        while let Some(t) = stack.pop() {
            let (l, r) = (self.n(t).left, self.n(t).right);
            if l != NIL {
                stack.push(l);
            }
            if r != NIL {
                stack.push(r);
            }
            self.release(t);
        }
    }

    /// Recomputes the aggregates of `t` from its children (invariant 3).
    #[inline]
    pub fn update(&mut self, t: u32) {
        let n = *self.n(t);
        let mut min_start = n.start;
        let mut max_end = n.end;
        let mut max_gap = 0;
        if n.left != NIL {
            let l = self.n(n.left);
            min_start = l.min_start;
            max_gap = l.max_gap.max(n.start - l.max_end);
        }
        if n.right != NIL {
            let r = self.n(n.right);
            max_end = r.max_end;
            max_gap = max_gap.max(r.max_gap).max(r.min_start - n.end);
        }
        let m = self.n_mut(t);
        m.min_start = min_start;
        m.max_end = max_end;
        m.max_gap = max_gap;
    }

    /// Splits `t` into (VMAs with `start < key`, VMAs with `start >= key`).
    pub fn split(&mut self, t: u32, key: u64) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.n(t).start < key {
            let (a, b) = self.split(self.n(t).right, key);
            self.n_mut(t).right = a;
            self.update(t);
            (t, b)
        } else {
            let (a, b) = self.split(self.n(t).left, key);
            self.n_mut(t).left = b;
            self.update(t);
            (a, t)
        }
    }

    /// Joins two treaps where every VMA of `a` lies below every VMA of `b`.
    pub fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.n(a).prio >= self.n(b).prio {
            let r = self.merge(self.n(a).right, b);
            self.n_mut(a).right = r;
            self.update(a);
            a
        } else {
            let l = self.merge(a, self.n(b).left);
            self.n_mut(b).left = l;
            self.update(b);
            b
        }
    }

    /// Removes the highest VMA of `t`; returns (rest, removed node).
    pub fn pop_max(&mut self, t: u32) -> (u32, u32) {
        debug_assert!(t != NIL);
        let r = self.n(t).right;
        if r == NIL {
            let l = self.n(t).left;
            self.n_mut(t).left = NIL;
            self.update(t);
            return (l, t);
        }
        let (rest, m) = self.pop_max(r);
        self.n_mut(t).right = rest;
        self.update(t);
        (t, m)
    }

    /// Overwrites the VMA of a *detached* node (no children).
    pub fn set_range(&mut self, t: u32, start: u64, end: u64) {
        let n = self.n_mut(t);
        debug_assert!(n.left == NIL && n.right == NIL);
        n.start = start;
        n.end = end;
        self.update(t);
    }

    /// The lowest node of subtree `t`.
    pub fn leftmost(&self, mut t: u32) -> u32 {
        while t != NIL && self.n(t).left != NIL {
            t = self.n(t).left;
        }
        t
    }

    /// The highest node of subtree `t`.
    pub fn rightmost(&self, mut t: u32) -> u32 {
        while t != NIL && self.n(t).right != NIL {
            t = self.n(t).right;
        }
        t
    }

    /// The first VMA with `end > addr` (the kernel's `find_vma`), or `NIL`.
    pub fn first_ending_after(&self, addr: u64) -> u32 {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.end > addr {
                best = t;
                t = n.left;
            } else {
                t = n.right;
            }
        }
        best
    }

    /// The last VMA with `start < addr`, or `NIL`.
    pub fn last_starting_before(&self, addr: u64) -> u32 {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.start < addr {
                best = t;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        best
    }

    /// The first VMA with `start >= addr`, or `NIL`.
    pub fn first_starting_at_or_after(&self, addr: u64) -> u32 {
        let mut t = self.root;
        let mut best = NIL;
        while t != NIL {
            let n = self.n(t);
            if n.start >= addr {
                best = t;
                t = n.left;
            } else {
                t = n.right;
            }
        }
        best
    }

    /// Depth of the tree (for tests and statistics; O(n)).
    pub fn depth(&self) -> usize {
        let mut best = 0;
        let mut stack = Vec::new();
        if self.root != NIL {
            stack.push((self.root, 1usize));
        }
        while let Some((t, d)) = stack.pop() {
            best = best.max(d);
            let n = self.n(t);
            if n.left != NIL {
                stack.push((n.left, d + 1));
            }
            if n.right != NIL {
                stack.push((n.right, d + 1));
            }
        }
        best
    }

    /// Bytes held by the arena.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
    }
}
