//! The x86-64 Linux `mmap` placement policy (`docs/linux-semantics.md`,
//! "x86-64 placement" and "mmap") on top of an address-space map.
//!
//! [`Mm::mmap`] does what an anonymous private `mmap()` does in a process
//! with the given layout: `do_mmap()`'s argument checks, hint rounding,
//! `__get_unmapped_area()` with the transparent-huge-page alignment, the
//! architecture's top-down or bottom-up placement with hints, `MAP_32BIT`
//! and the top-down-to-bottom-up fallback, the post-checks, then
//! `MAP_FIXED_NOREPLACE`'s overlap test, `MAP_FIXED`'s unmap, and the
//! insertion of the new VMA.
//!
//! The policy is generic over [`Space`], so the same code runs on the fast
//! [`AddressMap`] and on the reference model `ModelMap` (the `model`
//! module, built with the `fuzzing` feature).

use core::fmt;

use crate::map::{AddressMap, MapError, SearchParams, Vma, VmaFlags};
use crate::search::{SearchError, UnmappedAreaInfo};

/// The page size (x86-64).
pub const PAGE_SIZE: u64 = 0x1000;
/// `PMD_SIZE`: the size of a transparent huge page.
pub const PMD_SIZE: u64 = 0x20_0000;
/// `DEFAULT_MAP_WINDOW`: the top of the 47-bit user space, minus a page.
pub const DEFAULT_MAP_WINDOW: u64 = (1 << 47) - PAGE_SIZE;
/// `mmap_legacy_base` without randomisation:
/// `PAGE_ALIGN(DEFAULT_MAP_WINDOW / 3)`.
pub const LEGACY_BASE: u64 = page_align(DEFAULT_MAP_WINDOW / 3);
/// The start of the `MAP_32BIT` window (1 GiB).
pub const MAP_32BIT_BEGIN: u64 = 0x4000_0000;
/// The end of the `MAP_32BIT` window (2 GiB).
pub const MAP_32BIT_END: u64 = 0x8000_0000;
/// `MAX_ERRNO`: values at or above `-MAX_ERRNO` are errors (`IS_ERR_VALUE`).
const MAX_ERRNO: u64 = 4095;

/// Rounds up to a page, wrapping to 0 past 2^64 like `PAGE_ALIGN`.
pub const fn page_align(x: u64) -> u64 {
    x.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// A Linux error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub u16);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(1);
    /// Out of memory / no room in the address space.
    pub const ENOMEM: Errno = Errno(12);
    /// The range is already mapped (`MAP_FIXED_NOREPLACE`).
    pub const EEXIST: Errno = Errno(17);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);

    /// The symbolic name (`"ENOMEM"`), or `"E<number>"` for numbers
    /// without one here.
    pub fn name(self) -> ErrnoName {
        ErrnoName(self)
    }

    /// Parses exactly what [`Errno::name`] prints for an errno in
    /// `1..=4095`: a symbolic name (`"ENOMEM"`), or `"E"` and the decimal
    /// number, without sign or leading zeros, for a number that has no name
    /// here (`"E4095"`). `"E12"` (printed as `"ENOMEM"`), `"E+99"`,
    /// `"E099"` and `"E0"` are refused.
    pub fn from_name(s: &str) -> Option<Errno> {
        if s.is_empty() {
            return None;
        }
        if let Some(i) = NAMES.iter().position(|n| *n == s) {
            return Some(Errno(i as u16));
        }
        let digits = s.strip_prefix('E')?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n: u16 = digits.parse().ok()?;
        let named = NAMES.get(usize::from(n)).is_some_and(|x| !x.is_empty());
        ((1..=MAX_ERRNO as u16).contains(&n) && !named).then_some(Errno(n))
    }
}

/// Display adapter of [`Errno::name`].
pub struct ErrnoName(Errno);

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NAMES.get(self.0 .0 as usize) {
            Some(n) if !n.is_empty() => f.write_str(n),
            _ => write!(f, "E{}", self.0 .0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.name().fmt(f)
    }
}

