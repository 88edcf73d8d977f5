//! The runtime started with device processes ([`svmap_runtime::start`]):
//! allocations sent to every device before any answer is awaited (a map
//! in flight holds the peer's other requests back), an allocation undone
//! on the live device when the other one died, and a removed device's
//! device-only region given back to the CPU.
//!
//! The device processes are this test binary itself, re-executed to run
//! only `peer_role`, which serves the socket it inherited when
//! `SVMAP_PEER_FD` is set (and does nothing in a normal test run).

mod common;
use common::{peer_command, serial};

use std::time::Duration;

use svmap_linux::reserve::Reservation;
use svmap_peer::{PeerConfig, PeerError};
use svmap_runtime::{start, LinuxCpu, PeerDevice, StartConfig};
use svmap_svm::{
    BackendError, CpuPolicy, DeviceConfig, Engine, EngineError, Fault, ModelDevice, Prot,
};

const DEVS: [(&str, u32); 2] = [("gpu40", 40), ("gpu44", 44)];
const BOTH: [&str; 2] = ["gpu40", "gpu44"];

type Real = Engine<LinuxCpu, PeerDevice>;

fn started() -> (Real, Vec<(u64, u64)>) {
    let cpu = LinuxCpu::new(false);
    let dir = cpu.directory();
    let devices = DEVS
        .iter()
        .map(|&(name, bits)| {
            let mut cfg = PeerConfig::new(bits, 1);
            cfg.timeout = Duration::from_secs(30);
            let dev = PeerDevice::spawn(peer_command(None), &cfg, dir.clone())
                .expect("start the device process");
            (DeviceConfig::new(name, bits), dev)
        })
        .collect();
    let s = start(&StartConfig::default(), cpu, devices).unwrap();
    (s.engine, s.window.reserved)
}

fn requests(e: &Real) -> [u64; 2] {
    let d = e.device_backends();
    [d[0].requests(), d[1].requests()]
}

fn assert_unmapped(e: &mut Real, i: usize, a: u64) {
    match e.device_backends_mut()[i].peer().sum_u64(a, 8) {
        Err(PeerError::DeviceFault {
            fault: Fault::Unmapped,
            addr,
            ..
        }) => assert_eq!(addr, a),
        other => panic!("device {i} at {a:#x}: {other:?}"),
    }
}

/// Both device processes map each buffer (one request each once the heap
/// is attached), inside the start-up window, and read what the CPU wrote;
/// a mapping in flight holds the peer's other requests back until it is
/// finished.
#[test]
fn allocations_go_to_both_device_processes_at_once() {
    let _one = serial();
    let (mut e, pieces) = started();
    let first = e.svm_alloc(0x4000, None, &BOTH, false).unwrap();
    let before = requests(&e);
    let mut live = Vec::new();
    for k in 0..8u64 {
        let a = e.svm_alloc(0x4000, None, &BOTH, false).unwrap();
        assert!(pieces.iter().any(|&(s, t)| s <= a && a + 0x4000 <= t));
        e.cpu_backend_mut().write_u64(a + 8, k + 1).unwrap();
        live.push((a, k + 1));
    }
    // The heap was attached by the first allocation: one MapRange each.
    let after = requests(&e);
    assert_eq!([after[0] - before[0], after[1] - before[1]], [8, 8]);
    for &(a, v) in &live {
        for i in 0..2 {
            let sum = e.device_backends_mut()[i]
                .peer()
                .sum_u64(a, 0x4000)
                .unwrap();
            assert_eq!(sum, v, "device {i} at {a:#x}");
        }
    }
    // The halves on one peer: while a mapping is in flight every other
    // request is refused; once finished the peer answers again.
    let (a, _) = live[0];
    e.protect(a, 0x4000, Prot::Read).unwrap();
    e.protect(a, 0x4000, Prot::ReadWrite).unwrap();
    let mut peer = e.device_backends_mut()[0].peer();
    peer.invalidate_unmap(&[(a, 0x4000)]).unwrap();
    peer.send_map_range(a, 0x4000, Prot::ReadWrite).unwrap();
    assert!(peer.in_flight());
    assert!(matches!(
        peer.sum_u64(a, 8),
        Err(PeerError::InvalidArgument { .. })
    ));
    assert!(matches!(
        peer.finish_invalidate_unmap(),
        Err(PeerError::InvalidArgument { .. })
    ));
    peer.finish_map_range().unwrap();
    assert!(!peer.in_flight());
    assert_eq!(peer.sum_u64(a, 0x4000).unwrap(), 1);
    assert!(matches!(
        peer.finish_map_range(),
        Err(PeerError::InvalidArgument { .. })
    ));
    drop(peer);
    let mut all: Vec<u64> = live.iter().map(|&(a, _)| a).collect();
    all.push(first);
    e.svm_free_many(&all).unwrap();
    for &(a, _) in &live {
        assert_unmapped(&mut e, 0, a);
        assert_unmapped(&mut e, 1, a);
    }
    e.check_invariants();
}

