//! The engine with device processes: what a free costs in round trips,
//! batch frees, a device process killed during a batch.
//!
//! The device processes are this test binary itself, re-executed to run
//! only `peer_role`, which serves the socket it inherited when
//! `SVMAP_PEER_FD` is set (and does nothing in a normal test run).

#![allow(unsafe_code)]

mod common;
use common::{peer_command, serial};

use std::time::Duration;

use svmap_core::linux::MmConfig;
use svmap_peer::{PeerConfig, PeerError};
use svmap_runtime::{seed_from_self, LinuxCpu, PeerDevice};
use svmap_svm::{BackendError, DeviceConfig, Engine, EngineError, Fault};

const DEVS: [(&str, u32); 2] = [("gpu40", 40), ("gpu44", 44)];
const BOTH: [&str; 2] = ["gpu40", "gpu44"];

type Real = Engine<LinuxCpu, PeerDevice>;

/// The engine on this process with the two device processes; `fail[i]`
/// is device `i`'s failpoint.
fn engine(fail: [Option<&str>; 2]) -> Real {
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e: Real = Engine::new(MmConfig::default(), cpu);
    seed_from_self(&mut e).unwrap();
    for (i, (name, bits)) in DEVS.into_iter().enumerate() {
        let mut cfg = PeerConfig::new(bits, 1);
        cfg.timeout = Duration::from_secs(30);
        let dev = PeerDevice::spawn(peer_command(fail[i]), &cfg, dir.clone())
            .expect("start the device process");
        e.add_device_with(DeviceConfig::new(name, bits), dev)
            .unwrap();
    }
    e
}

fn dev(e: &mut Real, i: usize) -> &mut PeerDevice {
    &mut e.device_backends_mut()[i]
}

fn requests(e: &Real) -> [u64; 2] {
    let d = e.device_backends();
    [d[0].requests(), d[1].requests()]
}

/// Writes words derived from `seed` over `[a, a + len)`; their wrapping sum.
fn fill(a: u64, len: u64, seed: u64) -> u64 {
    let mut sum = 0u64;
    for (k, w) in (a..a + len).step_by(8).enumerate() {
        let v = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k as u64;
        // SAFETY: [a, a + len) is a live read-write SVM range of the engine.
        unsafe { std::ptr::write_volatile(w as *mut u64, v) };
        sum = sum.wrapping_add(v);
    }
    sum
}

fn assert_unmapped(e: &mut Real, i: usize, a: u64) {
    match dev(e, i).peer().sum_u64(a, 8) {
        Err(PeerError::DeviceFault {
            fault: Fault::Unmapped,
            addr,
            ..
        }) => assert_eq!(addr, a),
        other => panic!("device {i} after free at {a:#x}: {other:?}"),
    }
}

fn check_round_trips(window: bool) {
    let _one = serial();
    let mut e = engine([None, None]);
    if window {
        e.reserve_window(&BOTH).unwrap();
    }
    let mut live = Vec::new();
    for k in 0..10u64 {
        let len = 0x1000 << (k % 6);
        let a = e.svm_alloc(len, None, &BOTH, k % 2 == 0).unwrap();
        let end = e.alloc_at(a).unwrap().end;
        let sum = fill(a, end - a, k + 1);
        for i in 0..2 {
            assert_eq!(dev(&mut e, i).peer().sum_u64(a, end - a).unwrap(), sum);
        }
        live.push(a);
    }
    // One free: one request per device.
    let a = live.pop().unwrap();
    let r0 = requests(&e);
    e.svm_free(a).unwrap();
    assert_eq!(requests(&e), [r0[0] + 1, r0[1] + 1]);
    for i in 0..2 {
        assert_unmapped(&mut e, i, a);
    }
    // Nine frees in one batch: still one request per device.
    let r1 = requests(&e);
    e.svm_free_many(&live).unwrap();
    assert_eq!(requests(&e), [r1[0] + 1, r1[1] + 1]);
    for &a in &live {
        assert!(e.alloc_at(a).is_none());
        for i in 0..2 {
            assert_unmapped(&mut e, i, a);
        }
    }
    for i in 0..2 {
        let s = dev(&mut e, i).peer().device_stats().unwrap();
        assert_eq!(s.live_buffers, 0, "device {i}");
        if !window {
            // Each range had its own heap: its attachment went with it.
            assert_eq!(dev(&mut e, i).attachments(), 0, "device {i}");
        }
    }
}

