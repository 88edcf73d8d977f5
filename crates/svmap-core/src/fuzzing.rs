//! Differential checking of [`AddressMap`] against the reference
//! [`ModelMap`], shared by the cargo-fuzz target (`fuzz/fuzz_targets/map_ops.rs`),
//! the property tests and the one-second byte-string run of `cargo test`.
//!
//! A [`TestCase`] is an [`MmConfig`] plus a list of [`Op`]s. [`run`] applies
//! every operation to an `Mm<AddressMap>` and an `Mm<ModelMap>`, asserts that
//! both answer the same, that their VMA lists stay equal, and calls
//! [`AddressMap::check_invariants`] after every change. [`check`] decodes a
//! byte string into a [`TestCase`] ([`decode`]) and runs it.
//!
//! Only a real disagreement (or a panic inside the core) panics: operations
//! whose arguments a user of the API could not pass (a range whose
//! `start + len` passes 2^64) are clipped or skipped here, exactly as a
//! caller would do it.
//!
//! The core bugs this check has found are fixed, and each keeps a minimal
//! reproduction as a `regression_*` test in `tests/proptest.rs`; every
//! operation decoded here is run, none is held back.
//!
//! Not part of the stable API.

use alloc::vec::Vec;

use crate::linux::{
    Errno, Fixed, Layout, Mm, MmConfig, MmapRequest, DEFAULT_MAP_WINDOW, LEGACY_BASE,
    MAP_32BIT_BEGIN, MAP_32BIT_END, PAGE_SIZE, PMD_SIZE,
};
use crate::model::ModelMap;
use crate::{AddressMap, FitRequest, SearchParams, UnmappedAreaInfo, Vma, VmaFlags};

/// Which edge of a VMA an [`Addr::Near`] is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// `vma.start`.
    Start,
    /// `vma.end`.
    End,
}

/// An address argument, resolved when the operation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// This exact value.
    Abs(u64),
    /// `edge(vmas[index % len]) + delta` (wrapping), or `delta` as an
    /// unsigned value in an empty map. Makes random operations hit existing
    /// VMAs, their edges and their guard gaps.
    Near {
        /// Which VMA (modulo the number of VMAs).
        index: u16,
        /// Which of its edges.
        edge: Edge,
        /// Signed offset from that edge.
        delta: i64,
    },
}

/// The end of a range argument `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// `start + len`. When that passes 2^64 the range is clipped to end at
    /// `u64::MAX` (`clip`) or the operation is skipped, as a caller of the
    /// API would have to do.
    Len {
        /// Length in bytes.
        len: u64,
        /// Clip instead of skipping on overflow.
        clip: bool,
    },
    /// An explicit end, possibly below the start (an error to compare).
    End(Addr),
}

/// A `vm_unmapped_area()` request with resolvable limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchOp {
    /// Highest fit first.
    pub topdown: bool,
    /// `length`.
    pub length: u64,
    /// `low_limit`.
    pub low: Addr,
    /// `high_limit`.
    pub high: Addr,
    /// `align_mask`.
    pub align_mask: u64,
    /// `align_offset`.
    pub align_offset: u64,
    /// `start_gap`.
    pub start_gap: u64,
}

/// A [`FitRequest`] with resolvable limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitOp {
    /// `length`.
    pub length: u64,
    /// `low`.
    pub low: Addr,
    /// `high`.
    pub high: Addr,
    /// `align` (not necessarily a power of two: that is an error to compare).
    pub align: u64,
    /// `align_offset`.
    pub align_offset: u64,
    /// Highest fit first.
    pub topdown: bool,
    /// Keep out of guard gaps.
    pub respect_guard_gaps: bool,
    /// The boundary the placement must not cross (0: none, then the plain
    /// `find_fit` and `allocate` run; not necessarily a power of two: that
    /// is an error to compare).
    pub boundary: u64,
}

/// An `mmap()` call with a resolvable hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmapOp {
    /// `length`.
    pub length: u64,
    /// The address argument.
    pub hint: Addr,
    /// Fixed mode.
    pub fixed: Fixed,
    /// `MAP_GROWSDOWN`.
    pub growsdown: bool,
    /// `MAP_32BIT`.
    pub map32bit: bool,
}

