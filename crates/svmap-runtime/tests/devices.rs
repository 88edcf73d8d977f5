//! Two device processes of different widths (40 and 44 bits) as device
//! backends of the engine on this process's real memory.
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
use svmap_svm::{BackendError, DeviceConfig, Engine, EngineError, Fault, Prot};

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
        // Generous: a loaded machine must not turn into a failure.
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

/// Writes words derived from `seed` over `[a, a + len)` and returns their
/// wrapping sum.
fn fill(a: u64, len: u64, seed: u64) -> u64 {
    let mut sum = 0u64;
    for (k, w) in (a..a + len).step_by(8).enumerate() {
        let v = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k as u64).wrapping_mul(0x1_0001);
        // SAFETY: [a, a + len) is a live read-write SVM range of the engine.
        unsafe { std::ptr::write_volatile(w as *mut u64, v) };
        sum = sum.wrapping_add(v);
    }
    sum
}

fn check_sharing(window: bool) {
    let _one = serial();
    let mut e = engine([None, None]);
    if window {
        e.reserve_window(&BOTH).unwrap();
    }
    let mut live = Vec::new();
    for (k, len) in [0x1_0000u64, 0x3000, 0x20_0000, 0x5000]
        .into_iter()
        .enumerate()
    {
        let a = e.svm_alloc(len, None, &BOTH, k % 2 == 0).unwrap();
        let end = e.alloc_at(a).unwrap().end;
        assert!(end <= 1 << 40, "[{a:#x}, {end:#x}) above the 40-bit device");
        let sum = fill(a, end - a, k as u64 + 1);
        for i in 0..2 {
            let got = dev(&mut e, i).peer().sum_u64(a, end - a).unwrap();
            assert_eq!(got, sum, "device {i} reads what the CPU wrote at {a:#x}");
        }
        live.push((a, end, sum));
    }
    // A device write is seen by the CPU and by the other device.
    let (a, end, _) = live[0];
    let (b, _, _) = live[1];
    dev(&mut e, 1).peer().copy(a, b, 8).unwrap();
    // SAFETY: both are live read-write SVM ranges.
    let (x, y) = unsafe {
        (
            std::ptr::read_volatile(a as *const u64),
            std::ptr::read_volatile(b as *const u64),
        )
    };
    assert_eq!(x, y);
    assert_eq!(dev(&mut e, 0).peer().sum_u64(a, 8).unwrap(), y);
    // Read-only on the devices: a device write faults, a read does not.
    e.protect(a, end - a, Prot::Read).unwrap();
    match dev(&mut e, 0).peer().copy(a, b, 8) {
        Err(PeerError::DeviceFault {
            fault: Fault::Protection,
            write: true,
            ..
        }) => {}
        other => panic!("write to a read-only range: {other:?}"),
    }
    assert_eq!(dev(&mut e, 0).peer().sum_u64(a, 8).unwrap(), y);
    e.protect(a, end - a, Prot::ReadWrite).unwrap();
    // Frees invalidate both devices: their next access faults.
    let before: Vec<u64> = (0..2)
        .map(|i| dev(&mut e, i).peer().device_stats().unwrap().last_seq)
        .collect();
    for &(a, _, _) in &live {
        e.svm_free(a).unwrap();
        for i in 0..2 {
            match dev(&mut e, i).peer().sum_u64(a, 8) {
                Err(PeerError::DeviceFault {
                    fault: Fault::Unmapped,
                    addr,
                    ..
                }) => assert_eq!(addr, a),
                other => panic!("device {i} after free at {a:#x}: {other:?}"),
            }
        }
    }
    for (i, seq) in before.into_iter().enumerate() {
        let s = dev(&mut e, i).peer().device_stats().unwrap();
        assert_eq!(s.live_buffers, 0, "device {i}");
        assert!(s.last_seq >= seq + live.len() as u64, "device {i}");
    }
    if !window {
        // Each range had its own heap: every attachment is gone with it.
        for i in 0..2 {
            assert_eq!(dev(&mut e, i).attachments(), 0);
        }
    }
}

#[test]
fn two_devices_read_what_the_cpu_wrote_in_a_window() {
    check_sharing(true);
}

