//! Page migration on real memory: granules prefetched to a device process
//! leave this process (the memfd is punched) and come back on a real CPU
//! fault; device accesses follow the attributes; writers racing a
//! migration lose nothing; a property test against a model of what every
//! word holds.
//!
//! The device processes are this test binary itself, re-executed to run
//! only `peer_role`.

#![allow(unsafe_code)]

mod common;
use common::{peer_command, serial};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use svmap_core::linux::MmConfig;
use svmap_linux::uffd::{Sources, UffdError};
use svmap_peer::PeerConfig;
use svmap_runtime::migrate::{MigrateError, Runtime};
use svmap_runtime::{seed_from_self, LinuxCpu, PeerDevice};
use svmap_svm::attr::{Access, Flags};
use svmap_svm::{Attr, DeviceConfig, Engine, Location};

const MIB2: u64 = 2 << 20;
const PG: u64 = 0x1000;

fn engine() -> Engine<LinuxCpu, PeerDevice> {
    engine_with_timeout(Duration::from_secs(30))
}

fn engine_with_timeout(timeout: Duration) -> Engine<LinuxCpu, PeerDevice> {
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e = Engine::new(MmConfig::default(), cpu);
    seed_from_self(&mut e).unwrap();
    for (name, bits) in [("gpu0", 40u32), ("gpu1", 44)] {
        let mut cfg = PeerConfig::new(bits, 1);
        cfg.timeout = timeout;
        let dev = PeerDevice::spawn(peer_command(None), &cfg, dir.clone()).unwrap();
        e.add_device_with(DeviceConfig::new(name, bits), dev)
            .unwrap();
    }
    e
}

fn runtime() -> Option<Runtime> {
    runtime_of(engine())
}

/// The runtime over `e`, or `None` (and a "skipped" note) where this
/// machine refuses userfaultfd: then the error must be the typed one of
/// setup, nothing else.
fn runtime_of(e: Engine<LinuxCpu, PeerDevice>) -> Option<Runtime> {
    match Runtime::new(e) {
        Ok(rt) => Some(rt),
        Err(MigrateError::Unavailable(
            u @ (UffdError::Unavailable { .. } | UffdError::MissingFeatures(_)),
        )) => {
            eprintln!("skipped: {u}");
            None
        }
        Err(other) => panic!("setting up page migration failed: {other}"),
    }
}

fn rd(a: u64) -> u64 {
    // SAFETY: the tests read only live read-write SVM ranges of their
    // runtime; a page on a device faults and comes back.
    unsafe { std::ptr::read_volatile(a as *const u64) }
}

fn wr(a: u64, v: u64) {
    // SAFETY: as for `rd`; no Rust reference points into SVM memory.
    unsafe { std::ptr::write_volatile(a as *mut u64, v) }
}

fn pattern(a: u64) -> u64 {
    a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

/// Bytes of the memfd behind `[from, from + len)` (inside the SVM range
/// that starts at `buf`) that hold data, not holes (lseek SEEK_DATA and
/// SEEK_HOLE).
fn data_bytes(rt: &Runtime, buf: u64, from: u64, len: u64) -> u64 {
    let (fd, off, _) = rt.engine().cpu_backend().locate(buf).unwrap();
    let start = off + (from - buf);
    let end = start + len;
    let mut n = 0;
    let mut at = start;
    while at < end {
        let d = match rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(at)) {
            Ok(d) if d < end => d,
            _ => break,
        };
        let h = rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(d))
            .unwrap()
            .min(end);
        n += h - d;
        at = h;
    }
    n
}