/// One operation of a [`TestCase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// [`AddressMap::insert`].
    Insert {
        /// Start.
        start: Addr,
        /// End.
        extent: Extent,
        /// Flags (none, grows-down, grows-up).
        flags: VmaFlags,
    },
    /// [`AddressMap::unmap`].
    Unmap {
        /// Start.
        start: Addr,
        /// End.
        extent: Extent,
    },
    /// [`AddressMap::unmapped_area`] with these parameters.
    Search(SearchOp, SearchParams),
    /// [`AddressMap::find_fit`] (or, with a boundary,
    /// [`AddressMap::find_fit_nocross`]) with these parameters.
    Fit(FitOp, SearchParams),
    /// [`AddressMap::allocate`] with these parameters (the model: its
    /// `find_fit`, then `insert`).
    Allocate(FitOp, SearchParams),
    /// [`Mm::mmap`].
    Mmap(MmapOp),
    /// [`Mm::mmap`] up to `count` times, stopping at the first error (fills
    /// holes, so that later searches run in a crowded map).
    MmapRepeat(MmapOp, u8),
    /// [`Mm::munmap`].
    Munmap {
        /// Start.
        start: Addr,
        /// Length.
        len: u64,
    },
    /// Every lookup (`find_vma`, `vma_at`, `prev_vma`, `next_vma`,
    /// `first_overlap`, `range`, `first`, `last`) at `addr` / over
    /// `[addr, extent)`.
    Lookup {
        /// The address.
        addr: Addr,
        /// The end of the range for `first_overlap` and `range`.
        extent: Extent,
    },
}

/// A whole differential run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// The process parameters of the two `Mm`s.
    pub cfg: MmConfig,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// What [`run`] did, for the statistics of the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Operations executed (skipped ones not counted; each `mmap` of an
    /// [`Op::MmapRepeat`] counted).
    pub ops: u64,
    /// Operations that changed the map.
    pub changes: u64,
    /// Searches and mmaps that returned an address.
    pub found: u64,
    /// Largest number of VMAs seen.
    pub max_vmas: usize,
    /// `unmapped_area` results whose postconditions were checked (no
    /// wrap-around possible; see [`check_search_postconditions`]).
    pub post_checked: u64,
    /// Fits with a boundary that found an address other than the plain
    /// fit's (the boundary decided the answer).
    pub boundary_moved: u64,
}

// ----- the model's lookups: linear scans, obviously right ---------------

/// The first VMA with `end > addr` (`find_vma`).
pub fn model_find_vma(v: &[Vma], addr: u64) -> Option<Vma> {
    v.iter().find(|x| x.end > addr).copied()
}

/// The VMA containing `addr`.
pub fn model_vma_at(v: &[Vma], addr: u64) -> Option<Vma> {
    v.iter().find(|x| x.start <= addr && addr < x.end).copied()
}

/// The last VMA starting below `addr`.
pub fn model_prev_vma(v: &[Vma], addr: u64) -> Option<Vma> {
    v.iter().rev().find(|x| x.start < addr).copied()
}

/// The first VMA starting at or above `addr`.
pub fn model_next_vma(v: &[Vma], addr: u64) -> Option<Vma> {
    v.iter().find(|x| x.start >= addr).copied()
}

/// The VMAs that intersect `[start, end)` (none if the range is empty).
pub fn model_range(v: &[Vma], start: u64, end: u64) -> Vec<Vma> {
    if start >= end {
        return Vec::new();
    }
    v.iter()
        .filter(|x| x.start < end && start < x.end)
        .copied()
        .collect()
}

/// The value of `a` in a map holding `vmas`.
fn resolve(vmas: &[Vma], a: Addr) -> u64 {
    match a {
        Addr::Abs(x) => x,
        Addr::Near { index, edge, delta } => {
            if vmas.is_empty() {
                return delta as u64;
            }
            let vma = vmas[index as usize % vmas.len()];
            let base = match edge {
                Edge::Start => vma.start,
                Edge::End => vma.end,
            };
            base.wrapping_add(delta as u64)
        }
    }
}

/// `[start, end)` in a map holding `vmas`, or `None` where a caller would
/// not call at all (`start + len` passes 2^64 and is not clipped).
fn fit_request(f: &FitOp, resolve: impl Fn(Addr) -> u64) -> FitRequest {
    FitRequest {
        length: f.length,
        low: resolve(f.low),
        high: resolve(f.high),
        align: f.align,
        align_offset: f.align_offset,
        topdown: f.topdown,
        respect_guard_gaps: f.respect_guard_gaps,
    }
}

fn range_of(vmas: &[Vma], start: Addr, extent: Extent) -> Option<(u64, u64)> {
    let s = resolve(vmas, start);
    match extent {
        Extent::Len { len, clip } => match s.checked_add(len) {
            Some(e) => Some((s, e)),
            None if clip => Some((s, u64::MAX)),
            None => None,
        },
        Extent::End(e) => Some((s, resolve(vmas, e))),
    }
}

/// The `mmap()` call of `o` in a map holding `vmas`.
fn mmap_request(vmas: &[Vma], o: &MmapOp) -> MmapRequest {
    MmapRequest {
        length: o.length,
        hint: resolve(vmas, o.hint),
        fixed: o.fixed,
        growsdown: o.growsdown,
        map32bit: o.map32bit,
    }
}

