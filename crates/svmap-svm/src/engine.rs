//! [`Engine`]: the SVM engine ([`SvmSpace`]) driving a CPU backend and one
//! backend per device ([`crate::backend`]).
//!
//! `SvmSpace` decides (which address, free on the CPU and on every device
//! of the set, inside the window, clear of device-only regions and guard
//! gaps); the engine tells the backends what each decision changes, in an
//! order that keeps them safe:
//!
//! | operation | backend calls, in order |
//! | --- | --- |
//! | `svm_alloc` | decide; CPU `map`; every device of the set `map_start`, then every one `map_finish` (one request per device process, all in flight at once); on a failure every device asked, the failing ones included, `invalidate_unmap`s again (both halves), the CPU `unmap`s, the range is free |
//! | `svm_free` | every device of the range `invalidate_unmap_start`, then every one `invalidate_unmap_finish` (invalidate, acknowledge, unmap: one request per device process, all in flight at once); CPU `unmap`; only then the range is free in the space |
//! | `svm_free_many` | the same, once per device with every range of the batch it holds; CPU `unmap` per range all its devices finished; those ranges are free |
//! | `add_device` | the backend's `own_mappings` become ranges held on the device ([`SvmSpace::device_hold`]) |
//! | `remove_device` | the device `invalidate_unmap`s what it still holds (a dead one does not answer); it leaves the space; CPU `release_region` for each of its device-only regions (the range is free on the CPU then); failed frees of its ranges are retried on the devices that remain |
//! | `protect` | decide; per SVM piece: every device of it `invalidate`, CPU `protect`, device `protect` |
//! | `device_map` | decide; CPU `map_device_only` (the part below `task_size`); device `map_region` |
//! | `reserve_window` | decide; CPU `reserve` per piece |
//! | `release_window` | CPU `release` per piece; then the space releases |
//! | `cpu_unmap`, `MAP_FIXED` `cpu_mmap` (observed) | every device of each SVM piece there `invalidate` and `unmap`; the space changes; CPU `forget` |
//! | `cpu_map`, `cpu_mmap`, `find`, `device_hold` | the space only |
//!
//! A device that does not acknowledge an invalidation gives
//! [`EngineError::NotAcknowledged`] naming it, and the range stays
//! allocated in the space, so it is never handed out again while a device
//! may still use it: a range is handed out again only after every device
//! that held it and is still in the engine has acknowledged its
//! invalidation ([`Engine::remove_device`] says when a device may leave
//! without acknowledging). A free that fails partway keeps the range
//! allocated whole ([`Engine::svm_free`] has the rule); the engine
//! remembers which devices of such a range have acknowledged and unmapped
//! it, and a retry, a `protect` or an observed unmap no longer asks them.
//! No device backend is ever given a range at or above
//! its limit `2^va_bits` (checked before every call:
//! [`EngineError::LimitGuard`]).
//!
//! With [`ModelCpu`] and [`ModelDevice`] (the defaults) the engine makes no
//! system calls; the trace executor runs on it. The backends are generic
//! parameters (a `Box<dyn …>` works too), and the engine keeps reusable
//! scratch buffers, so the operations add no allocation of their own
//! beyond what the space does.

use std::fmt;
use std::ops::Deref;

use svmap_core::linux::{Fixed, MmConfig, MmapRequest};
use svmap_core::{SearchError, UnmappedAreaInfo};

use crate::attr::{check_range, Attr, AttrError, AttrMap, RangeAttrs};
use crate::backend::{
    BackendError, BatchError, CpuBackend, DeviceBackend, DeviceFault, ModelCpu, ModelDevice,
    Release,
};
use crate::error::{Fault, SvmError};
use crate::mirror::{DefaultFormat, PtFormat};
use crate::space::{CpuPolicy, DeviceConfig, Prot, SvmSpace, WindowReservation};

/// Why an engine operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The space refused the operation (nothing changed).
    Svm(SvmError),
    /// The CPU backend failed.
    Cpu {
        /// The backend call.
        op: &'static str,
        /// Start of its range.
        start: u64,
        /// End of its range (exclusive).
        end: u64,
        /// Why.
        error: BackendError,
    },
    /// A device backend failed (other than an invalidation).
    Device {
        /// The device.
        device: String,
        /// The backend call.
        op: &'static str,
        /// Start of its range.
        start: u64,
        /// End of its range (exclusive).
        end: u64,
        /// Why.
        error: BackendError,
    },
    /// A device did not acknowledge the invalidation of `[start, end)`;
    /// the range stays allocated (it is not reused).
    NotAcknowledged {
        /// The device.
        device: String,
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// Why.
        error: BackendError,
    },
    /// The engine was about to hand a device a range at or above its
    /// limit; nothing was called. A bug of the space if it ever happens.
    LimitGuard {
        /// The device.
        device: String,
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// The device's limit `2^va_bits` (saturated).
        limit: u64,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Svm(e) => e.fmt(f),
            EngineError::Cpu {
                op,
                start,
                end,
                error,
            } => write!(f, "CPU backend {op} [{start:#x}, {end:#x}): {error}"),
            EngineError::Device {
                device,
                op,
                start,
                end,
                error,
            } => write!(
                f,
                "device {device:?} backend {op} [{start:#x}, {end:#x}): {error}"
            ),
            EngineError::NotAcknowledged {
                device,
                start,
                end,
                error,
            } => write!(
                f,
                "device {device:?} did not acknowledge the invalidation of [{start:#x}, {end:#x}) ({error}); the range stays allocated"
            ),
            EngineError::LimitGuard {
                device,
                start,
                end,
                limit,
            } => write!(
                f,
                "refused to hand [{start:#x}, {end:#x}) to device {device:?}: its limit is {limit:#x}"
            ),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Svm(e) => Some(e),
            EngineError::Cpu { error, .. }
            | EngineError::Device { error, .. }
            | EngineError::NotAcknowledged { error, .. } => Some(error),
            EngineError::LimitGuard { .. } => None,
        }
    }
}

impl From<SvmError> for EngineError {
    fn from(e: SvmError) -> Self {
        EngineError::Svm(e)
    }
}

