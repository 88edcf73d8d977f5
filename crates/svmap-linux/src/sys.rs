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

// ---------------------------------------------------------------------------
// The device peer (`crate::peer`): a socketpair with descriptor passing, the
// peer's shared mappings, and accesses to live SVM buffers.
// ---------------------------------------------------------------------------

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: message boundaries
/// are kept, and neither end leaks into programs other threads start.
pub(crate) fn socketpair_seqpacket() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors through a valid pointer to
    // an array of two.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned these two descriptors; nothing else
    // owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes `fd` (open in this process, number kept by `fork`) survive the
/// `exec` of `cmd`'s child only: the child clears `FD_CLOEXEC` on its own
/// copy between `fork` and `exec`. The caller keeps `fd` open until the
/// child has been spawned.
pub(crate) fn inherit_fd_in_child(cmd: &mut std::process::Command, fd: BorrowedFd<'_>) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls fcntl (async-signal-safe) and builds an io::Error from errno,
    // which does not allocate. `raw` is open in the child because it is
    // open in the parent while `spawn` runs (the caller's contract).
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: fcntl on a descriptor number; no memory is involved.
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of the socket a parent passed as descriptor `raw` (the
/// peer's end of [`socketpair_seqpacket`]). Checks that it is an open
/// `SOCK_SEQPACKET` socket and sets `FD_CLOEXEC` on it again. Only one
/// descriptor can ever be taken per process, so the returned `OwnedFd` is
/// its only owner as long as nothing else in the process uses that number
/// (the parent passed it for this purpose alone).
pub(crate) fn take_inherited_socket(raw: i32) -> Result<OwnedFd, Errno> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if raw < 3 {
        return Err(Errno::EINVAL);
    }
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`, an int.
    let r = unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    if ty != libc::SOCK_SEQPACKET {
        return Err(Errno(libc::ENOTSOCK));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Errno(libc::EBUSY));
    }
    // SAFETY: fcntl on a descriptor number; no memory is involved.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(Errno::last());
    }
    // SAFETY: `raw` is an open socket (checked above) that the parent handed
    // to this process for the peer protocol alone; the once-guard makes this
    // the only OwnedFd ever created for it here.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `poll` on one descriptor for `events`, waiting at most `timeout_ms`
/// (negative: forever). Returns the `revents` (0 on timeout or `EINTR`).
pub(crate) fn poll_one(fd: BorrowedFd<'_>, events: i16, timeout_ms: i32) -> Result<i16, Errno> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = Errno::last();
        return if e.0 == libc::EINTR { Ok(0) } else { Err(e) };
    }
    Ok(if r == 0 { 0 } else { p.revents })
}

/// Most descriptors accepted in one received packet (more are closed and
/// reported as `truncated_fds`).
pub(crate) const MAX_FDS: usize = 4;

/// Sends one packet with `fds` attached (`SCM_RIGHTS`), non-blocking and
/// without `SIGPIPE` (`MSG_DONTWAIT | MSG_NOSIGNAL`). `EAGAIN` means the
/// socket buffer is full; `EPIPE` / `ECONNRESET` that the other end is gone.
pub(crate) fn send_packet(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, Errno> {
    if fds.len() > MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * std::mem::size_of::<libc::c_int>()) as u32;
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&cbuf));
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` zeroed, aligned bytes, room
        // for one cmsghdr with `payload` bytes of data; CMSG_FIRSTHDR returns
        // a pointer into that buffer (non-null since controllen >= a header)
        // and CMSG_DATA the start of its data, which has room for the fds.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
            for (i, f) in fds.iter().enumerate() {
                data.add(i).write_unaligned(f.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points to a valid iovec over `bytes` (only read by
    // sendmsg) and a valid control buffer that outlives the call.
    let r = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

/// One received packet.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes stored in the buffer (0 with no truncation: end of stream).
    pub(crate) len: usize,
    /// The packet was longer than the buffer (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// Descriptors were dropped by the kernel (`MSG_CTRUNC`).
    pub(crate) truncated_fds: bool,
    /// The descriptors that came with it (close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
}

/// Receives one packet into `buf`, non-blocking (`EAGAIN` if none is
/// queued), taking up to [`MAX_FDS`] passed descriptors with
/// `MSG_CMSG_CLOEXEC`.
pub(crate) fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Received, Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is arithmetic.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&cbuf));
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the iovec covers `buf` (writable, outlives the call) and the
    // control buffer has `space` writable bytes.
    let r = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR and
    // CMSG_NXTHDR walk only within it, and every SCM_RIGHTS payload holds
    // `(cmsg_len - CMSG_LEN(0)) / sizeof(int)` descriptors that the kernel
    // just installed in this process and that nothing else owns.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: r as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        truncated_fds: msg.msg_flags & libc::MSG_CTRUNC != 0,
        fds,
    })
}

