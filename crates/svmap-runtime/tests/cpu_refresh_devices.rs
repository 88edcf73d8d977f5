//! A refresh of the CPU space with device processes attached: the ranges
//! a device process holds by its own means (its binary, libraries, stack)
//! are not svmap's on the CPU, so a refresh finds no conflict with them,
//! and svmap's SVM ranges and device-only regions come through unchanged.
//!
//! The device process is this test binary itself, re-executed to run only
//! `peer_role`.

mod common;
use common::peer_command;

use svmap_peer::PeerConfig;
use svmap_runtime::{refresh_from_self, seed_from_self, svm_alloc, LinuxCpu, PeerDevice};
use svmap_svm::{CpuPolicy, DeviceConfig, Engine};

#[test]
fn refresh_with_a_device_process_finds_no_conflict() {
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let mut e: Engine<LinuxCpu, PeerDevice> = Engine::new(Default::default(), cpu);
    seed_from_self(&mut e).unwrap();
    let dev = PeerDevice::spawn(peer_command(None), &PeerConfig::new(47, 1), dir).unwrap();
    e.add_device_with(DeviceConfig::new("gpu47", 47), dev)
        .unwrap();
    let a = svm_alloc(&mut e, 0x10000, None, &["gpu47"], false).unwrap();
    let r = svm_alloc(&mut e, 0x10000, None, &["gpu47"], false).unwrap();
    e.svm_free(r).unwrap();
    e.device_map("gpu47", r, r + 0x10000, CpuPolicy::Fault)
        .unwrap();
    let owned = e.owned_cpu_ranges();
    // The two ranges, merged where they touch (the list is merged).
    let (lo, hi) = if a < r { (a, r) } else { (r, a) };
    let want = if lo + 0x10000 == hi {
        vec![(lo, hi + 0x10000)]
    } else {
        vec![(lo, lo + 0x10000), (hi, hi + 0x10000)]
    };
    assert_eq!(owned, want, "only svmap's own ranges are owned");
    let report = refresh_from_self(&mut e).unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(e.owned_cpu_ranges(), owned);
    assert!(e.alloc_at(a).is_some());
    assert_eq!(e.reservation_at(r), Some(CpuPolicy::Fault));
    // Nothing entered overlaps svmap's ranges.
    for &(s, x) in &report.entered {
        assert!(owned.iter().all(|&(o, oe)| x <= o || oe <= s));
    }
    e.svm_free(a).unwrap();
}
