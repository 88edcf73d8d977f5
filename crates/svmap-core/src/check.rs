//! `check_invariants()`: recomputes every cached aggregate from scratch.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::map::AddressMap;
use crate::tree::{Treap, NIL};

/// A dump of the tree for assertion messages (test-only use).
pub(crate) fn dump(t: &Treap) -> String {
    let mut out = String::new();
    fn rec(t: &Treap, x: u32, depth: usize, out: &mut String) {
        if x == NIL {
            return;
        }
        let n = t.n(x);
        rec(t, n.right, depth + 1, out);
        out.push_str(&format!(
            "{:indent$}#{x} [{:#x}, {:#x}) f={} prio={} span=[{:#x}, {:#x}) max_gap={:#x}\n",
            "",
            n.start,
            n.end,
            n.flags,
            n.prio,
            n.min_start,
            n.max_end,
            n.max_gap,
            indent = depth * 2
        ));
        rec(t, n.left, depth + 1, out);
    }
    rec(t, t.root, 0, &mut out);
    out
}

/// Recomputed aggregate of a subtree: (min_start, max_end, max_gap, count).
fn recompute(t: &Treap, x: u32, seen: &mut Vec<bool>) -> (u64, u64, u64, usize) {
    let n = t.n(x);
    assert!(!seen[x as usize], "node #{x} reached twice:\n{}", dump(t));
    seen[x as usize] = true;
    assert!(n.start < n.end, "empty VMA at node #{x}:\n{}", dump(t));
    let (mut lo, mut hi, mut gap, mut count) = (n.start, n.end, 0u64, 1usize);
    if n.left != NIL {
        assert!(
            t.n(n.left).prio <= n.prio,
            "heap order broken at #{x}:\n{}",
            dump(t)
        );
        let (ls, le, lg, lc) = recompute(t, n.left, seen);
        assert!(
            le <= n.start,
            "overlap or disorder left of #{x}:\n{}",
            dump(t)
        );
        lo = ls;
        gap = lg.max(n.start - le);
        count += lc;
    }
    if n.right != NIL {
        assert!(
            t.n(n.right).prio <= n.prio,
            "heap order broken at #{x}:\n{}",
            dump(t)
        );
        let (rs, re, rg, rc) = recompute(t, n.right, seen);
        assert!(
            n.end <= rs,
            "overlap or disorder right of #{x}:\n{}",
            dump(t)
        );
        hi = re;
        gap = gap.max(rg).max(rs - n.end);
        count += rc;
    }
    assert_eq!(
        (n.min_start, n.max_end, n.max_gap),
        (lo, hi, gap),
        "stale aggregate at node #{x}:\n{}",
        dump(t)
    );
    (lo, hi, gap, count)
}

pub(crate) fn check(map: &AddressMap) {
    let t = &map.t;
    let mut seen = alloc::vec![false; t.nodes.len()];
    let count = if t.root == NIL {
        0
    } else {
        recompute(t, t.root, &mut seen).3
    };
    assert_eq!(count, t.len(), "count mismatch:\n{}", dump(t));
    // Forward and backward walks agree and are sorted and disjoint.
    let fwd: Vec<_> = map.iter().collect();
    assert_eq!(fwd.len(), count);
    for w in fwd.windows(2) {
        assert!(
            w[0].end <= w[1].start,
            "iteration out of order:\n{}",
            dump(t)
        );
    }
    let mut back = Vec::with_capacity(fwd.len());
    let mut addr = u64::MAX;
    while let Some(v) = map.prev_vma(addr) {
        back.push(v);
        if v.start == 0 {
            break;
        }
        addr = v.start;
    }
    back.reverse();
    assert_eq!(fwd, back, "forward and backward walks differ:\n{}", dump(t));
    // Every arena slot is either live (reached from the root) or free.
    let live = seen.iter().filter(|s| **s).count();
    assert_eq!(live, count);
}
