//! Range attributes and prefetch on `svmap_runtime_t`
//! (`docs/attributes.md`): attribute lists of `(type, value)` pairs, and
//! migrations that svmap decides granule by granule and the device's
//! driver carries out through its migrate callback.

use std::ffi::{c_char, c_int, c_void};

use svmap_svm::attr::{Access, AttrError};
use svmap_svm::{Attr, Location};

use crate::runtime::{in_callback, runtime, svmap_runtime_t};
use crate::svmap_status_t::{self, *};
use crate::{c_str, ffi_status, Failure, FfiResult, Out};

/// Preferred location: value `SVMAP_LOCATION_SYSTEM`, 1 + device index, or
/// `SVMAP_LOCATION_UNDEFINED`.
pub const SVMAP_ATTR_PREFERRED_LOCATION: u32 = 1;
/// Prefetch location (setting it migrates the range now): as above.
pub const SVMAP_ATTR_PREFETCH_LOCATION: u32 = 2;
/// Access of one device: value `device << 32 | SVMAP_ACCESS_*`.
pub const SVMAP_ATTR_ACCESS: u32 = 3;
/// Flags to set (`SVMAP_FLAG_*`); a get answers the flags set everywhere.
pub const SVMAP_ATTR_SET_FLAGS: u32 = 4;
/// Flags to clear; a get answers the known flags set nowhere in common.
pub const SVMAP_ATTR_CLEAR_FLAGS: u32 = 5;
/// Migration granularity: `2^value` pages, value 0..=9 (4 KiB to 2 MiB).
pub const SVMAP_ATTR_GRANULARITY: u32 = 6;
/// Location code of system memory.
pub const SVMAP_LOCATION_SYSTEM: u64 = 0;
/// Location code "undefined": no preference, or pages that differ.
pub const SVMAP_LOCATION_UNDEFINED: u64 = 0xffff_ffff;
/// The device may not touch the range.
pub const SVMAP_ACCESS_NONE: u64 = 0;
/// The device reaches the data where it is.
pub const SVMAP_ACCESS_IN_PLACE: u64 = 1;
/// The device's accesses may migrate the data.
pub const SVMAP_ACCESS_MAY_MIGRATE: u64 = 2;
/// Devices may only read.
pub const SVMAP_FLAG_DEVICE_READ_ONLY: u64 = 1;
/// Mostly read: devices may hold read-only copies.
pub const SVMAP_FLAG_READ_MOSTLY: u64 = 2;
/// Devices keep the range mapped wherever the data is.
pub const SVMAP_FLAG_ALWAYS_MAPPED: u64 = 4;

/// One attribute: its type (`SVMAP_ATTR_*`) and value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct svmap_attr_t {
    /// `SVMAP_ATTR_*`.
    pub type_: u32,
    /// The value (see each type).
    pub value: u64,
}

/// A device's migrate callback: move `[start, end)` into the device's own
/// memory (`to_device` 1: the driver copies it and from then on serves the
/// device's accesses from there; the CPU side must not touch the range
/// until it comes back) or back into system memory (`to_device` 0: the
/// bytes are in the CPU's memory when it returns 0). Returns 0 when done.
pub type svmap_device_migrate_fn = Option<
    unsafe extern "C" fn(user: *mut c_void, start: u64, end: u64, to_device: c_int) -> c_int,
>;

fn attr_failure(e: AttrError) -> Failure {
    let status = match e {
        AttrError::NotSvm { .. } => SVMAP_ENOENT,
        _ => SVMAP_EINVAL,
    };
    Failure::new(status, e.to_string())
}

/// The list `(attrs, count)`, checked: NULL only with a count of 0, at most
/// 64 entries, aligned for `svmap_attr_t` (a misaligned pointer is a caller
/// bug that can be seen: an error, not a misaligned read or write).
///
/// # Safety
///
/// `attrs` is NULL, misaligned or valid for reading `count` entries.
unsafe fn list<'a>(attrs: *const svmap_attr_t, count: usize) -> FfiResult<&'a [svmap_attr_t]> {
    if count > 64 {
        return Err(Failure::inval(format!("{count} attributes: at most 64")));
    }
    if count == 0 {
        return Ok(&[]);
    }
    if attrs.is_null() {
        return Err(Failure::null("attrs"));
    }
    if !attrs.is_aligned() {
        return Err(Failure::inval("attrs is not aligned"));
    }
    // SAFETY: non-null, aligned (checked), and the caller guarantees
    // `count` readable entries.
    Ok(unsafe { std::slice::from_raw_parts(attrs, count) })
}

