//! `svmap_space_t`: one simulated address space (the core
//! [`svmap_core::linux::Mm`]): raw map/unmap, the kernel's
//! `vm_unmapped_area()`, the exact aligned fit and the x86-64 `mmap`
//! placement policy.

use svmap_core::linux::{Errno, Fixed, Layout, Mm, MmConfig, MmapRequest};
use svmap_core::{
    FitError, FitRequest, MapError, NoCrossError, SearchError, UnmappedAreaInfo, VmaFlags,
};

use crate::svmap_status_t::{self, *};
use crate::{c_bool, ffi_status, ffi_value, handle, status_of_errno, Failure, FfiResult, Out};

/// A simulated address space: a map of VMAs with the Linux x86-64
/// placement policy. Owned by the caller from `svmap_space_new` to
/// `svmap_space_delete`; not thread-safe.
#[derive(Debug)]
pub struct svmap_space_t {
    mm: Mm,
}

/// Address-space layouts (`svmap_space_config_t.layout`).
pub type svmap_layout_t = u32;
/// Top-down: search down from `mmap_base`, then bottom-up (the default).
pub const SVMAP_LAYOUT_TOPDOWN: svmap_layout_t = 0;
/// Legacy bottom-up layout (`ADDR_COMPAT_LAYOUT`).
pub const SVMAP_LAYOUT_LEGACY: svmap_layout_t = 1;

/// VMA flags (`svmap_space_map`, `svmap_vma_t.flags`).
pub type svmap_vma_flags_t = u32;
/// `VM_GROWSDOWN`: a stack; searches keep `stack_guard_gap` below it free.
pub const SVMAP_VMA_GROWSDOWN: svmap_vma_flags_t = 1;
/// `VM_GROWSUP`: a guard gap above (ignored on x86).
pub const SVMAP_VMA_GROWSUP: svmap_vma_flags_t = 2;

/// `svmap_unmapped_area_info_t.flags`: highest fit first (the kernel's
/// `VM_UNMAPPED_AREA_TOPDOWN`).
pub const SVMAP_VM_UNMAPPED_AREA_TOPDOWN: u32 = 1;

/// `MAP_FIXED` modes (`svmap_mmap_request_t.fixed`).
pub type svmap_map_fixed_t = u32;
/// The address is only a hint.
pub const SVMAP_MAP_HINT: svmap_map_fixed_t = 0;
/// `MAP_FIXED`: exactly there, replacing what is there.
pub const SVMAP_MAP_FIXED: svmap_map_fixed_t = 1;
/// `MAP_FIXED_NOREPLACE`: exactly there, or `SVMAP_EEXIST`.
pub const SVMAP_MAP_FIXED_NOREPLACE: svmap_map_fixed_t = 2;

/// The parameters of one address space. `svmap_space_config_default`
/// fills in x86-64 Linux with 4-level paging and no randomisation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct svmap_space_config_t {
    /// `TASK_SIZE`: the end of user space (default `2^47 - 4096`).
    pub task_size: u64,
    /// The effective `mmap_min_addr` floor (default 0x10000).
    pub mmap_min_addr: u64,
    /// `stack_guard_gap` in bytes (default 1 MiB).
    pub stack_guard_gap: u64,
    /// `SVMAP_LAYOUT_TOPDOWN` or `SVMAP_LAYOUT_LEGACY`.
    pub layout: svmap_layout_t,
    /// `mm->mmap_base`, the top of the top-down search.
    pub mmap_base: u64,
    /// Whether anonymous mappings of a multiple of 2 MiB get the
    /// transparent-huge-page alignment.
    pub thp_align: bool,
}

impl From<MmConfig> for svmap_space_config_t {
    fn from(c: MmConfig) -> Self {
        svmap_space_config_t {
            task_size: c.task_size,
            mmap_min_addr: c.mmap_min_addr,
            stack_guard_gap: c.stack_guard_gap,
            layout: match c.layout {
                Layout::TopDown => SVMAP_LAYOUT_TOPDOWN,
                Layout::Legacy => SVMAP_LAYOUT_LEGACY,
            },
            mmap_base: c.mmap_base,
            thp_align: c.thp_align,
        }
    }
}