/// The SVM engine: an [`SvmSpace`] that drives a CPU backend and one
/// backend per device. See the module documentation for the order of the
/// calls. Read-only queries go to the space (`Deref`).
#[derive(Debug)]
pub struct Engine<C = ModelCpu, D = ModelDevice, F: PtFormat = DefaultFormat> {
    space: SvmSpace<F>,
    cpu: C,
    /// One per device of the space, in definition order.
    devs: Vec<D>,
    /// Reused: the device indices of the range being changed.
    scratch_devs: Vec<usize>,
    /// Reused: the pieces of the range being changed.
    scratch_pieces: Vec<(u64, u64)>,
    /// Frees that failed: retried when a device that held the range is
    /// removed; each knows the devices that no longer hold its range.
    pending: Vec<PendingFree>,
    /// Reused: the devices that finished their part of the current free.
    scratch_done: Vec<usize>,
    /// Attributes of SVM ranges (dropped with the range).
    attrs: AttrMap,
}

/// A free that failed partway.
#[derive(Debug)]
struct PendingFree {
    /// Start of the range.
    addr: u64,
    /// End of the range (exclusive).
    end: u64,
    /// Its allocation id (a range allocated again at `addr` is another).
    id: u64,
    /// The devices (indices) that acknowledged and unmapped every piece of
    /// it: a retry, a `protect` or an observed unmap no longer asks them.
    done: Vec<usize>,
}

/// The devices that no longer hold allocation `id` at `addr`.
fn done_of(pending: &[PendingFree], addr: u64, id: u64) -> &[usize] {
    pending
        .iter()
        .find(|p| p.addr == addr && p.id == id)
        .map_or(&[], |p| p.done.as_slice())
}

/// Refuses a range at or above the limit of device `d`.
fn guard_on<F: PtFormat>(
    space: &SvmSpace<F>,
    d: usize,
    start: u64,
    end: u64,
) -> Result<(), EngineError> {
    let dev = &space.devices()[d];
    let limit = 1u128 << dev.config().va_bits;
    if u128::from(end) > limit || start >= end {
        return Err(EngineError::LimitGuard {
            device: dev.config().name.clone(),
            start,
            end,
            limit: dev.limit(),
        });
    }
    Ok(())
}

/// The devices that no longer hold the SVM piece at `s` (its free failed
/// partway after they unmapped it).
fn released_at<'a, F: PtFormat>(
    space: &SvmSpace<F>,
    pending: &'a [PendingFree],
    s: u64,
) -> &'a [usize] {
    pending
        .iter()
        .find(|p| {
            p.addr <= s && s < p.end && space.alloc_pieces(p.id).any(|(a, b)| a <= s && s < b)
        })
        .map_or(&[], |p| p.done.as_slice())
}

/// One device's part of [`Engine::svm_free_many`].
struct DeviceBatch {
    /// The pieces it holds.
    ranges: Vec<(u64, u64)>,
    /// The index (in the batch) of the allocation of each piece.
    owner: Vec<usize>,
    /// Whether its batch was started.
    started: bool,
}

/// What [`Engine::remove_device`] did.
#[derive(Debug)]
pub struct RemovedDevice<D> {
    /// The device's backend, handed back (drop it to let the device go).
    pub backend: D,
    /// The final invalidation of every SVM piece the device still held,
    /// in one [`DeviceBackend::invalidate_unmap`]: `Ok` when the device
    /// acknowledged (it was detached cleanly), the error when it did not
    /// (it is gone).
    pub detached: Result<(), BatchError>,
    /// Ranges whose free had failed and that are free now (the removed
    /// device was the only one that had not acknowledged).
    pub freed: Vec<u64>,
    /// The CPU side of the device's device-only regions, given back
    /// ([`CpuBackend::release_region`]): those ranges are free on the CPU
    /// now. The first error, if the CPU backend could not give one back
    /// (that range stays reserved, nothing is placed there).
    pub released: Result<Vec<(u64, u64)>, EngineError>,
    /// The retried frees: the first error, if some of them still failed on
    /// another device (those ranges stay allocated).
    pub retry: Result<(), EngineError>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(MmConfig::default(), ModelCpu)
    }
}

impl<C, D, F: PtFormat> Deref for Engine<C, D, F> {
    type Target = SvmSpace<F>;
    fn deref(&self) -> &SvmSpace<F> {
        &self.space
    }
}

fn dev_name<F: PtFormat>(space: &SvmSpace<F>, d: usize) -> String {
    space.devices()[d].config().name.clone()
}

/// Invalidates `[s, e)` on device `d` and waits for its acknowledgement;
/// a device that does not acknowledge is `NotAcknowledged`, naming it.
fn invalidate_on<D: DeviceBackend, F: PtFormat>(
    space: &SvmSpace<F>,
    dev: &mut D,
    d: usize,
    s: u64,
    e: u64,
) -> Result<(), EngineError> {
    dev.invalidate(s, e)
        .map_err(|error| EngineError::NotAcknowledged {
            device: dev_name(space, d),
            start: s,
            end: e,
            error,
        })
}

/// The engine error for a failed [`DeviceBackend::invalidate_unmap`] of
/// `ranges` on device `d`: `NotAcknowledged` for the first range not
/// acknowledged, or a `Device` `unmap` error for an acknowledged one.
fn batch_error<F: PtFormat>(
    space: &SvmSpace<F>,
    d: usize,
    ranges: &[(u64, u64)],
    b: BatchError,
) -> EngineError {
    let (start, end) = ranges.get(b.done).copied().unwrap_or((0, 0));
    if b.acknowledged {
        EngineError::Device {
            device: dev_name(space, d),
            op: "unmap",
            start,
            end,
            error: b.error,
        }
    } else {
        EngineError::NotAcknowledged {
            device: dev_name(space, d),
            start,
            end,
            error: b.error,
        }
    }
}

