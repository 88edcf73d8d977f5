//! `svmap_runtime_t`: the SVM engine on this process's real memory
//! ([`svmap_runtime::LinuxCpu`]) with devices whose backends are C
//! callbacks ([`svmap_device_ops_t`]): a runtime with a real driver lets
//! svmap decide every address and carries the decisions out in its own
//! GPU VM calls.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};

use svmap_core::linux::MmConfig;
use svmap_runtime::{seed_from_self, start, LinuxCpu, StartConfig, StartError};
use svmap_svm::{BackendError, DeviceBackend, Engine, EngineError, Prot};

use crate::svm::{
    c_str_array, cpu_policy_of, device_config, prot_of, svm_failure, svmap_cpu_policy_t,
    svmap_device_config_t, svmap_prot_t, SVMAP_PROT_NONE, SVMAP_PROT_READ, SVMAP_PROT_READ_WRITE,
};
use crate::svmap_status_t::{self, *};
use crate::{
    c_str, ffi_status, ffi_value, handle, range_end, status_of_errno, Failure, FfiResult, Out,
};

/// A device callback on `[start, end)`: returns 0 when done, anything else
/// when it failed (the value is reported in the error message).
pub type svmap_device_range_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, start: u64, end: u64) -> c_int>;

/// A device protection callback on `[start, end)` (`prot`:
/// `SVMAP_PROT_*`): 0 when done, anything else when it failed.
pub type svmap_device_protect_fn = Option<
    unsafe extern "C" fn(user: *mut c_void, start: u64, end: u64, prot: svmap_prot_t) -> c_int,
>;

/// A device backend as C callbacks. Each gets `user` first. A NULL
/// callback does nothing and succeeds. svmap calls them in this order:
/// `svmap_runtime_alloc`: `map` on every device of the set, after the CPU
/// side is mapped; `svmap_runtime_free`: `invalidate` on every device of
/// the range (the device must have stopped using it when it returns 0),
/// then `unmap` on each; only then may the range be handed out again;
/// `svmap_runtime_protect`: `invalidate`, then `protect`;
/// `svmap_runtime_device_map`: `map_region`. No range given to a device
/// reaches `2^va_bits` of that device. An `invalidate` that fails makes
/// `svmap_runtime_free` fail with `SVMAP_EIO` naming the device, and the
/// range stays allocated (never reused). Any other non-zero return fails
/// the call with `SVMAP_EIO`, the code in the message, after undoing what
/// the call did: when `map` fails on a device, `invalidate` and `unmap` are
/// called for the range on every device of the set, the failing one
/// included (its `map` may have mapped part of the range), so both must
/// accept a range, or parts of it, that the device does not map, and
/// succeed. A callback must return (no `longjmp` or C++ exception
/// through svmap) and must not call the runtime: such a call fails with
/// `SVMAP_EINVAL` (and `svmap_runtime_delete` does nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct svmap_device_ops_t {
    /// Passed to every callback.
    pub user: *mut c_void,
    /// Map `[start, end)` at the same address as the CPU, read-write.
    pub map: svmap_device_range_fn,
    /// Invalidate `[start, end)` and wait until the device stopped using it.
    pub invalidate: svmap_device_range_fn,
    /// Change the device's access to `[start, end)`.
    pub protect: svmap_device_protect_fn,
    /// Unmap `[start, end)` (after an acknowledged invalidation).
    pub unmap: svmap_device_range_fn,
    /// Back the device-only region `[start, end)` with device memory.
    pub map_region: svmap_device_range_fn,
}

/// The Rust side of [`svmap_device_ops_t`].
struct CDevice(svmap_device_ops_t);

fn done(op: &str, rc: c_int) -> Result<(), BackendError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(BackendError::Other(format!(
            "the {op} callback returned {rc}"
        )))
    }
}

