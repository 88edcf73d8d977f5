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

/// An empty map has no first and no last VMA: new, emptied by unmaps from
/// one and from several levels, and cleared.
#[test]
fn an_empty_map_has_no_first_or_last_vma() {
    let mut maps = vec![AddressMap::new()];
    for n in [1, 40, 2000] {
        let mut m = striped(n);
        assert_eq!(m.first().map(|v| v.start), Some(0));
        assert_eq!(m.last().map(|v| v.start), Some(2 * (n - 1) * PAGE));
        m.unmap(0, u64::MAX).unwrap();
        maps.push(m);
        let mut m = striped(n);
        m.clear();
        maps.push(m);
    }
    for m in &maps {
        assert_eq!(m.first(), None);
        assert_eq!(m.last(), None);
        assert_eq!(m.iter().next(), None);
    }
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

/// A copy of a map allocates its arenas to fit (a cloned `Vec` holds
/// exactly its elements), so its heap is exactly its nodes. The empty map
/// is one leaf; the map that has just grown a second level is two leaves
/// under one inner node, which holds at least a child id and two bounds
/// for each of its two children (40 bytes): more than two leaves' bytes.
#[test]
fn heap_bytes_count_the_inner_nodes() {
    let leaf = AddressMap::new().clone().heap_bytes();
    assert!(leaf >= 17, "one leaf: {leaf}");
    let mut m = AddressMap::new();
    let mut i = 0;
    while m.depth() == 1 {
        assert_eq!(m.clone().heap_bytes(), leaf, "{i} VMAs in the root leaf");
        m.insert(2 * i * PAGE, (2 * i + 1) * PAGE, VmaFlags::NONE)
            .unwrap();
        i += 1;
    }
    assert_eq!(m.depth(), 2);
    let copy = m.clone().heap_bytes();
    assert!(
        copy >= 2 * leaf + 40,
        "two leaves of {leaf} bytes and an inner node in {copy} bytes"
    );
}

/// Nodes that an unmap frees are kept for reuse, and the list that keeps
/// them is heap too: a wide unmap that frees leaves but no inner node (a
/// map of two levels that keeps both) makes `heap_bytes` grow.
#[test]
fn heap_bytes_count_the_freed_leaves() {
    let mut m = striped(300);
    assert_eq!(m.depth(), 2, "one inner node over the leaves");
    let before = m.heap_bytes();
    assert_eq!(m.unmap(100 * PAGE, 500 * PAGE), Ok(200));
    assert_eq!(m.depth(), 2, "the root inner node stays");
    let freed = m.heap_bytes();
    assert!(
        freed > before,
        "200 VMAs freed, the heap stayed at {before}"
    );
    m.check_invariants();
}

/// The freed nodes wait on lists of 4-byte node ids. Removing VMAs one at a
/// time from a two-level map frees a leaf now and then (when two short
/// leaves merge) and never shrinks an arena; so on a copy, whose lists fit
/// exactly, the heap moves only by 4 bytes per freed node.
#[test]
fn heap_bytes_count_four_bytes_per_freed_node() {
    let mut m = striped(300);
    assert_eq!(m.depth(), 2);
    let mut last = m.clone().heap_bytes();
    let mut freed = 0;
    for i in 0..290 {
        let s = 2 * i * PAGE;
        assert_eq!(m.unmap(s, s + PAGE), Ok(1));
        let now = m.clone().heap_bytes();
        assert!(now >= last, "{i}: {last} -> {now}");
        assert_eq!((now - last) % 4, 0, "{i}: {last} -> {now}");
        freed += (now - last) / 4;
        last = now;
    }
    m.check_invariants();
    assert!(freed >= 4, "only {freed} nodes freed");
}

/// Unmapping exactly one VMA (an allocator's free) takes a one-descent
/// path unless the VMA's leaf would fall below half full; then the general
/// removal merges or evens out leaves. Here the lowest VMA, at address 0,
/// is freed after 0 to 40 of its right neighbours, so that its leaf holds
/// every count from full down to half full (and the general path is taken
/// for it); then every other VMA is freed in a scrambled order. After each
/// step the map is the expected list and every node is at least half full.
#[test]
fn exact_unmaps_keep_every_leaf_half_full() {
    for n in [40u64, 100, 700, 3000] {
        for k in 0..=40u64.min(n - 1) {
            let mut m = striped(n);
            let mut starts: Vec<u64> = (0..n).map(|i| 2 * i * PAGE).collect();
            for i in 1..=k {
                let s = 2 * i * PAGE;
                assert_eq!(m.unmap(s, s + PAGE), Ok(1), "n {n} k {k} i {i}");
                starts.retain(|&x| x != s);
            }
            m.check_invariants();
            assert_eq!(m.unmap(0, PAGE), Ok(1), "n {n} k {k}: the VMA at 0");
            starts.retain(|&x| x != 0);
            m.check_invariants();
            let got: Vec<u64> = m.iter().map(|v| v.start).collect();
            assert_eq!(got, starts, "n {n} k {k}");
        }
        // Every VMA, one at a time, in an order that scatters the removals
        // over all leaves (a step coprime to n).
        let mut m = striped(n);
        let step = (0..).map(|d| n / 3 + d).find(|&x| gcd(x, n) == 1).unwrap();
        for j in 0..n {
            let s = 2 * (j * step % n) * PAGE;
            assert_eq!(m.unmap(s, s + PAGE), Ok(1), "n {n} j {j}");
            if j % 7 == 0 {
                m.check_invariants();
            }
            assert_eq!(m.len() as u64, n - 1 - j);
        }
        m.check_invariants();
        assert!(m.is_empty());
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Every lookup of a deep tree against the sorted list it holds: for each
/// VMA's start, end and their neighbours, `find_vma`, `vma_at`, `prev_vma`,
/// `next_vma`, `first_overlap`, `range`, `first` and `last`, on maps of one to four
/// levels with VMAs of random lengths and gaps (some gaps empty).
#[test]
fn lookups_of_deep_trees_match_the_list() {
    let mut rng = Rng(0x100c_0b5e_7700);
    for n in [20_000u64, 5000, 600, 33, 30, 1] {
        let mut m = AddressMap::new();
        let mut v: Vec<(u64, u64)> = Vec::new();
        let mut at = rng.below(3) * PAGE;
        for _ in 0..n {
            let len = (1 + rng.below(4)) * PAGE;
            v.push((at, at + len));
            at += len + rng.below(3) * PAGE;
        }
        // Insert in a scrambled order, so that leaves split everywhere.
        let step = (0..)
            .map(|d| n / 2 + 1 + d)
            .find(|&x| gcd(x, n) == 1)
            .unwrap();
        for j in 0..n {
            let (s, e) = v[(j * step % n) as usize];
            m.insert(s, e, VmaFlags::NONE).unwrap();
        }
        assert_eq!(m.len() as u64, n);
        let vma = |i: usize| v.get(i).map(|&(s, e)| (s, e));
        let got = |x: Option<Vma>| x.map(|x| (x.start, x.end));
        assert_eq!(got(m.first()), vma(0));
        assert_eq!(got(m.last()), vma(v.len() - 1));
        let mut addrs = vec![0, 1, u64::MAX];
        for &(s, e) in &v {
            addrs.extend([s.saturating_sub(1), s, s + 1, e - 1, e, e + 1]);
        }
        for a in addrs {
            // Index of the first VMA ending above `a`, and of the first
            // starting at or above it.
            let fe = v.partition_point(|&(_, e)| e <= a);
            let fs = v.partition_point(|&(s, _)| s < a);
            assert_eq!(got(m.find_vma(a)), vma(fe), "n {n} find_vma({a:#x})");
            let at = vma(fe).filter(|&(s, _)| s <= a);
            assert_eq!(got(m.vma_at(a)), at, "n {n} vma_at({a:#x})");
            let prev = fs.checked_sub(1).and_then(vma);
            assert_eq!(got(m.prev_vma(a)), prev, "n {n} prev_vma({a:#x})");
            assert_eq!(got(m.next_vma(a)), vma(fs), "n {n} next_vma({a:#x})");
            let b = a.saturating_add(PAGE);
            let over = vma(fe).filter(|&(s, _)| s < b);
            assert_eq!(got(m.first_overlap(a, b)), over, "n {n} overlap({a:#x})");
            // `range` yields exactly the VMAs that intersect [a, b): none
            // that starts at b, none that ends at a.
            for b in [a, a.saturating_add(1), b, a.saturating_add(5 * PAGE)] {
                let want: Vec<(u64, u64)> = v[fe..]
                    .iter()
                    .take_while(|&&(s, _)| s < b)
                    .copied()
                    .collect();
                let want = if a < b { want } else { Vec::new() };
                let r: Vec<(u64, u64)> = m.range(a, b).map(|x| (x.start, x.end)).collect();
                assert_eq!(r, want, "n {n} range({a:#x}, {b:#x})");
            }
        }
    }
}

/// Each term of the reported heap moves the way memory does. The arenas and
/// free lists never give memory back, so no operation (insert or unmap,
/// narrow or wide) makes `heap_bytes` fall; an insert pushes nothing on a
/// free list, so when it makes the heap grow, a node arena grew, by at
/// least one node, and any node holds at least two VMAs' starts and ends
/// (32 bytes). The sequence grows a map in random order to depth 3, cuts
/// holes of every width into it (freeing leaves and inner nodes, merging
/// inner nodes, collapsing the root) and refills it.
#[test]
fn heap_bytes_never_fall_and_grow_by_whole_nodes() {
    let mut rng = Rng(0x4ea9_b17e_5000);
    let mut m = AddressMap::new();
    let mut last = m.heap_bytes();
    let mut grew_on_insert = 0;
    for round in 0..8u64 {
        // Fill: one-page VMAs at random page slots of a 40,000-page range.
        for _ in 0..6000 {
            let s = rng.below(40_000) * PAGE;
            if m.insert(s, s + PAGE, VmaFlags::NONE).is_err() {
                continue;
            }
            let now = m.heap_bytes();
            assert!(
                now >= last,
                "round {round}: insert: heap fell from {last} to {now}"
            );
            if now > last {
                assert!(
                    now - last >= 32,
                    "round {round}: an insert grew the heap by {} bytes, less than a node",
                    now - last
                );
                grew_on_insert += 1;
            }
            last = now;
        }
        // Cut: holes of every width, down to an empty map in the last round.
        for step in 0..12u64 {
            let s = rng.below(40_000) * PAGE;
            let w = match step % 4 {
                0 => rng.below(40),
                1 => rng.below(400),
                2 => rng.below(4000),
                _ => rng.below(40_000),
            } * PAGE;
            let (s, e) = if round == 7 && step == 11 {
                (0, u64::MAX)
            } else {
                (s, s + w)
            };
            m.unmap(s, e).unwrap();
            let now = m.heap_bytes();
            assert!(
                now >= last,
                "round {round} step {step}: unmap: heap fell from {last} to {now}"
            );
            last = now;
        }
        m.check_invariants();
    }
    assert!(m.is_empty());
    assert!(
        grew_on_insert >= 10,
        "the arenas grew only {grew_on_insert} times"
    );
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
