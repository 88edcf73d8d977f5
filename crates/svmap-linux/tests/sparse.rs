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

/// The test moves 4 GiB through shmem; the defaults of `vm.max_map_count`
/// (65530) and `RLIMIT_NOFILE` would stop the per-buffer-memfd heap at
/// about 65,000 buffers.
#[test]
#[allow(unsafe_code)]
fn a_million_live_buffers_in_one_vma_and_one_descriptor() {
    const N: u64 = 1_000_000;
    let (vmas0, fds0, shmem0) = (vma_count(), fd_count(), rss_shmem_kib());
    let mut h = heap(N * PAGE + 16 * PAGE, false);
    let mut addrs = Vec::with_capacity(N as usize);
    for i in 0..N {
        let a = h.alloc(PAGE, PAGE).unwrap();
        // SAFETY: `a` starts a live read-write 4 KiB buffer of the heap
        // that nothing else refers to.
        unsafe { (a as *mut u64).write(i ^ 0x5a5a_5a5a) };
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
    assert!(
        peak >= shmem0 + N * 4 * 99 / 100,
        "RssShmem {shmem0} -> {peak} KiB for {N} touched pages"
    );
    // Contents through the memfd at each buffer's offset.
    for &i in &[0u64, 1, 4095, 500_000, N - 1] {
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
