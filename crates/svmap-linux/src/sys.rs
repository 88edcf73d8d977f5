//! The only module of svmap's reservation/heap/probe code that makes raw
//! system calls. Everything it exports is safe: the unsafe blocks are here,
//! each with the reason it holds.
//!
//! Ownership rule: svmap may replace (`MAP_FIXED`) or unmap only ranges it
//! created itself. Such a range is an [`OwnedRange`]; the only ways to get one
//! are [`OwnedRange::reserve_at`] (`MAP_FIXED_NOREPLACE`, which fails rather
//! than replace anything) and [`OwnedRange::reserve_anywhere`] (a non-fixed
//! `mmap`, which never replaces anything). Every `MAP_FIXED` below is on a
//! sub-range of an `OwnedRange`, checked at run time.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::Errno;

/// The page size svmap assumes (x86-64, arm64 with 4 KiB pages). Checked
/// against `sysconf(_SC_PAGESIZE)` by [`page_size`].
pub const PAGE: u64 = 4096;

/// `sysconf(_SC_PAGESIZE)`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let r = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if r <= 0 {
        PAGE
    } else {
        r as u64
    }
}

/// Flags of every reservation: no access, private, anonymous, and no swap or
/// commit accounting (`MAP_NORESERVE`), so reserving a terabyte costs one
/// VMA and no memory.
const RESERVE_FLAGS: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// A page-aligned range `[addr, addr + len)` of this process's address space
/// that svmap mapped itself and therefore may `MAP_FIXED` over and unmap.
/// Dropping it unmaps the whole range.
#[derive(Debug)]
pub(crate) struct OwnedRange {
    /// Page aligned, non-zero.
    addr: u64,
    /// Page aligned, non-zero; `addr + len` does not wrap.
    len: u64,
}

impl OwnedRange {
    /// Reserves exactly `[addr, addr + len)` with `PROT_NONE | MAP_PRIVATE |
    /// MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE`. `EEXIST` if any
    /// mapping intersects the range (guard gaps are not checked by the
    /// kernel; the caller does that). A kernel older than 4.17 treats the
    /// unknown flag as a hint; a result at another address is unmapped again
    /// and reported as `EEXIST`.
    pub(crate) fn reserve_at(addr: u64, len: u64) -> Result<OwnedRange, Errno> {
        if len == 0 || addr % PAGE != 0 || len % PAGE != 0 || addr.checked_add(len).is_none() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so
        // no memory anyone uses changes; the result is checked below.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                RESERVE_FLAGS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let got = OwnedRange {
            addr: p as u64,
            len,
        };
        if got.addr != addr {
            drop(got); // a fresh mapping of ours: unmapping it is fine
            return Err(Errno::EEXIST);
        }
        Ok(got)
    }

    /// A non-fixed `PROT_NONE` reservation of `len` bytes with the hint
    /// `hint` (0: none): the kernel picks a free range.
    pub(crate) fn reserve_anywhere(hint: u64, len: u64) -> Result<OwnedRange, Errno> {
        if len == 0 || len % PAGE != 0 {
            return Err(Errno::EINVAL);
        }
        // SAFETY: a non-fixed mmap never replaces an existing mapping.
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                RESERVE_FLAGS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(OwnedRange {
            addr: p as u64,
            len,
        })
    }

    /// First address.
    pub(crate) fn addr(&self) -> u64 {
        self.addr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn check_sub(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let inside = len > 0
            && addr % PAGE == 0
            && len % PAGE == 0
            && addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= self.addr + self.len);
        if inside {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Maps `len` bytes of `fd` from offset 0 at `addr` (inside this range)
    /// with `PROT_READ | PROT_WRITE`, `MAP_SHARED | MAP_FIXED`.
    pub(crate) fn map_shared_fd(
        &self,
        addr: u64,
        len: u64,
        fd: BorrowedFd<'_>,
    ) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY: [addr, addr + len) lies inside this OwnedRange (checked
        // above), which svmap mapped and owns; the heap that calls this hands
        // the range out only as a raw pointer after this returns, so no Rust
        // reference to the replaced pages exists.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        debug_assert_eq!(p as u64, addr);
        Ok(())
    }

    /// Puts a fresh `PROT_NONE | MAP_NORESERVE` anonymous mapping over
    /// `[addr, addr + len)` (inside this range): whatever was mapped there is
    /// released and the range stays reserved.
    pub(crate) fn reset(&self, addr: u64, len: u64) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY: the range is inside this OwnedRange (checked above); the
        // caller (the heap's `free`) has taken the allocation out of its index,
        // so by its contract nothing uses the pages any more.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_NONE,
                RESERVE_FLAGS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(())
    }
}

impl Drop for OwnedRange {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by svmap (see the type's invariant) and
        // is handed out only as raw pointers; unmapping it cannot invalidate a
        // Rust reference.
        let r = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len as usize) };
        debug_assert_eq!(r, 0, "munmap of an owned range failed");
    }
}

/// A memfd of exactly `len_bytes` bytes, close-on-exec, sealed with
/// `F_SEAL_SHRINK | F_SEAL_GROW` after sizing, so that no holder (this
/// process or a peer it is passed to) can truncate it under a mapping (which
/// would make accesses fault with SIGBUS) or grow it.
pub(crate) fn memfd_sealed(name: &CStr, len_bytes: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len_bytes).map_err(|_| Errno::EINVAL)?;
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(Errno::last());
    }
    // SAFETY: plain syscall on a descriptor we own.
    let r = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    Ok(fd)
}

/// The seals of a file descriptor (`F_GET_SEALS`).
pub fn get_seals(fd: BorrowedFd<'_>) -> Result<i32, Errno> {
    // SAFETY: plain syscall on a live descriptor.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `pidfd_open(pid, 0)`.
pub(crate) fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// True if the process behind a pidfd has exited (the pidfd polls readable
/// once it has, zombie or reaped).
pub(crate) fn pidfd_exited(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// `RLIMIT_STACK` soft limit in bytes; `None` if unlimited.
pub fn stack_rlimit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) };
    if r != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(rl.rlim_cur)
    }
}