/// Drops the granules held by devices in `[s, e)` (the range was freed;
/// the devices were told by their unmap callbacks).
pub(crate) fn forget_granules(r: &mut svmap_runtime_t, s: u64, e: u64) {
    let gone: Vec<u64> = r
        .on_device
        .range(..e)
        .filter(|(&gs, &(ge, _))| ge > s && gs < e)
        .map(|(&gs, _)| gs)
        .collect();
    for g in gone {
        r.on_device.remove(&g);
    }
}

fn call_migrate(r: &svmap_runtime_t, d: usize, s: u64, e: u64, to: bool) -> FfiResult<()> {
    let name = r.engine.devices()[d].config().name.clone();
    match r.migrate.get(d).copied() {
        Some((Some(f), user)) => {
            // SAFETY: the caller of `svmap_runtime_set_migrate` promised a
            // callback that may be called with `user` while the runtime
            // lives.
            let rc = in_callback(|| unsafe { f(user, s, e, c_int::from(to)) });
            if rc == 0 {
                Ok(())
            } else {
                Err(Failure::new(
                    SVMAP_EIO,
                    format!("the migrate callback of device {name:?} returned {rc} for [{s:#x}, {e:#x})"),
                ))
            }
        }
        _ => Err(Failure::inval(format!(
            "device {name:?} has no migrate callback (svmap_runtime_set_migrate)"
        ))),
    }
}

/// Moves `[start, start + len)` to `loc`, granule by granule.
fn prefetch(r: &mut svmap_runtime_t, start: u64, len: u64, loc: Location) -> FfiResult<()> {
    r.engine.get_attr(start, len).map_err(attr_failure)?;
    let end = start + len;
    let mut at = start;
    while at < end {
        let (s, e, devs) = svmap_runtime::migrate::granule_of(&r.engine, at);
        let target = match loc {
            Location::System => None,
            Location::Device(d) => {
                let d = d as usize;
                if d >= r.engine.devices().len() {
                    return Err(attr_failure(AttrError::UnknownDevice { device: d as u32 }));
                }
                if r.engine.attrs().at(s).access[d] == Access::None {
                    return Err(Failure::new(
                        SVMAP_EPERM,
                        format!("device {d} has no access to {s:#x}"),
                    ));
                }
                Some(d)
            }
        };
        // Parts held by a device other than the target come back first.
        let held: Vec<(u64, u64, usize)> = r
            .on_device
            .range(..e)
            .filter(|(_, &(ge, _))| ge > s)
            .map(|(&gs, &(ge, gd))| (gs, ge, gd))
            .collect();
        if !(held.len() == 1 && Some(held[0].2) == target && (held[0].0, held[0].1) == (s, e)) {
            for (gs, ge, gd) in held {
                call_migrate(r, gd, gs, ge, false)?;
                r.on_device.remove(&gs);
            }
            if let Some(d) = target {
                // Every other device of the range lets go of the granule
                // (its invalidate callback) before it moves.
                for j in devs.into_iter().filter(|&j| j != d) {
                    r.engine.device_backends_mut()[j]
                        .invalidate(s, e)
                        .map_err(|err| {
                            Failure::new(
                                SVMAP_EIO,
                                format!("invalidating [{s:#x}, {e:#x}) before a migration: {err}"),
                            )
                        })?;
                }
                call_migrate(r, d, s, e, true)?;
                r.on_device.insert(s, (e, d));
            }
        }
        at = e;
    }
    Ok(())
}

/// Sets device `device`'s migrate callback (NULL: none; a prefetch to or
/// from that device then fails with `SVMAP_EINVAL`).
///
/// # Safety
///
/// `rt` is NULL (`SVMAP_EINVAL`) or a live handle from
/// `svmap_runtime_new`, not used by another thread during the call;
/// `device` is NULL (`SVMAP_EINVAL`) or a NUL-terminated string;
/// `migrate` is NULL or a function that may be called with `user` as
/// documented at [`svmap_device_migrate_fn`] while the runtime lives.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_set_migrate(
    rt: *mut svmap_runtime_t,
    device: *const c_char,
    migrate: svmap_device_migrate_fn,
    user: *mut c_void,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `device`.
        let name = unsafe { c_str(device, "device") }?;
        let d = r
            .engine
            .devices()
            .iter()
            .position(|x| x.config().name == name)
            .ok_or_else(|| Failure::new(SVMAP_ENOENT, format!("no device {name:?}")))?;
        let n = r.engine.devices().len();
        r.migrate.resize(n, (None, std::ptr::null_mut()));
        r.migrate[d] = (migrate, user);
        Ok(())
    })
}

