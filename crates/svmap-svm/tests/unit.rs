//! Typed errors for every bad input, and the mirror's page table and TLB
//! with a made-up page-table format.

use svmap_core::linux::{Errno, MmConfig};
use svmap_svm::mirror::{PageTable, Perm, Snapshot, Tlb};
use svmap_svm::{
    CpuPolicy, DeviceConfig, Fault, Geometry, Mirror, Populate, PtFormat, StdSync, SvmError,
    SvmSpace,
};

fn space() -> SvmSpace {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    sp.add_device(DeviceConfig::new("g", 40)).unwrap();
    sp
}

#[test]
fn device_errors_are_typed() {
    let mut sp = space();
    for va_bits in [0, 11, 65, 100] {
        assert_eq!(
            sp.add_device(DeviceConfig::new("x", va_bits)),
            Err(SvmError::BadVaBits { va_bits })
        );
    }
    for page_size in [0, 0x800, 0x3000] {
        let mut c = DeviceConfig::new("x", 40);
        c.page_size = page_size;
        assert_eq!(sp.add_device(c), Err(SvmError::BadPageSize { page_size }));
    }
    let e = sp.add_device(DeviceConfig::new("g", 48)).unwrap_err();
    assert_eq!(e, SvmError::DuplicateDevice { name: "g".into() });
    assert_eq!(e.trace_errno(), Some(Errno::EEXIST));
    let mut c = DeviceConfig::new("b", 20);
    c.base = 1 << 20;
    let e = sp.add_device(c).unwrap_err();
    assert_eq!(
        e,
        SvmError::BaseOutOfRange {
            base: 1 << 20,
            va_bits: 20
        }
    );
    assert_eq!(e.trace_errno(), Some(Errno::EINVAL));
    // 64-bit devices are fine and never out of range.
    sp.add_device(DeviceConfig::new("w", 64)).unwrap();
    assert_eq!(
        sp.device_access("w", u64::MAX, false).unwrap(),
        Err(Fault::Unmapped)
    );
    assert_eq!(
        sp.device_access("g", 1 << 40, false).unwrap(),
        Err(Fault::OutOfRange)
    );
    assert_eq!(
        sp.device_access("g", u64::MAX, false).unwrap(),
        Err(Fault::OutOfRange)
    );
    sp.check_invariants();
}

#[test]
fn unknown_names_and_bad_arguments() {
    let mut sp = space();
    let unknown = SvmError::UnknownDevice {
        name: "nope".into(),
    };
    assert_eq!(sp.device_access("nope", 0, false), Err(unknown.clone()));
    assert_eq!(
        sp.device_map("nope", 0, 0x1000, CpuPolicy::Fault),
        Err(unknown.clone())
    );
    assert_eq!(
        sp.svm_alloc(0x1000, None, &["g", "nope"], true),
        Err(unknown.clone())
    );
    assert_eq!(unknown.trace_errno(), None);
    assert_eq!(
        sp.svm_alloc(0, None, &["g"], true),
        Err(SvmError::ZeroLength)
    );
    assert_eq!(
        sp.svm_alloc(0x1000, Some(0x3000), &["g"], true),
        Err(SvmError::BadAlignment { align: 0x3000 })
    );
    assert!(matches!(
        sp.svm_alloc(u64::MAX, None, &["g"], true),
        Err(SvmError::LengthOverflow { .. })
    ));
    // Duplicate names in a list count once.
    let a = sp.svm_alloc(0x1000, None, &["g", "g"], true).unwrap();
    assert_eq!(a, (1 << 40) - 0x1000);
    // device_map over an existing buffer.
    let e = sp
        .device_map("g", a, a + 0x1000, CpuPolicy::Fault)
        .unwrap_err();
    assert_eq!(
        e,
        SvmError::Overlap {
            start: a,
            end: a + 0x1000,
            existing: (a, a + 0x1000)
        }
    );
    assert_eq!(
        sp.device_map("g", 0x1000, 0x1800, CpuPolicy::Fault),
        Err(SvmError::Unaligned {
            start: 0x1000,
            end: 0x1800,
            page_size: 0x1000
        })
    );
    assert_eq!(
        sp.device_map("g", 0x2000, 0x2000, CpuPolicy::Fault),
        Err(SvmError::EmptyRange {
            start: 0x2000,
            end: 0x2000
        })
    );
    assert!(matches!(
        sp.device_map("g", 0, (1 << 40) + 0x1000, CpuPolicy::Fault),
        Err(SvmError::BeyondDeviceLimit { va_bits: 40, .. })
    ));
    // Windows that do not intersect.
    let mut hi = DeviceConfig::new("hi", 48);
    hi.base = 1 << 44;
    sp.add_device(hi).unwrap();
    let e = sp.svm_alloc(0x1000, None, &["hi", "g"], true).unwrap_err();
    assert_eq!(
        e,
        SvmError::NoCommonWindow {
            low: 1 << 44,
            high: 1 << 40,
            length: 0x1000
        }
    );
    assert_eq!(e.trace_errno(), Some(Errno::ENOMEM));
    // svm_free of anything but a live start; nothing changes.
    assert_eq!(
        sp.svm_free(a + 0x1000),
        Err(SvmError::NotAnSvmRange { addr: a + 0x1000 })
    );
    sp.svm_free(a).unwrap();
    assert_eq!(sp.svm_free(a), Err(SvmError::NotAnSvmRange { addr: a }));
    // protect errors.
    assert_eq!(
        sp.protect(0xffff_ffff_ffff_f000, 0x2000, svmap_svm::Prot::Read),
        Err(SvmError::RangeOverflow {
            start: 0xffff_ffff_ffff_f000,
            length: 0x2000
        })
    );
    assert_eq!(
        sp.protect(a, 0x1000, svmap_svm::Prot::Read),
        Err(SvmError::NotMapped { addr: a })
    );
    sp.check_invariants();
}