/// Invalidates and unmaps, on every device that holds it, every SVM piece
/// of `space` in `[start, end)`. Stops at the first device that does not
/// acknowledge.
fn drop_pieces_on_devices<D: DeviceBackend, F: PtFormat>(
    space: &SvmSpace<F>,
    devs: &mut [D],
    pending: &[PendingFree],
    start: u64,
    end: u64,
) -> Result<(), EngineError> {
    for (s, e, ds) in space.svm_pieces_in(start, end) {
        let gone = released_at(space, pending, s);
        for &d in ds.iter().filter(|d| !gone.contains(d)) {
            invalidate_on(space, &mut devs[d], d, s, e)?;
        }
        for &d in ds.iter().filter(|d| !gone.contains(d)) {
            devs[d].unmap(s, e).map_err(|error| EngineError::Device {
                device: dev_name(space, d),
                op: "unmap",
                start: s,
                end: e,
                error,
            })?;
        }
    }
    Ok(())
}

impl<C: CpuBackend, D: DeviceBackend, F: PtFormat> Engine<C, D, F> {
    /// An empty space with these parameters, driving `cpu`.
    pub fn new(cfg: MmConfig, cpu: C) -> Self {
        Engine {
            space: SvmSpace::new(cfg),
            cpu,
            devs: Vec::new(),
            scratch_devs: Vec::new(),
            scratch_pieces: Vec::new(),
            pending: Vec::new(),
            scratch_done: Vec::new(),
            attrs: AttrMap::new(),
        }
    }

    /// The space (every decision and every query).
    pub fn space(&self) -> &SvmSpace<F> {
        &self.space
    }

    /// The CPU backend.
    pub fn cpu_backend(&self) -> &C {
        &self.cpu
    }

    /// The CPU backend, mutable (for what it offers beyond the trait).
    pub fn cpu_backend_mut(&mut self) -> &mut C {
        &mut self.cpu
    }

    /// The backends of the devices, in definition order.
    pub fn device_backends(&self) -> &[D] {
        &self.devs
    }

    /// The backends of the devices, mutable (for what they offer beyond
    /// the trait). Every range stays where the engine put it.
    pub fn device_backends_mut(&mut self) -> &mut [D] {
        &mut self.devs
    }

    /// Drops every device and every range of the space and starts again
    /// with `cfg` (`reset`); the CPU backend forgets everything.
    pub fn reset(&mut self, cfg: MmConfig) {
        self.space.reset(cfg);
        self.attrs.clear();
        self.devs.clear();
        self.cpu.forget(0, u64::MAX);
    }

    /// Adds a device ([`SvmSpace::add_device`]) driven by `backend`.
    ///
    /// The ranges the backend reports the device holds by its own means
    /// ([`DeviceBackend::own_mappings`]: a device process's binary,
    /// libraries, stack and heap) are entered into its space with
    /// [`SvmSpace::device_hold`], so no SVM range for the device is placed
    /// over them. If the backend cannot tell them, the device is not added.
    pub fn add_device_with(
        &mut self,
        cfg: DeviceConfig,
        mut backend: D,
    ) -> Result<(), EngineError> {
        let name = cfg.name.clone();
        let own = backend.own_mappings();
        self.space.add_device(cfg)?;
        let own = match own {
            Ok(v) => v,
            Err(error) => {
                self.space
                    .remove_device(&name)
                    .expect("the device was just added");
                return Err(EngineError::Device {
                    device: name,
                    op: "own_mappings",
                    start: 0,
                    end: 0,
                    error,
                });
            }
        };
        for (s, e) in own {
            if s >= e {
                continue;
            }
            if let Err(err) = self.space.device_hold(&name, s, e) {
                self.space
                    .remove_device(&name)
                    .expect("the device was just added");
                return Err(err.into());
            }
        }
        self.devs.push(backend);
        Ok(())
    }

    /// Marks `[start, end)` as held on `device` by other means
    /// ([`SvmSpace::device_hold`]); no backend call.
    pub fn device_hold(&mut self, device: &str, start: u64, end: u64) -> Result<u64, EngineError> {
        Ok(self.space.device_hold(device, start, end)?)
    }

