//! `userfaultfd`: page faults of this process delivered to a handler
//! thread instead of being resolved by the kernel. Page migration uses it:
//! a range whose data lives in a device's memory is registered here, so a
//! CPU touch stops the touching thread until the handler has brought the
//! data back and woken it.
//!
//! [`Uffd::open`] creates the descriptor (the `userfaultfd` system call
//! for kernel and user faults; where that is refused, `/dev/userfaultfd`;
//! where that is refused too, the system call with `UFFD_USER_MODE_ONLY`,
//! which needs no privilege but makes a system call that touches a moved
//! page fail with `EFAULT`: [`Uffd::user_mode_only`]), negotiates the API
//! and checks the features
//! svmap needs on shared memory: missing-page faults (`MISSING_SHMEM`) and
//! write protection (`WP_HUGETLBFS_SHMEM`). Where either step is refused or
//! a feature is missing, the answer is a typed [`UffdError`] at setup:
//! there is no silent fallback (the caller can keep data in system memory
//! instead).
//!
//! The `ioctl` calls are not in rustix; their structures are written out
//! below from the kernel's `uapi/linux/userfaultfd.h` (the layout is part of
//! the kernel ABI). This module is one of the few with `unsafe`; every block
//! has its reason.

#![allow(unsafe_code)]

use core::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::error::Errno;

const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: u32 = 1;
/// Missing-page faults on shared memory.
pub const FEATURE_MISSING_SHMEM: u64 = 1 << 5;
/// Write protection on shared memory (and hugetlbfs).
pub const FEATURE_WP_SHMEM: u64 = 1 << 12;
const REGISTER_MODE_MISSING: u64 = 1;
const REGISTER_MODE_WP: u64 = 2;
const WRITEPROTECT_MODE_WP: u64 = 1;
const EVENT_PAGEFAULT: u8 = 0x12;
const PAGEFAULT_FLAG_WRITE: u64 = 1;
const PAGEFAULT_FLAG_WP: u64 = 2;

/// `_IOC(dir, 0xAA, nr, size)` on x86-64 (and every architecture with the
/// generic `ioctl` layout).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}
const IOC_READ: u64 = 2;
const IOC_RW: u64 = 3;

