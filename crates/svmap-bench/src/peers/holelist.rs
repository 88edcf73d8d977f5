//! A sorted hole list in the style of Mesa's `util_vma_heap` (and libdrm's
//! VA manager): the free ranges in address order, a linear first-fit scan
//! from the bottom or the top, coalescing on free.
//!
//! Mesa keeps the holes in a doubly linked list and also finds a freed
//! range's neighbours by a linear walk; this version keeps them in a sorted
//! `Vec` (the same linear scan for allocation, a binary search plus a
//! `memmove` for free), which is, if anything, faster than the original.

use crate::workload::{Churn, WINDOW};

/// Free ranges `[start, end)`, sorted, never adjacent.
pub struct HoleList {
    holes: Vec<(u64, u64)>,
    align: u64,
    topdown: bool,
}

impl HoleList {
    /// One hole covering the window.
    pub fn new(align: u64, topdown: bool) -> Self {
        HoleList {
            holes: vec![(0, WINDOW)],
            align,
            topdown,
        }
    }

    /// One hole covering `[start, end)` (none if the range is empty),
    /// placing highest first if `topdown`, for [`Self::alloc_aligned`],
    /// which takes its alignment per call. The fixed alignment of
    /// [`Churn::alloc`] is one page.
    pub fn with_window(start: u64, end: u64, topdown: bool) -> Self {
        HoleList {
            holes: if start < end {
                vec![(start, end)]
            } else {
                Vec::new()
            },
            align: crate::workload::PAGE,
            topdown,
        }
    }

    /// Places `len` bytes at a multiple of `align` in the lowest (highest)
    /// hole that holds such a placement, at the hole's aligned bottom
    /// (top), as Mesa's `util_vma_heap_alloc` does with its per-call
    /// alignment; `None` if no hole does, if `len` is 0 or if `align` is
    /// not a power of two.
    pub fn alloc_aligned(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let mask = align - 1;
        let found = if self.topdown {
            self.holes
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, &(s, e))| {
                    let a = e.checked_sub(len)? & !mask;
                    (a >= s).then_some((i, a))
                })
        } else {
            self.holes.iter().enumerate().find_map(|(i, &(s, e))| {
                let a = s.checked_add(mask)? & !mask;
                (a <= e && e - a >= len).then_some((i, a))
            })
        };
        let (i, a) = found?;
        self.carve(i, a, len);
        Some(a)
    }

    /// The free holes `[start, end)` in address order.
    pub fn holes(&self) -> &[(u64, u64)] {
        &self.holes
    }

    fn carve(&mut self, i: usize, a: u64, len: u64) {
        let (s, e) = self.holes[i];
        let b = a + len;
        match (a == s, b == e) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].0 = b,
            (false, true) => self.holes[i].1 = a,
            (false, false) => {
                self.holes[i].1 = a;
                self.holes.insert(i + 1, (b, e));
            }
        }
    }
}

impl Churn for HoleList {
    type Handle = (u64, u64);

    fn alloc(&mut self, len: u64) -> (u64, u64) {
        let mask = self.align - 1;
        let found = if self.topdown {
            self.holes
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, &(s, e))| {
                    let a = e.checked_sub(len)? & !mask;
                    (a >= s).then_some((i, a))
                })
        } else {
            self.holes.iter().enumerate().find_map(|(i, &(s, e))| {
                let a = (s + mask) & !mask;
                (a + len <= e).then_some((i, a))
            })
        };
        let (i, a) = found.expect("hole list: no space");
        self.carve(i, a, len);
        (a, a + len)
    }

    fn free(&mut self, (s, e): (u64, u64)) {
        let i = self.holes.partition_point(|h| h.0 < s);
        let joins_prev = i > 0 && self.holes[i - 1].1 == s;
        let joins_next = i < self.holes.len() && self.holes[i].0 == e;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.holes[i - 1].1 = self.holes[i].1;
                self.holes.remove(i);
            }
            (true, false) => self.holes[i - 1].1 = e,
            (false, true) => self.holes[i].0 = s,
            (false, false) => self.holes.insert(i, (s, e)),
        }
    }
}
