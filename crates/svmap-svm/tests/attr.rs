//! Range attributes against a per-page reference model: every set changes
//! exactly the pages it names, every get is the intersection computed page
//! by page, ranges that are not SVM memory are refused, and a freed range
//! loses its attributes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use svmap_core::linux::MmConfig;
use svmap_svm::attr::{raw, Access, Flags, GRANULARITY_DEFAULT, GRANULARITY_MAX};
use svmap_svm::{Attr, AttrError, DeviceConfig, Engine, Location, ModelCpu, RangeAttrs};

const PG: u64 = 0x1000;
const DEVS: usize = 3;

/// One page's attributes in the model (only the devices that exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    preferred: Option<Location>,
    prefetch: Option<Location>,
    access: [Access; DEVS],
    flags: u32,
    gran: u8,
}

impl Default for Page {
    fn default() -> Page {
        Page {
            preferred: None,
            prefetch: None,
            access: [Access::MayMigrate; DEVS],
            flags: 0,
            gran: GRANULARITY_DEFAULT,
        }
    }
}

impl Page {
    fn apply(&mut self, a: &Attr) {
        match *a {
            Attr::PreferredLocation(l) => self.preferred = l,
            Attr::PrefetchLocation(l) => self.prefetch = l,
            Attr::Access { device, access } => self.access[device as usize] = access,
            Attr::SetFlags(f) => self.flags |= f.bits(),
            Attr::ClearFlags(f) => self.flags &= !f.bits(),
            Attr::Granularity(k) => self.gran = k,
        }
    }
}

/// The expected answer of a get, page by page.
fn expected(pages: &[Page]) -> Page {
    let mut out = pages[0];
    for p in &pages[1..] {
        if p.preferred != out.preferred {
            out.preferred = None;
        }
        if p.prefetch != out.prefetch {
            out.prefetch = None;
        }
        for d in 0..DEVS {
            if p.access[d] != out.access[d] {
                out.access[d] = Access::None;
            }
        }
        out.flags &= p.flags;
        out.gran = out.gran.min(p.gran);
    }
    out
}

fn observed(r: &RangeAttrs) -> Page {
    Page {
        preferred: r.preferred,
        prefetch: r.prefetch,
        access: [r.access[0], r.access[1], r.access[2]],
        flags: r.flags.bits(),
        gran: r.granularity,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64),
    Free(usize),
    /// Range of pages `[a, b)` relative to the lowest allocation, changes.
    Set(u64, u64, Vec<Attr>),
    Get(u64, u64),
}

fn location() -> impl Strategy<Value = Option<Location>> {
    prop_oneof![
        Just(None),
        Just(Some(Location::System)),
        (0u32..DEVS as u32).prop_map(|d| Some(Location::Device(d))),
    ]
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        location().prop_map(Attr::PreferredLocation),
        location().prop_map(Attr::PrefetchLocation),
        (0u32..DEVS as u32, 0u8..3).prop_map(|(device, a)| Attr::Access {
            device,
            access: [Access::None, Access::InPlace, Access::MayMigrate][a as usize],
        }),
        (0u32..8).prop_map(|b| Attr::SetFlags(Flags::from_bits(b).unwrap())),
        (0u32..8).prop_map(|b| Attr::ClearFlags(Flags::from_bits(b).unwrap())),
        (0u8..=GRANULARITY_MAX).prop_map(Attr::Granularity),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u64..8).prop_map(Op::Alloc),
        1 => (0usize..8).prop_map(Op::Free),
        5 => (0u64..40, 1u64..12, proptest::collection::vec(attr(), 0..4))
            .prop_map(|(a, n, c)| Op::Set(a, a + n, c)),
        4 => (0u64..40, 1u64..12).prop_map(|(a, n)| Op::Get(a, a + n)),
    ]
}

