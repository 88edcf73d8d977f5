//! Window reservations ([`SvmSpace::reserve_window`]): the common window of a
//! set of devices is reserved in the CPU space up front; CPU placement lands
//! outside it; SVM allocations for those devices are carved from it; the
//! report of CPU memory above a device's limit. Unit tests, then a property
//! test against a page-by-page scan.

use proptest::prelude::*;
use svmap_core::linux::{Fixed, MmConfig, MmapRequest};
use svmap_core::UnmappedAreaInfo;
use svmap_svm::{DeviceConfig, Fault, MirrorMode, SvmError, SvmSpace};

const G40: u64 = 1 << 40;

fn mmap(sp: &mut SvmSpace, length: u64, hint: u64, fixed: Fixed) -> Result<u64, SvmError> {
    sp.cpu_mmap(&MmapRequest {
        length,
        hint,
        fixed,
        growsdown: false,
        map32bit: false,
    })
}

fn space_with(devs: &[(&str, u32)]) -> SvmSpace {
    let mut sp: SvmSpace = SvmSpace::default();
    for &(n, b) in devs {
        sp.add_device(DeviceConfig::new(n, b)).unwrap();
    }
    sp
}

#[test]
fn cpu_placement_lands_outside_and_svm_allocations_inside() {
    let mut sp = space_with(&[("g", 40)]);
    // Some CPU memory in the window already, and a stack with its guard gap.
    sp.cpu_map(0x1000_0000, 0x1001_0000, false).unwrap();
    sp.cpu_map(0xff_f000_0000, 0xff_f010_0000, true).unwrap();
    let w = sp.reserve_window(&["g"]).unwrap();
    sp.check_invariants();
    assert_eq!((w.start, w.end), (0x10000, G40));
    assert_eq!(w.devices, ["g"]);
    let gap = sp.mm().config().stack_guard_gap;
    assert_eq!(
        w.reserved,
        [
            (0x10000, 0x1000_0000),
            (0x1001_0000, 0xff_f000_0000 - gap),
            (0xff_f010_0000, G40)
        ]
    );
    assert!(!w.is_complete());
    let before = w.reserved_bytes();

    // Plain mmap: the default top-down placement is above 2^40 anyway; a
    // hint inside the window is not honoured; noreplace there is EEXIST;
    // a bottom-up search skips the window.
    let a = mmap(&mut sp, 0x1000, 0, Fixed::No).unwrap();
    assert!(a >= G40, "{a:#x}");
    let b = mmap(&mut sp, 0x1000, 0x2000_0000, Fixed::No).unwrap();
    assert!(b >= G40, "{b:#x}");
    assert_eq!(
        mmap(&mut sp, 0x1000, 0x2000_0000, Fixed::NoReplace),
        Err(SvmError::Mmap(svmap_core::linux::Errno::EEXIST))
    );
    let info = UnmappedAreaInfo {
        topdown: false,
        length: 0x1000,
        low_limit: 0,
        high_limit: u64::MAX,
        align_mask: 0,
        align_offset: 0,
        start_gap: 0,
    };
    assert!(sp.find(&info).unwrap() >= G40);
    // A CPU-only SVM allocation is plain CPU placement too.
    let cpu_only = sp.svm_alloc::<&str>(0x1000, None, &[], true).unwrap();
    assert!(cpu_only >= G40);

    // SVM allocations for the device are carved from the window.
    let s1 = sp.svm_alloc(0x3000, None, &["g"], true).unwrap();
    assert_eq!(s1, G40 - 0x3000);
    let s2 = sp.svm_alloc(0x1000, None, &["g"], false).unwrap();
    assert_eq!(s2, 0x10000);
    assert_eq!(sp.stats().window_searches, 2);
    sp.check_invariants();
    assert_eq!(sp.window_at(s1), None);
    assert_eq!(sp.window_at(s1 - 0x1000), Some(w.id));
    let now = sp.window_info(w.id).unwrap();
    assert_eq!(now.reserved_bytes(), before - 0x4000);
    assert_eq!(sp.device_access("g", s1, true), Ok(Ok(())));

    // Freeing gives the range back to the reservation, not to the CPU.
    sp.svm_free(s1).unwrap();
    sp.svm_free(s2).unwrap();
    sp.check_invariants();
    assert_eq!(sp.window_info(w.id).unwrap().reserved_bytes(), before);
    assert_eq!(
        mmap(&mut sp, 0x1000, G40 - 0x1000, Fixed::NoReplace),
        Err(SvmError::Mmap(svmap_core::linux::Errno::EEXIST))
    );
    assert_eq!(sp.device_access("g", s1, false), Ok(Err(Fault::Unmapped)));

    // Released, the window is ordinary free space again.
    sp.release_window(w.id).unwrap();
    sp.check_invariants();
    assert!(sp.windows().is_empty());
    assert_eq!(
        mmap(&mut sp, 0x1000, 0x2000_0000, Fixed::NoReplace),
        Ok(0x2000_0000)
    );
    assert_eq!(
        sp.release_window(w.id),
        Err(SvmError::UnknownWindow { id: w.id })
    );
}

