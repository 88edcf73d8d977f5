//! Probes, window reservations and the SVM heap against the running kernel.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use svmap_linux::error::Error;
use svmap_linux::heap::Heap;
use svmap_linux::maps::{self, Kind, Target};
use svmap_linux::probe;
use svmap_linux::reserve::{Reservation, ReserveRequest};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const LIMIT40: u64 = 1 << 40;

fn self_view() -> maps::View {
    // Other test threads map and unmap meanwhile: re-read on a torn view.
    for _ in 0..10 {
        if let Ok(v) = maps::read_view(Target::SelfProcess) {
            return v;
        }
    }
    panic!("no consistent view of /proc/self/smaps")
}

fn req(low: u64, high: u64, len: u64, min_len: u64, topdown: bool) -> ReserveRequest {
    ReserveRequest {
        low,
        high,
        len,
        min_len,
        align: PAGE,
        topdown,
        max_tries: 16,
    }
}

#[test]
fn probes() {
    let p = probe::probe().unwrap();
    let sysctl = probe::sysctl_mmap_min_addr().unwrap();
    assert!(p.mmap_min_addr >= sysctl.max(PAGE), "{p:?}");
    assert_eq!(p.mmap_min_addr % PAGE, 0);
    eprintln!("probe: {p:?}");
    if !p.cpu_la57 {
        assert_eq!(p.user_va_bits, 47);
        assert_eq!(p.task_size, (1 << 47) - PAGE);
    }
    // The probe leaves nothing behind.
    let v = self_view();
    assert!(v.map.vma_at(p.mmap_min_addr).is_none());
}

#[test]
fn reserve_below_40_bits_and_drop() {
    let r = Reservation::reserve(&ReserveRequest::below_bits(40, 64 * MIB).unwrap()).unwrap();
    assert!(r.end() <= LIMIT40 && r.addr() >= probe::mmap_floor().unwrap());
    assert_eq!(r.len(), 64 * MIB);
    assert!(!r.is_partial());
    let v = self_view();
    let e = v.entry_at(r.addr()).unwrap();
    assert!(e.start <= r.addr() && e.end >= r.end() && !e.perms.read && !e.perms.write);
    let (a, l) = (r.addr(), r.len());
    drop(r);
    let v = self_view();
    assert!(
        v.map.first_overlap(a, a + l).is_none(),
        "not unmapped on drop"
    );
}

#[test]
fn guard_gap_below_the_stack_is_respected() {
    let v = self_view();
    let stack = v
        .entries
        .iter()
        .find(|e| e.kind() == Kind::Stack)
        .unwrap()
        .clone();
    assert!(stack.growsdown);
    let below = v.map.prev_vma(stack.start).unwrap();
    let high = stack.start;
    let low = high - MIB - 256 * 1024;
    assert!(
        below.end <= low,
        "the stack's neighbour is too close for this test"
    );
    // 256 KiB fits exactly below the 1 MiB guard gap...
    let r = Reservation::reserve(&req(low, high, 256 * 1024, 256 * 1024, true)).unwrap();
    assert_eq!((r.addr(), r.end()), (low, high - MIB));
    drop(r);
    // ...512 KiB does not, although MAP_FIXED_NOREPLACE would take it.
    match Reservation::reserve(&req(low, high, 512 * 1024, 512 * 1024, true)) {
        Err(Error::WindowFull { largest_free, .. }) => assert_eq!(largest_free, 256 * 1024),
        other => panic!("{other:?}"),
    }
}

