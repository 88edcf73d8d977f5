//! `svmap_svm::interval` against brute-force models over a small universe,
//! operation by operation: `IntervalMap` against a sorted list that splits
//! and clips by hand, `CoverMap` against a count per address, and
//! `union_of` against a bitmap. Written for the mutants of `interval.rs`
//! that the rest of the suite let through (`docs/testing.md` lists the
//! runs); every answer of the public API is compared, including the order
//! and the unclipped bounds of `range`, the clipped pieces `remove_range`
//! returns and the segments of the cover index.

use svmap_svm::interval::{union_map, union_of, CoverMap, IntervalMap};

/// Addresses `0..U`; small enough that every edge is hit often.
const U: u64 = 24;

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

    /// A range `[s, e)` inside the universe, empty or inverted now and then.
    fn range(&mut self) -> (u64, u64) {
        (self.below(U + 1), self.below(U + 1))
    }
}

/// The model: disjoint ranges sorted by start, with a value each.
#[derive(Default)]
struct Model(Vec<(u64, u64, u32)>);

impl Model {
    fn get(&self, a: u64) -> Option<(u64, u64, u32)> {
        self.0.iter().copied().find(|&(s, e, _)| s <= a && a < e)
    }

    fn overlapping(&self, s: u64, e: u64) -> Vec<(u64, u64, u32)> {
        if s >= e {
            return Vec::new();
        }
        self.0
            .iter()
            .copied()
            .filter(|&(rs, re, _)| rs < e && s < re)
            .collect()
    }

    fn insert(&mut self, s: u64, e: u64, v: u32) {
        self.0.push((s, e, v));
        self.0.sort_unstable();
    }

    /// Cuts `[s, e)` out; returns the clipped pieces in order.
    fn remove_range(&mut self, s: u64, e: u64) -> Vec<(u64, u64, u32)> {
        if s >= e {
            return Vec::new();
        }
        let mut kept = Vec::new();
        let mut cut = Vec::new();
        for &(rs, re, v) in &self.0 {
            if re <= s || e <= rs {
                kept.push((rs, re, v));
                continue;
            }
            if rs < s {
                kept.push((rs, s, v));
            }
            if e < re {
                kept.push((e, re, v));
            }
            cut.push((rs.max(s), re.min(e), v));
        }
        kept.sort_unstable();
        self.0 = kept;
        cut
    }
}

fn listed(m: &IntervalMap<u32>) -> Vec<(u64, u64, u32)> {
    m.iter().map(|(s, e, &v)| (s, e, v)).collect()
}

fn compare(m: &IntervalMap<u32>, model: &Model) {
    m.check_invariants();
    assert_eq!(listed(m), model.0);
    assert_eq!(m.len(), model.0.len());
    assert_eq!(m.is_empty(), model.0.is_empty());
    for a in 0..=U {
        assert_eq!(
            m.get(a).map(|(s, e, &v)| (s, e, v)),
            model.get(a),
            "get({a})"
        );
    }
    // Non-empty queries only: for an empty or inverted query that starts
    // inside an entry, `range` and `first_overlap` report that entry.
    for s in 0..U {
        for e in s + 1..=U {
            let want = model.overlapping(s, e);
            let got: Vec<_> = m.range(s, e).map(|(s, e, &v)| (s, e, v)).collect();
            assert_eq!(got, want, "range({s}, {e})");
            let first = m.first_overlap(s, e).map(|(s, e, &v)| (s, e, v));
            assert_eq!(first, want.first().copied(), "first_overlap({s}, {e})");
        }
    }
}

#[test]
fn interval_map_matches_a_list_that_splits_by_hand() {
    let mut rng = Rng(0x5eed);
    for round in 0..40 {
        let mut m = IntervalMap::new();
        let mut model = Model::default();
        for step in 0..30u32 {
            let (s, e) = rng.range();
            let v = round * 100 + step;
            match rng.below(3) {
                0 => {
                    if s < e && model.overlapping(s, e).is_empty() {
                        m.insert(s, e, v);
                        model.insert(s, e, v);
                    }
                }
                1 => {
                    let got = m.remove_range(s, e);
                    assert_eq!(got, model.remove_range(s, e), "remove_range({s}, {e})");
                }
                _ => {
                    if s < e {
                        m.set(s, e, v);
                        model.remove_range(s, e);
                        model.insert(s, e, v);
                    }
                }
            }
            compare(&m, &model);
        }
    }
}