/// The tree, for assertion messages.
fn dump(map: &AddressMap) -> alloc::string::String {
    crate::check::dump(&map.t)
}

/// The two address spaces under test.
struct Pair {
    a: Mm<AddressMap>,
    m: Mm<ModelMap>,
    stats: RunStats,
}

impl Pair {
    fn vmas(&self) -> &[Vma] {
        self.m.space().vmas()
    }

    fn resolve(&self, a: Addr) -> u64 {
        resolve(self.vmas(), a)
    }

    /// `[start, end)`, or `None` where the caller would not call at all.
    fn range(&self, start: Addr, extent: Extent) -> Option<(u64, u64)> {
        range_of(self.vmas(), start, extent)
    }

    /// After an operation that may have changed the map (whether it did or
    /// failed): the invariants and equal VMA lists.
    fn after_change(&mut self, i: usize, op: &Op, changed: bool) {
        if changed {
            self.stats.changes += 1;
        }
        self.a.space().check_invariants();
        self.compare_lists(i, op);
    }

    fn compare_lists(&mut self, i: usize, op: &Op) {
        let a = self.a.space();
        let m = self.m.space().vmas();
        self.stats.max_vmas = self.stats.max_vmas.max(m.len());
        assert_eq!(a.len(), m.len(), "VMA count differs after op #{i} {op:?}");
        assert!(
            a.iter().eq(m.iter().copied()),
            "VMA lists differ after op #{i} {op:?}\nAddressMap: {:x?}\nModelMap: {m:x?}",
            a.iter().collect::<Vec<_>>()
        );
    }

    fn step(&mut self, i: usize, op: &Op) {
        match *op {
            Op::Insert {
                start,
                extent,
                flags,
            } => {
                let Some((s, e)) = self.range(start, extent) else {
                    return;
                };
                self.stats.ops += 1;
                let ra = self.a.space_mut().insert(s, e, flags);
                let rm = crate::linux::Space::insert(self.m.space_mut(), s, e, flags);
                assert_eq!(ra, rm, "op #{i} insert [{s:#x}, {e:#x}) {flags:?}");
                self.after_change(i, op, ra.is_ok());
            }
            Op::Unmap { start, extent } => {
                let Some((s, e)) = self.range(start, extent) else {
                    return;
                };
                self.stats.ops += 1;
                let ra = self.a.space_mut().unmap(s, e);
                let rm = crate::linux::Space::unmap(self.m.space_mut(), s, e);
                assert_eq!(ra, rm, "op #{i} unmap [{s:#x}, {e:#x})");
                self.after_change(i, op, ra.is_ok_and(|n| n > 0));
            }
            Op::Search(ref s, ref p) => {
                let info = UnmappedAreaInfo {
                    topdown: s.topdown,
                    length: s.length,
                    low_limit: self.resolve(s.low),
                    high_limit: self.resolve(s.high),
                    align_mask: s.align_mask,
                    align_offset: s.align_offset,
                    start_gap: s.start_gap,
                };
                self.stats.ops += 1;
                let ra = self.a.space().unmapped_area(&info, p);
                let rm = self.m.space().unmapped_area(&info, p);
                assert_eq!(
                    ra,
                    rm,
                    "op #{i} unmapped_area {info:#x?} {p:#x?}\ntree:\n{}",
                    dump(self.a.space())
                );
                if let Ok(addr) = ra {
                    self.stats.found += 1;
                    if check_search_postconditions(self.a.space(), &info, p, addr) {
                        self.stats.post_checked += 1;
                    }
                }
            }
            Op::Fit(ref f, ref p) => {
                let req = fit_request(f, |a| self.resolve(a));
                self.stats.ops += 1;
                let ra = self.a.space().find_fit_nocross(&req, f.boundary, p);
                let rm = self.m.space().find_fit_nocross(&req, f.boundary, p);
                assert_eq!(
                    ra,
                    rm,
                    "op #{i} find_fit_nocross (boundary {:#x}) {req:#x?} {p:#x?}\ntree:\n{}",
                    f.boundary,
                    dump(self.a.space())
                );
                let plain = self.a.space().find_fit(&req, p);
                if f.boundary == 0 {
                    // No boundary: the plain fit, the same answer.
                    assert_eq!(
                        plain.map_err(Nc::Fit),
                        ra,
                        "op #{i} find_fit {req:#x?} {p:#x?}\ntree:\n{}",
                        dump(self.a.space())
                    );
                    assert_eq!(
                        plain,
                        self.m.space().find_fit(&req, p),
                        "op #{i} model find_fit {req:#x?} {p:#x?}"
                    );
                }
                if let Ok(addr) = ra {
                    self.stats.found += 1;
                    check_nocross_postconditions(self.a.space(), &req, f.boundary, p, addr);
                    if plain != Ok(addr) {
                        self.stats.boundary_moved += 1;
                    }
                }
            }
            Op::Allocate(ref f, ref p) => {
                let req = fit_request(f, |a| self.resolve(a));
                self.stats.ops += 1;
                let rm = self.m.space().find_fit_nocross(&req, f.boundary, p);
                if let Ok(addr) = rm {
                    // Checked against the map before the insert.
                    check_nocross_postconditions(self.a.space(), &req, f.boundary, p, addr);
                }
                let ra = if f.boundary == 0 {
                    self.a
                        .space_mut()
                        .allocate(&req, p, VmaFlags::NONE)
                        .map_err(Nc::Fit)
                } else {
                    self.a
                        .space_mut()
                        .allocate_nocross(&req, f.boundary, p, VmaFlags::NONE)
                };
                assert_eq!(
                    ra,
                    rm,
                    "op #{i} allocate {req:#x?} {p:#x?}\ntree after:\n{}",
                    dump(self.a.space())
                );
                if let Ok(addr) = rm {
                    self.stats.found += 1;
                    let ins = crate::linux::Space::insert(
                        self.m.space_mut(),
                        addr,
                        addr + req.length,
                        VmaFlags::NONE,
                    );
                    assert!(ins.is_ok(), "op #{i}: the model refused its own fit");
                }
                self.after_change(i, op, rm.is_ok());
            }
            Op::Mmap(ref o) => {
                let req = self.mmap_request(o);
                let _ = self.mmap(i, op, &req);
            }
            Op::MmapRepeat(ref o, count) => {
                // The hint is resolved once: the same call, repeated.
                let req = self.mmap_request(o);
                for _ in 0..count {
                    if self.mmap(i, op, &req).is_err() {
                        break;
                    }
                }
            }
            Op::Munmap { start, len } => {
                let s = self.resolve(start);
                self.stats.ops += 1;
                let ra = self.a.munmap(s, len);
                let rm = self.m.munmap(s, len);
                assert_eq!(ra, rm, "op #{i} munmap({s:#x}, {len:#x})");
                self.after_change(i, op, ra.is_ok());
            }
            Op::Lookup { addr, extent } => {
                let Some((s, e)) = self.range(addr, extent) else {
                    return;
                };
                self.stats.ops += 1;
                self.lookups(i, s, e);
            }
        }
    }