#[test]
fn unavailable_userfaultfd_is_a_typed_error_at_setup() {
    let _one = serial();
    let r = Runtime::with_sources(
        engine(),
        Sources {
            syscall: false,
            dev_node: false,
        },
    );
    match r {
        Err(MigrateError::Unavailable(e)) => {
            assert_eq!(
                e,
                UffdError::Unavailable {
                    syscall: None,
                    dev_node: None
                }
            );
            assert!(e.to_string().contains("not available"), "{e}");
        }
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn prefetch_leaves_this_process_and_a_cpu_touch_brings_it_back() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(2 * MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    let mut sum = 0u64;
    for w in (a..a + 2 * MIB2).step_by(8) {
        wr(w, pattern(w));
        sum = sum.wrapping_add(pattern(w));
    }
    assert_eq!(data_bytes(&rt, a, a, 2 * MIB2), 2 * MIB2);
    rt.set_attr(
        a,
        2 * MIB2,
        &[Attr::PrefetchLocation(Some(Location::Device(0)))],
    )
    .unwrap();
    let s = rt.stats();
    assert_eq!((s.to_device, s.bytes_to_device), (2, 2 * MIB2));
    assert_eq!(rt.migrator().location_of(a), Location::Device(0));
    // The bytes left this process: the memfd has holes there now.
    assert_eq!(data_bytes(&rt, a, a, 2 * MIB2), 0);
    // The device reads them from its own memory.
    assert_eq!(rt.device_sum(0, a, 2 * MIB2).unwrap(), sum);
    // A CPU read of the second granule faults and brings that one back.
    let w = a + MIB2 + 0x1238;
    assert_eq!(rd(w), pattern(w));
    let s = rt.stats();
    assert_eq!((s.cpu_faults, s.to_system, s.bytes_to_system), (1, 1, MIB2));
    assert_eq!(rt.migrator().location_of(a), Location::Device(0));
    assert_eq!(rt.migrator().location_of(w), Location::System);
    assert_eq!(data_bytes(&rt, a, a + MIB2, MIB2), MIB2);
    // A CPU write to the first one brings it back with the write.
    wr(a + 8, 77);
    assert_eq!(rd(a + 8), 77);
    assert_eq!(rt.stats().cpu_faults, 2);
    assert!(rt.migrator().granules().is_empty());
    // Every other word is intact.
    for w in (a..a + 2 * MIB2).step_by(8).filter(|&w| w != a + 8) {
        assert_eq!(rd(w), pattern(w), "word at {w:#x}");
    }
}

#[test]
fn attributes_steer_device_accesses() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(4 * 16 * PG, None, &["gpu0", "gpu1"], false)
        .unwrap();
    let len = 4 * 16 * PG;
    for w in (a..a + len).step_by(8) {
        wr(w, pattern(w));
    }
    // 64 KiB granules; the first one prefers gpu0.
    rt.set_attr(a, len, &[Attr::Granularity(4)]).unwrap();
    rt.set_attr(
        a,
        16 * PG,
        &[Attr::PreferredLocation(Some(Location::Device(0)))],
    )
    .unwrap();
    // gpu0 touching one word migrates that granule only.
    assert_eq!(rt.device_sum(0, a + 8, 8).unwrap(), pattern(a + 8));
    assert_eq!(rt.migrator().granules(), vec![(a, a + 16 * PG, 0)]);
    // gpu0 writes there (copying from system memory), the CPU sees it.
    rt.device_copy(0, a, a + 32 * PG, 8).unwrap();
    assert_eq!(rd(a), pattern(a + 32 * PG));
    assert_eq!(rt.stats().cpu_faults, 1);
    // Back on gpu0 by its next access; gpu1 cannot reach gpu0's memory:
    // its access brings the granule back to system memory first.
    rt.device_sum(0, a, 8).unwrap();
    assert_eq!(rt.migrator().location_of(a), Location::Device(0));
    assert_eq!(rt.device_sum(1, a, 8).unwrap(), pattern(a + 32 * PG));
    assert_eq!(rt.migrator().location_of(a), Location::System);
    // No access: refused, nothing moves.
    rt.set_attr(
        a + 16 * PG,
        16 * PG,
        &[Attr::Access {
            device: 1,
            access: Access::None,
        }],
    )
    .unwrap();
    assert!(matches!(
        rt.device_sum(1, a + 16 * PG, 8),
        Err(MigrateError::NoAccess { device: 1, .. })
    ));
    assert!(matches!(
        rt.prefetch(a + 16 * PG, PG, Location::Device(1)),
        Err(MigrateError::NoAccess { device: 1, .. })
    ));
    // In place: gpu1 reads without moving anything.
    rt.set_attr(
        a + 48 * PG,
        16 * PG,
        &[
            Attr::PreferredLocation(Some(Location::Device(1))),
            Attr::Access {
                device: 1,
                access: Access::InPlace,
            },
        ],
    )
    .unwrap();
    rt.device_sum(1, a + 48 * PG, 8).unwrap();
    assert_eq!(rt.migrator().location_of(a + 48 * PG), Location::System);
    // Prefetch of a part moves whole granules (the one around it).
    rt.prefetch(a + 33 * PG, PG, Location::Device(1)).unwrap();
    assert_eq!(
        rt.migrator().granules(),
        vec![(a + 32 * PG, a + 48 * PG, 1)]
    );
    rt.prefetch(a, len, Location::System).unwrap();
    assert!(rt.migrator().granules().is_empty());
    for w in (a + 8..a + len).step_by(8) {
        assert_eq!(rd(w), pattern(w), "word at {w:#x}");
    }
}

#[test]
fn freeing_drops_device_copies_and_the_range_reads_zeros_again() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let eng = rt.engine_mut();
    let w = eng.reserve_window(&["gpu0", "gpu1"]).unwrap();
    let _ = w;
    let a = eng.svm_alloc(MIB2, Some(MIB2), &["gpu0"], false).unwrap();
    wr(a, 5);
    rt.prefetch(a, MIB2, Location::Device(0)).unwrap();
    rt.free(a).unwrap();
    assert_eq!(rt.stats().dropped, 1);
    assert!(rt.migrator().granules().is_empty());
    let b = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0"], false)
        .unwrap();
    assert_eq!(b, a, "the window hands the range out again");
    assert_eq!(rd(b), 0);
    assert_eq!(rt.device_sum(0, b, MIB2).unwrap(), 0);
    assert_eq!(rt.stats().cpu_faults, 0);
}

