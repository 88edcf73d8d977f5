//! The only module of svmap's reservation/heap/probe code that makes raw
//! system calls. Everything it exports is safe: the unsafe blocks are here,
//! each with the reason it holds.
//!
//! Calls go through `rustix`. `libc` remains for one call only:
//!
//! - `fcntl(raw, F_GETFL)` in [`check_writable_fd`]: the descriptor number
//!   comes from outside Rust and may not be open. rustix's calls take a
//!   `BorrowedFd`, whose contract is an open descriptor, so asking the
//!   kernel whether the number is open at all has to go through libc.
//!
//! (The errno constants of [`Errno`] also come from `libc`: constants, not
//! calls.)
//!
//! Ownership rule: svmap may replace (`MAP_FIXED`) or unmap only ranges it
//! created itself. Such a range is an `OwnedRange`; the only ways to get one
//! are `OwnedRange::reserve_at` (`MAP_FIXED_NOREPLACE`, which fails rather
//! than replace anything) and `OwnedRange::reserve_anywhere` (a non-fixed
//! `mmap`, which never replaces anything). Every `MAP_FIXED` below is on a
//! sub-range of an `OwnedRange`, checked at run time.

#![allow(unsafe_code)]

use core::ffi::c_void;
use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::process::{Pid, PidfdFlags, Resource};

use crate::error::Errno;

impl From<rustix::io::Errno> for Errno {
    /// The same errno, as rustix reported it.
    fn from(e: rustix::io::Errno) -> Errno {
        Errno(e.raw_os_error())
    }
}

/// The page size svmap assumes (x86-64, arm64 with 4 KiB pages). Checked
/// against the kernel's page size by [`page_size`].
pub const PAGE: u64 = 4096;

/// The kernel's page size (`AT_PAGESZ`, what `sysconf(_SC_PAGESIZE)`
/// answers).
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Flags of every reservation: no access, private, anonymous (added by
/// `mmap_anonymous`), and no swap or commit accounting (`MAP_NORESERVE`),
/// so reserving a terabyte costs one VMA and no memory.
const RESERVE_FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NORESERVE);

/// Where a new reservation goes: it never replaces an existing mapping.
#[derive(Clone, Copy)]
enum Place {
    /// Exactly at the address (`MAP_FIXED_NOREPLACE`), else `EEXIST`.
    Exactly,
    /// Where the kernel likes, the address being only a hint.
    Anywhere,
}

