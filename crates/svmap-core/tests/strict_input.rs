//! Input that is not what the API prints or what kernel callers pass:
//! errno names are parsed strictly, and the gap search takes any
//! `align_mask` (the kernel does) without tripping a debug assertion,
//! answering exactly what the reference model answers.

use svmap_core::linux::{Errno, Space};
use svmap_core::model::ModelMap;
use svmap_core::{AddressMap, SearchParams, UnmappedAreaInfo, VmaFlags};

#[test]
fn errno_from_name_accepts_exactly_what_name_prints() {
    // Every errno round-trips through its printed form.
    for n in 1..=4095u16 {
        let printed = Errno(n).name().to_string();
        assert_eq!(Errno::from_name(&printed), Some(Errno(n)), "{printed}");
    }
    // Other spellings of a number, numbers that have a name, and junk.
    for bad in [
        "",
        "E",
        "E+12",
        "E+99",
        "E-1",
        "E012",
        "E0099",
        "E12",
        "E1",
        "E22",
        "E0",
        "E4096",
        "E65535",
        "E65536",
        "E99999999999",
        "e99",
        "ENOMEM ",
        " ENOMEM",
        "enomem",
        "E 99",
        "E9_9",
        "+E99",
        "E99\n",
        "E\u{0661}\u{0661}",
    ] {
        assert_eq!(Errno::from_name(bad), None, "{bad:?} was accepted");
    }
    assert_eq!(Errno::from_name("E99"), Some(Errno(99)));
    assert_eq!(Errno::from_name("ENOMEM"), Some(Errno::ENOMEM));
}

/// SplitMix64, fixed seed.
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

/// A mask that is not `2^k - 1`: a few random bits between bit 0 and bit
/// 24, with at least one hole below the top bit.
fn non_contiguous_mask(r: &mut Rng) -> u64 {
    loop {
        let m = match r.below(3) {
            0 => r.next() & 0x1ff_ffff,
            1 => (r.next() & 0x1ff_f000) | (1 << (12 + r.below(12))),
            _ => (1 << (12 + r.below(12))) | (1 << r.below(12)),
        };
        if m & m.wrapping_add(1) != 0 {
            return m;
        }
    }
}

#[test]
fn the_reported_mask_is_searched_like_the_kernel() {
    // `{"op":"find", ..., "align_mask":"0x5000"}` on a map with one VMA
    // below the window: the kernel's arithmetic gives 0x406000, which is
    // not congruent to 0 under 0x5000 (0x6000 & 0x5000 = 0x4000).
    let mut map = AddressMap::new();
    let mut model = ModelMap::new();
    map.insert(0x40_0000, 0x40_1000, VmaFlags::NONE).unwrap();
    Space::insert(&mut model, 0x40_0000, 0x40_1000, VmaFlags::NONE).unwrap();
    let p = SearchParams::default();
    for topdown in [false, true] {
        let info = UnmappedAreaInfo {
            topdown,
            length: 0x1000,
            low_limit: 0x40_1000,
            high_limit: 0x80_0000,
            align_mask: 0x5000,
            ..Default::default()
        };
        let got = map.unmapped_area(&info, &p);
        assert_eq!(got, model.unmapped_area(&info, &p), "{info:#x?}");
        if !topdown {
            assert_eq!(got, Ok(0x40_6000));
        }
    }
}

#[test]
fn non_contiguous_masks_agree_with_the_model() {
    let mut r = Rng(0x6d61_736b_5f31);
    let mut searches = 0u32;
    let mut found = 0u32;
    for case in 0..200 {
        let mut map = AddressMap::new();
        let mut model = ModelMap::new();
        // Up to 60 page-granular VMAs in the low 256 MiB, some growing down.
        for _ in 0..r.below(60) {
            let start = r.below(0x1_0000) << 12;
            let len = (1 + r.below(64)) << 12;
            let flags = if r.below(8) == 0 {
                VmaFlags::GROWSDOWN
            } else {
                VmaFlags::NONE
            };
            let a = map.insert(start, start + len, flags);
            let b = Space::insert(&mut model, start, start + len, flags);
            assert_eq!(
                a.is_ok(),
                b.is_ok(),
                "case {case}: insert {start:#x}+{len:#x}"
            );
        }
        let p = SearchParams {
            mmap_min_addr: [0, 0x1000, 0x1_0000][r.below(3) as usize],
            stack_guard_gap: [0, 0x1000, 0x10_0000][r.below(3) as usize],
            ..SearchParams::default()
        };
        for _ in 0..50 {
            let low = r.below(0x1_0000) << 12;
            let high = low + ((1 + r.below(0x1_0000)) << 12);
            let info = UnmappedAreaInfo {
                topdown: r.below(2) == 0,
                length: (1 + r.below(256)) << 12,
                low_limit: low,
                high_limit: high,
                align_mask: non_contiguous_mask(&mut r),
                align_offset: r.next() & 0x1ff_ffff,
                start_gap: [0, 0x1000][r.below(2) as usize],
            };
            let got = map.unmapped_area(&info, &p);
            let want = model.unmapped_area(&info, &p);
            assert_eq!(
                got,
                want,
                "case {case}: {info:#x?} {p:#x?} on {:#x?}",
                model.vmas()
            );
            searches += 1;
            found += u32::from(got.is_ok());
        }
    }
    // Both outcomes are exercised.
    assert_eq!(searches, 10_000);
    assert!(
        found > 1000 && found < searches - 1000,
        "{found} of {searches} found"
    );
}
