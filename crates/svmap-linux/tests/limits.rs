//! The causes of a failed reservation or allocation, each produced for
//! real and told apart: the address-space limit (`RLIMIT_AS`, in a child
//! started under `ulimit -v`), no room in the window, and a heap over a
//! reservation at address 0, which never hands out address 0. (The map
//! count limit is produced in a child by `reserve_heap.rs`.)

use std::process::Command;
use std::ptr::NonNull;

use svmap_linux::error::{Errno, Error};
use svmap_linux::heap::Heap;
use svmap_linux::reserve::{self, Reservation, ReserveRequest};

const PAGE: u64 = 4096;
const GIB: u64 = 1 << 30;
/// The child's `ulimit -v`, in KiB: 4 GiB, far above what the test
/// process maps and far below the 64 GiB the child reserves.
const CHILD_AS_KIB: u64 = 4 << 20;
const CHILD_ENV: &str = "SVMAP_TEST_AS_CHILD";

/// Runs the test `name` of this binary alone in a child under `ulimit -v
/// kib`, with `CHILD_ENV` set; returns its stdout, asserting it succeeded.
fn run_child_under_as_limit(name: &str, kib: u64) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("SVMAP-CHILD-OK"),
        "child {name}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Run in a child by `address_space_limit_is_named_with_its_numbers`.
#[test]
fn child_reserves_past_rlimit_as() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let limit = reserve::rlimit_as().expect("the child runs under ulimit -v");
    assert_eq!(limit, CHILD_AS_KIB * 1024);
    let before = reserve::vm_size().expect("VmSize");
    assert!(before < limit, "{before:#x} >= {limit:#x}");
    let len = 64 * GIB;
    let err = Reservation::reserve(&ReserveRequest::below_bits(47, len).unwrap()).unwrap_err();
    let msg = err.to_string();
    match err {
        Error::AddressSpaceLimit {
            len: l,
            vm_size,
            limit: lim,
            ..
        } => {
            assert_eq!(l, len);
            assert_eq!(lim, limit);
            assert!(vm_size + len > limit && vm_size < limit, "{msg}");
        }
        other => panic!("not the address-space limit: {other}"),
    }
    assert!(
        msg.contains("RLIMIT_AS") && msg.contains(&format!("{limit:#x}")),
        "{msg}"
    );
    assert!(!msg.contains("max_map_count"), "{msg}");
    // A fixed reservation of the same size is refused the same way.
    let at = Reservation::at(1 << 40, len).unwrap_err();
    assert!(matches!(at, Error::AddressSpaceLimit { .. }), "{at}");
    // What fits under the limit is still reserved, and a heap in it works.
    let mut heap = Heap::below_bits(40, 64 << 20).expect("64 MiB fits under 4 GiB");
    let p = heap.alloc(PAGE, PAGE).expect("a buffer in the reservation");
    heap.free(p).expect("free");
    println!("SVMAP-CHILD-OK {msg}");
}

#[test]
fn address_space_limit_is_named_with_its_numbers() {
    let out = run_child_under_as_limit("child_reserves_past_rlimit_as", CHILD_AS_KIB);
    assert!(out.contains("RLIMIT_AS"), "{out}");
}

#[test]
fn the_limits_files_are_parsed() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max stack size            8388608              unlimited            bytes     \n\
                  Max address space         4294967296           unlimited            bytes     \n";
    assert_eq!(reserve::parse_rlimit_as(limits), Some(4 << 30));
    let unlimited = "Max address space         unlimited            unlimited            bytes\n";
    assert_eq!(reserve::parse_rlimit_as(unlimited), None);
    let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmSize:\t    2048 kB\nVmLck:\t 0 kB\n";
    assert_eq!(reserve::parse_vm_size(status), Some(2 << 20));
    assert_eq!(reserve::parse_vm_size("VmSize:\t12\n"), None);
    // This process: VmSize is readable and above zero.
    assert!(reserve::vm_size().is_some_and(|v| v > 0));
}

/// A window `[base, base + 16 pages)` free in this process, found by
/// reserving it and letting it go.
fn free_window(pages: u64) -> u64 {
    let r = Reservation::reserve(&ReserveRequest::below_bits(40, pages * PAGE).unwrap())
        .expect("a window below 2^40");
    r.addr()
}