#[test]
fn writers_racing_migrations_lose_nothing() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0"], false)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    const THREADS: u64 = 4;
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let stop = stop.clone();
            // Each thread owns one word per page of the granule and counts.
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 1000 {
                    n += 1;
                    let w = a + (n % 512) * PG + t * 8;
                    wr(w, n);
                    assert_eq!(rd(w), n, "a write was lost at {w:#x}");
                }
                n
            })
        })
        .collect();
    // Forty moves at least, and on until a writer has faulted the granule
    // back once (the writers may not have run yet on a loaded machine).
    let started = std::time::Instant::now();
    let mut moves = 0;
    while moves < 40 || (rt.stats().cpu_faults == 0 && started.elapsed() < Duration::from_secs(30))
    {
        rt.prefetch(a, MIB2, Location::Device(0)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        moves += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    // Every word holds the last value its thread wrote there.
    for (t, &n) in counts.iter().enumerate() {
        for k in 0..512u64 {
            let last = (1..=n).rev().find(|m| m % 512 == k).unwrap_or(0);
            assert_eq!(rd(a + k * PG + t as u64 * 8), last);
        }
    }
    let s = rt.stats();
    assert!(s.to_device >= 1 && s.cpu_faults >= 1, "{s:?}");
}

#[test]
fn read_mostly_copies_are_dropped_before_a_cpu_write_lands() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    wr(a, 5);
    rt.set_attr(a, MIB2, &[Attr::SetFlags(Flags::READ_MOSTLY)])
        .unwrap();
    // Both devices read: each gets a copy, the data stays here (no punch).
    assert_eq!(rt.device_sum(0, a, 8).unwrap(), 5);
    assert_eq!(rt.device_sum(1, a, 8).unwrap(), 5);
    assert_eq!(rt.migrator().copies_of(a), vec![0, 1]);
    assert_eq!(rt.migrator().location_of(a), Location::System);
    assert_eq!(data_bytes(&rt, a, a, PG), PG);
    // A CPU read does not fault; a CPU write faults and drops both copies.
    assert_eq!(rd(a), 5);
    assert_eq!(rt.stats().cpu_write_invalidations, 0);
    wr(a, 6);
    let s = rt.stats();
    assert_eq!((s.copies, s.copies_dropped), (2, 2), "{s:?}");
    assert_eq!(s.cpu_write_invalidations, 1);
    assert!(rt.migrator().copies_of(a).is_empty());
    assert_eq!(rt.device_sum(1, a, 8).unwrap(), 6);
    // A device write drops every copy, its own included, and lands in
    // system memory.
    assert_eq!(rt.device_sum(0, a, 8).unwrap(), 6);
    assert_eq!(rt.migrator().copies_of(a), vec![0, 1]);
    let src = rt
        .engine_mut()
        .svm_alloc(PG, None, &["gpu0", "gpu1"], false)
        .unwrap();
    wr(src, 77);
    rt.device_copy(1, a + 8, src, 8).unwrap();
    assert!(rt.migrator().copies_of(a).is_empty());
    assert_eq!(rd(a + 8), 77);
    assert_eq!(rt.device_sum(0, a, 16).unwrap(), 6 + 77);
    // Device read-only refuses device writes with a typed error.
    rt.set_attr(a, MIB2, &[Attr::SetFlags(Flags::DEVICE_READ_ONLY)])
        .unwrap();
    assert!(matches!(
        rt.device_copy(0, a, src, 8),
        Err(MigrateError::ReadOnly { device: 0, .. })
    ));
    // Clearing read-mostly drops the copies; a prefetch of a read-mostly
    // granule makes a copy.
    rt.set_attr(a, MIB2, &[Attr::ClearFlags(Flags::READ_MOSTLY)])
        .unwrap();
    assert!(rt.migrator().copies_of(a).is_empty());
    rt.set_attr(a, MIB2, &[Attr::SetFlags(Flags::READ_MOSTLY)])
        .unwrap();
    rt.prefetch(a, MIB2, Location::Device(1)).unwrap();
    assert_eq!(rt.migrator().copies_of(a), vec![1]);
    // Freeing drops the copies; nothing stays registered.
    rt.free(a).unwrap();
    assert!(rt.migrator().copies_of(a).is_empty());
}

