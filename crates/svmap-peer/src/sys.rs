//! The device peer's system calls: a `SOCK_SEQPACKET` socketpair with
//! descriptor passing (`SCM_RIGHTS`), the peer's shared window (memfds
//! mapped into its own reservation) and bounds-checked accesses to live SVM
//! buffers. The only module of this crate with `unsafe`; every block has
//! its reason in a `// SAFETY:` comment, and everything exported is safe.
//! Reservations and memfds come from `svmap_linux` (its `sys` module owns
//! those calls).
//!
//! Calls go through `rustix`. `libc` remains for one call only:
//!
//! - `getsockopt(raw, SOL_SOCKET, SO_TYPE)` in [`take_inherited_socket`]:
//!   the descriptor number comes from the environment and may not be open.
//!   rustix's calls take a `BorrowedFd`, whose contract is an open
//!   descriptor, so the first look at the number has to go through libc.
//!
//! (Errno constants such as `libc::EFAULT` are constants, not calls.)
#![allow(unsafe_code)]

use core::mem::MaybeUninit;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, SealFlags};
use rustix::io::FdFlags;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use svmap_linux::error::Errno;
use svmap_linux::heap::Heap;
use svmap_linux::reserve::Reservation;
use svmap_linux::sys::get_seals;

fn linux_errno(e: svmap_linux::error::Error) -> Errno {
    match e {
        svmap_linux::error::Error::Sys { errno, .. } => errno,
        _ => Errno(libc::ENOMEM),
    }
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: message boundaries
/// are kept, and neither end leaks into programs other threads start.
pub(crate) fn socketpair_seqpacket() -> Result<(OwnedFd, OwnedFd), Errno> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Makes `fd` (open in this process, number kept by `fork`) survive the
/// `exec` of `cmd`'s child only: the child clears `FD_CLOEXEC` on its own
/// copy between `fork` and `exec`. The caller keeps `fd` open until the
/// child has been spawned.
pub(crate) fn inherit_fd_in_child(cmd: &mut std::process::Command, fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    let clear_cloexec = move || -> std::io::Result<()> {
        // SAFETY: `raw` is open in the child because it is open in the parent
        // while `spawn` runs (the caller's contract), and it stays open until
        // exec, after this borrow ends.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec. It makes one
    // fcntl system call (async-signal-safe; rustix issues it directly) and
    // turns a failure into an io::Error from the raw errno, which does not
    // allocate.
    unsafe {
        cmd.pre_exec(clear_cloexec);
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
    // SAFETY: getsockopt writes at most `len` bytes into `ty`, an int; a
    // number that is not open answers EBADF. (libc, not rustix: see the
    // module header.)
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
    // SAFETY:
    // 1. `raw` is an open socket (checked above).
    // 2. The parent handed it to this process for the peer protocol alone,
    //    and the once-guard makes this the only OwnedFd ever created for it
    //    here.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    Ok(fd)
}

/// `poll` on one descriptor for `events`, waiting at most `timeout_ms`
/// (negative: forever). Returns the `revents` (empty on timeout or `EINTR`).
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout_ms: i32,
) -> Result<PollFlags, Errno> {
    let mut p = [PollFd::new(&fd, events)];
    let timeout = u64::try_from(timeout_ms).ok().map(|ms| Timespec {
        tv_sec: (ms / 1000) as i64,
        tv_nsec: ((ms % 1000) * 1_000_000) as i64,
    });
    match rustix::event::poll(&mut p, timeout.as_ref()) {
        Ok(0) | Err(rustix::io::Errno::INTR) => Ok(PollFlags::empty()),
        Ok(_) => Ok(p[0].revents()),
        Err(e) => Err(e.into()),
    }
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
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // The buffer has room for MAX_FDS descriptors, so the push cannot fail.
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::EINVAL);
    }
    Ok(rustix::net::sendmsg(
        fd,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?)
}

/// One received packet.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes stored in the buffer (0 with no truncation: end of stream).
    pub(crate) len: usize,
    /// The packet was longer than the buffer (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// The packet carried more than [`MAX_FDS`] descriptors: the kernel
    /// dropped some (`MSG_CTRUNC`) or the ones beyond [`MAX_FDS`] were
    /// closed here.
    pub(crate) truncated_fds: bool,
    /// The descriptors that came with it (close-on-exec), at most
    /// [`MAX_FDS`].
    pub(crate) fds: Vec<OwnedFd>,
}

