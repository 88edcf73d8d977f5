//! Bounded resources for hostile sizes: device geometries and TLB sizes are
//! checked with typed errors, device page tables and TLBs hold only what
//! is live (and free what is invalidated), an invalidation over a huge
//! range visits only present entries, messages stay short.

use svmap_core::linux::MmConfig;
use svmap_svm::mirror::{PageTable, Perm, Snapshot, Tlb};
use svmap_svm::{
    DefaultFormat, DeviceConfig, Fault, Geometry, Mirror, MirrorMode, Prot, PtFormat, StdSync,
    SvmError, SvmSpace, MAX_DEVICES, MAX_DEVICE_PAGE_SIZE, MAX_TLB_ENTRIES,
};

fn dev(name: &str, va_bits: u32, page_size: u64) -> DeviceConfig {
    let mut c = DeviceConfig::new(name, va_bits);
    c.page_size = page_size;
    c
}

#[test]
fn device_sizes_are_checked_with_typed_errors() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    for page_size in [MAX_DEVICE_PAGE_SIZE * 2, 1 << 34, 1 << 63] {
        let e = sp.add_device(dev("x", 64, page_size)).unwrap_err();
        assert_eq!(e, SvmError::BadPageSize { page_size });
        assert_eq!(e.trace_errno(), None, "a bad line in a trace");
        assert!(e.to_string().contains("0x40000000"), "{e}");
    }
    // A page larger than the whole address space.
    for (va_bits, page_size) in [(12, 0x2000), (12, 0x8000), (20, 0x20_0000), (29, 1 << 30)] {
        let e = sp.add_device(dev("x", va_bits, page_size)).unwrap_err();
        assert_eq!(e, SvmError::PageAboveLimit { page_size, va_bits });
        assert_eq!(e.trace_errno(), None);
    }
    for tlb_entries in [0, MAX_TLB_ENTRIES + 1, u32::MAX as usize, usize::MAX] {
        let mut c = DeviceConfig::new("x", 48);
        c.tlb_entries = tlb_entries;
        let e = sp.add_device(c).unwrap_err();
        assert_eq!(e, SvmError::BadTlbEntries { tlb_entries });
        assert_eq!(e.trace_errno(), None);
    }
    assert!(sp.devices().is_empty(), "nothing was added");
    // The limits themselves are fine.
    sp.add_device(dev("page-is-space", 12, 0x1000)).unwrap();
    sp.add_device(dev("gig", 30, MAX_DEVICE_PAGE_SIZE)).unwrap();
    let mut c = DeviceConfig::new("big-tlb", 48);
    c.tlb_entries = MAX_TLB_ENTRIES;
    sp.add_device(c).unwrap();
    sp.check_invariants();
}

/// A space holds at most `MAX_DEVICES` devices: the last one fits, one
/// more is a typed error that names the cap and changes nothing, a
/// duplicate name still answers `DuplicateDevice`, and `reset` makes room.
#[test]
fn the_number_of_devices_is_capped() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    for i in 0..MAX_DEVICES {
        sp.add_device(DeviceConfig::new(format!("d{i}"), 48))
            .unwrap_or_else(|e| panic!("device {i} of {MAX_DEVICES}: {e}"));
    }
    assert_eq!(sp.devices().len(), MAX_DEVICES);
    let e = sp
        .add_device(DeviceConfig::new("one-more", 48))
        .unwrap_err();
    assert_eq!(e, SvmError::TooManyDevices { max: MAX_DEVICES });
    assert_eq!(e.trace_errno(), None, "a bad line in a trace");
    assert!(e.to_string().contains(&MAX_DEVICES.to_string()), "{e}");
    assert_eq!(sp.devices().len(), MAX_DEVICES, "nothing was added");
    assert!(sp.device("one-more").is_err());
    // A full space still answers the other errors as before.
    let e = sp.add_device(DeviceConfig::new("d0", 48)).unwrap_err();
    assert_eq!(e, SvmError::DuplicateDevice { name: "d0".into() });
    let e = sp.add_device(DeviceConfig::new("x", 99)).unwrap_err();
    assert_eq!(e, SvmError::BadVaBits { va_bits: 99 });
    // Every device still works: an SVM range on all of them.
    let names: Vec<String> = (0..MAX_DEVICES).map(|i| format!("d{i}")).collect();
    let a = sp.svm_alloc(0x1000, None, &names, true).unwrap();
    for n in &names {
        assert_eq!(sp.device_access(n, a, true).unwrap(), Ok(()));
    }
    sp.check_invariants();
    sp.reset(MmConfig::default());
    sp.add_device(DeviceConfig::new("one-more", 48)).unwrap();
}

