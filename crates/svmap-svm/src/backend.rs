//! Backends: what carries out the decisions of the engine ([`crate::Engine`]).
//!
//! The engine decides every address; a backend only acts at the address it
//! is given. There are two kinds:
//!
//! - a [`CpuBackend`] acts on the CPU side (one per engine): it reserves
//!   window pieces, maps SVM ranges, changes their protection, unmaps them,
//!   and sets up the CPU side of device-only regions with their
//!   [`CpuPolicy`];
//! - a [`DeviceBackend`] acts on one device (one per device of the engine):
//!   it maps SVM ranges at the same address, invalidates a range and waits
//!   until the device has stopped using it, changes protections, unmaps,
//!   backs its device-only regions, and reports device faults.
//!
//! [`ModelCpu`] and [`ModelDevice`] make no system calls and never fail:
//! they are the defaults, so trace replay and the property tests run the
//! same engine code that drives real memory. The device MMU model itself
//! ([`crate::Mirror`]) lives inside [`crate::SvmSpace`] and is invalidated
//! there; a model device backend has nothing more to do.
//!
//! # Contracts
//!
//! The engine calls a CPU backend only for ranges svmap owns (window
//! pieces, SVM ranges, the CPU side of device-only regions), never for
//! mappings it merely observed. All ranges are page aligned and non-empty.
//! It calls a device backend only with ranges below the device's limit
//! `2^va_bits`, and it calls [`DeviceBackend::invalidate`] on every device
//! that held a range, with every call acknowledged, before that range can
//! be handed out again (a free does it with
//! [`DeviceBackend::invalidate_unmap`], invalidation and unmap together).
//!
//! Boxed backends work too: `Box<dyn CpuBackend>` and `Box<dyn
//! DeviceBackend>` implement the traits, so one engine can drive devices
//! of different kinds.

use std::fmt;

use crate::space::{CpuPolicy, Prot};

/// Why a backend could not carry out a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// A system call failed with this errno.
    Sys {
        /// The call (`"mmap"`, `"mprotect"`, ...).
        call: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// The range is not (entirely) the backend's to change: something it
    /// does not own is mapped there.
    NotOwned {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// The device did not answer within the bound.
    Timeout {
        /// How long the backend waited, in milliseconds.
        waited_ms: u64,
    },
    /// The device is gone (its process died, its driver went away).
    Gone {
        /// What the backend knows about it.
        detail: String,
    },
    /// Anything else, in the backend's words.
    Other(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Sys { call, errno } => write!(f, "{call} failed with errno {errno}"),
            BackendError::NotOwned { start, end } => {
                write!(f, "[{start:#x}, {end:#x}) is not owned by svmap")
            }
            BackendError::Timeout { waited_ms } => write!(f, "no answer after {waited_ms} ms"),
            BackendError::Gone { detail } => write!(f, "device gone: {detail}"),
            BackendError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BackendError {}

/// How far [`DeviceBackend::invalidate_unmap`] got before it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    /// The first `done` ranges of the batch were invalidated, acknowledged
    /// and unmapped; range `done` (and every later one) was not finished.
    pub done: usize,
    /// Whether range `done` was acknowledged (its unmap failed: the device
    /// has stopped using it but may still map it) or not (its invalidation
    /// was not acknowledged: the device may still use it).
    pub acknowledged: bool,
    /// Why.
    pub error: BackendError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range {} of the batch {}: {}",
            self.done,
            if self.acknowledged {
                "was acknowledged but not unmapped"
            } else {
                "was not acknowledged"
            },
            self.error
        )
    }
}

impl std::error::Error for BatchError {}

/// Where a range goes when the CPU side lets it go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Back into the window reservation it was carved from: the backend
    /// keeps the addresses reserved (inaccessible) and gives the memory
    /// back.
    ToWindow,
    /// Out of svmap's hands: the backend unmaps it entirely.
    ToSystem,
}