#[test]
fn subsets_carve_supersets_do_not_and_a_full_window_falls_back() {
    let mut sp = space_with(&[("g", 40), ("h", 36), ("x", 44)]);
    let w = sp.reserve_window(&["h", "g", "h"]).unwrap();
    assert_eq!(w.devices, ["g", "h"]);
    assert_eq!((w.start, w.end), (0x10000, 1 << 36));
    assert!(w.is_complete());
    // A subset of the window's devices is carved from it.
    let a = sp.svm_alloc(0x1000, None, &["g"], true).unwrap();
    assert_eq!(a, (1 << 36) - 0x1000);
    // A set with a device outside the window's set is placed outside it:
    // the window is occupied for it, and x's own window is [0x10000, 2^40)
    // intersected with g's.
    let b = sp.svm_alloc(0x1000, None, &["g", "x"], true).unwrap();
    assert_eq!(b, G40 - 0x1000);
    // Larger than the window: falls back to the space outside it.
    let c = sp.svm_alloc(1 << 36, None, &["g"], true).unwrap();
    assert_eq!(c, G40 - 0x1000 - (1 << 36));
    // h alone cannot go outside its window: ENOMEM when it is too small.
    assert!(matches!(
        sp.svm_alloc(1 << 36, None, &["h"], true),
        Err(SvmError::NoSpace { .. } | SvmError::NoCommonWindow { .. })
    ));
    sp.check_invariants();
    // The same set again: nothing left to reserve.
    let rest = sp.window_info(w.id).unwrap();
    assert_eq!(rest.reserved, [(0x10000, (1 << 36) - 0x1000)]);
    assert!(matches!(
        sp.reserve_window(&["g", "h"]),
        Err(SvmError::WindowFull { .. })
    ));
    // x's window is what is free in [0x10000, 2^44): above 2^36.
    let wx = sp.reserve_window(&["x"]).unwrap();
    assert_eq!(wx.reserved[0].0, 1 << 36);
    sp.check_invariants();
    // A g allocation still prefers the g/h window (the first that covers it).
    let d = sp.svm_alloc(0x1000, None, &["g"], false).unwrap();
    assert_eq!(d, 0x10000);
    // An x allocation is carved from x's window and never from g/h's.
    let e = sp.svm_alloc(0x2000, None, &["x"], false).unwrap();
    assert_eq!(e, 1 << 36);
    sp.check_invariants();
}

#[test]
fn typed_errors() {
    let mut sp = space_with(&[("g", 40)]);
    assert_eq!(
        sp.reserve_window::<&str>(&[]).unwrap_err(),
        SvmError::NoDevices
    );
    assert_eq!(
        sp.reserve_window(&["nope"]).unwrap_err(),
        SvmError::UnknownDevice {
            name: "nope".into()
        }
    );
    let mut small: SvmSpace = SvmSpace::default();
    small.reset(MmConfig {
        task_size: 0x100000,
        ..MmConfig::default()
    });
    let mut cfg = DeviceConfig::new("hi", 40);
    cfg.base = 0x200000;
    small.add_device(cfg).unwrap();
    assert!(matches!(
        small.reserve_window(&["hi"]),
        Err(SvmError::NoCommonWindow { length: 0, .. })
    ));
    small.check_invariants();
    for e in [
        SvmError::NoDevices,
        SvmError::WindowFull { start: 0, end: 1 },
        SvmError::UnknownWindow { id: 3 },
    ] {
        assert!(!e.to_string().is_empty());
        assert!(e.trace_errno().is_some());
    }
    // Nothing changed on the failures.
    assert!(sp.windows().is_empty());
    sp.check_invariants();
}