#[test]
fn a_free_is_one_round_trip_per_device_in_a_window() {
    check_round_trips(true);
}

#[test]
fn a_free_is_one_round_trip_per_device_outside_windows() {
    check_round_trips(false);
}

/// A device process that dies during a batch free: every range it held
/// stays allocated and is not reused; the ranges only the other device
/// held are free.
#[test]
fn device_killed_during_a_batch_free() {
    let _one = serial();
    let mut e = engine([Some("die-invalidate:1"), None]);
    e.reserve_window(&BOTH).unwrap();
    let shared = e.svm_alloc(0x8000, None, &BOTH, false).unwrap();
    let only44 = e.svm_alloc(0x4000, None, &["gpu44"], false).unwrap();
    let only40 = e.svm_alloc(0x4000, None, &["gpu40"], false).unwrap();
    let sum = fill(shared, 0x8000, 3);
    match e.svm_free_many(&[shared, only44, only40]) {
        Err(EngineError::NotAcknowledged {
            device,
            error: BackendError::Gone { .. },
            ..
        }) => assert_eq!(device, "gpu40"),
        other => panic!("batch free with a device dying in it: {other:?}"),
    }
    assert!(e.alloc_at(shared).is_some());
    assert!(e.alloc_at(only40).is_some());
    assert!(e.alloc_at(only44).is_none());
    // The kept ranges are not handed out again.
    for _ in 0..8 {
        let b = e.svm_alloc(0x4000, None, &["gpu44"], false).unwrap();
        for a in [shared, only40] {
            let v = e.alloc_at(a).unwrap();
            assert!(b + 0x4000 <= v.start || v.end <= b, "{b:#x} reuses {a:#x}");
        }
    }
    // The CPU's memory is intact; the live device unmapped the shared
    // range (it acknowledged), so it faults there.
    // SAFETY: `shared` is still allocated and mapped read-write on the CPU.
    let first = unsafe { std::ptr::read_volatile(shared as *const u64) };
    assert_eq!(first, 3u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let _ = sum;
    assert_unmapped(&mut e, 1, shared);
}

fn kill9(pid: u32) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
}

/// A device process killed with SIGKILL: removing it from the engine frees
/// the range whose only missing acknowledgement was its own, keeps the
/// range it held alone allocated for the CPU, and the live device goes on.
#[test]
fn a_killed_device_is_removed_and_its_ranges_reclaimed() {
    let _one = serial();
    let mut e = engine([None, None]);
    e.reserve_window(&BOTH).unwrap();
    let shared = e.svm_alloc(0x8000, None, &BOTH, true).unwrap();
    let alone = e.svm_alloc(0x4000, None, &["gpu44"], true).unwrap();
    let live = e.svm_alloc(0x4000, None, &["gpu40"], true).unwrap();
    let live_sum = fill(live, 0x4000, 9);
    let pid = dev(&mut e, 1).pid();
    kill9(pid);
    match e.svm_free(shared) {
        Err(EngineError::NotAcknowledged { device, .. }) => assert_eq!(device, "gpu44"),
        other => panic!("free with a killed device: {other:?}"),
    }
    assert_eq!(e.pending_frees(), vec![shared]);
    let mut r = e.remove_device("gpu44").unwrap();
    assert!(matches!(
        r.detached,
        Err(ref b) if matches!(b.error, BackendError::Gone { .. })
    ));
    assert_eq!(r.freed, vec![shared]);
    assert!(r.retry.is_ok());
    let status = r.backend.peer().exit_status().expect("the process is gone");
    assert_eq!(status.signal, Some(9));
    assert!(e.alloc_at(shared).is_none());
    assert!(e.pending_frees().is_empty());
    // The range it held alone stays allocated, for the CPU only.
    assert_eq!(e.alloc_at(alone).unwrap().devices, &[] as &[usize]);
    // The live device was invalidated for the shared range and still
    // reads its own buffer; the freed range is handed out again to it.
    assert_unmapped(&mut e, 0, shared);
    assert_eq!(
        dev(&mut e, 0).peer().sum_u64(live, 0x4000).unwrap(),
        live_sum
    );
    let again = e.svm_alloc(0x8000, None, &["gpu40"], true).unwrap();
    assert_eq!(again, shared);
    let sum = fill(again, 0x8000, 4);
    assert_eq!(dev(&mut e, 0).peer().sum_u64(again, 0x8000).unwrap(), sum);
    e.svm_free_many(&[again, live, alone]).unwrap();
    e.check_invariants();
}