/// asm-generic/errno-base.h (1..=34) and the first few of errno.h.
const NAMES: [&str; 41] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
];

/// What the policy needs from an address-space map. Implemented by the
/// fast [`AddressMap`] and by the reference model `ModelMap` (the `model`
/// module, built with the `fuzzing` feature).
pub trait Space {
    /// Inserts `[start, end)`; error on overlap.
    fn insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), MapError>;
    /// Removes everything in `[start, end)`, splitting VMAs.
    fn unmap(&mut self, start: u64, end: u64) -> Result<usize, MapError>;
    /// The first VMA with `end > addr` (`find_vma`).
    fn find_vma(&self, addr: u64) -> Option<Vma>;
    /// The kernel's `vm_unmapped_area()`.
    fn unmapped_area(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
    ) -> Result<u64, SearchError>;
}

impl Space for AddressMap {
    fn insert(&mut self, start: u64, end: u64, flags: VmaFlags) -> Result<(), MapError> {
        AddressMap::insert(self, start, end, flags)
    }
    fn unmap(&mut self, start: u64, end: u64) -> Result<usize, MapError> {
        AddressMap::unmap(self, start, end)
    }
    fn find_vma(&self, addr: u64) -> Option<Vma> {
        AddressMap::find_vma(self, addr)
    }
    fn unmapped_area(
        &self,
        info: &UnmappedAreaInfo,
        params: &SearchParams,
    ) -> Result<u64, SearchError> {
        AddressMap::unmapped_area(self, info, params)
    }
}

/// Top-down (`MMF_TOPDOWN`) or legacy bottom-up layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Search down from `mmap_base`; fall back to bottom-up.
    #[default]
    TopDown,
    /// Search up from the legacy base (`ADDR_COMPAT_LAYOUT`).
    Legacy,
}

/// The parameters of one process's address space (the `reset` of a
/// trace). Values are taken as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmConfig {
    /// `TASK_SIZE` (and `TASK_SIZE_MAX`): the end of user space.
    pub task_size: u64,
    /// The kernel-internal `mmap_min_addr` (the effective floor).
    pub mmap_min_addr: u64,
    /// `stack_guard_gap` in bytes.
    pub stack_guard_gap: u64,
    /// The layout chosen at `execve`.
    pub layout: Layout,
    /// `mm->mmap_base`, the top of the top-down search.
    pub mmap_base: u64,
    /// Whether the kernel has `CONFIG_TRANSPARENT_HUGEPAGE` (the THP
    /// alignment of anonymous mappings whose length is a multiple of 2 MiB).
    pub thp_align: bool,
}

impl Default for MmConfig {
    /// x86-64, 4-level paging, 8 MiB stack, no randomisation.
    fn default() -> Self {
        MmConfig {
            task_size: DEFAULT_MAP_WINDOW,
            mmap_min_addr: 0x10000,
            stack_guard_gap: 0x10_0000,
            layout: Layout::TopDown,
            mmap_base: 0x7fff_f7ff_f000,
            thp_align: true,
        }
    }
}

impl MmConfig {
    /// The search parameters this configuration implies.
    pub fn search_params(&self) -> SearchParams {
        SearchParams {
            mmap_min_addr: self.mmap_min_addr,
            stack_guard_gap: self.stack_guard_gap,
            growsup_guard: false,
            page_size: PAGE_SIZE,
        }
    }
}