    fn mmap_request(&self, o: &MmapOp) -> MmapRequest {
        mmap_request(self.vmas(), o)
    }

    fn mmap(&mut self, i: usize, op: &Op, req: &MmapRequest) -> Result<u64, Errno> {
        self.stats.ops += 1;
        let ra = self.a.mmap(req);
        let rm = self.m.mmap(req);
        assert_eq!(
            ra,
            rm,
            "op #{i} mmap {req:#x?} cfg {:#x?}\ntree:\n{}",
            self.a.config(),
            dump(self.a.space())
        );
        if let Ok(addr) = ra {
            self.stats.found += 1;
            self.check_mmap_postconditions(i, req, addr);
        }
        self.after_change(i, op, ra.is_ok());
        ra
    }

    /// What a successful `mmap()` promises (the policy code is shared by
    /// both sides, so only these checks can catch a bug in it): a
    /// page-aligned VMA of the rounded length, below `task_size`, and for a
    /// non-fixed call clear of the guard gap of a grows-down VMA above.
    fn check_mmap_postconditions(&self, i: usize, req: &MmapRequest, addr: u64) {
        let cfg = self.a.config();
        let len = crate::linux::page_align(req.length);
        let ctx = || {
            alloc::format!(
                "op #{i} mmap {req:#x?} = {addr:#x}, cfg {cfg:#x?}\ntree:\n{}",
                dump(self.a.space())
            )
        };
        assert_eq!(addr % PAGE_SIZE, 0, "unaligned: {}", ctx());
        let end = addr.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= cfg.task_size),
            "beyond task_size: {}",
            ctx()
        );
        let end = addr + len;
        let v = self.a.space().vma_at(addr);
        assert_eq!(
            v.map(|v| (v.start, v.end)),
            Some((addr, end)),
            "not its VMA: {}",
            ctx()
        );
        if req.fixed == Fixed::No && cfg.stack_guard_gap.is_multiple_of(PAGE_SIZE) {
            if let Some(next) = self.a.space().next_vma(end) {
                if next.flags.contains(VmaFlags::GROWSDOWN) {
                    let sg = next.start.saturating_sub(cfg.stack_guard_gap);
                    assert!(end <= sg, "in the guard gap of {next:x?}: {}", ctx());
                }
            }
        }
    }

    fn lookups(&self, i: usize, s: u64, e: u64) {
        let a = self.a.space();
        let v = self.vmas();
        assert_eq!(
            a.find_vma(s),
            model_find_vma(v, s),
            "op #{i} find_vma({s:#x})"
        );
        assert_eq!(a.vma_at(s), model_vma_at(v, s), "op #{i} vma_at({s:#x})");
        assert_eq!(
            a.prev_vma(s),
            model_prev_vma(v, s),
            "op #{i} prev_vma({s:#x})"
        );
        assert_eq!(
            a.next_vma(s),
            model_next_vma(v, s),
            "op #{i} next_vma({s:#x})"
        );
        assert_eq!(a.first(), v.first().copied(), "op #{i} first()");
        assert_eq!(a.last(), v.last().copied(), "op #{i} last()");
        // Empty and inverted ranges included: they intersect nothing.
        let want = model_range(v, s, e);
        assert_eq!(
            a.first_overlap(s, e),
            want.first().copied(),
            "op #{i} first_overlap({s:#x}, {e:#x})"
        );
        assert!(
            a.range(s, e).eq(want.iter().copied()),
            "op #{i} range({s:#x}, {e:#x}): {:x?} != {want:x?}",
            a.range(s, e).collect::<Vec<_>>()
        );
    }
}

