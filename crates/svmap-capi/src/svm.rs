//! `svmap_svm_t`: SVM spaces ([`svmap_svm::SvmSpace`]): one CPU space and
//! named device spaces, SVM allocations at identical addresses in all of
//! them, protection changes, device-only regions and device accesses
//! through the device MMU model.

use std::ffi::c_char;

use svmap_svm::{CpuPolicy, DeviceConfig, Fault, MirrorMode, Populate, Prot, SvmError, SvmSpace};

use crate::space::{
    errno_failure, mm_config, mmap_request, search_failure, svmap_mmap_request_t,
    svmap_space_config_t, svmap_unmapped_area_info_t, unmapped_area_info,
};
use crate::svmap_status_t::{self, *};
use crate::{
    c_str, check_range, ffi_status, ffi_value, handle, range_end, status_of_errno, Failure,
    FfiResult, Out,
};

/// An SVM space: one simulated CPU address space and its devices. Owned by
/// the caller from `svmap_svm_new` to `svmap_svm_delete`; not thread-safe.
#[derive(Debug)]
pub struct svmap_svm_t {
    svm: SvmSpace,
}

/// What a device mirrors (`svmap_device_config_t.mirror`).
pub type svmap_mirror_t = u32;
/// Only the SVM ranges allocated for it (the default).
pub const SVMAP_MIRROR_BUFFERS: svmap_mirror_t = 0;
/// Every CPU mapping that is not a device-only reservation (the HMM model).
pub const SVMAP_MIRROR_SYSTEM: svmap_mirror_t = 1;

/// When a device's page table is filled (`svmap_device_config_t.populate`).
pub type svmap_populate_t = u32;
/// On the first device access (the default).
pub const SVMAP_POPULATE_ON_FAULT: svmap_populate_t = 0;
/// At allocation, up to 4096 pages per range.
pub const SVMAP_POPULATE_AT_ALLOC: svmap_populate_t = 1;

/// What a CPU access does in the CPU reservation of a device-only region
/// (`svmap_svm_device_map`).
pub type svmap_cpu_policy_t = u32;
/// Every CPU access faults.
pub const SVMAP_CPU_FAULT: svmap_cpu_policy_t = 0;
/// Reads see a zero page, writes fault.
pub const SVMAP_CPU_DUMMY_PAGE: svmap_cpu_policy_t = 1;

/// CPU page protection (`svmap_svm_protect`).
pub type svmap_prot_t = u32;
/// No access.
pub const SVMAP_PROT_NONE: svmap_prot_t = 0;
/// Read only.
pub const SVMAP_PROT_READ: svmap_prot_t = 1;
/// Read and write.
pub const SVMAP_PROT_READ_WRITE: svmap_prot_t = 2;

/// A device's parameters. `svmap_device_config_init` fills in the
/// defaults; change fields after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct svmap_device_config_t {
    /// The name other calls use (NUL-terminated UTF-8; copied by
    /// `svmap_svm_add_device`, borrowed until then).
    pub name: *const c_char,
    /// Device addresses are `[0, 2^va_bits)`; 12..=64.
    pub va_bits: u32,
    /// SVM ranges are placed at or above this (default 0).
    pub base: u64,
    /// The device page size: a power of two from 4096 to
    /// `SVMAP_MAX_DEVICE_PAGE_SIZE` (1 GiB), and at most `2^va_bits`
    /// (default 4096).
    pub page_size: u64,
    /// `SVMAP_MIRROR_*` (default buffers).
    pub mirror: svmap_mirror_t,
    /// `SVMAP_POPULATE_*` (default on fault).
    pub populate: svmap_populate_t,
    /// TLB entries: 1 to `SVMAP_MAX_TLB_ENTRIES` (65536; default 64).
    pub tlb_entries: u32,
}

/// The largest device page size `svmap_svm_add_device` accepts (1 GiB).
pub const SVMAP_MAX_DEVICE_PAGE_SIZE: u64 = 1_073_741_824u64;
/// The most TLB entries a device may have.
pub const SVMAP_MAX_TLB_ENTRIES: u32 = 65536;
/// The most devices an SVM space holds at once; `svmap_svm_add_device`
/// refuses one more with `SVMAP_EINVAL`.
pub const SVMAP_MAX_DEVICES: u32 = 64;

const _: () = {
    assert!(SVMAP_MAX_DEVICE_PAGE_SIZE == svmap_svm::MAX_DEVICE_PAGE_SIZE);
    assert!(SVMAP_MAX_TLB_ENTRIES as usize == svmap_svm::MAX_TLB_ENTRIES);
    assert!(SVMAP_MAX_DEVICES as usize == svmap_svm::MAX_DEVICES);
};