#[test]
fn a_cpu_writer_racing_device_reads_of_a_read_mostly_granule_is_never_lost() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    rt.set_attr(
        a,
        MIB2,
        &[Attr::SetFlags(Flags::READ_MOSTLY), Attr::Granularity(0)],
    )
    .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, stop) = (done.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                n += 1;
                wr(a, n);
                assert_eq!(rd(a), n, "a CPU write was lost");
                done.store(n, Ordering::Release);
            }
            n
        })
    };
    let mut reads = 0u64;
    let started = std::time::Instant::now();
    while reads < 400 && started.elapsed() < Duration::from_secs(20) {
        for d in 0..2 {
            // Every write completed before the read is visible to it (no
            // stale copy), and nothing newer than the writer has made.
            let before = done.load(Ordering::Acquire);
            let v = rt.device_sum(d, a, 8).unwrap();
            let after = done.load(Ordering::Acquire);
            assert!(
                v >= before,
                "device {d} read {v}, stale (write {before} done)"
            );
            assert!(v <= after + 1, "device {d} read {v}, not yet written");
            reads += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let n = writer.join().unwrap();
    assert_eq!(rd(a), n);
    // Whether the racing writes met a copy depends on the schedule; this
    // one does: a copy exists, then a CPU write drops it before it lands.
    assert_eq!(rt.device_sum(0, a, 8).unwrap(), n);
    // (Device 1 may hold one too, from the last round of reads.)
    assert!(rt.migrator().copies_of(a).contains(&0));
    let before = rt.stats().cpu_write_invalidations;
    wr(a, n + 1);
    assert_eq!(rt.stats().cpu_write_invalidations, before + 1);
    assert!(rt.migrator().copies_of(a).is_empty());
    assert_eq!(rt.device_sum(0, a, 8).unwrap(), n + 1);
    assert_eq!(rt.device_sum(1, a, 8).unwrap(), n + 1);
    // Each device's first read made it a copy.
    let s = rt.stats();
    assert!(s.copies >= 2, "{s:?}");
}

#[test]
fn a_device_fault_on_a_granule_another_device_holds_is_serviced_and_retried() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(2 * MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    let mut want = 0u64;
    for k in 0..8u64 {
        wr(a + k * PG, k + 1);
        wr(a + MIB2 + k * PG, 100 + k);
        want += (k + 1) + (100 + k);
    }
    rt.prefetch(a, 2 * MIB2, Location::Device(0)).unwrap();
    // gpu1 asked directly (not through the runtime): it faults on the
    // granule gpu0 holds instead of reading the memfd's hole.
    let direct = rt.engine_mut().device_backends_mut()[1]
        .peer()
        .sum_u64(a, 8);
    assert!(
        matches!(direct, Err(svmap_peer::PeerError::DeviceFault { addr, .. }) if addr == a),
        "{direct:?}"
    );
    // Through the fault path: each granule is brought back on its fault
    // (gpu1 has no preference) and the device retries.
    assert_eq!(rt.device_sum_on_fault(1, a, 2 * MIB2).unwrap(), want);
    assert_eq!(rt.stats().device_faults, 2);
    assert_eq!(rt.migrator().location_of(a), Location::System);
    assert_eq!(rt.migrator().location_of(a + MIB2), Location::System);
    // Resident again: gpu1 reaches it directly.
    let direct = rt.engine_mut().device_backends_mut()[1]
        .peer()
        .sum_u64(a, 8);
    assert_eq!(direct.unwrap(), 1);
    // Preferred gpu1 (may migrate): the fault moves the granule to gpu1.
    rt.prefetch(a, MIB2, Location::Device(0)).unwrap();
    rt.set_attr(
        a,
        MIB2,
        &[Attr::PreferredLocation(Some(Location::Device(1)))],
    )
    .unwrap();
    assert_eq!(rt.device_sum_on_fault(1, a, 8).unwrap(), 1);
    assert_eq!(rt.stats().device_faults, 3);
    assert_eq!(rt.migrator().location_of(a), Location::Device(1));
    // gpu0 now faults on it in turn, and the CPU still reads it.
    let direct = rt.engine_mut().device_backends_mut()[0]
        .peer()
        .sum_u64(a, 8);
    assert!(direct.is_err(), "{direct:?}");
    assert_eq!(rd(a + 7 * PG), 8);
    // A fault outside SVM memory is the request's error, not retried.
    assert!(matches!(
        rt.device_sum_on_fault(1, 0x1000, 8),
        Err(MigrateError::Device { device: 1, .. })
    ));
}

/// The thread that touches the granule: what it read, how long it waited
/// from its own start, and when it resumed.
type Toucher = std::thread::JoinHandle<(u64, Duration, std::time::Instant)>;

/// A granule on gpu0, a free's batch sent to gpu0 and not yet awaited
/// (the engine sends every device its batch before it waits), and a CPU
/// thread that touches the granule: the handler may not talk to gpu0 while
/// the batch is in flight.
fn fault_during_batch(timeout: Duration) -> Option<(Runtime, u64, Toucher)> {
    let mut rt = runtime_of(engine_with_timeout(timeout))?;
    let a = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0"], false)
        .unwrap();
    let b = rt
        .engine_mut()
        .svm_alloc(MIB2, Some(MIB2), &["gpu0"], false)
        .unwrap();
    wr(a, 42);
    assert_eq!(rt.device_sum(0, b, 8).unwrap(), 0);
    rt.prefetch(a, MIB2, Location::Device(0)).unwrap();
    let peer = rt.engine().device_backends()[0].shared();
    peer.lock()
        .unwrap()
        .send_invalidate_unmap(&[(b, MIB2)])
        .unwrap();
    assert!(peer.lock().unwrap().in_flight());
    let toucher = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let v = rd(a);
        (v, t0.elapsed(), std::time::Instant::now())
    });
    Some((rt, a, toucher))
}

