//! The B+tree under `AddressMap` beyond the searches: the plain accessors,
//! seeking an iterator past the last VMA of a deep tree, the heap it
//! reports, and wide unmaps on trees of three and more levels whose
//! rebalancing merges grandchildren. Each test catches a mutant of
//! `btree.rs` or `map.rs` that the rest of the suite let through
//! (`docs/testing.md` lists the runs); the answers are derived from the
//! sorted list of VMAs that the test inserted.

use svmap_core::{AddressMap, Vma, VmaFlags};

const PAGE: u64 = 0x1000;

/// A fixed-seed generator (splitmix64), so a failure reproduces.
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

/// `n` one-page VMAs with one-page holes between them, inserted in order.
fn striped(n: u64) -> AddressMap {
    let mut m = AddressMap::new();
    for i in 0..n {
        m.insert(2 * i * PAGE, (2 * i + 1) * PAGE, VmaFlags::NONE)
            .unwrap();
    }
    m
}

#[test]
fn is_empty_follows_the_contents() {
    let mut m = AddressMap::new();
    assert!(m.is_empty());
    m.insert(PAGE, 2 * PAGE, VmaFlags::NONE).unwrap();
    assert!(!m.is_empty());
    m.unmap(0, 4 * PAGE).unwrap();
    assert!(m.is_empty());
    let mut m = striped(1000);
    assert!(!m.is_empty());
    m.unmap(0, u64::MAX).unwrap();
    assert!(m.is_empty());
    let mut m = striped(10);
    m.clear();
    assert!(m.is_empty());
}

/// An iterator sought at or past the end of the last VMA yields nothing, and
/// one sought just below it yields exactly the last VMA, after every insert
/// of a map growing to 20,000 VMAs (so with every fill of the root and of the
/// nodes on the right edge, up to full nodes, at depths 1 to 4). `range`
/// seeks with one descent that stops at the first child whose highest end
/// lies above the address; no child must be looked at past the last.
#[test]
fn range_past_the_last_vma_is_empty_at_every_size() {
    let mut m = AddressMap::new();
    for i in 0..20_000u64 {
        m.insert(2 * i * PAGE, (2 * i + 1) * PAGE, VmaFlags::NONE)
            .unwrap();
        let last = m.last().unwrap();
        assert_eq!(last.end, (2 * i + 1) * PAGE);
        for addr in [last.end, last.end + PAGE, u64::MAX - 1] {
            assert_eq!(m.range(addr, u64::MAX).next(), None, "{i} {addr:#x}");
        }
        assert_eq!(
            m.range(last.end - 1, u64::MAX).collect::<Vec<Vma>>(),
            [last]
        );
    }
    assert_eq!(m.depth(), 4);
    // And from the middle on, every VMA once, in order.
    let tail: Vec<u64> = m.range(20_000 * PAGE, u64::MAX).map(|v| v.start).collect();
    let want: Vec<u64> = (10_000..20_000).map(|i| 2 * i * PAGE).collect();
    assert_eq!(tail, want);
}

/// The heap the map reports holds at least the stored bounds and flags
/// (17 bytes per VMA) and, arenas never giving memory back while VMAs are
/// added, never shrinks as the map grows.
#[test]
fn heap_bytes_cover_the_vmas_and_grow_with_them() {
    let mut m = AddressMap::new();
    let mut last = m.heap_bytes();
    assert!(last >= 17, "an empty map holds its root leaf: {last}");
    for i in 0..20_000u64 {
        m.insert(2 * i * PAGE, (2 * i + 1) * PAGE, VmaFlags::NONE)
            .unwrap();
        let now = m.heap_bytes();
        assert!(now >= last, "heap shrank from {last} to {now} at {i}");
        assert!(now >= 17 * m.len(), "{now} bytes for {} VMAs", m.len());
        last = now;
    }
}

/// Wide unmaps on deep trees, each checked against the expected VMAs and followed
/// by the invariant check (which asserts that every node but the root is at
/// least half full). Trees of three to four levels whose two boundary paths
/// are both cut: rebalancing two inner nodes then brings short
/// grandchildren next to new siblings, and merging those can leave either
/// of the two inner nodes short again.
#[test]
fn wide_unmaps_on_deep_trees_keep_every_node_half_full() {
    let mut rng = Rng(0x7ee5_0f5e_ed00);
    for case in 0..60u64 {
        let mut a = AddressMap::new();
        // One-page VMAs at page-aligned starts, so a page-aligned cut
        // removes whole VMAs and splits none: the expected map is the list
        // of starts outside the cut.
        let mut starts = Vec::new();
        let n = 2000 + rng.below(12_000);
        for i in 0..n {
            let s = (i * 4 + rng.below(3)) * PAGE;
            a.insert(s, s + PAGE, VmaFlags::NONE).unwrap();
            starts.push(s);
        }
        for step in 0..6 {
            // Cuts of every width: inside one leaf, across a few leaves,
            // across whole subtrees.
            let s = rng.below(n * 4) * PAGE;
            let w = match step % 3 {
                0 => rng.below(300),
                1 => rng.below(3000),
                _ => rng.below(n * 4),
            } * PAGE;
            let before = starts.len();
            starts.retain(|&x| x < s || x >= s + w);
            assert_eq!(
                a.unmap(s, s + w),
                Ok(before - starts.len()),
                "case {case} step {step}"
            );
            a.check_invariants();
        }
        let got: Vec<u64> = a.iter().map(|v| v.start).collect();
        assert_eq!(got, starts, "case {case}");
    }
}
