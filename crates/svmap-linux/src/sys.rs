//! The only module of svmap's reservation/heap/probe code that makes raw
//! system calls. Everything it exports is safe: the unsafe blocks are here,
//! each with the reason it holds.
//!
//! Ownership rule: svmap may replace (`MAP_FIXED`) or unmap only ranges it
//! created itself. Such a range is an `OwnedRange`; the only ways to get one
//! are `OwnedRange::reserve_at` (`MAP_FIXED_NOREPLACE`, which fails rather
//! than replace anything) and `OwnedRange::reserve_anywhere` (a non-fixed
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
        // above), which svmap mapped and owns, so MAP_FIXED replaces only
        // svmap's own pages. The callers (`Heap::alloc`, `SharedWindow::map_fd`)
        // hand the range out only as raw addresses after this returns, so no
        // Rust reference to the replaced pages exists. (`Reservation::
        // map_shared_fd` needs the reservation by `&mut`; a reservation's
        // pages are only ever handed out as raw addresses too.)
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
            let e = Errno::last();
            self.recover_hole(addr, len);
            return Err(e);
        }
        debug_assert_eq!(p as u64, addr);
        Ok(())
    }

    /// After a failed `MAP_FIXED` over `[addr, addr + len)` (checked to lie
    /// inside this range): the kernel may have unmapped the old pages before
    /// failing (`mmap_region` unmaps first, then can fail allocating the new
    /// VMA), which would leave a hole in the reservation that an unrelated
    /// `mmap` could take, and that this range's `Drop` would then unmap.
    /// Puts a `PROT_NONE` reservation back with `MAP_FIXED_NOREPLACE`, which
    /// fills the hole if there is one and changes nothing otherwise.
    fn recover_hole(&self, addr: u64, len: u64) {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; a
        // new mapping only fills a hole inside this OwnedRange, which is
        // svmap's to fill.
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
        if p != libc::MAP_FAILED && p as u64 != addr {
            // A kernel before 4.17 took the flag as a hint.
            // SAFETY: `p` is the mapping this call just created.
            unsafe { libc::munmap(p, len as usize) };
        }
    }

    /// Puts a fresh `PROT_NONE | MAP_NORESERVE` anonymous mapping over
    /// `[addr, addr + len)` (inside this range): whatever was mapped there is
    /// released and the range stays reserved.
    pub(crate) fn reset(&self, addr: u64, len: u64) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY: the range is inside this OwnedRange (checked above); the
        // callers (`Heap::free`, `Reservation::reset` for the peer's shared
        // window) have taken the buffer
        // out of their index first, and both hand buffers out only as raw
        // addresses, so no Rust reference into the pages exists.
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
            let e = Errno::last();
            self.recover_hole(addr, len);
            return Err(e);
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
pub fn memfd_sealed(name: &CStr, len_bytes: u64) -> Result<OwnedFd, Errno> {
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

/// `EBADF` unless `raw` is an open descriptor, `EINVAL` unless it is open
/// for writing (`F_GETFL`). For borrowing a descriptor number that a caller
/// outside Rust passed in (the C ABI's output descriptors): a closed number
/// becomes a clean error instead of an `OwnedFd`/`File` over nothing.
pub fn check_writable_fd(raw: i32) -> Result<(), Errno> {
    if raw < 0 {
        return Err(Errno(libc::EBADF));
    }
    // SAFETY: fcntl(F_GETFL) on a descriptor number reads no memory; a
    // number that is not open answers EBADF.
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if fl < 0 {
        return Err(Errno::last());
    }
    match fl & libc::O_ACCMODE {
        libc::O_WRONLY | libc::O_RDWR => Ok(()),
        _ => Err(Errno::EINVAL),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Descriptors open in this process. Other tests run on other threads,
    /// so callers compare with a margin below the number of iterations.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn owned_range_refuses_sub_ranges_outside_it() {
        let r = OwnedRange::reserve_anywhere(0, 4 * PAGE).unwrap();
        let fd = memfd_sealed(c"svmap-test", PAGE).unwrap();
        let (a, l) = (r.addr(), r.len());
        for (addr, len) in [
            (a - PAGE, PAGE),
            (a + l, PAGE),
            (a + l - PAGE, 2 * PAGE),
            (a + 1, PAGE),
            (a, PAGE + 1),
            (a, 0),
            (u64::MAX - PAGE + 1, PAGE),
        ] {
            assert_eq!(r.map_shared_fd(addr, len, fd.as_fd()), Err(Errno::EINVAL));
            assert_eq!(r.reset(addr, len), Err(Errno::EINVAL));
        }
        assert_eq!(
            OwnedRange::reserve_at(a, u64::MAX - PAGE + 1).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(
            OwnedRange::reserve_at(a + 1, PAGE).err(),
            Some(Errno::EINVAL)
        );
        assert_eq!(OwnedRange::reserve_at(a, PAGE).err(), Some(Errno::EEXIST));
        r.map_shared_fd(a + PAGE, PAGE, fd.as_fd()).unwrap();
        r.reset(a + PAGE, PAGE).unwrap();
    }

    #[test]
    fn failing_calls_close_their_descriptors() {
        let before = open_fds();
        for _ in 0..64 {
            // memfd_create succeeds, the size is refused: the memfd is closed.
            assert_eq!(
                memfd_sealed(c"too-big", u64::MAX).err(),
                Some(Errno::EINVAL)
            );
            // EINVAL (ENOSYS under valgrind, which lacks the syscall).
            assert!(pidfd_open(u32::MAX).is_err());
        }
        assert!(open_fds() < before + 32, "descriptors leaked");
    }

    #[test]
    fn writable_fd_check() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(check_writable_fd(a.as_raw_fd()), Ok(()));
        let raw = a.as_raw_fd();
        drop(a);
        // Closed (unless another thread reused the number meanwhile: then it
        // is open, and whatever it is, the check must not crash).
        let _ = check_writable_fd(raw);
        assert_eq!(check_writable_fd(-1), Err(Errno(libc::EBADF)));
        assert_eq!(check_writable_fd(i32::MAX), Err(Errno(libc::EBADF)));
        let ro = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(check_writable_fd(ro.as_raw_fd()), Err(Errno::EINVAL));
    }

    #[test]
    fn memfds_are_sealed_against_shrinking_and_growing() {
        let fd = memfd_sealed(c"svmap-test", 2 * PAGE).unwrap();
        let seals = get_seals(fd.as_fd()).unwrap();
        assert_eq!(
            seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW),
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW
        );
    }
}
