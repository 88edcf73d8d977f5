//! Cost of one gap search at 1,000 and 1,000,000 VMAs (release mode, fixed
//! seed). Run with `cargo bench -p svmap-core --bench search`.
//!
//! The address space is filled with VMAs of 1..=16 pages separated by holes
//! of 1..=16 pages; every 64th VMA is grows-down (a stack), so the kernel's
//! guard-gap retries happen. Each search asks for a random length of 1..=24
//! pages in a random window, bottom-up or top-down, with page or 64 KiB
//! alignment. It reports ns per search, descents per search (1 + retries)
//! and the ratio between the sizes: a logarithmic structure should stay
//! within a small factor (cache misses grow with the tree), a linear one
//! would be ~1000x.

use std::hint::black_box;
use std::time::Instant;

use svmap_core::{AddressMap, FitRequest, SearchParams, SearchStats, UnmappedAreaInfo, VmaFlags};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PAGE: u64 = 0x1000;

fn build(n: usize, rng: &mut Rng) -> (AddressMap, u64) {
    let mut m = AddressMap::new();
    let mut addr = 0x10_0000u64;
    for i in 0..n {
        addr += (1 + rng.below(16)) * PAGE;
        let len = (1 + rng.below(16)) * PAGE;
        let flags = if i % 64 == 63 {
            VmaFlags::GROWSDOWN
        } else {
            VmaFlags::NONE
        };
        m.insert(addr, addr + len, flags).unwrap();
        addr += len;
    }
    (m, addr + 0x100_0000)
}

fn main() {
    let params = SearchParams {
        stack_guard_gap: 16 * PAGE,
        ..SearchParams::default()
    };
    let mut rows = Vec::new();
    for &n in &[1_000usize, 10_000, 100_000, 1_000_000] {
        let mut rng = Rng(0x5eed_0000_0000_0001 ^ n as u64);
        let (map, top) = build(n, &mut rng);
        let queries: Vec<UnmappedAreaInfo> = (0..200_000)
            .map(|_| {
                let a = rng.below(top / PAGE) * PAGE;
                let b = rng.below(top / PAGE) * PAGE;
                let (lo, hi) = (a.min(b), a.max(b) + 64 * PAGE);
                UnmappedAreaInfo {
                    topdown: rng.below(2) == 0,
                    length: (1 + rng.below(24)) * PAGE,
                    low_limit: lo,
                    high_limit: hi,
                    align_mask: if rng.below(4) == 0 { 0xffff } else { 0 },
                    ..Default::default()
                }
            })
            .collect();
        for kind in ["unmapped_area", "find_fit"] {
            let mut best = f64::MAX;
            let mut stats = SearchStats::default();
            let mut found = 0u64;
            for rep in 0..5 {
                let mut s = SearchStats::default();
                let t0 = Instant::now();
                for q in &queries {
                    let r = if kind == "unmapped_area" {
                        map.unmapped_area_stats(black_box(q), &params, &mut s).ok()
                    } else {
                        let f = FitRequest {
                            length: q.length,
                            low: q.low_limit,
                            high: q.high_limit,
                            align: q.align_mask + 1,
                            align_offset: 0,
                            topdown: q.topdown,
                            respect_guard_gaps: true,
                        };
                        map.find_fit_stats(black_box(&f), &params, &mut s).ok()
                    };
                    if rep == 0 && r.is_some() {
                        found += 1;
                    }
                    black_box(r);
                }
                let ns = t0.elapsed().as_nanos() as f64 / queries.len() as f64;
                best = best.min(ns);
                if rep == 0 {
                    stats = s;
                }
            }
            let q = queries.len() as f64;
            println!(
                "{kind:>14} n={n:>9}: {best:7.1} ns/search, {:.3} descents/search, {:.3} holes/search, {:.1}% found, depth {}",
                stats.descents as f64 / q,
                stats.holes as f64 / q,
                100.0 * found as f64 / q,
                map.depth()
            );
            rows.push((kind, n, best));
        }
    }
    for kind in ["unmapped_area", "find_fit"] {
        let small = rows.iter().find(|r| r.0 == kind && r.1 == 1_000).unwrap().2;
        let large = rows
            .iter()
            .find(|r| r.0 == kind && r.1 == 1_000_000)
            .unwrap()
            .2;
        println!(
            "{kind:>14}: cost at 1e6 / cost at 1e3 = {:.2} (n grew 1000x)",
            large / small
        );
    }
}