/// The configuration `cfg` describes (NULL: the defaults).
pub(crate) fn mm_config(cfg: Option<&svmap_space_config_t>) -> FfiResult<MmConfig> {
    let Some(c) = cfg else {
        return Ok(MmConfig::default());
    };
    let layout = match c.layout {
        SVMAP_LAYOUT_TOPDOWN => Layout::TopDown,
        SVMAP_LAYOUT_LEGACY => Layout::Legacy,
        l => return Err(Failure::inval(format!("unknown layout {l}"))),
    };
    Ok(MmConfig {
        task_size: c.task_size,
        mmap_min_addr: c.mmap_min_addr,
        stack_guard_gap: c.stack_guard_gap,
        layout,
        mmap_base: c.mmap_base,
        thp_align: c_bool(&c.thp_align, "cfg->thp_align")?,
    })
}

/// A gap-search request, mirroring the kernel's `struct
/// vm_unmapped_area_info`. A result `addr` satisfies `addr >=
/// max(low_limit, mmap_min_addr)`, `addr + length <= high_limit`, `(addr &
/// align_mask) == (align_offset & align_mask)`, and `[addr - start_gap,
/// addr + length)` is free; like the kernel, a hole must hold `length +
/// align_mask + start_gap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_unmapped_area_info_t {
    /// 0 or `SVMAP_VM_UNMAPPED_AREA_TOPDOWN`.
    pub flags: u32,
    /// Length in bytes.
    pub length: u64,
    /// Lowest acceptable start (inclusive).
    pub low_limit: u64,
    /// The area ends at or below this (exclusive).
    pub high_limit: u64,
    /// Alignment mask: alignment - 1 (low bits only, or 0); any other
    /// mask is `SVMAP_EINVAL`.
    pub align_mask: u64,
    /// The wanted value of `addr & align_mask`.
    pub align_offset: u64,
    /// A guard left free below the area (shadow stacks).
    pub start_gap: u64,
}

pub(crate) fn unmapped_area_info(i: &svmap_unmapped_area_info_t) -> FfiResult<UnmappedAreaInfo> {
    if i.flags & !SVMAP_VM_UNMAPPED_AREA_TOPDOWN != 0 {
        return Err(Failure::inval(format!(
            "unknown unmapped_area flags {:#x}",
            i.flags
        )));
    }
    // The kernel's formula aligns only with a mask of low bits (alignment
    // - 1); another mask has no meaning and gives unaligned answers.
    if i.align_mask & i.align_mask.wrapping_add(1) != 0 {
        return Err(Failure::inval(format!(
            "align_mask {:#x} is not an alignment - 1 (low bits only)",
            i.align_mask
        )));
    }
    Ok(UnmappedAreaInfo {
        topdown: i.flags & SVMAP_VM_UNMAPPED_AREA_TOPDOWN != 0,
        length: i.length,
        low_limit: i.low_limit,
        high_limit: i.high_limit,
        align_mask: i.align_mask,
        align_offset: i.align_offset,
        start_gap: i.start_gap,
    })
}

pub(crate) fn search_failure(e: SearchError) -> Failure {
    Failure::new(SVMAP_ENOMEM, format!("unmapped_area: {e}"))
}

/// An exact-fit request: the lowest (or highest) `[addr, addr + length)`
/// inside `[low, high)` with `addr % align == align_offset % align` that is
/// free, without the kernel's `align_mask` padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_fit_request_t {
    /// Length in bytes (> 0).
    pub length: u64,
    /// Lowest acceptable start.
    pub low: u64,
    /// Highest acceptable end (exclusive).
    pub high: u64,
    /// Alignment: a power of two (1 for none).
    pub align: u64,
    /// The wanted remainder modulo `align`.
    pub align_offset: u64,
    /// Highest fit first.
    pub topdown: bool,
    /// Keep out of the guard gaps of grows-down neighbours, as the kernel's
    /// non-fixed placements do.
    pub respect_guard_gaps: bool,
}

/// An anonymous private `mmap()` call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_mmap_request_t {
    /// Length in bytes (rounded up to a page; 0 is `SVMAP_EINVAL`).
    pub length: u64,
    /// The address argument (0: none).
    pub hint: u64,
    /// `SVMAP_MAP_HINT`, `SVMAP_MAP_FIXED` or `SVMAP_MAP_FIXED_NOREPLACE`.
    pub fixed: svmap_map_fixed_t,
    /// `MAP_GROWSDOWN`.
    pub growsdown: bool,
    /// `MAP_32BIT`.
    pub map32bit: bool,
}