/// x86-64 `mmap_base` of a top-down layout without randomisation, from the
/// stack rlimit (`None` for `RLIM_INFINITY`): `DEFAULT_MAP_WINDOW - gap`,
/// where `gap` is the rlimit plus the stack guard gap, clamped to
/// `[128 MiB, DEFAULT_MAP_WINDOW / 6 * 5]` (`arch/x86/mm/mmap.c`).
pub fn mmap_base_for_stack_rlimit(rlimit: Option<u64>, stack_guard_gap: u64) -> u64 {
    let mut gap = rlimit.unwrap_or(u64::MAX);
    // stack_maxrandom_size is 0 without PF_RANDOMIZE.
    let pad = stack_guard_gap;
    if let Some(g) = gap.checked_add(pad) {
        gap = g;
    }
    let gap_min = 128 << 20;
    let gap_max = DEFAULT_MAP_WINDOW / 6 * 5;
    gap = gap.clamp(gap_min, gap_max);
    page_align(DEFAULT_MAP_WINDOW - gap)
}

/// `MAP_FIXED` and friends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fixed {
    /// The hint is only a hint.
    #[default]
    No,
    /// `MAP_FIXED`: map exactly there, replacing what is there.
    Fixed,
    /// `MAP_FIXED_NOREPLACE`: map exactly there or fail with `EEXIST`.
    NoReplace,
}

/// An anonymous private `mmap()` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapRequest {
    /// Length in bytes (rounded up to a page; 0 is `EINVAL`).
    pub length: u64,
    /// The address argument (0: no hint).
    pub hint: u64,
    /// Fixed mode.
    pub fixed: Fixed,
    /// `MAP_GROWSDOWN`.
    pub growsdown: bool,
    /// `MAP_32BIT`.
    pub map32bit: bool,
}

/// One process's address space with the Linux x86-64 placement policy.
#[derive(Clone, Debug)]
pub struct Mm<S: Space = AddressMap> {
    space: S,
    cfg: MmConfig,
    params: SearchParams,
}

#[inline]
fn is_err_value(x: u64) -> bool {
    x >= MAX_ERRNO.wrapping_neg()
}

impl<S: Space + Default> Mm<S> {
    /// An empty address space with these parameters.
    pub fn new(cfg: MmConfig) -> Self {
        Mm {
            space: S::default(),
            cfg,
            params: cfg.search_params(),
        }
    }
}

impl<S: Space> Mm<S> {
    /// The map underneath.
    pub fn space(&self) -> &S {
        &self.space
    }

    /// The map underneath, for raw `map`/`unmap` operations.
    pub fn space_mut(&mut self) -> &mut S {
        &mut self.space
    }

    /// The parameters.
    pub fn config(&self) -> &MmConfig {
        &self.cfg
    }

    /// The search parameters implied by the configuration.
    pub fn search_params(&self) -> &SearchParams {
        &self.params
    }

    /// The kernel's `vm_unmapped_area()` with this process's floor and
    /// guard gap (the `find` operation of a trace).
    pub fn find(&self, info: &UnmappedAreaInfo) -> Result<u64, SearchError> {
        self.space.unmapped_area(info, &self.params)
    }

    /// An anonymous private `mmap()`: returns the address of the new VMA,
    /// which is inserted, or the errno the kernel answers.
    pub fn mmap(&mut self, req: &MmapRequest) -> Result<u64, Errno> {
        let (addr, len) = self.get_unmapped_area(req)?;
        let end = addr + len; // no overflow: addr <= task_size - len
        match req.fixed {
            Fixed::NoReplace => {
                if self.space.find_vma(addr).is_some_and(|v| v.start < end) {
                    return Err(Errno::EEXIST);
                }
            }
            Fixed::Fixed => {
                // Cannot fail: the range is non-empty.
                let _ = self.space.unmap(addr, end);
            }
            Fixed::No => {}
        }
        let flags = if req.growsdown {
            VmaFlags::GROWSDOWN
        } else {
            VmaFlags::NONE
        };
        match self.space.insert(addr, end, flags) {
            Ok(()) => Ok(addr),
            Err(MapError::TooManyVmas) => Err(Errno::ENOMEM),
            Err(e) => {
                // The placement rules only hand out free ranges.
                debug_assert!(false, "placement returned a taken range: {e}");
                Err(Errno::ENOMEM)
            }
        }
    }

