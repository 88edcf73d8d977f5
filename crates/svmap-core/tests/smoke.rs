//! Deterministic checks of the core against hand-derived kernel answers
//! (the `examples/address-space.jsonl` scenario of TRACE.md) and a quick
//! differential run against the reference model.

use svmap_core::linux::{mmap_base_for_stack_rlimit, Fixed, Mm, MmConfig, MmapRequest, Space};
use svmap_core::model::ModelMap;
use svmap_core::{AddressMap, FitRequest, SearchParams, UnmappedAreaInfo, VmaFlags};

fn mm_example() -> Mm {
    let mut mm: Mm = Mm::new(MmConfig::default());
    let s = mm.space_mut();
    s.insert(0x555555554000, 0x555555556000, VmaFlags::NONE)
        .unwrap();
    s.insert(0x7ffff7f00000, 0x7ffff7fff000, VmaFlags::NONE)
        .unwrap();
    s.insert(0x7ffffffde000, 0x7ffffffff000, VmaFlags::GROWSDOWN)
        .unwrap();
    mm
}

fn req(length: u64, hint: u64, fixed: Fixed) -> MmapRequest {
    MmapRequest {
        length,
        hint,
        fixed,
        ..Default::default()
    }
}

#[test]
fn example_trace_answers() {
    let mut mm = mm_example();
    assert_eq!(mm.mmap(&req(0x3000, 0, Fixed::No)), Ok(0x7ffff7efd000));
    assert_eq!(mm.mmap(&req(0x400000, 0, Fixed::No)), Ok(0x7ffff7a00000));
    assert_eq!(mm.mmap(&req(0x1000, 0x10000000, Fixed::No)), Ok(0x10000000));
    assert_eq!(
        mm.mmap(&req(0x1000, 0x10000000, Fixed::No)),
        Ok(0x7ffff7efc000)
    );
    assert_eq!(
        mm.mmap(&req(0x1000, 0x10000000, Fixed::NoReplace)),
        Err(svmap_core::linux::Errno::EEXIST)
    );
    let find = |mm: &Mm, length, low, high, mask, topdown| {
        mm.find(&UnmappedAreaInfo {
            topdown,
            length,
            low_limit: low,
            high_limit: high,
            align_mask: mask,
            ..Default::default()
        })
    };
    assert_eq!(
        find(&mm, 0x10000, 0x40000000, 0x7ffffffff000, 0xff000, false),
        Ok(0x40000000)
    );
    assert_eq!(
        find(&mm, 0x10000, 0x10000, 0x100000000, 0, true),
        Ok(0xffff0000)
    );
    mm.space_mut().unmap(0x10000000, 0x10001000).unwrap();
    assert_eq!(
        find(&mm, 0x1000, 0x10000000, 0x10001000, 0, false),
        Ok(0x10000000)
    );
    assert_eq!(
        mm.mmap(&req(0, 0, Fixed::No)),
        Err(svmap_core::linux::Errno::EINVAL)
    );
}

#[test]
fn mmap_base_matches_the_running_kernel_table() {
    // LINUX-SEMANTICS.md section 7, confirmed on 6.18.
    assert_eq!(
        mmap_base_for_stack_rlimit(Some(8 << 20), 0x100000),
        0x7ffff7fff000
    );
    assert_eq!(
        mmap_base_for_stack_rlimit(Some(1 << 30), 0x100000),
        0x7fffbfeff000
    );
    assert_eq!(mmap_base_for_stack_rlimit(None, 0x100000), 0x155555556000);
}

#[test]
fn exact_fit_beats_padding() {
    // A 3 MiB hole [2 MiB, 5 MiB) holds an aligned 2 MiB slot at 2 MiB, but
    // the kernel's padded search needs 4 MiB - 4 KiB and skips it.
    let mut m = AddressMap::new();
    m.insert(0x10000, 0x200000, VmaFlags::NONE).unwrap();
    m.insert(0x500000, 0x10000000, VmaFlags::NONE).unwrap();
    let p = SearchParams::default();
    let kernel = m
        .unmapped_area(
            &UnmappedAreaInfo {
                length: 0x200000,
                low_limit: 0,
                high_limit: 0x20000000,
                align_mask: 0x1fffff,
                ..Default::default()
            },
            &p,
        )
        .unwrap();
    assert_eq!(kernel, 0x10000000);
    let fit = m
        .find_fit(
            &FitRequest {
                length: 0x200000,
                low: 0,
                high: 0x20000000,
                align: 0x200000,
                align_offset: 0,
                topdown: false,
                respect_guard_gaps: true,
            },
            &p,
        )
        .unwrap();
    assert_eq!(fit, 0x200000);
}

/// xorshift for the quick differential run.
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

#[test]
fn quick_differential_against_model() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let p = SearchParams {
        mmap_min_addr: 0x10000,
        stack_guard_gap: 0x10000,
        growsup_guard: false,
        page_size: 0x1000,
    };
    for round in 0..20 {
        let mut a = AddressMap::new();
        let mut m = ModelMap::new();
        for step in 0..400 {
            let page = 0x1000u64;
            let span = 1u64 << (20 + (round % 4) * 8);
            let s = rng.below(span / page) * page;
            let l = (1 + rng.below(64)) * page;
            match rng.below(4) {
                0 | 1 => {
                    let flags = if rng.below(5) == 0 {
                        VmaFlags::GROWSDOWN
                    } else {
                        VmaFlags::NONE
                    };
                    let r1 = a.insert(s, s + l, flags);
                    let r2 = Space::insert(&mut m, s, s + l, flags);
                    assert_eq!(r1, r2, "insert step {step}");
                }
                2 => {
                    let r1 = a.unmap(s, s + l * 4);
                    let r2 = Space::unmap(&mut m, s, s + l * 4);
                    assert_eq!(r1, r2, "unmap step {step}");
                }
                _ => {
                    let info = UnmappedAreaInfo {
                        topdown: rng.below(2) == 0,
                        length: l,
                        low_limit: rng.below(span / 2),
                        high_limit: span / 2 + rng.below(span),
                        align_mask: [0, 0xfff, 0xffff, 0x1fffff][rng.below(4) as usize],
                        align_offset: rng.below(4) * 0x1000,
                        start_gap: [0, 0x1000][rng.below(2) as usize],
                    };
                    assert_eq!(
                        a.unmapped_area(&info, &p),
                        m.unmapped_area(&info, &p),
                        "find {info:?} step {step}"
                    );
                    let fit = FitRequest {
                        length: l,
                        low: info.low_limit,
                        high: info.high_limit,
                        align: info.align_mask + 1,
                        align_offset: info.align_offset,
                        topdown: info.topdown,
                        respect_guard_gaps: rng.below(2) == 0,
                    };
                    assert_eq!(
                        a.find_fit(&fit, &p),
                        m.find_fit(&fit, &p),
                        "fit {fit:?} step {step}"
                    );
                }
            }
            a.check_invariants();
            assert_eq!(a.iter().collect::<Vec<_>>(), m.vmas());
        }
    }
}