/// The status and message of an SVM-layer error.
pub(crate) fn svm_failure(e: SvmError) -> Failure {
    use SvmError::*;
    let status = match &e {
        DuplicateDevice { .. } | Overlap { .. } => SVMAP_EEXIST,
        UnknownDevice { .. } => SVMAP_ENOENT,
        LengthOverflow { .. }
        | NoCommonWindow { .. }
        | NoSpace { .. }
        | RangeOverflow { .. }
        | NotMapped { .. } => SVMAP_ENOMEM,
        Mmap(errno) => status_of_errno(i32::from(errno.0)),
        AboveDeviceLimit { .. } => SVMAP_ABOVE_DEVICE_LIMIT,
        // A device configuration out of bounds, or one device too many.
        BadVaBits { .. }
        | BadPageSize { .. }
        | PageAboveLimit { .. }
        | BadTlbEntries { .. }
        | TooManyDevices { .. }
        | BaseOutOfRange { .. } => SVMAP_EINVAL,
        // EmptyRange, Unaligned, BeyondDeviceLimit, ZeroLength,
        // BadAlignment, NotAnSvmRange, and anything added later.
        _ => SVMAP_EINVAL,
    };
    Failure::new(status, e.to_string())
}

/// Fills `out` with the defaults for a device named `name` with `va_bits`
/// address bits: base 0, 4 KiB pages, buffer mirroring, populate on fault,
/// 64 TLB entries. `name` is stored as a pointer, not copied.
///
/// # Safety
///
/// `out` is NULL (`SVMAP_EINVAL`) or valid for writing one
/// `svmap_device_config_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_device_config_init(
    out: *mut svmap_device_config_t,
    name: *const c_char,
    va_bits: u32,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out`.
        let out = unsafe { Out::new(out, "out") }?;
        let d = DeviceConfig::new(String::new(), va_bits);
        out.write(svmap_device_config_t {
            name,
            va_bits,
            base: d.base,
            page_size: d.page_size,
            mirror: SVMAP_MIRROR_BUFFERS,
            populate: SVMAP_POPULATE_ON_FAULT,
            tlb_entries: u32::try_from(d.tlb_entries).unwrap_or(u32::MAX),
        });
        Ok(())
    })
}

/// A new SVM space whose CPU space has the configuration `cfg` (NULL: the
/// defaults) and no devices. Returns an owned handle, or NULL with the
/// last error set. Free it with `svmap_svm_delete`.
#[no_mangle]
pub extern "C" fn svmap_svm_new(cfg: Option<&svmap_space_config_t>) -> Option<Box<svmap_svm_t>> {
    ffi_value(None, || {
        Ok(Some(Box::new(svmap_svm_t {
            svm: SvmSpace::new(mm_config(cfg)?),
        })))
    })
}

/// Deletes an SVM space and everything in it. Takes ownership; NULL is fine.
#[no_mangle]
pub extern "C" fn svmap_svm_delete(svm: Option<Box<svmap_svm_t>>) {
    ffi_value((), || {
        drop(svm);
        Ok(())
    })
}

/// Adds a device space. `SVMAP_EEXIST` for a name already used,
/// `SVMAP_EINVAL` for `va_bits` outside 12..=64, a page size that is not a
/// power of two from 4096 to `SVMAP_MAX_DEVICE_PAGE_SIZE` or that exceeds
/// `2^va_bits`, a TLB size outside 1..=`SVMAP_MAX_TLB_ENTRIES`, a base at
/// or above `2^va_bits` or an unknown enum value (the message names the
/// field), and for a space that already holds `SVMAP_MAX_DEVICES` devices
/// (the message names the cap).
///
/// # Safety
///
/// `cfg->name` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_add_device(
    svm: Option<&mut svmap_svm_t>,
    cfg: Option<&svmap_device_config_t>,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        let c = handle(cfg, "cfg")?;
        // SAFETY: the caller's contract for `cfg->name`.
        let d = unsafe { device_config(c) }?;
        s.svm.add_device(d).map_err(svm_failure)
    })
}

/// The device configuration of a C one.
///
/// # Safety
///
/// `c.name` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string.
pub(crate) unsafe fn device_config(c: &svmap_device_config_t) -> FfiResult<DeviceConfig> {
    {
        // SAFETY: the caller's contract for `c.name`.
        let name = unsafe { c_str(c.name, "cfg->name") }?;
        let mirror = match c.mirror {
            SVMAP_MIRROR_BUFFERS => MirrorMode::Buffers,
            SVMAP_MIRROR_SYSTEM => MirrorMode::System,
            m => return Err(Failure::inval(format!("unknown mirror mode {m}"))),
        };
        let populate = match c.populate {
            SVMAP_POPULATE_ON_FAULT => Populate::OnFault,
            SVMAP_POPULATE_AT_ALLOC => Populate::AtAlloc,
            p => return Err(Failure::inval(format!("unknown populate mode {p}"))),
        };
        Ok(DeviceConfig {
            name: name.to_owned(),
            va_bits: c.va_bits,
            base: c.base,
            page_size: c.page_size,
            mirror,
            populate,
            tlb_entries: c.tlb_entries as usize,
        })
    }
}

/// The number of devices (0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_svm_device_count(svm: Option<&svmap_svm_t>) -> usize {
    ffi_value(0, || Ok(handle(svm, "svm")?.svm.devices().len()))
}

/// A device-only region `[start, end)` of `device` (rings, doorbells,
/// scratch), with a CPU reservation over its part below `task_size` whose
/// CPU accesses follow `cpu` (`SVMAP_CPU_*`). `SVMAP_EINVAL` for an empty
/// range, bounds not aligned to the device page size or beyond its
/// `2^va_bits`; `SVMAP_EEXIST` if it overlaps a CPU VMA or anything on the
/// device; `SVMAP_ENOENT` for an unknown device.
///
/// # Safety
///
/// `device` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_device_map(
    svm: Option<&mut svmap_svm_t>,
    device: *const c_char,
    start: u64,
    end: u64,
    cpu: svmap_cpu_policy_t,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        // SAFETY: the caller's contract for `device`.
        let device = unsafe { c_str(device, "device") }?;
        let cpu = cpu_policy_of(cpu)?;
        s.svm
            .device_map(device, start, end, cpu)
            .map_err(svm_failure)
    })
}

/// Allocates an SVM range of `length` bytes (rounded up to the largest page
/// size involved) aligned to `align` (0: the page size), free on the CPU
/// and on each of the `n_devices` devices named in `devices`, inside their
/// common window; the highest such range if `topdown`, else the lowest. It
/// is mapped read-write on all of them at the same address, written to
/// `*out_addr`. Release it with `svmap_svm_dealloc`. `SVMAP_ENOMEM` if no
/// range fits, `SVMAP_EINVAL` for a zero length or an alignment that is not
/// a power of two, `SVMAP_ENOENT` for an unknown device.
///
/// # Safety
///
/// `devices` is NULL (only with `n_devices == 0`) or points to `n_devices`
/// NUL-terminated strings; `out_addr` is NULL (`SVMAP_EINVAL`) or valid for
/// writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_alloc(
    svm: Option<&mut svmap_svm_t>,
    length: u64,
    align: u64,
    devices: *const *const c_char,
    n_devices: usize,
    topdown: bool,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(svm, "svm")?;
        // SAFETY: the caller's contract for `devices` and `n_devices`.
        let names = unsafe { c_str_array(devices, n_devices, "devices") }?;
        let align = if align == 0 { None } else { Some(align) };
        let addr = s
            .svm
            .svm_alloc(length, align, &names, topdown)
            .map_err(svm_failure)?;
        out.write(addr);
        Ok(())
    })
}

/// Reads `n` C strings.
///
/// # Safety
///
/// `p` is NULL (then `n` must be 0) or points to `n` pointers, each NULL or
/// a NUL-terminated string, all valid for `'a`.
pub(crate) unsafe fn c_str_array<'a>(
    p: *const *const c_char,
    n: usize,
    what: &str,
) -> FfiResult<Vec<&'a str>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Failure::null(what));
    }
    // `slice::from_raw_parts` needs `n * size_of` <= isize::MAX and an
    // aligned pointer: a hostile count or pointer is an error, not UB.
    if n > isize::MAX as usize / std::mem::size_of::<*const c_char>() {
        return Err(Failure::inval(format!(
            "{n} entries of {what} overflow the address space"
        )));
    }
    if !p.is_aligned() {
        return Err(Failure::inval(format!("{what} is not aligned")));
    }
    // SAFETY: non-null and aligned (checked), `n` pointers span at most
    // isize::MAX bytes (checked), and the caller guarantees that they are
    // readable and live for 'a.
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each is NULL or a NUL-terminated string (the contract).
        .map(|(i, &s)| unsafe { c_str(s, &format!("{what}[{i}]")) })
        .collect()
}