/// `mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
/// [| MAP_FIXED_NOREPLACE], -1, 0)`: the address the kernel answered, or
/// its errno. A kernel older than 4.17 takes `MAP_FIXED_NOREPLACE` as a
/// hint: the caller compares the address.
fn mmap_new_reservation(addr: u64, len: u64, place: Place) -> Result<u64, Errno> {
    let extra = match place {
        Place::Exactly => MapFlags::FIXED_NOREPLACE,
        Place::Anywhere => MapFlags::empty(),
    };
    // SAFETY:
    // 1. Neither flag set replaces an existing mapping: without MAP_FIXED
    //    the kernel only creates a new one, so no memory anyone uses changes.
    // 2. The new mapping is PROT_NONE, so no code can touch it; the address
    //    is handed out only as a number.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            addr as usize as *mut c_void,
            len as usize,
            ProtFlags::empty(),
            RESERVE_FLAGS | extra,
        )
    }?;
    Ok(p as usize as u64)
}

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
        if len == 0
            || !addr.is_multiple_of(PAGE)
            || !len.is_multiple_of(PAGE)
            || addr.checked_add(len).is_none()
        {
            return Err(Errno::EINVAL);
        }
        let p = mmap_new_reservation(addr, len, Place::Exactly)?;
        let got = OwnedRange { addr: p, len };
        if got.addr != addr {
            drop(got); // a fresh mapping of ours: unmapping it is fine
            return Err(Errno::EEXIST);
        }
        Ok(got)
    }

    /// A non-fixed `PROT_NONE` reservation of `len` bytes with the hint
    /// `hint` (0: none): the kernel picks a free range.
    pub(crate) fn reserve_anywhere(hint: u64, len: u64) -> Result<OwnedRange, Errno> {
        if len == 0 || !len.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        let p = mmap_new_reservation(hint, len, Place::Anywhere)?;
        Ok(OwnedRange { addr: p, len })
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
            && addr.is_multiple_of(PAGE)
            && len.is_multiple_of(PAGE)
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
        self.map_shared_fd_at(addr, len, fd, 0)
    }

    /// Replaces `[addr, addr + len)` (inside this range) by private
    /// anonymous memory holding the same bytes: a fresh anonymous mapping
    /// elsewhere receives a copy, then `mremap(MREMAP_FIXED)` moves it over
    /// the range in one step (never a moment without a mapping there).
    pub(crate) fn privatize(&self, addr: u64, len: u64) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY: a non-fixed anonymous mapping replaces nothing.
        let tmp = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        // SAFETY: the source lies inside this range, mapped readable by
        // its owner (the callers privatize only mapped parts); `tmp` is the
        // fresh mapping of `len` bytes; they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(addr as *const u8, tmp.cast::<u8>(), len as usize)
        };
        // SAFETY: the destination lies inside this OwnedRange (checked), so
        // MREMAP_FIXED replaces only svmap's own pages, reached only
        // through raw addresses; `tmp` is the mapping made above, which is
        // moved (not left behind).
        let r = unsafe {
            rustix::mm::mremap_fixed(
                tmp,
                len as usize,
                len as usize,
                rustix::mm::MremapFlags::MAYMOVE,
                addr as usize as *mut c_void,
            )
        };
        if let Err(e) = r {
            // SAFETY: `tmp` is still the mapping made above, owned here.
            let _ = unsafe { rustix::mm::munmap(tmp, len as usize) };
            return Err(e.into());
        }
        Ok(())
    }

    /// Maps `len` bytes of `fd` from `offset` at `addr` (inside this range)
    /// with `PROT_READ | PROT_WRITE`, `MAP_SHARED | MAP_FIXED`.
    pub(crate) fn map_shared_fd_at(
        &self,
        addr: u64,
        len: u64,
        fd: BorrowedFd<'_>,
        offset: u64,
    ) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY:
        // 1. [addr, addr + len) lies inside this OwnedRange (checked above),
        //    which svmap mapped and owns, so MAP_FIXED replaces only svmap's
        //    own pages.
        // 2. No Rust reference to the replaced pages exists: the callers
        //    (`Heap::alloc`, `SharedWindow::map_fd`) hand the range out only
        //    as raw addresses after this returns, and `Reservation::
        //    map_shared_fd` needs the reservation by `&mut` (a reservation's
        //    pages are only ever handed out as raw addresses too).
        let r = unsafe {
            rustix::mm::mmap(
                addr as usize as *mut c_void,
                len as usize,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                fd,
                offset,
            )
        };
        match r {
            Ok(p) => {
                debug_assert_eq!(p as usize as u64, addr);
                Ok(())
            }
            Err(e) => {
                self.recover_hole(addr, len);
                Err(e.into())
            }
        }
    }

    /// After a failed `MAP_FIXED` over `[addr, addr + len)` (checked to lie
    /// inside this range): the kernel may have unmapped the old pages before
    /// failing (`mmap_region` unmaps first, then can fail allocating the new
    /// VMA), which would leave a hole in the reservation that an unrelated
    /// `mmap` could take, and that this range's `Drop` would then unmap.
    /// Puts a `PROT_NONE` reservation back with `MAP_FIXED_NOREPLACE`, which
    /// fills the hole if there is one and changes nothing otherwise.
    fn recover_hole(&self, addr: u64, len: u64) {
        // A new mapping only fills a hole inside this OwnedRange, which is
        // svmap's to fill.
        if let Ok(p) = mmap_new_reservation(addr, len, Place::Exactly) {
            if p != addr {
                // A kernel before 4.17 took the flag as a hint: the mapping
                // elsewhere is a fresh one of ours, and dropping it unmaps it.
                drop(OwnedRange { addr: p, len });
            }
        }
    }

    /// Puts a fresh `PROT_NONE | MAP_NORESERVE` anonymous mapping over
    /// `[addr, addr + len)` (inside this range): whatever was mapped there is
    /// released and the range stays reserved.
    pub(crate) fn reset(&self, addr: u64, len: u64) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        // SAFETY:
        // 1. The range is inside this OwnedRange (checked above), so
        //    MAP_FIXED replaces only svmap's own pages.
        // 2. No Rust reference points into them: the callers (`Heap::free`,
        //    `Reservation::reset` for the peer's shared window) have taken
        //    the buffer out of their index first, and both hand buffers out
        //    only as raw addresses.
        let r = unsafe {
            rustix::mm::mmap_anonymous(
                addr as usize as *mut c_void,
                len as usize,
                ProtFlags::empty(),
                RESERVE_FLAGS | MapFlags::FIXED,
            )
        };
        if let Err(e) = r {
            self.recover_hole(addr, len);
            return Err(e.into());
        }
        Ok(())
    }
}