#[test]
fn a_cpu_fault_waits_for_a_free_batch_in_flight_on_the_same_device() {
    let _one = serial();
    let Some((rt, a, toucher)) = fault_during_batch(Duration::from_secs(30)) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !toucher.is_finished(),
        "the fault was resolved during the batch"
    );
    let peer = rt.engine().device_backends()[0].shared();
    let released = std::time::Instant::now();
    peer.lock().unwrap().finish_invalidate_unmap().unwrap();
    let (v, _, resumed) = toucher.join().unwrap();
    assert_eq!(v, 42);
    // Measured here, not from the toucher's start (it may have started
    // late): it resumed only after the batch was awaited.
    assert!(resumed >= released);
    let s = rt.stats();
    assert_eq!((s.cpu_faults, s.to_system, s.lost), (1, 1, 0), "{s:?}");
    assert_eq!(rt.migrator().location_of(a), Location::System);
}

#[test]
fn a_cpu_fault_behind_a_batch_that_never_finishes_waits_only_the_device_timeout() {
    let _one = serial();
    let timeout = Duration::from_secs(1);
    let Some((rt, a, toucher)) = fault_during_batch(timeout) else {
        return;
    };
    let started = std::time::Instant::now();
    while !toucher.is_finished() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(toucher.is_finished(), "the faulting thread still waits");
    let (v, waited, _) = toucher.join().unwrap();
    assert!(waited >= timeout, "{waited:?}");
    // The device could not be asked for the data: the granule is lost (the
    // thread reads zeros) and counted, and nothing waits any more.
    assert_eq!(v, 0);
    let s = rt.stats();
    assert_eq!((s.cpu_faults, s.lost), (1, 1), "{s:?}");
    assert_eq!(rt.migrator().location_of(a), Location::System);
    let peer = rt.engine().device_backends()[0].shared();
    peer.lock().unwrap().finish_invalidate_unmap().unwrap();
}

