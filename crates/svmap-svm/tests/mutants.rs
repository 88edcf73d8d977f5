//! `svmap_svm::interval` and the mirror's page table against brute-force
//! models over a small universe, operation by operation: `IntervalMap`
//! against a sorted list that splits and clips by hand, `CoverMap` against a
//! count per address, `union_of` against a bitmap, `PageTable::clear`
//! against a map of pages (with the tables it must keep derived from the
//! pages), the counters of the TLB and of the mirror, the notifier protocol's
//! retry, the TLB's eviction order, the device limit, and
//! the candidate searches of `svm_alloc`. Written for the mutants of `interval.rs`,
//! `mirror.rs` and `space.rs` that the rest of the suite let through
//! (`docs/testing.md` lists the runs); every answer of the public API is
//! compared, including the order and the unclipped bounds of `range`, the
//! clipped pieces `remove_range` returns and the segments of the cover index.

use std::collections::BTreeMap;

use svmap_core::linux::MmConfig;
use svmap_svm::interval::{union_map, union_of, CoverMap, IntervalMap};
use svmap_svm::mirror::{MirrorStats, PageTable, Perm, Snapshot, Tlb};
use svmap_svm::{DefaultFormat, DeviceConfig, Geometry, Mirror, PtFormat, StdSync, SvmSpace};

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
    // Every query, empty and inverted ones included: those intersect
    // nothing, even when `s` lies inside an entry.
    for s in 0..=U {
        for e in 0..=U {
            let want = if s < e {
                model.overlapping(s, e)
            } else {
                Vec::new()
            };
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

/// The number of tables a page table needs for `pages`: the root, and at
/// each lower level one table per distinct prefix of the index bits above it.
fn tables_for(geo: &Geometry, pages: &BTreeMap<u64, u64>) -> usize {
    let levels = geo.level_bits.len();
    let mut tables = 1;
    for k in 1..levels {
        let below: u32 = geo.level_bits[k..].iter().sum();
        let mut prefixes: Vec<u64> = pages.keys().map(|&v| v >> below).collect();
        prefixes.dedup();
        tables += prefixes.len();
    }
    tables
}

/// `clear(lo, hi)` removes exactly the present pages of `[lo, hi]`, in
/// tables at every base (not only the first of each level), and frees
/// exactly the tables left empty.
#[test]
fn page_table_clear_matches_a_map_of_pages() {
    // 12 index bits in four levels of 3 bits: 4096 pages, tables of 8.
    let geo = Geometry::new(24, 12, 3);
    assert_eq!(geo.level_bits, [3, 3, 3, 3]);
    let mut rng = Rng(0x9a6e);
    for _ in 0..200 {
        let mut pt: PageTable<DefaultFormat> = PageTable::new(geo.clone());
        let mut pages = BTreeMap::new();
        for _ in 0..rng.below(300) {
            let v = rng.below(4096);
            let pte = DefaultFormat::leaf(v + 1, true, v.is_multiple_of(2));
            pt.set(v, pte);
            pages.insert(v, pte);
        }
        for _ in 0..8 {
            // Narrow ranges inside one table and wide ones across many.
            let lo = rng.below(4096);
            let width = if rng.below(2) == 0 { 12 } else { 1500 };
            let hi = lo + rng.below(width);
            let want: Vec<u64> = pages.range(lo..=hi).map(|(&v, _)| v).collect();
            for v in &want {
                pages.remove(v);
            }
            assert_eq!(pt.clear(lo, hi), want.len(), "clear({lo}, {hi})");
            let got: BTreeMap<u64, u64> = pt.entries().into_iter().collect();
            assert_eq!(got, pages, "clear({lo}, {hi})");
            assert_eq!(pt.valid_entries(), pages.len());
            assert_eq!(pt.tables(), tables_for(&geo, &pages), "clear({lo}, {hi})");
        }
    }
}

#[test]
fn leaf_ptes_keep_frame_and_permissions_apart() {
    for frame in [0u64, 1, 0x7, 0xfff, 1 << 40] {
        for (read, write) in [(false, false), (true, false), (false, true), (true, true)] {
            let pte = DefaultFormat::leaf(frame, read, write);
            assert_eq!(
                pte,
                (frame << 12) | 1 | (u64::from(read) << 1) | (u64::from(write) << 2)
            );
            assert!(DefaultFormat::is_valid(pte));
            assert_eq!(DefaultFormat::can_read(pte), read);
            assert_eq!(DefaultFormat::can_write(pte), write);
            assert_eq!(DefaultFormat::frame(pte), frame);
        }
    }
}

#[test]
fn tlb_counts_hits_misses_and_shoot_downs() {
    let mut t = Tlb::new(4);
    assert_eq!(t.lookup(1), None);
    t.fill(1, 10);
    t.fill(2, 20);
    for _ in 0..3 {
        assert_eq!(t.lookup(1), Some(10));
    }
    assert_eq!(t.lookup(2), Some(20));
    assert_eq!(t.lookup(3), None);
    assert_eq!((t.hits, t.misses), (4, 2));
    t.shoot_down(0, 5);
    assert_eq!(t.shot_down, 2);
    assert_eq!(t.lookup(1), None);
    assert_eq!((t.hits, t.misses), (4, 3));
}

/// The mirror's counters after a sequence whose every step is known: a
/// fault that installs a PTE, a TLB hit, a second fault evicting the first
/// page from a one-entry TLB, a page-table walk, a fault that installs
/// nothing (no uniform page), and a fault retried once because an
/// invalidation moved the sequence while the handler looked at the CPU side.
#[test]
fn mirror_counts_walks_faults_retries_and_installs() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(20, 0x1000, 1);
    let perm = |frame| Perm {
        frame,
        read: true,
        write: true,
    };
    let page = |frame| {
        move |_a: u64| Snapshot {
            byte: Some(perm(frame)),
            page: Some(perm(frame)),
        }
    };
    assert_eq!(m.access(0x3010, true, &mut page(5)), Ok(5));
    assert_eq!(m.access(0x3020, true, &mut page(99)), Ok(5), "a TLB hit");
    assert_eq!(m.access(0x5010, false, &mut page(6)), Ok(6));
    assert_eq!(m.access(0x3000, false, &mut page(99)), Ok(5), "a walk");
    let mut byte_only = |_a: u64| Snapshot {
        byte: Some(perm(7)),
        page: None,
    };
    assert_eq!(m.access(0x7000, false, &mut byte_only), Ok(7));
    let mut first = true;
    let mut moving = |_a: u64| {
        if first {
            first = false;
            m.invalidate(0x20000, 0x21000);
        }
        Snapshot {
            byte: Some(perm(9)),
            page: Some(perm(9)),
        }
    };
    assert_eq!(m.access(0x9000, false, &mut moving), Ok(9));
    assert_eq!(
        m.stats(),
        MirrorStats {
            walks: 1,
            faults: 4,
            retries: 1,
            invalidations: 1,
            installs: 3,
        }
    );
    // One hit (the second access); every other access missed.
    assert_eq!(m.tlb_counts(), (1, 5));
}

/// An SVM range for a subset of the devices is searched on the CPU's map
/// and each candidate checked against the devices' own regions: a region
/// the CPU no longer reserves (unmapped there) turns the first candidate
/// down, and the second search starts above it. The statistics count the
/// candidate searches: two for that `svm_alloc`, one for the next.
#[test]
fn a_subset_alloc_counts_its_candidate_searches() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    sp.add_device(DeviceConfig::new("a", 40)).unwrap();
    sp.add_device(DeviceConfig::new("b", 40)).unwrap();
    let low = MmConfig::default().mmap_min_addr;
    sp.device_map("a", low, low + 0x10000, Default::default())
        .unwrap();
    sp.cpu_unmap(low, 0x10000).unwrap();
    let a = sp.svm_alloc(0x1000, None, &["a"], false).unwrap();
    assert_eq!(a, low + 0x10000, "above the region of a");
    let st = sp.stats();
    assert_eq!((st.subset_searches, st.last_iterations), (1, 2));
    assert_eq!(st.subset_iterations, 2);
    let b = sp.svm_alloc(0x1000, None, &["b"], false).unwrap();
    assert_eq!(b, low, "b has no region there");
    let st = sp.stats();
    assert_eq!((st.subset_searches, st.last_iterations), (2, 1));
    assert_eq!(st.subset_iterations, 3);
    // Every device: one search of the combined index.
    sp.svm_alloc(0x1000, None, &["a", "b"], false).unwrap();
    let st = sp.stats();
    assert_eq!((st.combined_searches, st.subset_searches), (1, 2));
}