/// Sets `count` attributes (`SVMAP_ATTR_*`, applied in order) on
/// `[addr, addr + length)`, which must be SVM memory of the runtime from
/// end to end (`SVMAP_ENOENT` otherwise). Setting part of a range changes
/// only that part. An unknown type, a bad value or an unknown device index
/// is `SVMAP_EINVAL`, and then nothing changes. A prefetch location among
/// them (the last one counts) migrates the range now
/// (`svmap_runtime_prefetch`).
///
/// # Safety
///
/// `rt` is NULL (`SVMAP_EINVAL`) or a live handle from
/// `svmap_runtime_new`, not used by another thread during the call;
/// `attrs` is NULL (with `count` 0), misaligned (`SVMAP_EINVAL`) or valid
/// for reading `count` entries.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_set_attr(
    rt: *mut svmap_runtime_t,
    addr: u64,
    length: u64,
    attrs: *const svmap_attr_t,
    count: usize,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `attrs` and `count`.
        let raw = unsafe { list(attrs, count) }?;
        let changes = raw
            .iter()
            .map(|a| Attr::from_raw(a.type_, a.value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(attr_failure)?;
        r.engine
            .set_attr(addr, length, &changes)
            .map_err(attr_failure)?;
        let prefetch_to = changes.iter().rev().find_map(|c| match c {
            Attr::PrefetchLocation(l) => Some(*l),
            _ => None,
        });
        if let Some(Some(loc)) = prefetch_to {
            prefetch(r, addr, length, loc)?;
        }
        Ok(())
    })
}

/// Reads attributes of `[addr, addr + length)` (SVM memory from end to
/// end): for each of the `count` entries, fills in the value of its type
/// with what every page of the range has in common (a location that
/// differs reads `SVMAP_LOCATION_UNDEFINED`, an access that differs
/// `SVMAP_ACCESS_NONE`, the smallest granularity). For `SVMAP_ATTR_ACCESS`
/// the entry's value names the device in its upper 32 bits.
///
/// # Safety
///
/// `rt` as for `svmap_runtime_set_attr`; `attrs` is NULL (with `count` 0),
/// misaligned (`SVMAP_EINVAL`) or valid for reading and writing `count`
/// entries.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_get_attr(
    rt: *mut svmap_runtime_t,
    addr: u64,
    length: u64,
    attrs: *mut svmap_attr_t,
    count: usize,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `attrs` and `count`.
        let raw = unsafe { list(attrs, count) }?;
        let got = r.engine.get_attr(addr, length).map_err(attr_failure)?;
        let n = r.engine.devices().len();
        let values = raw
            .iter()
            .map(|a| got.query(a.type_, a.value, n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(attr_failure)?;
        for (i, v) in values.into_iter().enumerate() {
            // SAFETY: `i < count`, and the caller guarantees `count`
            // writable entries (not borrowed elsewhere: `raw` is no longer
            // used).
            unsafe { (*attrs.add(i)).value = v };
        }
        Ok(())
    })
}

/// Migrates `[addr, addr + length)` (SVM memory) to `location`
/// (`SVMAP_LOCATION_SYSTEM` or 1 + device index) now, in whole granules of
/// the range's granularity: parts held by another device come back first
/// (its migrate callback with `to_device` 0), then every other device of
/// the range invalidates the granule (its invalidate callback) and the
/// target device's callback takes it (`to_device` 1). A device whose
/// access is none is `SVMAP_EPERM`; a callback that fails is `SVMAP_EIO`.
///
/// # Safety
///
/// `rt` is NULL (`SVMAP_EINVAL`) or a live handle from
/// `svmap_runtime_new`, not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_prefetch(
    rt: *mut svmap_runtime_t,
    addr: u64,
    length: u64,
    location: u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        let loc = match Attr::from_raw(SVMAP_ATTR_PREFETCH_LOCATION, location) {
            Ok(Attr::PrefetchLocation(Some(l))) => l,
            Ok(_) => return Err(Failure::inval("the location is undefined")),
            Err(e) => return Err(attr_failure(e)),
        };
        prefetch(r, addr, length, loc)
    })
}

