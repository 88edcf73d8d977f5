//! The sparse shared heap on this process: a million live 4 KiB buffers
//! in one VMA and one descriptor, their memory back after the frees, their
//! contents visible through the memfd at their offsets; guarded mode.

use svmap_linux::reserve::{Reservation, ReserveRequest};
use svmap_linux::sparse::SparseHeap;

const PAGE: u64 = 4096;

fn vma_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_shmem_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("RssShmem:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The number of VMAs of `/proc/self/maps` that overlap `[start, end)`.
fn vmas_in(start: u64, end: u64) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| {
            let (s, e) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            let (s, e) = (
                u64::from_str_radix(s, 16).unwrap(),
                u64::from_str_radix(e, 16).unwrap(),
            );
            s < end && start < e
        })
        .count()
}

/// The permissions of the VMA of `/proc/self/maps` that contains `addr`.
fn perms_at(addr: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let range = f.next().unwrap();
        let (s, e) = range.split_once('-').unwrap();
        let (s, e) = (
            u64::from_str_radix(s, 16).unwrap(),
            u64::from_str_radix(e, 16).unwrap(),
        );
        if s <= addr && addr < e {
            return f.next().unwrap().to_owned();
        }
    }
    panic!("{addr:#x} is not mapped");
}

fn heap(len: u64, guarded: bool) -> SparseHeap {
    let res = Reservation::reserve(&ReserveRequest::below_bits(47, len).unwrap()).unwrap();
    SparseHeap::new(res, guarded).unwrap()
}

fn read_at(fd: std::os::fd::BorrowedFd<'_>, off: u64) -> u64 {
    let mut b = [0u8; 8];
    let n = rustix::io::pread(fd, &mut b, off).unwrap();
    assert_eq!(n, 8);
    u64::from_ne_bytes(b)
}

/// The defaults of `vm.max_map_count` (65530) and `RLIMIT_NOFILE` would
/// stop the per-buffer-memfd heap at about 65,000 buffers. Every 16th
/// buffer is written (250 MiB of shmem, not 4 GiB, so that the test stays
/// light beside the other tests of a loaded machine).
#[test]
#[allow(unsafe_code)]
fn a_million_live_buffers_in_one_vma_and_one_descriptor() {
    const N: u64 = 1_000_000;
    const TOUCH_EVERY: u64 = 16;
    let (vmas0, fds0, shmem0) = (vma_count(), fd_count(), rss_shmem_kib());
    let mut h = heap(N * PAGE + 16 * PAGE, false);
    let mut addrs = Vec::with_capacity(N as usize);
    for i in 0..N {
        let a = h.alloc(PAGE, PAGE).unwrap();
        if i % TOUCH_EVERY == 0 {
            // SAFETY: `a` starts a live read-write 4 KiB buffer of the heap
            // that nothing else refers to.
            unsafe { (a as *mut u64).write(i ^ 0x5a5a_5a5a) };
        }
        addrs.push(a);
    }
    assert_eq!(h.live(), N as usize);
    assert_eq!(h.live_bytes(), N * PAGE);
    // The heap is one VMA; the process gained a handful of VMAs and
    // descriptors (this heap, and the other tests of this binary running
    // in parallel threads), not one per buffer.
    assert_eq!(vmas_in(h.start(), h.end()), 1);
    let vmas = vma_count();
    assert!(
        vmas <= vmas0 + 32,
        "{vmas0} VMAs before, {vmas} with the heap"
    );
    let fds = fd_count();
    assert!(
        fds <= fds0 + 4,
        "{fds0} descriptors before, {fds} with the heap"
    );
    let peak = rss_shmem_kib();
    let touched = N / TOUCH_EVERY;
    assert!(
        peak >= shmem0 + touched * 4 * 99 / 100,
        "RssShmem {shmem0} -> {peak} KiB for {touched} touched pages"
    );
    // Contents through the memfd at each buffer's offset.
    for &i in &[0u64, TOUCH_EVERY, 4096, 500_000, N - TOUCH_EVERY] {
        let a = addrs[i as usize];
        let (fd, off, len) = h.locate(a).unwrap();
        assert_eq!((off, len), (a - h.start(), PAGE));
        assert_eq!(read_at(fd, off), i ^ 0x5a5a_5a5a);
    }
    for &a in &addrs {
        assert_eq!(h.free(a).unwrap(), PAGE);
    }
    assert_eq!(h.live(), 0);
    let after = rss_shmem_kib();
    assert!(
        after <= shmem0 + (peak - shmem0) / 100,
        "RssShmem {shmem0} KiB before, {peak} at the peak, {after} after freeing all"
    );
    // A freed and reused buffer reads zeros (its pages were punched out).
    let a = h.alloc(PAGE, PAGE).unwrap();
    assert_eq!(a, addrs[0]);
    // SAFETY: a live read-write buffer of the heap.
    assert_eq!(unsafe { (a as *const u64).read() }, 0);
}