/// A device that populates at allocation has the range's pages in its page
/// table right after `svm_alloc`; one that populates on fault has none.
#[test]
fn only_a_populate_at_alloc_device_is_filled_by_svm_alloc() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    let mut at_alloc = DeviceConfig::new("p", 40);
    at_alloc.populate = svmap_svm::Populate::AtAlloc;
    sp.add_device(at_alloc).unwrap();
    sp.add_device(DeviceConfig::new("f", 40)).unwrap();
    sp.svm_alloc(0x4000, None, &["p", "f"], false).unwrap();
    assert_eq!(sp.device("p").unwrap().mmu().table_counts().1, 4);
    assert_eq!(sp.device("f").unwrap().mmu().table_counts().1, 0);
}

/// The common window of a 17-bit device is `[mmap_min_addr, 2^17)`: a range
/// of exactly its size fits (at its bottom); one page more is
/// `NoCommonWindow`, told before any search.
#[test]
fn an_alloc_of_exactly_the_common_window_fits() {
    let low = MmConfig::default().mmap_min_addr;
    let high = 1u64 << 17;
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    sp.add_device(DeviceConfig::new("d", 17)).unwrap();
    let len = high - low;
    assert_eq!(
        sp.svm_alloc(len + 0x1000, None, &["d"], false),
        Err(svmap_svm::SvmError::NoCommonWindow {
            low,
            high,
            length: len + 0x1000
        })
    );
    assert_eq!(sp.svm_alloc(len, None, &["d"], true), Ok(low));
}