thread_local! {
    /// Set while this thread runs a device callback: the runtime's entry
    /// points refuse to run then (the runtime is in the middle of a call).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a device callback) with [`IN_CALLBACK`] set, then clears the
/// last error that svmap calls made by the callback may have left (the
/// call in progress sets its own when it fails).
pub(crate) fn in_callback<T>(f: impl FnOnce() -> T) -> T {
    let was = IN_CALLBACK.replace(true);
    let r = f();
    IN_CALLBACK.set(was);
    // An empty call: ffi_call starts by clearing the last error.
    let _ = crate::ffi_call(|| Ok(()));
    r
}

/// The runtime behind `rt`, unless it is NULL or misaligned
/// (`SVMAP_EINVAL`) or this thread is inside one of its device callbacks
/// (`SVMAP_EINVAL`: the runtime is busy with the call that made the
/// callback).
///
/// # Safety
///
/// `rt` is NULL, misaligned, or a handle from `svmap_runtime_new` that is
/// not used by another thread during the call.
pub(crate) unsafe fn runtime<'a>(rt: *mut svmap_runtime_t) -> FfiResult<&'a mut svmap_runtime_t> {
    if IN_CALLBACK.get() {
        return Err(Failure::inval(
            "a device callback called the runtime (callbacks must not call svmap_runtime_*)",
        ));
    }
    if !rt.is_aligned() {
        return Err(Failure::inval("rt is not aligned"));
    }
    // SAFETY: non-null (checked by as_mut), aligned (checked), and the
    // caller's contract: a live handle used by this thread alone; no call
    // of this runtime is in progress on this thread (checked above).
    unsafe { rt.as_mut() }.ok_or_else(|| Failure::null("rt"))
}

impl CDevice {
    fn range(
        &self,
        op: &str,
        f: svmap_device_range_fn,
        s: u64,
        e: u64,
    ) -> Result<(), BackendError> {
        match f {
            None => Ok(()),
            // SAFETY: the caller of `svmap_runtime_add_device` promised
            // callbacks that may be called with `user` while the runtime
            // lives.
            Some(f) => done(op, in_callback(|| unsafe { f(self.0.user, s, e) })),
        }
    }
}

impl DeviceBackend for CDevice {
    fn map(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        self.range("map", self.0.map, s, e)
    }
    fn invalidate(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        self.range("invalidate", self.0.invalidate, s, e)
    }
    fn protect(&mut self, s: u64, e: u64, prot: Prot) -> Result<(), BackendError> {
        let p = match prot {
            Prot::None => SVMAP_PROT_NONE,
            Prot::Read => SVMAP_PROT_READ,
            Prot::ReadWrite => SVMAP_PROT_READ_WRITE,
        };
        match self.0.protect {
            None => Ok(()),
            // SAFETY: as in `CDevice::range`.
            Some(f) => done(
                "protect",
                in_callback(|| unsafe { f(self.0.user, s, e, p) }),
            ),
        }
    }
    fn unmap(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        self.range("unmap", self.0.unmap, s, e)
    }
    fn map_region(&mut self, s: u64, e: u64) -> Result<(), BackendError> {
        self.range("map_region", self.0.map_region, s, e)
    }
}

/// The SVM engine on this process's memory with C device backends. Owned
/// by the caller from `svmap_runtime_new` to `svmap_runtime_delete`; not
/// thread-safe.
pub struct svmap_runtime_t {
    pub(crate) engine: Engine<LinuxCpu, Box<dyn DeviceBackend>>,
    /// Each device's migrate callback and its user pointer, by index.
    pub(crate) migrate: Vec<(crate::attr::svmap_device_migrate_fn, *mut c_void)>,
    /// Granules a device holds: start -> (end, device index).
    pub(crate) on_device: std::collections::BTreeMap<u64, (u64, usize)>,
}

impl std::fmt::Debug for svmap_runtime_t {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("svmap_runtime_t")
            .field("devices", &self.engine.devices().len())
            .finish()
    }
}

pub(crate) fn engine_failure(e: EngineError) -> Failure {
    match e {
        EngineError::Svm(e) => svm_failure(e),
        EngineError::Cpu {
            error: BackendError::NotOwned { .. },
            ..
        } => Failure::new(SVMAP_EEXIST, e.to_string()),
        EngineError::Cpu {
            error: BackendError::Sys { errno, .. },
            ..
        } => Failure::new(status_of_errno(errno), e.to_string()),
        // The engine refused to hand a device a range past its limit: a
        // bug of the space, not of the caller or the system.
        EngineError::LimitGuard { .. } => Failure::new(SVMAP_INTERNAL, e.to_string()),
        e => Failure::new(SVMAP_EIO, e.to_string()),
    }
}

/// A new runtime on this process: its CPU space is seeded from
/// `/proc/self/maps`, and it has no devices. With `guarded`, free pages of
/// window heaps are `PROT_NONE` (a CPU use after free faults). Returns an
/// owned handle, or NULL with the last error set.
#[no_mangle]
pub extern "C" fn svmap_runtime_new(guarded: bool) -> Option<Box<svmap_runtime_t>> {
    ffi_value(None, || {
        let mut engine = Engine::new(MmConfig::default(), LinuxCpu::new(guarded));
        seed_from_self(&mut engine).map_err(|e| Failure::new(SVMAP_EIO, e.to_string()))?;
        Ok(Some(Box::new(svmap_runtime_t {
            engine,
            migrate: Vec::new(),
            on_device: std::collections::BTreeMap::new(),
        })))
    })
}