/// Where no wrap-around can happen (the padded length fits in 64 bits, the
/// alignment mask is `2^k - 1`, no guard-gap retry can move a limit to 0),
/// checks what [`AddressMap::unmapped_area`]'s doc comment promises about
/// its result `addr`, and returns true; returns false without checking
/// otherwise.
pub fn check_search_postconditions(
    map: &AddressMap,
    info: &UnmappedAreaInfo,
    p: &SearchParams,
    addr: u64,
) -> bool {
    let Some(padded) = info
        .length
        .checked_add(info.align_mask)
        .and_then(|x| x.checked_add(info.start_gap))
    else {
        return false;
    };
    let mask_ok = info.align_mask.wrapping_add(1) & info.align_mask == 0;
    let near_zero = map.first().is_some_and(|v| v.start == 0)
        || map
            .iter()
            .any(|v| v.flags.contains(VmaFlags::GROWSDOWN) && v.start <= p.stack_guard_gap);
    if !mask_ok || near_zero || info.length == 0 {
        return false;
    }
    let low = info.low_limit.max(p.mmap_min_addr);
    let end = addr.checked_add(info.length);
    let ctx = || {
        alloc::format!(
            "unmapped_area {info:#x?} {p:#x?} = {addr:#x}\ntree:\n{}",
            dump(map)
        )
    };
    assert!(addr >= low, "below the window: {}", ctx());
    assert!(
        end.is_some_and(|e| e <= info.high_limit),
        "above the window: {}",
        ctx()
    );
    assert_eq!(
        addr & info.align_mask,
        info.align_offset & info.align_mask,
        "unaligned: {}",
        ctx()
    );
    let end = addr + info.length;
    let from = addr.checked_sub(info.start_gap);
    assert!(
        from.is_some_and(|f| f >= low),
        "start gap below the window: {}",
        ctx()
    );
    let from = addr - info.start_gap;
    assert!(
        map.first_overlap(from, end).is_none(),
        "not free: {}",
        ctx()
    );
    // The VMA above the result: its guard gap must stay clear of the padded
    // area (bottom-up: `sg >= gap + padded - 1`) or of the hole (top-down).
    if let Some(next) = map.next_vma(end) {
        if next.flags.contains(VmaFlags::GROWSDOWN) {
            let sg = next.start.saturating_sub(p.stack_guard_gap);
            if info.topdown {
                assert!(sg >= end, "in the guard gap of {next:x?}: {}", ctx());
            } else if let Some(top) = addr.checked_add(padded - 1) {
                // `gap + length - 1` of the kernel, where it does not wrap.
                assert!(sg >= top, "in the guard gap of {next:x?}: {}", ctx());
            }
        }
    }
    true
}

/// A fit's result with the error in one type for both APIs.
type Nc = crate::NoCrossError;

/// What a successful [`AddressMap::find_fit_nocross`] promises: what
/// [`check_fit_postconditions`] checks, and with a non-zero `boundary` no
/// multiple of it strictly inside `(addr, addr + length)`.
pub fn check_nocross_postconditions(
    map: &AddressMap,
    req: &FitRequest,
    boundary: u64,
    p: &SearchParams,
    addr: u64,
) {
    check_fit_postconditions(map, req, p, addr);
    // The last byte lies in the block of the first (no boundary: nothing
    // to check).
    let last = addr + (req.length - 1);
    assert_eq!(
        addr.checked_div(boundary),
        last.checked_div(boundary),
        "find_fit_nocross {req:#x?} boundary {boundary:#x} = {addr:#x} crosses a multiple"
    );
}