/// Sends `SIGKILL` to this process (the peer's fault injection).
pub(crate) fn kill_self() -> ! {
    // SAFETY: kill and getpid have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this is not reached.
    std::process::abort()
}

/// The peer's view of its window: a [`Reservation`](crate::reserve::Reservation)
/// it owns and the memfd-backed buffers mapped into it. Every memory access
/// the device makes goes through [`SharedWindow::read_u64`] and friends,
/// which check that the bytes lie in a buffer mapped here (so an access can
/// never touch the `PROT_NONE` rest of the window or anything outside it).
#[derive(Debug)]
pub(crate) struct SharedWindow {
    res: crate::reserve::Reservation,
    /// Mapped buffers: start -> length.
    live: std::collections::BTreeMap<u64, u64>,
}

impl SharedWindow {
    /// A window over a reservation, with nothing mapped yet.
    pub(crate) fn new(res: crate::reserve::Reservation) -> SharedWindow {
        SharedWindow {
            res,
            live: std::collections::BTreeMap::new(),
        }
    }

    /// The reservation.
    pub(crate) fn reservation(&self) -> &crate::reserve::Reservation {
        &self.res
    }

    /// Maps `len` bytes of `fd` at `addr` (`MAP_SHARED | MAP_FIXED`, read and
    /// write) over this window's own reservation. `EINVAL` if the range is
    /// not inside the window or overlaps a mapped buffer; `EBADF`-like
    /// errors from `mmap` (and `EACCES`/`ENODEV` for a descriptor that
    /// cannot be mapped shared) pass through. A memfd shorter than `len`
    /// would SIGBUS on access: its size is checked with `fstat` first.
    pub(crate) fn map_fd(&mut self, addr: u64, len: u64, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        if len == 0 || addr.checked_add(len).is_none() {
            return Err(Errno::EINVAL);
        }
        if let Some((&s, &l)) = self.live.range(..addr + len).next_back() {
            if s + l > addr {
                return Err(Errno::EEXIST);
            }
        }
        // SAFETY: an all-zero stat is a valid value; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one stat through a valid pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Errno::last());
        }
        if (st.st_mode & libc::S_IFMT) != libc::S_IFREG || (st.st_size as u64) < len {
            return Err(Errno::EINVAL);
        }
        self.res.range().map_shared_fd(addr, len, fd)?;
        self.live.insert(addr, len);
        Ok(())
    }

    /// Puts the reservation's `PROT_NONE` back over the buffer at `addr`
    /// (start of a mapped buffer, length `len`).
    pub(crate) fn unmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        if self.live.get(&addr) != Some(&len) {
            return Err(Errno::EINVAL);
        }
        self.live.remove(&addr);
        self.res.range().reset(addr, len)
    }

    /// True if `[addr, addr + len)` lies inside one mapped buffer.
    fn inside(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.live
            .range(..=addr)
            .next_back()
            .is_some_and(|(&s, &l)| end <= s + l)
    }

    /// Reads the `u64` at `addr` (any alignment). `EFAULT` if the 8 bytes
    /// are not inside one mapped buffer.
    pub(crate) fn read_u64(&self, addr: u64) -> Result<u64, Errno> {
        if !self.inside(addr, 8) {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: the 8 bytes lie in a buffer mapped readable and writable
        // (MAP_SHARED) by `map_fd` and not reset since; the other process may
        // write it concurrently, so the read is volatile and a u64 has no
        // invalid values.
        Ok(unsafe { read_volatile_u64(addr) })
    }

    /// Copies `out.len()` bytes from `addr` into `out`.
    pub(crate) fn read_bytes(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        if !self.inside(addr, out.len() as u64) {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: the source lies in one mapped buffer (checked); `out` is a
        // distinct Rust buffer; u8 has no invalid values, so a concurrent
        // write by the other process yields some bytes, never an invalid value.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` to `addr`.
    pub(crate) fn write_bytes(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.inside(addr, data.len() as u64) {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: the destination lies in one writable mapped buffer (checked)
        // that no Rust reference points into; `data` is a distinct buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }
}

/// # Safety
/// `[addr, addr + 8)` is mapped readable.
unsafe fn read_volatile_u64(addr: u64) -> u64 {
    if addr % 8 == 0 {
        // SAFETY: aligned and readable (the caller's contract).
        unsafe { std::ptr::read_volatile(addr as *const u64) }
    } else {
        let mut b = [0u8; 8];
        for (i, x) in b.iter_mut().enumerate() {
            // SAFETY: inside the readable 8 bytes.
            *x = unsafe { std::ptr::read_volatile((addr + i as u64) as *const u8) };
        }
        u64::from_le_bytes(b)
    }
}

/// # Safety
/// `[addr, addr + 8)` is mapped writable and not borrowed by Rust code.
unsafe fn write_volatile_u64(addr: u64, v: u64) {
    if addr % 8 == 0 {
        // SAFETY: aligned and writable (the caller's contract).
        unsafe { std::ptr::write_volatile(addr as *mut u64, v) }
    } else {
        for (i, x) in v.to_le_bytes().iter().enumerate() {
            // SAFETY: inside the writable 8 bytes.
            unsafe { std::ptr::write_volatile((addr + i as u64) as *mut u8, *x) };
        }
    }
}

/// Reads the `u64` at `addr` inside the live heap buffer that starts at
/// `start`. `EFAULT` unless `[addr, addr + 8)` lies inside that buffer.
pub(crate) fn heap_read_u64(heap: &crate::heap::Heap, start: u64, addr: u64) -> Result<u64, Errno> {
    heap_check(heap, start, addr)?;
    // SAFETY: a live heap buffer is mapped readable and writable until
    // `Heap::free`, which needs `&mut Heap`; we hold `&Heap`. The bytes are
    // inside it (checked) and only reached through raw addresses.
    Ok(unsafe { read_volatile_u64(addr) })
}

/// Writes the `u64` at `addr` inside the live heap buffer that starts at
/// `start`. `EFAULT` as for [`heap_read_u64`].
pub(crate) fn heap_write_u64(
    heap: &crate::heap::Heap,
    start: u64,
    addr: u64,
    v: u64,
) -> Result<(), Errno> {
    heap_check(heap, start, addr)?;
    // SAFETY: as in heap_read_u64; the buffer is writable.
    unsafe { write_volatile_u64(addr, v) };
    Ok(())
}

fn heap_check(heap: &crate::heap::Heap, start: u64, addr: u64) -> Result<(), Errno> {
    let len = std::ptr::NonNull::new(start as *mut u8)
        .and_then(|p| heap.len_of(p))
        .ok_or(Errno(libc::EFAULT))?;
    let ok = addr >= start && addr.checked_add(8).is_some_and(|e| e <= start + len);
    if ok {
        Ok(())
    } else {
        Err(Errno(libc::EFAULT))
    }
}
