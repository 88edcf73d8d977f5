//! The executors: [`SvmExecutor`] runs every trace operation on
//! [`svmap_svm::SvmSpace`]; [`CpuExecutor`] runs only the address-space
//! operations on the core [`Mm`] and stops at the first SVM operation.

use svmap_core::linux::{Errno, Mm, MmConfig};
use svmap_core::MapError;
use svmap_svm::{
    CpuPolicy, DeviceConfig, Engine, EngineError, MirrorMode, Populate, SvmError, SvmSpace,
};

use crate::replay::{ExecError, Executor};
use crate::trace::{CpuAccess, Fault, Mirror, Op, OpKind, Outcome, Prot, SvmOp};

/// The CPU address space of a trace (`reset`, `map`, `unmap`, `find`,
/// `mmap`) on [`Mm`]; it has no devices and answers every SVM operation
/// with [`ExecError::NeedsSvm`]. Kept as the reference for the
/// address-space operations and for throughput comparisons.
#[derive(Clone, Debug)]
pub struct CpuExecutor {
    mm: Mm,
}

impl Default for CpuExecutor {
    /// Operations before the first `reset` run on the defaults.
    fn default() -> Self {
        CpuExecutor {
            mm: Mm::new(MmConfig::default()),
        }
    }
}

impl CpuExecutor {
    /// The CPU space.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }
}

impl Executor for CpuExecutor {
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        Ok(match *op {
            Op::Reset(cfg) => {
                self.mm = Mm::new(cfg);
                None
            }
            Op::Map { start, end, flags } => match self.mm.space_mut().insert(start, end, flags) {
                Ok(()) => None,
                Err(MapError::Overlap { .. }) => Some(Outcome::Err(Errno::EEXIST)),
                // Not reached: parsing guarantees `end > start`.
                Err(MapError::EmptyRange { .. }) => Some(Outcome::Err(Errno::EINVAL)),
                // The map already holds 2^32 - 2 VMAs: no room, as in mmap.
                Err(MapError::TooManyVmas) => Some(Outcome::Err(Errno::ENOMEM)),
            },
            Op::Unmap { start, length } => {
                // A range running past 2^64 ends there: no VMA ends above
                // u64::MAX. It can fail only when the map already holds
                // 2^32 - 2 VMAs; `unmap` has no result to report that in.
                let _ = self
                    .mm
                    .space_mut()
                    .unmap(start, start.saturating_add(length));
                None
            }
            Op::Find(ref info) => Some(match self.mm.find(info) {
                Ok(addr) => Outcome::Addr(addr),
                Err(_) => Outcome::Err(Errno::ENOMEM),
            }),
            Op::Mmap(ref req) => Some(match self.mm.mmap(req) {
                Ok(addr) => Outcome::Addr(addr),
                Err(e) => Outcome::Err(e),
            }),
            Op::Svm(ref svm) => return Err(ExecError::NeedsSvm(svm.kind())),
        })
    }

    fn has_device(&self, _name: &str) -> bool {
        false
    }
}

/// Every trace operation on one [`SvmSpace`] (a CPU space and its
/// devices), exactly as `docs/trace-format.md` says; the executor of [`crate::replay`].
///
/// | op | call | result |
/// | --- | --- | --- |
/// | `reset` | [`SvmSpace::reset`] | none |
/// | `map` | [`SvmSpace::cpu_map`] | none; `EEXIST` on overlap |
/// | `unmap` | [`SvmSpace::cpu_unmap`] | none |
/// | `find` | [`SvmSpace::find`] | `addr`; `ENOMEM` for any failure |
/// | `mmap` | [`SvmSpace::cpu_mmap`] | `addr` or the kernel's errno |
/// | `device` | [`SvmSpace::add_device`] | none; [`SvmError::trace_errno`] |
/// | `device_map` | [`SvmSpace::device_map`] | none; [`SvmError::trace_errno`] |
/// | `svm_alloc` | [`SvmSpace::svm_alloc`] | `addr`; [`SvmError::trace_errno`] |
/// | `svm_free` | [`SvmSpace::svm_free`] | `ok`; [`SvmError::trace_errno`] |
/// | `protect` | [`SvmSpace::protect`] | `ok`; `ENOMEM` |
/// | `device_access` | [`SvmSpace::device_access`] | `ok` or `fault` |
///
/// An error that the trace format calls a bad line ([`SvmError::trace_errno`] is
/// `None`, or an unaligned or empty range the parser already rejects) is
/// [`ExecError::BadLine`].
#[derive(Debug)]
pub struct SvmExecutor {
    /// The engine with its model backends (no system calls): the same
    /// code that drives real memory with other backends.
    space: Engine,
    populate: Populate,
    tlb_entries: usize,
    paranoid: bool,
}