/// Receives one packet into `buf`, non-blocking (`EAGAIN` if none is
/// queued), taking up to [`MAX_FDS`] passed descriptors with
/// `MSG_CMSG_CLOEXEC`.
pub(crate) fn recv_packet(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Received, Errno> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    // The buffer has room for MAX_FDS descriptors plus alignment slack, so
    // the kernel may install a few more than MAX_FDS: those are closed here
    // (dropped) and the packet counts as truncated, as with MSG_CTRUNC.
    let mut fds = Vec::new();
    let mut extra_fds = false;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            for f in rights {
                if fds.len() < MAX_FDS {
                    fds.push(f);
                } else {
                    extra_fds = true;
                }
            }
        }
    }
    Ok(Received {
        len: r.bytes,
        truncated: r.flags.contains(ReturnFlags::TRUNC),
        truncated_fds: extra_fds || r.flags.contains(ReturnFlags::CTRUNC),
        fds,
    })
}

/// Sends `SIGKILL` to this process (the peer's fault injection).
pub(crate) fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; this is not reached.
    std::process::abort()
}

/// The peer's view of its window: a [`Reservation`]
/// it owns and the memfd-backed buffers mapped into it. Every memory access
/// the device makes goes through [`SharedWindow::read_u64`] and friends,
/// which check that the bytes lie in a buffer mapped here (so an access can
/// never touch the `PROT_NONE` rest of the window or anything outside it).
#[derive(Debug)]
pub(crate) struct SharedWindow {
    res: Reservation,
    /// Mapped buffers: start -> length.
    live: std::collections::BTreeMap<u64, u64>,
    /// An attachment's memfd (mapped from offset 0 at the window's start),
    /// for migrations back into it.
    fd: Option<OwnedFd>,
}

impl SharedWindow {
    /// A window over a reservation, with nothing mapped yet.
    pub(crate) fn new(res: Reservation) -> SharedWindow {
        SharedWindow {
            res,
            live: std::collections::BTreeMap::new(),
            fd: None,
        }
    }