/// A VMA that ends exactly at a device's limit `2^va_bits` is addressable by
/// it (its last byte is `2^va_bits - 1`) and is not reported; one byte
/// more and it is.
#[test]
fn a_vma_ending_at_the_device_limit_is_not_above_it() {
    const G40: u64 = 1 << 40;
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    sp.add_device(DeviceConfig::new("g", 40)).unwrap();
    sp.cpu_map(G40 - 0x2000, G40, false).unwrap();
    assert_eq!(sp.vmas_above_limit("g").unwrap(), []);
    assert_eq!(sp.check_addressable("g", G40 - 0x2000, G40), Ok(()));
    sp.cpu_map(G40, G40 + 0x1000, false).unwrap();
    let above: Vec<(u64, u64)> = sp
        .vmas_above_limit("g")
        .unwrap()
        .iter()
        .map(|v| (v.start, v.end))
        .collect();
    assert_eq!(above, [(G40, G40 + 0x1000)]);
}

#[test]
fn cover_map_allocate_takes_the_lowest_or_highest_free_run() {
    use svmap_core::{FitRequest, SearchParams};
    let mut rng = Rng(0xa110c);
    for _ in 0..60 {
        let mut c = CoverMap::new();
        let mut count = [0u32; U as usize];
        let mut live: Vec<(u64, u64)> = Vec::new();
        for _ in 0..40 {
            match rng.below(4) {
                0 | 1 => {
                    let len = 1 + rng.below(5);
                    let topdown = rng.below(2) == 0;
                    let free = |a: u64| (a..a + len).all(|x| count[x as usize] == 0);
                    let mut fits = (0..=U - len).filter(|&a| free(a));
                    let want = if topdown {
                        fits.next_back()
                    } else {
                        fits.next()
                    };
                    let req = FitRequest {
                        length: len,
                        low: 0,
                        high: U,
                        align: 1,
                        align_offset: 0,
                        topdown,
                        respect_guard_gaps: false,
                    };
                    let got = c.allocate(&req, &SearchParams::default()).ok();
                    assert_eq!(got, want, "allocate({len}, topdown {topdown})");
                    if let Some(a) = got {
                        live.push((a, a + len));
                        count[a as usize..(a + len) as usize]
                            .iter_mut()
                            .for_each(|x| *x += 1);
                    }
                }
                2 => {
                    let (s, e) = rng.range();
                    c.add(s, e);
                    if s < e {
                        live.push((s, e));
                        count[s as usize..e as usize]
                            .iter_mut()
                            .for_each(|x| *x += 1);
                    }
                }
                _ => {
                    if let Some(i) = (!live.is_empty()).then(|| rng.below(live.len() as u64)) {
                        let (s, e) = live.swap_remove(i as usize);
                        c.remove(s, e);
                        count[s as usize..e as usize]
                            .iter_mut()
                            .for_each(|x| *x -= 1);
                    }
                }
            }
            c.check_invariants();
            assert_eq!(c.union(), runs(&count));
        }
    }
}