    /// `munmap()`: `EINVAL` for an unaligned start, a zero length or a
    /// range beyond `task_size`; otherwise removes `[start, start + len)`
    /// rounded up to a page.
    pub fn munmap(&mut self, start: u64, len: u64) -> Result<(), Errno> {
        let ts = self.cfg.task_size;
        if !start.is_multiple_of(PAGE_SIZE) || start > ts || len > ts - start {
            return Err(Errno::EINVAL);
        }
        let len = page_align(len);
        // A task_size within a page of 2^64 (not an x86-64 value) could
        // carry start + len past 2^64.
        let Some(end) = start.checked_add(len).filter(|_| len != 0) else {
            return Err(Errno::EINVAL);
        };
        self.space
            .unmap(start, end)
            .map(|_| ())
            .map_err(|_| Errno::ENOMEM)
    }

    /// Where `mmap(req)` would place its mapping, without inserting it:
    /// `do_mmap()` up to and including `__get_unmapped_area()`. Returns the
    /// address and the page-rounded length. `MAP_FIXED_NOREPLACE`'s `EEXIST`
    /// is decided later, by [`Mm::mmap`].
    pub fn get_unmapped_area(&self, req: &MmapRequest) -> Result<(u64, u64), Errno> {
        if req.length == 0 {
            return Err(Errno::EINVAL);
        }
        let fixed = req.fixed != Fixed::No;
        let mut addr = req.hint;
        if !fixed {
            addr = self.round_hint_to_min(addr);
        }
        let len = page_align(req.length);
        if len == 0 {
            return Err(Errno::ENOMEM);
        }
        // __get_unmapped_area()
        let ts = self.cfg.task_size;
        if len > ts {
            return Err(Errno::ENOMEM);
        }
        let f = Flags {
            fixed,
            map32bit: req.map32bit,
        };
        let addr = if self.cfg.thp_align && addr == 0 && len.is_multiple_of(PMD_SIZE) {
            self.thp_get_unmapped_area(addr, len, f)?
        } else {
            self.arch_get_unmapped_area(addr, len, f)?
        };
        if is_err_value(addr) {
            // A MAP_FIXED address in the errno range reads as an error.
            return Err(Errno(addr.wrapping_neg() as u16));
        }
        if addr > ts - len {
            return Err(Errno::ENOMEM);
        }
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        // security_mmap_addr(): the caller is privileged (CAP_SYS_RAWIO).
        Ok((addr, len))
    }

    fn round_hint_to_min(&self, hint: u64) -> u64 {
        let hint = hint & !(PAGE_SIZE - 1);
        if hint != 0 && hint < self.cfg.mmap_min_addr {
            page_align(self.cfg.mmap_min_addr)
        } else {
            hint
        }
    }

    /// `thp_get_unmapped_area_vmflags()` for anonymous memory.
    fn thp_get_unmapped_area(&self, addr: u64, len: u64, f: Flags) -> Result<u64, Errno> {
        let ret = self.thp_aligned(addr, len, f);
        if ret != 0 {
            return Ok(ret);
        }
        self.arch_get_unmapped_area(addr, len, f)
    }

    /// `__thp_get_unmapped_area()` with `off = 0`: 0 means "gave up".
    fn thp_aligned(&self, addr: u64, len: u64, f: Flags) -> u64 {
        if len < PMD_SIZE {
            return 0;
        }
        let Some(len_pad) = len.checked_add(PMD_SIZE) else {
            return 0;
        };
        let ret = match self.arch_get_unmapped_area(addr, len_pad, f) {
            Ok(r) if !is_err_value(r) => r,
            _ => return 0,
        };
        if ret == addr {
            return addr;
        }
        let off_sub = ret.wrapping_neg() & (PMD_SIZE - 1);
        if self.cfg.layout == Layout::TopDown && off_sub == 0 {
            ret.wrapping_add(PMD_SIZE)
        } else {
            ret.wrapping_add(off_sub)
        }
    }

