//! The boundary rule of the exact fit (`find_fit_nocross`,
//! `allocate_nocross`) against brute force: in small universes every start
//! is tried, so the lowest and highest placements that satisfy every rule
//! (window, alignment and offset, guard gaps, no multiple of the boundary
//! inside) are known without any of the search's arithmetic. The errors are
//! derived the same way: a boundary is too small when no aligned start of a
//! whole period fits the length between two multiples.

use svmap_core::linux::Space;
use svmap_core::model::ModelMap;
use svmap_core::{
    AddressMap, FitError, FitRequest, NoCrossError, SearchParams, SearchStats, Vma, VmaFlags,
};

/// SplitMix64.
struct Gen(u64);

impl Gen {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.u64() % (hi - lo)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.u64() % den < num
    }
}

/// The guard-gap ends of the hole's neighbours, as the kernel computes
/// them, from the VMA list.
fn start_gap(v: &Vma, p: &SearchParams) -> u64 {
    if v.flags.contains(VmaFlags::GROWSDOWN) {
        v.start.saturating_sub(p.stack_guard_gap)
    } else {
        v.start
    }
}

fn end_gap(v: &Vma, p: &SearchParams) -> u64 {
    if p.growsup_guard && v.flags.contains(VmaFlags::GROWSUP) {
        v.end
            .checked_add(p.stack_guard_gap)
            .unwrap_or(p.page_size.wrapping_neg())
    } else {
        v.end
    }
}

/// True if `[a, a + len)` is a valid placement for `req` and `boundary`
/// among `vmas`, checked rule by rule.
fn valid(vmas: &[Vma], req: &FitRequest, boundary: u64, p: &SearchParams, a: u64) -> bool {
    let (a128, len) = (a as u128, req.length as u128);
    let end = a128 + len;
    if a < req.low || end > req.high as u128 {
        return false;
    }
    if !a.wrapping_sub(req.align_offset).is_multiple_of(req.align) {
        return false;
    }
    if vmas
        .iter()
        .any(|v| (v.start as u128) < end && a128 < v.end as u128)
    {
        return false;
    }
    if boundary != 0 && a / boundary != ((end - 1) as u64) / boundary {
        return false;
    }
    if req.respect_guard_gaps {
        // The neighbours of the hole the range lies in.
        let next = vmas.iter().find(|v| v.start as u128 >= end);
        let prev = vmas.iter().rev().find(|v| v.end <= a);
        if next.is_some_and(|n| n.flags.contains(VmaFlags::GROWSDOWN))
            && (start_gap(next.unwrap(), p) as u128) < end
        {
            return false;
        }
        if prev.is_some_and(|v| end_gap(v, p) > a) {
            return false;
        }
    }
    true
}

/// The answer by brute force: every check in the documented order, the
/// errors derived from their definitions, then every start of the window.
fn brute(
    vmas: &[Vma],
    req: &FitRequest,
    boundary: u64,
    p: &SearchParams,
) -> Result<u64, NoCrossError> {
    if req.length == 0 {
        return Err(FitError::ZeroLength.into());
    }
    if req.align.count_ones() != 1 {
        return Err(FitError::BadAlignment(req.align).into());
    }
    if boundary != 0 {
        if boundary.count_ones() != 1 {
            return Err(NoCrossError::BadBoundary(boundary));
        }
        // Positions repeat with period max(align, boundary); the least
        // offset in its block of an aligned start, and whether any of them
        // leaves room for the length before the next multiple.
        // Past 2^16 (a boundary far above the alignment) the first aligned
        // starts, all below the alignment, decide both.
        let period = req.align.max(boundary).min(1 << 16);
        let offsets = (0..period)
            .filter(|x| x.wrapping_sub(req.align_offset).is_multiple_of(req.align))
            .map(|x| x % boundary);
        let least = offsets.clone().min().unwrap();
        if !offsets
            .clone()
            .any(|o| o as u128 + req.length as u128 <= boundary as u128)
        {
            return Err(NoCrossError::BoundaryTooSmall {
                length: req.length,
                boundary,
                offset: least,
            });
        }
    }
    if req.high <= req.low || req.high - req.low < req.length {
        return Err(FitError::EmptyWindow {
            low: req.low,
            high: req.high,
        }
        .into());
    }
    let mut starts = req.low..=req.high - req.length;
    let found = if req.topdown {
        starts.rev().find(|&a| valid(vmas, req, boundary, p, a))
    } else {
        starts.find(|&a| valid(vmas, req, boundary, p, a))
    };
    found.ok_or(NoCrossError::Fit(FitError::NoSpace))
}