/// The device process's own mappings (its binary, libraries, stack) lie
/// inside a 47-bit device's window: they are held on the device when it is
/// added, nothing is attached or mapped over them, and allocations
/// succeed elsewhere.
#[test]
fn the_peers_own_mappings_are_never_used() {
    use svmap_linux::maps::{self, Kind, Target};
    let _one = serial();
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e: Real = Engine::new(MmConfig::default(), cpu);
    seed_from_self(&mut e).unwrap();
    let mut cfg = PeerConfig::new(47, 1);
    cfg.timeout = Duration::from_secs(30);
    let d = PeerDevice::spawn(peer_command(None), &cfg, dir).unwrap();
    let pid = d.pid();
    e.add_device_with(DeviceConfig::new("gpu47", 47), d)
        .unwrap();
    let limit = 1u64 << 47;
    let own: Vec<(u64, u64)> = maps::read_view(Target::Pid(pid))
        .unwrap()
        .entries
        .iter()
        .filter(|m| matches!(m.kind(), Kind::File | Kind::Stack) && m.end <= limit)
        .map(|m| (m.start, m.end))
        .collect();
    assert!(!own.is_empty());
    let regions = e.device("gpu47").unwrap().regions();
    for &(s, end) in &own {
        let mut at = s;
        while at < end {
            let (_, re, _) = regions
                .get(at)
                .unwrap_or_else(|| panic!("the peer's [{s:#x}, {end:#x}) is not held at {at:#x}"));
            at = re;
        }
    }
    // Nothing else may go there either.
    let (s0, _) = own[0];
    assert!(matches!(
        e.device_map("gpu47", s0, s0 + 0x1000, svmap_svm::CpuPolicy::Fault),
        Err(EngineError::Svm(svmap_svm::SvmError::Overlap { .. }))
    ));
    // Allocations from the top, where the peer's stack and libraries are:
    // each one is attached and mapped in the peer (an attach over one of
    // its mappings would fail) and never overlaps them.
    let mut live = Vec::new();
    for k in 0..16u64 {
        let len = 0x1_0000 << (k % 4);
        let a = e.svm_alloc(len, None, &["gpu47"], true).unwrap();
        let end = e.alloc_at(a).unwrap().end;
        for &(s, oe) in &own {
            assert!(
                end <= s || oe <= a,
                "[{a:#x}, {end:#x}) over the peer's [{s:#x}, {oe:#x})"
            );
        }
        let sum = fill(a, end - a, k);
        assert_eq!(dev(&mut e, 0).peer().sum_u64(a, end - a).unwrap(), sum);
        live.push(a);
    }
    e.svm_free_many(&live).unwrap();
    e.check_invariants();
}
