//! The gap-tree design at its best on the `augmented-rbtree` crate: a
//! red-black tree of the free ranges (holes) keyed by start, each node
//! augmented with the largest hole length in its subtree.
//!
//! - **Allocate**: one descent from the root to the lowest (or highest)
//!   hole whose length is at least `length + align - PAGE`, the worst-case
//!   padding of Linux's `vm_unmapped_area`: any such hole holds an aligned
//!   fit, so the descent never backtracks and is O(log n) at every
//!   alignment. The range goes to the aligned start of the hole (lowest
//!   first) or the aligned top (highest first), as the kernel places it.
//!   The hole shrinks in place or disappears; only when alignment leaves a
//!   piece on both sides is a second node inserted.
//! - **Free**: one descent to the hole below the freed range, its
//!   successor by the in-order link; the freed range extends a neighbour in
//!   place, merges the two, or becomes a new hole.
//!
//! A hole's start changes in place whenever it shrinks or grows at the
//! bottom. Its order among the holes never changes (holes do not overlap),
//! so the key is a `Cell` and is adjusted without re-insertion, as the
//! kernel adjusts `vm_start` of a VMA in its tree. The crate's mutable
//! cursor re-propagates the augmentation whenever a `NodeGuard` is
//! dropped; the descent only reads, so it forgets the guards it passes
//! (they hold nothing but a node pointer) and drops only the guard of the
//! node it changes, which carries the new maximum to the root.
//!
//! The padded search is Linux's placement, not an exact fit: a hole that
//! holds an aligned fit but is shorter than the padded length is skipped.
//! At 4 KiB (no padding) it places exactly as svmap does.

use std::cell::Cell;
use std::cmp::Ordering;

use augmented_rbtree::{Augment, AugmentedRBTree, TreeLocation};

use crate::workload::{Churn, PAGE, WINDOW};

/// A hole's start, adjustable in place (see the module documentation).
#[derive(Debug)]
pub struct Start(Cell<u64>);

impl Start {
    fn new(v: u64) -> Self {
        Start(Cell::new(v))
    }

    fn get(&self) -> u64 {
        self.0.get()
    }
}

impl PartialEq for Start {
    fn eq(&self, o: &Self) -> bool {
        self.get() == o.get()
    }
}

impl Eq for Start {}

impl PartialOrd for Start {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Start {
    fn cmp(&self, o: &Self) -> Ordering {
        self.get().cmp(&o.get())
    }
}

/// Largest hole length (`end - start`) in the subtree.
#[derive(Debug)]
pub struct MaxLen;

impl Augment<Start, u64> for MaxLen {
    type Stats = u64;

    #[inline]
    fn compute(
        key: &Start,
        end: &u64,
        left: Option<(&Start, &u64, &u64)>,
        right: Option<(&Start, &u64, &u64)>,
    ) -> u64 {
        let l = left.map_or(0, |x| *x.2);
        let r = right.map_or(0, |x| *x.2);
        (end - key.get()).max(l).max(r)
    }
}

/// Holes `[start, end)`: key start, value end.
type Tree = AugmentedRBTree<Start, u64, MaxLen>;

/// The hole tree over `[0, WINDOW)`.
pub struct HoleTree {
    t: Tree,
    align: u64,
    topdown: bool,
}

/// A node's (start, end, subtree maximum) from an optional `NodeGuard`;
/// the guard is then forgotten so that reading does not re-propagate the
/// augmentation. (A macro: the guard's policy type is not nameable.)
macro_rules! read {
    ($g:expr) => {{
        let guard = $g;
        match guard {
            Some(g) => {
                let r: (u64, u64, u64) = (g.key().get(), *g.value(), *g.stats());
                std::mem::forget(g);
                Some(r)
            }
            None => None,
        }
    }};
}

impl HoleTree {
    /// One hole covering the window; places with `align` alignment,
    /// highest first if `topdown`.
    pub fn new(align: u64, topdown: bool) -> Self {
        let mut t = Tree::new();
        t.insert(Start::new(0), WINDOW);
        HoleTree { t, align, topdown }
    }