/// `n` elements of type `T` at `p`, checked as `c_str_array` checks its
/// array (NULL, a count that overflows, misalignment).
///
/// # Safety
///
/// `p` is NULL or points to `n` readable elements that live for `'a`.
unsafe fn c_array<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::null(what));
    }
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Failure::inval(format!(
            "{n} entries of {what} overflow the address space"
        )));
    }
    if !p.is_aligned() {
        return Err(Failure::inval(format!("{what} is not aligned")));
    }
    // SAFETY: non-null and aligned (checked), `n` elements span at most
    // isize::MAX bytes (checked), and the caller guarantees that they are
    // readable and live for 'a.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn start_failure(e: StartError) -> Failure {
    match e {
        StartError::Device { error, .. } | StartError::Window(error) => {
            let msg = format!("start-up: {error}");
            let mut f = engine_failure(error);
            f.msg = msg;
            f
        }
        e @ (StartError::NoDevices
        | StartError::NoCommonWindow { .. }
        | StartError::WindowSize { .. }) => Failure::inval(e.to_string()),
        e => Failure::new(SVMAP_EIO, e.to_string()),
    }
}

/// A new runtime on this process with its devices, started in the order
/// that keeps the devices' window clear: its CPU space is seeded from
/// `/proc/self/maps`, the `n_devices` devices (`cfgs[i]` driven by
/// `ops[i]`, copied as in `svmap_runtime_add_device`) are added, and the
/// top `window` bytes of their common window (0: the whole window, up to
/// 256 GiB) are reserved at once (`PROT_NONE`, no memory), before the
/// application maps anything more. The application's later mappings land
/// outside it; SVM ranges for any set of the devices are carved from it
/// (each device's `base` is raised to the window's start) with no system
/// call and no `/proc` read. With `guarded` as in `svmap_runtime_new`.
/// Returns an owned handle, or NULL with the last error set:
/// `SVMAP_EINVAL` for no devices, devices with no common window, or a
/// `window` larger than it; the error of the reservation otherwise (the
/// message says why).
///
/// # Safety
///
/// `cfgs` and `ops` are NULL (with `n_devices` 0) or point to `n_devices`
/// elements each; each `cfgs[i].name` is NULL (`SVMAP_EINVAL`) or a
/// NUL-terminated string; the callbacks as for `svmap_runtime_add_device`.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_start(
    guarded: bool,
    cfgs: *const svmap_device_config_t,
    ops: *const svmap_device_ops_t,
    n_devices: usize,
    window: u64,
) -> Option<Box<svmap_runtime_t>> {
    ffi_value(None, || {
        if IN_CALLBACK.get() {
            return Err(Failure::inval(
                "a device callback called the runtime (callbacks must not call svmap_runtime_*)",
            ));
        }
        // Bounded before anything is read or reserved: a runtime has at most
        // MAX_DEVICES devices, so a larger count is an error, not an
        // allocation or a read past the caller's arrays.
        if n_devices > svmap_svm::MAX_DEVICES {
            return Err(Failure::inval(format!(
                "n_devices is {n_devices}; a runtime has at most {} devices",
                svmap_svm::MAX_DEVICES
            )));
        }
        // SAFETY: the caller's contract for `cfgs`, `ops` and `n_devices`.
        let cfgs = unsafe { c_array(cfgs, n_devices, "cfgs") }?;
        // SAFETY: as above.
        let ops = unsafe { c_array(ops, n_devices, "ops") }?;
        let mut devices: Vec<(svmap_svm::DeviceConfig, Box<dyn DeviceBackend>)> =
            Vec::with_capacity(n_devices);
        for (c, o) in cfgs.iter().zip(ops) {
            // SAFETY: the caller's contract for `cfgs[i].name`.
            let d = unsafe { device_config(c) }?;
            devices.push((d, Box::new(CDevice(*o))));
        }
        let cfg = StartConfig {
            mm: MmConfig::default(),
            window: (window != 0).then_some(window),
        };
        let s = start(&cfg, LinuxCpu::new(guarded), devices).map_err(start_failure)?;
        Ok(Some(Box::new(svmap_runtime_t {
            engine: s.engine,
            migrate: Vec::new(),
            on_device: std::collections::BTreeMap::new(),
        })))
    })
}