/// A CPU writer and reader of `a` on another thread; panics if it does not
/// finish within ten seconds (a thread left waiting on a fault).
fn touch_within_bound(a: u64, v: u64) -> u64 {
    let t = std::thread::spawn(move || {
        wr(a, v);
        rd(a)
    });
    let started = std::time::Instant::now();
    while !t.is_finished() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(t.is_finished(), "a CPU thread still waits on {a:#x}");
    t.join().unwrap()
}

#[test]
fn a_prefetch_a_device_cannot_take_leaves_the_granule_here_and_unregistered() {
    let _one = serial();
    let Some(mut rt) = runtime_of(engine_with_timeout(Duration::from_secs(1))) else {
        return;
    };
    let a = rt
        .engine_mut()
        .svm_alloc(2 * MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    let b = a + MIB2;
    wr(a, 5);
    wr(b, 6);
    // gpu0 busy with a batch that never finishes: the prefetch gives up
    // after the device's timeout.
    let peer0 = rt.engine().device_backends()[0].shared();
    peer0
        .lock()
        .unwrap()
        .send_invalidate_unmap(&[(a + 0x1000, 0x1000)])
        .unwrap();
    let r = rt.prefetch(a, MIB2, Location::Device(0));
    assert!(
        matches!(r, Err(MigrateError::Device { device: 0, .. })),
        "{r:?}"
    );
    assert_eq!(rt.migrator().location_of(a), Location::System);
    assert_eq!(touch_within_bound(a, 7), 7);
    peer0.lock().unwrap().finish_invalidate_unmap().unwrap();
    // gpu1 dead: its request fails after the granule was registered and
    // write protected for the move; both are lifted again.
    rt.engine().device_backends()[1]
        .shared()
        .lock()
        .unwrap()
        .kill();
    let r = rt.prefetch(b, MIB2, Location::Device(1));
    assert!(
        matches!(r, Err(MigrateError::Device { device: 1, .. })),
        "{r:?}"
    );
    assert_eq!(rt.migrator().location_of(b), Location::System);
    assert_eq!(touch_within_bound(b, 8), 8);
    let s = rt.stats();
    assert_eq!((s.to_device, s.lost), (0, 0), "{s:?}");
}

#[test]
fn removing_a_device_brings_its_granules_back_and_renumbers_the_others() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(2 * MIB2, Some(MIB2), &["gpu0", "gpu1"], false)
        .unwrap();
    let b = a + MIB2;
    wr(a, 11);
    wr(b, 22);
    rt.prefetch(a, MIB2, Location::Device(0)).unwrap();
    rt.set_attr(
        b,
        MIB2,
        &[
            Attr::PreferredLocation(Some(Location::Device(1))),
            Attr::PrefetchLocation(Some(Location::Device(1))),
        ],
    )
    .unwrap();
    assert_eq!(rt.migrator().location_of(b), Location::Device(1));
    let removed = rt.remove_device("gpu0").unwrap();
    assert!(removed.detached.is_ok());
    drop(removed);
    // gpu0's granule is back here with its data; gpu1 is device 0 now,
    // for the migrator as for the attributes, and still holds its granule.
    assert_eq!(rt.migrator().location_of(a), Location::System);
    assert_eq!(data_bytes(&rt, a, a, MIB2), MIB2);
    assert_eq!(rd(a), 11);
    assert_eq!(rt.migrator().location_of(b), Location::Device(0));
    assert_eq!(
        rt.get_attr(b, MIB2).unwrap().preferred,
        Some(Location::Device(0))
    );
    assert_eq!(rt.device_sum(0, b, 8).unwrap(), 22);
    let s = rt.stats();
    assert_eq!((s.to_system, s.lost), (1, 0), "{s:?}");
    // A device whose process is dead: its granule is lost (counted) and a
    // CPU touch reads zeros instead of waiting.
    rt.engine().device_backends()[0]
        .shared()
        .lock()
        .unwrap()
        .kill();
    let removed = rt.remove_device("gpu1").unwrap();
    assert!(removed.detached.is_err());
    drop(removed);
    assert_eq!(rt.migrator().location_of(b), Location::System);
    assert_eq!(rt.stats().lost, 1);
    assert_eq!(touch_within_bound(b + 8, 3), 3);
    assert_eq!(rd(b), 0);
    assert!(rt.remove_device("gpu1").is_err());
}

