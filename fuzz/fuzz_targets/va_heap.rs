//! Differential fuzzing of `VaHeap` against a hole-list model and against an
//! `AddressMap` kept as the complement of the free space.
//!
//! The bytes decode into a granularity and a region (near 0, 2^32, 2^47 or
//! the top of the address space), then into operations: frees (of
//! allocated gaps between holes, whole or in part, and of arbitrary ranges,
//! which are mostly refused), `alloc_at` (parts of holes and arbitrary
//! ranges), fits and allocations with any length, window, alignment,
//! offset, order and boundary, and bulk runs that punch a hole into many
//! or drain many gaps, so that the tree splits and merges nodes and
//! changes height. Each operation runs on the heap, on the model and (with
//! `mmap_min_addr` 0 and no grows-down or grows-up VMAs, where the heap
//! promises the map's answers) on the map; any difference, a failed
//! `check_invariants()`, different holes, hole count or free bytes, or a
//! panic is a crash. The panic message names the operation (`op #N`).
//!
//! The model is `svmap_core::heap_model::HoleModel` (feature `fuzzing`), the
//! one the property tests use.
#![no_main]

use svmap_core::heap_model::HoleModel;
use svmap_core::{AddressMap, FitRequest, NoCrossError, SearchParams, VaHeap, VmaFlags};

const PAGE: u64 = 0x1000;
/// The most operations one input runs, and the most holes a bulk run
/// builds: an input stays a few milliseconds.
const MAX_OPS: usize = 1000;
const MAX_HOLES: usize = 4096;

// ----- decoding -------------------------------------------------------------

/// The input, read front to back; past its end every read is 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Free(u64, u64),
    AllocAt(u64, u64),
    Find(FitRequest, Option<u64>),
    Alloc(FitRequest, Option<u64>),
}

/// Decodes operations against the model's current state.
struct Decoder<'a> {
    b: Bytes<'a>,
    gran: u64,
    base: u64,
}

impl Decoder<'_> {
    fn hole(&mut self, m: &HoleModel) -> Option<(u64, u64)> {
        let i = self.b.u16() as usize;
        (!m.holes().is_empty()).then(|| m.holes()[i % m.holes().len()])
    }

    fn addr(&mut self, m: &HoleModel) -> u64 {
        let g = self.gran;
        match self.b.u8() % 6 {
            0 => self.base + u64::from(self.b.u16()) * g,
            1 | 2 => {
                let edge = self.b.u8();
                match self.hole(m) {
                    Some((s, e)) => {
                        let at = if edge & 1 == 0 { s } else { e };
                        let d = u64::from(edge >> 1 & 3) * g;
                        if edge & 8 == 0 {
                            at.saturating_add(d)
                        } else {
                            at.saturating_sub(d)
                        }
                    }
                    None => self.base,
                }
            }
            3 => {
                let k = u64::from(self.b.u16());
                match self.hole(m) {
                    Some((s, e)) => s + (k * g).min(e - s),
                    None => self.base,
                }
            }
            4 => [0, g, u64::MAX, u64::MAX - 1, !(PAGE - 1), 1 << 47][self.b.u8() as usize % 6],
            _ => self.b.u64(),
        }
    }

    fn len(&mut self) -> u64 {
        let g = self.gran;
        match self.b.u8() % 6 {
            0 | 1 => u64::from(self.b.u8() % 16 + 1) * g,
            2 => u64::from(self.b.u16()) * g,
            3 => 1 << (self.b.u8() % 64),
            4 => u64::from(self.b.u16()),
            _ => self.b.u64(),
        }
    }

    fn request(&mut self, m: &HoleModel) -> FitRequest {
        let length = self.len();
        let (low, high) = match self.b.u8() % 5 {
            0 | 1 => (0, u64::MAX),
            2 => {
                let (a, b) = (self.addr(m), self.addr(m));
                (a.min(b), a.max(b))
            }
            3 => match self.hole(m) {
                Some((s, e)) => {
                    let d = u64::from(self.b.u8() % 3) * self.gran;
                    (s.saturating_add(d), e.saturating_sub(d))
                }
                None => (0, u64::MAX),
            },
            _ => (self.addr(m), self.addr(m)),
        };
        let a = self.b.u8();
        let align = match a % 8 {
            0 | 1 => 1,
            2 => PAGE,
            3 => 0x1_0000,
            4 => 0x20_0000,
            5 | 6 => 1 << (a >> 3 & 63),
            _ => self.b.u64(),
        };
        let align_offset = match self.b.u8() % 4 {
            0 | 1 => 0,
            2 => u64::from(self.b.u16()) * self.gran,
            _ => self.b.u64(),
        };
        let flags = self.b.u8();
        FitRequest {
            length,
            low,
            high,
            align,
            align_offset,
            topdown: flags & 1 != 0,
            respect_guard_gaps: flags & 2 != 0,
        }
    }

    fn boundary(&mut self) -> Option<u64> {
        let b = self.b.u8();
        match b % 4 {
            0 | 1 => None,
            2 => Some(1 << (b >> 2 & 31)),
            _ => Some(self.b.u64()),
        }
    }

    /// A part of the allocated gap below hole `j` (`j == n`: above the
    /// last one).
    fn gap_part(&mut self, m: &HoleModel) -> Option<(u64, u64)> {
        let h = &m.holes();
        let j = self.b.u16() as usize % (h.len() + 1);
        let lo = if j == 0 { 0 } else { h[j - 1].1 };
        let hi = if j == h.len() { u64::MAX } else { h[j].0 };
        if lo >= hi {
            return None;
        }
        let l = (u64::from(self.b.u8() % 16 + 1) * self.gran).min(hi - lo);
        Some(match self.b.u8() % 4 {
            0 | 1 => (lo, hi),
            2 => (lo, lo + l),
            _ => (hi - l, hi),
        })
    }
}