fn engine() -> (Engine, u64) {
    let mut eng = Engine::new(MmConfig::default(), ModelCpu);
    for (i, bits) in [40u32, 44, 47].into_iter().enumerate() {
        eng.add_device(DeviceConfig::new(format!("d{i}"), bits))
            .unwrap();
    }
    // One window, so that allocations sit close together and gaps between
    // them appear once some are freed.
    let w = eng.reserve_window(&["d0", "d1", "d2"]).unwrap();
    (eng, w.reserved[0].0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn attributes_follow_a_per_page_model(ops in proptest::collection::vec(op(), 1..60)) {
        let (mut eng, base) = engine();
        let mut live: Vec<(u64, u64)> = Vec::new();
        // Pages of live SVM ranges -> attributes.
        let mut model: BTreeMap<u64, Page> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Alloc(n) => {
                    if let Ok(a) = eng.svm_alloc(n * PG, None, &["d0", "d1"], false) {
                        for p in 0..n {
                            // A fresh range reads default on every page.
                            prop_assert!(model.insert(a + p * PG, Page::default()).is_none());
                        }
                        live.push((a, a + n * PG));
                        let got = eng.get_attr(a, n * PG).unwrap();
                        prop_assert_eq!(observed(&got), Page::default());
                    }
                }
                Op::Free(i) => {
                    if !live.is_empty() {
                        let (s, e) = live.remove(i % live.len());
                        // Both free paths drop the attributes.
                        if i % 2 == 0 {
                            eng.svm_free(s).unwrap();
                        } else {
                            eng.svm_free_many(&[s]).unwrap();
                        }
                        for p in (s..e).step_by(PG as usize) {
                            model.remove(&p);
                        }
                    }
                }
                Op::Set(a, b, changes) => {
                    let (s, e) = (base + a * PG, base + b * PG);
                    let covered = (s..e).step_by(PG as usize).all(|p| model.contains_key(&p));
                    let r = eng.set_attr(s, e - s, &changes);
                    if covered {
                        prop_assert_eq!(r, Ok(()));
                        for p in (s..e).step_by(PG as usize) {
                            let pg = model.get_mut(&p).unwrap();
                            for c in &changes {
                                pg.apply(c);
                            }
                        }
                    } else {
                        let first = (s..e).step_by(PG as usize).find(|p| !model.contains_key(p)).unwrap();
                        prop_assert_eq!(r, Err(AttrError::NotSvm { addr: first }));
                    }
                }
                Op::Get(a, b) => {
                    let (s, e) = (base + a * PG, base + b * PG);
                    let pages: Option<Vec<Page>> =
                        (s..e).step_by(PG as usize).map(|p| model.get(&p).copied()).collect();
                    match (pages, eng.get_attr(s, e - s)) {
                        (Some(pages), Ok(got)) => prop_assert_eq!(observed(&got), expected(&pages)),
                        (None, Err(AttrError::NotSvm { .. })) => {}
                        (p, r) => prop_assert!(false, "model {:?} engine {:?}", p.is_some(), r),
                    }
                }
            }
            // Every page agrees with the model, alone.
            for (&p, pg) in &model {
                prop_assert_eq!(observed(&eng.attrs().at(p)), *pg);
            }
            // Nothing is stored outside live SVM pages.
            for (s, e, _) in eng.attrs().iter() {
                for p in (s..e).step_by(PG as usize) {
                    prop_assert!(model.contains_key(&p), "attributes left at {:#x}", p);
                }
            }
        }
    }
}

#[test]
fn set_on_part_splits_and_merges_back() {
    let (mut eng, _) = engine();
    let a = eng.svm_alloc(8 * PG, None, &["d0"], false).unwrap();
    let pref = Attr::PreferredLocation(Some(Location::Device(0)));
    eng.set_attr(a + 2 * PG, 3 * PG, &[pref]).unwrap();
    let pieces = eng.attrs().pieces(a, a + 8 * PG);
    assert_eq!(
        pieces.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
        vec![
            (a, a + 2 * PG),
            (a + 2 * PG, a + 5 * PG),
            (a + 5 * PG, a + 8 * PG)
        ]
    );
    assert_eq!(pieces[1].2.preferred, Some(Location::Device(0)));
    assert_eq!(pieces[0].2.preferred, None);
    // The whole range differs: undefined; the part alone: the device.
    assert_eq!(eng.get_attr(a, 8 * PG).unwrap().preferred, None);
    assert_eq!(
        eng.get_attr(a + 3 * PG, PG).unwrap().preferred,
        Some(Location::Device(0))
    );
    // Setting the rest to the same value leaves one stored range.
    eng.set_attr(a, 8 * PG, &[pref]).unwrap();
    assert_eq!(eng.attrs().len(), 1);
    // Granularity reads as the minimum, flags as those set everywhere.
    eng.set_attr(
        a,
        PG,
        &[Attr::Granularity(0), Attr::SetFlags(Flags::READ_MOSTLY)],
    )
    .unwrap();
    eng.set_attr(a, 8 * PG, &[Attr::SetFlags(Flags::ALWAYS_MAPPED)])
        .unwrap();
    let g = eng.get_attr(a, 8 * PG).unwrap();
    assert_eq!(g.granularity, 0);
    assert_eq!(g.flags, Flags::ALWAYS_MAPPED);
    assert_eq!(g.granule_bytes(), PG);
}