impl Default for SvmExecutor {
    /// Operations before the first `reset` run on the defaults; devices
    /// populate on fault and have 64-entry TLBs.
    fn default() -> Self {
        SvmExecutor::new(Populate::OnFault)
    }
}

impl SvmExecutor {
    /// An executor whose devices fill their page tables as `populate` says
    /// (the results are the same either way; only the mirror's work differs).
    pub fn new(populate: Populate) -> Self {
        SvmExecutor {
            space: Engine::new(MmConfig::default(), svmap_svm::ModelCpu),
            populate,
            tlb_entries: DeviceConfig::new("", 48).tlb_entries,
            paranoid: false,
        }
    }

    /// Gives every device defined from now on a TLB of `entries` entries:
    /// 1..=[`svmap_svm::MAX_TLB_ENTRIES`], or every `device` line is a bad
    /// line.
    pub fn with_tlb_entries(mut self, entries: usize) -> Self {
        self.tlb_entries = entries;
        self
    }

    /// Self-checking mode, for tests: after every operation, checks every
    /// invariant of the space ([`SvmSpace::check_invariants`], which panics
    /// on a violation), and answers `device_access` only when the device
    /// mirror agrees with the rule oracle ([`SvmSpace::access_rule`]).
    /// Slow: O(n) per operation.
    pub fn with_invariant_checks(mut self) -> Self {
        self.paranoid = true;
        self
    }

    /// The space the trace built.
    pub fn space(&self) -> &SvmSpace {
        self.space.space()
    }

    fn run(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        let sp = &mut self.space;
        Ok(match op {
            Op::Reset(cfg) => {
                sp.reset(*cfg);
                None
            }
            Op::Map { start, end, flags } => {
                match engine(
                    OpKind::Map,
                    sp.cpu_map(
                        *start,
                        *end,
                        flags.contains(svmap_core::VmaFlags::GROWSDOWN),
                    ),
                )? {
                    Ok(()) => None,
                    Err(e @ SvmError::Overlap { .. }) => Some(err_result(OpKind::Map, &e)?),
                    Err(e) => return Err(bad(OpKind::Map, &e)),
                }
            }
            Op::Unmap { start, length } => {
                engine(OpKind::Unmap, sp.cpu_unmap(*start, *length))?
                    .map_err(|e| bad(OpKind::Unmap, &e))?;
                None
            }
            Op::Find(info) => Some(match sp.find(info) {
                Ok(addr) => Outcome::Addr(addr),
                Err(_) => Outcome::Err(Errno::ENOMEM),
            }),
            Op::Mmap(req) => Some(match engine(OpKind::Mmap, sp.cpu_mmap(req))? {
                Ok(addr) => Outcome::Addr(addr),
                Err(e) => err_result(OpKind::Mmap, &e)?,
            }),
            Op::Svm(svm) => return self.run_svm(svm),
        })
    }