/// Deletes a runtime: every range it owns is unmapped (no device callback
/// is called). Takes ownership; NULL is fine. Called from inside one of
/// the runtime's device callbacks it does nothing (the last error says
/// why).
///
/// # Safety
///
/// `rt` is NULL or a handle from `svmap_runtime_new` not deleted yet.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_delete(rt: *mut svmap_runtime_t) {
    ffi_value((), || {
        if rt.is_null() {
            return Ok(());
        }
        // SAFETY: the caller's contract (checked for use inside a
        // callback and for alignment by `runtime`).
        let r = unsafe { runtime(rt) }?;
        // SAFETY: `rt` came from `Box::into_raw` in `svmap_runtime_new`
        // (the caller's contract) and is dropped once.
        drop(unsafe { Box::from_raw(r as *mut svmap_runtime_t) });
        Ok(())
    })
}

/// Adds a device (as `svmap_svm_add_device`) whose backend is `ops`
/// (copied; `ops->user` and the callbacks must stay valid while the
/// runtime lives).
///
/// # Safety
///
/// `rt` as for `svmap_runtime_free`; `cfg->name` is NULL (`SVMAP_EINVAL`)
/// or a NUL-terminated string; the
/// callbacks of `ops` are NULL or functions that may be called as
/// documented at [`svmap_device_ops_t`].
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_add_device(
    rt: *mut svmap_runtime_t,
    cfg: Option<&svmap_device_config_t>,
    ops: Option<&svmap_device_ops_t>,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        let c = handle(cfg, "cfg")?;
        let ops = *handle(ops, "ops")?;
        // SAFETY: the caller's contract for `cfg->name`.
        let d = unsafe { device_config(c) }?;
        r.engine
            .add_device_with(d, Box::new(CDevice(ops)))
            .map_err(engine_failure)
    })
}

/// Reserves the common window of `devices` (`n_devices` names) in this
/// process (`PROT_NONE`, no memory): SVM ranges for those devices are
/// carved from it with no system call. A mapping made since the runtime
/// was created is met as in `svmap_runtime_alloc` (one refresh from
/// `/proc/self/maps`, one more try).
///
/// # Safety
///
/// `rt` as for `svmap_runtime_free`; `devices` is NULL (with `n_devices`
/// 0) or points to `n_devices` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_reserve_window(
    rt: *mut svmap_runtime_t,
    devices: *const *const c_char,
    n_devices: usize,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `devices` and `n_devices`.
        let names = unsafe { c_str_array(devices, n_devices, "devices") }?;
        svmap_runtime::with_refresh(&mut r.engine, |e| e.reserve_window(&names))
            .map(|_| ())
            .map_err(engine_failure)
    })
}

/// Allocates an SVM range of `length` bytes for `devices`, mapped
/// read-write in this process and (through the callbacks) on every one of
/// them at the same address; `*out_addr` is its start. If the address the
/// runtime chose is taken by a mapping made since the runtime was created
/// (it never maps over one), it reads `/proc/self/maps` once and chooses
/// again.
///
/// # Safety
///
/// As for `svmap_runtime_reserve_window`; `out_addr` is NULL
/// (`SVMAP_EINVAL`) or valid for writing a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_alloc(
    rt: *mut svmap_runtime_t,
    length: u64,
    devices: *const *const c_char,
    n_devices: usize,
    out_addr: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `out_addr`.
        let out = unsafe { Out::new(out_addr, "out_addr") }?;
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `devices` and `n_devices`.
        let names = unsafe { c_str_array(devices, n_devices, "devices") }?;
        let a = svmap_runtime::svm_alloc(&mut r.engine, length, None, &names, false)
            .map_err(engine_failure)?;
        out.write(a);
        Ok(())
    })
}

/// Frees the SVM range that starts at `addr`: every device invalidates and
/// unmaps it, then this process gives its memory back. `SVMAP_EIO` (the
/// message names the device) if a device did not acknowledge the
/// invalidation: the range then stays allocated. `SVMAP_EINVAL` for an
/// address where no SVM range starts (never allocated, or freed already).
///
/// # Safety
///
/// `rt` is NULL (`SVMAP_EINVAL`) or a live handle from
/// `svmap_runtime_new`, not used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_free(rt: *mut svmap_runtime_t, addr: u64) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        let range = r.engine.alloc_at(addr).map(|v| (v.start, v.end));
        r.engine.svm_free(addr).map_err(engine_failure)?;
        // The devices unmapped it: whatever they held of it is gone.
        if let Some((s, e)) = range {
            crate::attr::forget_granules(r, s, e);
        }
        Ok(())
    })
}