/// The CPU side of the engine. See the module documentation for the
/// contract. Every method acts at exactly the address it is given.
pub trait CpuBackend {
    /// Reserves `[start, end)` as a window piece: owned by svmap,
    /// inaccessible, costing no memory. The engine has checked that the
    /// CPU holds nothing there.
    fn reserve(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// Gives the window piece `[start, end)` back to the system.
    fn release(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// Maps the SVM range `[start, end)` read-write. `in_window`: the range
    /// was carved from a window piece this backend reserved; otherwise the
    /// engine has checked that the CPU holds nothing there.
    fn map(&mut self, start: u64, end: u64, in_window: bool) -> Result<(), BackendError>;
    /// Changes the protection of `[start, end)`, a part of an SVM range.
    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError>;
    /// Unmaps (a piece of) an SVM range; its memory goes back at once.
    fn unmap(&mut self, start: u64, end: u64, to: Release) -> Result<(), BackendError>;
    /// Sets up the CPU side of a device-only region: with
    /// [`CpuPolicy::Fault`] every CPU access faults; with
    /// [`CpuPolicy::DummyPage`] reads see zeros at no memory cost and
    /// writes fault. The engine has checked that the CPU holds nothing
    /// there.
    fn map_device_only(
        &mut self,
        start: u64,
        end: u64,
        policy: CpuPolicy,
    ) -> Result<(), BackendError>;
    /// Gives back the CPU side of the device-only region `[start, end)`
    /// (exactly a range set up by [`Self::map_device_only`]) once its device
    /// is gone: the range is free on the CPU afterwards.
    fn release_region(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// The CPU lost `[start, end)` by other means (an observed `munmap`, a
    /// `MAP_FIXED` mapping): whatever the backend owned there is no longer
    /// its own. It must not act on the range.
    fn forget(&mut self, start: u64, end: u64);
}

/// A fault a device reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFault {
    /// The faulting address.
    pub addr: u64,
    /// Whether the access was a write.
    pub write: bool,
}

/// One device of the engine. See the module documentation for the
/// contract. Every range it is given lies below the device's limit.
pub trait DeviceBackend {
    /// Maps the SVM range `[start, end)` read-write at the same address as
    /// the CPU.
    fn map(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// The first half of [`Self::map`], so that the engine can ask every
    /// device of an allocation before it waits for any of them: starts the
    /// mapping (sends the request) and returns. The engine then calls
    /// [`Self::map_finish`] with the same range before any other call to
    /// this backend, unless this call failed. The default does the whole
    /// `map` here.
    ///
    /// When this call or [`Self::map_finish`] fails (here or on another
    /// device of the allocation), the engine undoes the allocation with
    /// both halves of [`Self::invalidate_unmap`] on every device it asked,
    /// the failing one included, since a failed map may have mapped part
    /// of the range: invalidating and unmapping a range, or parts of it,
    /// that the device does not map must be harmless and succeed.
    fn map_start(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        self.map(start, end)
    }
    /// The second half of [`Self::map`]: waits until the mapping started
    /// by [`Self::map_start`] is done. An error means the range may be
    /// mapped in part on the device (the engine then undoes it, see
    /// [`Self::map_start`]). The default has nothing left to do.
    fn map_finish(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        let _ = (start, end);
        Ok(())
    }
    /// Invalidates `[start, end)` and waits until the device has stopped
    /// using it (its TLB is shot down and in-flight accesses are done).
    /// Only after every device has acknowledged may the range be reused;
    /// an error means the device did not acknowledge.
    fn invalidate(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// Changes the protection of `[start, end)` (after an invalidation).
    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError>;
    /// Unmaps `[start, end)` (after an acknowledged invalidation).
    fn unmap(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// For every range of `ranges`, in order: [`Self::invalidate`] it, wait
    /// for the acknowledgement, then [`Self::unmap`] it. What a free needs
    /// from one device, in as few round trips as the backend can manage
    /// (a device process does the whole batch in one request). The default
    /// calls `invalidate` and `unmap` per range.
    ///
    /// On failure, [`BatchError::done`] says how many leading ranges were
    /// finished; the rest count as not done. The engine may call this
    /// again for ranges the device no longer maps (a free retried after a
    /// later step failed, an allocation undone after a device's map
    /// failed partway): invalidating and unmapping a range that is not
    /// mapped, in whole or in part, must succeed.
    fn invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        for (i, &(s, e)) in ranges.iter().enumerate() {
            self.invalidate(s, e).map_err(|error| BatchError {
                done: i,
                acknowledged: false,
                error,
            })?;
            self.unmap(s, e).map_err(|error| BatchError {
                done: i,
                acknowledged: true,
                error,
            })?;
        }
        Ok(())
    }
    /// The first half of [`Self::invalidate_unmap`], so that the engine can
    /// ask every device of a free before it waits for any of them: starts
    /// the batch (sends the request) and returns. The engine then calls
    /// [`Self::invalidate_unmap_finish`] with the same ranges before any
    /// other call to this backend, unless this call failed. The default
    /// does the whole batch here.
    fn invalidate_unmap_start(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        self.invalidate_unmap(ranges)
    }
    /// The second half of [`Self::invalidate_unmap`]: waits until the batch
    /// started by [`Self::invalidate_unmap_start`] is done. The default has
    /// nothing left to do.
    fn invalidate_unmap_finish(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        let _ = ranges;
        Ok(())
    }
    /// Backs the device-only region `[start, end)` with memory the CPU
    /// process cannot see.
    fn map_region(&mut self, start: u64, end: u64) -> Result<(), BackendError>;
    /// Moves the faults the device reported since the last call into
    /// `out`.
    fn take_faults(&mut self, out: &mut Vec<DeviceFault>) {
        let _ = out;
    }
    /// The ranges the device already holds by its own means, where a `map`
    /// at the same address would fail (a device process's binary,
    /// libraries, stack with its guard gap, heap). Asked once, when the
    /// engine adds the device; the engine never places an SVM range for
    /// the device there. The default: none.
    fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
        Ok(Vec::new())
    }
}

/// The model CPU backend: no system calls, never fails. The model of the
/// CPU space is [`crate::SvmSpace`] itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCpu;

impl CpuBackend for ModelCpu {
    fn reserve(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn release(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn map(&mut self, _: u64, _: u64, _: bool) -> Result<(), BackendError> {
        Ok(())
    }
    fn protect(&mut self, _: u64, _: u64, _: Prot) -> Result<(), BackendError> {
        Ok(())
    }
    fn unmap(&mut self, _: u64, _: u64, _: Release) -> Result<(), BackendError> {
        Ok(())
    }
    fn map_device_only(&mut self, _: u64, _: u64, _: CpuPolicy) -> Result<(), BackendError> {
        Ok(())
    }
    fn release_region(&mut self, _: u64, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn forget(&mut self, _: u64, _: u64) {}
}

/// The model device backend: no system calls, never fails, acknowledges
/// every invalidation at once. The device MMU model ([`crate::Mirror`]) is
/// kept by [`crate::SvmSpace`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelDevice;

impl DeviceBackend for ModelDevice {
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
}

impl<B: CpuBackend + ?Sized> CpuBackend for Box<B> {
    fn reserve(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).reserve(start, end)
    }
    fn release(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).release(start, end)
    }
    fn map(&mut self, start: u64, end: u64, in_window: bool) -> Result<(), BackendError> {
        (**self).map(start, end, in_window)
    }
    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError> {
        (**self).protect(start, end, prot)
    }
    fn unmap(&mut self, start: u64, end: u64, to: Release) -> Result<(), BackendError> {
        (**self).unmap(start, end, to)
    }
    fn map_device_only(
        &mut self,
        start: u64,
        end: u64,
        policy: CpuPolicy,
    ) -> Result<(), BackendError> {
        (**self).map_device_only(start, end, policy)
    }
    fn release_region(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).release_region(start, end)
    }
    fn forget(&mut self, start: u64, end: u64) {
        (**self).forget(start, end)
    }
}

impl<B: DeviceBackend + ?Sized> DeviceBackend for Box<B> {
    fn map(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).map(start, end)
    }
    fn map_start(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).map_start(start, end)
    }
    fn map_finish(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).map_finish(start, end)
    }
    fn invalidate(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).invalidate(start, end)
    }
    fn protect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), BackendError> {
        (**self).protect(start, end, prot)
    }
    fn unmap(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).unmap(start, end)
    }
    fn invalidate_unmap(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        (**self).invalidate_unmap(ranges)
    }
    fn invalidate_unmap_start(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        (**self).invalidate_unmap_start(ranges)
    }
    fn invalidate_unmap_finish(&mut self, ranges: &[(u64, u64)]) -> Result<(), BatchError> {
        (**self).invalidate_unmap_finish(ranges)
    }
    fn map_region(&mut self, start: u64, end: u64) -> Result<(), BackendError> {
        (**self).map_region(start, end)
    }
    fn take_faults(&mut self, out: &mut Vec<DeviceFault>) {
        (**self).take_faults(out)
    }
    fn own_mappings(&mut self) -> Result<Vec<(u64, u64)>, BackendError> {
        (**self).own_mappings()
    }
}