/// CPU access to a part of a range svmap owns
/// ([`Reservation::protect`](crate::reserve::Reservation::protect)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `PROT_NONE`: every access faults.
    None,
    /// `PROT_READ`: reads only (on private anonymous memory, reads of
    /// untouched pages see the shared zero page).
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl OwnedRange {
    /// `mprotect` of `[addr, addr + len)`, a part of this range.
    pub(crate) fn protect(&self, addr: u64, len: u64, access: Access) -> Result<(), Errno> {
        self.check_sub(addr, len)?;
        let prot = match access {
            Access::None => rustix::mm::MprotectFlags::empty(),
            Access::Read => rustix::mm::MprotectFlags::READ,
            Access::ReadWrite => rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE,
        };
        // SAFETY: the range is inside this OwnedRange (checked above), which
        // svmap mapped and hands out only as raw addresses: no Rust reference
        // into it exists whose validity a protection change could break.
        unsafe { rustix::mm::mprotect(addr as usize as *mut c_void, len as usize, prot) }?;
        Ok(())
    }

    /// Gives up ownership without unmapping: the range stays mapped and
    /// svmap no longer acts on it (the CPU lost it by other means).
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for OwnedRange {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by svmap (see the type's invariant) and
        // is handed out only as raw pointers; unmapping it cannot invalidate a
        // Rust reference.
        let r = unsafe { rustix::mm::munmap(self.addr as usize as *mut c_void, self.len as usize) };
        if r.is_err() {
            // munmap fails only with ENOMEM here: the range merged with an
            // identical neighbour and removing it needs a VMA split that
            // vm.max_map_count forbids. A destructor cannot report it, so
            // give the memory back and keep the addresses: they stay
            // mapped (leaked address space, not leaked memory).
            // SAFETY: as above; MADV_DONTNEED only drops the pages of this
            // range, which svmap owns and hands out as raw pointers only.
            let _ = unsafe {
                rustix::mm::madvise(
                    self.addr as usize as *mut c_void,
                    self.len as usize,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
        }
    }
}

/// A memfd of exactly `len_bytes` bytes, close-on-exec, sealed with
/// `F_SEAL_SHRINK | F_SEAL_GROW` after sizing, so that no holder (this
/// process or a peer it is passed to) can truncate it under a mapping (which
/// would make accesses fault with SIGBUS) or grow it.
pub fn memfd_sealed(name: &CStr, len_bytes: u64) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    // ftruncate takes a signed `off_t`: larger sizes are EINVAL.
    if i64::try_from(len_bytes).is_err() {
        return Err(Errno::EINVAL);
    }
    rustix::fs::ftruncate(&fd, len_bytes)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
    Ok(fd)
}

/// The seals of a file descriptor (`F_GET_SEALS`), as the `F_SEAL_*` bits.
pub fn get_seals(fd: BorrowedFd<'_>) -> Result<i32, Errno> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits() as i32)
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
    // number that is not open answers EBADF. (libc, not rustix: see the
    // module header.)
    let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if fl < 0 {
        return Err(Errno::last());
    }
    match fl & libc::O_ACCMODE {
        libc::O_WRONLY | libc::O_RDWR => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// `pidfd_open(pid, 0)`. A pid that is not positive as a `pid_t` is
/// `EINVAL`, as the kernel answers for it.
pub(crate) fn pidfd_open(pid: u32) -> Result<OwnedFd, Errno> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(Errno::EINVAL)?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// True if the process behind a pidfd has exited (the pidfd polls readable
/// once it has, zombie or reaped).
pub(crate) fn pidfd_exited(fd: BorrowedFd<'_>) -> bool {
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let r = rustix::event::poll(&mut p, Some(&zero));
    matches!(r, Ok(n) if n > 0) && p[0].revents().contains(PollFlags::IN)
}

/// `RLIMIT_STACK` soft limit in bytes; `None` if unlimited.
pub fn stack_rlimit() -> Option<u64> {
    rustix::process::getrlimit(Resource::Stack).current
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

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