// ----- running --------------------------------------------------------------

struct Run {
    heap: VaHeap,
    model: HoleModel,
    map: AddressMap,
    ops: usize,
    since_check: usize,
}

impl Run {
    fn apply(&mut self, op: Op) {
        let i = self.ops;
        self.ops += 1;
        let p = SearchParams {
            mmap_min_addr: 0,
            ..SearchParams::default()
        };
        match op {
            Op::Free(s, e) => {
                let want = self.model.free(s, e);
                let got = self.heap.free(s, e);
                assert_eq!(got, want, "op #{i} {op:x?}: free differs");
                if want.is_ok() {
                    self.map.unmap(s, e).unwrap();
                }
            }
            Op::AllocAt(s, e) => {
                let want = self.model.alloc_at(s, e);
                let got = self.heap.alloc_at(s, e);
                assert_eq!(got, want, "op #{i} {op:x?}: alloc_at differs");
                let mapped = self.map.insert(s, e, VmaFlags::NONE);
                assert_eq!(
                    mapped.is_ok(),
                    want.is_ok(),
                    "op #{i} {op:x?}: map {mapped:?}"
                );
            }
            Op::Find(q, b) => {
                let want = self.model.fit(&q, b);
                let (got, map) = match b {
                    None => (
                        self.heap.find_fit(&q).map_err(NoCrossError::Fit),
                        self.map.find_fit(&q, &p).map_err(NoCrossError::Fit),
                    ),
                    Some(b) => (
                        self.heap.find_fit_nocross(&q, b),
                        self.map.find_fit_nocross(&q, b, &p),
                    ),
                };
                assert!(
                    got == want && map == want,
                    "op #{i} {op:x?}: heap {got:x?}, model {want:x?}, map {map:x?}"
                );
            }
            Op::Alloc(q, b) => {
                let want = self.model.fit(&q, b);
                let (got, map) = match b {
                    None => (
                        self.heap.alloc(&q).map_err(NoCrossError::Fit),
                        self.map
                            .allocate(&q, &p, VmaFlags::NONE)
                            .map_err(NoCrossError::Fit),
                    ),
                    Some(b) => (
                        self.heap.alloc_nocross(&q, b),
                        self.map.allocate_nocross(&q, b, &p, VmaFlags::NONE),
                    ),
                };
                assert!(
                    got == want && map == want,
                    "op #{i} {op:x?}: heap {got:x?}, model {want:x?}, map {map:x?}"
                );
                if let Ok(a) = want {
                    self.model.alloc_at(a, a + q.length).unwrap();
                }
            }
        }
        assert_eq!(
            self.heap.hole_count(),
            self.model.holes().len(),
            "op #{i} {op:x?}: hole_count"
        );
        assert_eq!(
            self.heap.free_bytes(),
            self.model.free_bytes(),
            "op #{i} {op:x?}: free_bytes"
        );
        self.since_check += 1;
        if self.since_check * 16 >= self.model.holes().len() {
            self.check(&format!("op #{i} {op:x?}"));
        }
    }