#[test]
fn system_mirrors_do_not_see_window_pieces() {
    let mut sp: SvmSpace = SvmSpace::default();
    let mut cfg = DeviceConfig::new("s", 40);
    cfg.mirror = MirrorMode::System;
    sp.add_device(cfg).unwrap();
    sp.cpu_map(0x1000_0000, 0x1000_1000, false).unwrap();
    let w = sp.reserve_window(&["s"]).unwrap();
    for addr in [0x10000, 0x2000_0000, G40 - 1] {
        assert_eq!(sp.window_at(addr), Some(w.id));
        assert_eq!(sp.device_access("s", addr, false), Ok(Err(Fault::Unmapped)));
        assert_eq!(sp.access_rule("s", addr, false), Ok(Err(Fault::Unmapped)));
    }
    assert_eq!(sp.device_access("s", 0x1000_0000, true), Ok(Ok(())));
    // A CPU unmap over part of the window frees that part for everyone.
    sp.cpu_unmap(0x2000_0000, 0x10000).unwrap();
    assert_eq!(sp.window_at(0x2000_0000), None);
    assert_eq!(
        mmap(&mut sp, 0x1000, 0x2000_0000, Fixed::NoReplace),
        Ok(0x2000_0000)
    );
    sp.check_invariants();
}

#[test]
fn memory_above_the_limit_is_reported() {
    let mut sp = space_with(&[("g", 40), ("w", 48)]);
    let stack = 0x7fff_f000_0000u64;
    sp.cpu_map(stack, stack + 0x10_0000, true).unwrap();
    sp.cpu_map(G40 - 0x1000, G40 + 0x1000, false).unwrap();
    let above = sp.vmas_above_limit("g").unwrap();
    let ranges: Vec<(u64, u64)> = above.iter().map(|v| (v.start, v.end)).collect();
    assert_eq!(
        ranges,
        [(G40 - 0x1000, G40 + 0x1000), (stack, stack + 0x10_0000)]
    );
    assert!(sp.vmas_above_limit("w").unwrap().is_empty());
    let e = sp
        .check_addressable("g", G40 - 0x1000, G40 + 0x1000)
        .unwrap_err();
    assert_eq!(
        e,
        SvmError::AboveDeviceLimit {
            device: "g".into(),
            start: G40 - 0x1000,
            end: G40 + 0x1000,
            limit: G40
        }
    );
    assert!(e.to_string().contains("0x10000000000"));
    // The window stops short of what the CPU holds across the limit.
    let w = sp.reserve_window(&["g"]).unwrap();
    assert_eq!(w.reserved.last(), Some(&(0x10000, G40 - 0x1000)));
}

// ----- property test ---------------------------------------------------------

const PG: u64 = 0x1000;
const TS: u64 = 0x100000;
const GAP: u64 = 0x3000;
const MIN: u64 = 0x10000;

/// (name, va_bits, base, page_size)
const DEVS: [(&str, u32, u64, u64); 3] = [
    ("d0", 20, 0, 0x1000),
    ("d1", 19, 0x20000, 0x2000),
    ("d2", 18, 0, 0x4000),
];

#[derive(Clone, Debug)]
enum Op {
    Map(u64, u64, bool),
    Unmap(u64, u64),
    Mmap(u64, u64),
    Alloc(u64, u32, u8, bool),
    Free(usize),
    Reserve(u8),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0u64..256;
    prop_oneof![
        2 => (page.clone(), 1u64..8, any::<bool>()).prop_map(|(s, n, g)| Op::Map(s * PG, (s + n) * PG, g)),
        2 => (page.clone(), 1u64..12).prop_map(|(s, n)| Op::Unmap(s * PG, n * PG)),
        2 => (1u64..8, page.clone()).prop_map(|(n, h)| Op::Mmap(n * PG, h * PG)),
        5 => (1u64..0x9000, 0u32..6, 1u8..8, any::<bool>()).prop_map(|(l, a, m, t)| Op::Alloc(l, a, m, t)),
        2 => (0usize..8).prop_map(Op::Free),
        2 => (1u8..8).prop_map(Op::Reserve),
        1 => (0usize..4).prop_map(Op::Release),
    ]
}

fn names(mask: u8) -> Vec<&'static str> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| DEVS[i].0)
        .collect()
}