#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, or part of the layout only
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, or part of the layout only
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, or part of the layout only
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, or part of the layout only
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct uffd_msg`: 32 bytes; for a page fault, `arg0` is the flags and
/// `arg1` the address.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // written by the kernel, or part of the layout only
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg0: u64,
    arg1: u64,
    arg2: u64,
}

const UFFDIO_API: u64 = ioc(IOC_RW, 0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = ioc(IOC_RW, 0x00, size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: u64 = ioc(IOC_READ, 0x01, size_of::<UffdioRange>());
const UFFDIO_WAKE: u64 = ioc(IOC_READ, 0x02, size_of::<UffdioRange>());
const UFFDIO_WRITEPROTECT: u64 = ioc(IOC_RW, 0x06, size_of::<UffdioWriteprotect>());
/// `USERFAULTFD_IOC_NEW` of `/dev/userfaultfd`: `_IO(0xAA, 0)`.
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;

/// Where [`Uffd::open_via`] may get its descriptor from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    /// The `userfaultfd` system call: first for kernel and user faults
    /// (permitted with `CAP_SYS_PTRACE` or `vm.unprivileged_userfaultfd`
    /// = 1), and, when neither that nor `/dev/userfaultfd` gave a
    /// descriptor, with `UFFD_USER_MODE_ONLY` (no privilege needed; see
    /// [`Uffd::user_mode_only`]).
    pub syscall: bool,
    /// The `USERFAULTFD_IOC_NEW` `ioctl` of `/dev/userfaultfd`.
    pub dev_node: bool,
}

impl Sources {
    /// Both, in the order of [`Sources::syscall`].
    pub const ALL: Sources = Sources {
        syscall: true,
        dev_node: true,
    };
}

/// Why `userfaultfd` cannot be used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UffdError {
    /// Neither source gave a descriptor: the system call failed with
    /// `syscall` (its last try; `EPERM`: not permitted, e.g. a seccomp
    /// filter; `ENOSYS`: not built in) and
    /// `/dev/userfaultfd` with `dev_node` (`None`: that source was not
    /// tried).
    Unavailable {
        /// errno of the system call (`None`: not tried).
        syscall: Option<i32>,
        /// errno of `/dev/userfaultfd` (`None`: not tried).
        dev_node: Option<i32>,
    },
    /// The API handshake failed (`UFFDIO_API`).
    Api(i32),
    /// The kernel lacks features svmap needs (the bits of
    /// [`FEATURE_MISSING_SHMEM`] and [`FEATURE_WP_SHMEM`] that are missing).
    MissingFeatures(u64),
    /// An `ioctl` on the descriptor failed.
    Ioctl {
        /// Which.
        call: &'static str,
        /// errno.
        errno: i32,
    },
}

impl core::fmt::Display for UffdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            UffdError::Unavailable { syscall, dev_node } => write!(
                f,
                "userfaultfd is not available (system call: {}; /dev/userfaultfd: {})",
                syscall.map_or("not tried".into(), |e| Errno(e).to_string()),
                dev_node.map_or("not tried".into(), |e| Errno(e).to_string())
            ),
            UffdError::Api(e) => write!(f, "UFFDIO_API failed: {}", Errno(*e)),
            UffdError::MissingFeatures(m) => write!(
                f,
                "the kernel's userfaultfd lacks features {m:#x} (missing-page faults and write protection on shared memory)"
            ),
            UffdError::Ioctl { call, errno } => write!(f, "{call} failed: {}", Errno(*errno)),
        }
    }
}

impl std::error::Error for UffdError {}

/// A page fault read from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting address (page aligned unless the kernel reports exact
    /// addresses).
    pub addr: u64,
    /// A write.
    pub write: bool,
    /// A write-protect fault (else a missing page).
    pub wp: bool,
}

/// A userfaultfd descriptor of this process (see the module
/// documentation). Dropping it closes it: ranges still registered behave as
/// if never registered, and threads blocked on it are woken.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    user_mode_only: bool,
}

fn errno_of(e: rustix::io::Errno) -> i32 {
    e.raw_os_error()
}

/// `ioctl(fd, req, arg)`.
///
/// # Safety
/// `arg` points to the structure `req` reads and writes, valid for the call.
unsafe fn ioctl(fd: &OwnedFd, req: u64, arg: *mut c_void) -> Result<(), i32> {
    // SAFETY: the caller's contract: `arg` is the structure of `req`;
    // `fd` is open (owned).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

impl Uffd {
    /// Opens a descriptor from any source ([`Sources::ALL`]).
    pub fn open() -> Result<Uffd, UffdError> {
        Uffd::open_via(Sources::ALL)
    }

    /// Opens a descriptor from the sources allowed (a test turns both off
    /// to see the error a machine without `userfaultfd` gives), negotiates
    /// the API and checks the features.
    pub fn open_via(src: Sources) -> Result<Uffd, UffdError> {
        let mut syscall_err = None;
        let mut dev_err = None;
        let mut fd = None;
        let mut user_mode_only = false;
        let syscall = |extra: u32| {
            let flags = rustix::mm::UserfaultfdFlags::CLOEXEC
                | rustix::mm::UserfaultfdFlags::NONBLOCK
                | rustix::mm::UserfaultfdFlags::from_bits_retain(extra);
            // SAFETY: the descriptor lets a handler resolve this process's
            // faults; it is owned here and only used by this module's
            // methods, which never leave a registered range unresolvable
            // (dropping the descriptor unregisters everything).
            unsafe { rustix::mm::userfaultfd(flags) }.map_err(errno_of)
        };
        // Kernel accesses too (read(2) into a registered range, futexes)
        // wait for the handler, where that is permitted.
        if src.syscall {
            match syscall(0) {
                Ok(f) => fd = Some(f),
                Err(e) => syscall_err = Some(e),
            }
        }
        if fd.is_none() && src.dev_node {
            match std::fs::File::open("/dev/userfaultfd") {
                Ok(dev) => {
                    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_long;
                    // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value
                    // and returns a new descriptor or -1; `dev` is open.
                    let r =
                        unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
                    if r < 0 {
                        dev_err = std::io::Error::last_os_error().raw_os_error();
                    } else {
                        // SAFETY: `r` is a fresh descriptor that nothing
                        // else owns.
                        fd = Some(unsafe { OwnedFd::from_raw_fd(r) });
                    }
                }
                Err(e) => dev_err = Some(e.raw_os_error().unwrap_or(libc::ENOENT)),
            }
        }
        // Last, user faults only: needs no privilege, but a kernel access
        // to a registered range that would fault fails with EFAULT.
        if fd.is_none() && src.syscall {
            match syscall(UFFD_USER_MODE_ONLY) {
                Ok(f) => {
                    fd = Some(f);
                    user_mode_only = true;
                }
                Err(e) => syscall_err = Some(e),
            }
        }
        let Some(fd) = fd else {
            return Err(UffdError::Unavailable {
                syscall: syscall_err,
                dev_node: dev_err,
            });
        };
        let want = FEATURE_MISSING_SHMEM | FEATURE_WP_SHMEM;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: want,
            ioctls: 0,
        };
        // SAFETY: `api` is a UffdioApi, the structure of UFFDIO_API.
        if let Err(e) = unsafe { ioctl(&fd, UFFDIO_API, (&raw mut api).cast()) } {
            // EINVAL: a feature asked for is not supported. Ask for none
            // on a fresh descriptor to learn which are.
            if e == libc::EINVAL {
                return Err(UffdError::MissingFeatures(want));
            }
            return Err(UffdError::Api(e));
        }
        let missing = want & !api.features;
        if missing != 0 {
            return Err(UffdError::MissingFeatures(missing));
        }
        Ok(Uffd { fd, user_mode_only })
    }

    /// Whether only faults of user-mode accesses reach the handler (the
    /// descriptor came from `userfaultfd(UFFD_USER_MODE_ONLY)`): then a
    /// system call that touches a registered range the handler would
    /// have to resolve (`read(2)` into it, `write(2)` from a punched page)
    /// fails with `EFAULT` instead of waiting.
    pub fn user_mode_only(&self) -> bool {
        self.user_mode_only
    }

    fn range_ioctl(
        &self,
        call: &'static str,
        req: u64,
        start: u64,
        len: u64,
    ) -> Result<(), UffdError> {
        let mut r = UffdioRange { start, len };
        // SAFETY: `r` is a UffdioRange, the structure of UNREGISTER and
        // WAKE; the kernel checks the range itself.
        unsafe { ioctl(&self.fd, req, (&raw mut r).cast()) }
            .map_err(|errno| UffdError::Ioctl { call, errno })
    }

    /// Registers `[start, start + len)` (page aligned, mapped in this
    /// process) for missing-page and write-protect faults.
    pub fn register(&self, start: u64, len: u64) -> Result<(), UffdError> {
        let mut r = UffdioRegister {
            range: UffdioRange { start, len },
            mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: `r` is a UffdioRegister, the structure of
        // UFFDIO_REGISTER; the kernel checks that the range is mapped.
        unsafe { ioctl(&self.fd, UFFDIO_REGISTER, (&raw mut r).cast()) }.map_err(|errno| {
            UffdError::Ioctl {
                call: "UFFDIO_REGISTER",
                errno,
            }
        })
    }

    /// Unregisters the range: its write protection goes, and every thread
    /// blocked on a fault in it is woken (and faults again, normally).
    pub fn unregister(&self, start: u64, len: u64) -> Result<(), UffdError> {
        self.range_ioctl("UFFDIO_UNREGISTER", UFFDIO_UNREGISTER, start, len)
    }

    /// Wakes the threads blocked on a fault in the range.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), UffdError> {
        self.range_ioctl("UFFDIO_WAKE", UFFDIO_WAKE, start, len)
    }

    /// Write-protects the (registered) range: from the return on, a CPU
    /// write in it blocks in a fault for the handler.
    pub fn write_protect(&self, start: u64, len: u64, on: bool) -> Result<(), UffdError> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange { start, len },
            mode: if on { WRITEPROTECT_MODE_WP } else { 0 },
        };
        // SAFETY: `w` is a UffdioWriteprotect, the structure of
        // UFFDIO_WRITEPROTECT.
        unsafe { ioctl(&self.fd, UFFDIO_WRITEPROTECT, (&raw mut w).cast()) }.map_err(|errno| {
            UffdError::Ioctl {
                call: "UFFDIO_WRITEPROTECT",
                errno,
            }
        })
    }

    /// Waits at most `timeout` for the next page fault. `Ok(None)`: none
    /// came (or the event was not a page fault).
    pub fn next_fault(&self, timeout: Duration) -> Result<Option<PageFault>, UffdError> {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => {
                return Err(UffdError::Ioctl {
                    call: "poll",
                    errno: errno_of(e),
                })
            }
        }
        let mut msg = UffdMsg::default();
        // SAFETY: `msg` is a plain 32-byte structure with no invalid bit
        // patterns, the size of one `struct uffd_msg`; read writes at most
        // that many bytes.
        let buf = unsafe {
            core::slice::from_raw_parts_mut((&raw mut msg).cast::<u8>(), size_of::<UffdMsg>())
        };
        match rustix::io::read(self.fd.as_fd(), buf) {
            Ok(n) if n == size_of::<UffdMsg>() => {}
            Ok(_) | Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => {
                return Err(UffdError::Ioctl {
                    call: "read",
                    errno: errno_of(e),
                })
            }
        }
        if msg.event != EVENT_PAGEFAULT {
            return Ok(None);
        }
        Ok(Some(PageFault {
            addr: msg.arg1,
            write: msg.arg0 & PAGEFAULT_FLAG_WRITE != 0,
            wp: msg.arg0 & PAGEFAULT_FLAG_WP != 0,
        }))
    }
}