    /// The holes in address order (for tests).
    pub fn holes(&self) -> Vec<(u64, u64)> {
        self.t.iter().map(|(k, v, _)| (k.get(), *v)).collect()
    }

    /// Whether the red-black properties and every subtree maximum hold,
    /// and the holes are non-empty, sorted and never adjacent (for tests).
    pub fn is_consistent(&self) -> bool {
        let h = self.holes();
        self.t.verify_properties()
            && self.t.verify_augmentation()
            && h.iter().all(|&(s, e)| s < e)
            && h.windows(2).all(|w| w[0].1 < w[1].0)
    }
}

impl Churn for HoleTree {
    type Handle = (u64, u64);

    fn alloc(&mut self, len: u64) -> (u64, u64) {
        let mask = self.align - 1;
        // Worst-case padding: any hole this long holds an aligned fit.
        let need = len + self.align - PAGE;
        let topdown = self.topdown;
        let mut c = self.t.nav_cursor_mut::<Start>(TreeLocation::Root);
        let (mut s, mut e, max) = read!(c.get()).expect("hole tree: no space");
        assert!(max >= need, "hole tree: no space");
        // The descent: into the preferred child if its subtree holds a
        // long enough hole, else this hole if it is long enough, else the
        // other child (which then must hold one).
        loop {
            let (near, far) = if topdown {
                (read!(c.peek_right()), read!(c.peek_left()))
            } else {
                (read!(c.peek_left()), read!(c.peek_right()))
            };
            if near.is_some_and(|n| n.2 >= need) {
                let n = near.unwrap_or_default();
                std::mem::forget(if topdown { c.right() } else { c.left() });
                (s, e) = (n.0, n.1);
            } else if e - s >= need {
                break;
            } else {
                let f = far.unwrap_or_default();
                std::mem::forget(if topdown { c.left() } else { c.right() });
                (s, e) = (f.0, f.1);
            }
        }
        let a = if topdown {
            (e - len) & !mask
        } else {
            (s + mask) & !mask
        };
        let b = a + len;
        match (a > s, b < e) {
            (false, false) => {
                c.remove();
            }
            (false, true) => {
                let g = c.get().expect("hole tree: cursor");
                g.key().0.set(b);
                // Dropping `g` recomputes the maxima up to the root.
            }
            (true, false) => *c.get().expect("hole tree: cursor").value_mut() = a,
            (true, true) => {
                *c.get().expect("hole tree: cursor").value_mut() = a;
                self.t.insert(Start::new(b), e);
            }
        }
        (a, b)
    }

    fn free(&mut self, (s, e): (u64, u64)) {
        let below = Start::new(s);
        let mut c = self
            .t
            .nav_cursor_mut(TreeLocation::UpperBound(std::ops::Bound::Excluded(&below)));
        let prev = read!(c.get());
        if let Some((ps, pe, _)) = prev {
            let next = read!(c.peek_next());
            let joins_prev = pe == s;
            let joins_next = next.is_some_and(|n| n.0 == e);
            match (joins_prev, joins_next) {
                (true, true) => {
                    // Remove the hole below; the one above takes its start.
                    c.remove();
                    c.get().expect("hole tree: successor").key().0.set(ps);
                }
                (true, false) => *c.get().expect("hole tree: cursor").value_mut() = e,
                (false, true) => c.next().expect("hole tree: successor").key().0.set(s),
                (false, false) => {
                    self.t.insert(Start::new(s), e);
                }
            }
        } else {
            // No hole below: the freed range can only join the first hole.
            let mut c = self.t.nav_cursor_mut::<Start>(TreeLocation::Leftmost);
            let first = read!(c.get());
            if first.is_some_and(|n| n.0 == e) {
                c.get().expect("hole tree: cursor").key().0.set(s);
            } else {
                self.t.insert(Start::new(s), e);
            }
        }
    }
}