    /// A window over `[addr, addr + len)` reserved here now
    /// (`MAP_FIXED_NOREPLACE`) with all of it mapped from `fd`: the direct
    /// mode's attachment of one heap's memfd at the same address.
    pub(crate) fn attach(addr: u64, len: u64, fd: BorrowedFd<'_>) -> Result<SharedWindow, Errno> {
        let res = Reservation::at(addr, len).map_err(linux_errno)?;
        let mut w = SharedWindow::new(res);
        w.map_fd(addr, len, fd)?;
        w.fd = Some(
            fd.try_clone_to_owned()
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EBADF)))?,
        );
        Ok(w)
    }

    /// Whether this is an attachment (a heap's memfd, not private memory).
    pub(crate) fn is_attachment(&self) -> bool {
        self.fd.is_some()
    }

    /// Migration into the device: the attachment's `[addr, addr + len)`
    /// becomes memory private to this process holding the same bytes.
    pub(crate) fn privatize(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        if self.fd.is_none() || !self.inside(addr, len) {
            return Err(Errno::EINVAL);
        }
        self.res.privatize(addr, len)
    }

    /// Migration out of the device: writes the bytes of `[addr, addr +
    /// len)` into the memfd (unless `write_back` is false) and maps the
    /// memfd there again. On a range that was not privatized, the bytes
    /// written are the memfd's own: nothing changes.
    pub(crate) fn share_again(
        &mut self,
        addr: u64,
        len: u64,
        write_back: bool,
    ) -> Result<(), Errno> {
        let Some(fd) = &self.fd else {
            return Err(Errno::EINVAL);
        };
        if !self.inside(addr, len) {
            return Err(Errno::EINVAL);
        }
        let off = addr - self.res.addr();
        if write_back {
            // SAFETY: `[addr, addr + len)` lies inside one mapped buffer of
            // this window (checked), readable, reached only through raw
            // addresses; the slice lives only for the writes below, and the
            // only writer of private memory is this (single-threaded)
            // process.
            let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
            let mut done = 0usize;
            while done < bytes.len() {
                let n = rustix::io::pwrite(fd, &bytes[done..], off + done as u64)?;
                if n == 0 {
                    return Err(Errno(libc::EIO));
                }
                done += n;
            }
        }
        self.res.map_shared_fd_at(addr, len, fd.as_fd(), off)
    }

    /// A window over `[addr, addr + len)` reserved here now and made
    /// private read-write memory: a device-only region, memory that no
    /// other process sees.
    pub(crate) fn private(addr: u64, len: u64) -> Result<SharedWindow, Errno> {
        let mut res = Reservation::at(addr, len).map_err(linux_errno)?;
        res.protect(addr, len, svmap_linux::sys::Access::ReadWrite)?;
        let mut w = SharedWindow::new(res);
        w.live.insert(addr, len);
        Ok(w)
    }

    /// The reservation.
    pub(crate) fn reservation(&self) -> &Reservation {
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
        let st = rustix::fs::fstat(fd)?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || size < len {
            return Err(Errno::EINVAL);
        }
        // The size check above holds only if the sender cannot shrink the
        // file later: an unsealed file truncated under the mapping would
        // make the device's accesses die of SIGBUS. svmap's buffers are
        // sealed (`memfd_sealed`); anything else is refused.
        match get_seals(fd) {
            Ok(seals) if SealFlags::from_bits_retain(seals as u32).contains(SealFlags::SHRINK) => {}
            _ => return Err(Errno::EINVAL),
        }
        self.res.map_shared_fd(addr, len, fd)?;
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
        self.res.reset(addr, len)
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
        // (MAP_SHARED) by `map_fd`, or made private read-write memory by
        // `private`, and not reset since (only this window,
        // which owns the reservation, can reset it, and `unmap` takes the
        // buffer out of `live` first); the other process may
        // write it concurrently, so the read is volatile and a u64 has no
        // invalid values.
        Ok(unsafe { read_volatile_u64(addr) })
    }

    /// Copies `out.len()` bytes from `addr` into `out`.
    pub(crate) fn read_bytes(&self, addr: u64, out: &mut [u8]) -> Result<(), Errno> {
        if !self.inside(addr, out.len() as u64) {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: the source lies in one buffer mapped readable by `map_fd`
        // (or `private`) and not reset since (checked); `out` is a distinct Rust buffer (the
        // window is reached only through raw addresses, never a reference).
        // The other process may write the source concurrently: that is outside
        // Rust's memory model (another address space), and u8 has no invalid
        // values, so the worst outcome is a torn copy, as on real hardware.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` to `addr`.
    pub(crate) fn write_bytes(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.inside(addr, data.len() as u64) {
            return Err(Errno(libc::EFAULT));
        }
        // SAFETY: the destination lies in one buffer mapped readable and
        // writable by `map_fd` (or `private`) and not reset since (checked), which no Rust
        // reference points into; `data` is a distinct Rust buffer, so the two
        // do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        Ok(())
    }
}

/// # Safety
/// `[addr, addr + 8)` is mapped readable.
unsafe fn read_volatile_u64(addr: u64) -> u64 {
    if addr.is_multiple_of(8) {
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
    if addr.is_multiple_of(8) {
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
pub(crate) fn heap_read_u64(heap: &Heap, start: u64, addr: u64) -> Result<u64, Errno> {
    heap_check(heap, start, addr)?;
    // SAFETY: a live heap buffer is mapped readable and writable until
    // `Heap::free`, which needs `&mut Heap`; we hold `&Heap`, and a heap
    // never hands out its reservation mutably (only `&mut Reservation` can
    // remap it). The bytes are
    // inside it (checked) and only reached through raw addresses.
    Ok(unsafe { read_volatile_u64(addr) })
}

/// Writes the `u64` at `addr` inside the live heap buffer that starts at
/// `start`. `EFAULT` as for [`heap_read_u64`].
pub(crate) fn heap_write_u64(heap: &Heap, start: u64, addr: u64, v: u64) -> Result<(), Errno> {
    heap_check(heap, start, addr)?;
    // SAFETY: as in heap_read_u64; the buffer is writable.
    unsafe { write_volatile_u64(addr, v) };
    Ok(())
}

fn heap_check(heap: &Heap, start: u64, addr: u64) -> Result<(), Errno> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use svmap_linux::reserve::ReserveRequest;
    use svmap_linux::sys::{memfd_sealed, PAGE};

    /// Descriptors open in this process. Other tests run on other threads,
    /// so callers compare with a margin below the number of iterations.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn window(len: u64) -> SharedWindow {
        let req = ReserveRequest::below_bits(46, len).unwrap();
        SharedWindow::new(Reservation::reserve(&req).unwrap())
    }

    #[test]
    fn shared_window_bounds_checks_every_access() {
        let mut w = window(16 * PAGE);
        let base = w.reservation().addr();
        let fd = memfd_sealed(c"svmap-test", 2 * PAGE).unwrap();
        let buf = base + 4 * PAGE;
        w.map_fd(buf, 2 * PAGE, fd.as_fd()).unwrap();
        let end = buf + 2 * PAGE;
        // Inside: any alignment, up to the last 8 bytes.
        w.write_bytes(buf, &[1, 2, 3]).unwrap();
        assert_eq!(w.read_u64(buf).unwrap() & 0xff_ffff, 0x03_0201);
        assert_eq!(w.read_u64(end - 8).unwrap(), 0);
        assert_eq!(w.read_u64(buf + 1).unwrap(), 0x0302);
        let mut out = [0u8; 16];
        w.read_bytes(end - 16, &mut out).unwrap();
        // Crossing or outside the buffer, or wrapping: EFAULT.
        let efault = Err(Errno(libc::EFAULT));
        assert_eq!(w.read_u64(end - 7), efault);
        assert_eq!(w.read_u64(buf - 1), efault);
        assert_eq!(w.read_u64(base), efault);
        assert_eq!(w.read_u64(u64::MAX - 3), efault);
        assert_eq!(w.read_bytes(end - 15, &mut out), Err(Errno(libc::EFAULT)));
        assert_eq!(w.write_bytes(end, &[0]), Err(Errno(libc::EFAULT)));
        assert_eq!(w.write_bytes(buf - 1, &[0, 0]), Err(Errno(libc::EFAULT)));
        // Mapping outside the window, over a live buffer, or wrapping.
        assert_eq!(w.map_fd(base - PAGE, PAGE, fd.as_fd()), Err(Errno::EINVAL));
        assert_eq!(
            w.map_fd(w.reservation().end(), PAGE, fd.as_fd()),
            Err(Errno::EINVAL)
        );
        assert_eq!(w.map_fd(buf + PAGE, PAGE, fd.as_fd()), Err(Errno::EEXIST));
        assert_eq!(
            w.map_fd(u64::MAX - PAGE + 1, PAGE, fd.as_fd()),
            Err(Errno::EINVAL)
        );
        assert_eq!(w.map_fd(buf + 3 * PAGE, 0, fd.as_fd()), Err(Errno::EINVAL));
        // Longer than the file: it would SIGBUS past its end.
        assert_eq!(
            w.map_fd(base + 8 * PAGE, 3 * PAGE, fd.as_fd()),
            Err(Errno::EINVAL)
        );
        // After the unmap nothing is reachable, and a second unmap is refused.
        w.unmap(buf, 2 * PAGE).unwrap();
        assert_eq!(w.read_u64(buf), efault);
        assert_eq!(w.unmap(buf, 2 * PAGE), Err(Errno::EINVAL));
    }

    #[test]
    fn shared_window_refuses_files_that_can_shrink() {
        let mut w = window(4 * PAGE);
        let base = w.reservation().addr();
        // A memfd of the right size but without F_SEAL_SHRINK: the sender
        // could truncate it under the mapping.
        let unsealed =
            rustix::fs::memfd_create(c"unsealed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, PAGE).unwrap();
        assert_eq!(w.map_fd(base, PAGE, unsealed.as_fd()), Err(Errno::EINVAL));
        // Not a regular file at all.
        let (a, _b) = socketpair_seqpacket().unwrap();
        assert_eq!(w.map_fd(base, PAGE, a.as_fd()), Err(Errno::EINVAL));
        // The refused ranges stay reserved, and a sealed buffer maps fine.
        let sealed = memfd_sealed(c"sealed", PAGE).unwrap();
        w.map_fd(base, PAGE, sealed.as_fd()).unwrap();
    }

    #[test]
    fn received_descriptors_are_owned_and_closed() {
        let (a, b) = socketpair_seqpacket().unwrap();
        let f = memfd_sealed(c"passed", PAGE).unwrap();
        let before = open_fds();
        for _ in 0..64 {
            send_packet(a.as_fd(), b"x", &[f.as_fd(), f.as_fd()]).unwrap();
            let mut buf = [0u8; 4];
            let r = recv_packet(b.as_fd(), &mut buf).unwrap();
            assert_eq!(
                (r.len, r.fds.len(), r.truncated, r.truncated_fds),
                (1, 2, false, false)
            );
        }
        assert!(open_fds() < before + 32, "received descriptors leaked");
        let too_many = [f.as_fd(); MAX_FDS + 1];
        assert_eq!(send_packet(a.as_fd(), b"x", &too_many), Err(Errno::EINVAL));
    }

    #[test]
    fn descriptors_beyond_max_fds_are_closed_and_reported() {
        let (a, b) = socketpair_seqpacket().unwrap();
        let f = memfd_sealed(c"passed", PAGE).unwrap();
        let before = open_fds();
        for n in [MAX_FDS + 1, MAX_FDS + 2, 3 * MAX_FDS] {
            for _ in 0..16 {
                // send_packet refuses more than MAX_FDS: send them raw.
                let fds = vec![f.as_fd(); n];
                let mut space =
                    vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(n))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
                rustix::net::sendmsg(&a, &[IoSlice::new(b"x")], &mut control, SendFlags::empty())
                    .unwrap();
                let mut buf = [0u8; 4];
                let r = recv_packet(b.as_fd(), &mut buf).unwrap();
                assert_eq!(r.len, 1);
                assert!(r.truncated_fds, "{n} descriptors not reported");
                assert!(r.fds.len() <= MAX_FDS, "{} descriptors kept", r.fds.len());
            }
        }
        assert!(open_fds() < before + 32, "extra descriptors leaked");
    }
}