/// What a successful [`AddressMap::find_fit`] promises.
pub fn check_fit_postconditions(map: &AddressMap, req: &FitRequest, p: &SearchParams, addr: u64) {
    let ctx = || {
        alloc::format!(
            "find_fit {req:#x?} {p:#x?} = {addr:#x}\ntree:\n{}",
            dump(map)
        )
    };
    assert!(addr >= req.low, "below the window: {}", ctx());
    let end = addr.checked_add(req.length);
    assert!(
        end.is_some_and(|e| e <= req.high),
        "above the window: {}",
        ctx()
    );
    let end = addr + req.length;
    assert_eq!(
        addr.wrapping_sub(req.align_offset) & (req.align - 1),
        0,
        "unaligned: {}",
        ctx()
    );
    assert!(
        map.first_overlap(addr, end).is_none(),
        "not free: {}",
        ctx()
    );
    if req.respect_guard_gaps {
        if let Some(next) = map.next_vma(end) {
            if next.flags.contains(VmaFlags::GROWSDOWN) {
                let sg = next.start.saturating_sub(p.stack_guard_gap);
                assert!(sg >= end, "in the guard gap of {next:x?}: {}", ctx());
            }
        }
        if p.growsup_guard {
            if let Some(prev) = map.prev_vma(addr) {
                if prev.flags.contains(VmaFlags::GROWSUP) {
                    let eg = prev
                        .end
                        .checked_add(p.stack_guard_gap)
                        .unwrap_or(p.page_size.wrapping_neg());
                    assert!(eg <= addr, "in the guard gap of {prev:x?}: {}", ctx());
                }
            }
        }
    }
}

/// Runs `case` on both implementations; panics on the first disagreement.
pub fn run(case: &TestCase) -> RunStats {
    let mut pair = Pair {
        a: Mm::new(case.cfg),
        m: Mm::new(case.cfg),
        stats: RunStats::default(),
    };
    for (i, op) in case.ops.iter().enumerate() {
        pair.step(i, op);
    }
    pair.a.space().check_invariants();
    pair.compare_lists(
        case.ops.len(),
        &Op::Lookup {
            addr: Addr::Abs(0),
            extent: Extent::Len { len: 0, clip: true },
        },
    );
    pair.stats
}

/// `case` with every [`Addr::Near`] replaced by the [`Addr::Abs`] it
/// resolves to when the case runs (on the model alone), so that removing an
/// operation no longer moves the addresses of the later ones: the first
/// step of shrinking a failing case. May panic where the model panics.
pub fn concretize(case: &TestCase) -> TestCase {
    let mut m: Mm<ModelMap> = Mm::new(case.cfg);
    let mut ops = Vec::with_capacity(case.ops.len());
    for op in &case.ops {
        let v = m.space().vmas();
        let abs = |a: Addr| Addr::Abs(resolve(v, a));
        let ext = |e: Extent| match e {
            Extent::End(a) => Extent::End(abs(a)),
            e => e,
        };
        let mm = |o: MmapOp| MmapOp {
            hint: abs(o.hint),
            ..o
        };
        let op = match *op {
            Op::Insert {
                start,
                extent,
                flags,
            } => Op::Insert {
                start: abs(start),
                extent: ext(extent),
                flags,
            },
            Op::Unmap { start, extent } => Op::Unmap {
                start: abs(start),
                extent: ext(extent),
            },
            Op::Search(s, p) => Op::Search(
                SearchOp {
                    low: abs(s.low),
                    high: abs(s.high),
                    ..s
                },
                p,
            ),
            Op::Fit(f, p) => Op::Fit(
                FitOp {
                    low: abs(f.low),
                    high: abs(f.high),
                    ..f
                },
                p,
            ),
            Op::Allocate(f, p) => Op::Allocate(
                FitOp {
                    low: abs(f.low),
                    high: abs(f.high),
                    ..f
                },
                p,
            ),
            Op::Mmap(o) => Op::Mmap(mm(o)),
            Op::MmapRepeat(o, n) => Op::MmapRepeat(mm(o), n),
            Op::Munmap { start, len } => Op::Munmap {
                start: abs(start),
                len,
            },
            Op::Lookup { addr, extent } => Op::Lookup {
                addr: abs(addr),
                extent: ext(extent),
            },
        };
        // The same changes as `Pair::step`, on the model only.
        let v = m.space().vmas();
        match op {
            Op::Insert {
                start,
                extent,
                flags,
            } => {
                if let Some((s, e)) = range_of(v, start, extent) {
                    let _ = crate::linux::Space::insert(m.space_mut(), s, e, flags);
                }
            }
            Op::Unmap { start, extent } => {
                if let Some((s, e)) = range_of(v, start, extent) {
                    let _ = crate::linux::Space::unmap(m.space_mut(), s, e);
                }
            }
            Op::Mmap(o) | Op::MmapRepeat(o, _) => {
                let n = if let Op::MmapRepeat(_, n) = op { n } else { 1 };
                let req = mmap_request(v, &o);
                for _ in 0..n {
                    if m.mmap(&req).is_err() {
                        break;
                    }
                }
            }
            Op::Munmap { start, len } => {
                let _ = m.munmap(resolve(v, start), len);
            }
            Op::Allocate(f, p) => {
                let req = fit_request(&f, |a| resolve(v, a));
                if let Ok(a) = m.space().find_fit_nocross(&req, f.boundary, &p) {
                    let _ = crate::linux::Space::insert(
                        m.space_mut(),
                        a,
                        a + req.length,
                        VmaFlags::NONE,
                    );
                }
            }
            Op::Search(..) | Op::Fit(..) | Op::Lookup { .. } => {}
        }
        ops.push(op);
    }
    TestCase { cfg: case.cfg, ops }
}

