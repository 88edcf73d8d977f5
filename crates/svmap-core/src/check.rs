//! `check_invariants()`: recomputes every cached aggregate from scratch.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::btree::{Agg, BTree, LMIN, MIN, NCLASS, ROOM_SHIFTS};
use crate::map::AddressMap;

/// A dump of the tree for assertion messages (test-only use).
pub(crate) fn dump(t: &BTree) -> String {
    let mut out = String::new();
    fn rec(t: &BTree, id: u32, level: u32, depth: usize, out: &mut String) {
        let pad = depth * 2;
        if level == 0 {
            let l = t.leaf(id);
            out.push_str(&format!("{:pad$}leaf #{id} ({} entries):", "", l.len));
            for i in 0..l.len as usize {
                out.push_str(&format!(
                    " [{:#x},{:#x}){}",
                    l.start[i], l.end[i], l.flags[i]
                ));
            }
            out.push('\n');
            return;
        }
        let n = t.inner(id);
        out.push_str(&format!("{:pad$}inner #{id} ({} children)\n", "", n.len));
        for i in 0..n.len as usize {
            out.push_str(&format!(
                "{:pad$}  child {i}: span [{:#x}, {:#x}) max_gap {:#x}\n",
                "", n.min_start[i], n.max_end[i], n.max_gap[i]
            ));
            rec(t, n.child[i], level - 1, depth + 2, out);
        }
    }
    rec(t, t.root, t.height, 0, &mut out);
    out
}

/// Recomputes the aggregate of a subtree from its VMAs alone; returns it
/// and the number of VMAs, and checks the stored per-child aggregates.
fn recompute(
    t: &BTree,
    id: u32,
    level: u32,
    is_root: bool,
    seen: &mut (Vec<bool>, Vec<bool>),
    vmas: &mut Vec<(u64, u64)>,
) -> usize {
    if level == 0 {
        assert!(
            !seen.0[id as usize],
            "leaf #{id} reached twice:\n{}",
            dump(t)
        );
        seen.0[id as usize] = true;
        let l = t.leaf(id);
        let n = l.len as usize;
        assert!(is_root || n >= LMIN, "underfull leaf #{id}:\n{}", dump(t));
        for i in 0..n {
            vmas.push((l.start[i], l.end[i]));
        }
        return n;
    }
    assert!(
        !seen.1[id as usize],
        "inner #{id} reached twice:\n{}",
        dump(t)
    );
    seen.1[id as usize] = true;
    let node = t.inner(id);
    let n = node.len as usize;
    assert!(
        node.cache_ok(),
        "inner #{id}: stale cache of the holes between children:\n{}",
        dump(t)
    );
    assert!(
        if is_root { n >= 2 } else { n >= MIN },
        "underfull inner #{id}:\n{}",
        dump(t)
    );
    let mut count = 0;
    for i in 0..n {
        let from = vmas.len();
        count += recompute(t, node.child[i], level - 1, false, seen, vmas);
        let sub = &vmas[from..];
        assert!(!sub.is_empty(), "empty child {i} of #{id}:\n{}", dump(t));
        let want = from_scratch(sub);
        let have = node.get(i);
        assert_eq!(
            have,
            want,
            "stale aggregate of child {i} of #{id}:\n{}",
            dump(t)
        );
    }
    count
}

/// The aggregate of a sorted run of VMAs, computed directly.
fn from_scratch(sub: &[(u64, u64)]) -> Agg {
    let mut gap = 0;
    let mut room = [0; NCLASS];
    for w in sub.windows(2) {
        let (gs, ge) = (w[0].1, w[1].0);
        gap = gap.max(ge.saturating_sub(gs));
        for (c, r) in room.iter_mut().enumerate() {
            // The longest 2^shift-aligned range inside [gs, ge), by
            // rounding in u128 (independent of btree::room's arithmetic).
            let a = 1u128 << ROOM_SHIFTS[c];
            let first = (gs as u128).div_ceil(a) * a;
            let len = (ge as u128).saturating_sub(first);
            *r = (*r).max(len as u64);
        }
    }
    Agg {
        min_start: sub[0].0,
        max_end: sub[sub.len() - 1].1,
        max_gap: gap,
        room,
    }
}

pub(crate) fn check(map: &AddressMap) {
    let t = &map.t;
    let mut seen = (
        alloc::vec![false; t.leaves.len()],
        alloc::vec![false; t.inners.len()],
    );
    let mut vmas = Vec::new();
    let count = recompute(t, t.root, t.height, true, &mut seen, &mut vmas);
    assert_eq!(count, t.len(), "count mismatch:\n{}", dump(t));
    let whole = (!vmas.is_empty()).then(|| from_scratch(&vmas));
    assert_eq!(t.root_agg(), whole, "root aggregate differs:\n{}", dump(t));
    assert_eq!(
        t.root_span(),
        whole.map(|a| (a.min_start, a.max_end)),
        "root span differs:\n{}",
        dump(t)
    );
    for (i, v) in vmas.iter().enumerate() {
        assert!(v.0 < v.1, "empty VMA {i}:\n{}", dump(t));
        if i > 0 {
            assert!(
                vmas[i - 1].1 <= v.0,
                "overlap or disorder at VMA {i}:\n{}",
                dump(t)
            );
        }
    }
    // Every arena slot is live or on a free list, never both.
    let (free_leaves, free_inners) = t.free_counts();
    let live_leaves = seen.0.iter().filter(|s| **s).count();
    let live_inners = seen.1.iter().filter(|s| **s).count();
    assert_eq!(live_leaves + free_leaves, t.leaves.len(), "leaf arena leak");
    assert_eq!(
        live_inners + free_inners,
        t.inners.len(),
        "inner arena leak"
    );
    // Forward iteration, backward walks and lookups agree.
    let fwd: Vec<_> = map.iter().map(|v| (v.start, v.end)).collect();
    assert_eq!(
        fwd,
        vmas,
        "iteration differs from the tree walk:\n{}",
        dump(t)
    );
    let mut back = Vec::with_capacity(fwd.len());
    let mut addr = u64::MAX;
    while let Some(v) = map.prev_vma(addr) {
        back.push((v.start, v.end));
        if v.start == 0 {
            break;
        }
        addr = v.start;
    }
    back.reverse();
    assert_eq!(fwd, back, "forward and backward walks differ:\n{}", dump(t));
}
