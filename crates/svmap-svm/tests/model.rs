//! Property tests: random operation sequences run through [`SvmSpace`] and
//! through a deliberately simple model (lists and linear scans) of
//! the trace format's rules, comparing every result and calling
//! `check_invariants()` (which also checks that every SVM range lies inside
//! every listed device's window, is identical in every space and overlaps
//! nothing) after every step. Both populate modes run.

use std::collections::BTreeMap;

use proptest::prelude::*;
use svmap_core::linux::MmConfig;
use svmap_svm::{DeviceConfig, Fault, MirrorMode, Populate, Prot, SvmError, SvmSpace};

const PG: u64 = 0x1000;
const TS: u64 = 0x100000;
const GAP: u64 = 0x3000;
const MIN: u64 = 0x10000;

/// (name, va_bits, base, page_size, mirror)
const DEVS: [(&str, u32, u64, u64, MirrorMode); 3] = [
    ("d0", 20, 0, 0x1000, MirrorMode::Buffers),
    ("d1", 19, 0x20000, 0x2000, MirrorMode::System),
    ("d2", 20, 0, 0x4000, MirrorMode::Buffers),
];

#[derive(Clone, Debug)]
enum Op {
    Map(u64, u64, bool),
    Unmap(u64, u64),
    DeviceMap(usize, u64, u64),
    Alloc(u64, u32, u8, bool),
    Free(usize),
    FreeAddr(u64),
    Protect(u64, u64, u8),
    Access(usize, u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0u64..300;
    prop_oneof![
        2 => (page.clone(), 1u64..8, any::<bool>()).prop_map(|(s, n, g)| Op::Map(s * PG, (s + n) * PG, g)),
        2 => (page.clone(), 1u64..12).prop_map(|(s, n)| Op::Unmap(s * PG, n * PG)),
        1 => (0usize..3, page.clone(), 1u64..6).prop_map(|(d, s, n)| Op::DeviceMap(d, s * PG, (s + n) * PG)),
        4 => (1u64..0x9000, 0u32..6, 0u8..8, any::<bool>()).prop_map(|(l, a, m, t)| Op::Alloc(l, a, m, t)),
        2 => (0usize..8).prop_map(Op::Free),
        1 => page.clone().prop_map(|s| Op::FreeAddr(s * PG)),
        2 => (page.clone(), 1u64..6, 0u8..3).prop_map(|(s, n, p)| Op::Protect(s * PG, n * PG, p)),
        6 => (0usize..3, 0u64..0x130000, any::<bool>()).prop_map(|(d, a, w)| Op::Access(d, a, w)),
    ]
}

#[derive(Clone, Debug)]
struct MAlloc {
    start: u64,
    devs: Vec<usize>,
    pieces: Vec<(u64, u64)>,
}

#[derive(Default)]
struct Model {
    /// (start, end, growsdown)
    cpu: Vec<(u64, u64, bool)>,
    reserved: Vec<(u64, u64)>,
    regions: [Vec<(u64, u64)>; 3],
    allocs: Vec<MAlloc>,
    /// per page, if not rw
    prot: BTreeMap<u64, Prot>,
}

fn ov(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn clip(v: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    let mut out = Vec::new();
    for &(a, b) in v.iter() {
        if !ov((a, b), (s, e)) {
            out.push((a, b));
            continue;
        }
        if a < s {
            out.push((a, s));
        }
        if b > e {
            out.push((e, b));
        }
    }
    *v = out;
}

impl Model {
    fn limit(d: usize) -> u64 {
        1 << DEVS[d].1
    }

    fn unmap(&mut self, s: u64, e: u64) {
        let mut out = Vec::new();
        for &(a, b, g) in &self.cpu {
            if !ov((a, b), (s, e)) {
                out.push((a, b, g));
                continue;
            }
            if a < s {
                out.push((a, s, g));
            }
            if b > e {
                out.push((e, b, g));
            }
        }
        self.cpu = out;
        clip(&mut self.reserved, s, e);
        for a in &mut self.allocs {
            clip(&mut a.pieces, s, e);
        }
        let mut p = s;
        while p < e {
            self.prot.remove(&p);
            p += PG;
        }
    }

    fn dev_holds(&self, d: usize) -> Vec<(u64, u64)> {
        let mut v = self.regions[d].clone();
        for a in &self.allocs {
            if a.devs.contains(&d) {
                v.extend(a.pieces.iter().copied());
            }
        }
        v
    }

    fn device_map(&mut self, d: usize, s: u64, e: u64) -> Result<(), &'static str> {
        let ps = DEVS[d].3;
        if !s.is_multiple_of(ps) || !e.is_multiple_of(ps) || e <= s || e > Self::limit(d) {
            return Err("EINVAL");
        }
        if self.cpu.iter().any(|&(a, b, _)| ov((a, b), (s, e)))
            || self.dev_holds(d).iter().any(|&r| ov(r, (s, e)))
        {
            return Err("EEXIST");
        }
        self.regions[d].push((s, e));
        if s < TS {
            self.cpu.push((s, e.min(TS), false));
            self.reserved.push((s, e.min(TS)));
        }
        Ok(())
    }

    fn alloc(
        &mut self,
        len: u64,
        align: u64,
        devs: Vec<usize>,
        top: bool,
    ) -> Result<u64, &'static str> {
        let p = devs.iter().map(|&d| DEVS[d].3).fold(PG, u64::max);
        let len = len.div_ceil(p) * p;
        let align = align.max(p);
        let low = devs.iter().map(|&d| DEVS[d].2).fold(MIN, u64::max);
        let high = devs.iter().map(|&d| Self::limit(d)).fold(TS, u64::min);
        if high <= low || high - low < len {
            return Err("ENOMEM");
        }
        let mut obst: Vec<(u64, u64)> = self
            .cpu
            .iter()
            .map(|&(a, b, g)| (if g { a.saturating_sub(GAP) } else { a }, b))
            .collect();
        for &d in &devs {
            obst.extend(self.dev_holds(d));
        }
        let down = |x: u64| x / align * align;
        let up = |x: u64| x.div_ceil(align) * align;
        let mut cands = vec![down(high - len), up(low)];
        for &(a, b) in &obst {
            if a >= len {
                cands.push(down(a - len));
            }
            cands.push(up(b));
        }
        let ok = |c: u64| c >= low && c + len <= high && obst.iter().all(|&o| !ov(o, (c, c + len)));
        let best = if top {
            cands.into_iter().filter(|&c| ok(c)).max()
        } else {
            cands.into_iter().filter(|&c| ok(c)).min()
        };
        let c = best.ok_or("ENOMEM")?;
        self.cpu.push((c, c + len, false));
        self.allocs.push(MAlloc {
            start: c,
            devs,
            pieces: vec![(c, c + len)],
        });
        Ok(c)
    }