/// Decodes `data` into a [`TestCase`] and [`run`]s it: the fuzz target.
pub fn check(data: &[u8]) {
    run(&decode(data));
}

// ----- decoding a byte string ------------------------------------------

/// At most this many operations per decoded case (the model is O(n)).
pub const MAX_OPS: usize = 1024;

/// Reads little-endian values from a byte string; zeros once it runs out.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.u8() as usize % xs.len()]
    }

    /// A small signed offset: pages, bytes or a guard gap and a bit.
    fn delta(&mut self) -> i64 {
        let k = self.u8();
        let small = self.u8() as i8 as i64;
        match k % 8 {
            0 => 0,
            1..=3 => small * PAGE_SIZE as i64,
            4 => small,
            5 => small * PMD_SIZE as i64,
            6 => -(0x10_0000) + small * PAGE_SIZE as i64,
            _ => self.u16() as i16 as i64 * PAGE_SIZE as i64 + (self.u8() as i64 & 1),
        }
    }

    /// An address drawn from a few scales, page-granular or not.
    fn addr(&mut self) -> Addr {
        let k = self.u8();
        match k % 16 {
            0..=5 => Addr::Near {
                index: self.u8() as u16,
                edge: if self.bool() { Edge::Start } else { Edge::End },
                delta: self.delta(),
            },
            6..=14 => {
                let base = self.pick(&[
                    0u64,
                    1 << 32,
                    1 << 47,
                    DEFAULT_MAP_WINDOW,
                    0, // near 2^64: base 0, negative delta
                    LEGACY_BASE,
                    MAP_32BIT_BEGIN,
                    MAP_32BIT_END,
                    0x7fff_f7ff_f000,
                    (1 << 56) - PAGE_SIZE,
                    0x10000,
                ]);
                Addr::Abs(base.wrapping_add(self.delta() as u64))
            }
            _ => Addr::Abs(self.u64()),
        }
    }

    /// A length: pages, PMD multiples and their neighbours, bytes, huge
    /// values and values near 2^64.
    fn len(&mut self) -> u64 {
        let k = self.u8();
        let n = self.u8() as u64;
        match k % 12 {
            0..=3 => (1 + n % 32) * PAGE_SIZE,
            4 => (1 + n % 8) * PMD_SIZE,
            5 => ((1 + n % 8) * PMD_SIZE).wrapping_add(self.pick(&[
                PAGE_SIZE,
                PAGE_SIZE.wrapping_neg(),
                1,
            ])),
            6 => n + 1 + (self.u8() as u64) * 256,
            7 => 1u64 << (n % 64),
            8 => (1u64 << (20 + n % 28)).wrapping_add(self.delta() as u64),
            9 => 0u64.wrapping_sub(n * PAGE_SIZE + self.pick(&[0, 1, PAGE_SIZE])),
            10 => self.pick(&[0, 1, PAGE_SIZE - 1, PAGE_SIZE + 1, 0x10_0000]),
            _ => self.u64(),
        }
    }

    fn extent(&mut self) -> Extent {
        match self.u8() % 8 {
            0 => Extent::End(self.addr()),
            k => Extent::Len {
                len: self.len(),
                clip: k % 2 == 0,
            },
        }
    }

    fn flags(&mut self) -> VmaFlags {
        match self.u8() % 6 {
            0 => VmaFlags::GROWSDOWN,
            1 => VmaFlags::GROWSUP,
            _ => VmaFlags::NONE,
        }
    }

    /// `2^k - 1`: the kernel's masks.
    fn mask(&mut self) -> u64 {
        match self.u8() % 4 {
            0 | 1 => 0,
            2 => self.pick(&[0xfff, 0xffff, 0x1f_ffff, 0x3fff_ffff]),
            _ => {
                let k = self.u8() % 65;
                if k == 64 {
                    u64::MAX
                } else {
                    (1u64 << k) - 1
                }
            }
        }
    }

    fn offset(&mut self) -> u64 {
        match self.u8() % 4 {
            0 | 1 => 0,
            2 => self.u8() as u64 * PAGE_SIZE,
            _ => self.u64(),
        }
    }

    fn params(&mut self, cfg: &MmConfig) -> SearchParams {
        let k = self.u8();
        if k.is_multiple_of(4) {
            return cfg.search_params();
        }
        SearchParams {
            mmap_min_addr: self.pick(&[0, 0, 0x1000, 0x10000, 0x10001, cfg.mmap_min_addr]),
            stack_guard_gap: self.pick(&[0x10_0000, 0x10_0000, 0, 0x1000, 0x12345, 1 << 63]),
            growsup_guard: self.bool(),
            page_size: self.pick(&[PAGE_SIZE, PAGE_SIZE, 0x1_0000, 1]),
        }
    }

    fn config(&mut self) -> MmConfig {
        let d = MmConfig::default();
        let task_size = match self.u8() % 8 {
            0..=3 => d.task_size,
            4 => (1 << 56) - PAGE_SIZE,
            5 => self.pick(&[1 << 32, 0x1000_0000, DEFAULT_MAP_WINDOW + 1, 0]),
            6 => u64::MAX - self.u8() as u64,
            _ => self.u64(),
        };
        let mmap_base = match self.u8() % 8 {
            0..=3 => d.mmap_base,
            4 => self.pick(&[0x1555_5555_6000, 0x7fff_bfef_f000]),
            5 => self.pick(&[0, u64::MAX, 0x1000_0000, 0x1234_5678]),
            6 => task_size.wrapping_add(self.delta() as u64),
            _ => self.u64(),
        };
        MmConfig {
            task_size,
            mmap_min_addr: self.pick(&[0x10000, 0x10000, 0, 0x1000, 0x10001, 0x7fff_ffff]),
            stack_guard_gap: self.pick(&[0x10_0000, 0x10_0000, 0, 0x1000, 0x1234, u64::MAX]),
            layout: if self.bool() {
                Layout::Legacy
            } else {
                Layout::TopDown
            },
            mmap_base,
            thp_align: !self.u8().is_multiple_of(4),
        }
    }

    fn mmap_op(&mut self) -> MmapOp {
        let k = self.u8();
        MmapOp {
            length: self.len(),
            hint: if k & 3 == 0 {
                self.addr()
            } else {
                Addr::Abs(0)
            },
            fixed: match (k >> 2) % 8 {
                0 => Fixed::Fixed,
                1 => Fixed::NoReplace,
                _ => Fixed::No,
            },
            growsdown: (k >> 5) & 3 == 0,
            map32bit: (k >> 7) & 1 != 0 && self.bool(),
        }
    }

    fn op(&mut self, cfg: &MmConfig) -> Op {
        let k = self.u8();
        match k % 16 {
            0..=2 => Op::Insert {
                start: self.addr(),
                extent: self.extent(),
                flags: self.flags(),
            },
            3 | 4 => Op::Unmap {
                start: self.addr(),
                extent: self.extent(),
            },
            5..=7 => Op::Search(
                SearchOp {
                    topdown: self.bool(),
                    length: self.len(),
                    low: self.addr(),
                    high: self.addr(),
                    align_mask: self.mask(),
                    align_offset: self.offset(),
                    start_gap: self.pick(&[0, 0, 0, PAGE_SIZE, 1, u64::MAX]),
                },
                self.params(cfg),
            ),
            8 | 9 => Op::Fit(
                FitOp {
                    length: self.len(),
                    low: self.addr(),
                    high: self.addr(),
                    align: match self.u8() % 8 {
                        0 => self.u64(),
                        1 => 0,
                        k => 1u64 << ((k as u64 * 7 + self.u8() as u64) % 64),
                    },
                    align_offset: self.offset(),
                    topdown: self.bool(),
                    respect_guard_gaps: self.bool(),
                    // From the operation's own byte, so that the bytes of
                    // every operation decode as before.
                    boundary: [
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        PAGE_SIZE,
                        2 * PAGE_SIZE,
                        0x10000,
                        PMD_SIZE,
                        1 << 32,
                        1,
                        1 << 63,
                        0x3000,
                    ][usize::from(k >> 4)],
                },
                self.params(cfg),
            ),
            10 | 11 => Op::Mmap(self.mmap_op()),
            12 => Op::MmapRepeat(self.mmap_op(), self.u8() % 64),
            13 => Op::Munmap {
                start: self.addr(),
                len: self.len(),
            },
            _ => Op::Lookup {
                addr: self.addr(),
                extent: self.extent(),
            },
        }
    }
}

/// Decodes a byte string into a [`TestCase`]: a configuration, then
/// operations until the bytes run out (at most [`MAX_OPS`]). Every byte
/// string is a valid case.
pub fn decode(data: &[u8]) -> TestCase {
    let mut b = Bytes { data };
    let cfg = b.config();
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(b.op(&cfg));
    }
    TestCase { cfg, ops }
}