#[test]
fn typed_errors_and_nothing_changes() {
    let (mut eng, _) = engine();
    let a = eng.svm_alloc(4 * PG, None, &["d0"], false).unwrap();
    assert_eq!(
        Attr::from_raw(99, 0),
        Err(AttrError::UnknownType { ty: 99 })
    );
    assert_eq!(
        Attr::from_raw(raw::GRANULARITY, 10),
        Err(AttrError::BadValue {
            ty: raw::GRANULARITY,
            value: 10
        })
    );
    assert_eq!(
        Attr::from_raw(raw::SET_FLAGS, 8),
        Err(AttrError::BadValue {
            ty: raw::SET_FLAGS,
            value: 8
        })
    );
    assert_eq!(
        Attr::from_raw(raw::ACCESS, 3),
        Err(AttrError::BadValue {
            ty: raw::ACCESS,
            value: 3
        })
    );
    assert!(Attr::from_raw(raw::PREFERRED_LOCATION, 65).is_err());
    // A device index past the space's devices: refused, and the valid
    // change before it in the same list is not applied either.
    let r = eng.set_attr(
        a,
        PG,
        &[
            Attr::Granularity(3),
            Attr::PreferredLocation(Some(Location::Device(3))),
        ],
    );
    assert_eq!(r, Err(AttrError::UnknownDevice { device: 3 }));
    assert_eq!(
        eng.get_attr(a, PG).unwrap().granularity,
        GRANULARITY_DEFAULT
    );
    assert_eq!(
        eng.set_attr(a + 1, PG, &[]),
        Err(AttrError::BadRange {
            start: a + 1,
            len: PG
        })
    );
    assert!(matches!(
        eng.get_attr(a, 0),
        Err(AttrError::BadRange { .. })
    ));
    assert_eq!(
        eng.get_attr(a, 5 * PG),
        Err(AttrError::NotSvm { addr: a + 4 * PG })
    );
    // Raw round trip of every change kind, and the raw query.
    for c in [
        Attr::PreferredLocation(Some(Location::Device(2))),
        Attr::PrefetchLocation(Some(Location::System)),
        Attr::PrefetchLocation(None),
        Attr::Access {
            device: 1,
            access: Access::InPlace,
        },
        Attr::SetFlags(Flags::DEVICE_READ_ONLY),
        Attr::ClearFlags(Flags::ALL),
        Attr::Granularity(4),
    ] {
        let (t, v) = c.to_raw();
        assert_eq!(Attr::from_raw(t, v), Ok(c));
    }
    eng.set_attr(
        a,
        4 * PG,
        &[Attr::Access {
            device: 1,
            access: Access::InPlace,
        }],
    )
    .unwrap();
    let g = eng.get_attr(a, 4 * PG).unwrap();
    assert_eq!(
        g.query(raw::ACCESS, 1 << 32, 3),
        Ok(1 << 32 | raw::ACCESS_IN_PLACE)
    );
    assert_eq!(
        g.query(raw::ACCESS, 5 << 32, 3),
        Err(AttrError::UnknownDevice { device: 5 })
    );
    assert_eq!(g.query(77, 0, 3), Err(AttrError::UnknownType { ty: 77 }));
}

#[test]
fn a_freed_range_loses_its_attributes() {
    let (mut eng, _) = engine();
    let a = eng.svm_alloc(4 * PG, None, &["d0"], false).unwrap();
    eng.set_attr(a, 4 * PG, &[Attr::Granularity(2)]).unwrap();
    eng.svm_free(a).unwrap();
    assert!(eng.attrs().is_empty());
    assert_eq!(eng.get_attr(a, PG), Err(AttrError::NotSvm { addr: a }));
    let b = eng.svm_alloc(4 * PG, None, &["d0"], false).unwrap();
    assert_eq!(b, a, "the window hands the same range out again");
    assert_eq!(eng.get_attr(b, 4 * PG).unwrap(), RangeAttrs::default());
}

#[test]
fn removing_a_device_drops_its_attributes_and_renumbers_the_others() {
    let (mut eng, _) = engine();
    let a = eng
        .svm_alloc(4 * PG, None, &["d0", "d1", "d2"], false)
        .unwrap();
    let acc = |device: u32, access| Attr::Access { device, access };
    eng.set_attr(
        a,
        PG,
        &[
            Attr::PreferredLocation(Some(Location::Device(1))),
            acc(1, Access::None),
            acc(2, Access::InPlace),
        ],
    )
    .unwrap();
    eng.set_attr(
        a + PG,
        PG,
        &[
            Attr::PreferredLocation(Some(Location::Device(0))),
            Attr::PrefetchLocation(Some(Location::Device(2))),
        ],
    )
    .unwrap();
    eng.set_attr(a + 2 * PG, PG, &[acc(1, Access::None)])
        .unwrap();
    eng.remove_device("d1").unwrap();
    // Page 0: the preference for d1 is gone; old d2's access is d1's now.
    let p0 = eng.get_attr(a, PG).unwrap();
    assert_eq!(p0.preferred, None);
    assert_eq!(
        p0.access[..3],
        [Access::MayMigrate, Access::InPlace, Access::MayMigrate]
    );
    // Page 1: old d2 is d1.
    let p1 = eng.get_attr(a + PG, PG).unwrap();
    assert_eq!(p1.preferred, Some(Location::Device(0)));
    assert_eq!(p1.prefetch, Some(Location::Device(1)));
    // Page 2 only named d1: it is default again, merged with page 3.
    assert_eq!(
        eng.get_attr(a + 2 * PG, 2 * PG).unwrap(),
        RangeAttrs::default()
    );
    let stored: Vec<(u64, u64)> = eng.attrs().iter().map(|(s, e, _)| (s, e)).collect();
    assert_eq!(stored, vec![(a, a + PG), (a + PG, a + 2 * PG)]);
    // Two devices are left: index 2 names none.
    assert_eq!(
        eng.set_attr(a, PG, &[acc(2, Access::None)]),
        Err(AttrError::UnknownDevice { device: 2 })
    );
}
