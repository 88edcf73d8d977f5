//! The CPU side of the runtime on real memory, without unsafe code in the
//! caller: checked loads and stores ([`LinuxCpu::read_u64`],
//! [`LinuxCpu::write_u64`]) refuse every access that would fault, and
//! [`touch_in_child`] shows what an unchecked access does, in a forked
//! child (SIGSEGV for a fault region, a dummy-page write, a freed range).

use svmap_runtime::{seed_from_self, touch_in_child, LinuxCpu, Touch};
use svmap_svm::{CpuPolicy, DeviceConfig, Engine, ModelDevice, Prot};

const SIGSEGV: i32 = 11;

type Real = Engine<LinuxCpu, ModelDevice>;

/// One engine at a time (each search takes free space of this process).
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engine() -> (std::sync::MutexGuard<'static, ()>, Real) {
    let g = ONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut e: Real = Engine::new(Default::default(), LinuxCpu::new(false));
    seed_from_self(&mut e).unwrap();
    e.add_device(DeviceConfig::new("gpu40", 40)).unwrap();
    (g, e)
}

/// A device-only region of `len` bytes with `policy` where the engine has
/// room (its own search decides).
fn region(e: &mut Real, len: u64, policy: CpuPolicy) -> u64 {
    let a = e.svm_alloc(len, None, &["gpu40"], true).unwrap();
    e.svm_free(a).unwrap();
    e.device_map("gpu40", a, a + len, policy).unwrap();
    a
}

#[test]
fn checked_accesses_follow_the_ranges_and_their_protection() {
    let (_g, mut e) = engine();
    let a = e.svm_alloc(0x3000, None, &["gpu40"], false).unwrap();
    let end = e.alloc_at(a).unwrap().end;
    for (k, w) in (a..end).step_by(0x808).enumerate() {
        e.cpu_backend_mut().write_u64(w, k as u64 * 3 + 1).unwrap();
    }
    for (k, w) in (a..end).step_by(0x808).enumerate() {
        assert_eq!(e.cpu_backend().read_u64(w).unwrap(), k as u64 * 3 + 1);
    }
    // Unaligned, outside, past the end: refused.
    let cpu = e.cpu_backend_mut();
    assert!(cpu.read_u64(a + 4).is_err());
    assert!(cpu.write_u64(end, 1).is_err());
    assert!(cpu.read_u64(8).is_err());
    // Read-only: reads pass, writes are refused; no access: both refused;
    // read-write again: both pass.
    e.protect(a, 0x1000, Prot::Read).unwrap();
    let cpu = e.cpu_backend_mut();
    assert_eq!(cpu.read_u64(a).unwrap(), 1);
    let err = cpu.write_u64(a, 9).unwrap_err();
    assert!(err.write && err.addr == a, "{err}");
    cpu.write_u64(a + 0x1000, 9).unwrap();
    e.protect(a + 0x1000, 0x1000, Prot::None).unwrap();
    let cpu = e.cpu_backend_mut();
    assert!(cpu.read_u64(a + 0x1000).is_err());
    assert_eq!(cpu.read_u64(a).unwrap(), 1);
    e.protect(a, 0x2000, Prot::ReadWrite).unwrap();
    let cpu = e.cpu_backend_mut();
    cpu.write_u64(a, 5).unwrap();
    assert_eq!(cpu.read_u64(a + 0x1000).unwrap(), 9);
    // Freed: refused.
    e.svm_free(a).unwrap();
    assert!(e.cpu_backend().read_u64(a).is_err());
    // Device-only regions: a dummy page reads zeros and refuses writes; a
    // fault region refuses both.
    let d = region(&mut e, 0x2000, CpuPolicy::DummyPage);
    let f = region(&mut e, 0x2000, CpuPolicy::Fault);
    let cpu = e.cpu_backend_mut();
    assert_eq!(cpu.read_u64(d + 0x1008).unwrap(), 0);
    assert!(cpu.write_u64(d, 1).is_err());
    assert!(cpu.read_u64(f).is_err());
    assert!(cpu.write_u64(f, 1).is_err());
}

#[test]
fn unchecked_touches_in_a_child() {
    let (_g, mut e) = engine();
    let d = region(&mut e, 0x2000, CpuPolicy::DummyPage);
    let f = region(&mut e, 0x2000, CpuPolicy::Fault);
    let a = e.svm_alloc(0x1000, None, &["gpu40"], false).unwrap();
    e.cpu_backend_mut().write_u64(a, 0xfeed).unwrap();
    assert_eq!(touch_in_child(f, false).unwrap(), Touch::Signal(SIGSEGV));
    assert_eq!(
        touch_in_child(f + 0x1ff8, true).unwrap(),
        Touch::Signal(SIGSEGV)
    );
    assert_eq!(touch_in_child(d, false).unwrap(), Touch::Completed);
    assert_eq!(touch_in_child(d, true).unwrap(), Touch::Signal(SIGSEGV));
    assert_eq!(touch_in_child(a, true).unwrap(), Touch::Completed);
    // The child's store wrote back what it read: nothing changed here.
    assert_eq!(e.cpu_backend().read_u64(a).unwrap(), 0xfeed);
    // A range freed to the system is gone.
    e.svm_free(a).unwrap();
    assert_eq!(touch_in_child(a, false).unwrap(), Touch::Signal(SIGSEGV));
    assert!(touch_in_child(a + 1, false).is_err());
    assert_eq!(
        Touch::Signal(SIGSEGV).to_string(),
        "killed by SIGSEGV",
        "the report names the signal"
    );
}