/// `read(2)` into a granule on a device and `write(2)` from one: the
/// kernel's access faults like a user access and waits for the handler to
/// bring the granule back (or, with a descriptor for user faults only,
/// fails with `EFAULT` and moves nothing).
#[test]
fn system_calls_on_a_moved_granule_wait_for_it() {
    let _one = serial();
    let Some(mut rt) = runtime() else { return };
    let a = rt
        .engine_mut()
        .svm_alloc(2 * MIB2, Some(MIB2), &["gpu0"], false)
        .unwrap();
    let b = a + MIB2;
    wr(a + 16, 1234);
    wr(b, 0x0102_0304_0506_0708);
    rt.prefetch(a, 2 * MIB2, Location::Device(0)).unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh descriptors that nothing else owns.
    let (rd_end, wr_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    rustix::io::write(&wr_end, &77u64.to_le_bytes()).unwrap();
    let read_into = |p: u64| {
        // SAFETY: `p` is 8 bytes of a live read-write SVM range; no Rust
        // reference points there.
        unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&rd_end),
                p as *mut libc::c_void,
                8,
            )
        }
    };
    let write_from = |p: u64| {
        // SAFETY: as above, read only.
        unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&wr_end),
                p as *const libc::c_void,
                8,
            )
        }
    };
    let errno = || std::io::Error::last_os_error().raw_os_error();
    if rt.migrator().user_mode_only() {
        assert_eq!(read_into(a), -1);
        assert_eq!(errno(), Some(libc::EFAULT));
        assert_eq!(write_from(b), -1);
        assert_eq!(errno(), Some(libc::EFAULT));
        assert_eq!(rt.stats().cpu_faults, 0);
        eprintln!("userfaultfd for user faults only: system calls get EFAULT");
        return;
    }
    assert_eq!(read_into(a), 8);
    assert_eq!(rt.migrator().location_of(a), Location::System);
    assert_eq!((rd(a), rd(a + 16)), (77, 1234));
    assert_eq!(write_from(b), 8);
    assert_eq!(rt.migrator().location_of(b), Location::System);
    let mut back = [0u8; 8];
    rustix::io::read(&rd_end, &mut back).unwrap();
    assert_eq!(u64::from_le_bytes(back), 0x0102_0304_0506_0708);
    assert_eq!(rt.stats().cpu_faults, 2);
}

#[derive(Clone, Debug)]
enum Op {
    CpuWrite(u64, u64),
    CpuRead(u64),
    DevWrite(usize, u64, u64),
    DevRead(usize, u64),
    Prefetch(u64, u64, Option<usize>),
    Granularity(u64, u64, u8),
    Prefer(u64, u64, Option<usize>),
    ReadMostly(u64, u64, bool),
}

const PAGES: u64 = 32;