/// Asserts that the search, the model and `allocate_nocross` all give the
/// brute-force answer, and that allocating maps exactly that range.
fn check(map: &AddressMap, model: &ModelMap, req: &FitRequest, boundary: u64, p: &SearchParams) {
    let vmas: Vec<Vma> = map.iter().collect();
    let want = brute(&vmas, req, boundary, p);
    let ctx = || format!("{req:#x?} boundary {boundary:#x} {p:#x?}\nvmas {vmas:#x?}");
    assert_eq!(
        map.find_fit_nocross(req, boundary, p),
        want,
        "search: {}",
        ctx()
    );
    assert_eq!(
        model.find_fit_nocross(req, boundary, p),
        want,
        "model: {}",
        ctx()
    );
    if boundary == 0 {
        let plain = map.find_fit(req, p).map_err(NoCrossError::Fit);
        assert_eq!(plain, want, "find_fit: {}", ctx());
    }
    let mut m = map.clone();
    let got = m.allocate_nocross(req, boundary, p, VmaFlags::NONE);
    assert_eq!(got, want, "allocate: {}", ctx());
    match got {
        Ok(a) => {
            let v = m.vma_at(a).expect("allocated range not mapped");
            assert_eq!((v.start, v.end), (a, a + req.length), "{}", ctx());
            assert_eq!(m.len(), map.len() + 1);
            m.check_invariants();
        }
        Err(_) => assert_eq!(m.iter().collect::<Vec<_>>(), vmas, "{}", ctx()),
    }
}

fn params(guard: u64, growsup_guard: bool) -> SearchParams {
    SearchParams {
        mmap_min_addr: 0,
        stack_guard_gap: guard,
        growsup_guard,
        page_size: 1,
    }
}

