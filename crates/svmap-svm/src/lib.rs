//! # svmap-svm
//!
//! Layers 3 and 4 of `docs/design.md`: SVM address spaces and the device mirror
//! model. Pure logic, no system calls.
//!
//! - [`SvmSpace`]: one CPU address space (the core [`svmap_core::linux::Mm`]
//!   with its Linux placement) and up to [`MAX_DEVICES`] named device spaces, each
//!   with its VA width, base, page size, device-only regions and mirror
//!   mode. It runs every SVM operation of the trace format
//!   (`docs/trace-format.md`) with its exact rules, and the CPU-side
//!   operations so that SVM ranges and devices stay in step.
//! - [`Engine`]: the space driving backends ([`backend`]): a
//!   [`CpuBackend`] and one [`DeviceBackend`] per device carry out every
//!   decision that changes memory, in a safe order (every device of a
//!   range invalidates and acknowledges before the range can be reused).
//!   The model backends [`ModelCpu`] and [`ModelDevice`] make no system
//!   calls; trace replay runs on them.
//! - [`mirror`]: a device MMU (multi-level radix page table, TLB with
//!   shoot-down) kept in step with the CPU by the `mmu_interval_notifier`
//!   protocol (invalidate with a sequence number; fault handler that
//!   snapshots, then commits only if the sequence has not moved).
//!
//! - [`attr`]: attributes of SVM ranges (preferred and prefetch location,
//!   access per device, flags, migration granularity), set and read by
//!   [`Engine::set_attr`] and [`Engine::get_attr`] (`docs/attributes.md`).
//!
//! # For a trace executor
//!
//! | trace op | call | result |
//! | --- | --- | --- |
//! | `reset` | [`SvmSpace::reset`] | none |
//! | `map` | [`SvmSpace::cpu_map`] | `Overlap` = `EEXIST`; other errors are bad lines |
//! | `unmap` | [`SvmSpace::cpu_unmap`] | errors are bad lines |
//! | `find` | [`SvmSpace::find`] | any error = `ENOMEM` |
//! | `mmap` | [`SvmSpace::cpu_mmap`] | `Mmap(errno)` |
//! | `device` | [`SvmSpace::add_device`] | [`SvmError::trace_errno`] |
//! | `device_map` | [`SvmSpace::device_map`] | [`SvmError::trace_errno`] |
//! | `svm_alloc` | [`SvmSpace::svm_alloc`] | [`SvmError::trace_errno`] |
//! | `svm_free` | [`SvmSpace::svm_free`] | [`SvmError::trace_errno`] |
//! | `protect` | [`SvmSpace::protect`] | `NotMapped`/`RangeOverflow` = `ENOMEM`; `Unaligned`/`ZeroLength` are bad lines |
//! | `device_access` | [`SvmSpace::device_access`] | `Ok(Ok(()))` = `ok`, `Ok(Err(fault))` = `fault: fault.name()` |
//!
//! [`SvmError::trace_errno`] is `None` for the errors the trace format calls
//! bad lines (unknown device, `va_bits`, page size, TLB size, more than
//! [`MAX_DEVICES`] devices, alignment).
//!
//! # Bounded resources
//!
//! Every size a caller gives is checked with a typed error before anything
//! is allocated: `va_bits` 12..=64, a device page size that is a power of
//! two from 4 KiB to [`MAX_DEVICE_PAGE_SIZE`] and at most `2^va_bits`,
//! 1..=[`MAX_TLB_ENTRIES`] TLB entries, at most [`MAX_DEVICES`] devices
//! per space (each CPU unmap or protection change invalidates every
//! device, so its cost grows with their number). Device page tables and TLBs hold
//! only what is mapped (sparse tables, freed when they empty; a TLB that
//! allocates as it fills), so their memory is O(live translations), and an
//! invalidation visits only present entries whatever the width of its
//! range.
//!
//! # Beyond the trace format
//!
//! - [`SvmSpace::reserve_window`] / [`SvmSpace::release_window`]: reserve
//!   the common window of a set of devices in the CPU space up front, so
//!   that CPU placement lands outside it and SVM allocations for those
//!   devices are carved from it.
//! - [`SvmSpace::vmas_above_limit`]: every CPU VMA a device cannot address;
//!   [`SvmSpace::check_addressable`]: a typed error naming the range and
//!   the limit.

pub mod attr;
pub mod backend;
mod engine;
mod error;
pub mod interval;
pub mod mirror;
pub mod refresh;
mod space;

pub use attr::{Attr, AttrError, AttrMap, Location, RangeAttrs};
pub use backend::{
    BackendError, CpuBackend, DeviceBackend, DeviceFault, ModelCpu, ModelDevice, Release,
};
pub use engine::{Engine, EngineError, RemovedDevice};
pub use error::{Fault, SvmError};
pub use mirror::{DefaultFormat, Geometry, Mirror, PtFormat, StdSync, SyncFamily};
pub use space::{
    AllocView, CpuPolicy, Device, DeviceConfig, MirrorMode, Populate, Prot, SvmSpace, SvmStats,
    WindowReservation, MAX_DEVICES, MAX_DEVICE_PAGE_SIZE, MAX_TLB_ENTRIES, PREFAULT_MAX_PAGES,
};