fn op() -> impl Strategy<Value = Op> {
    let page = 0..PAGES;
    let word = (0..PAGES, 0u64..4).prop_map(|(p, w)| p * PG + w * 8);
    let dev = proptest::option::of(0usize..2);
    prop_oneof![
        3 => (word.clone(), any::<u64>()).prop_map(|(w, v)| Op::CpuWrite(w, v)),
        3 => word.clone().prop_map(Op::CpuRead),
        2 => (0usize..2, word.clone(), 0u64..4).prop_map(|(d, w, s)| Op::DevWrite(d, w, s)),
        2 => (0usize..2, word).prop_map(|(d, w)| Op::DevRead(d, w)),
        2 => (page.clone(), 1u64..8, dev.clone()).prop_map(|(p, n, d)| Op::Prefetch(p, n, d)),
        1 => (page.clone(), 1u64..8, 0u8..4).prop_map(|(p, n, k)| Op::Granularity(p, n, k)),
        1 => (page.clone(), 1u64..8, dev).prop_map(|(p, n, d)| Op::Prefer(p, n, d)),
        2 => (page, 1u64..8, any::<bool>()).prop_map(|(p, n, on)| Op::ReadMostly(p, n, on)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// CPU and device reads always see what the model says every word
    /// holds, wherever the migrations put it; a prefetch leaves its pages
    /// where it asked (or, read-mostly, with a read-only copy there). Copies
    /// follow the model: a device read of a read-mostly page leaves a copy
    /// on that device (or the page on it alone), a write anywhere leaves no
    /// copy of the page, a page held by one device alone has no copies.
    #[test]
    fn contents_follow_the_model(ops in proptest::collection::vec(op(), 1..50)) {
        let _one = serial();
        let Some(mut rt) = runtime() else { return Ok(()) };
        let len = PAGES * PG;
        let a = rt.engine_mut().svm_alloc(len, None, &["gpu0", "gpu1"], false).unwrap();
        // Sources for device writes: four words in a second range.
        let src = rt.engine_mut().svm_alloc(PG, None, &["gpu0", "gpu1"], false).unwrap();
        let srcv = [11u64, 22, 33, 44];
        for (i, v) in srcv.iter().enumerate() {
            wr(src + 8 * i as u64, *v);
        }
        rt.set_attr(a, len, &[Attr::Granularity(2)]).unwrap();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut mostly = [false; PAGES as usize];
        let clip = |p: u64, n: u64| (a + p * PG, (n.min(PAGES - p)) * PG);
        for op in ops {
            match op {
                Op::CpuWrite(w, v) => {
                    wr(a + w, v);
                    model.insert(w, v);
                    prop_assert_eq!(rt.migrator().copies_of(a + w), Vec::<usize>::new());
                }
                Op::CpuRead(w) => {
                    prop_assert_eq!(rd(a + w), model.get(&w).copied().unwrap_or(0));
                }
                Op::DevWrite(d, w, s) => {
                    rt.device_copy(d, a + w, src + 8 * s, 8).unwrap();
                    model.insert(w, srcv[s as usize]);
                    prop_assert_eq!(rt.migrator().copies_of(a + w), Vec::<usize>::new());
                }
                Op::DevRead(d, w) => {
                    prop_assert_eq!(
                        rt.device_sum(d, a + w, 8).unwrap(),
                        model.get(&w).copied().unwrap_or(0)
                    );
                    if mostly[(w / PG) as usize] {
                        let here = rt.migrator().location_of(a + w) == Location::Device(d as u32);
                        prop_assert!(here || rt.migrator().copies_of(a + w).contains(&d));
                    }
                }
                Op::Prefetch(p, n, d) => {
                    let (s, l) = clip(p, n);
                    let loc = d.map_or(Location::System, |d| Location::Device(d as u32));
                    rt.prefetch(s, l, loc).unwrap();
                    for pg in (s..s + l).step_by(PG as usize) {
                        let at = rt.migrator().location_of(pg);
                        match d {
                            Some(d) if at == Location::System => {
                                prop_assert!(rt.migrator().copies_of(pg).contains(&d));
                            }
                            _ => prop_assert_eq!(at, loc),
                        }
                    }
                }
                Op::Granularity(p, n, k) => {
                    let (s, l) = clip(p, n);
                    rt.set_attr(s, l, &[Attr::Granularity(k)]).unwrap();
                }
                Op::Prefer(p, n, d) => {
                    let (s, l) = clip(p, n);
                    let loc = d.map(|d| Location::Device(d as u32));
                    rt.set_attr(s, l, &[Attr::PreferredLocation(loc)]).unwrap();
                }
                Op::ReadMostly(p, n, on) => {
                    let (s, l) = clip(p, n);
                    let change = if on { Attr::SetFlags(Flags::READ_MOSTLY) } else {
                        Attr::ClearFlags(Flags::READ_MOSTLY)
                    };
                    rt.set_attr(s, l, &[change]).unwrap();
                    for q in p..(p + n).min(PAGES) {
                        mostly[q as usize] = on;
                    }
                    if !on {
                        for pg in (s..s + l).step_by(PG as usize) {
                            prop_assert_eq!(rt.migrator().copies_of(pg), Vec::<usize>::new());
                        }
                    }
                }
            }
            for pg in (a..a + len).step_by(PG as usize) {
                if rt.migrator().location_of(pg) != Location::System {
                    prop_assert_eq!(rt.migrator().copies_of(pg), Vec::<usize>::new());
                }
            }
        }
        // At the end, every word from each device and from the CPU.
        for d in 0..2 {
            for w in (0..len).step_by(8) {
                prop_assert_eq!(
                    rt.device_sum(d, a + w, 8).unwrap(),
                    model.get(&w).copied().unwrap_or(0)
                );
            }
        }
        for w in (0..len).step_by(8) {
            prop_assert_eq!(rd(a + w), model.get(&w).copied().unwrap_or(0));
        }
    }
}