#[test]
fn two_devices_read_what_the_cpu_wrote_outside_windows() {
    check_sharing(false);
}

#[test]
fn device_only_region_is_device_memory() {
    let _one = serial();
    let mut e = engine([None, None]);
    // A region for the 40-bit device where the space has room.
    let a = e.svm_alloc(0x4000, None, &["gpu40"], false).unwrap();
    e.svm_free(a).unwrap();
    e.device_map("gpu40", a, a + 0x4000, svmap_svm::CpuPolicy::DummyPage)
        .unwrap();
    // The device writes and reads its own memory; the CPU reads zeros.
    {
        let mut p = dev(&mut e, 0).peer();
        p.copy(a + 0x1000, a, 8).unwrap();
        assert_eq!(p.sum_u64(a, 0x4000).unwrap(), 0);
    }
    // SAFETY: the CPU side of a dummy-page region is mapped readable.
    assert_eq!(unsafe { std::ptr::read_volatile(a as *const u64) }, 0);
    // The other device does not see it.
    assert!(dev(&mut e, 1).peer().sum_u64(a, 8).is_err());
}

/// `[a, end)` stays allocated, and allocations for the live device `live`
/// land elsewhere.
fn assert_not_reused(e: &mut Real, a: u64, end: u64, live: &str) {
    assert!(e.alloc_at(a).is_some(), "the range stays allocated");
    for _ in 0..8 {
        let b = e.svm_alloc(end - a, None, &[live], false).unwrap();
        let be = e.alloc_at(b).unwrap().end;
        assert!(
            be <= a || end <= b,
            "[{b:#x}, {be:#x}) reuses [{a:#x}, {end:#x})"
        );
    }
}

#[test]
fn device_killed_before_an_invalidation() {
    let _one = serial();
    let mut e = engine([None, None]);
    e.reserve_window(&BOTH).unwrap();
    let a = e.svm_alloc(0x8000, None, &BOTH, false).unwrap();
    let end = e.alloc_at(a).unwrap().end;
    let sum = fill(a, end - a, 7);
    let pid = dev(&mut e, 1).pid();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    match e.svm_free(a) {
        Err(EngineError::NotAcknowledged {
            device,
            start,
            error: BackendError::Gone { .. },
            ..
        }) => assert_eq!((device.as_str(), start), ("gpu44", a)),
        other => panic!("free with a killed device: {other:?}"),
    }
    assert_not_reused(&mut e, a, end, "gpu40");
    // The CPU's memory is intact. The live device came first: it
    // acknowledged and unmapped the range in the same request, so it
    // faults there now.
    let mut cpu_sum = 0u64;
    for w in (a..end).step_by(8) {
        // SAFETY: [a, end) stays allocated and mapped read-write on the CPU.
        cpu_sum = cpu_sum.wrapping_add(unsafe { std::ptr::read_volatile(w as *const u64) });
    }
    assert_eq!(cpu_sum, sum);
    assert!(matches!(
        dev(&mut e, 0).peer().sum_u64(a, 8),
        Err(PeerError::DeviceFault {
            fault: Fault::Unmapped,
            ..
        })
    ));
    // Every later call to the dead device names it too.
    assert!(matches!(
        e.svm_free(a),
        Err(EngineError::NotAcknowledged { ref device, .. }) if device == "gpu44"
    ));
}

#[test]
fn device_killed_during_an_invalidation() {
    let _one = serial();
    let mut e = engine([Some("die-invalidate:1"), None]);
    e.reserve_window(&BOTH).unwrap();
    let a = e.svm_alloc(0x8000, None, &BOTH, false).unwrap();
    let end = e.alloc_at(a).unwrap().end;
    match e.svm_free(a) {
        Err(EngineError::NotAcknowledged {
            device,
            error: BackendError::Gone { detail },
            ..
        }) => {
            assert_eq!(device, "gpu40");
            assert!(detail.contains("signal 9"), "{detail}");
        }
        other => panic!("free with a device dying in it: {other:?}"),
    }
    assert_not_reused(&mut e, a, end, "gpu44");
    assert!(dev(&mut e, 0).peer().exit_status().is_some());
}