    fn run_svm(&mut self, op: &SvmOp) -> Result<Option<Outcome>, ExecError> {
        let kind = op.kind();
        let sp = &mut self.space;
        Ok(match op {
            SvmOp::Device {
                name,
                va_bits,
                base,
                page_size,
                mirror,
            } => {
                let cfg = DeviceConfig {
                    name: name.clone(),
                    va_bits: *va_bits,
                    base: *base,
                    page_size: *page_size,
                    mirror: match mirror {
                        Mirror::Buffers => MirrorMode::Buffers,
                        Mirror::System => MirrorMode::System,
                    },
                    populate: self.populate,
                    tlb_entries: self.tlb_entries,
                };
                match engine(kind, sp.add_device(cfg))? {
                    Ok(()) => None,
                    Err(e) => Some(err_result(kind, &e)?),
                }
            }
            SvmOp::DeviceMap {
                device,
                start,
                end,
                cpu,
            } => {
                let cpu = match cpu {
                    CpuAccess::Fault => CpuPolicy::Fault,
                    CpuAccess::DummyPage => CpuPolicy::DummyPage,
                };
                match engine(kind, sp.device_map(device, *start, *end, cpu))? {
                    Ok(()) => None,
                    Err(e) => Some(err_result(kind, &e)?),
                }
            }
            SvmOp::SvmAlloc {
                length,
                align,
                devices,
                topdown,
            } => Some(
                match engine(
                    kind,
                    sp.svm_alloc(*length, *align, devices.as_slice(), *topdown),
                )? {
                    Ok(addr) => Outcome::Addr(addr),
                    Err(e) => err_result(kind, &e)?,
                },
            ),
            SvmOp::SvmFree { addr } => Some(match engine(kind, sp.svm_free(*addr))? {
                Ok(()) => Outcome::Ok,
                Err(e) => err_result(kind, &e)?,
            }),
            SvmOp::Protect {
                start,
                length,
                prot,
            } => {
                let prot = match prot {
                    Prot::None => svmap_svm::Prot::None,
                    Prot::Read => svmap_svm::Prot::Read,
                    Prot::ReadWrite => svmap_svm::Prot::ReadWrite,
                };
                Some(match engine(kind, sp.protect(*start, *length, prot))? {
                    Ok(()) => Outcome::Ok,
                    Err(e @ (SvmError::NotMapped { .. } | SvmError::RangeOverflow { .. })) => {
                        err_result(kind, &e)?
                    }
                    // Unaligned or empty: the parser rejects these first.
                    Err(e) => return Err(bad(kind, &e)),
                })
            }
            SvmOp::DeviceAccess {
                device,
                addr,
                write,
            } => {
                let r = sp
                    .device_access(device, *addr, *write)
                    .map_err(|e| bad(kind, &e))?;
                if self.paranoid {
                    let rule = sp
                        .access_rule(device, *addr, *write)
                        .map_err(|e| bad(kind, &e))?;
                    assert_eq!(
                        r, rule,
                        "device_access {device:?} {addr:#x}: the mirror disagrees with the rule"
                    );
                }
                Some(match r {
                    Ok(()) => Outcome::Ok,
                    Err(f) => Outcome::Fault(match f {
                        svmap_svm::Fault::Unmapped => Fault::Unmapped,
                        svmap_svm::Fault::Protection => Fault::Protection,
                        svmap_svm::Fault::OutOfRange => Fault::OutOfRange,
                    }),
                })
            }
        })
    }
}

/// The engine's answer as the space's: with model backends every error is
/// the space's ([`EngineError::Svm`]); a backend error would be reported as
/// a bad line naming it.
fn engine<T>(kind: OpKind, r: Result<T, EngineError>) -> Result<Result<T, SvmError>, ExecError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(EngineError::Svm(e)) => Ok(Err(e)),
        Err(e) => Err(ExecError::BadLine(format!("op \"{}\": {e}", kind.name()))),
    }
}

/// The `err` result of `e`, or a bad line where the trace format calls it one.
fn err_result(kind: OpKind, e: &SvmError) -> Result<Outcome, ExecError> {
    match e.trace_errno() {
        Some(errno) => Ok(Outcome::Err(errno)),
        None => Err(bad(kind, e)),
    }
}

fn bad(kind: OpKind, e: &SvmError) -> ExecError {
    ExecError::BadLine(format!("op \"{}\": {e}", kind.name()))
}

impl Executor for SvmExecutor {
    fn execute(&mut self, op: &Op) -> Result<Option<Outcome>, ExecError> {
        let r = self.run(op);
        if self.paranoid {
            self.space.check_invariants();
        }
        r
    }

    fn has_device(&self, name: &str) -> bool {
        self.space.device(name).is_ok()
    }
}