/// The index bits per level of the default format: a table is one page of
/// 8-byte entries, so `page_shift - 3` bits (9, 13 and 18 for 4 KiB, 64 KiB
/// and 2 MiB pages), and the geometry a mirror builds from it.
#[test]
fn default_format_tables_are_one_page_of_8_byte_entries() {
    assert_eq!(DefaultFormat::bits_per_level(12), 9);
    assert_eq!(DefaultFormat::bits_per_level(16), 13);
    assert_eq!(DefaultFormat::bits_per_level(21), 18);
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(48, 0x1000, 4);
    assert_eq!(m.geometry().level_bits, [9, 9, 9, 9]);
}

/// Setting an invalid entry clears the page (and frees the tables it
/// empties) rather than storing it.
#[test]
fn setting_an_invalid_pte_clears_the_page() {
    let mut pt: PageTable<DefaultFormat> = PageTable::new(Geometry::new(24, 12, 3));
    pt.set(9, DefaultFormat::leaf(4, true, false));
    pt.set(10, DefaultFormat::leaf(5, true, true));
    assert_eq!((pt.valid_entries(), pt.tables()), (2, 4));
    pt.set(9, 0);
    assert_eq!(pt.get(9), 0);
    assert_eq!(pt.entries(), [(10, DefaultFormat::leaf(5, true, true))]);
    pt.set(10, 0);
    assert_eq!((pt.valid_entries(), pt.tables()), (0, 1));
    assert!(pt.entries().is_empty());
}

/// A device whose page table has a single level (20 bits, 4 KiB pages: 8
/// index bits in the root) still loses its PTEs and TLB entries to an
/// invalidation, and only those of the pages the range touches.
#[test]
fn an_invalidation_clears_exactly_its_pages_in_a_one_level_table() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(20, 0x1000, 8);
    assert_eq!(m.geometry().levels(), 1);
    let perm = Perm {
        frame: 3,
        read: true,
        write: true,
    };
    for page in 2..6u64 {
        m.prefault(page << 12, (page + 1) << 12, perm, 1);
    }
    assert_eq!(m.table_counts(), (1, 4));
    // A page-aligned range of pages 3 and 4 only.
    m.invalidate(0x3000, 0x5000);
    let left: Vec<u64> = m.mappings().iter().map(|e| e.0).collect();
    assert_eq!(left, [2, 5]);
    assert_eq!(m.table_counts(), (1, 2));
    // A range of one byte clears its page.
    m.invalidate_start(0x5fff, 0x6000);
    m.invalidate_end();
    let left: Vec<u64> = m.mappings().iter().map(|e| e.0).collect();
    assert_eq!(left, [2]);
    assert_eq!(m.stats().invalidations, 2);
}