/// Frees the SVM range that starts at `addr` (the trace's `svm_free`) on
/// the CPU and every device; every device is invalidated before this
/// returns, so its next access there faults. `SVMAP_EINVAL` if `addr` does
/// not start a live SVM range (nothing changes). (`_dealloc` releases a
/// range inside the handle; `svmap_svm_delete` destroys the handle.)
#[no_mangle]
pub extern "C" fn svmap_svm_dealloc(svm: Option<&mut svmap_svm_t>, addr: u64) -> svmap_status_t {
    ffi_status(|| handle(svm, "svm")?.svm.svm_free(addr).map_err(svm_failure))
}

/// The number of live SVM ranges (pieces left by CPU unmaps count
/// separately; 0 for NULL).
#[no_mangle]
pub extern "C" fn svmap_svm_range_count(svm: Option<&svmap_svm_t>) -> usize {
    ffi_value(0, || Ok(handle(svm, "svm")?.svm.svm_ranges().len()))
}

/// Like `mprotect`: every CPU page of `[start, start + length)` gets
/// `prot` (`SVMAP_PROT_*`); every device is invalidated over the range
/// first. `SVMAP_ENOMEM` if a page is not mapped on the CPU (nothing
/// changes), `SVMAP_EINVAL` for an unaligned start, a zero length or a
/// range that wraps past 2^64.
#[no_mangle]
pub extern "C" fn svmap_svm_protect(
    svm: Option<&mut svmap_svm_t>,
    start: u64,
    length: u64,
    prot: svmap_prot_t,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        let prot = prot_of(prot)?;
        range_end(start, length)?;
        s.svm.protect(start, length, prot).map_err(svm_failure)
    })
}

