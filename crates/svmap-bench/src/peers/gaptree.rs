//! The exact-fit variant of the gap tree (`gap-tree-exact` in the table),
//! kept to show what an exact aligned fit costs this design; the fair gap
//! tree is [`crate::peers::holetree`].
//!
//! The classic Linux (pre-maple-tree) layout on the `augmented-rbtree`
//! crate: a red-black tree of the allocated ranges keyed by start, each
//! node holding the gap below it (`vm_start - prev->vm_end`) and the
//! subtree's largest such gap (`rb_subtree_gap`) as its augmentation. The
//! gap above the highest range is kept outside the tree, as the kernel kept
//! `highest_vm_end`.
//!
//! The crate expresses this directly: the per-node statistic is computed
//! from the node's value and its children's statistics, a `NavCursor`
//! walks the tree edges for the pruned descent, and a `NavCursorMut` value
//! guard re-propagates the statistic when a successor's gap changes.
//!
//! The search looks for an exact aligned fit: it enters every subtree whose
//! largest gap is at least the length and backtracks when the gaps there
//! hold no aligned fit. At 4 KiB alignment it never backtracks; at 2 MiB it
//! examines about N/2 gaps per allocation. Each allocation also costs three
//! more descents by key (the predecessor's end, the successor's gap, the
//! insert) and each free two more besides the removal (the predecessor's
//! end, the successor's gap).

use std::ops::Bound;

use augmented_rbtree::{Augment, AugmentedRBTree, NavCursor, TreeLocation};

use crate::workload::{Churn, WINDOW};

/// The value of a node: the range's end and the free gap just below it.
#[derive(Clone, Copy, Debug)]
pub struct Val {
    end: u64,
    gap: u64,
}

/// Largest gap in the subtree.
#[derive(Debug)]
pub struct MaxGap;

impl Augment<u64, Val> for MaxGap {
    type Stats = u64;

    #[inline]
    fn compute(
        _key: &u64,
        v: &Val,
        left: Option<(&u64, &Val, &u64)>,
        right: Option<(&u64, &Val, &u64)>,
    ) -> u64 {
        let l = left.map_or(0, |x| *x.2);
        let r = right.map_or(0, |x| *x.2);
        v.gap.max(l).max(r)
    }
}

type Tree = AugmentedRBTree<u64, Val, MaxGap>;
type Cur<'a> = NavCursor<'a, u64, Val, u64>;

/// The gap tree over `[lo, hi)`: `[0, WINDOW)` unless built with
/// [`GapTree::with_window`].
pub struct GapTree {
    t: Tree,
    /// End of the highest range (`lo` if empty): the top gap is
    /// `[last_end, hi)`.
    last_end: u64,
    lo: u64,
    hi: u64,
    align: u64,
    topdown: bool,
}

impl GapTree {
    /// An empty tree placing with `align` alignment, highest first if
    /// `topdown`.
    pub fn new(align: u64, topdown: bool) -> Self {
        GapTree {
            t: Tree::new(),
            last_end: 0,
            lo: 0,
            hi: WINDOW,
            align,
            topdown,
        }
    }

    /// An empty tree over `[lo, hi)` (which must not be empty), placing
    /// highest first if `topdown`, for [`Self::alloc_aligned`], which takes
    /// its alignment per call. The fixed alignment of [`Churn::alloc`] is
    /// one page.
    pub fn with_window(lo: u64, hi: u64, topdown: bool) -> Self {
        assert!(lo < hi, "gap tree: empty window [{lo:#x}, {hi:#x})");
        GapTree {
            t: Tree::new(),
            last_end: lo,
            lo,
            hi,
            align: crate::workload::PAGE,
            topdown,
        }
    }

    /// Places `len` bytes at a multiple of `align` (a power of two) at the
    /// lowest (highest) such address in the free space, by the exact
    /// backtracking search; `None` if there is none.
    pub fn alloc_aligned(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let a = self.find(len, align)?;
        self.take(a, len);
        Some(a)
    }

    /// The placement of `len` bytes aligned to `align` in the gap `[s, e)`,
    /// if any.
    #[inline]
    fn fit(&self, s: u64, e: u64, len: u64, align: u64) -> Option<u64> {
        let mask = align - 1;
        if self.topdown {
            let a = e.checked_sub(len)? & !mask;
            (a >= s).then_some(a)
        } else {
            let a = s.checked_add(mask)? & !mask;
            (a <= e && e - a >= len).then_some(a)
        }
    }

    /// Records `[a, a + len)`, found free by [`Self::find`].
    fn take(&mut self, a: u64, len: u64) {
        let e = a + len;
        let pe = self.pred_end(a);
        if !self.set_succ_gap(a, e) {
            self.last_end = e;
        }
        self.t.insert(
            a,
            Val {
                end: e,
                gap: a - pe,
            },
        );
    }

    fn low(&self, c: Cur<'_>, len: u64, align: u64) -> Option<u64> {
        let (&k, v, &max) = c.get()?;
        if max < len {
            return None;
        }
        let mut l = c;
        if l.left().is_some() {
            if let Some(a) = self.low(l, len, align) {
                return Some(a);
            }
        }
        if v.gap >= len {
            if let Some(a) = self.fit(k - v.gap, k, len, align) {
                return Some(a);
            }
        }
        let mut r = c;
        if r.right().is_some() {
            return self.low(r, len, align);
        }
        None
    }

    fn high(&self, c: Cur<'_>, len: u64, align: u64) -> Option<u64> {
        let (&k, v, &max) = c.get()?;
        if max < len {
            return None;
        }
        let mut r = c;
        if r.right().is_some() {
            if let Some(a) = self.high(r, len, align) {
                return Some(a);
            }
        }
        if v.gap >= len {
            if let Some(a) = self.fit(k - v.gap, k, len, align) {
                return Some(a);
            }
        }
        let mut l = c;
        if l.left().is_some() {
            return self.high(l, len, align);
        }
        None
    }

    fn find(&self, len: u64, align: u64) -> Option<u64> {
        let root = self.t.nav_cursor::<u64>(TreeLocation::Root);
        let top = || self.fit(self.last_end, self.hi, len, align);
        if self.topdown {
            top().or_else(|| self.high(root, len, align))
        } else {
            self.low(root, len, align).or_else(top)
        }
    }

    /// End of the highest range starting below `s` (`lo` if none).
    fn pred_end(&self, s: u64) -> u64 {
        self.t
            .nav_cursor(TreeLocation::UpperBound(Bound::Excluded(&s)))
            .get()
            .map_or(self.lo, |(_, v, _)| v.end)
    }

    /// Sets the gap of the first range starting above `s`; returns false if
    /// there is none.
    fn set_succ_gap(&mut self, s: u64, below: u64) -> bool {
        let mut c = self
            .t
            .nav_cursor_mut(TreeLocation::LowerBound(Bound::Excluded(&s)));
        let found = match c.get() {
            Some(mut g) => {
                let k = *g.key();
                g.value_mut().gap = k - below;
                true
            }
            None => false,
        };
        found
    }
}

impl Churn for GapTree {
    type Handle = (u64, u64);

    fn alloc(&mut self, len: u64) -> (u64, u64) {
        let a = self.find(len, self.align).expect("gap tree: no space");
        self.take(a, len);
        (a, a + len)
    }

    fn free(&mut self, (s, _e): (u64, u64)) {
        self.t.remove(&s).expect("gap tree: free of nothing");
        let pe = self.pred_end(s);
        if !self.set_succ_gap(s, pe) {
            self.last_end = pe;
        }
    }
}