/// A fault whose snapshot is overtaken by an invalidation (start and end
/// both run while the handler looks at the CPU side) is retried and answers
/// with the mapping after the invalidation, never installing the stale one.
#[test]
fn a_fault_overtaken_by_an_invalidation_installs_the_new_mapping() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(32, 0x1000, 4);
    assert_eq!(m.read_begin(), 0);
    let perm = |frame| Perm {
        frame,
        read: true,
        write: true,
    };
    let mut calls = 0;
    let mut moving = |_a: u64| {
        calls += 1;
        let frame = if calls == 1 {
            // The CPU remaps the page while the handler reads the old one.
            m.invalidate_start(0x7000, 0x8000);
            m.invalidate_end();
            1
        } else {
            2
        };
        Snapshot {
            byte: Some(perm(frame)),
            page: Some(perm(frame)),
        }
    };
    assert_eq!(m.access(0x7123, true, &mut moving), Ok(2));
    assert_eq!(calls, 2);
    assert_eq!(
        m.mappings(),
        [(7, 2, true, true, false), (7, 2, true, true, true)]
    );
    assert_eq!(m.read_begin(), 2);
    assert_eq!(m.stats().retries, 1);
}

/// The rights of a PTE and of a snapshot are honoured: a write through a
/// read-only PTE faults (and the handler answers with a protection fault),
/// a read of a byte that cannot be read faults, a read-only PTE still
/// serves reads.
#[test]
fn read_only_and_unreadable_pages_fault() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(32, 0x1000, 4);
    let ro = Perm {
        frame: 4,
        read: true,
        write: false,
    };
    let mut ro_snap = |_a: u64| Snapshot {
        byte: Some(ro),
        page: Some(ro),
    };
    assert_eq!(m.access(0x4000, false, &mut ro_snap), Ok(4));
    assert_eq!(m.access(0x4008, false, &mut ro_snap), Ok(4), "a TLB hit");
    assert_eq!(
        m.access(0x4010, true, &mut ro_snap),
        Err(svmap_svm::Fault::Protection)
    );
    assert_eq!(m.stats().faults, 2);
    let none = Perm {
        frame: 6,
        read: false,
        write: false,
    };
    let mut none_snap = |_a: u64| Snapshot {
        byte: Some(none),
        page: Some(none),
    };
    assert_eq!(
        m.access(0x6000, false, &mut none_snap),
        Err(svmap_svm::Fault::Protection)
    );
    assert_eq!(m.table_counts().1, 1, "no PTE for an unreadable page");
}

/// The TLB evicts the entry filled longest ago: a page shot down and filled
/// again counts from its new fill, not from its first.
#[test]
fn tlb_eviction_follows_the_latest_fill() {
    let mut t = Tlb::new(2);
    t.fill(1, 10);
    t.fill(2, 20);
    t.shoot_down(1, 1);
    t.fill(1, 11);
    t.fill(3, 30); // evicts 2, filled before the second fill of 1
    let cached: Vec<(u64, u64)> = t.entries().collect();
    assert_eq!(cached, [(1, 11), (3, 30)]);
    assert_eq!((t.len(), t.capacity(), t.is_empty()), (2, 2, false));
}

/// A prefault that runs past the device's limit installs only the pages
/// below it: the page above would index (and overwrite) page 0 of a
/// one-level table. Also the page size and the TLB's fill as the mirror
/// reports them.
#[test]
fn a_prefault_past_the_device_limit_stops_at_its_last_page() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(20, 0x1000, 2);
    assert_eq!(m.page_size(), 0x1000);
    let perm = Perm {
        frame: 3,
        read: true,
        write: true,
    };
    m.prefault(0xf_f000, 0x10_2000, perm, 4);
    assert_eq!(m.stats().installs, 1);
    assert_eq!(m.mappings(), [(0xff, 3, true, true, false)]);
    assert_eq!(m.tlb_len(), 0);
    let mut snap = |_a: u64| Snapshot {
        byte: Some(perm),
        page: Some(perm),
    };
    assert_eq!(m.access(0xf_f010, true, &mut snap), Ok(3), "a walk");
    assert_eq!(m.tlb_len(), 1);
    assert_eq!(
        m.access(0, false, &mut |_a: u64| Snapshot {
            byte: None,
            page: None
        }),
        Err(svmap_svm::Fault::Unmapped)
    );
    let big: Mirror<DefaultFormat, StdSync> = Mirror::new(40, 0x20_0000, 4);
    assert_eq!(big.page_size(), 0x20_0000);
}
