//! The engine and its backends: recording backends check the order of the
//! calls under random operations (an address is never mapped again on the
//! CPU or on a device before every device that held it has invalidated it
//! and acknowledged; no device is handed an address at or above its limit;
//! a device unmaps only what it invalidated), with devices that refuse to
//! acknowledge now and then; and the engine with model backends answers
//! exactly as a bare `SvmSpace` does.

use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use svmap_core::linux::{Fixed, MmConfig, MmapRequest};
use svmap_svm::{
    BackendError, CpuBackend, CpuPolicy, DeviceBackend, DeviceConfig, Engine, EngineError, Prot,
    Release, SvmSpace,
};

const PG: u64 = 0x1000;
const TS: u64 = 0x100000;

fn cfg() -> MmConfig {
    MmConfig {
        task_size: TS,
        mmap_min_addr: 0x10000,
        stack_guard_gap: 0x3000,
        ..MmConfig::default()
    }
}

/// (name, va_bits, page size)
const DEVS: [(&str, u32, u64); 3] = [("d0", 19, 0x1000), ("d1", 20, 0x2000), ("d2", 18, 0x1000)];

/// What the recording backends saw, shared by all of them.
#[derive(Default, Debug)]
struct World {
    /// SVM ranges the CPU backend has mapped.
    cpu_mapped: Vec<(u64, u64)>,
    /// Per device: SVM ranges mapped, and ranges invalidated since.
    dev_mapped: Vec<Vec<(u64, u64)>>,
    dev_invalidated: Vec<Vec<(u64, u64)>>,
    /// Per device: its limit.
    limits: Vec<u64>,
    /// Per device: refuse the next invalidation.
    nack: Vec<bool>,
    /// Every violation of the contract, in words.
    violations: Vec<String>,
    /// Backend calls seen.
    calls: u64,
    /// Per device (missing: false): refuses every invalidation from now on.
    dead: Vec<bool>,
    /// Per device (missing: false): refuse the next unmap.
    fail_unmap: Vec<bool>,
    /// The CPU backend refuses the next unmap.
    cpu_fail_unmap: bool,
    /// Per device (missing: none): the ranges it holds by its own means.
    own: Vec<Vec<(u64, u64)>>,
    /// Device-only regions whose CPU side the CPU backend set up and has
    /// not given back.
    cpu_regions: Vec<(u64, u64)>,
    /// The CPU backend refuses the next `release_region`.
    cpu_fail_release_region: bool,
    /// Every device call: (device, call, start).
    log: Vec<(usize, &'static str, u64)>,
}

fn flag(v: &[bool], d: usize) -> bool {
    v.get(d).copied().unwrap_or(false)
}

fn overlaps(v: &[(u64, u64)], s: u64, e: u64) -> bool {
    v.iter().any(|&(a, b)| a < e && s < b)
}

/// Removes `[s, e)` from a list of ranges (splitting).
fn cut(v: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    let mut out = Vec::new();
    for &(a, b) in v.iter() {
        if b <= s || e <= a {
            out.push((a, b));
            continue;
        }
        if a < s {
            out.push((a, s));
        }
        if e < b {
            out.push((e, b));
        }
    }
    *v = out;
}

fn covered(v: &[(u64, u64)], s: u64, e: u64) -> bool {
    let mut at = s;
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    for (a, b) in sorted {
        if a <= at && b > at {
            at = b;
        }
    }
    at >= e
}

#[derive(Clone)]
struct RecCpu(Rc<RefCell<World>>);

impl CpuBackend for RecCpu {
    fn reserve(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if overlaps(&w.cpu_mapped, s, e) {
            w.violations
                .push(format!("reserve over a mapped SVM range {s:#x}"));
        }
        Ok(())
    }
    fn release(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        self.0.borrow_mut().calls += 1;
        Ok(())
    }
    fn map(&mut self, s: u64, e: u64, _: bool) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if overlaps(&w.cpu_mapped, s, e) {
            w.violations
                .push(format!("CPU map [{s:#x}, {e:#x}) over a live range"));
        }
        for d in 0..w.dev_mapped.len() {
            if overlaps(&w.dev_mapped[d], s, e) {
                w.violations.push(format!(
                    "CPU map [{s:#x}, {e:#x}) while device {d} still maps part of it"
                ));
            }
        }
        w.cpu_mapped.push((s, e));
        Ok(())
    }
    fn protect(&mut self, s: u64, e: u64, _: Prot) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if !covered(&w.cpu_mapped, s, e) {
            w.violations.push(format!("CPU protect of unmapped {s:#x}"));
        }
        Ok(())
    }
    fn unmap(&mut self, s: u64, e: u64, _: Release) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if std::mem::take(&mut w.cpu_fail_unmap) {
            return Err(BackendError::Sys {
                call: "munmap",
                errno: 12,
            });
        }
        for d in 0..w.dev_mapped.len() {
            if overlaps(&w.dev_mapped[d], s, e) {
                w.violations.push(format!(
                    "CPU unmap [{s:#x}, {e:#x}) before device {d} unmapped it"
                ));
            }
        }
        cut(&mut w.cpu_mapped, s, e);
        Ok(())
    }
    fn map_device_only(&mut self, s: u64, e: u64, _: CpuPolicy) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if overlaps(&w.cpu_mapped, s, e) {
            w.violations.push(format!("device-only over SVM at {s:#x}"));
        }
        w.cpu_regions.push((s, e));
        Ok(())
    }
    fn release_region(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        if std::mem::take(&mut w.cpu_fail_release_region) {
            return Err(BackendError::Sys {
                call: "munmap",
                errno: 22,
            });
        }
        match w.cpu_regions.iter().position(|&r| r == (s, e)) {
            Some(i) => {
                w.cpu_regions.remove(i);
            }
            None => w
                .violations
                .push(format!("release_region [{s:#x}, {e:#x}) never set up")),
        }
        Ok(())
    }
    fn forget(&mut self, s: u64, e: u64) {
        cut(&mut self.0.borrow_mut().cpu_mapped, s, e);
    }
}

struct RecDev(Rc<RefCell<World>>, usize);

impl RecDev {
    fn check_limit(w: &mut World, d: usize, s: u64, e: u64, op: &str) {
        if e > w.limits[d] || s >= w.limits[d] {
            w.violations.push(format!(
                "device {d} {op} [{s:#x}, {e:#x}) at or above its limit {:#x}",
                w.limits[d]
            ));
        }
    }
}

impl DeviceBackend for RecDev {
    fn map(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let d = self.1;
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        w.log.push((d, "map", s));
        Self::check_limit(&mut w, d, s, e, "map");
        if overlaps(&w.dev_mapped[d], s, e) {
            w.violations.push(format!(
                "device {d} map [{s:#x}, {e:#x}) reused before unmap"
            ));
        }
        w.dev_mapped[d].push((s, e));
        cut(&mut w.dev_invalidated[d], s, e);
        Ok(())
    }
    fn invalidate(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let d = self.1;
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        w.log.push((d, "invalidate", s));
        Self::check_limit(&mut w, d, s, e, "invalidate");
        if std::mem::take(&mut w.nack[d]) {
            return Err(BackendError::Timeout { waited_ms: 0 });
        }
        if flag(&w.dead, d) {
            return Err(BackendError::Gone {
                detail: "killed".into(),
            });
        }
        w.dev_invalidated[d].push((s, e));
        Ok(())
    }
    fn protect(&mut self, s: u64, e: u64, _: Prot) -> Result<(), BackendError> {
        let d = self.1;
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        w.log.push((d, "protect", s));
        Self::check_limit(&mut w, d, s, e, "protect");
        if !covered(&w.dev_invalidated[d], s, e) {
            w.violations
                .push(format!("device {d} protect of {s:#x} without invalidation"));
        }
        Ok(())
    }
    fn unmap(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let d = self.1;
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        w.log.push((d, "unmap", s));
        Self::check_limit(&mut w, d, s, e, "unmap");
        if !covered(&w.dev_invalidated[d], s, e) {
            w.violations
                .push(format!("device {d} unmap of {s:#x} without invalidation"));
        }
        if w.fail_unmap.get(d) == Some(&true) {
            w.fail_unmap[d] = false;
            return Err(BackendError::Other("unmap refused".into()));
        }
        cut(&mut w.dev_mapped[d], s, e);
        Ok(())
    }
    fn map_region(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let d = self.1;
        let mut w = self.0.borrow_mut();
        w.calls += 1;
        Self::check_limit(&mut w, d, s, e, "map_region");
        Ok(())
    }
    fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
        Ok(self.0.borrow().own.get(self.1).cloned().unwrap_or_default())
    }
}