/// Where the page at `addr` is: `SVMAP_LOCATION_SYSTEM` or 1 + the index
/// of the device that holds it.
///
/// # Safety
///
/// `rt` as for `svmap_runtime_set_attr`; `out_location` is NULL
/// (`SVMAP_EINVAL`) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_location(
    rt: *mut svmap_runtime_t,
    addr: u64,
    out_location: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_location`.
        let out = unsafe { Out::new(out_location, "out_location") }?;
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        let held = r
            .on_device
            .range(..=addr)
            .next_back()
            .filter(|(_, &(e, _))| addr < e)
            .map(|(_, &(_, d))| d);
        out.write(match held {
            None => SVMAP_LOCATION_SYSTEM,
            Some(d) => d as u64 + 1,
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// The runtime under test, as C holds it.
    struct Rt(*mut svmap_runtime_t);

    impl Rt {
        fn set(&self, a: u64, len: u64, attrs: &[svmap_attr_t]) -> svmap_status_t {
            // SAFETY: a live handle; a valid list of `attrs.len()` entries.
            unsafe { svmap_runtime_set_attr(self.0, a, len, attrs.as_ptr(), attrs.len()) }
        }
        fn get(&self, a: u64, len: u64, attrs: &mut [svmap_attr_t]) -> svmap_status_t {
            // SAFETY: a live handle; a valid, writable list.
            unsafe { svmap_runtime_get_attr(self.0, a, len, attrs.as_mut_ptr(), attrs.len()) }
        }
        fn prefetch(&self, a: u64, len: u64, loc: u64) -> svmap_status_t {
            // SAFETY: a live handle.
            unsafe { svmap_runtime_prefetch(self.0, a, len, loc) }
        }
        fn location(&self, a: u64) -> u64 {
            let mut loc = u64::MAX;
            // SAFETY: a live handle; a valid out-parameter.
            let st = unsafe { svmap_runtime_location(self.0, a, &mut loc) };
            assert_eq!(st, SVMAP_OK);
            loc
        }
    }

    impl Drop for Rt {
        fn drop(&mut self) {
            // SAFETY: the handle from svmap_runtime_new, deleted once.
            unsafe { crate::svmap_runtime_delete(self.0) }
        }
    }

    /// A recording migrate callback: every call as (start, end, to).
    unsafe extern "C" fn record(user: *mut c_void, s: u64, e: u64, to: c_int) -> c_int {
        // SAFETY: the test passes a live `Vec` as `user`.
        let v = unsafe { &mut *user.cast::<Vec<(u64, u64, c_int)>>() };
        v.push((s, e, to));
        0
    }

    fn attr(type_: u32, value: u64) -> svmap_attr_t {
        svmap_attr_t { type_, value }
    }

    #[test]
    fn a_misaligned_attribute_list_is_refused() {
        let rt = Rt(Box::into_raw(crate::svmap_runtime_new(false).unwrap()));
        // Room for two entries and a byte more, so that base + 4 is a
        // misaligned pointer to one whole entry inside the buffer.
        let mut buf = [0u64; 5];
        let p = buf.as_mut_ptr().cast::<u8>().wrapping_add(4);
        let p = p.cast::<svmap_attr_t>();
        assert!(!p.is_aligned());
        // SAFETY: a live handle; `p` points inside `buf` (the call must
        // refuse it before reading).
        let st = unsafe { svmap_runtime_set_attr(rt.0, 0x10000, 0x1000, p, 1) };
        assert_eq!(st, SVMAP_EINVAL);
        // SAFETY: the message is a NUL-terminated string of this thread,
        // valid until its next call.
        let msg = unsafe { std::ffi::CStr::from_ptr(crate::svmap_last_error_message()) };
        assert!(
            msg.to_str().unwrap().contains("attrs is not aligned"),
            "{msg:?}"
        );
        // SAFETY: as above; nothing may be written through `p`.
        let st = unsafe { svmap_runtime_get_attr(rt.0, 0x10000, 0x1000, p, 1) };
        assert_eq!(st, SVMAP_EINVAL);
        assert_eq!(buf, [0; 5]);
    }

    #[test]
    fn attributes_and_prefetch_through_the_c_abi() {
        let rt = Rt(Box::into_raw(crate::svmap_runtime_new(false).unwrap()));
        let names = [CString::new("gpu0").unwrap(), CString::new("gpu1").unwrap()];
        for (n, bits) in names.iter().zip([40u32, 44]) {
            let cfg = crate::svm::svmap_device_config_t {
                name: n.as_ptr(),
                va_bits: bits,
                base: 0,
                page_size: 4096,
                mirror: crate::svm::SVMAP_MIRROR_BUFFERS,
                populate: crate::svm::SVMAP_POPULATE_ON_FAULT,
                tlb_entries: 64,
            };
            let ops = crate::svmap_device_ops_t {
                user: std::ptr::null_mut(),
                map: None,
                invalidate: None,
                protect: None,
                unmap: None,
                map_region: None,
            };
            // SAFETY: a live handle, a valid name and no callbacks.
            let st = unsafe { crate::svmap_runtime_add_device(rt.0, Some(&cfg), Some(&ops)) };
            assert_eq!(st, SVMAP_OK);
        }
        let mut calls: Vec<(u64, u64, c_int)> = Vec::new();
        let user = (&raw mut calls).cast::<c_void>();
        // SAFETY: a live handle, a valid name; `record` with a Vec that
        // outlives the runtime's use of it (read only after the calls).
        let st = unsafe { svmap_runtime_set_migrate(rt.0, names[0].as_ptr(), Some(record), user) };
        assert_eq!(st, SVMAP_OK);
        let devs = [names[0].as_ptr(), names[1].as_ptr()];
        let mut a = 0u64;
        // SAFETY: a live handle, two valid names, a valid out-parameter.
        let st = unsafe { crate::svmap_runtime_alloc(rt.0, 0x10000, devs.as_ptr(), 2, &mut a) };
        assert_eq!(st, SVMAP_OK);
        // 16 KiB granules and a flag everywhere, gpu0 preferred on the
        // first half.
        let first = [
            attr(SVMAP_ATTR_GRANULARITY, 2),
            attr(SVMAP_ATTR_SET_FLAGS, SVMAP_FLAG_READ_MOSTLY),
        ];
        assert_eq!(rt.set(a, 0x10000, &first), SVMAP_OK);
        assert_eq!(
            rt.set(a, 0x8000, &[attr(SVMAP_ATTR_PREFERRED_LOCATION, 1)]),
            SVMAP_OK
        );
        let mut q = [
            attr(SVMAP_ATTR_PREFERRED_LOCATION, 0),
            attr(SVMAP_ATTR_GRANULARITY, 0),
            attr(SVMAP_ATTR_SET_FLAGS, 0),
            attr(SVMAP_ATTR_ACCESS, 1 << 32),
        ];
        assert_eq!(rt.get(a, 0x10000, &mut q), SVMAP_OK);
        assert_eq!(
            q.map(|x| x.value),
            [
                SVMAP_LOCATION_UNDEFINED,
                2,
                SVMAP_FLAG_READ_MOSTLY,
                1 << 32 | SVMAP_ACCESS_MAY_MIGRATE
            ]
        );
        assert_eq!(rt.get(a, 0x8000, &mut q[..1]), SVMAP_OK);
        assert_eq!(q[0].value, 1);
        // Bad input: an unknown type, a bad granularity, not SVM memory.
        assert_eq!(rt.set(a, 0x1000, &[attr(42, 0)]), SVMAP_EINVAL);
        assert_eq!(
            rt.set(a, 0x1000, &[attr(SVMAP_ATTR_GRANULARITY, 10)]),
            SVMAP_EINVAL
        );
        assert_eq!(rt.set(a + 0x10000, 0x1000, &first), SVMAP_ENOENT);
        // Prefetch a page to gpu0: its whole 16 KiB granule moves.
        assert_eq!(rt.prefetch(a + 0x5000, 0x1000, 1), SVMAP_OK);
        assert_eq!(calls, vec![(a + 0x4000, a + 0x8000, 1)]);
        assert_eq!(rt.location(a + 0x4000), 1);
        assert_eq!(rt.location(a), SVMAP_LOCATION_SYSTEM);
        // gpu1 has no migrate callback: refused, nothing moved.
        assert_eq!(rt.prefetch(a, 0x1000, 2), SVMAP_EINVAL);
        // Back to system memory through the attribute list.
        let back = [attr(SVMAP_ATTR_PREFETCH_LOCATION, SVMAP_LOCATION_SYSTEM)];
        assert_eq!(rt.set(a, 0x10000, &back), SVMAP_OK);
        assert_eq!(calls[1], (a + 0x4000, a + 0x8000, 0));
        assert_eq!(rt.location(a + 0x4000), SVMAP_LOCATION_SYSTEM);
        // No access: EPERM, nothing called.
        let none = [attr(SVMAP_ATTR_ACCESS, SVMAP_ACCESS_NONE)];
        assert_eq!(rt.set(a, 0x10000, &none), SVMAP_OK);
        assert_eq!(rt.prefetch(a, 0x1000, 1), SVMAP_EPERM);
        assert_eq!(calls.len(), 2);
    }
}