pub(crate) fn mmap_request(r: &svmap_mmap_request_t) -> FfiResult<MmapRequest> {
    let fixed = match r.fixed {
        SVMAP_MAP_HINT => Fixed::No,
        SVMAP_MAP_FIXED => Fixed::Fixed,
        SVMAP_MAP_FIXED_NOREPLACE => Fixed::NoReplace,
        f => return Err(Failure::inval(format!("unknown fixed mode {f}"))),
    };
    Ok(MmapRequest {
        length: r.length,
        hint: r.hint,
        fixed,
        growsdown: c_bool(&r.growsdown, "req->growsdown")?,
        map32bit: c_bool(&r.map32bit, "req->map32bit")?,
    })
}

pub(crate) fn errno_failure(what: &str, e: Errno) -> Failure {
    Failure::new(
        status_of_errno(i32::from(e.0)),
        format!("{what}: {}", e.name()),
    )
}

/// One mapped range `[start, end)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct svmap_vma_t {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `SVMAP_VMA_GROWSDOWN` / `SVMAP_VMA_GROWSUP`.
    pub flags: svmap_vma_flags_t,
}

fn map_failure(e: MapError) -> Failure {
    let status = match e {
        MapError::EmptyRange { .. } => SVMAP_EINVAL,
        MapError::Overlap { .. } => SVMAP_EEXIST,
        MapError::TooManyVmas => SVMAP_ENOMEM,
    };
    Failure::new(status, e.to_string())
}