    fn check(&mut self, at: &str) {
        self.since_check = 0;
        self.heap.check_invariants();
        let holes: Vec<(u64, u64)> = self.heap.holes().collect();
        assert!(
            holes == self.model.holes(),
            "{at}: the heap's holes differ from the model's"
        );
        let mut mapped = Vec::new();
        let mut x = 0;
        for v in self.map.iter() {
            if v.start > x {
                mapped.push((x, v.start));
            }
            x = v.end;
        }
        if x < u64::MAX {
            mapped.push((x, u64::MAX));
        }
        assert!(
            mapped == self.model.holes(),
            "{at}: the map's complement differs from the model"
        );
    }
}

fn check(data: &[u8]) {
    let mut d = Decoder {
        b: Bytes(data),
        gran: 1,
        base: 0,
    };
    let cfg = d.b.u8();
    d.gran = if cfg & 3 == 0 { 1 } else { PAGE };
    d.base = match cfg >> 2 & 3 {
        0 => 0,
        1 => 1 << 32,
        2 => 1 << 47,
        _ => !(PAGE - 1) - (d.gran << 16),
    };
    let mut map = AddressMap::new();
    map.insert(0, u64::MAX, VmaFlags::NONE).unwrap();
    let mut r = Run {
        heap: VaHeap::new(),
        model: HoleModel::default(),
        map,
        ops: 0,
        since_check: 0,
    };
    while !d.b.is_empty() && r.ops < MAX_OPS {
        let m = &r.model;
        let op = match d.b.u8() % 12 {
            0 | 1 => Op::Find(d.request(m), d.boundary()),
            2 | 3 => Op::Alloc(d.request(m), d.boundary()),
            4 | 5 => match d.gap_part(m) {
                Some((s, e)) => Op::Free(s, e),
                None => continue,
            },
            6 => {
                let a = d.addr(m);
                let e = a.saturating_add(d.len());
                Op::Free(a, e)
            }
            7 => {
                let a = d.addr(m);
                let e = a.saturating_add(d.len());
                Op::AllocAt(a, e)
            }
            8 => {
                let (a, b) = (d.addr(m), d.addr(m));
                Op::Free(a, b)
            }
            9 => {
                let (a, b) = (d.addr(m), d.addr(m));
                Op::AllocAt(a, b)
            }
            // Punch every other granule out of a hole.
            10 => {
                let count = u64::from(d.b.u8()) * 4;
                let Some((s, e)) = d.hole(m) else { continue };
                let g = d.gran;
                let mut a = s.saturating_add(g);
                for _ in 0..count {
                    if r.model.holes().len() >= MAX_HOLES {
                        break;
                    }
                    let Some(b) = a.checked_add(g).filter(|&b| b <= e) else {
                        break;
                    };
                    r.apply(Op::AllocAt(a, b));
                    a = b.saturating_add(g);
                }
                continue;
            }
            // Drain: free whole gaps between holes.
            _ => {
                let count = usize::from(d.b.u8()) * 4;
                let mut x = d.b.u16() as usize;
                for _ in 0..count {
                    let n = r.model.holes().len();
                    if n < 2 {
                        break;
                    }
                    x = x.wrapping_mul(0x9e37).wrapping_add(0x79b9);
                    let j = 1 + x % (n - 1);
                    let (s, e) = (r.model.holes()[j - 1].1, r.model.holes()[j].0);
                    r.apply(Op::Free(s, e));
                }
                continue;
            }
        };
        r.apply(op);
    }
    r.check("the last op");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
});