/// Every hole `[s, e)` of a 32-byte universe starting below 8 (VMAs below
/// and above it), every length up to 8, every boundary up to 16,
/// alignments up to 16 with three offsets each, both directions: the lowest and highest
/// non-crossing starts of one hole, exhaustively.
#[test]
fn one_hole_exhaustive() {
    let p = params(0, false);
    let mut checked = 0u64;
    let mut moved = 0u64;
    for s in 0..8u64 {
        for e in s + 1..=32 {
            let mut map = AddressMap::new();
            let mut model = ModelMap::new();
            if s > 0 {
                map.insert(0, s, VmaFlags::NONE).unwrap();
                Space::insert(&mut model, 0, s, VmaFlags::NONE).unwrap();
            }
            map.insert(e, 64, VmaFlags::NONE).unwrap();
            Space::insert(&mut model, e, 64, VmaFlags::NONE).unwrap();
            for length in 1..=8u64 {
                for boundary in [1u64, 2, 4, 8, 16] {
                    for align in [1u64, 2, 4, 8, 16] {
                        for align_offset in [0, 1, align / 2 + 1] {
                            for topdown in [false, true] {
                                let req = FitRequest {
                                    length,
                                    low: 0,
                                    high: 48,
                                    align,
                                    align_offset,
                                    topdown,
                                    respect_guard_gaps: false,
                                };
                                check(&map, &model, &req, boundary, &p);
                                checked += 1;
                                let plain = map.find_fit(&req, &p);
                                let nc = map.find_fit_nocross(&req, boundary, &p);
                                if let (Ok(a), Ok(b)) = (plain, nc) {
                                    moved += u64::from(a != b);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("one_hole_exhaustive: {checked} requests, the boundary moved {moved} answers");
    // The boundary must have moved a good share of the answers.
    assert!(moved * 25 >= checked, "{moved} of {checked}");
}

/// Random maps of a 256-byte universe at 0, in the middle of the address
/// space and at the very top, with stacks, guard gaps, random windows,
/// alignments, offsets (any 64-bit value) and boundaries (some invalid,
/// some too small, some far larger than the universe).
#[test]
fn random_universes_against_brute_force() {
    let mut g = Gen(0x6a09_e667_f3bc_c909);
    let mut found = 0u64;
    let mut errors = [0u64; 4];
    let iters = if cfg!(miri) { 20 } else { 6000 };
    for _ in 0..iters {
        let base = [0u64, 1 << 40, u64::MAX - 255][g.range(0, 3) as usize];
        let mut map = AddressMap::new();
        let mut model = ModelMap::new();
        for _ in 0..g.range(0, 12) {
            let s = base + g.range(0, 250);
            let e = s + g.range(1, 24).min(base + 255 - s).max(1);
            let flags =
                [VmaFlags::NONE, VmaFlags::GROWSDOWN, VmaFlags::GROWSUP][g.range(0, 3) as usize];
            if e > s && map.insert(s, e, flags).is_ok() {
                Space::insert(&mut model, s, e, flags).unwrap();
            }
        }
        let p = params(g.range(0, 6), g.chance(1, 2));
        let lim = |g: &mut Gen| base + g.range(0, 256);
        let (mut low, mut high) = (lim(&mut g), lim(&mut g));
        if g.chance(3, 4) && low > high {
            core::mem::swap(&mut low, &mut high);
        }
        let align = if g.chance(1, 20) {
            g.range(0, 64) // mostly not a power of two
        } else {
            1 << g.range(0, 7)
        };
        let boundary = match g.range(0, 10) {
            0 => 0,
            1 => g.range(0, 300), // often not a power of two
            2 => 1 << g.range(32, 64),
            _ => 1 << g.range(0, 9),
        };
        let req = FitRequest {
            length: g.range(0, 40),
            low,
            high,
            align,
            align_offset: if g.chance(1, 2) {
                g.range(0, 130)
            } else {
                g.u64()
            },
            topdown: g.chance(1, 2),
            respect_guard_gaps: g.chance(1, 2),
        };
        check(&map, &model, &req, boundary, &p);
        match map.find_fit_nocross(&req, boundary, &p) {
            Ok(_) => found += 1,
            Err(NoCrossError::BadBoundary(_)) => errors[0] += 1,
            Err(NoCrossError::BoundaryTooSmall { .. }) => errors[1] += 1,
            Err(NoCrossError::Fit(FitError::NoSpace)) => errors[2] += 1,
            Err(_) => errors[3] += 1,
        }
    }
    eprintln!("random_universes: {found} found, errors {errors:?}");
    if !cfg!(miri) {
        assert!(found >= iters / 5, "only {found} found");
        assert!(errors.iter().all(|&n| n > 0), "errors {errors:?}");
    }
}

/// The cost the rustdoc states: a hole the boundary alone rejects holds a
/// multiple of the boundary, and the walk tries each such hole once. Holes
/// of 48 KiB straddling 64 KiB multiples hold a plain 32 KiB fit each, but
/// none that stays inside a 64 KiB block; the first hole that does is
/// found after exactly those rejected holes.
#[test]
fn rejected_holes_are_tried_once_each() {
    const K: u64 = 0x10000;
    let p = SearchParams::default();
    for rejected in [0u64, 1, 5, 40] {
        let mut map = AddressMap::new();
        let base = 1u64 << 32;
        let mut holes = Vec::new();
        for i in 1..=rejected {
            // A 48 KiB hole around the multiple base + i * K.
            holes.push((base + i * K - 0x6000, base + i * K + 0x6000));
        }
        // Then a hole that holds a 32 KiB range inside one block.
        let good = base + (rejected + 2) * K;
        holes.push((good, good + 0x8000));
        let mut cursor = base - K;
        for &(s, e) in &holes {
            map.insert(cursor, s, VmaFlags::NONE).unwrap();
            cursor = e;
        }
        map.insert(cursor, cursor + K, VmaFlags::NONE).unwrap();
        let req = FitRequest {
            length: 0x8000,
            low: base - K,
            high: cursor,
            align: 0x1000,
            align_offset: 0,
            topdown: false,
            respect_guard_gaps: false,
        };
        let mut st = SearchStats::default();
        let a = map.find_fit_nocross_stats(&req, K, &p, &mut st);
        assert_eq!(a, Ok(good));
        assert_eq!(st.holes as u64, rejected + 1, "rejected {rejected}");
        // Without the boundary the first hole fits.
        let mut st = SearchStats::default();
        let plain = map.find_fit_stats(&req, &p, &mut st);
        assert_eq!(plain, Ok(holes[0].0));
        assert_eq!(st.holes, 1);
        // With an alignment of the boundary the boundary constrains nothing
        // and the 64 KiB-aligned room prunes straight to the answer.
        let aligned = FitRequest { align: K, ..req };
        let mut st = SearchStats::default();
        assert_eq!(
            map.find_fit_nocross_stats(&aligned, K, &p, &mut st),
            map.find_fit(&aligned, &p).map_err(NoCrossError::Fit)
        );
        assert_eq!(st.holes, 1);
    }
}

/// The documented error order and values on an empty map.
#[test]
fn errors_come_in_the_documented_order() {
    let m = AddressMap::new();
    let p = SearchParams::default();
    let req = FitRequest {
        length: 0x3000,
        low: 0x10000,
        high: 0x10000, // empty window: the last check
        align: 0x1000,
        align_offset: 0x1000,
        topdown: false,
        respect_guard_gaps: false,
    };
    let zero = FitRequest { length: 0, ..req };
    assert_eq!(
        m.find_fit_nocross(&zero, 3, &p),
        Err(FitError::ZeroLength.into())
    );
    let unaligned = FitRequest { align: 3, ..req };
    assert_eq!(
        m.find_fit_nocross(&unaligned, 3, &p),
        Err(FitError::BadAlignment(3).into())
    );
    assert_eq!(
        m.find_fit_nocross(&req, 0x3000, &p),
        Err(NoCrossError::BadBoundary(0x3000))
    );
    // An offset of one alignment is none: 0x3000 fits a 0x4000 block, not a
    // 0x2000 one.
    assert_eq!(
        m.find_fit_nocross(&req, 0x4000, &p),
        Err(FitError::EmptyWindow {
            low: 0x10000,
            high: 0x10000
        }
        .into())
    );
    assert_eq!(
        m.find_fit_nocross(&req, 0x2000, &p),
        Err(NoCrossError::BoundaryTooSmall {
            length: 0x3000,
            boundary: 0x2000,
            offset: 0
        })
    );
    // The offset counts modulo the smaller of alignment and boundary.
    let wide = FitRequest {
        align: 0x10000,
        align_offset: 0x11000,
        high: 1 << 40,
        ..req
    };
    assert_eq!(m.find_fit_nocross(&wide, 0x4000, &p), Ok(0x11000));
    assert_eq!(
        m.find_fit_nocross(
            &FitRequest {
                align_offset: 0x12000,
                ..wide
            },
            0x4000,
            &p
        ),
        Err(NoCrossError::BoundaryTooSmall {
            length: 0x3000,
            boundary: 0x4000,
            offset: 0x2000
        })
    );
    // Boundary 0: find_fit's answer, also on a map that is not empty.
    let open = FitRequest {
        high: 1 << 40,
        ..req
    };
    assert_eq!(
        m.find_fit_nocross(&open, 0, &p),
        m.find_fit(&open, &p).map_err(NoCrossError::Fit)
    );
    for (e, text) in [
        (
            NoCrossError::BadBoundary(0x3000),
            "boundary 0x3000 is neither 0 nor a power of two",
        ),
        (
            NoCrossError::BoundaryTooSmall {
                length: 0x3000,
                boundary: 0x2000,
                offset: 0x1000,
            },
            "a length of 0x3000 at an offset of 0x1000 into a block crosses every multiple \
             of the boundary 0x2000",
        ),
        (
            NoCrossError::Fit(FitError::NoSpace),
            "no aligned placement fits in the window",
        ),
    ] {
        assert_eq!(e.to_string(), text);
    }
}