/// Fills `out` with the default configuration (x86-64, 4-level paging,
/// 8 MiB stack, no randomisation, THP on).
///
/// # Safety
///
/// `out` is NULL (`SVMAP_EINVAL`) or valid for writing one
/// `svmap_space_config_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_config_default(
    out: *mut svmap_space_config_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out`.
        let out = unsafe { Out::new(out, "out") }?;
        out.write(MmConfig::default().into());
        Ok(())
    })
}

/// A new, empty address space with the configuration `cfg` (NULL: the
/// defaults). Returns an owned handle, or NULL (an unknown layout) with the
/// last error set. Free it with `svmap_space_delete`.
#[no_mangle]
pub extern "C" fn svmap_space_new(
    cfg: Option<&svmap_space_config_t>,
) -> Option<Box<svmap_space_t>> {
    ffi_value(None, || {
        Ok(Some(Box::new(svmap_space_t {
            mm: Mm::new(mm_config(cfg)?),
        })))
    })
}

/// Deletes an address space. Takes ownership; NULL is fine.
#[no_mangle]
pub extern "C" fn svmap_space_delete(space: Option<Box<svmap_space_t>>) {
    ffi_value((), || {
        drop(space);
        Ok(())
    })
}

/// Maps the VMA `[start, end)` with `flags` (`SVMAP_VMA_*`), as the
/// trace's `map`. `SVMAP_EEXIST` if it overlaps a VMA (nothing changes),
/// `SVMAP_EINVAL` if empty or for unknown flags.
#[no_mangle]
pub extern "C" fn svmap_space_map(
    space: Option<&mut svmap_space_t>,
    start: u64,
    end: u64,
    flags: svmap_vma_flags_t,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(space, "space")?;
        if flags & !(SVMAP_VMA_GROWSDOWN | SVMAP_VMA_GROWSUP) != 0 {
            return Err(Failure::inval(format!("unknown VMA flags {flags:#x}")));
        }
        s.mm.space_mut()
            .insert(start, end, VmaFlags(flags as u8))
            .map_err(map_failure)
    })
}

/// Removes everything mapped in `[start, end)`, splitting VMAs that
/// straddle an edge (the trace's `unmap`). Unmapping nothing is fine;
/// `SVMAP_EINVAL` if `end < start`.
#[no_mangle]
pub extern "C" fn svmap_space_unmap(
    space: Option<&mut svmap_space_t>,
    start: u64,
    end: u64,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(space, "space")?;
        s.mm.space_mut()
            .unmap(start, end)
            .map(drop)
            .map_err(map_failure)
    })
}

/// The kernel's `vm_unmapped_area(info)` on this space, to the bit, with
/// the space's `mmap_min_addr` and `stack_guard_gap` (the trace's `find`).
/// Writes the address to `*out_addr`; `SVMAP_ENOMEM` if nothing fits (as
/// in the kernel, limits with `low_limit > high_limit` are a window nothing
/// fits in, not an error).
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_unmapped_area(
    space: Option<&svmap_space_t>,
    info: Option<&svmap_unmapped_area_info_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let info = unmapped_area_info(handle(info, "info")?)?;
        out.write(s.mm.find(&info).map_err(search_failure)?);
        Ok(())
    })
}

/// The core request for the C request `r`, as it is: the window checked
/// (`low > high` is an inverted range) and the C booleans checked.
pub(crate) fn core_fit_request(r: &svmap_fit_request_t) -> Result<FitRequest, Failure> {
    if r.low > r.high {
        return Err(Failure::inval(format!(
            "inverted window [{:#x}, {:#x}): req->low is above req->high",
            r.low, r.high
        )));
    }
    Ok(FitRequest {
        length: r.length,
        low: r.low,
        high: r.high,
        align: r.align,
        align_offset: r.align_offset,
        topdown: c_bool(&r.topdown, "req->topdown")?,
        respect_guard_gaps: c_bool(&r.respect_guard_gaps, "req->respect_guard_gaps")?,
    })
}

/// The core request for the C request `r` on space `s`: as
/// [`core_fit_request`], with `low` raised to the space's `mmap_min_addr`.
fn fit_request(s: &svmap_space_t, r: &svmap_fit_request_t) -> Result<FitRequest, Failure> {
    let mut fit = core_fit_request(r)?;
    fit.low = fit.low.max(s.mm.config().mmap_min_addr);
    Ok(fit)
}

/// The status of a failed fit.
pub(crate) fn fit_failure(what: &str, e: FitError) -> Failure {
    let st = match e {
        FitError::ZeroLength | FitError::BadAlignment(_) => SVMAP_EINVAL,
        FitError::EmptyWindow { .. }
        | FitError::NoSpace
        | FitError::TooManyVmas
        | FitError::TooManyHoles => SVMAP_ENOMEM,
    };
    Failure::new(st, format!("{what}: {e}"))
}

/// The status of a failed fit with a boundary: a bad or too small boundary
/// is `SVMAP_EINVAL`, the rest as `fit_failure`.
pub(crate) fn nocross_failure(what: &str, e: NoCrossError) -> Failure {
    match e {
        NoCrossError::Fit(e) => fit_failure(what, e),
        NoCrossError::BadBoundary(_) | NoCrossError::BoundaryTooSmall { .. } => {
            Failure::new(SVMAP_EINVAL, format!("{what}: {e}"))
        }
    }
}

/// The exact aligned fit `req` on this space: `req->low` is raised to the
/// space's `mmap_min_addr`, and with `respect_guard_gaps` the space's
/// `stack_guard_gap` is kept free below grows-down VMAs. `SVMAP_ENOMEM` if
/// nothing fits, `SVMAP_EINVAL` for a zero length, an alignment that is
/// not a power of two or an inverted window (`req->low > req->high`).
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_find_fit(
    space: Option<&svmap_space_t>,
    req: Option<&svmap_fit_request_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let fit = fit_request(s, handle(req, "req")?)?;
        let addr =
            s.mm.space()
                .find_fit(&fit, s.mm.search_params())
                .map_err(|e| fit_failure("find_fit", e))?;
        out.write(addr);
        Ok(())
    })
}

/// `svmap_space_find_fit`, then maps the range it found (no flags): an
/// allocator's whole `alloc` in one call, and one descent of the tree where
/// the two calls take two. Writes the start of the new VMA
/// `[*out_addr, *out_addr + req->length)`; the same statuses as
/// `svmap_space_find_fit` (nothing is mapped on an error). Free the range
/// with `svmap_space_unmap`.
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_allocate(
    space: Option<&mut svmap_space_t>,
    req: Option<&svmap_fit_request_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let fit = fit_request(s, handle(req, "req")?)?;
        let params = *s.mm.search_params();
        let addr =
            s.mm.space_mut()
                .allocate(&fit, &params, VmaFlags::NONE)
                .map_err(|e| fit_failure("allocate", e))?;
        out.write(addr);
        Ok(())
    })
}

/// `svmap_space_find_fit` with a boundary: the range `[*out_addr, *out_addr
/// + req->length)` also does not cross a multiple of `boundary` (it lies
/// inside one block `[k * boundary, (k + 1) * boundary)`), as Mesa's
/// `nospan_minimum`, vmem's `nocross` and DMA segment boundaries require.
/// The lowest (with `topdown`, highest) such range, exactly. A `boundary`
/// of 0 is no constraint (the answer is `svmap_space_find_fit`'s).
/// `SVMAP_EINVAL` besides `svmap_space_find_fit`'s cases: a boundary that
/// is neither 0 nor a power of two, or one that no range of the length can
/// fit in between two multiples (`length > boundary`, or more generally
/// `(align_offset mod min(align, boundary)) + length > boundary`);
/// `SVMAP_ENOMEM` if no range in the window satisfies every rule.
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_find_fit_nocross(
    space: Option<&svmap_space_t>,
    req: Option<&svmap_fit_request_t>,
    boundary: u64,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let fit = fit_request(s, handle(req, "req")?)?;
        let addr =
            s.mm.space()
                .find_fit_nocross(&fit, boundary, s.mm.search_params())
                .map_err(|e| nocross_failure("find_fit_nocross", e))?;
        out.write(addr);
        Ok(())
    })
}