/// A device process that died: an allocation for both fails; the undo
/// asks every device, the dead one too (its map may have mapped part of
/// the range), so the error names the dead device's missing
/// acknowledgement; the live device that mapped the range has it undone
/// (its access faults), and the range stays a pending free until the dead
/// device is removed; then the same request for the live device alone
/// gets the same address.
#[test]
fn an_allocation_is_undone_on_the_live_device_when_the_other_died() {
    let _one = serial();
    let (mut e, _) = started();
    // Attach the heap in both peers first.
    let warm = e.svm_alloc(0x4000, None, &BOTH, false).unwrap();
    e.svm_free(warm).unwrap();
    let pid = e.device_backends()[1].pid();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let at = match e.svm_alloc(0x4000, None, &BOTH, false) {
        Err(EngineError::NotAcknowledged {
            device,
            start,
            error: BackendError::Gone { .. },
            ..
        }) => {
            assert_eq!(device, "gpu44");
            start
        }
        other => panic!("allocation with a dead device: {other:?}"),
    };
    assert!(e.alloc_at(at).is_some());
    assert_eq!(e.pending_frees(), [at]);
    assert_unmapped(&mut e, 0, at);
    // Removing it: it cannot detach the range (it is gone), and the
    // pending free completes without it.
    let r = e.remove_device("gpu44").unwrap();
    assert!(r.detached.is_err());
    assert_eq!(r.freed, [at]);
    assert!(e.alloc_at(at).is_none());
    assert!(e.pending_frees().is_empty());
    let again = e.svm_alloc(0x4000, None, &["gpu40"], false).unwrap();
    assert_eq!(again, at);
    e.cpu_backend_mut().write_u64(again, 7).unwrap();
    assert_eq!(
        e.device_backends_mut()[0]
            .peer()
            .sum_u64(again, 0x4000)
            .unwrap(),
        7
    );
    e.svm_free(again).unwrap();
    e.check_invariants();
}

/// A removed device's device-only region is given back on the CPU: the
/// range that was svmap's fault mapping can be mapped by anyone after.
#[test]
fn a_removed_device_gives_its_region_back_on_this_process() {
    let _one = serial();
    let s = start(
        &StartConfig {
            window: Some(64 << 20),
            ..StartConfig::default()
        },
        LinuxCpu::new(false),
        vec![
            (DeviceConfig::new("gpu40", 40), ModelDevice),
            (DeviceConfig::new("gpu44", 44), ModelDevice),
        ],
    )
    .unwrap();
    let mut e = s.engine;
    // A free range below the window for the region: found by reserving it
    // and letting it go again (the engine's model has it free).
    let len = 1u64 << 20;
    let probe =
        Reservation::reserve(&svmap_linux::reserve::ReserveRequest::below_bits(39, len).unwrap())
            .unwrap();
    let r0 = probe.addr();
    drop(probe);
    for policy in [CpuPolicy::Fault, CpuPolicy::DummyPage] {
        e.device_map("gpu44", r0, r0 + len, policy).unwrap();
        // svmap's mapping is there: nobody else can map the range.
        assert!(Reservation::at(r0, len).is_err());
        if policy == CpuPolicy::DummyPage {
            assert_eq!(e.cpu_backend().read_u64(r0).unwrap(), 0);
        }
        let regions = e.cpu_backend().regions();
        let r = e.remove_device("gpu44").unwrap();
        assert_eq!(r.released, Ok(vec![(r0, r0 + len)]));
        assert_eq!(e.cpu_backend().regions(), regions - 1);
        assert_eq!(e.reservation_at(r0), None);
        // Free on this process: a MAP_FIXED_NOREPLACE mapping succeeds.
        let taken = Reservation::at(r0, len).unwrap();
        drop(taken);
        e.check_invariants();
        e.add_device_with(DeviceConfig::new("gpu44", 44), ModelDevice)
            .unwrap();
    }
}