#[test]
fn limits_report() {
    let mut sp = space();
    sp.cpu_map(0x5555_5555_4000, 0x5555_5555_6000, false)
        .unwrap();
    sp.cpu_map(0x1000_0000, 0x1000_1000, false).unwrap();
    let above = sp.vmas_above_limit("g").unwrap();
    assert_eq!(above.len(), 1);
    assert_eq!(above[0].start, 0x5555_5555_4000);
    assert_eq!(
        sp.check_addressable("g", 0x5555_5555_4000, 0x5555_5555_6000),
        Err(SvmError::AboveDeviceLimit {
            device: "g".into(),
            start: 0x5555_5555_4000,
            end: 0x5555_5555_6000,
            limit: 1 << 40
        })
    );
    assert_eq!(sp.check_addressable("g", 0x1000_0000, 0x1000_1000), Ok(()));
}

/// A made-up format: 3 index bits per level, valid in bit 63.
struct OddFormat;

impl PtFormat for OddFormat {
    const NAME: &'static str = "odd";
    fn bits_per_level(_page_shift: u32) -> u32 {
        3
    }
    fn leaf(frame: u64, read: bool, write: bool) -> u64 {
        (1 << 63) | (frame << 2) | u64::from(read) | (u64::from(write) << 1)
    }
    fn is_valid(pte: u64) -> bool {
        pte >> 63 != 0
    }
    fn can_read(pte: u64) -> bool {
        pte & 1 != 0
    }
    fn can_write(pte: u64) -> bool {
        pte & 2 != 0
    }
    fn frame(pte: u64) -> u64 {
        (pte & !(1 << 63)) >> 2
    }
}

#[test]
fn geometry_levels() {
    // 48 bits, 4 KiB pages, 9 bits per level: x86-64's four levels.
    assert_eq!(Geometry::new(48, 12, 9).level_bits, vec![9, 9, 9, 9]);
    // 40 bits: 28 index bits = 1 + 9 + 9 + 9.
    assert_eq!(Geometry::new(40, 12, 9).level_bits, vec![1, 9, 9, 9]);
    // 64 KiB pages with 13 bits per level.
    assert_eq!(Geometry::new(48, 16, 13).level_bits, vec![6, 13, 13]);
    // Nothing to index.
    assert_eq!(Geometry::new(12, 12, 9).level_bits, vec![0]);
    assert_eq!(Geometry::new(64, 12, 3).levels(), 18);
}