/// A device with 1 GiB pages on a 64-bit space: its top table level has
/// 2^27 entries of which it allocates none up front, and an invalidation of
/// the whole space walks only what is present.
#[test]
fn huge_pages_and_wide_invalidations_cost_only_what_is_mapped() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    let mut c = dev("g", 64, MAX_DEVICE_PAGE_SIZE);
    c.mirror = MirrorMode::System;
    sp.add_device(c).unwrap();
    let mmu = sp.device("g").unwrap().mmu();
    assert_eq!(mmu.geometry().level_bits, vec![7, 27]);
    assert_eq!(mmu.table_counts(), (1, 0));
    let a = 1u64 << 40;
    sp.cpu_map(a, a + MAX_DEVICE_PAGE_SIZE, false).unwrap();
    assert_eq!(sp.device_access("g", a + 5, true).unwrap(), Ok(()));
    assert_eq!(sp.device("g").unwrap().mmu().table_counts(), (2, 1));
    // Everything from 0 to 2^64: one page-table entry and one TLB entry go.
    sp.cpu_unmap(0, !0xfff).unwrap();
    let mmu = sp.device("g").unwrap().mmu();
    assert_eq!(mmu.table_counts(), (1, 0));
    assert_eq!(mmu.tlb_len(), 0);
    assert_eq!(
        sp.device_access("g", a, false).unwrap(),
        Err(Fault::Unmapped)
    );
    sp.check_invariants();
}

/// Map one page, touch it from the device, unmap it, each time in a new
/// 2 MiB region: the page table must not keep the tables it emptied.
#[test]
fn page_tables_free_what_they_no_longer_hold() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    let mut c = DeviceConfig::new("g", 48);
    c.mirror = MirrorMode::System;
    c.tlb_entries = 8;
    sp.add_device(c).unwrap();
    let mut peak = 0;
    for i in 0..3000u64 {
        let a = (1u64 << 32) + i * 0x20_0000;
        sp.cpu_map(a, a + 0x1000, false).unwrap();
        assert_eq!(sp.device_access("g", a, true).unwrap(), Ok(()));
        let (tables, valid) = sp.device("g").unwrap().mmu().table_counts();
        assert_eq!(valid, 1);
        peak = peak.max(tables);
        sp.cpu_unmap(a, 0x1000).unwrap();
        assert_eq!(
            sp.device("g").unwrap().mmu().table_counts(),
            (1, 0),
            "i {i}"
        );
        assert_eq!(sp.device("g").unwrap().mmu().tlb_len(), 0);
    }
    // Root, and one table per lower level for the one live page.
    assert_eq!(peak, 4);
    sp.check_invariants();
}

#[test]
fn page_table_frees_emptied_tables_and_clears_sparsely() {
    let geo = Geometry::new(64, 12, DefaultFormat::bits_per_level(12));
    let mut pt: PageTable<DefaultFormat> = PageTable::new(geo);
    assert_eq!(pt.tables(), 1);
    let pte = DefaultFormat::leaf(7, true, true);
    let vpns = [0u64, 1, 511, 512, 1 << 30, (1 << 52) - 1];
    for &v in &vpns {
        pt.set(v, pte);
    }
    assert_eq!(pt.valid_entries(), vpns.len());
    // Six levels (7 + 5 x 9 bits). 0, 1 and 511 share one path from the
    // root (6 tables); 512 needs another leaf (7); 1 << 30 three more
    // tables below level 2 (10); the last page five below the root (15).
    let tables = pt.tables();
    assert_eq!(tables, 15);
    // Clearing a page twice, or a range with nothing in it, changes nothing.
    assert_eq!(pt.clear(2, 510), 0);
    assert_eq!(pt.tables(), tables);
    assert_eq!(pt.clear(1, 1), 1);
    assert_eq!(pt.clear(1, 1), 0);
    assert_eq!(pt.tables(), tables, "the leaf still holds 0 and 511");
    // An invalid PTE is a clear.
    pt.set(511, 0);
    assert_eq!(pt.get(511), 0);
    assert_eq!(pt.valid_entries(), 4);
    assert_eq!(pt.tables(), tables);
    // Clearing the whole space frees every table but the root.
    assert_eq!(pt.clear(0, u64::MAX >> 12), 4);
    assert_eq!((pt.tables(), pt.valid_entries()), (1, 0));
    assert!(pt.entries().is_empty());
    // An inverted range is empty.
    pt.set(9, pte);
    assert_eq!(pt.clear(10, 9), 0);
    assert_eq!(pt.entries(), vec![(9, pte)]);
}