/// Checks the state rule of a free that fails partway: no device and no
/// CPU mapping holds a range the space considers free (every range a
/// recording backend still maps lies in SVM pieces of that device).
fn assert_consistent<C: CpuBackend, D: DeviceBackend>(
    eng: &Engine<C, D>,
    world: &World,
    names: &[usize],
) {
    let pieces: Vec<(u64, u64, Vec<usize>)> = eng
        .svm_pieces_in(0, u64::MAX)
        .map(|(s, e, ds)| (s, e, ds.to_vec()))
        .collect();
    for &(s, e) in &world.cpu_mapped {
        let held: Vec<(u64, u64)> = pieces.iter().map(|&(a, b, _)| (a, b)).collect();
        assert!(
            covered(&held, s, e),
            "CPU maps [{s:#x}, {e:#x}) outside SVM ranges"
        );
    }
    // `names[i]`: the world index of the engine's device i.
    for (i, &d) in names.iter().enumerate() {
        let held: Vec<(u64, u64)> = pieces
            .iter()
            .filter(|p| p.2.contains(&i))
            .map(|&(a, b, _)| (a, b))
            .collect();
        for &(s, e) in &world.dev_mapped[d] {
            assert!(
                covered(&held, s, e),
                "device {d} maps [{s:#x}, {e:#x}) that the space does not give it"
            );
        }
    }
}

fn rec_engine(n: usize) -> (Engine<RecCpu, RecDev>, Rc<RefCell<World>>) {
    let world = Rc::new(RefCell::new(World::default()));
    let mut eng: Engine<RecCpu, RecDev> = Engine::new(cfg(), RecCpu(world.clone()));
    for i in 0..n {
        {
            let mut w = world.borrow_mut();
            w.dev_mapped.push(Vec::new());
            w.dev_invalidated.push(Vec::new());
            w.limits.push(1u64 << device(i).va_bits);
            w.nack.push(false);
            w.dead.push(false);
            w.fail_unmap.push(false);
        }
        eng.add_device_with(device(i), RecDev(world.clone(), i))
            .unwrap();
    }
    (eng, world)
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(u64, u8, bool),
    Free(usize),
    Protect(usize, u8),
    DeviceMap(usize, u64, u64, bool),
    Window(u8),
    Unmap(u64, u64),
    MmapFixed(u64, u64),
    Nack(usize),
    FreeMany(Vec<usize>),
    FailUnmap(usize),
    CpuFailUnmap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..0x9000, 0u8..8, any::<bool>()).prop_map(|(l, m, t)| Op::Alloc(l, m, t)),
        4 => (0usize..16).prop_map(Op::Free),
        2 => (0usize..16, 0u8..3).prop_map(|(i, p)| Op::Protect(i, p)),
        1 => (0usize..3, 16u64..300, 1u64..6, any::<bool>()).prop_map(|(d, s, n, f)| Op::DeviceMap(d, s * 0x2000, (s + n) * 0x2000, f)),
        1 => (1u8..8).prop_map(Op::Window),
        1 => (16u64..256, 1u64..12).prop_map(|(s, n)| Op::Unmap(s * PG, n * PG)),
        1 => (16u64..256, 1u64..6).prop_map(|(s, n)| Op::MmapFixed(s * PG, n * PG)),
        2 => (0usize..3).prop_map(Op::Nack),
        2 => proptest::collection::vec(0usize..16, 1..5).prop_map(Op::FreeMany),
        1 => (0usize..3).prop_map(Op::FailUnmap),
        1 => Just(Op::CpuFailUnmap),
    ]
}

fn names(mask: u8) -> Vec<&'static str> {
    (0..3)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| DEVS[i].0)
        .collect()
}

fn device(i: usize) -> DeviceConfig {
    DeviceConfig {
        page_size: DEVS[i].2,
        ..DeviceConfig::new(DEVS[i].0, DEVS[i].1)
    }
}