/// Device `device` reads (or, with `write`, writes) the byte at `addr`
/// through its TLB, page table and fault handler. Returns `SVMAP_OK` when
/// the access succeeds, or the device fault: `SVMAP_FAULT_UNMAPPED`,
/// `SVMAP_FAULT_PROTECTION`, `SVMAP_FAULT_OUT_OF_RANGE` (the last error
/// names it). `SVMAP_ENOENT` for an unknown device.
///
/// # Safety
///
/// `device` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_device_access(
    svm: Option<&svmap_svm_t>,
    device: *const c_char,
    addr: u64,
    write: bool,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        // SAFETY: the caller's contract for `device`.
        let device = unsafe { c_str(device, "device") }?;
        let r = s
            .svm
            .device_access(device, addr, write)
            .map_err(svm_failure)?;
        r.map_err(|fault| {
            let status = match fault {
                Fault::Unmapped => SVMAP_FAULT_UNMAPPED,
                Fault::Protection => SVMAP_FAULT_PROTECTION,
                Fault::OutOfRange => SVMAP_FAULT_OUT_OF_RANGE,
            };
            let kind = if write { "write" } else { "read" };
            Failure::new(
                status,
                format!("device {device:?} {kind} at {addr:#x} faults: {fault}"),
            )
        })
    })
}

/// Maps a read-write CPU VMA `[start, end)` (`growsdown`: a stack), the
/// trace's `map`. `SVMAP_EEXIST` on overlap, `SVMAP_EINVAL` for an empty
/// or unaligned range.
#[no_mangle]
pub extern "C" fn svmap_svm_cpu_map(
    svm: Option<&mut svmap_svm_t>,
    start: u64,
    end: u64,
    growsdown: bool,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        s.svm.cpu_map(start, end, growsdown).map_err(svm_failure)
    })
}

/// Removes whatever the CPU maps in `[start, start + length)`, the trace's
/// `unmap`: SVM pieces there leave every device (invalidated first).
/// `SVMAP_EINVAL` for an unaligned start, a zero length or a range that
/// wraps past 2^64.
#[no_mangle]
pub extern "C" fn svmap_svm_cpu_unmap(
    svm: Option<&mut svmap_svm_t>,
    start: u64,
    length: u64,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        range_end(start, length)?;
        s.svm.cpu_unmap(start, length).map_err(svm_failure)
    })
}

/// An anonymous private `mmap(req)` on the CPU side (a `MAP_FIXED` one
/// first unmaps, with every device consequence). Writes the address, or
/// returns the kernel's errno as a status.
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_cpu_mmap(
    svm: Option<&mut svmap_svm_t>,
    req: Option<&svmap_mmap_request_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(svm, "svm")?;
        let req = mmap_request(handle(req, "req")?)?;
        let addr = s.svm.cpu_mmap(&req).map_err(|e| match e {
            SvmError::Mmap(errno) => errno_failure("mmap", errno),
            other => svm_failure(other),
        })?;
        out.write(addr);
        Ok(())
    })
}