#[test]
fn tlb_is_fifo_among_live_entries_and_allocates_as_it_fills() {
    // Any capacity costs nothing until filled.
    for cap in [MAX_TLB_ENTRIES, usize::MAX] {
        let t = Tlb::new(cap);
        assert_eq!((t.capacity(), t.len()), (cap, 0));
    }
    assert_eq!(Tlb::new(0).capacity(), 1);
    let mut t = Tlb::new(3);
    for v in 1..=3 {
        t.fill(v, v * 10);
    }
    // A shoot-down leaves room: the next fill evicts nothing.
    t.shoot_down(2, 2);
    t.fill(4, 40);
    assert_eq!(t.entries().collect::<Vec<_>>(), [(1, 10), (3, 30), (4, 40)]);
    // Refilling a cached page keeps its place; the oldest fill goes first.
    t.fill(1, 11);
    t.fill(5, 50);
    assert_eq!(t.entries().collect::<Vec<_>>(), [(3, 30), (4, 40), (5, 50)]);
    t.fill(6, 60);
    assert_eq!(t.entries().collect::<Vec<_>>(), [(4, 40), (5, 50), (6, 60)]);
    assert_eq!(t.lookup(4), Some(40));
    assert_eq!(t.lookup(1), None);
    assert_eq!((t.hits, t.misses), (1, 1));
    // Many fills and shoot-downs with a large capacity: the TLB holds what
    // is live, and the FIFO order survives the churn.
    let mut t = Tlb::new(MAX_TLB_ENTRIES);
    for v in 0..100_000u64 {
        t.fill(v, v);
        t.shoot_down(v, v);
    }
    assert!(t.is_empty());
    assert_eq!(t.shot_down, 100_000);
    let mut t = Tlb::new(2);
    for v in 0..1000u64 {
        t.fill(v, v);
        if v % 3 == 0 {
            t.shoot_down(v, v);
        }
    }
    // 999 evicted 997, the oldest, then was shot down.
    assert_eq!(t.entries().collect::<Vec<_>>(), [(998, 998)]);
}

/// A mirror whose page is larger than its address space (which
/// `add_device` refuses, but `Mirror::new` accepts): an invalidation that
/// starts above the limit still clears page 0, which holds the limit.
#[test]
fn mirror_with_a_page_larger_than_its_space_invalidates_page_zero() {
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(12, 0x8000, 4);
    let rw = Perm {
        frame: 3,
        read: true,
        write: true,
    };
    let mut snap = |_a: u64| Snapshot {
        byte: Some(rw),
        page: Some(rw),
    };
    assert_eq!(m.access(0, false, &mut snap), Ok(3));
    assert_eq!(m.table_counts().1, 1);
    m.invalidate(0x4000, 0x5000);
    assert_eq!(m.table_counts(), (1, 0));
    assert!(m.mappings().is_empty());
    assert_eq!(m.access(0x1000, false, &mut snap), Err(Fault::OutOfRange));
    // Out-of-range arguments are taken within range, never a panic.
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(200, 0, 0);
    assert_eq!(m.geometry().va_bits, 64);
    assert_eq!(m.page_size(), 1 << 63);
    assert_eq!(m.access(u64::MAX, true, &mut snap), Ok(3));
    let m: Mirror<DefaultFormat, StdSync> = Mirror::new(48, 0x3000, 1);
    assert_eq!(m.page_size(), 0x1000);
}

/// The reviewer's reproduction: `page_size` 0x8000 on a 12-bit device, a
/// CPU map, a device access, a `protect` above the device limit. Refused
/// at `add_device` now; the same steps on a 0x1000-page device hold every
/// invariant.
#[test]
fn page_larger_than_the_space_is_refused_and_the_steps_hold() {
    let mut sp: SvmSpace = SvmSpace::new(MmConfig::default());
    let mut c = dev("a", 12, 0x8000);
    c.mirror = MirrorMode::System;
    assert!(matches!(
        sp.add_device(c.clone()),
        Err(SvmError::PageAboveLimit { .. })
    ));
    c.page_size = 0x1000;
    sp.add_device(c).unwrap();
    sp.cpu_map(0, 0x10000, false).unwrap();
    assert_eq!(sp.device_access("a", 0, false).unwrap(), Ok(()));
    sp.protect(0x4000, 0x1000, Prot::None).unwrap();
    sp.check_invariants();
    sp.protect(0, 0x1000, Prot::None).unwrap();
    assert_eq!(
        sp.device_access("a", 0, false).unwrap(),
        Err(Fault::Protection)
    );
    sp.check_invariants();
}

#[test]
fn messages_quote_a_bounded_prefix_of_names() {
    let name = "n".repeat(100_000);
    let e = SvmError::UnknownDevice { name: name.clone() };
    let m = e.to_string();
    assert!(m.len() < 200, "{} bytes", m.len());
    assert!(m.contains("(100000 bytes)"), "{m}");
    let e = SvmError::DuplicateDevice { name };
    assert!(e.to_string().len() < 200);
    // A name cut inside a multi-byte character is cut before it.
    let name = format!("{}é", "n".repeat(63));
    let m = SvmError::UnknownDevice { name }.to_string();
    assert!(m.contains(&format!("\"{}\"...", "n".repeat(63))), "{m}");
    // Short names are quoted whole.
    let m = SvmError::UnknownDevice { name: "gpu".into() }.to_string();
    assert_eq!(m, "no device named \"gpu\"");
}