#[test]
fn errors_are_typed() {
    let mut h = heap(64 * PAGE, false);
    assert!(matches!(
        h.alloc(0, PAGE),
        Err(svmap_linux::error::Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        h.alloc(PAGE, 3),
        Err(svmap_linux::error::Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        h.alloc(65 * PAGE, PAGE),
        Err(svmap_linux::error::Error::HeapFull { .. })
    ));
    let a = h.alloc(3 * PAGE, PAGE).unwrap();
    assert!(matches!(
        h.free(a + PAGE),
        Err(svmap_linux::error::Error::NotAllocated { .. })
    ));
    assert!(matches!(
        h.claim(a + PAGE, PAGE),
        Err(svmap_linux::error::Error::HeapFull { .. })
    ));
    assert!(matches!(
        h.claim(h.end(), PAGE),
        Err(svmap_linux::error::Error::InvalidArgument { .. })
    ));
    h.claim(a + 3 * PAGE, PAGE).unwrap();
    assert_eq!(h.live(), 2);
    assert_eq!(h.free(a).unwrap(), 3 * PAGE);
    assert_eq!(h.live_bytes(), PAGE);
}

/// Guarded mode: free ranges are PROT_NONE, live ones read-write; the
/// unguarded heap is read-write everywhere (one VMA).
#[test]
#[allow(unsafe_code)]
fn guarded_mode_makes_freed_ranges_inaccessible() {
    let mut h = heap(64 * PAGE, true);
    assert_eq!(perms_at(h.start() + PAGE), "---s");
    let a = h.alloc(2 * PAGE, PAGE).unwrap();
    let b = h.alloc(PAGE, PAGE).unwrap();
    assert_eq!(perms_at(a), "rw-s");
    // SAFETY: live read-write buffer.
    unsafe { (b as *mut u8).write(7) };
    h.free(a).unwrap();
    assert_eq!(perms_at(a), "---s");
    assert_eq!(perms_at(b), "rw-s");
    let (fd, off, _) = h.locate(b).unwrap();
    assert_eq!(read_at(fd, off) & 0xff, 7);

    let mut u = heap(16 * PAGE, false);
    let c = u.alloc(PAGE, PAGE).unwrap();
    u.free(c).unwrap();
    assert_eq!(perms_at(c), "rw-s");
}

fn write_word(a: u64, v: u64) {
    #[allow(unsafe_code)]
    // SAFETY: `a` is inside a live read-write buffer of a test heap.
    unsafe {
        (a as *mut u64).write_volatile(v)
    };
}

fn read_word(a: u64) -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: `a` is inside a read-write range of a test heap (unguarded).
    unsafe {
        (a as *const u64).read_volatile()
    }
}

/// Frees join the punch batch (no system call); adjacent ones coalesce
/// into one punch; a flush punches them all and their bytes read zeros
/// through the memfd.
#[test]
fn frees_are_batched_coalesced_and_flushed() {
    let mut h = heap(64 * PAGE, false);
    h.set_punch_batch(1 << 20).unwrap();
    let bufs: Vec<u64> = (0..8).map(|_| h.alloc(PAGE, PAGE).unwrap()).collect();
    for (i, &a) in bufs.iter().enumerate() {
        write_word(a, 0x1000 + i as u64);
    }
    let calls0 = h.syscalls();
    // Every other buffer, then the rest: the last frees join the runs.
    for &a in bufs.iter().step_by(2).chain(bufs.iter().skip(1).step_by(2)) {
        h.free(a).unwrap();
    }
    assert_eq!(h.syscalls(), calls0, "a free below the bound makes no call");
    assert_eq!(h.pending_bytes(), 8 * PAGE);
    // Not punched yet: the file still holds the old words.
    let (fd, start) = (h.fd(), h.start());
    assert_eq!(read_at(fd, bufs[3] - start), 0x1003);
    h.flush().unwrap();
    assert_eq!(h.pending_bytes(), 0);
    assert_eq!(h.syscalls(), calls0 + 1, "eight adjacent frees, one punch");
    for &a in &bufs {
        assert_eq!(read_at(h.fd(), a - h.start()), 0, "{a:#x} punched");
    }
}

/// A range reused while its pages are still pending is punched first: a
/// new buffer reads zeros; the pending run it overlaps is punched whole
/// (one call), a run it does not overlap stays pending.
#[test]
fn a_reused_pending_range_reads_zeros() {
    let mut h = heap(64 * PAGE, false);
    h.set_punch_batch(1 << 20).unwrap();
    let a = h.alloc(4 * PAGE, PAGE).unwrap();
    let keep = h.alloc(PAGE, PAGE).unwrap();
    let far = h.alloc(2 * PAGE, PAGE).unwrap();
    for p in 0..4 {
        write_word(a + p * PAGE, 0xdead_0000 + p);
    }
    write_word(far, 0xfa);
    h.free(a).unwrap();
    h.free(far).unwrap();
    assert_eq!(h.pending_bytes(), 6 * PAGE);
    let calls = h.syscalls();
    // Lowest fit: the first two pages of the first freed range.
    let b = h.alloc(2 * PAGE, PAGE).unwrap();
    assert_eq!(b, a);
    assert_eq!((read_word(b), read_word(b + PAGE)), (0, 0));
    // Its run was punched whole, in one call; the other run still pending
    // and still holding its word in the file.
    assert_eq!(h.syscalls(), calls + 1);
    assert_eq!(h.pending_bytes(), 2 * PAGE);
    assert_eq!(read_at(h.fd(), a + 3 * PAGE - h.start()), 0);
    assert_eq!(read_at(h.fd(), far - h.start()), 0xfa);
    // A claim at an exact address inside the other run.
    h.claim(far + PAGE, PAGE).unwrap();
    assert_eq!(read_word(far + PAGE), 0);
    assert_eq!(read_at(h.fd(), far - h.start()), 0);
    assert_eq!((h.pending_bytes(), h.syscalls()), (0, calls + 2));
    assert_eq!(h.live(), 3, "{keep:#x} and the two new buffers");
}

/// Whatever the frees, the bytes not yet punched never exceed the bound,
/// and with a bound of 0 every free is punched at once.
#[test]
fn pending_bytes_never_exceed_the_bound() {
    const BOUND: u64 = 24 * PAGE;
    let mut h = heap(4096 * PAGE, false);
    h.set_punch_batch(BOUND).unwrap();
    assert_eq!(h.punch_batch(), BOUND);
    let mut rng = 0x1234_5678_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<u64> = Vec::new();
    let mut freed: Vec<u64> = Vec::new();
    let mut peak = 0u64;
    for _ in 0..3000 {
        if live.is_empty() || (next() % 3 != 0 && live.len() < 200) {
            let len = (1 + next() % 16) * PAGE;
            let a = h.alloc(len, PAGE).unwrap();
            write_word(a, a);
            live.push(a);
        } else {
            let i = (next() % live.len() as u64) as usize;
            let a = live.swap_remove(i);
            h.free(a).unwrap();
            freed.push(a);
        }
        peak = peak.max(h.pending_bytes());
        assert!(h.pending_bytes() <= BOUND, "{} pending", h.pending_bytes());
    }
    assert!(peak > 0, "the batch was used");
    // Every live buffer still holds its word (no punch touched it).
    for &a in &live {
        assert_eq!(read_word(a), a);
    }
    // After a flush every freed page that is free now reads zeros in the
    // file: nothing freed stays unpunched.
    h.flush().unwrap();
    assert_eq!(h.pending_bytes(), 0);
    let mut checked = 0;
    for &a in &freed {
        if h.locate(a).is_none() {
            assert_eq!(read_at(h.fd(), a - h.start()), 0, "{a:#x}");
            checked += 1;
        }
    }
    assert!(checked > 0);
    // Lowering the bound punches what is over it.
    h.set_punch_batch(0).unwrap();
    assert_eq!(h.pending_bytes(), 0);
    let a = live[0];
    let calls = h.syscalls();
    h.free(a).unwrap();
    assert_eq!((h.pending_bytes(), h.syscalls()), (0, calls + 1));
}