#[test]
fn no_room_in_the_window_is_window_full_with_its_numbers() {
    let base = free_window(16);
    // Fill the window except for a two-page hole at pages 5 and 6.
    let _a = Reservation::at(base, 5 * PAGE).unwrap();
    let _b = Reservation::at(base + 7 * PAGE, 9 * PAGE).unwrap();
    let high = base + 16 * PAGE;
    let ask = |len: u64, min_len: u64| {
        Reservation::reserve(&ReserveRequest {
            low: base,
            high,
            len,
            min_len,
            align: PAGE,
            topdown: false,
            max_tries: 8,
        })
    };
    match ask(4 * PAGE, 4 * PAGE) {
        Err(e @ Error::WindowFull { .. }) => {
            let Error::WindowFull {
                low,
                high: h,
                min_len,
                largest_free,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (low, h, min_len, largest_free),
                (base, high, 4 * PAGE, 2 * PAGE)
            );
            let msg = e.to_string();
            assert!(msg.contains("0x4000") && msg.contains("0x2000"), "{msg}");
            assert!(
                !msg.contains("max_map_count") && !msg.contains("RLIMIT_AS"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The hole itself is still had.
    let r = ask(4 * PAGE, 2 * PAGE).unwrap();
    assert_eq!((r.addr(), r.len()), (base + 5 * PAGE, 2 * PAGE));
    assert!(r.is_partial());
    // Now nothing is free.
    assert!(matches!(
        ask(PAGE, PAGE),
        Err(Error::WindowFull {
            largest_free: 0,
            ..
        })
    ));
}

#[test]
fn a_full_heap_is_heap_full() {
    let mut heap = Heap::new(Reservation::at(free_window(4), 4 * PAGE).unwrap());
    let a = heap.alloc(3 * PAGE, PAGE).unwrap();
    let e = heap.alloc(2 * PAGE, PAGE).unwrap_err();
    assert!(
        matches!(e, Error::HeapFull { len, align } if len == 2 * PAGE && align == PAGE),
        "{e}"
    );
    heap.free(a).unwrap();
    assert!(heap.alloc(4 * PAGE, PAGE).is_ok());
}

/// The reviewer's case: a heap over a reservation at address 0 (root may
/// map there) must never hand out address 0, and every buffer frees.
#[test]
fn a_heap_at_address_zero_never_hands_out_zero() {
    let res = match Reservation::at(0, 16 * PAGE) {
        Ok(r) => r,
        Err(Error::Sys { errno, .. }) if errno == Errno::EPERM || errno == Errno::EACCES => {
            // Without CAP_SYS_RAWIO the kernel refuses a mapping below
            // mmap_min_addr, which is the other way to keep 0 out.
            assert!(
                !std::fs::read_to_string("/proc/self/status")
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("CapEff:") && l.ends_with("ffffffffff")),
                "a fully privileged process was refused address 0"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(res.addr(), 0);
    let mut heap = Heap::new(res);
    let mut ptrs = Vec::new();
    loop {
        match heap.alloc(PAGE, PAGE) {
            Ok(p) => ptrs.push(p),
            Err(Error::HeapFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Pages 1..16: the first page stays unused.
    let addrs: Vec<u64> = ptrs.iter().map(|p| p.as_ptr() as u64).collect();
    assert_eq!(addrs, (1..16).map(|i| i * PAGE).collect::<Vec<_>>());
    // The whole reservation as one buffer does not fit; 15 pages do.
    for p in ptrs {
        heap.free(p).unwrap();
    }
    assert!(matches!(
        heap.alloc(16 * PAGE, PAGE),
        Err(Error::HeapFull { .. })
    ));
    let big = heap.alloc(15 * PAGE, PAGE).unwrap();
    assert_eq!(big.as_ptr() as u64, PAGE);
    heap.free(big).unwrap();
    assert_eq!(heap.live(), 0);
    // Freeing the null-adjacent address that was never handed out.
    assert!(matches!(
        heap.free(NonNull::new(PAGE as *mut u8).unwrap()),
        Err(Error::NotAllocated { .. })
    ));
}
