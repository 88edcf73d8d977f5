//! userfaultfd on a shared memfd mapping: a missing-page fault on a punched
//! page reaches the handler and the thread resumes once the page is back; a
//! write-protected page holds a writer until the protection goes; with no
//! source allowed the error is typed. Where this machine refuses
//! userfaultfd (no privilege, a seccomp filter, an old kernel), the tests
//! that need it check that the refusal is the typed error of setup, print
//! "skipped" and return. A system call into a registered hole waits for
//! the handler or fails with `EFAULT`, by the descriptor's mode.
#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use svmap_linux::reserve::{Reservation, ReserveRequest};
use svmap_linux::uffd::{Sources, Uffd, UffdError};

const LEN: u64 = 0x10000;

fn mapping() -> (Reservation, std::os::fd::OwnedFd) {
    let mut res = Reservation::reserve(&ReserveRequest::below_bits(40, LEN).unwrap()).unwrap();
    let fd = svmap_linux::sys::memfd_sealed(c"uffd-test", LEN).unwrap();
    res.map_shared_fd(res.addr(), LEN, fd.as_fd()).unwrap();
    (res, fd)
}

/// A descriptor, or `None` (with a "skipped" note) where this machine
/// refuses userfaultfd; the refusal must be one of the typed setup errors.
fn open_or_skip() -> Option<Uffd> {
    match Uffd::open() {
        Ok(u) => Some(u),
        Err(e @ (UffdError::Unavailable { .. } | UffdError::MissingFeatures(_))) => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("userfaultfd setup failed with an unexpected error: {e}"),
    }
}

fn read(addr: u64) -> u64 {
    // SAFETY: the tests read only inside their own shared mapping.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

fn write(addr: u64, v: u64) {
    // SAFETY: as for `read`; no Rust reference points into the mapping.
    unsafe { std::ptr::write_volatile(addr as *mut u64, v) }
}

fn punch(fd: &std::os::fd::OwnedFd, off: u64, len: u64) {
    rustix::fs::fallocate(
        fd,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        off,
        len,
    )
    .unwrap();
}

#[test]
fn no_source_is_a_typed_error() {
    let e = Uffd::open_via(Sources {
        syscall: false,
        dev_node: false,
    })
    .unwrap_err();
    assert_eq!(
        e,
        UffdError::Unavailable {
            syscall: None,
            dev_node: None
        }
    );
    assert!(e.to_string().contains("not available"), "{e}");
    // Each source alone either gives a descriptor or an error that names
    // that source only (whether it is allowed depends on the machine).
    for (syscall, dev_node) in [(true, false), (false, true)] {
        match Uffd::open_via(Sources { syscall, dev_node }) {
            Ok(_) | Err(UffdError::MissingFeatures(_)) => {}
            Err(UffdError::Unavailable {
                syscall: s,
                dev_node: d,
            }) => {
                assert_eq!((s.is_some(), d.is_some()), (syscall, dev_node));
            }
            Err(e) => panic!("unexpected error from one source: {e}"),
        }
    }
}

#[test]
fn missing_fault_waits_for_the_handler() {
    let (res, fd) = mapping();
    let a = res.addr();
    write(a + 0x2000, 7);
    let Some(u) = open_or_skip() else { return };
    u.register(a, LEN).unwrap();
    punch(&fd, 0x2000, 0x1000);
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    let t = std::thread::spawn(move || s2.store(read(a + 0x2008) + 1, Ordering::SeqCst));
    let f = u
        .next_fault(Duration::from_secs(10))
        .unwrap()
        .expect("a fault");
    assert_eq!(f.addr & !0xfff, a + 0x2000);
    assert!(!f.write);
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the reader is blocked");
    // Put the page back through the descriptor (as a device would) and
    // let the reader go.
    let mut page = vec![0u8; 0x1000];
    page[8..16].copy_from_slice(&41u64.to_le_bytes());
    rustix::io::pwrite(&fd, &page, 0x2000).unwrap();
    u.unregister(a, LEN).unwrap();
    t.join().unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 42);
}

#[test]
fn write_protect_holds_writers_until_released() {
    let (res, _fd) = mapping();
    let a = res.addr();
    // One page touched by the CPU, one never touched (no page-table entry).
    write(a, 1);
    let Some(u) = open_or_skip() else { return };
    u.register(a, LEN).unwrap();
    u.write_protect(a, LEN, true).unwrap();
    let t0 = Instant::now();
    let t1 = std::thread::spawn(move || write(a, 2));
    let t2 = std::thread::spawn(move || write(a + 0x5000, 3));
    let mut faults = Vec::new();
    while faults.len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        if let Some(f) = u.next_fault(Duration::from_millis(100)).unwrap() {
            faults.push(f.addr & !0xfff);
        }
    }
    faults.sort();
    assert_eq!(faults, vec![a, a + 0x5000]);
    // Both writers are held: nothing changed. (The untouched page is a hole
    // of the memfd: reading it here would itself wait for a handler.)
    assert_eq!(read(a), 1);
    u.unregister(a, LEN).unwrap();
    t1.join().unwrap();
    t2.join().unwrap();
    assert_eq!((read(a), read(a + 0x5000)), (2, 3));
}

/// A `read(2)` into a punched, registered page: with a descriptor for
/// kernel faults too, the kernel's copy waits for the handler like a user
/// access; with one for user faults only, it fails with `EFAULT`.
#[test]
fn a_system_call_into_a_registered_hole_waits_or_fails_by_mode() {
    let (res, fd) = mapping();
    let a = res.addr();
    let Some(u) = open_or_skip() else { return };
    u.register(a, LEN).unwrap();
    punch(&fd, 0x3000, 0x1000);
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let v = 99u64.to_le_bytes();
    // SAFETY: a pipe with room for 8 bytes; `v` lives for the call.
    assert_eq!(unsafe { libc::write(fds[1], v.as_ptr().cast(), 8) }, 8);
    let rfd = fds[0];
    let t = std::thread::spawn(move || {
        // SAFETY: 8 bytes of this test's own shared mapping; no Rust
        // reference points there.
        let n = unsafe { libc::read(rfd, (a + 0x3000) as *mut libc::c_void, 8) };
        (n, std::io::Error::last_os_error().raw_os_error())
    });
    if u.user_mode_only() {
        let (n, errno) = t.join().unwrap();
        assert_eq!((n, errno), (-1, Some(libc::EFAULT)));
    } else {
        let f = u
            .next_fault(Duration::from_secs(10))
            .unwrap()
            .expect("the kernel's access faults");
        assert_eq!(f.addr & !0xfff, a + 0x3000);
        assert!(f.write);
        rustix::io::pwrite(&fd, &[0u8; 0x1000], 0x3000).unwrap();
        u.unregister(a, LEN).unwrap();
        assert_eq!(t.join().unwrap().0, 8);
        assert_eq!(read(a + 0x3000), 99);
    }
    // SAFETY: the pipe's descriptors, closed once.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}
