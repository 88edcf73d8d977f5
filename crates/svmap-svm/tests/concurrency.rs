//! Interleavings of device faults, invalidations, frees, re-allocations and
//! protection changes, explored with `shuttle` over the library's
//! [`Mirror`] (its locks come from a shuttle [`SyncFamily`]) and a made-up
//! page-table format.
//!
//! Asserted, for every explored schedule:
//! - after `svm_free` (or an unmap) returns, no device access that starts
//!   later reaches the freed buffer, and until the range is re-allocated
//!   every such access faults `unmapped`;
//! - after a protection change to read-only returns, no write that starts
//!   later succeeds through a stale PTE;
//! - no device page is ever translated to two buffers at once, and once
//!   the free returned no translation to the old buffer remains.

use shuttle::sync::{Arc, Mutex};
use svmap_svm::mirror::{Perm, Snapshot};
use svmap_svm::{Fault, Mirror, PtFormat, SyncFamily};

struct ShuttleSync;

impl SyncFamily for ShuttleSync {
    type Mutex<T: Send> = Mutex<T>;
    fn mutex<T: Send>(t: T) -> Self::Mutex<T> {
        Mutex::new(t)
    }
    fn with<T: Send, R>(m: &Self::Mutex<T>, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = m.lock().unwrap();
        f(&mut g)
    }
    fn yield_now() {
        shuttle::thread::yield_now();
    }
}

/// A made-up format: 2 index bits per level, odd bit positions.
struct TinyFormat;

impl PtFormat for TinyFormat {
    const NAME: &'static str = "tiny";
    fn bits_per_level(_page_shift: u32) -> u32 {
        2
    }
    fn leaf(frame: u64, read: bool, write: bool) -> u64 {
        (frame << 8) | 0x80 | (u64::from(read) << 5) | (u64::from(write) << 6)
    }
    fn is_valid(pte: u64) -> bool {
        pte & 0x80 != 0
    }
    fn can_read(pte: u64) -> bool {
        pte & 0x20 != 0
    }
    fn can_write(pte: u64) -> bool {
        pte & 0x40 != 0
    }
    fn frame(pte: u64) -> u64 {
        pte >> 8
    }
}

const A: u64 = 100;
const B: u64 = 200;
const PAGES: u64 = 2;

/// The CPU side: what each page maps, and how far the CPU thread got.
struct Cpu {
    pages: [Option<Perm>; PAGES as usize],
    /// 0: A mapped; 1: A freed (returned); 2: B mapped; 3: B read-only.
    phase: u32,
}

type Dev = Mirror<TinyFormat, ShuttleSync>;

fn snapshot(cpu: &Mutex<Cpu>, addr: u64) -> Snapshot {
    let p = cpu.lock().unwrap().pages[(addr >> 12) as usize];
    Snapshot { byte: p, page: p }
}

fn phase(cpu: &Mutex<Cpu>) -> u32 {
    cpu.lock().unwrap().phase
}

fn scenario() {
    let rw = |frame| Perm {
        frame,
        read: true,
        write: true,
    };
    let cpu = Arc::new(Mutex::new(Cpu {
        pages: [Some(rw(A)); PAGES as usize],
        phase: 0,
    }));
    // va_bits 16, 4 KiB pages: 4 index bits in two levels of 2.
    let dev: Arc<Dev> = Arc::new(Mirror::new(16, 0x1000, 2));
    assert_eq!(dev.geometry().level_bits, vec![2, 2]);
    // Populate at allocation: page 0 starts mapped.
    dev.prefault(0, 0x1000, rw(A), 1);

    let mut threads = Vec::new();
    {
        let (cpu, dev) = (cpu.clone(), dev.clone());
        threads.push(shuttle::thread::spawn(move || {
            // svm_free(A): invalidate, change the CPU, finish.
            dev.invalidate_start(0, PAGES << 12);
            cpu.lock().unwrap().pages = [None; PAGES as usize];
            dev.invalidate_end();
            cpu.lock().unwrap().phase = 1;
            // svm_alloc(B) at the same range: mapping needs no invalidation.
            {
                let mut c = cpu.lock().unwrap();
                c.pages = [Some(rw(B)); PAGES as usize];
                c.phase = 2;
            }
            // protect(B, r).
            dev.invalidate_start(0, PAGES << 12);
            cpu.lock().unwrap().pages = [Some(Perm {
                frame: B,
                read: true,
                write: false,
            }); PAGES as usize];
            dev.invalidate_end();
            cpu.lock().unwrap().phase = 3;
        }));
    }
    for t in 0..2u64 {
        let (cpu, dev) = (cpu.clone(), dev.clone());
        threads.push(shuttle::thread::spawn(move || {
            for i in 0..3u64 {
                let addr = ((t + i) % PAGES) << 12 | 0x10;
                let write = (t + i) % 2 == 0;
                let before = phase(&cpu);
                let r = dev.access(addr, write, &mut |a| snapshot(&cpu, a));
                let after = phase(&cpu);
                if before >= 1 {
                    assert_ne!(r, Ok(A), "freed buffer reached at {addr:#x}");
                    if after < 2 {
                        assert_eq!(r, Err(Fault::Unmapped), "access after free");
                    }
                }
                if before >= 3 && write {
                    assert_eq!(r, Err(Fault::Protection), "write through a stale PTE");
                }
                if r == Ok(B) {
                    assert!(after >= 2, "B reached before it was mapped");
                }
                assert_ne!(r, Err(Fault::OutOfRange));
            }
        }));
    }
    {
        let (cpu, dev) = (cpu.clone(), dev.clone());
        threads.push(shuttle::thread::spawn(move || {
            for _ in 0..3 {
                let before = phase(&cpu);
                let maps = dev.mappings();
                for &(vpn, frame, ..) in &maps {
                    for &(vpn2, frame2, ..) in &maps {
                        assert!(vpn != vpn2 || frame == frame2, "page {vpn} in two buffers");
                    }
                    if before >= 1 {
                        assert_ne!(frame, A, "translation to the freed buffer survives");
                    }
                }
                dev.check_tlb();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    // Everything settled: a fresh access sees the final state.
    let r = dev.access(0x10, true, &mut |a| snapshot(&cpu, a));
    assert_eq!(r, Err(Fault::Protection));
    assert_eq!(dev.access(0x1010, false, &mut |a| snapshot(&cpu, a)), Ok(B));
}

#[test]
fn shuttle_random() {
    shuttle::check_random(scenario, 2000);
}

#[test]
fn shuttle_pct() {
    shuttle::check_pct(scenario, 1500, 3);
}