/// The best aligned fit for `devs` inside window `wid`, by scanning every
/// page: free for SVM means not held by the CPU except by a piece of this
/// window, outside guard gaps, and free on every listed device.
fn scan_fit(
    sp: &SvmSpace,
    devs: &[&str],
    wid: u64,
    length: u64,
    align: u64,
    topdown: bool,
) -> Option<u64> {
    let w = sp.window_info(wid).unwrap();
    let page = devs
        .iter()
        .map(|d| sp.device(d).unwrap().config().page_size)
        .fold(PG, u64::max);
    let len = length.div_ceil(page) * page;
    let align = align.max(page);
    let low = devs
        .iter()
        .map(|d| sp.device(d).unwrap().config().base)
        .fold(MIN, u64::max)
        .max(w.start);
    let high = devs
        .iter()
        .map(|d| sp.device(d).unwrap().limit())
        .fold(TS, u64::min)
        .min(w.end);
    let occ: Vec<_> = devs
        .iter()
        .map(|d| sp.device_occupancy(d).unwrap())
        .collect();
    let free = |a: u64| -> bool {
        let cpu_ok = match sp.mm().space().vma_at(a) {
            None => true,
            Some(_) => sp.window_at(a) == Some(wid),
        };
        let gap_ok = !sp.mm().space().iter().any(|v| {
            v.flags.contains(svmap_core::VmaFlags::GROWSDOWN)
                && a < v.start
                && a >= v.start.saturating_sub(GAP)
        });
        let dev_ok = occ.iter().all(|o| o.vma_at(a).is_none());
        cpu_ok && gap_ok && dev_ok
    };
    let fits = |c: u64| (c..c + len).step_by(PG as usize).all(free);
    let first = low.div_ceil(align) * align;
    let starts: Vec<u64> = (first..)
        .step_by(align as usize)
        .take_while(|&c| c + len <= high)
        .collect();
    if topdown {
        starts.into_iter().rev().find(|&c| fits(c))
    } else {
        starts.into_iter().find(|&c| fits(c))
    }
}

/// Runs `ops`; returns how many allocations were checked against the scan.
fn run(ops: &[Op]) -> usize {
    let mut sp: SvmSpace = SvmSpace::default();
    sp.reset(MmConfig {
        task_size: TS,
        mmap_min_addr: MIN,
        stack_guard_gap: GAP,
        mmap_base: TS - 0x10000,
        ..MmConfig::default()
    });
    for (n, b, base, ps) in DEVS {
        let mut c = DeviceConfig::new(n, b);
        c.base = base;
        c.page_size = ps;
        sp.add_device(c).unwrap();
    }
    let mut live: Vec<u64> = Vec::new();
    let mut windows: Vec<u64> = Vec::new();
    let mut scanned = 0;
    for op in ops {
        match *op {
            Op::Map(s, e, g) => {
                let _ = sp.cpu_map(s, e, g);
            }
            Op::Unmap(s, l) => sp.cpu_unmap(s, l).unwrap(),
            Op::Mmap(l, h) => {
                if let Ok(a) = mmap(&mut sp, l, h, Fixed::No) {
                    assert_eq!(sp.window_at(a), None);
                }
            }
            Op::Alloc(length, a, mask, topdown) => {
                let devs = names(mask);
                let align = 1u64 << (12 + a);
                // The first window that covers the set, and the best fit
                // inside it by scanning, before the call.
                let want = sp
                    .windows()
                    .into_iter()
                    .find(|w| devs.iter().all(|d| w.devices.iter().any(|x| x == d)))
                    .and_then(|w| scan_fit(&sp, &devs, w.id, length, align, topdown));
                let got = sp.svm_alloc(length, Some(align), &devs, topdown);
                if let Some(want) = want {
                    assert_eq!(got, Ok(want), "{op:?}");
                    scanned += 1;
                }
                if let Ok(addr) = got {
                    live.push(addr);
                }
            }
            Op::Free(i) => {
                if !live.is_empty() {
                    let a = live.remove(i % live.len());
                    sp.svm_free(a).unwrap();
                }
            }
            Op::Reserve(mask) => {
                // What is free (outside guard gaps) in the window before.
                match sp.reserve_window(&names(mask)) {
                    Ok(w) => {
                        for &(s, e) in &w.reserved {
                            assert_eq!(s % PG, 0);
                            assert!(sp.mm().space().range(s, e).count() == 1);
                        }
                        windows.push(w.id);
                    }
                    Err(SvmError::WindowFull { .. } | SvmError::NoCommonWindow { .. }) => {}
                    Err(e) => panic!("{op:?}: {e}"),
                }
            }
            Op::Release(i) => {
                if !windows.is_empty() {
                    let id = windows.remove(i % windows.len());
                    sp.release_window(id).unwrap();
                }
            }
        }
        sp.check_invariants();
    }
    scanned
}

#[test]
fn the_scan_is_exercised() {
    use Op::*;
    let ops = [
        Map(0x40000, 0x42000, true),
        Reserve(0b011),
        Alloc(0x1000, 0, 1, true),
        Alloc(0x3000, 2, 2, false),
        Alloc(0x1000, 0, 3, true),
        Free(0),
        Alloc(0x1000, 0, 1, true),
        Reserve(0b100),
        Alloc(0x5000, 0, 4, false),
        Release(0),
        Alloc(0x1000, 0, 1, true),
    ];
    // Every allocation but the last (no window covers d0 once the first is
    // released) is checked against the scan.
    assert_eq!(run(&ops), 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn windows_against_a_page_scan(ops in prop::collection::vec(op(), 1..50)) {
        run(&ops);
    }
}