#[test]
fn page_table_sparse_clear() {
    let geo = Geometry::new(64, 12, OddFormat::bits_per_level(12));
    let mut pt: PageTable<OddFormat> = PageTable::new(geo);
    let vpns = [0u64, 1, 7, 8, 1 << 20, (1 << 52) - 1];
    for (i, &v) in vpns.iter().enumerate() {
        pt.set(v, OddFormat::leaf(i as u64 + 1, true, i % 2 == 0));
    }
    assert_eq!(pt.valid_entries(), vpns.len());
    for (i, &v) in vpns.iter().enumerate() {
        assert_eq!(OddFormat::frame(pt.get(v)), i as u64 + 1);
    }
    assert_eq!(pt.get(2), 0);
    assert_eq!(pt.clear(1, 8), 3);
    assert_eq!(pt.get(0) >> 63, 1);
    assert_eq!(pt.get(7), 0);
    assert_eq!(pt.clear(0, u64::MAX >> 12), 3);
    assert_eq!(pt.valid_entries(), 0);
    assert!(pt.entries().is_empty());
}

#[test]
fn tlb_fifo_and_shootdown() {
    let mut t = Tlb::new(2);
    t.fill(1, 10);
    t.fill(2, 20);
    t.fill(3, 30); // evicts 1
    assert_eq!(t.lookup(1), None);
    assert_eq!(t.lookup(3), Some(30));
    t.shoot_down(2, 2);
    assert_eq!(t.lookup(2), None);
    assert_eq!(t.lookup(3), Some(30));
}

#[test]
fn mirror_caches_and_invalidates() {
    let m: Mirror<OddFormat, StdSync> = Mirror::new(20, 0x1000, 4);
    let rw = Perm {
        frame: 5,
        read: true,
        write: true,
    };
    let calls = std::cell::Cell::new(0);
    let mut snap = |_a: u64| {
        calls.set(calls.get() + 1);
        Snapshot {
            byte: Some(rw),
            page: Some(rw),
        }
    };
    assert_eq!(m.access(0x3010, true, &mut snap), Ok(5));
    assert_eq!(m.access(0x3020, true, &mut snap), Ok(5));
    assert_eq!(calls.get(), 1, "the second access hits the TLB");
    assert_eq!(m.access(1 << 20, false, &mut snap), Err(Fault::OutOfRange));
    m.invalidate(0x3000, 0x4000);
    let mut gone = |_a: u64| Snapshot {
        byte: None,
        page: None,
    };
    assert_eq!(m.access(0x3010, false, &mut gone), Err(Fault::Unmapped));
    assert!(m.mappings().is_empty());
    assert_eq!(m.stats().invalidations, 1);
}

#[test]
fn populate_modes_agree_on_large_pages() {
    for populate in [Populate::OnFault, Populate::AtAlloc] {
        let mut sp: SvmSpace = SvmSpace::default();
        let mut c = DeviceConfig::new("big", 47);
        c.page_size = 0x20_0000;
        c.populate = populate;
        sp.add_device(c).unwrap();
        let mut s = DeviceConfig::new("sys", 47);
        s.mirror = svmap_svm::MirrorMode::System;
        s.page_size = 0x10000;
        s.populate = populate;
        sp.add_device(s).unwrap();
        let a = sp.svm_alloc(0x1000, None, &["big"], true).unwrap();
        assert_eq!(a % 0x20_0000, 0);
        // A 4 KiB CPU protection change inside one 2 MiB device page.
        sp.protect(a + 0x1000, 0x1000, svmap_svm::Prot::Read)
            .unwrap();
        for (dev, addr, w) in [
            ("big", a, true),
            ("big", a + 0x1000, true),
            ("big", a + 0x1000, false),
            ("sys", a + 0x1000, true),
            ("sys", a + 0x2000, true),
            ("big", a, true),
        ] {
            let want = sp.access_rule(dev, addr, w).unwrap();
            assert_eq!(
                sp.device_access(dev, addr, w).unwrap(),
                want,
                "{dev} {addr:#x} {w}"
            );
            sp.check_invariants();
        }
        // A partial unmap inside the device page.
        sp.cpu_unmap(a + 0x10_0000, 0x1000).unwrap();
        assert_eq!(
            sp.device_access("big", a + 0x10_0000, false).unwrap(),
            Err(Fault::Unmapped)
        );
        assert_eq!(sp.device_access("big", a, true).unwrap(), Ok(()));
        sp.check_invariants();
        sp.svm_free(a).unwrap();
        assert_eq!(
            sp.device_access("big", a, false).unwrap(),
            Err(Fault::Unmapped)
        );
        sp.check_invariants();
    }
}