/// The kernel's `vm_unmapped_area(info)` on the CPU space (the trace's
/// `find`); `SVMAP_ENOMEM` if nothing fits (as in the kernel, limits with
/// `low_limit > high_limit` are a window nothing fits in, not an error).
///
/// # Safety
///
/// `out_addr` is NULL (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_find(
    svm: Option<&svmap_svm_t>,
    info: Option<&svmap_unmapped_area_info_t>,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        let s = handle(svm, "svm")?;
        let info = unmapped_area_info(handle(info, "info")?)?;
        out.write(s.svm.find(&info).map_err(search_failure)?);
        Ok(())
    })
}

/// Checks that CPU memory `[start, end)` can be handed to `device`:
/// `SVMAP_ABOVE_DEVICE_LIMIT` (the message names the range and the limit)
/// if any of it lies at or above the device's `2^va_bits`. `SVMAP_EINVAL`
/// for an inverted range (`start > end`); an empty one is addressable.
/// `SVMAP_ENOENT` for an unknown device.
///
/// # Safety
///
/// `device` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn svmap_svm_check_addressable(
    svm: Option<&svmap_svm_t>,
    device: *const c_char,
    start: u64,
    end: u64,
) -> svmap_status_t {
    ffi_status(|| {
        let s = handle(svm, "svm")?;
        // SAFETY: the caller's contract for `device`.
        let device = unsafe { c_str(device, "device") }?;
        check_range(start, end)?;
        s.svm
            .check_addressable(device, start, end)
            .map_err(svm_failure)
    })
}

/// The protection a C caller named (`SVMAP_EINVAL` for any other value).
pub(crate) fn prot_of(prot: svmap_prot_t) -> Result<Prot, Failure> {
    match prot {
        SVMAP_PROT_NONE => Ok(Prot::None),
        SVMAP_PROT_READ => Ok(Prot::Read),
        SVMAP_PROT_READ_WRITE => Ok(Prot::ReadWrite),
        p => Err(Failure::inval(format!("unknown protection {p}"))),
    }
}

/// The CPU policy of a device-only region a C caller named
/// (`SVMAP_EINVAL` for any other value).
pub(crate) fn cpu_policy_of(cpu: svmap_cpu_policy_t) -> Result<CpuPolicy, Failure> {
    match cpu {
        SVMAP_CPU_FAULT => Ok(CpuPolicy::Fault),
        SVMAP_CPU_DUMMY_PAGE => Ok(CpuPolicy::DummyPage),
        p => Err(Failure::inval(format!("unknown CPU policy {p}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, CString};

    use super::*;
    use crate::svmap_last_error_message;

    fn last() -> String {
        // SAFETY: the pointer is a valid NUL-terminated string until the
        // next svmap call on this thread.
        unsafe { CStr::from_ptr(svmap_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    fn add(svm: &mut Option<Box<svmap_svm_t>>, name: &CStr) -> svmap_status_t {
        let mut dev = std::mem::MaybeUninit::uninit();
        // SAFETY: a valid place for one configuration; `name` outlives it.
        let st = unsafe { svmap_device_config_init(dev.as_mut_ptr(), name.as_ptr(), 48) };
        assert_eq!(st, SVMAP_OK);
        // SAFETY: initialised by the successful call.
        let dev = unsafe { dev.assume_init() };
        // SAFETY: `dev.name` points at `name`, NUL-terminated and alive.
        unsafe { svmap_svm_add_device(svm.as_deref_mut(), Some(&dev)) }
    }

    #[test]
    fn add_device_refuses_one_more_than_the_cap() {
        let mut svm = svmap_svm_new(None);
        for i in 0..SVMAP_MAX_DEVICES {
            let name = CString::new(format!("d{i}")).unwrap();
            assert_eq!(add(&mut svm, &name), SVMAP_OK, "device {i}: {}", last());
        }
        assert_eq!(
            svmap_svm_device_count(svm.as_deref()),
            SVMAP_MAX_DEVICES as usize
        );
        assert_eq!(add(&mut svm, c"one-more"), SVMAP_EINVAL);
        let msg = last();
        assert!(msg.contains(&SVMAP_MAX_DEVICES.to_string()), "{msg}");
        assert!(msg.contains("devices"), "{msg}");
        assert_eq!(
            svmap_svm_device_count(svm.as_deref()),
            SVMAP_MAX_DEVICES as usize,
            "nothing was added"
        );
        // A duplicate name in a full space is still EEXIST.
        assert_eq!(add(&mut svm, c"d0"), SVMAP_EEXIST);
        svmap_svm_delete(svm);
    }
}
