//! Time per SVM heap allocation against a plain `mmap`, in release:
//! `cargo bench -p svmap-linux --bench alloc_cost`.
//!
//! 10,000 live 4 KiB buffers below 2^40 (each keeps its memfd open, so stay
//! under RLIMIT_NOFILE): `Heap::alloc` (memfd_create, ftruncate, F_ADD_SEALS,
//! mmap = 4 syscalls) and `Heap::free` (mmap PROT_NONE back, close = 2)
//! against one `MAP_FIXED_NOREPLACE` mmap and one munmap per page.

use std::time::{Duration, Instant};

use svmap_linux::heap::Heap;
use svmap_linux::reserve::{Reservation, ReserveRequest};

const PAGE: u64 = 4096;

fn main() {
    let n = 10_000u64;
    let mut heap = Heap::below_bits(40, n * 2 * PAGE).expect("heap below 2^40");
    let t = Instant::now();
    let ptrs: Vec<_> = (0..n)
        .map(|_| heap.alloc(PAGE, PAGE).expect("alloc"))
        .collect();
    let alloc = t.elapsed();
    let t = Instant::now();
    for p in ptrs {
        heap.free(p).expect("free");
    }
    let free = t.elapsed();
    // A plain anonymous mmap + munmap of one page, at addresses of a window
    // the kernel placed (Reservation::at is one MAP_FIXED_NOREPLACE mmap).
    let area =
        Reservation::reserve(&ReserveRequest::below_bits(40, n * 2 * PAGE).expect("request"))
            .expect("reserve");
    let base = area.addr();
    drop(area);
    let t = Instant::now();
    let rs: Vec<_> = (0..n)
        .map(|i| Reservation::at(base + i * 2 * PAGE, PAGE).expect("mmap"))
        .collect();
    let mmap = t.elapsed();
    let t = Instant::now();
    drop(rs);
    let munmap = t.elapsed();
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "per 4 KiB buffer: heap alloc {:.0} ns, free {:.0} ns; plain mmap {:.0} ns, munmap {:.0} ns",
        per(alloc),
        per(free),
        per(mmap),
        per(munmap)
    );
}