    /// `mm_get_unmapped_area_vmflags()`: dispatch on the layout.
    fn arch_get_unmapped_area(&self, addr: u64, len: u64, f: Flags) -> Result<u64, Errno> {
        match self.cfg.layout {
            Layout::TopDown => self.arch_topdown(addr, len, f),
            Layout::Legacy => self.arch_bottomup(addr, len, f),
        }
    }

    /// `find_vma(addr)` is none, or the mapping ends below its guard gap.
    fn hint_is_free(&self, addr: u64, len: u64) -> bool {
        match self.space.find_vma(addr) {
            None => true,
            Some(v) => addr + len <= vm_start_gap(&v, self.cfg.stack_guard_gap),
        }
    }

    /// x86 `arch_get_unmapped_area()` (bottom-up).
    fn arch_bottomup(&self, addr: u64, len: u64, f: Flags) -> Result<u64, Errno> {
        if f.fixed {
            return Ok(addr);
        }
        let (begin, end) = if f.map32bit {
            (MAP_32BIT_BEGIN, MAP_32BIT_END)
        } else {
            // task_size_64bit(addr > DEFAULT_MAP_WINDOW); a task_size
            // below the default window (not a real x86-64 value) caps it.
            let ts = self.cfg.task_size;
            let end = if addr > DEFAULT_MAP_WINDOW {
                ts
            } else {
                DEFAULT_MAP_WINDOW.min(ts)
            };
            (LEGACY_BASE, end)
        };
        if len > end {
            return Err(Errno::ENOMEM);
        }
        if addr != 0 {
            let addr = addr & !(PAGE_SIZE - 1);
            if end - len >= addr && self.hint_is_free(addr, len) {
                return Ok(addr);
            }
        }
        let info = UnmappedAreaInfo {
            topdown: false,
            length: len,
            low_limit: begin,
            high_limit: end,
            ..Default::default()
        };
        self.space
            .unmapped_area(&info, &self.params)
            .map_err(|_| Errno::ENOMEM)
    }

    /// x86 `arch_get_unmapped_area_topdown()`.
    fn arch_topdown(&self, addr0: u64, len: u64, f: Flags) -> Result<u64, Errno> {
        let ts = self.cfg.task_size;
        if len > ts {
            return Err(Errno::ENOMEM);
        }
        if f.fixed {
            return Ok(addr0);
        }
        if f.map32bit {
            return self.arch_bottomup(addr0, len, f);
        }
        let addr = addr0 & !(PAGE_SIZE - 1);
        if addr != 0 {
            // mmap_address_hint_valid(): fits below TASK_SIZE and does not
            // cross the 47-bit line.
            let valid = ts - len >= addr
                && (addr > DEFAULT_MAP_WINDOW) == (addr + len > DEFAULT_MAP_WINDOW);
            if valid && self.hint_is_free(addr, len) {
                return Ok(addr);
            }
        }
        let mut high = self.cfg.mmap_base;
        if addr > DEFAULT_MAP_WINDOW {
            high = high.wrapping_add(ts.saturating_sub(DEFAULT_MAP_WINDOW));
        }
        let info = UnmappedAreaInfo {
            topdown: true,
            length: len,
            low_limit: PAGE_SIZE,
            high_limit: high,
            ..Default::default()
        };
        match self.space.unmapped_area(&info, &self.params) {
            Ok(a) => Ok(a),
            // A full region below mmap_base spills upwards.
            Err(_) => self.arch_bottomup(addr0, len, f),
        }
    }
}

/// The kernel's `vm_start_gap()` for x86.
pub fn vm_start_gap(v: &Vma, stack_guard_gap: u64) -> u64 {
    if v.flags.contains(VmaFlags::GROWSDOWN) {
        v.start.saturating_sub(stack_guard_gap)
    } else {
        v.start
    }
}

#[derive(Clone, Copy)]
struct Flags {
    fixed: bool,
    map32bit: bool,
}
