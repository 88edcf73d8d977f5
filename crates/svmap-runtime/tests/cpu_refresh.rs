//! Keeping the engine's CPU space in step with `/proc/self/maps`: a
//! mapping made behind the engine's back where its next allocation would
//! go makes the placement fail with `EEXIST`; the refreshing allocation
//! reads the process's mappings once, lands elsewhere and never maps over
//! the foreign mapping; once that mapping is gone a refresh removes it.

use svmap_linux::maps::{read_view, Target};
use svmap_linux::reserve::Reservation;
use svmap_runtime::{refresh_from_self, seed_from_self, svm_alloc, with_refresh, LinuxCpu};
use svmap_svm::{BackendError, DeviceConfig, Engine, EngineError, ModelDevice};

type Real = Engine<LinuxCpu, ModelDevice>;

const LEN: u64 = 0x4_0000;

/// The mapping of this process at `addr`, as `(start, end, shared,
/// readable)`.
fn mapping_at(addr: u64) -> Option<(u64, u64, bool, bool)> {
    let v = read_view(Target::SelfProcess).unwrap();
    v.entry_at(addr)
        .map(|e| (e.start, e.end, e.perms.shared, e.perms.read))
}

#[test]
fn a_collision_refreshes_once_and_lands_elsewhere() {
    let mut e: Real = Engine::new(Default::default(), LinuxCpu::new(false));
    seed_from_self(&mut e).unwrap();
    e.add_device(DeviceConfig::new("gpu40", 40)).unwrap();
    // The engine's first choice, found by its own search.
    let a = e.svm_alloc(LEN, None, &["gpu40"], true).unwrap();
    e.svm_free(a).unwrap();
    assert!(e.mm().space().vma_at(a).is_none());
    // Someone else maps exactly there (MAP_FIXED_NOREPLACE, PROT_NONE).
    let foreign = Reservation::at(a, LEN).unwrap();
    assert_eq!(mapping_at(a), Some((a, a + LEN, false, false)));
    // A plain allocation picks the same range and is refused by the CPU
    // backend: nothing is replaced.
    match e.svm_alloc(LEN, None, &["gpu40"], true) {
        Err(EngineError::Cpu {
            op: "map",
            error: BackendError::NotOwned { start, end },
            ..
        }) => assert_eq!((start, end), (a, a + LEN)),
        other => panic!("allocation over a foreign mapping: {other:?}"),
    }
    assert_eq!(mapping_at(a), Some((a, a + LEN, false, false)));
    let owned = e.owned_cpu_ranges();
    // The refreshing allocation lands elsewhere.
    let b = svm_alloc(&mut e, LEN, None, &["gpu40"], true).unwrap();
    assert!(b + LEN <= a || a + LEN <= b, "{b:#x} over {a:#x}");
    assert!(b + LEN <= 1 << 40);
    assert_eq!(mapping_at(a), Some((a, a + LEN, false, false)));
    let (bs, be, shared, _) = mapping_at(b).expect("the new range is mapped");
    assert!(shared && bs <= b && b + LEN <= be);
    // The model holds the foreign mapping now; svmap's own ranges only
    // grew by the new one.
    let v = e.mm().space().vma_at(a).expect("entered");
    assert!(v.start <= a && a + LEN <= v.end);
    let mut want = owned.clone();
    want.push((b, b + LEN));
    want.sort_unstable();
    assert_eq!(e.owned_cpu_ranges(), want);
    // The foreign mapping goes away: a refresh removes it, svmap's ranges
    // stay, and nothing conflicts.
    drop(foreign);
    let r = refresh_from_self(&mut e).unwrap();
    assert!(
        r.removed.iter().any(|&(s, x)| s <= a && a + LEN <= x),
        "{r:?}"
    );
    assert!(r.conflicts.is_empty(), "{r:?}");
    assert!(e.mm().space().vma_at(a).is_none());
    assert_eq!(e.owned_cpu_ranges(), want);
    assert!(e.alloc_at(b).is_some());
    e.svm_free(b).unwrap();
}

#[test]
fn with_refresh_tries_at_most_twice() {
    let mut e: Real = Engine::new(Default::default(), LinuxCpu::new(false));
    seed_from_self(&mut e).unwrap();
    let refused = || EngineError::Cpu {
        op: "map",
        start: 0x1000,
        end: 0x2000,
        error: BackendError::NotOwned {
            start: 0x1000,
            end: 0x2000,
        },
    };
    let mut calls = 0;
    let r: Result<(), _> = with_refresh(&mut e, |_| {
        calls += 1;
        Err(refused())
    });
    assert_eq!((calls, r), (2, Err(refused())));
    // Other errors are not retried.
    let mut calls = 0;
    let other = EngineError::Cpu {
        op: "protect",
        start: 0x1000,
        end: 0x2000,
        error: BackendError::NotOwned {
            start: 0x1000,
            end: 0x2000,
        },
    };
    let r: Result<(), _> = with_refresh(&mut e, |_| {
        calls += 1;
        Err(other.clone())
    });
    assert_eq!((calls, r), (1, Err(other)));
    // A success is not retried either.
    let mut calls = 0;
    assert_eq!(
        with_refresh(&mut e, |_| {
            calls += 1;
            Ok(7)
        }),
        Ok(7)
    );
    assert_eq!(calls, 1);
}