#[test]
fn interval_map_edges_by_hand() {
    let mut m = IntervalMap::new();
    m.insert(4, 8, 'a');
    m.insert(8, 10, 'b');
    m.insert(12, 13, 'c');
    // A range that ends where the next begins does not overlap it.
    assert_eq!(m.first_overlap(10, 12), None);
    assert_eq!(m.first_overlap(0, 4), None);
    assert_eq!(m.first_overlap(7, 8).map(|r| r.0), Some(4));
    assert_eq!(m.first_overlap(8, 9).map(|r| r.0), Some(8));
    assert_eq!(m.get(8).map(|r| *r.2), Some('b'));
    assert_eq!(m.get(10), None);
    let r: Vec<_> = m.range(7, 12).map(|(s, e, _)| (s, e)).collect();
    assert_eq!(r, [(4, 8), (8, 10)]);
    let r: Vec<_> = m.range(10, 13).map(|(s, e, _)| (s, e)).collect();
    assert_eq!(r, [(12, 13)]);
    // Removal at exact edges splits nothing; inside an entry splits it.
    assert_eq!(m.remove_range(8, 10), [(8, 10, 'b')]);
    assert_eq!(m.remove_range(5, 6), [(5, 6, 'a')]);
    let all: Vec<_> = m.iter().map(|(s, e, &v)| (s, e, v)).collect();
    assert_eq!(all, [(4, 5, 'a'), (6, 8, 'a'), (12, 13, 'c')]);
    assert_eq!(m.remove_range(6, 6), []);
    assert_eq!(m.remove_range(9, 3), []);
    m.set(0, 20, 'z');
    assert_eq!(m.len(), 1);
    assert_eq!(m.get(19).map(|r| (r.0, r.1)), Some((0, 20)));
}

/// Merged runs of addresses whose count is above zero.
fn runs(count: &[u32]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, &c) in count.iter().enumerate() {
        let a = a as u64;
        if c == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = a + 1,
            _ => out.push((a, a + 1)),
        }
    }
    out
}

#[test]
fn cover_map_matches_a_count_per_address() {
    let mut rng = Rng(0xc0ffee);
    for _ in 0..60 {
        let mut c = CoverMap::new();
        let mut count = [0u32; U as usize];
        let mut live: Vec<(u64, u64)> = Vec::new();
        for _ in 0..30 {
            if live.is_empty() || rng.below(3) > 0 {
                let (s, e) = rng.range();
                c.add(s, e);
                if s < e {
                    live.push((s, e));
                    count[s as usize..e as usize]
                        .iter_mut()
                        .for_each(|x| *x += 1);
                }
            } else {
                let (s, e) = live.swap_remove(rng.below(live.len() as u64) as usize);
                c.remove(s, e);
                count[s as usize..e as usize]
                    .iter_mut()
                    .for_each(|x| *x -= 1);
            }
            c.check_invariants();
            let want = runs(&count);
            assert_eq!(c.union(), want);
            // The index holds exactly the covered addresses, one VMA per
            // segment, and its segments never straddle a change of count.
            let idx = c.index();
            assert_eq!(idx.len(), c.segments());
            for a in 0..U {
                assert_eq!(
                    idx.vma_at(a).is_some(),
                    count[a as usize] > 0,
                    "address {a}"
                );
            }
            for v in idx.iter() {
                let k = count[v.start as usize];
                assert!(
                    (v.start..v.end).all(|a| count[a as usize] == k),
                    "segment [{}, {}) mixes counts",
                    v.start,
                    v.end
                );
            }
        }
    }
}

#[test]
fn cover_map_counts_by_hand() {
    let mut c = CoverMap::new();
    c.add(2, 6);
    c.add(4, 8);
    c.add(5, 5);
    c.add(9, 7);
    assert_eq!(c.union(), [(2, 8)]);
    // Three segments: [2,4) once, [4,6) twice, [6,8) once.
    assert_eq!(c.segments(), 3);
    c.remove(2, 6);
    assert_eq!(c.union(), [(4, 8)]);
    assert_eq!(c.index().first().map(|v| (v.start, v.end)), Some((4, 6)));
    c.remove(6, 6);
    c.remove(4, 8);
    assert_eq!(c.union(), []);
    assert_eq!(c.segments(), 0);
    assert!(c.index().is_empty());
    c.check_invariants();
}

#[test]
fn union_of_matches_a_bitmap() {
    let mut rng = Rng(0xfeed);
    for _ in 0..500 {
        let n = rng.below(6) as usize;
        let v: Vec<(u64, u64)> = (0..n).map(|_| rng.range()).collect();
        let mut covered = [0u32; U as usize];
        for &(s, e) in &v {
            for a in s..e {
                covered[a as usize] = 1;
            }
        }
        // Touching ranges merge as well as overlapping ones, so the union
        // is the runs of the bitmap.
        let want = runs(&covered);
        assert_eq!(union_of(v.clone()), want, "{v:?}");
        let m = union_map(v.clone());
        m.check_invariants();
        let got: Vec<_> = m.iter().map(|x| (x.start, x.end)).collect();
        assert_eq!(got, want, "{v:?}");
    }
}