fn prot(p: u8) -> Prot {
    [Prot::None, Prot::Read, Prot::ReadWrite][usize::from(p)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Recording backends under random operations: no violation of the
    /// contract; a refused acknowledgement keeps the range allocated; the
    /// space's invariants hold after every step.
    #[test]
    fn backends_see_a_safe_order(ops in proptest::collection::vec(op(), 1..120)) {
        let world = Rc::new(RefCell::new(World::default()));
        let mut eng: Engine<RecCpu, RecDev> = Engine::new(cfg(), RecCpu(world.clone()));
        for i in 0..3 {
            {
                let mut w = world.borrow_mut();
                w.dev_mapped.push(Vec::new());
                w.dev_invalidated.push(Vec::new());
                w.limits.push(1u64 << device(i).va_bits);
                w.nack.push(false);
                w.fail_unmap.push(false);
            }
            eng.add_device_with(device(i), RecDev(world.clone(), i)).unwrap();
        }
        let mut live: Vec<u64> = Vec::new();
        for op in &ops {
            match *op {
                Op::Alloc(len, mask, top) => {
                    if let Ok(a) = eng.svm_alloc(len, None, &names(mask), top) {
                        live.push(a);
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let a = live[i % live.len()];
                    let before = eng.alloc_at(a).map(|v| v.id);
                    match eng.svm_free(a) {
                        Ok(()) => { live.retain(|&x| x != a); }
                        Err(EngineError::NotAcknowledged { device, .. })
                        | Err(EngineError::Device { device, op: "unmap", .. }) => {
                            prop_assert!(DEVS.iter().any(|d| d.0 == device));
                            // Still allocated, the same range.
                            prop_assert_eq!(eng.alloc_at(a).map(|v| v.id), before);
                        }
                        Err(EngineError::Cpu { op: "unmap", .. }) => {
                            prop_assert_eq!(eng.alloc_at(a).map(|v| v.id), before);
                        }
                        Err(e) => prop_assert!(false, "free {a:#x}: {e}"),
                    }
                }
                Op::FreeMany(ref idx) if !live.is_empty() => {
                    let mut addrs: Vec<u64> = idx.iter().map(|&i| live[i % live.len()]).collect();
                    addrs.sort_unstable();
                    addrs.dedup();
                    let before: Vec<Option<u64>> =
                        addrs.iter().map(|&a| eng.alloc_at(a).map(|v| v.id)).collect();
                    let r = eng.svm_free_many(&addrs);
                    for (k, &a) in addrs.iter().enumerate() {
                        // Freed (no piece left), or kept whole: still the
                        // allocation at its address. (An older allocation
                        // at the same start shows up once the later one
                        // is freed.)
                        let id = before[k].expect("live ranges are allocated");
                        let gone = eng.alloc_pieces(id).next().is_none();
                        let kept = eng.alloc_at(a).map(|v| v.id) == Some(id);
                        prop_assert!(gone != kept, "{a:#x}: gone {gone}, kept {kept}");
                        if r.is_ok() {
                            prop_assert!(gone, "batch ok but {a:#x} kept");
                        }
                    }
                    match r {
                        Ok(())
                        | Err(EngineError::NotAcknowledged { .. })
                        | Err(EngineError::Device { op: "unmap", .. })
                        | Err(EngineError::Cpu { op: "unmap", .. }) => {}
                        Err(e) => prop_assert!(false, "free_many {addrs:#x?}: {e}"),
                    }
                    live.retain(|&x| eng.alloc_at(x).is_some());
                }
                Op::FreeMany(_) => {}
                Op::FailUnmap(d) => world.borrow_mut().fail_unmap[d] = true,
                Op::CpuFailUnmap => world.borrow_mut().cpu_fail_unmap = true,
                Op::Free(_) => {}
                Op::Protect(i, p) if !live.is_empty() => {
                    let a = live[i % live.len()];
                    if let Some(v) = eng.alloc_at(a) {
                        let len = v.end - v.start;
                        let _ = eng.protect(a, len, prot(p));
                    }
                }
                Op::Protect(..) => {}
                Op::DeviceMap(d, s, e, fault) => {
                    let pol = if fault { CpuPolicy::Fault } else { CpuPolicy::DummyPage };
                    let _ = eng.device_map(DEVS[d].0, s, e, pol);
                }
                Op::Window(mask) => {
                    let _ = eng.reserve_window(&names(mask));
                }
                Op::Unmap(s, l) => {
                    let _ = eng.cpu_unmap(s, l);
                }
                Op::MmapFixed(s, l) => {
                    let req = MmapRequest { length: l, hint: s, fixed: Fixed::Fixed, growsdown: false, map32bit: false };
                    let _ = eng.cpu_mmap(&req);
                }
                Op::Nack(d) => world.borrow_mut().nack[d] = true,
            }
            // A range that lost its first page to an unmap cannot be freed
            // by its old start; forget such ranges.
            live.retain(|&a| eng.alloc_at(a).is_some());
            eng.check_invariants();
            let w = world.borrow();
            prop_assert!(w.violations.is_empty(), "{:?}", w.violations);
            assert_consistent(&eng, &w, &[0, 1, 2]);
        }
    }

    /// With model backends the engine answers every operation exactly as a
    /// bare `SvmSpace` does.
    #[test]
    fn model_engine_agrees_with_the_space(ops in proptest::collection::vec(op(), 1..120)) {
        let mut eng: Engine = Engine::new(cfg(), svmap_svm::ModelCpu);
        let mut sp: SvmSpace = SvmSpace::new(cfg());
        for i in 0..3 {
            prop_assert_eq!(eng.add_device(device(i)).map_err(|e| e.to_string()), sp.add_device(device(i)).map_err(|e| e.to_string()));
        }
        let mut live: Vec<u64> = Vec::new();
        for op in &ops {
            match *op {
                Op::Alloc(len, mask, top) => {
                    let a = eng.svm_alloc(len, None, &names(mask), top);
                    let b = sp.svm_alloc(len, None, &names(mask), top);
                    prop_assert_eq!(a.clone(), b.map_err(EngineError::Svm));
                    if let Ok(a) = a { live.push(a); }
                }
                Op::Free(i) if !live.is_empty() => {
                    let a = live.remove(i % live.len());
                    prop_assert_eq!(eng.svm_free(a), sp.svm_free(a).map_err(EngineError::Svm));
                }
                Op::Free(_) | Op::Nack(_) | Op::FailUnmap(_) | Op::CpuFailUnmap => {}
                Op::FreeMany(ref idx) => {
                    let mut addrs: Vec<u64> = idx
                        .iter()
                        .filter_map(|&i| live.get(i % live.len().max(1)).copied())
                        .collect();
                    addrs.sort_unstable();
                    addrs.dedup();
                    let r = eng.svm_free_many(&addrs);
                    let mut want = Ok(());
                    for &a in &addrs {
                        if let Err(e) = sp.svm_free(a) {
                            want = Err(EngineError::Svm(e));
                        }
                    }
                    prop_assert_eq!(r, want);
                    live.retain(|a| !addrs.contains(a));
                }
                Op::Protect(i, p) => {
                    let a = live.get(i % live.len().max(1)).copied().unwrap_or(0x20000);
                    prop_assert_eq!(eng.protect(a, 0x2000, prot(p)), sp.protect(a, 0x2000, prot(p)).map_err(EngineError::Svm));
                }
                Op::DeviceMap(d, s, e, fault) => {
                    let pol = if fault { CpuPolicy::Fault } else { CpuPolicy::DummyPage };
                    prop_assert_eq!(eng.device_map(DEVS[d].0, s, e, pol), sp.device_map(DEVS[d].0, s, e, pol).map_err(EngineError::Svm));
                }
                Op::Window(mask) => {
                    prop_assert_eq!(eng.reserve_window(&names(mask)), sp.reserve_window(&names(mask)).map_err(EngineError::Svm));
                }
                Op::Unmap(s, l) => {
                    prop_assert_eq!(eng.cpu_unmap(s, l), sp.cpu_unmap(s, l).map_err(EngineError::Svm));
                }
                Op::MmapFixed(s, l) => {
                    let req = MmapRequest { length: l, hint: s, fixed: Fixed::Fixed, growsdown: false, map32bit: false };
                    prop_assert_eq!(eng.cpu_mmap(&req), sp.cpu_mmap(&req).map_err(EngineError::Svm));
                }
            }
            prop_assert_eq!(eng.svm_ranges(), sp.svm_ranges());
            prop_assert_eq!(eng.windows(), sp.windows());
        }
    }
}

/// A device that never acknowledges: the free fails with its name, the
/// range stays allocated and is not handed out again; once it
/// acknowledges, the free goes through.
#[test]
fn an_unacknowledged_free_keeps_the_range() {
    let world = Rc::new(RefCell::new(World::default()));
    let mut eng: Engine<RecCpu, RecDev> = Engine::new(cfg(), RecCpu(world.clone()));
    for i in 0..2 {
        let mut w = world.borrow_mut();
        w.dev_mapped.push(Vec::new());
        w.dev_invalidated.push(Vec::new());
        w.limits.push(1u64 << device(i).va_bits);
        w.nack.push(false);
        drop(w);
        eng.add_device_with(device(i), RecDev(world.clone(), i))
            .unwrap();
    }
    let a = eng.svm_alloc(0x4000, None, &["d0", "d1"], true).unwrap();
    world.borrow_mut().nack[1] = true;
    match eng.svm_free(a) {
        Err(EngineError::NotAcknowledged { device, start, .. }) => {
            assert_eq!(device, "d1");
            assert_eq!(start, a);
        }
        r => panic!("expected NotAcknowledged, got {r:?}"),
    }
    assert!(eng.alloc_at(a).is_some());
    // The same request lands elsewhere: the range is not reused.
    let b = eng.svm_alloc(0x4000, None, &["d0", "d1"], true).unwrap();
    assert_ne!(a, b);
    assert!(b + 0x4000 <= a || b >= a + 0x4000);
    eng.svm_free(a).unwrap();
    assert!(eng.alloc_at(a).is_none());
    // Now it is free again: the top-down search finds it.
    let c = eng.svm_alloc(0x4000, None, &["d0", "d1"], true).unwrap();
    assert_eq!(c, a);
    assert!(world.borrow().violations.is_empty());
}

/// Boxed backends of different kinds drive one engine.
#[test]
fn boxed_backends_mix() {
    let world = Rc::new(RefCell::new(World::default()));
    {
        let mut w = world.borrow_mut();
        w.dev_mapped = vec![Vec::new(); 2];
        w.dev_invalidated = vec![Vec::new(); 2];
        w.limits = vec![1 << 19, 1 << 20];
        w.nack = vec![false; 2];
    }
    let mut eng: Engine<Box<dyn CpuBackend>, Box<dyn DeviceBackend>> =
        Engine::new(cfg(), Box::new(RecCpu(world.clone())));
    eng.add_device_with(device(0), Box::new(RecDev(world.clone(), 0)))
        .unwrap();
    eng.add_device_with(device(1), Box::new(svmap_svm::ModelDevice))
        .unwrap();
    let a = eng.svm_alloc(0x3000, None, &["d0", "d1"], false).unwrap();
    assert_eq!(world.borrow().dev_mapped[0], vec![(a, a + 0x4000)]);
    eng.svm_free(a).unwrap();
    assert!(world.borrow().dev_mapped[0].is_empty());
    assert!(world.borrow().cpu_mapped.is_empty());
}

/// A device that records every batch of `invalidate_unmap` and can stop
/// acknowledging after a number of ranges.
#[derive(Default)]
struct Batches {
    /// Per device: the batches it was given.
    seen: Vec<Vec<Vec<(u64, u64)>>>,
    /// Per device: acknowledge only this many ranges of the next batch.
    ack_only: Vec<Option<usize>>,
}

struct BatchDev(Rc<RefCell<Batches>>, usize);

impl DeviceBackend for BatchDev {
    fn map(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn invalidate(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn protect(&mut self, _: u64, _: u64, _: Prot) -> Result<(), BackendError> {
        Ok(())
    }
    fn unmap(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn map_region(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn invalidate_unmap(
        &mut self,
        ranges: &[(u64, u64)],
    ) -> Result<(), svmap_svm::backend::BatchError> {
        let mut b = self.0.borrow_mut();
        b.seen[self.1].push(ranges.to_vec());
        match b.ack_only[self.1].take() {
            Some(n) if n < ranges.len() => Err(svmap_svm::backend::BatchError {
                done: n,
                acknowledged: false,
                error: BackendError::Gone {
                    detail: "stopped answering".into(),
                },
            }),
            _ => Ok(()),
        }
    }
}

fn batch_engine(n: usize) -> (Engine<svmap_svm::ModelCpu, BatchDev>, Rc<RefCell<Batches>>) {
    let b = Rc::new(RefCell::new(Batches {
        seen: vec![Vec::new(); n],
        ack_only: vec![None; n],
    }));
    let mut eng = Engine::new(cfg(), svmap_svm::ModelCpu);
    for i in 0..n {
        eng.add_device_with(device(i), BatchDev(b.clone(), i))
            .unwrap();
    }
    (eng, b)
}

fn range_of<C: CpuBackend, D: DeviceBackend>(eng: &Engine<C, D>, a: u64) -> (u64, u64) {
    let v = eng.alloc_at(a).unwrap();
    (v.start, v.end)
}

/// A free is one `invalidate_unmap` per device of the range, holding every
/// piece; a batch free is one per device that holds any of its ranges,
/// holding exactly those.
#[test]
fn a_free_is_one_batch_per_device() {
    let (mut eng, b) = batch_engine(3);
    let a = eng.svm_alloc(0x3000, None, &["d0", "d1"], false).unwrap();
    let ra = range_of(&eng, a);
    eng.svm_free(a).unwrap();
    {
        let b = b.borrow();
        assert_eq!(b.seen[0], vec![vec![ra]]);
        assert_eq!(b.seen[1], vec![vec![ra]]);
        assert!(b.seen[2].is_empty());
    }
    // A range split by a CPU unmap: both pieces in the one batch.
    let s = eng.svm_alloc(0x6000, None, &["d2"], false).unwrap();
    let rs = range_of(&eng, s);
    eng.cpu_unmap(rs.0 + 0x2000, 0x1000).unwrap();
    eng.svm_free(s).unwrap();
    assert_eq!(
        b.borrow().seen[2].last().unwrap(),
        &vec![(rs.0, rs.0 + 0x2000), (rs.0 + 0x3000, rs.1)]
    );
    // Batch free of ranges held by different device sets.
    for v in &mut b.borrow_mut().seen {
        v.clear();
    }
    let x = eng.svm_alloc(0x2000, None, &["d0"], false).unwrap();
    let y = eng.svm_alloc(0x2000, None, &["d0", "d2"], false).unwrap();
    let z = eng.svm_alloc(0x4000, None, &["d2"], true).unwrap();
    let (rx, ry, rz) = (range_of(&eng, x), range_of(&eng, y), range_of(&eng, z));
    eng.svm_free_many(&[z, x, y]).unwrap();
    for a in [x, y, z] {
        assert!(eng.alloc_at(a).is_none());
    }
    let b = b.borrow();
    assert_eq!(b.seen[0], vec![vec![rx, ry]]);
    assert!(b.seen[1].is_empty());
    assert_eq!(b.seen[2], vec![vec![rz, ry]]);
    eng.check_invariants();
}

/// A device that stops acknowledging partway through a batch keeps exactly
/// the ranges it had not acknowledged allocated; the others are free. Bad
/// input changes nothing.
#[test]
fn a_batch_free_keeps_what_was_not_acknowledged() {
    let (mut eng, b) = batch_engine(2);
    let addrs: Vec<u64> = (0..4)
        .map(|k| {
            let devs: &[&str] = if k % 2 == 0 { &["d0", "d1"] } else { &["d0"] };
            eng.svm_alloc(0x2000, None, devs, false).unwrap()
        })
        .collect();
    // A double free or an unknown address is refused before anything.
    for bad in [vec![addrs[0], addrs[1], addrs[0]], vec![addrs[2], 0x7000]] {
        assert!(matches!(
            eng.svm_free_many(&bad),
            Err(EngineError::Svm(svmap_svm::SvmError::NotAnSvmRange { .. }))
        ));
        assert!(b.borrow().seen.iter().all(|v| v.is_empty()));
        assert!(addrs.iter().all(|&a| eng.alloc_at(a).is_some()));
    }
    // d1 holds addrs[0] and addrs[2] and acknowledges only the first.
    b.borrow_mut().ack_only[1] = Some(1);
    match eng.svm_free_many(&addrs) {
        Err(EngineError::NotAcknowledged { device, start, .. }) => {
            assert_eq!((device.as_str(), start), ("d1", addrs[2]))
        }
        other => panic!("batch with a device that stops: {other:?}"),
    }
    let still: Vec<bool> = addrs.iter().map(|&a| eng.alloc_at(a).is_some()).collect();
    assert_eq!(still, [false, false, true, false]);
    eng.check_invariants();
    // The kept range is not handed out again until it is freed.
    let r2 = range_of(&eng, addrs[2]);
    for _ in 0..4 {
        let n = eng.svm_alloc(0x2000, None, &["d0", "d1"], false).unwrap();
        assert!(n >= r2.1 || n + 0x2000 <= r2.0);
    }
    eng.svm_free_many(&[addrs[2]]).unwrap();
    assert!(eng.alloc_at(addrs[2]).is_none());
}

/// A free that fails at each step leaves the range allocated (the same
/// allocation) exactly while a step failed, no backend holds a range the
/// space considers free, and a retry completes it.
#[test]
fn a_free_that_fails_partway_leaves_a_consistent_state() {
    let (mut eng, world) = rec_engine(2);
    let both = ["d0", "d1"];
    // (what fails, the error's kind)
    type Arm = fn(&mut World);
    let steps: [(&str, Arm); 3] = [
        ("d1 does not acknowledge", |w| w.nack[1] = true),
        ("d1 acknowledges, its unmap fails", |w| {
            w.fail_unmap[1] = true
        }),
        ("the CPU unmap fails", |w| w.cpu_fail_unmap = true),
    ];
    for (what, arm) in steps {
        let a = eng.svm_alloc(0x4000, None, &both, false).unwrap();
        let id = eng.alloc_at(a).unwrap().id;
        arm(&mut world.borrow_mut());
        let r = eng.svm_free(a);
        match (what, &r) {
            ("d1 does not acknowledge", Err(EngineError::NotAcknowledged { device, .. }))
            | (
                "d1 acknowledges, its unmap fails",
                Err(EngineError::Device {
                    device,
                    op: "unmap",
                    ..
                }),
            ) => assert_eq!(device, "d1"),
            ("the CPU unmap fails", Err(EngineError::Cpu { op: "unmap", .. })) => {}
            _ => panic!("{what}: {r:?}"),
        }
        assert_eq!(eng.alloc_at(a).map(|v| v.id), Some(id), "{what}");
        assert_eq!(eng.pending_frees(), vec![a], "{what}");
        assert_consistent(&eng, &world.borrow(), &[0, 1]);
        eng.check_invariants();
        // Not handed out again while it is allocated.
        let b = eng.svm_alloc(0x4000, None, &both, false).unwrap();
        assert!(b + 0x4000 <= a || a + 0x4000 <= b, "{what}: {b:#x}");
        // A retry goes through every step again and frees it.
        eng.svm_free(a).unwrap();
        assert!(eng.alloc_at(a).is_none(), "{what}");
        assert!(eng.pending_frees().is_empty());
        eng.svm_free(b).unwrap();
        assert_consistent(&eng, &world.borrow(), &[0, 1]);
        let w = world.borrow();
        assert!(w.violations.is_empty(), "{what}: {:?}", w.violations);
        assert!(w.cpu_mapped.is_empty() && w.dev_mapped.iter().all(|v| v.is_empty()));
    }
}

/// A free of a range carved from a window that fails partway keeps the
/// range as it was (the same allocation, still carved from the window,
/// the window still short of it); the retry gives it back to the window.
#[test]
fn a_failed_free_of_a_window_range_keeps_it_carved() {
    let (mut eng, world) = rec_engine(2);
    let both = ["d0", "d1"];
    let w = eng.reserve_window(&both).unwrap();
    let full = w.reserved_bytes();
    let reserved = |eng: &Engine<RecCpu, RecDev>| eng.window_info(w.id).unwrap().reserved_bytes();
    let a = eng.svm_alloc(0x4000, None, &both, false).unwrap();
    let before = eng.alloc_at(a).unwrap();
    let (id, end, window) = (before.id, before.end, before.window);
    assert_eq!(window, Some((w.start, w.end)));
    assert_eq!(reserved(&eng), full - 0x4000);
    type Arm = fn(&mut World);
    let arms: [Arm; 2] = [|w| w.nack[1] = true, |w| w.cpu_fail_unmap = true];
    for (i, arm) in arms.into_iter().enumerate() {
        arm(&mut world.borrow_mut());
        assert!(eng.svm_free(a).is_err(), "arm {i}");
        let v = eng.alloc_at(a).unwrap();
        assert_eq!((v.id, v.end, v.window), (id, end, window), "arm {i}");
        assert_eq!(eng.window_at(a), None, "arm {i}: not a window piece");
        assert_eq!(reserved(&eng), full - 0x4000, "arm {i}");
        assert_eq!(eng.pending_frees(), vec![a]);
        assert_consistent(&eng, &world.borrow(), &[0, 1]);
        eng.check_invariants();
    }
    eng.svm_free(a).unwrap();
    assert!(eng.alloc_at(a).is_none());
    assert!(eng.pending_frees().is_empty());
    assert_eq!(eng.window_at(a), Some(w.id));
    assert_eq!(reserved(&eng), full);
    eng.check_invariants();
    assert!(world.borrow().violations.is_empty());
}

/// A device that dies: removing it frees the ranges whose only missing
/// acknowledgement was its own, keeps the ranges shared with live devices
/// allocated on those, and the remaining devices keep working by name.
#[test]
fn removing_a_dead_device_reclaims_its_ranges() {
    let (mut eng, world) = rec_engine(3);
    let shared = eng.svm_alloc(0x4000, None, &["d0", "d1"], true).unwrap();
    let shared_live = eng.svm_alloc(0x2000, None, &["d1", "d2"], true).unwrap();
    let alone = eng.svm_alloc(0x2000, None, &["d1"], true).unwrap();
    let other = eng.svm_alloc(0x2000, None, &["d2"], true).unwrap();
    eng.device_map("d1", 0xe_0000, 0xe_4000, CpuPolicy::Fault)
        .unwrap();
    {
        // d1 dies: its mappings die with it.
        let mut w = world.borrow_mut();
        w.dead[1] = true;
        w.dev_mapped[1].clear();
    }
    for a in [shared, alone] {
        assert!(matches!(
            eng.svm_free(a),
            Err(EngineError::NotAcknowledged { ref device, .. }) if device == "d1"
        ));
    }
    let mut pending = eng.pending_frees();
    pending.sort_unstable();
    let mut want = vec![shared, alone];
    want.sort_unstable();
    assert_eq!(pending, want);
    assert!(matches!(
        eng.remove_device("nope"),
        Err(EngineError::Svm(svmap_svm::SvmError::UnknownDevice { .. }))
    ));
    let r = eng.remove_device("d1").unwrap();
    assert!(r.detached.is_err(), "a dead device does not acknowledge");
    assert_eq!(r.backend.1, 1);
    assert!(r.retry.is_ok());
    let mut freed = r.freed.clone();
    freed.sort_unstable();
    assert_eq!(freed, want);
    assert!(eng.pending_frees().is_empty());
    let names: Vec<&str> = eng
        .devices()
        .iter()
        .map(|d| d.config().name.as_str())
        .collect();
    assert_eq!(names, ["d0", "d2"]);
    // The range shared with a live device stays allocated on it alone.
    let v = eng.alloc_at(shared_live).unwrap();
    assert_eq!(v.devices, &[1]);
    assert_eq!(eng.alloc_at(other).unwrap().devices, &[1]);
    // The region's CPU side is given back, its device side is gone.
    assert_eq!(r.released, Ok(vec![(0xe_0000, 0xe_4000)]));
    assert_eq!(eng.reservation_at(0xe_0000), None);
    assert!(world.borrow().cpu_regions.is_empty());
    assert!(eng.devices().iter().all(|d| d.regions().is_empty()));
    eng.check_invariants();
    assert_consistent(&eng, &world.borrow(), &[0, 2]);
    // The freed range is reused by the live device; the others still work.
    let again = eng.svm_alloc(0x4000, None, &["d0"], true).unwrap();
    assert_eq!(again, shared);
    eng.svm_free(shared_live).unwrap();
    eng.svm_free(other).unwrap();
    eng.svm_free(again).unwrap();
    eng.check_invariants();
    let w = world.borrow();
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(w.dev_mapped[0].is_empty() && w.dev_mapped[2].is_empty());
}

/// A live device removed while it holds ranges is detached cleanly: it
/// invalidates and unmaps them first, and the ranges stay allocated for
/// the CPU.
#[test]
fn removing_a_live_device_detaches_it() {
    let (mut eng, world) = rec_engine(2);
    let a = eng.svm_alloc(0x2000, None, &["d0"], false).unwrap();
    let b = eng.svm_alloc(0x2000, None, &["d0", "d1"], false).unwrap();
    let r = eng.remove_device("d0").unwrap();
    assert!(r.detached.is_ok());
    assert!(r.freed.is_empty());
    assert!(world.borrow().dev_mapped[0].is_empty());
    assert_eq!(eng.alloc_at(a).unwrap().devices, &[] as &[usize]);
    assert_eq!(eng.alloc_at(b).unwrap().devices, &[0]);
    eng.check_invariants();
    eng.svm_free(a).unwrap();
    eng.svm_free(b).unwrap();
    assert!(world.borrow().violations.is_empty());
}

/// Ranges a device holds by its own means are never given to it; with
/// them unknown the same allocations do land there.
#[test]
fn a_device_is_never_given_what_it_holds_by_itself() {
    let own = (0x8_0000u64, 0x9_0000u64);
    let run = |hold: bool| -> Vec<u64> {
        let world = Rc::new(RefCell::new(World::default()));
        {
            let mut w = world.borrow_mut();
            w.dev_mapped.push(Vec::new());
            w.dev_invalidated.push(Vec::new());
            w.limits.push(1 << 20);
            w.nack.push(false);
            if hold {
                w.own.push(vec![own]);
            }
        }
        let mut eng: Engine<RecCpu, RecDev> = Engine::new(cfg(), RecCpu(world.clone()));
        eng.add_device_with(device(1), RecDev(world.clone(), 0))
            .unwrap();
        let mut got = Vec::new();
        while let Ok(a) = eng.svm_alloc(0x8000, None, &["d1"], false) {
            got.push(a);
        }
        eng.check_invariants();
        if hold {
            assert!(matches!(
                eng.device_map("d1", own.0, own.0 + 0x2000, CpuPolicy::Fault),
                Err(EngineError::Svm(svmap_svm::SvmError::Overlap { .. }))
            ));
        }
        assert!(world.borrow().violations.is_empty());
        got
    };
    let held = run(true);
    let free = run(false);
    let hits = |v: &[u64]| v.iter().any(|&a| a < own.1 && own.0 < a + 0x8000);
    assert!(!held.is_empty() && !hits(&held));
    assert!(hits(&free), "without the hold the range is used");
    assert_eq!(free.len() - held.len(), ((own.1 - own.0) / 0x8000) as usize);
}

/// A device whose backend cannot tell its own mappings is not added.
#[test]
fn a_device_that_cannot_tell_its_mappings_is_not_added() {
    struct NoOwn;
    impl DeviceBackend for NoOwn {
        fn map(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn invalidate(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn protect(&mut self, _: u64, _: u64, _: Prot) -> Result<(), BackendError> {
            Ok(())
        }
        fn unmap(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn map_region(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
            Err(BackendError::Gone {
                detail: "no answer".into(),
            })
        }
    }
    let mut eng: Engine<svmap_svm::ModelCpu, Box<dyn DeviceBackend>> =
        Engine::new(cfg(), svmap_svm::ModelCpu);
    match eng.add_device_with(device(0), Box::new(NoOwn)) {
        Err(EngineError::Device { device, op, .. }) => {
            assert_eq!((device.as_str(), op), ("d0", "own_mappings"))
        }
        other => panic!("{other:?}"),
    }
    assert!(eng.devices().is_empty() && eng.device_backends().is_empty());
    eng.add_device_with(device(0), Box::new(svmap_svm::ModelDevice))
        .unwrap();
    assert_eq!(eng.devices().len(), eng.device_backends().len());
    eng.svm_alloc(0x1000, None, &["d0"], false).unwrap();
    eng.check_invariants();
}

/// A device that logs the two halves of its batches and can fail either.
struct StagedDev {
    log: Rc<RefCell<Vec<String>>>,
    i: usize,
    fail_start: bool,
    fail_finish: bool,
    /// Fail the first half of the next mapping.
    fail_map_start: bool,
    /// Fail the second half of the next mapping.
    fail_map_finish: bool,
}

impl DeviceBackend for StagedDev {
    fn map(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        self.log.borrow_mut().push(format!("map {}", self.i));
        Ok(())
    }
    fn map_start(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        self.log.borrow_mut().push(format!("map_start {}", self.i));
        if std::mem::take(&mut self.fail_map_start) {
            return Err(BackendError::Gone {
                detail: "dead".into(),
            });
        }
        Ok(())
    }
    fn map_finish(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        self.log.borrow_mut().push(format!("map_finish {}", self.i));
        if std::mem::take(&mut self.fail_map_finish) {
            return Err(BackendError::Timeout { waited_ms: 1 });
        }
        Ok(())
    }
    fn invalidate(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn protect(&mut self, _: u64, _: u64, _: Prot) -> Result<(), BackendError> {
        Ok(())
    }
    fn unmap(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn map_region(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn invalidate_unmap(&mut self, _: &[(u64, u64)]) -> Result<(), svmap_svm::backend::BatchError> {
        self.log.borrow_mut().push(format!("whole {}", self.i));
        Ok(())
    }
    fn invalidate_unmap_start(
        &mut self,
        ranges: &[(u64, u64)],
    ) -> Result<(), svmap_svm::backend::BatchError> {
        self.log
            .borrow_mut()
            .push(format!("start {} {}", self.i, ranges.len()));
        if self.fail_start {
            return Err(svmap_svm::backend::BatchError {
                done: 0,
                acknowledged: false,
                error: BackendError::Gone {
                    detail: "dead".into(),
                },
            });
        }
        Ok(())
    }
    fn invalidate_unmap_finish(
        &mut self,
        ranges: &[(u64, u64)],
    ) -> Result<(), svmap_svm::backend::BatchError> {
        self.log
            .borrow_mut()
            .push(format!("finish {} {}", self.i, ranges.len()));
        if self.fail_finish {
            return Err(svmap_svm::backend::BatchError {
                done: 0,
                acknowledged: false,
                error: BackendError::Timeout { waited_ms: 1 },
            });
        }
        Ok(())
    }
}

/// Every device of a free is asked before any answer is awaited; a device
/// whose start fails is not finished, the others are; the error names the
/// first failing device in definition order, and the range stays.
#[test]
fn a_free_asks_every_device_before_waiting() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mk = |fail: [(bool, bool); 3]| {
        log.borrow_mut().clear();
        let mut eng: Engine<svmap_svm::ModelCpu, StagedDev> =
            Engine::new(cfg(), svmap_svm::ModelCpu);
        for (i, (fail_start, fail_finish)) in fail.into_iter().enumerate() {
            let dev = StagedDev {
                log: log.clone(),
                i,
                fail_start,
                fail_finish,
                fail_map_start: false,
                fail_map_finish: false,
            };
            eng.add_device_with(device(i), dev).unwrap();
        }
        eng
    };
    let all = ["d0", "d1", "d2"];
    let mut eng = mk([(false, false); 3]);
    let a = eng.svm_alloc(0x2000, None, &all, false).unwrap();
    let b = eng.svm_alloc(0x2000, None, &["d0", "d2"], false).unwrap();
    log.borrow_mut().clear();
    eng.svm_free(a).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "start 0 1",
            "start 1 1",
            "start 2 1",
            "finish 0 1",
            "finish 1 1",
            "finish 2 1"
        ]
    );
    let c = eng.svm_alloc(0x2000, None, &["d1"], false).unwrap();
    log.borrow_mut().clear();
    eng.svm_free_many(&[b, c]).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "start 0 1",
            "start 1 1",
            "start 2 1",
            "finish 0 1",
            "finish 1 1",
            "finish 2 1"
        ]
    );
    // d2 fails to start, d1 fails to finish: d1 is named (first in
    // definition order), d2 is not finished, d0 is.
    let mut eng = mk([(false, false), (false, true), (true, false)]);
    let a = eng.svm_alloc(0x2000, None, &all, false).unwrap();
    log.borrow_mut().clear();
    match eng.svm_free(a) {
        Err(EngineError::NotAcknowledged { device, .. }) => assert_eq!(device, "d1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *log.borrow(),
        [
            "start 0 1",
            "start 1 1",
            "start 2 1",
            "finish 0 1",
            "finish 1 1"
        ]
    );
    assert!(eng.alloc_at(a).is_some());
    assert_eq!(eng.pending_frees(), vec![a]);
    // The same in a batch free: every range held by a failing device stays.
    let b = eng.svm_alloc(0x2000, None, &["d0"], false).unwrap();
    let c = eng.svm_alloc(0x2000, None, &["d2"], false).unwrap();
    match eng.svm_free_many(&[a, b, c]) {
        Err(EngineError::NotAcknowledged { device, .. }) => assert_eq!(device, "d1"),
        other => panic!("{other:?}"),
    }
    assert!(eng.alloc_at(a).is_some() && eng.alloc_at(c).is_some());
    assert!(eng.alloc_at(b).is_none());
    eng.check_invariants();
}

/// An allocation asks every device to map before it waits for any; a
/// device that fails either half is not undone, every device that mapped
/// is (all asked before any answer is awaited), the CPU unmaps, and the
/// space is as before: the same request then gets the same address. The
/// error names the first failing device in definition order.
#[test]
fn an_allocation_asks_every_device_before_waiting() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut eng: Engine<svmap_svm::ModelCpu, StagedDev> = Engine::new(cfg(), svmap_svm::ModelCpu);
    for i in 0..3 {
        let dev = StagedDev {
            log: log.clone(),
            i,
            fail_start: false,
            fail_finish: false,
            fail_map_start: false,
            fail_map_finish: false,
        };
        eng.add_device_with(device(i), dev).unwrap();
    }
    let all = ["d0", "d1", "d2"];
    let a = eng.svm_alloc(0x2000, None, &all, false).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "map_start 0",
            "map_start 1",
            "map_start 2",
            "map_finish 0",
            "map_finish 1",
            "map_finish 2"
        ]
    );
    let before = eng.svm_ranges();
    // d2 fails to start, d1 fails to finish: d1 is named; only d0 mapped,
    // but every device asked is undone (a failed map may have mapped part
    // of the range).
    eng.device_backends_mut()[2].fail_map_start = true;
    eng.device_backends_mut()[1].fail_map_finish = true;
    log.borrow_mut().clear();
    let at = match eng.svm_alloc(0x2000, None, &all, false) {
        Err(EngineError::Device {
            device, op, start, ..
        }) => {
            assert_eq!((device.as_str(), op), ("d1", "map"));
            start
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        *log.borrow(),
        [
            "map_start 0",
            "map_start 1",
            "map_start 2",
            "map_finish 0",
            "map_finish 1",
            "start 0 1",
            "start 1 1",
            "start 2 1",
            "finish 0 1",
            "finish 1 1",
            "finish 2 1"
        ]
    );
    assert!(eng.alloc_at(at).is_none());
    assert_eq!(eng.svm_ranges(), before);
    assert!(eng.pending_frees().is_empty());
    eng.check_invariants();
    // The space is unchanged: the same request lands at the same address.
    let b = eng.svm_alloc(0x2000, None, &all, false).unwrap();
    assert_eq!(b, at);
    assert_ne!(a, b);
    // A device that fails to start alone: the others are finished; all
    // are undone, the failing one too.
    eng.device_backends_mut()[0].fail_map_start = true;
    log.borrow_mut().clear();
    match eng.svm_alloc(0x2000, None, &["d0", "d2"], false) {
        Err(EngineError::Device { device, .. }) => assert_eq!(device, "d0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        *log.borrow(),
        [
            "map_start 0",
            "map_start 2",
            "map_finish 2",
            "start 0 1",
            "start 2 1",
            "finish 0 1",
            "finish 2 1"
        ]
    );
    eng.check_invariants();
}

/// When the undo of a failed allocation is not acknowledged, the range
/// stays allocated (a device may still use it) and is a pending free; a
/// retried free asks only the device that may still hold it.
#[test]
fn an_allocation_whose_undo_is_not_acknowledged_stays() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut eng: Engine<svmap_svm::ModelCpu, StagedDev> = Engine::new(cfg(), svmap_svm::ModelCpu);
    for i in 0..3 {
        let dev = StagedDev {
            log: log.clone(),
            i,
            fail_start: i == 0,
            fail_finish: false,
            fail_map_start: false,
            fail_map_finish: i == 2,
        };
        eng.add_device_with(device(i), dev).unwrap();
    }
    let all = ["d0", "d1", "d2"];
    let at = match eng.svm_alloc(0x2000, None, &all, false) {
        Err(EngineError::NotAcknowledged { device, start, .. }) => {
            assert_eq!(device, "d0");
            start
        }
        other => panic!("{other:?}"),
    };
    assert!(eng.alloc_at(at).is_some());
    assert_eq!(eng.pending_frees(), vec![at]);
    let mut gone = eng.released_devices(at);
    gone.sort_unstable();
    assert_eq!(gone, ["d1", "d2"]);
    eng.device_backends_mut()[0].fail_start = false;
    log.borrow_mut().clear();
    eng.svm_free(at).unwrap();
    assert_eq!(*log.borrow(), ["start 0 1", "finish 0 1"]);
    assert!(eng.alloc_at(at).is_none() && eng.pending_frees().is_empty());
    eng.check_invariants();
}

/// A free retried after a partial failure goes only to the devices that
/// still hold the range: a device that acknowledged and unmapped it is
/// never asked again (no invalidate, unmap or protect), whether the retry
/// is `svm_free`, `svm_free_many` or a `protect` in between; after a CPU
/// unmap failure no device is asked at all.
#[test]
fn a_retried_free_asks_only_the_devices_that_still_hold_the_range() {
    let (mut eng, world) = rec_engine(3);
    let all = ["d0", "d1", "d2"];
    let to_d = |w: &World, d: usize| w.log.iter().filter(|l| l.0 == d).count();
    for many in [false, true] {
        let a = eng.svm_alloc(0x4000, None, &all, false).unwrap();
        world.borrow_mut().nack[1] = true;
        let r = if many {
            eng.svm_free_many(&[a])
        } else {
            eng.svm_free(a)
        };
        assert!(
            matches!(r, Err(EngineError::NotAcknowledged { ref device, .. }) if device == "d1")
        );
        let mut gone = eng.released_devices(a);
        gone.sort_unstable();
        assert_eq!(gone, ["d0", "d2"]);
        assert!(world.borrow().dev_mapped[0].is_empty());
        world.borrow_mut().log.clear();
        // A protect reaches only d1.
        eng.protect(a, 0x1000, Prot::Read).unwrap();
        {
            let w = world.borrow();
            assert_eq!((to_d(&w, 0), to_d(&w, 2)), (0, 0), "{:?}", w.log);
            assert!(to_d(&w, 1) >= 2, "{:?}", w.log);
        }
        // d1 fails again: still only d1 is asked.
        world.borrow_mut().nack[1] = true;
        assert!(eng.svm_free(a).is_err());
        {
            let w = world.borrow();
            assert_eq!((to_d(&w, 0), to_d(&w, 2)), (0, 0), "{:?}", w.log);
        }
        world.borrow_mut().log.clear();
        if many {
            eng.svm_free_many(&[a]).unwrap();
        } else {
            eng.svm_free(a).unwrap();
        }
        {
            let w = world.borrow();
            assert_eq!((to_d(&w, 0), to_d(&w, 2)), (0, 0), "{:?}", w.log);
            assert!(w.log.contains(&(1, "unmap", a)), "{:?}", w.log);
        }
        assert!(eng.alloc_at(a).is_none());
        assert!(eng.released_devices(a).is_empty());
        assert_consistent(&eng, &world.borrow(), &[0, 1, 2]);
    }
    // The CPU unmap fails: every device is done, a retry asks none.
    let a = eng.svm_alloc(0x4000, None, &all, false).unwrap();
    world.borrow_mut().cpu_fail_unmap = true;
    assert!(matches!(eng.svm_free(a), Err(EngineError::Cpu { .. })));
    world.borrow_mut().log.clear();
    eng.svm_free(a).unwrap();
    assert!(world.borrow().log.is_empty(), "{:?}", world.borrow().log);
    // A device that acknowledged but failed to unmap is asked again.
    let a = eng.svm_alloc(0x4000, None, &all, false).unwrap();
    world.borrow_mut().fail_unmap[2] = true;
    assert!(matches!(
        eng.svm_free(a),
        Err(EngineError::Device { ref device, op: "unmap", .. }) if device == "d2"
    ));
    world.borrow_mut().log.clear();
    eng.svm_free(a).unwrap();
    {
        let w = world.borrow();
        assert_eq!((to_d(&w, 0), to_d(&w, 1)), (0, 0), "{:?}", w.log);
        assert!(w.log.contains(&(2, "unmap", a)));
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }
    eng.check_invariants();
}

/// Removing a device gives the CPU side of its device-only regions back:
/// the range is free on the CPU (another device can have a region there),
/// and a CPU backend that cannot give one back leaves it reserved with a
/// typed error naming the range.
#[test]
fn removing_a_device_gives_its_regions_back_on_the_cpu() {
    let (mut eng, world) = rec_engine(3);
    // Below the limits of d0 (19 bits) and d1; `kept` below d2's (18).
    let f = (0x6_0000u64, 0x6_4000u64);
    let z = (0x5_0000u64, 0x5_2000u64);
    eng.device_map("d1", f.0, f.1, CpuPolicy::Fault).unwrap();
    eng.device_map("d1", z.0, z.1, CpuPolicy::DummyPage)
        .unwrap();
    let kept = (0x3_0000u64, 0x3_2000u64);
    eng.device_map("d2", kept.0, kept.1, CpuPolicy::Fault)
        .unwrap();
    // Occupied on the CPU: another device cannot have a region there.
    assert!(eng.device_map("d0", f.0, f.1, CpuPolicy::Fault).is_err());
    let r = eng.remove_device("d1").unwrap();
    let mut released = r.released.clone().unwrap();
    released.sort_unstable();
    assert_eq!(released, vec![z, f]);
    assert_eq!(world.borrow().cpu_regions, vec![kept]);
    for (s, e) in [f, z] {
        assert_eq!(eng.reservation_at(s), None);
        assert!(eng.mm().space().first_overlap(s, e).is_none());
    }
    eng.check_invariants();
    // Free on the CPU now: d0 can have a region there.
    eng.device_map("d0", f.0, f.1, CpuPolicy::Fault).unwrap();
    // A failing release: the range stays reserved, the error names it.
    world.borrow_mut().cpu_fail_release_region = true;
    let r = eng.remove_device("d0").unwrap();
    match r.released {
        Err(EngineError::Cpu {
            op: "release_region",
            start,
            end,
            ..
        }) => assert_eq!((start, end), f),
        other => panic!("{other:?}"),
    }
    assert_eq!(eng.reservation_at(f.0), Some(CpuPolicy::Fault));
    assert!(eng.svm_alloc(0x4000, None, &["d2"], false).is_ok());
    eng.check_invariants();
    assert!(world.borrow().violations.is_empty());
}

/// A range a device holds by its own means has no CPU side, even where it
/// lies inside another device's region: removing the device gives back
/// neither that region's CPU reservation nor any other CPU range there
/// (an SVM range under the held range stays mapped and allocated).
#[test]
fn removing_a_device_leaves_what_lies_under_its_held_ranges() {
    let (mut eng, world) = rec_engine(2);
    // The lowest range (below d0's limit), and a region of d1 under it.
    let a = eng.svm_alloc(0x4000, None, &["d1"], false).unwrap();
    let f = (a - 0x4000, a);
    eng.device_map("d1", f.0, f.1, CpuPolicy::Fault).unwrap();
    // d0 holds a range from inside d1's region over d1's SVM range.
    let held = (f.0 + 0x2000, a + 0x4000);
    assert_eq!(eng.device_hold("d0", held.0, held.1).unwrap(), 0x6000);
    assert_eq!(eng.reservation_at(held.0), Some(CpuPolicy::Fault));
    let mapped = world.borrow().cpu_mapped.clone();
    let r = eng.remove_device("d0").unwrap();
    assert_eq!(r.released.unwrap(), Vec::<(u64, u64)>::new());
    let w = world.borrow();
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert_eq!(w.cpu_regions, vec![f]);
    assert_eq!(w.cpu_mapped, mapped);
    assert!(w.dev_invalidated[1].is_empty());
    drop(w);
    // d1's region is whole, on the device and on the CPU.
    assert_eq!(
        eng.device("d1").unwrap().regions().get(held.0),
        Some((f.0, f.1, &CpuPolicy::Fault))
    );
    assert_eq!(eng.reservation_at(held.0), Some(CpuPolicy::Fault));
    let v = eng.mm().space().first_overlap(f.0, f.1).unwrap();
    assert_eq!((v.start, v.end), f);
    assert_eq!(range_of(&eng, a), (a, a + 0x4000));
    eng.check_invariants();
}

/// The ranges a device maps, shared with the test.
type Mapped = Rc<RefCell<Vec<(u64, u64)>>>;

/// A device whose mapping fails in its second half after mapping the first
/// page of the range (as a C callback may), recording what it maps.
struct PartialDev {
    mapped: Mapped,
    /// Map one page, then fail, in the next `map_finish`.
    fail: bool,
}

impl DeviceBackend for PartialDev {
    fn map(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        let mut m = self.mapped.borrow_mut();
        assert!(!overlaps(&m, s, e), "[{s:#x}, {e:#x}) mapped twice");
        m.push((s, e));
        Ok(())
    }
    fn map_start(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        if self.fail {
            Ok(())
        } else {
            self.map(s, e)
        }
    }
    fn map_finish(&mut self, s: u64, _: u64) -> Result<(), BackendError> {
        if std::mem::take(&mut self.fail) {
            self.map(s, s + PG)?;
            return Err(BackendError::Other("mapping failed partway".into()));
        }
        Ok(())
    }
    fn invalidate(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn protect(&mut self, _: u64, _: u64, _: Prot) -> Result<(), BackendError> {
        Ok(())
    }
    fn unmap(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        cut(&mut self.mapped.borrow_mut(), s, e);
        Ok(())
    }
    fn map_region(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A device whose map fails after mapping part of the range is undone
/// too: once the failed allocation returns, no device maps any of the
/// range, and the range handed out again is mapped afresh.
#[test]
fn a_map_that_fails_partway_is_undone_on_that_device() {
    let maps: Vec<Mapped> = (0..2).map(|_| Rc::default()).collect();
    let mut eng: Engine<svmap_svm::ModelCpu, PartialDev> = Engine::new(cfg(), svmap_svm::ModelCpu);
    for (i, m) in maps.iter().enumerate() {
        let dev = PartialDev {
            mapped: m.clone(),
            fail: i == 1,
        };
        eng.add_device_with(device(i), dev).unwrap();
    }
    let all = ["d0", "d1"];
    let at = match eng.svm_alloc(0x4000, None, &all, false) {
        Err(EngineError::Device {
            device, op, start, ..
        }) => {
            assert_eq!((device.as_str(), op), ("d1", "map"));
            start
        }
        other => panic!("{other:?}"),
    };
    assert!(maps[0].borrow().is_empty(), "{:x?}", maps[0].borrow());
    assert!(maps[1].borrow().is_empty(), "{:x?}", maps[1].borrow());
    assert!(eng.alloc_at(at).is_none());
    assert!(eng.pending_frees().is_empty());
    // The range is handed out again and mapped whole on both devices.
    let b = eng.svm_alloc(0x4000, None, &all, false).unwrap();
    assert_eq!(b, at);
    for m in &maps {
        assert_eq!(*m.borrow(), [(b, b + 0x4000)]);
    }
    eng.check_invariants();
}

/// When the CPU cannot unmap a failed allocation after every device undid
/// it, the range stays allocated as a pending free; a retried free asks
/// no device and completes on the CPU.
#[test]
fn a_failed_allocation_the_cpu_cannot_unmap_is_a_pending_free() {
    let world = Rc::new(RefCell::new(World::default()));
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut eng: Engine<RecCpu, StagedDev> = Engine::new(cfg(), RecCpu(world.clone()));
    for i in 0..2 {
        let dev = StagedDev {
            log: log.clone(),
            i,
            fail_start: false,
            fail_finish: false,
            fail_map_start: false,
            fail_map_finish: i == 1,
        };
        eng.add_device_with(device(i), dev).unwrap();
    }
    world.borrow_mut().cpu_fail_unmap = true;
    let at = match eng.svm_alloc(0x2000, None, &["d0", "d1"], false) {
        Err(EngineError::Device {
            device, op, start, ..
        }) => {
            assert_eq!((device.as_str(), op), ("d1", "map"));
            start
        }
        other => panic!("{other:?}"),
    };
    assert!(eng.alloc_at(at).is_some());
    assert_eq!(eng.pending_frees(), [at]);
    assert_eq!(eng.released_devices(at).len(), 2);
    assert_eq!(world.borrow().cpu_mapped, [(at, at + 0x2000)]);
    eng.check_invariants();
    log.borrow_mut().clear();
    eng.svm_free(at).unwrap();
    assert!(log.borrow().is_empty(), "{:?}", log.borrow());
    assert!(eng.alloc_at(at).is_none());
    assert!(eng.pending_frees().is_empty());
    assert!(world.borrow().cpu_mapped.is_empty());
    assert!(world.borrow().violations.is_empty());
    eng.check_invariants();
}