    fn free(&mut self, addr: u64) -> Result<(), &'static str> {
        let i = self
            .allocs
            .iter()
            .rposition(|a| a.start == addr)
            .ok_or("EINVAL")?;
        let a = self.allocs.remove(i);
        for (s, e) in a.pieces {
            self.unmap(s, e);
        }
        Ok(())
    }

    fn protect(&mut self, s: u64, e: u64, p: Prot) -> Result<(), &'static str> {
        let mut x = s;
        while x < e {
            if !self.cpu.iter().any(|&(a, b, _)| a <= x && x < b) {
                return Err("ENOMEM");
            }
            x += PG;
        }
        let mut x = s;
        while x < e {
            if p == Prot::ReadWrite {
                self.prot.remove(&x);
            } else {
                self.prot.insert(x, p);
            }
            x += PG;
        }
        Ok(())
    }

    fn access(&self, d: usize, addr: u64, write: bool) -> Result<(), Fault> {
        if addr >= Self::limit(d) {
            return Err(Fault::OutOfRange);
        }
        let inside = |v: &[(u64, u64)]| v.iter().any(|&(a, b)| a <= addr && addr < b);
        if inside(&self.regions[d]) {
            return Ok(());
        }
        let svm = self
            .allocs
            .iter()
            .any(|a| a.devs.contains(&d) && inside(&a.pieces));
        let sys = DEVS[d].4 == MirrorMode::System
            && self.cpu.iter().any(|&(a, b, _)| a <= addr && addr < b)
            && !inside(&self.reserved);
        if !(svm || sys) {
            return Err(Fault::Unmapped);
        }
        match self
            .prot
            .get(&(addr & !(PG - 1)))
            .copied()
            .unwrap_or_default()
        {
            Prot::ReadWrite => Ok(()),
            Prot::Read if !write => Ok(()),
            _ => Err(Fault::Protection),
        }
    }
}

fn name(e: &SvmError) -> &'static str {
    match e.trace_errno().expect("no bad lines are generated") {
        x if x == svmap_core::linux::Errno::EEXIST => "EEXIST",
        x if x == svmap_core::linux::Errno::EINVAL => "EINVAL",
        x if x == svmap_core::linux::Errno::ENOMEM => "ENOMEM",
        _ => "other",
    }
}

