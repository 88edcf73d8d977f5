//! Device-only regions on real memory: a CPU touch of a fault region kills
//! a child process with SIGSEGV; a dummy-page region reads zeros and a
//! write to it kills the child with SIGSEGV. The child is this test binary
//! run again with one test selected and an environment variable set.

#![allow(unsafe_code)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use svmap_runtime::{seed_from_self, LinuxCpu};
use svmap_svm::{CpuPolicy, DeviceConfig, Engine, ModelDevice};

const CHILD: &str = "SVMAP_RUNTIME_CHILD";

/// An engine on this process with a 40-bit device, a fault region and a
/// dummy-page region of 64 KiB each at the top of its window; returns
/// their addresses.
fn setup() -> (Engine<LinuxCpu, ModelDevice>, u64, u64) {
    let mut eng: Engine<LinuxCpu, ModelDevice> =
        Engine::new(Default::default(), LinuxCpu::new(false));
    seed_from_self(&mut eng).unwrap();
    eng.add_device(DeviceConfig::new("gpu40", 40)).unwrap();
    // Free ranges for the regions, decided by the engine's own search.
    let f = eng.svm_alloc(0x10000, None, &["gpu40"], true).unwrap();
    eng.svm_free(f).unwrap();
    eng.device_map("gpu40", f, f + 0x10000, CpuPolicy::Fault)
        .unwrap();
    let d = eng.svm_alloc(0x10000, None, &["gpu40"], true).unwrap();
    eng.svm_free(d).unwrap();
    eng.device_map("gpu40", d, d + 0x10000, CpuPolicy::DummyPage)
        .unwrap();
    assert!(d + 0x10000 <= 1 << 40 && f + 0x10000 <= 1 << 40);
    (eng, f, d)
}

fn run_child(what: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cpu_touches_of_device_only_regions",
            "--nocapture",
        ])
        .env(CHILD, what)
        .status()
        .unwrap()
}

#[test]
fn cpu_touches_of_device_only_regions() {
    match std::env::var(CHILD).as_deref() {
        Ok("fault-read") => {
            let (_eng, f, _) = setup();
            // SAFETY: none: the read is meant to fault (the parent checks
            // that this process dies of SIGSEGV).
            let v = unsafe { std::ptr::read_volatile((f + 0x100) as *const u8) };
            eprintln!("read {v} from a fault region");
            std::process::exit(3);
        }
        Ok("dummy-write") => {
            let (_eng, _, d) = setup();
            // SAFETY: none: the write is meant to fault.
            unsafe { std::ptr::write_volatile((d + 0x100) as *mut u8, 1) };
            std::process::exit(3);
        }
        _ => {
            let s = run_child("fault-read");
            assert_eq!(s.signal(), Some(libc_sigsegv()), "fault region: {s:?}");
            let s = run_child("dummy-write");
            assert_eq!(s.signal(), Some(libc_sigsegv()), "dummy write: {s:?}");
            // Reads of a dummy region see zeros, in this process.
            let (eng, _, d) = setup();
            for off in (0..0x10000).step_by(0x1000) {
                // SAFETY: the range is an svmap-owned PROT_READ private
                // anonymous mapping for as long as `eng` lives.
                let v = unsafe { std::ptr::read_volatile((d + off) as *const u64) };
                assert_eq!(v, 0);
            }
            assert_eq!(eng.reservation_at(d), Some(CpuPolicy::DummyPage));
        }
    }
}

fn libc_sigsegv() -> i32 {
    11
}