    /// The start addresses of the ranges whose free failed and that are
    /// still allocated (retried by [`Self::remove_device`]).
    pub fn pending_frees(&self) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|p| self.space.alloc_at(p.addr).is_some_and(|v| v.id == p.id))
            .map(|p| p.addr)
            .collect()
    }

    /// The devices (names) that no longer hold the SVM range at `addr`: its
    /// free failed partway after they acknowledged and unmapped it, so a
    /// retry does not ask them again. Empty for a range whose free did not
    /// fail.
    pub fn released_devices(&self, addr: u64) -> Vec<String> {
        self.pending
            .iter()
            .filter(|p| p.addr == addr && self.space.alloc_at(addr).is_some_and(|v| v.id == p.id))
            .flat_map(|p| p.done.iter().map(|&d| dev_name(&self.space, d)))
            .collect()
    }

    /// Records the outcome of a free of `addr` (allocation `id` before it):
    /// on failure, `done` are devices that finished their part.
    fn note_free(&mut self, addr: u64, id: Option<u64>, ok: bool, done: &[usize]) {
        if ok {
            if !self.pending.is_empty() {
                self.pending.retain(|p| p.addr != addr);
            }
            return;
        }
        let Some(id) = id else { return };
        let Some(v) = self.space.alloc_at(addr).filter(|v| v.id == id) else {
            return;
        };
        let end = v.end;
        // Entries of ranges that are gone (an older allocation at the same
        // address, one the CPU lost) are stale.
        let space = &self.space;
        self.pending
            .retain(|p| p.id == id || space.alloc_at(p.addr).is_some_and(|v| v.id == p.id));
        let p = match self.pending.iter_mut().position(|p| p.addr == addr) {
            Some(i) => &mut self.pending[i],
            None => {
                self.pending.push(PendingFree {
                    addr,
                    end,
                    id,
                    done: Vec::new(),
                });
                self.pending.last_mut().expect("just pushed")
            }
        };
        for &d in done {
            if !p.done.contains(&d) {
                p.done.push(d);
            }
        }
    }

    /// Removes device `device` from the engine: a device that died, or one
    /// that is detached for good.
    ///
    /// First the device is asked, in one
    /// [`DeviceBackend::invalidate_unmap`], to invalidate and unmap every
    /// SVM piece it still holds ([`RemovedDevice::detached`]). Whatever the
    /// answer, the device then leaves the space ([`SvmSpace::remove_device`]:
    /// its device-only regions and its part in window reservations go; SVM
    /// ranges shared with other devices stay allocated on those), its
    /// backend is handed back, and every free that had failed on a range
    /// the device held is retried ([`Self::svm_free_many`]) on the devices
    /// that remain: a range whose only missing acknowledgement was the
    /// removed device's becomes free once the remaining devices and the
    /// CPU backend have unmapped it.
    ///
    /// # The invariant
    ///
    /// A range is handed out again only after every device that held it
    /// and is still in the engine has invalidated it and acknowledged. A
    /// removed device is no longer asked: so remove a device that did not
    /// acknowledge only once it can no longer touch memory (its process
    /// has exited or was killed and reaped, its driver is gone). A
    /// `PeerDevice` that fails with `Gone` or `Timeout` is such a device:
    /// its process has exited, or was killed and reaped, before the error
    /// is returned. Errors: `UnknownDevice` (nothing changes).
    pub fn remove_device(&mut self, device: &str) -> Result<RemovedDevice<D>, EngineError> {
        let d = self
            .space
            .devices()
            .iter()
            .position(|x| x.config().name == device)
            .ok_or_else(|| SvmError::UnknownDevice {
                name: device.to_owned(),
            })?;
        let held: Vec<(u64, u64)> = self
            .space
            .svm_pieces_in(0, u64::MAX)
            .filter(|&(s, _, ds)| {
                ds.contains(&d) && !released_at(&self.space, &self.pending, s).contains(&d)
            })
            .map(|(s, e, _)| (s, e))
            .collect();
        // The CPU side of its device-only regions (not the ranges it holds
        // by its own means, which have none: the CPU reservation found
        // there, if any, is another device's region's).
        let ts = self.space.mm().config().task_size;
        let regions: Vec<(u64, u64)> = self.space.devices()[d]
            .cpu_regions()
            .filter(|&(s, _, _)| s < ts && self.space.reservation_at(s).is_some())
            .map(|(s, e, _)| (s, e.min(ts)))
            .collect();
        let detached = if held.is_empty() {
            Ok(())
        } else {
            self.devs[d].invalidate_unmap(&held)
        };
        let retry_addrs: Vec<u64> = self
            .pending
            .iter()
            .filter_map(|p| {
                let v = self.space.alloc_at(p.addr)?;
                (v.id == p.id && v.devices.contains(&d)).then_some(p.addr)
            })
            .collect();
        self.space
            .remove_device(device)
            .expect("the device was found above");
        // Attributes are kept by device index too: the same shift.
        self.attrs.remove_device(d);
        let backend = self.devs.remove(d);
        for p in &mut self.pending {
            p.done.retain(|&x| x != d);
            for x in &mut p.done {
                if *x > d {
                    *x -= 1;
                }
            }
        }
        let mut released = Ok(Vec::with_capacity(regions.len()));
        for (s, e) in regions {
            match self.cpu.release_region(s, e) {
                Ok(()) => {
                    self.space
                        .cpu_unmap(s, e - s)
                        .expect("a device-only region is page aligned and non-empty");
                    if let Ok(v) = &mut released {
                        v.push((s, e));
                    }
                }
                Err(error) => {
                    if released.is_ok() {
                        released = Err(EngineError::Cpu {
                            op: "release_region",
                            start: s,
                            end: e,
                            error,
                        });
                    }
                }
            }
        }
        let retry = self.svm_free_many(&retry_addrs);
        let freed: Vec<u64> = retry_addrs
            .iter()
            .copied()
            .filter(|&a| self.space.alloc_at(a).is_none())
            .collect();
        Ok(RemovedDevice {
            backend,
            detached,
            freed,
            released,
            retry,
        })
    }

    /// Adds a device with a default backend.
    pub fn add_device(&mut self, cfg: DeviceConfig) -> Result<(), EngineError>
    where
        D: Default,
    {
        self.add_device_with(cfg, D::default())
    }

    /// `map` (observed): [`SvmSpace::cpu_map`]; no backend call.
    pub fn cpu_map(&mut self, start: u64, end: u64, growsdown: bool) -> Result<(), EngineError> {
        Ok(self.space.cpu_map(start, end, growsdown)?)
    }

    /// Every device of every SVM piece in `[start, end)` invalidates and
    /// unmaps it; then the CPU backend forgets what it owned there.
    fn lose(&mut self, start: u64, end: u64) -> Result<bool, EngineError> {
        drop_pieces_on_devices(&self.space, &mut self.devs, &self.pending, start, end)?;
        Ok(self.space.owns_any(start, end))
    }

    /// `unmap` (observed: the CPU lost the range): every device of each SVM
    /// piece there invalidates and unmaps it, then
    /// [`SvmSpace::cpu_unmap`], then the CPU backend forgets the range.
    /// A device that does not acknowledge leaves the space unchanged.
    pub fn cpu_unmap(&mut self, start: u64, length: u64) -> Result<(), EngineError> {
        let end = start.saturating_add(length);
        let owned = if length != 0
            && start.is_multiple_of(svmap_core::linux::PAGE_SIZE)
            && length.is_multiple_of(svmap_core::linux::PAGE_SIZE)
        {
            self.lose(start, end)?
        } else {
            false
        };
        self.space.cpu_unmap(start, length)?;
        self.attrs.remove(start, end);
        if owned {
            self.cpu.forget(start, end);
        }
        Ok(())
    }

    /// `mmap` (observed): [`SvmSpace::cpu_mmap`]; a `MAP_FIXED` one first
    /// does what [`Self::cpu_unmap`] does over its range.
    pub fn cpu_mmap(&mut self, req: &MmapRequest) -> Result<u64, EngineError> {
        let mut lost = None;
        if req.fixed == Fixed::Fixed {
            if let Ok((addr, len)) = self.space.mm().get_unmapped_area(req) {
                let end = addr.saturating_add(len);
                if self.lose(addr, end)? {
                    lost = Some((addr, end));
                }
            }
        }
        let addr = self.space.cpu_mmap(req)?;
        if let Some((s, e)) = lost {
            self.attrs.remove(s, e);
            self.cpu.forget(s, e);
        }
        Ok(addr)
    }

    /// `find`: [`SvmSpace::find`].
    pub fn find(&self, info: &UnmappedAreaInfo) -> Result<u64, SearchError> {
        self.space.find(info)
    }

    /// `protect`: [`SvmSpace::protect`] decides; then, for every SVM piece
    /// in the range: its devices invalidate (and must acknowledge), the CPU
    /// backend changes the protection, the devices change theirs. Other
    /// ranges svmap owns there keep their CPU policy on the backend.
    pub fn protect(&mut self, start: u64, length: u64, prot: Prot) -> Result<(), EngineError> {
        self.space.protect(start, length, prot)?;
        let end = start.saturating_add(length);
        let Engine {
            space,
            cpu,
            devs,
            pending,
            ..
        } = self;
        for (s, e, ds) in space.svm_pieces_in(start, end) {
            // Devices that already unmapped a range whose free failed are
            // not asked.
            let gone = released_at(space, pending, s);
            for &d in ds.iter().filter(|d| !gone.contains(d)) {
                invalidate_on(space, &mut devs[d], d, s, e)?;
            }
            cpu.protect(s, e, prot).map_err(|error| EngineError::Cpu {
                op: "protect",
                start: s,
                end: e,
                error,
            })?;
            for &d in ds.iter().filter(|d| !gone.contains(d)) {
                devs[d]
                    .protect(s, e, prot)
                    .map_err(|error| EngineError::Device {
                        device: dev_name(space, d),
                        op: "protect",
                        start: s,
                        end: e,
                        error,
                    })?;
            }
        }
        Ok(())
    }

    /// `device_map`: [`SvmSpace::device_map`] decides; then the CPU backend
    /// sets up the part below `task_size` with `cpu`, and the device backend
    /// backs the region. If a backend fails the region stays held in the
    /// space (nothing is placed there).
    pub fn device_map(
        &mut self,
        device: &str,
        start: u64,
        end: u64,
        cpu: CpuPolicy,
    ) -> Result<(), EngineError> {
        self.space.device_map(device, start, end, cpu)?;
        let d = self
            .space
            .devices()
            .iter()
            .position(|x| x.config().name == device)
            .expect("device_map succeeded for this name");
        let ts = self.space.mm().config().task_size;
        if start < ts {
            let e = end.min(ts);
            self.cpu
                .map_device_only(start, e, cpu)
                .map_err(|error| EngineError::Cpu {
                    op: "map_device_only",
                    start,
                    end: e,
                    error,
                })?;
        }
        self.guard(d, start, end)?;
        self.devs[d]
            .map_region(start, end)
            .map_err(|error| EngineError::Device {
                device: device.to_owned(),
                op: "map_region",
                start,
                end,
                error,
            })
    }

    /// Refuses a device range at or above the device's limit.
    fn guard(&self, d: usize, start: u64, end: u64) -> Result<(), EngineError> {
        guard_on(&self.space, d, start, end)
    }

    /// `svm_alloc`: [`SvmSpace::svm_alloc`] decides; then the CPU backend
    /// maps the range and every device of the set maps it at the same
    /// address, every device asked ([`DeviceBackend::map_start`]) before
    /// any answer is awaited ([`DeviceBackend::map_finish`]). If a backend
    /// fails, the error names the first failing device in definition
    /// order; every device that was asked to map the range, the failing
    /// ones included (a failed map may have mapped part of it), invalidates
    /// and unmaps it again (both halves of
    /// [`DeviceBackend::invalidate_unmap`]), the CPU
    /// backend unmaps it, and the range is free again in the space: the
    /// space is as before the call. A device that does not acknowledge
    /// the undo gives [`EngineError::NotAcknowledged`]; the range then
    /// stays allocated as a pending free ([`Self::pending_frees`]) that a
    /// retried [`Self::svm_free`] asks of that device alone. If the CPU
    /// backend then fails to unmap it, it stays allocated as a pending
    /// free too, which a retried free completes without asking any device
    /// (the error is still the device's).
    pub fn svm_alloc<S: AsRef<str>>(
        &mut self,
        length: u64,
        align: Option<u64>,
        devices: &[S],
        topdown: bool,
    ) -> Result<u64, EngineError> {
        let v = self.space.svm_alloc_view(length, align, devices, topdown)?;
        let addr = v.start;
        let (end, to) = (
            v.end,
            if v.window.is_some() {
                Release::ToWindow
            } else {
                Release::ToSystem
            },
        );
        // A new range starts from the default attributes, whatever path
        // freed what was there before (a free, a batch free, a CPU unmap,
        // a refresh).
        self.attrs.remove(addr, end);
        self.scratch_devs.clear();
        self.scratch_devs.extend_from_slice(v.devices);
        if let Err(error) = self.cpu.map(addr, end, to == Release::ToWindow) {
            let _ = self.space.svm_free(addr);
            return Err(EngineError::Cpu {
                op: "map",
                start: addr,
                end,
                error,
            });
        }
        let Engine {
            space,
            cpu,
            devs,
            scratch_devs,
            scratch_done,
            ..
        } = self;
        // Every device is asked before any answer is awaited; the error
        // reported is the first device's (definition order).
        let mut first: Option<(usize, EngineError)> = None;
        let mut note = |d: usize, e: EngineError| {
            if first.as_ref().is_none_or(|&(fd, _)| d < fd) {
                first = Some((d, e));
            }
        };
        let map_error = |space: &SvmSpace<F>, d: usize, error| EngineError::Device {
            device: dev_name(space, d),
            op: "map",
            start: addr,
            end,
            error,
        };
        // The devices whose mapping was started, then those that mapped.
        scratch_done.clear();
        for &d in scratch_devs.iter() {
            let r = guard_on(space, d, addr, end).and_then(|()| {
                devs[d]
                    .map_start(addr, end)
                    .map_err(|e| map_error(space, d, e))
            });
            match r {
                Ok(()) => scratch_done.push(d),
                Err(e) => note(d, e),
            }
        }
        scratch_done.retain(|&d| match devs[d].map_finish(addr, end) {
            Ok(()) => true,
            Err(e) => {
                note(d, map_error(space, d, e));
                false
            }
        });
        let Some((_, err)) = first else {
            return Ok(addr);
        };
        // Undo on every device that was asked to map, those whose map
        // failed included (a failed map may have mapped part of the range;
        // backends accept invalidating and unmapping what they do not
        // map), all asked before any answer is awaited; then on the CPU.
        scratch_done.clear();
        scratch_done.extend(
            scratch_devs
                .iter()
                .copied()
                .filter(|&d| guard_on(space, d, addr, end).is_ok()),
        );
        let range = [(addr, end)];
        let mut undo: Option<(usize, EngineError)> = None;
        let mut kept: Vec<usize> = Vec::new();
        scratch_done.retain(|&d| match devs[d].invalidate_unmap_start(&range) {
            Ok(()) => true,
            Err(b) => {
                kept.push(d);
                undo.get_or_insert((d, batch_error(space, d, &range, b)));
                false
            }
        });
        for &d in scratch_done.iter() {
            if let Err(b) = devs[d].invalidate_unmap_finish(&range) {
                kept.push(d);
                if undo.as_ref().is_none_or(|&(ud, _)| d < ud) {
                    undo = Some((d, batch_error(space, d, &range, b)));
                }
            }
        }
        if let Some((_, e)) = undo {
            // The range stays allocated; a retried free asks only the
            // devices that may still hold it.
            let id = space.alloc_at(addr).map(|v| v.id);
            let done: Vec<usize> = scratch_devs
                .iter()
                .copied()
                .filter(|d| !kept.contains(d))
                .collect();
            self.note_free(addr, id, false, &done);
            return Err(e);
        }
        if cpu.unmap(addr, end, to).is_ok() {
            let _ = space.svm_free(addr);
        } else {
            // Every device has undone it; the CPU still maps it. It stays
            // allocated as a pending free that a retried free completes on
            // the CPU alone.
            let id = space.alloc_at(addr).map(|v| v.id);
            let done = scratch_devs.clone();
            self.note_free(addr, id, false, &done);
        }
        Err(err)
    }

    /// `svm_free`: every device of the range invalidates what is left of
    /// it, acknowledges and unmaps it ([`DeviceBackend::invalidate_unmap`]
    /// in two halves: every device is asked
    /// ([`DeviceBackend::invalidate_unmap_start`]) before any answer is
    /// awaited ([`DeviceBackend::invalidate_unmap_finish`]), so device
    /// processes work at the same time, one request each); then the
    /// CPU backend unmaps it (back into its window, or to the system), and
    /// only then [`SvmSpace::svm_free`] makes it free for reuse.
    ///
    /// # A free that fails partway
    ///
    /// The rule: the range becomes free in the space only when every
    /// device of it has acknowledged and unmapped every piece and the CPU
    /// backend has unmapped it; on any failure it stays allocated, whole,
    /// so no device and no CPU mapping can still hold a range the space
    /// considers free, and nothing is ever placed over a range a device
    /// may still use. In particular:
    ///
    /// - a device that does not acknowledge gives
    ///   [`EngineError::NotAcknowledged`] naming it (the first such device
    ///   in definition order); every other device was asked too, and those
    ///   that acknowledged have unmapped the range;
    /// - a device that acknowledges but fails to unmap gives
    ///   [`EngineError::Device`] (`op` `"unmap"`);
    /// - a CPU `unmap` that fails (after every device unmapped the range)
    ///   gives [`EngineError::Cpu`]; the CPU keeps its mapping of that
    ///   piece and of every later one (a range that a CPU `unmap` split
    ///   has several pieces).
    ///
    /// Such a range may thus be allocated in the space while some devices
    /// no longer map it (a device access there faults); calling `svm_free`
    /// again retries the steps that failed: the devices that acknowledged
    /// and unmapped the range are not asked again
    /// ([`Self::released_devices`]), the others are (backends accept
    /// invalidating and unmapping a range they no longer map), and a
    /// device that is gone
    /// for good is removed with [`Self::remove_device`], which retries the
    /// free on the devices that remain.
    pub fn svm_free(&mut self, addr: u64) -> Result<(), EngineError> {
        let (id, r) = self.free_one(addr);
        if r.is_ok() && self.pending.is_empty() {
            return r;
        }
        let done = std::mem::take(&mut self.scratch_done);
        self.note_free(addr, id, r.is_ok(), &done);
        self.scratch_done = done;
        r
    }

    /// [`Self::svm_free`] without the bookkeeping of failed frees; with the
    /// id of the range it tried to free, if `addr` started one.
    fn free_one(&mut self, addr: u64) -> (Option<u64>, Result<(), EngineError>) {
        // The common case: the CPU maps the range whole; it leaves the
        // space's records at once and goes back there if a backend fails.
        let taken = self.space.take_whole(addr);
        let (id, start, end, whole, window) = match &taken {
            Some(t) => {
                let (start, end) = t.bounds();
                self.scratch_devs.clear();
                self.scratch_devs.extend_from_slice(t.devices());
                (t.id(), start, end, true, t.in_window())
            }
            None => {
                let Some((v, whole)) = self.space.alloc_at_whole(addr) else {
                    return (None, Err(SvmError::NotAnSvmRange { addr }.into()));
                };
                self.scratch_devs.clear();
                self.scratch_devs.extend_from_slice(v.devices);
                (v.id, v.start, v.end, whole, v.window.is_some())
            }
        };
        let to = if window {
            Release::ToWindow
        } else {
            Release::ToSystem
        };
        let r = self.release_found(addr, id, (start, end, whole), to);
        let r = match (r, taken) {
            (Ok(()), Some(t)) => {
                self.space.free_taken(t);
                Ok(())
            }
            (Ok(()), None) => self.space.svm_free(addr).map_err(EngineError::from),
            (Err(e), Some(t)) => {
                self.space.restore_taken(t);
                Err(e)
            }
            (Err(e), None) => Err(e),
        };
        (Some(id), r.map(|()| self.forget_attrs()))
    }

    /// Drops the attributes of the pieces in `scratch_pieces` (a range just
    /// freed).
    fn forget_attrs(&mut self) {
        for &(s, e) in self.scratch_pieces.iter() {
            self.attrs.remove(s, e);
        }
    }

    /// The backends' part of [`Self::free_one`] of range `id`, `[start,
    /// end)`, that `addr` starts, its devices in `scratch_devs`: every
    /// device invalidates and unmaps it, then the CPU unmaps it; its pieces
    /// are left in `scratch_pieces`. `whole`: the CPU maps it as one
    /// piece, all of it.
    fn release_found(
        &mut self,
        addr: u64,
        id: u64,
        (start, end, whole): (u64, u64, bool),
        to: Release,
    ) -> Result<(), EngineError> {
        if !self.pending.is_empty() {
            // A retry asks only the devices that may still hold the range.
            let done = done_of(&self.pending, addr, id);
            self.scratch_devs.retain(|d| !done.contains(d));
        }
        self.scratch_done.clear();
        self.scratch_pieces.clear();
        if whole {
            self.scratch_pieces.push((start, end));
        } else {
            self.scratch_pieces.extend(self.space.alloc_pieces(id));
        }
        let Engine {
            space,
            cpu,
            devs,
            scratch_devs,
            scratch_pieces,
            scratch_done,
            ..
        } = self;
        if !scratch_pieces.is_empty() {
            // Every device is asked before any answer is awaited; the
            // error reported is the first device's (definition order).
            let mut first: Option<(usize, EngineError)> = None;
            let mut note = |d: usize, e: EngineError| {
                if first.as_ref().is_none_or(|&(fd, _)| d < fd) {
                    first = Some((d, e));
                }
            };
            // A device whose start failed is not finished: its index goes
            // past the end.
            let mut started = 0u64;
            for (k, &d) in scratch_devs.iter().enumerate() {
                match devs[d].invalidate_unmap_start(scratch_pieces) {
                    Ok(()) => started |= 1 << k,
                    Err(b) => note(d, batch_error(space, d, scratch_pieces, b)),
                }
            }
            for (k, &d) in scratch_devs.iter().enumerate() {
                if started & (1 << k) != 0 {
                    match devs[d].invalidate_unmap_finish(scratch_pieces) {
                        Ok(()) => scratch_done.push(d),
                        Err(b) => note(d, batch_error(space, d, scratch_pieces, b)),
                    }
                }
            }
            if let Some((_, e)) = first {
                return Err(e);
            }
        }
        for &(s, e) in scratch_pieces.iter() {
            cpu.unmap(s, e, to).map_err(|error| EngineError::Cpu {
                op: "unmap",
                start: s,
                end: e,
                error,
            })?;
        }
        Ok(())
    }

    /// Frees every SVM range that starts at an address of `addrs`, as
    /// [`Self::svm_free`] does, but with one
    /// [`DeviceBackend::invalidate_unmap`] per device for the whole batch
    /// (one round trip per device process, whatever the number of ranges).
    ///
    /// Every address is checked first: one that is not the start of an SVM
    /// range, or that is listed twice (a double free), is refused with
    /// [`SvmError::NotAnSvmRange`] and nothing changes.
    ///
    /// Then the same all-or-nothing rule holds per range: a range becomes
    /// free only when every device of it has acknowledged and unmapped it
    /// and the CPU backend has unmapped it. A device that does not
    /// acknowledge leaves every range of the batch it held and had not
    /// acknowledged allocated; the others are freed. The error returned is
    /// the first one met (devices in definition order, then the CPU), so a
    /// `NotAcknowledged` names the device; [`SvmSpace::alloc_at`] tells
    /// which ranges are still allocated.
    pub fn svm_free_many(&mut self, addrs: &[u64]) -> Result<(), EngineError> {
        // (alloc index, piece start, piece end) for every piece, and the
        // window release of each allocation.
        let mut seen = std::collections::BTreeSet::new();
        let mut pieces: Vec<(usize, u64, u64)> = Vec::new();
        let mut release = Vec::with_capacity(addrs.len());
        // The pieces of allocation i are pieces[span[i].0..span[i].1].
        let mut span = Vec::with_capacity(addrs.len());
        let mut ids = Vec::with_capacity(addrs.len());
        let ndev = self.devs.len();
        let mut holders: Vec<Vec<usize>> = vec![Vec::new(); ndev];
        for (i, &addr) in addrs.iter().enumerate() {
            let v = match self.space.alloc_at(addr) {
                Some(v) if seen.insert(addr) => v,
                _ => return Err(SvmError::NotAnSvmRange { addr }.into()),
            };
            ids.push(v.id);
            release.push(if v.window.is_some() {
                Release::ToWindow
            } else {
                Release::ToSystem
            });
            let done = done_of(&self.pending, addr, v.id);
            for &d in v.devices {
                // A retry asks only the devices that may still hold it.
                if !done.contains(&d) {
                    holders[d].push(i);
                }
            }
            let from = pieces.len();
            pieces.extend(self.space.alloc_pieces(v.id).map(|(s, e)| (i, s, e)));
            span.push((from, pieces.len()));
        }
        let mut failed = vec![false; addrs.len()];
        // Per device: its ranges, the allocation of each, whether its
        // batch was started. Every device is asked before any answer is
        // awaited.
        let mut batches: Vec<DeviceBatch> = Vec::with_capacity(ndev);
        for held in &holders {
            let mut ranges = Vec::new();
            let mut owner = Vec::new();
            if !held.is_empty() {
                for &(i, s, e) in &pieces {
                    if held.binary_search(&i).is_ok() {
                        ranges.push((s, e));
                        owner.push(i);
                    }
                }
            }
            batches.push(DeviceBatch {
                ranges,
                owner,
                started: false,
            });
        }
        let mut errors: Vec<Option<EngineError>> = vec![None; ndev];
        // (device, allocation) pairs the device did not finish.
        let mut not_done: Vec<(usize, usize)> = Vec::new();
        let mut fail = |d: usize, b: BatchError, batch: &DeviceBatch| {
            for &i in &batch.owner[b.done.min(batch.owner.len())..] {
                failed[i] = true;
                not_done.push((d, i));
            }
            errors[d] = Some(batch_error(&self.space, d, &batch.ranges, b));
        };
        for (d, batch) in batches.iter_mut().enumerate() {
            if batch.ranges.is_empty() {
                continue;
            }
            match self.devs[d].invalidate_unmap_start(&batch.ranges) {
                Ok(()) => batch.started = true,
                Err(b) => fail(d, b, batch),
            }
        }
        for (d, batch) in batches.iter().enumerate() {
            if batch.started {
                if let Err(b) = self.devs[d].invalidate_unmap_finish(&batch.ranges) {
                    fail(d, b, batch);
                }
            }
        }
        let mut first: Option<EngineError> = errors.into_iter().flatten().next();
        for (i, &addr) in addrs.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let mut cpu_ok = true;
            for &(_, s, e) in &pieces[span[i].0..span[i].1] {
                if let Err(error) = self.cpu.unmap(s, e, release[i]) {
                    first.get_or_insert(EngineError::Cpu {
                        op: "unmap",
                        start: s,
                        end: e,
                        error,
                    });
                    cpu_ok = false;
                    break;
                }
            }
            if cpu_ok {
                match self.space.svm_free(addr) {
                    Ok(()) => {
                        for &(_, s, e) in &pieces[span[i].0..span[i].1] {
                            self.attrs.remove(s, e);
                        }
                    }
                    Err(e) => {
                        first.get_or_insert(e.into());
                    }
                }
            }
        }
        let mut done = Vec::new();
        for (i, &addr) in addrs.iter().enumerate() {
            let ok = self.space.alloc_at(addr).is_none();
            done.clear();
            if !ok {
                done.extend((0..ndev).filter(|&d| {
                    holders[d].binary_search(&i).is_ok() && !not_done.contains(&(d, i))
                }));
            }
            self.note_free(addr, Some(ids[i]), ok, &done);
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// [`SvmSpace::reserve_window`] decides; then the CPU backend reserves
    /// every piece. If it fails, the pieces reserved so far are released
    /// and the window with them.
    pub fn reserve_window<S: AsRef<str>>(
        &mut self,
        devices: &[S],
    ) -> Result<WindowReservation, EngineError> {
        let w = self.space.reserve_window(devices)?;
        for (i, &(s, e)) in w.reserved.iter().enumerate() {
            if let Err(error) = self.cpu.reserve(s, e) {
                for &(s2, e2) in &w.reserved[..i] {
                    let _ = self.cpu.release(s2, e2);
                }
                let _ = self.space.release_window(w.id);
                return Err(EngineError::Cpu {
                    op: "reserve",
                    start: s,
                    end: e,
                    error,
                });
            }
        }
        Ok(w)
    }

    /// The CPU backend releases every piece of window `id`; then
    /// [`SvmSpace::release_window`].
    pub fn release_window(&mut self, id: u64) -> Result<(), EngineError> {
        let w = self
            .space
            .window_info(id)
            .ok_or(SvmError::UnknownWindow { id })?;
        for &(s, e) in &w.reserved {
            self.cpu.release(s, e).map_err(|error| EngineError::Cpu {
                op: "release",
                start: s,
                end: e,
                error,
            })?;
        }
        Ok(self.space.release_window(id)?)
    }

    /// `device_access`: [`SvmSpace::device_access`] (the device MMU model).
    pub fn device_access(
        &self,
        device: &str,
        addr: u64,
        write: bool,
    ) -> Result<Result<(), Fault>, SvmError> {
        self.space.device_access(device, addr, write)
    }

    /// Checks that `[start, start + len)` is 4 KiB aligned, non-empty and
    /// SVM memory of the space from end to end; returns the end.
    fn attr_range(&self, start: u64, len: u64) -> Result<u64, AttrError> {
        let end = check_range(start, len)?;
        let mut at = start;
        for (s, e, _) in self.space.svm_pieces_in(start, end) {
            if s > at {
                break;
            }
            at = e;
        }
        if at < end {
            return Err(AttrError::NotSvm { addr: at });
        }
        Ok(end)
    }

    /// Sets attributes (`docs/attributes.md`) on `[start, start + len)`,
    /// which must be SVM memory from end to end: the changes apply, in
    /// order, to exactly that range (a stored range it cuts is split).
    /// Every change is checked first; on an error nothing changes.
    pub fn set_attr(&mut self, start: u64, len: u64, changes: &[Attr]) -> Result<(), AttrError> {
        let end = self.attr_range(start, len)?;
        let n = self.space.devices().len();
        for c in changes {
            c.check(n)?;
        }
        self.attrs.set(start, end, changes);
        Ok(())
    }

    /// What every page of `[start, start + len)` has in common
    /// ([`RangeAttrs::meet`]); the range must be SVM memory from end to
    /// end.
    pub fn get_attr(&self, start: u64, len: u64) -> Result<RangeAttrs, AttrError> {
        let end = self.attr_range(start, len)?;
        Ok(self.attrs.get(start, end))
    }

    /// The attribute map (every SVM page not in it holds the default).
    pub fn attrs(&self) -> &AttrMap {
        &self.attrs
    }

    /// Moves the faults device `device` reported into `out`.
    pub fn take_faults(
        &mut self,
        device: &str,
        out: &mut Vec<DeviceFault>,
    ) -> Result<(), SvmError> {
        let d = self
            .space
            .devices()
            .iter()
            .position(|x| x.config().name == device)
            .ok_or_else(|| SvmError::UnknownDevice {
                name: device.to_owned(),
            })?;
        self.devs[d].take_faults(out);
        Ok(())
    }
}