/// Changes the protection of `[addr, addr + length)` (SVM ranges) on the
/// CPU and on the devices (`SVMAP_PROT_*`).
///
/// # Safety
///
/// As for `svmap_runtime_free`.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_protect(
    rt: *mut svmap_runtime_t,
    addr: u64,
    length: u64,
    prot: svmap_prot_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        range_end(addr, length)?;
        let p = prot_of(prot)?;
        r.engine.protect(addr, length, p).map_err(engine_failure)
    })
}

/// A device-only region `[start, end)` of `device`: on the CPU an
/// svmap-owned mapping that faults (`SVMAP_CPU_FAULT`) or reads zeros
/// (`SVMAP_CPU_DUMMY_PAGE`); on the device, its `map_region` callback.
///
/// # Safety
///
/// `rt` as for `svmap_runtime_free`; `device` is NULL (`SVMAP_EINVAL`) or
/// a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_device_map(
    rt: *mut svmap_runtime_t,
    device: *const c_char,
    start: u64,
    end: u64,
    cpu: svmap_cpu_policy_t,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for `rt`.
        let r = unsafe { runtime(rt) }?;
        // SAFETY: the caller's contract for `device`.
        let device = unsafe { c_str(device, "device") }?;
        let cpu = cpu_policy_of(cpu)?;
        r.engine
            .device_map(device, start, end, cpu)
            .map_err(engine_failure)
    })
}

/// The memfd, offset and length of the live SVM range that contains
/// `addr`, for mapping it in another process at the same address. The
/// descriptor belongs to the runtime (duplicate it to keep it); it stays
/// open while the range is live. `SVMAP_ENOENT` if no live range holds
/// `addr`.
///
/// # Safety
///
/// `rt` as for `svmap_runtime_free`; each out-parameter is NULL
/// (`SVMAP_EINVAL`) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn svmap_runtime_buffer_fd(
    rt: *const svmap_runtime_t,
    addr: u64,
    out_fd: *mut c_int,
    out_offset: *mut u64,
    out_length: *mut u64,
) -> svmap_status_t {
    ffi_status(|| {
        // SAFETY: the caller's contract for the out-parameters.
        let (fd_out, off_out, len_out) = unsafe {
            (
                Out::new(out_fd, "out_fd")?,
                Out::new(out_offset, "out_offset")?,
                Out::new(out_length, "out_length")?,
            )
        };
        // SAFETY: the caller's contract for `rt` (only read below).
        let r = unsafe { runtime(rt.cast_mut()) }?;
        let (fd, off, len) = r.engine.cpu_backend().locate(addr).ok_or_else(|| {
            Failure::new(
                SVMAP_ENOENT,
                format!("{addr:#x} is not in a live SVM range"),
            )
        })?;
        use std::os::fd::AsRawFd;
        fd_out.write(fd.as_raw_fd());
        off_out.write(off);
        len_out.write(len);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_sys(errno: i32) -> EngineError {
        EngineError::Cpu {
            op: "map",
            start: 0x10_0000,
            end: 0x20_0000,
            error: BackendError::Sys {
                call: "mmap",
                errno,
            },
        }
    }

    /// A system call of the CPU backend that failed keeps its errno as the
    /// status, and the message keeps the call and the range.
    #[test]
    fn cpu_errno_becomes_its_status() {
        for (errno, status) in [
            (12, SVMAP_ENOMEM),
            (22, SVMAP_EINVAL),
            (1, SVMAP_EPERM),
            (5, SVMAP_EIO),
        ] {
            let e = cpu_sys(errno);
            let text = e.to_string();
            let f = engine_failure(e);
            assert_eq!(f.status, status, "errno {errno}: {text}");
            assert_eq!(f.msg, text);
            assert!(
                f.msg.contains("mmap") && f.msg.contains("0x100000"),
                "{}",
                f.msg
            );
        }
    }

    /// The limit guard is a bug of the space (`SVMAP_INTERNAL`); a CPU
    /// backend error that is not a system call stays `SVMAP_EIO`.
    #[test]
    fn limit_guard_is_internal_and_other_cpu_errors_are_eio() {
        let e = EngineError::LimitGuard {
            device: "gpu0".into(),
            start: 1 << 47,
            end: (1 << 47) + 0x1000,
            limit: 1 << 47,
        };
        let text = e.to_string();
        let f = engine_failure(e);
        assert_eq!(f.status, SVMAP_INTERNAL, "{text}");
        assert_eq!(f.msg, text);

        let f = engine_failure(EngineError::Cpu {
            op: "protect",
            start: 0,
            end: 0x1000,
            error: BackendError::Other("odd".into()),
        });
        assert_eq!(f.status, SVMAP_EIO, "{}", f.msg);
    }
}
