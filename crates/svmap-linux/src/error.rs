//! The error type of the Linux backend proper (maps reader, probes,
//! reservations, heap, fence launcher, inspect): one enum for the layer.
//!
//! Every system-call failure keeps its errno ([`Errno`]); every parse failure
//! keeps the line number and the offending text.

use core::fmt;
use std::path::PathBuf;

/// An `errno` value as the kernel returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// `EPERM`.
    pub const EPERM: Errno = Errno(libc::EPERM);
    /// `ENOENT`.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    /// `ESRCH`.
    pub const ESRCH: Errno = Errno(libc::ESRCH);
    /// `EACCES`.
    pub const EACCES: Errno = Errno(libc::EACCES);
    /// `ENOMEM`.
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    /// `EEXIST`.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// `EINVAL`.
    pub const EINVAL: Errno = Errno(libc::EINVAL);

    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The errno of an `io::Error`, or 0 if it has none.
    pub fn of(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (errno {})",
            std::io::Error::from_raw_os_error(self.0),
            self.0
        )
    }
}

/// Errors of the Linux backend.
#[derive(Debug)]
pub enum Error {
    /// No process with this pid (its `/proc` entry does not exist).
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The kernel refused to show this process's address space to us: it
    /// belongs to another user (or is not dumpable) and we lack
    /// `CAP_SYS_PTRACE` (`PTRACE_MODE_READ` check of `/proc/PID/maps`).
    PermissionDenied {
        /// The pid asked for.
        pid: u32,
        /// The file that could not be opened or read.
        path: PathBuf,
        /// `EACCES` or `EPERM`.
        errno: Errno,
    },
    /// Reading a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The process exited while its maps were being read: the kernel then
    /// ends the file early, so what was read is an incomplete view and is
    /// discarded.
    ProcessExited {
        /// The pid.
        pid: u32,
        /// Lines read before the end came.
        lines_read: usize,
    },
    /// A line of `/proc/PID/maps` or `smaps` is not in the kernel's format.
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
        /// The line (lossily decoded, at most 200 bytes).
        text: String,
    },
    /// Two VMAs of one maps file overlap or are out of order.
    Inconsistent {
        /// 1-based line number of the second VMA.
        line: usize,
        /// What the core map said.
        source: svmap_core::MapError,
    },
    /// A system call failed.
    Sys {
        /// Which call, with its main arguments.
        call: &'static str,
        /// Address argument (0 if none).
        addr: u64,
        /// Length argument (0 if none).
        len: u64,
        /// The errno.
        errno: Errno,
    },
    /// `mmap` failed with `ENOMEM` and the process is at the per-process
    /// limit on the number of mappings, `vm.max_map_count`: its VMA count
    /// (lines of `/proc/self/maps`) is within 2 of the limit, the most one
    /// call can add.
    MapCountLimit {
        /// The call that failed.
        call: &'static str,
        /// Number of VMAs the process has (from `/proc/self/maps`).
        vmas: usize,
        /// The current `vm.max_map_count`.
        max_map_count: u64,
    },
    /// `mmap` failed with `ENOMEM` and the new mapping would take the
    /// process's address space (`VmSize` of `/proc/self/status`) past its
    /// `RLIMIT_AS` (`ulimit -v`). Reservations count in full although they
    /// use no memory.
    AddressSpaceLimit {
        /// The call that failed.
        call: &'static str,
        /// Bytes the call would have added to the address space.
        len: u64,
        /// The process's address space before the call, in bytes.
        vm_size: u64,
        /// The soft `RLIMIT_AS`, in bytes.
        limit: u64,
    },
    /// The window has no free range of the minimum length.
    WindowFull {
        /// Window start.
        low: u64,
        /// Window end (exclusive).
        high: u64,
        /// Smallest length the caller accepts.
        min_len: u64,
        /// Largest free range in the window at the last try.
        largest_free: u64,
    },
    /// Every try lost the race to another thread mapping the chosen range.
    RetriesExhausted {
        /// Number of tries.
        tries: u32,
    },
    /// An argument is out of range (length 0, bad alignment, `va_bits` out of
    /// range, window inverted, ...).
    InvalidArgument {
        /// What was wrong.
        what: String,
    },
    /// The heap's reservation has no free range for this allocation.
    HeapFull {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
    },
    /// The pointer does not start a live allocation of this heap.
    NotAllocated {
        /// The address given.
        addr: u64,
    },
    /// The fence's preload library was not found.
    FenceLibraryNotFound {
        /// Every path that was tried.
        tried: Vec<PathBuf>,
    },
    /// Starting the command failed.
    Spawn {
        /// The command.
        cmd: String,
        /// The failure.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchProcess { pid } => write!(f, "no such process: {pid}"),
            Error::PermissionDenied { pid, path, errno } => write!(
                f,
                "not allowed to read the address space of process {pid} ({}: {errno}); \
                 it belongs to another user or is not dumpable",
                path.display()
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::ProcessExited { pid, lines_read } => write!(
                f,
                "process {pid} exited while its maps were read (after {lines_read} lines); \
                 the view would be incomplete"
            ),
            Error::Malformed {
                path,
                line,
                reason,
                text,
            } => write!(f, "{}:{line}: {reason}: {text:?}", path.display()),
            Error::Inconsistent { line, source } => {
                write!(f, "maps line {line}: {source}")
            }
            Error::Sys {
                call,
                addr,
                len,
                errno,
            } => write!(f, "{call}(addr={addr:#x}, len={len:#x}) failed: {errno}"),
            Error::MapCountLimit {
                call,
                vmas,
                max_map_count,
            } => write!(
                f,
                "{call} failed with ENOMEM: the process has {vmas} mappings and \
                 vm.max_map_count is {max_map_count}; every backed SVM buffer is its own \
                 mapping, so free buffers or raise vm.max_map_count"
            ),
            Error::AddressSpaceLimit {
                call,
                len,
                vm_size,
                limit,
            } => write!(
                f,
                "{call} failed with ENOMEM: the process's address-space limit RLIMIT_AS \
                 (ulimit -v) is {limit:#x} bytes ({}) and it already maps {vm_size:#x} bytes \
                 ({}, VmSize), so {len:#x} more ({}) do not fit; reservations count in full \
                 although they use no memory: raise the limit or reserve less",
                Mib(*limit),
                Mib(*vm_size),
                Mib(*len)
            ),
            Error::WindowFull {
                low,
                high,
                min_len,
                largest_free,
            } => write!(
                f,
                "no free range of {min_len:#x} bytes in [{low:#x}, {high:#x}); \
                 the largest is {largest_free:#x} bytes"
            ),
            Error::RetriesExhausted { tries } => write!(
                f,
                "gave up after {tries} tries: another thread kept mapping the chosen range"
            ),
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::HeapFull { len, align } => write!(
                f,
                "the SVM heap has no free range of {len:#x} bytes aligned to {align:#x}"
            ),
            Error::NotAllocated { addr } => {
                write!(f, "{addr:#x} is not the start of a live SVM allocation")
            }
            Error::FenceLibraryNotFound { tried } => {
                write!(f, "libsvmap_fence.so not found; tried:")?;
                for p in tried {
                    write!(f, " {}", p.display())?;
                }
                write!(
                    f,
                    " (build it with `cargo build --release` at the workspace root)"
                )
            }
            Error::Spawn { cmd, source } => write!(f, "cannot start {cmd}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A byte count in MiB for messages: exact when it is a whole number of
/// MiB, else with one decimal.
struct Mib(u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        if self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{:.1} MiB", self.0 as f64 / MIB as f64)
        }
    }
}

#[cfg(test)]
mod mib_tests {
    use super::*;

    #[test]
    fn the_address_space_limit_names_its_sizes_in_bytes_and_mib() {
        let e = Error::AddressSpaceLimit {
            call: "mmap",
            len: 0x1000_0000,
            vm_size: 0x8e_7000,
            limit: 0xa00_0000,
        };
        let text = e.to_string();
        assert!(text.contains("is 0xa000000 bytes (160 MiB)"), "{text}");
        assert!(text.contains("0x8e7000 bytes (8.9 MiB, VmSize)"), "{text}");
        assert!(text.contains("0x10000000 more (256 MiB)"), "{text}");
    }
}