fn run(ops: &[Op], populate: Populate) {
    let cfg = MmConfig {
        task_size: TS,
        mmap_min_addr: MIN,
        stack_guard_gap: GAP,
        ..MmConfig::default()
    };
    let mut sp: SvmSpace = SvmSpace::new(cfg);
    let mut m = Model::default();
    for &(n, va, base, ps, mirror) in &DEVS {
        let mut c = DeviceConfig::new(n, va);
        c.base = base;
        c.page_size = ps;
        c.mirror = mirror;
        c.populate = populate;
        c.tlb_entries = 3;
        sp.add_device(c).unwrap();
    }
    for (step, op) in ops.iter().enumerate() {
        match op.clone() {
            Op::Map(s, e, g) => {
                let want = if m.cpu.iter().any(|&(a, b, _)| ov((a, b), (s, e))) {
                    Err("EEXIST")
                } else {
                    m.cpu.push((s, e, g));
                    Ok(())
                };
                assert_eq!(
                    sp.cpu_map(s, e, g).map_err(|e| name(&e)),
                    want,
                    "step {step} {op:?}"
                );
            }
            Op::Unmap(s, l) => {
                m.unmap(s, s + l);
                sp.cpu_unmap(s, l).unwrap();
            }
            Op::DeviceMap(d, s, e) => {
                let want = m.device_map(d, s, e);
                let got = sp.device_map(DEVS[d].0, s, e, Default::default());
                assert_eq!(got.map_err(|e| name(&e)), want, "step {step} {op:?}");
            }
            Op::Alloc(len, a, mask, top) => {
                let devs: Vec<usize> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
                let names: Vec<&str> = devs.iter().map(|&d| DEVS[d].0).collect();
                let align = 1u64 << (12 + a);
                let want = m.alloc(len, align, devs, top);
                let got = sp.svm_alloc(len, Some(align), &names, top);
                assert_eq!(got.map_err(|e| name(&e)), want, "step {step} {op:?}");
            }
            Op::Free(i) => {
                if m.allocs.is_empty() {
                    continue;
                }
                let addr = m.allocs[i % m.allocs.len()].start;
                let want = m.free(addr);
                assert_eq!(
                    sp.svm_free(addr).map_err(|e| name(&e)),
                    want,
                    "step {step} {op:?}"
                );
            }
            Op::FreeAddr(addr) => {
                let want = m.free(addr);
                assert_eq!(
                    sp.svm_free(addr).map_err(|e| name(&e)),
                    want,
                    "step {step} {op:?}"
                );
            }
            Op::Protect(s, l, p) => {
                let p = [Prot::None, Prot::Read, Prot::ReadWrite][p as usize];
                let want = m.protect(s, s + l, p);
                assert_eq!(
                    sp.protect(s, l, p).map_err(|e| name(&e)),
                    want,
                    "step {step} {op:?}"
                );
            }
            Op::Access(d, addr, w) => {
                let want = m.access(d, addr, w);
                let got = sp.device_access(DEVS[d].0, addr, w).unwrap();
                assert_eq!(got, want, "step {step} {op:?}");
                assert_eq!(sp.access_rule(DEVS[d].0, addr, w).unwrap(), want);
                // Twice: the second goes through the TLB or page table.
                assert_eq!(
                    sp.device_access(DEVS[d].0, addr, w).unwrap(),
                    want,
                    "step {step} again"
                );
            }
        }
        sp.check_invariants();
        // The live SVM pieces agree with the model.
        let mut got: Vec<(u64, u64)> = sp
            .svm_ranges()
            .into_iter()
            .map(|(s, e, _)| (s, e))
            .collect();
        let mut want: Vec<(u64, u64)> = m.allocs.iter().flat_map(|a| a.pieces.clone()).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "step {step}: SVM pieces");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn against_model_on_fault(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops, Populate::OnFault);
    }

    #[test]
    fn against_model_at_alloc(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops, Populate::AtAlloc);
    }
}

/// Three ranges start at one address, the two older ones having lost their
/// first page to CPU unmaps (the oldest keeps later pages, the middle one
/// none), the newest still whole; a fourth range loses a page in its middle
/// (its first piece stays). Frees at the shared start take them newest
/// first, then the address is no longer a range.
#[test]
fn ranges_stacked_at_one_start() {
    let at = MIN / PG;
    let ops = [
        Op::Alloc(3 * PG, 0, 1, false),
        Op::Unmap(MIN, PG),
        Op::Alloc(PG, 0, 1, false),
        Op::Unmap(MIN, PG),
        Op::Alloc(PG, 0, 1, false),
        Op::Alloc(3 * PG, 0, 1, false),
        Op::Unmap((at + 4) * PG, PG),
        Op::FreeAddr(MIN),
        Op::FreeAddr((at + 3) * PG),
        Op::FreeAddr(MIN),
        Op::FreeAddr(MIN),
        Op::FreeAddr(MIN),
        Op::Alloc(PG, 0, 1, false),
        Op::FreeAddr(MIN),
    ];
    for populate in [Populate::OnFault, Populate::AtAlloc] {
        run(&ops, populate);
    }
}