#[test]
fn full_window_and_partial_fallback() {
    let a = Reservation::reserve(&ReserveRequest::below_bits(40, 4 * MIB).unwrap()).unwrap();
    // The window is exactly the reservation: full.
    match Reservation::reserve(&req(a.addr(), a.end(), MIB, PAGE, false)) {
        Err(Error::WindowFull {
            largest_free: 0, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Punch a 2 MiB hole in the middle: the 4 MiB request falls back to it.
    let base = a.addr();
    drop(a);
    let _b = Reservation::at(base, MIB).unwrap();
    let _c = Reservation::at(base + 3 * MIB, MIB).unwrap();
    let r = Reservation::reserve(&req(base, base + 4 * MIB, 4 * MIB, MIB, false)).unwrap();
    assert!(r.is_partial());
    assert_eq!(
        (r.addr(), r.len(), r.requested()),
        (base + MIB, 2 * MIB, 4 * MIB)
    );
    // Below the minimum: full.
    drop(r);
    assert!(matches!(
        Reservation::reserve(&req(base, base + 4 * MIB, 4 * MIB, 3 * MIB, false)),
        Err(Error::WindowFull { largest_free, .. }) if largest_free == 2 * MIB
    ));
    // Exact reservation over something: EEXIST, nothing replaced.
    match Reservation::at(base, PAGE) {
        Err(Error::Sys { errno, .. }) => assert_eq!(errno, svmap_linux::error::Errno::EEXIST),
        other => panic!("{other:?}"),
    }
}

fn fill(p: NonNull<u8>, len: u64, seed: u8) {
    let s = heap_slice(p, len);
    for (i, b) in s.iter_mut().enumerate().step_by(512) {
        *b = seed.wrapping_add((i / 512) as u8);
    }
}

fn check(p: NonNull<u8>, len: u64, seed: u8) -> bool {
    let s = heap_slice(p, len);
    s.iter()
        .enumerate()
        .step_by(512)
        .all(|(i, &b)| b == seed.wrapping_add((i / 512) as u8))
}

#[allow(unsafe_code)]
fn heap_slice<'a>(p: NonNull<u8>, len: u64) -> &'a mut [u8] {
    // SAFETY: `p` is a live heap allocation of at least `len` bytes, mapped
    // read-write, and each test uses one slice of it at a time.
    unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len as usize) }
}

#[test]
fn stale_view_loses_the_race_and_retries_without_touching_the_canary() {
    let stale = self_view();
    let r = Reservation::reserve(&ReserveRequest::below_bits(40, 8 * MIB).unwrap()).unwrap();
    let base = r.addr();
    // The canary: a buffer filled with a pattern where the stale view says
    // "free".
    let mut heap = Heap::new(r);
    let canary = heap.alloc(8 * MIB, PAGE).unwrap();
    assert_eq!(canary.as_ptr() as u64, base);
    fill(canary, 8 * MIB, 7);
    let params = svmap_core::SearchParams {
        mmap_min_addr: probe::mmap_floor().unwrap(),
        ..Default::default()
    };
    let mut calls = 0;
    let got = Reservation::reserve_with(
        &req(base, base + 64 * MIB, 4 * MIB, 4 * MIB, false),
        &params,
        || {
            calls += 1;
            if calls == 1 {
                Ok(stale.clone())
            } else {
                maps::read_view(Target::SelfProcess)
            }
        },
    )
    .unwrap();
    assert_eq!(got.tries(), 2);
    assert!(got.addr() >= base + 8 * MIB);
    assert!(check(canary, 8 * MIB, 7), "the canary was overwritten");
}

#[test]
fn concurrent_mapper_thread_and_canaries() {
    let stop = Arc::new(AtomicBool::new(false));
    let mapped = Arc::new(AtomicU64::new(0));
    let t = {
        let (stop, mapped) = (stop.clone(), mapped.clone());
        std::thread::spawn(move || {
            // Allocations above glibc's largest mmap threshold (32 MiB) are
            // always fresh mmaps placed by the kernel, top-down.
            let mut live: Vec<(Vec<u8>, u8)> = Vec::new();
            let mut seed = 0u8;
            while !stop.load(Ordering::Relaxed) {
                seed = seed.wrapping_add(1);
                let len = 33 * MIB as usize + (seed as usize % 8) * PAGE as usize;
                let mut v = vec![0u8; len];
                for (i, b) in v.iter_mut().enumerate().step_by(PAGE as usize * 16) {
                    *b = seed ^ (i / 4096) as u8;
                }
                live.push((v, seed));
                mapped.fetch_add(1, Ordering::Relaxed);
                if live.len() > 4 {
                    let (v, s) = live.remove(0);
                    for (i, &b) in v.iter().enumerate().step_by(PAGE as usize * 16) {
                        assert_eq!(b, s ^ (i / 4096) as u8, "canary changed");
                    }
                }
            }
            for (v, s) in live {
                for (i, &b) in v.iter().enumerate().step_by(PAGE as usize * 16) {
                    assert_eq!(b, s ^ (i / 4096) as u8, "canary changed");
                }
            }
        })
    };
    let start = Instant::now();
    let mut races = 0;
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        // Where the kernel places big mappings right now.
        let probe_vec = vec![0u8; 33 * MIB as usize];
        let x = probe_vec.as_ptr() as u64 & !(MIB - 1);
        drop(probe_vec);
        let r = Reservation::reserve(&req(x - 512 * MIB, x + 64 * MIB, 16 * MIB, 16 * MIB, true))
            .unwrap();
        races += r.tries() - 1;
        n += 1;
        assert!(r.addr() >= x - 512 * MIB && r.end() <= x + 64 * MIB);
    }
    stop.store(true, Ordering::Relaxed);
    t.join().expect("the canary thread found a changed canary");
    eprintln!(
        "{n} reservations next to {} concurrent 33 MiB mappings; {races} lost races retried",
        mapped.load(Ordering::Relaxed)
    );
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn heap_alloc_free_returns_memory() {
    let mut heap = Heap::below_bits(40, 1 << 30).unwrap();
    let res = (heap.reservation().addr(), heap.reservation().end());
    assert!(res.1 <= LIMIT40);
    let mut ptrs = Vec::new();
    for (i, &(len, align)) in [(1, 1), (5000, 8), (3 * MIB, 2 * MIB), (PAGE, 1 << 16)]
        .iter()
        .enumerate()
    {
        let p = heap.alloc(len, align).unwrap();
        let a = p.as_ptr() as u64;
        assert!(a >= res.0 && a + len <= res.1 && a.is_multiple_of(align.max(PAGE)));
        fill(p, len.max(PAGE), i as u8);
        let seals = svmap_linux::sys::get_seals(heap.memfd(p).unwrap()).unwrap();
        assert_eq!(
            seals & (0x0002 | 0x0004),
            0x0002 | 0x0004,
            "F_SEAL_SHRINK|F_SEAL_GROW"
        );
        ptrs.push((p, len, i as u8));
    }
    for &(p, len, s) in &ptrs {
        assert!(check(p, len.max(PAGE), s));
    }
    // 64 MiB touched: shmem goes up, and down again on free.
    let before = status_kib("RssShmem:");
    let big = heap.alloc(64 * MIB, PAGE).unwrap();
    heap_slice(big, 64 * MIB).fill(0xa5);
    let during = status_kib("RssShmem:");
    heap.free(big).unwrap();
    let after = status_kib("RssShmem:");
    eprintln!("RssShmem kB: before {before}, with 64 MiB {during}, after free {after}");
    assert!(during >= before + 60 * 1024);
    assert!(during - after >= 60 * 1024, "memory not returned");
    // The freed range stays reserved (PROT_NONE), and is reused.
    let v = self_view();
    let e = v
        .entry_at(big.as_ptr() as u64)
        .expect("range still reserved");
    assert!(!e.perms.read && !e.perms.write && e.kind() == Kind::Anonymous);
    let again = heap.alloc(64 * MIB, PAGE).unwrap();
    assert_eq!(again, big);
    // Errors.
    assert!(matches!(
        heap.free(NonNull::new(8 as *mut u8).unwrap()),
        Err(Error::NotAllocated { addr: 8 })
    ));
    assert!(matches!(
        heap.alloc(2 << 30, PAGE),
        Err(Error::HeapFull { .. })
    ));
    assert!(matches!(
        heap.alloc(0, PAGE),
        Err(Error::InvalidArgument { .. })
    ));
    for (p, _, _) in ptrs {
        heap.free(p).unwrap();
    }
    assert_eq!(heap.live(), 1);
}

/// Run in a child by `map_count_limit_is_a_clear_error`.
#[test]
fn child_fills_the_map_count() {
    if std::env::var_os("SVMAP_TEST_FILL_MAPS").is_none() {
        return;
    }
    let max = probe::max_map_count().unwrap();
    let mut heap = Heap::below_bits(40, 64 * MIB).unwrap();
    let area =
        Reservation::reserve(&ReserveRequest::below_bits(40, (max + 1024) * 2 * PAGE).unwrap())
            .unwrap();
    let base = area.addr();
    drop(area);
    let mut held = Vec::new();
    let err = loop {
        match Reservation::at(base + held.len() as u64 * 2 * PAGE, PAGE) {
            Ok(r) => held.push(r),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::MapCountLimit { .. }), "{err}");
    println!("reservation: {err}");
    held.truncate(held.len() - 2);
    let mut n = 0;
    let err = loop {
        match heap.alloc(PAGE, PAGE) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::MapCountLimit { .. }), "{err}");
    assert!(err.to_string().contains("vm.max_map_count"));
    println!(
        "SVMAP-CHILD-OK after {} reservations and {n} buffers: {err}",
        held.len()
    );
}

#[test]
fn map_count_limit_is_a_clear_error() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fills_the_map_count",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SVMAP_TEST_FILL_MAPS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SVMAP-CHILD-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for l in stdout
        .lines()
        .filter(|l| l.contains("SVMAP-CHILD-OK") || l.starts_with("reservation:"))
    {
        eprintln!("{l}");
    }
}