/// `svmap_space_find_fit_nocross`, then maps the range it found (no
/// flags), as `svmap_space_allocate` does; the same statuses as
/// `svmap_space_find_fit_nocross` (nothing is mapped on an error).
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_allocate_nocross(
    space: Option<&mut svmap_space_t>,
    req: Option<&svmap_fit_request_t>,
    boundary: u64,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let fit = fit_request(s, handle(req, "req")?)?;
        let params = *s.mm.search_params();
        let addr =
            s.mm.space_mut()
                .allocate_nocross(&fit, boundary, &params, VmaFlags::NONE)
                .map_err(|e| nocross_failure("allocate_nocross", e))?;
        out.write(addr);
        Ok(())
    })
}

/// What an anonymous private `mmap(req)` does in this space under the
/// x86-64 policy (hint, `MAP_FIXED`, `MAP_FIXED_NOREPLACE`, `MAP_32BIT`,
/// layouts, THP alignment): maps it and writes its address, or returns the
/// kernel's errno as a status (`SVMAP_ENOMEM`, `SVMAP_EEXIST`,
/// `SVMAP_EINVAL`, `SVMAP_EPERM`).
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_mmap(
    space: Option<&mut svmap_space_t>,
    req: Option<&svmap_mmap_request_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(space, "space")?;
        let req = mmap_request(handle(req, "req")?)?;
        out.write(s.mm.mmap(&req).map_err(|e| errno_failure("mmap", e))?);
        Ok(())
    })
}

/// `munmap(addr, length)` with the kernel's checks: `SVMAP_EINVAL` for an
/// unaligned `addr`, a zero length or a range beyond `task_size`.
#[no_mangle]
pub extern "C" fn svmap_space_munmap(
    space: Option<&mut svmap_space_t>,
    addr: u64,
    length: u64,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(space, "space")?;
        s.mm.munmap(addr, length)
            .map_err(|e| errno_failure("munmap", e))
    })
}

/// The number of VMAs (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_space_vma_count(space: Option<&svmap_space_t>) -> usize {
    ffi_value(0, || Ok(handle(space, "space")?.mm.space().len()))
}

/// The first VMA that ends above `addr` (the kernel's `find_vma`): iterate
/// with `addr = vma.end`. `SVMAP_ENOENT` when there is none.
///
/// # Safety
///
/// `out_vma` is NULL (`SVMAP_EINVAL`) or valid for writing one
/// `svmap_vma_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_space_find_vma(
    space: Option<&svmap_space_t>,
    addr: u64,
    out_vma: *mut svmap_vma_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_vma`.
        let out = unsafe { Out::new(out_vma, "out_vma") }?;
        let s = handle(space, "space")?;
        let v =
            s.mm.space().find_vma(addr).ok_or_else(|| {
                Failure::new(SVMAP_ENOENT, format!("no VMA ends above {addr:#x}"))
            })?;
        out.write(svmap_vma_t {
            start: v.start,
            end: v.end,
            flags: u32::from(v.flags.0),
        });
        Ok(())
    })
}
