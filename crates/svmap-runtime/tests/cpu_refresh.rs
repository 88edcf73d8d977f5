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

/// One test at a time: each places ranges at the top of the space below
/// 2^40, and one reserves all of it as a window.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mapping of this process at `addr`, as `(start, end, shared,
/// readable)`.
fn mapping_at(addr: u64) -> Option<(u64, u64, bool, bool)> {
    let v = read_view(Target::SelfProcess).unwrap();
    v.entry_at(addr)
        .map(|e| (e.start, e.end, e.perms.shared, e.perms.read))
}

#[test]
fn a_collision_refreshes_once_and_lands_elsewhere() {
    let _one = serial();
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
    let _one = serial();
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

/// A mapping made with `MAP_FIXED` into a reserved window behind svmap's
/// back, reaching out of it: a refresh takes the part it covers out of
/// the window, so no allocation lands on it, and a guarded backend never
/// changes its contents or protection (not when ranges are carved next to
/// it, nor when they are given back to the window).
#[test]
fn a_map_fixed_into_a_window_is_held_out_of_it() {
    let _one = serial();
    const P: u64 = 0x1000;
    let top: u64 = 1 << 40;
    let mut e: Real = Engine::new(Default::default(), LinuxCpu::new(true));
    seed_from_self(&mut e).unwrap();
    e.add_device(DeviceConfig::new("gpu40", 40)).unwrap();
    let w = e.reserve_window(&["gpu40"]).unwrap();
    assert_eq!(w.reserved.last().map(|p| p.1), Some(top));
    // Four pages of the window's top and four free pages above it.
    let (fs, fe) = (top - 4 * P, top + 4 * P);
    assert!(read_view(Target::SelfProcess)
        .unwrap()
        .entries
        .iter()
        .all(|m| m.end <= top || fe <= m.start));
    let mut mem = raw::Fixed::map(fs, fe);
    for (i, x) in mem.words().iter_mut().enumerate() {
        *x = i as u64 ^ 0x5a5a;
    }
    let r = refresh_from_self(&mut e).unwrap();
    assert!(
        r.conflicts
            .iter()
            .any(|c| matches!(c, svmap_svm::refresh::RefreshConflict::Overlaps { .. })),
        "{r:?}"
    );
    let w = &e.windows()[0];
    assert!(
        w.reserved.iter().all(|&(s, x)| x <= fs || top <= s),
        "{:x?}",
        w.reserved
    );
    assert!(e.mm().space().vma_at(fs).is_some());
    // Allocations from the top of the window never land on it; freeing
    // them gives them back to the window, next to it.
    let mut got = Vec::new();
    for _ in 0..4 {
        let a = svm_alloc(&mut e, LEN, None, &["gpu40"], true).unwrap();
        assert!(a + LEN <= fs || fe <= a, "{a:#x} over [{fs:#x}, {fe:#x})");
        got.push(a);
    }
    for a in got {
        e.svm_free(a).unwrap();
    }
    e.check_invariants();
    let m = mapping_at(fs).expect("still mapped");
    assert_eq!(m, (fs, fe, false, true));
    assert!(mem
        .words()
        .iter()
        .enumerate()
        .all(|(i, &x)| x == i as u64 ^ 0x5a5a));
}

/// A read-write anonymous `MAP_FIXED` mapping, made over whatever is
/// there (svmap's window included), unmapped on drop.
#[allow(unsafe_code)]
mod raw {
    pub struct Fixed(u64, u64);

    impl Fixed {
        /// Maps `[start, end)` (page aligned) with `MAP_FIXED`.
        pub fn map(start: u64, end: u64) -> Fixed {
            // SAFETY: the caller picks a range with nothing of this
            // process's own memory in use there (the top of an empty
            // window reservation, free address space); the mapping is
            // this value's until it drops.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    (end - start) as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            assert_eq!(p as u64, start, "mmap failed");
            Fixed(start, end)
        }

        /// Its memory as words.
        pub fn words(&mut self) -> &mut [u64] {
            // SAFETY: `[self.0, self.1)` is this value's read-write mapping,
            // borrowed mutably with it.
            unsafe {
                std::slice::from_raw_parts_mut(self.0 as *mut u64, ((self.1 - self.0) / 8) as usize)
            }
        }
    }

    impl Drop for Fixed {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `map`; nothing refers to it once
            // this value is gone.
            unsafe { libc::munmap(self.0 as *mut libc::c_void, (self.1 - self.0) as usize) };
        }
    }
}
