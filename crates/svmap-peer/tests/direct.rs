//! The direct mode of the device peer: a batch of ranges invalidated,
//! acknowledged and unmapped in one request, the peer's own mappings, and
//! a peer of another protocol version.
//!
//! The peer is this test binary itself, re-executed to run only
//! `peer_role`, which serves the socket it inherited when `SVMAP_PEER_FD`
//! is set (and does nothing in a normal test run).

#![allow(unsafe_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

use svmap_linux::maps::{self, Kind, Target};
use svmap_linux::reserve::{Reservation, ReserveRequest};
use svmap_linux::sparse::SparseHeap;
use svmap_peer::wire::{self, RANGES_PER_PACKET};
use svmap_peer::{device, DirectPeer, Peer, PeerConfig, PeerError, FAILPOINT_ENV, PEER_FD_ENV};
use svmap_svm::{Fault, Prot};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

#[test]
fn peer_role() {
    if std::env::var_os(PEER_FD_ENV).is_some() {
        std::process::exit(device::serve_from_env());
    }
}

fn peer_command(failpoint: Option<&str>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "peer_role",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .stdout(Stdio::null())
    .env_remove(FAILPOINT_ENV);
    if let Some(f) = failpoint {
        c.env(FAILPOINT_ENV, f);
    }
    c
}

fn config(va_bits: u32) -> PeerConfig {
    let mut c = PeerConfig::new(va_bits, 1);
    c.timeout = Duration::from_secs(30);
    c
}

fn direct(va_bits: u32) -> DirectPeer {
    DirectPeer::spawn(peer_command(None), &config(va_bits)).expect("start the peer")
}

/// Writes words derived from `seed` over `[a, a + len)`; their wrapping sum.
fn fill(a: u64, len: u64, seed: u64) -> u64 {
    let mut sum = 0u64;
    for (k, w) in (a..a + len).step_by(8).enumerate() {
        let v = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k as u64;
        // SAFETY: [a, a + len) is a live read-write buffer of the heap.
        unsafe { std::ptr::write_volatile(w as *mut u64, v) };
        sum = sum.wrapping_add(v);
    }
    sum
}

fn assert_unmapped(p: &mut DirectPeer, a: u64) {
    match p.sum_u64(a, 8) {
        Err(PeerError::DeviceFault {
            fault: Fault::Unmapped,
            addr,
            ..
        }) => assert_eq!(addr, a),
        other => panic!("device access at {a:#x} after the batch: {other:?}"),
    }
}

#[test]
fn a_batch_is_invalidated_and_unmapped_in_one_request() {
    let res = Reservation::reserve(&ReserveRequest::below_bits(40, 4 * MIB).unwrap()).unwrap();
    let mut heap = SparseHeap::new(res, false).unwrap();
    let (hs, he) = (heap.start(), heap.end());
    let mut p = direct(40);
    p.attach(hs, he - hs, heap.fd()).unwrap();
    let len = 64 * KIB;
    let mut bufs = Vec::new();
    for k in 0..4u64 {
        let a = heap.alloc(len, 4 * KIB).unwrap();
        let sum = fill(a, len, k + 1);
        p.map_range(a, len, Prot::ReadWrite).unwrap();
        assert_eq!(p.sum_u64(a, len).unwrap(), sum);
        bufs.push((a, sum));
    }
    let before = p.device_stats().unwrap();
    assert_eq!(before.live_buffers, 4);
    // Buffers 0 and 2 in one request: one round trip.
    let r0 = p.requests();
    let seq = p
        .invalidate_unmap(&[(bufs[0].0, len), (bufs[2].0, len)])
        .unwrap();
    assert_eq!(p.requests(), r0 + 1);
    assert!(seq > before.last_seq);
    assert_unmapped(&mut p, bufs[0].0);
    assert_unmapped(&mut p, bufs[2].0);
    for &(a, sum) in [bufs[1], bufs[3]].iter() {
        assert_eq!(p.sum_u64(a, len).unwrap(), sum, "untouched at {a:#x}");
    }
    let after = p.device_stats().unwrap();
    assert_eq!((after.live_buffers, after.last_seq), (2, seq));
    // A batch with one bad range (not whole pages) changes nothing.
    match p.invalidate_unmap(&[(bufs[1].0, len), (bufs[3].0 + 1, len)]) {
        Err(PeerError::Remote { code, .. }) => assert_eq!(code, wire::code::BAD_RANGE),
        other => panic!("a batch with an unaligned range: {other:?}"),
    }
    assert_eq!(p.sum_u64(bufs[1].0, len).unwrap(), bufs[1].1);
    assert_eq!(p.device_stats().unwrap().last_seq, seq);
    // Empty and oversized batches are refused here, without a request.
    let r1 = p.requests();
    for n in [0, RANGES_PER_PACKET + 1] {
        assert!(matches!(
            p.invalidate_unmap(&vec![(bufs[1].0, len); n]),
            Err(PeerError::InvalidArgument { .. })
        ));
    }
    assert_eq!(p.requests(), r1);
    // The whole heap in a batch: the attachment goes with it, so a map
    // there is refused until the heap is attached again.
    p.invalidate_unmap(&[(hs, he - hs)]).unwrap();
    assert_unmapped(&mut p, bufs[1].0);
    assert!(matches!(
        p.map_range(bufs[1].0, len, Prot::ReadWrite),
        Err(PeerError::Remote { code, .. }) if code == wire::code::BAD_RANGE
    ));
    p.attach(hs, he - hs, heap.fd()).unwrap();
    p.map_range(bufs[1].0, len, Prot::ReadWrite).unwrap();
    assert_eq!(p.sum_u64(bufs[1].0, len).unwrap(), bufs[1].1);
    assert_eq!(p.shutdown().code, Some(0));
}

#[test]
fn the_peer_reports_its_own_mappings_and_an_attach_over_one_fails() {
    let mut p = direct(47);
    let own = p.own_maps().unwrap();
    assert!(!own.is_empty());
    assert!(
        own.windows(2).all(|w| w[0].1 <= w[1].0),
        "ascending, disjoint"
    );
    // The peer's stack as this process reads it from /proc/PID/maps.
    let view = maps::read_view(Target::Pid(p.pid())).unwrap();
    let stack = view
        .entries
        .iter()
        .find(|e| e.kind() == Kind::Stack)
        .map(|e| (e.start, e.end))
        .expect("the peer has a [stack]");
    assert!(
        own.iter()
            .any(|&(s, e, down)| s <= stack.0 && e == stack.1 && down),
        "stack {stack:#x?} not among the peer's own mappings"
    );
    // Attaching a heap over the peer's stack fails there (EEXIST), and the
    // peer keeps serving.
    let res = Reservation::reserve(&ReserveRequest::below_bits(40, 64 * KIB).unwrap()).unwrap();
    let heap = SparseHeap::new(res, false).unwrap();
    match p.attach(stack.0, 64 * KIB, heap.fd()) {
        Err(PeerError::Remote { code, message }) => {
            assert_eq!(code, wire::code::BAD_RANGE, "{message}")
        }
        other => panic!("attach over the peer's stack: {other:?}"),
    }
    assert!(p.own_maps().unwrap().iter().any(|&(_, e, _)| e == stack.1));
    assert_eq!(p.shutdown().code, Some(0));
}

#[test]
fn a_peer_of_another_version_is_refused() {
    let want = (wire::VERSION, wire::VERSION - 1);
    match DirectPeer::spawn(peer_command(Some("old-version")), &config(40)) {
        Err(PeerError::VersionMismatch { ours, theirs }) => assert_eq!((ours, theirs), want),
        other => panic!("direct peer of an older version: {other:?}"),
    }
    let mut cfg = config(40);
    cfg.window_len = 16 * MIB;
    match Peer::spawn(peer_command(Some("old-version")), &cfg) {
        Err(PeerError::VersionMismatch { ours, theirs }) => assert_eq!((ours, theirs), want),
        other => panic!("peer of an older version: {other:?}"),
    }
}

/// Two device processes work on their batches at the same time: both
/// requests go out before either answer is read; while a batch is in
/// flight every other request is refused without being sent.
#[test]
fn batches_in_flight_on_two_peers() {
    let res = Reservation::reserve(&ReserveRequest::below_bits(40, 4 * MIB).unwrap()).unwrap();
    let mut heap = SparseHeap::new(res, false).unwrap();
    let (hs, he) = (heap.start(), heap.end());
    let mut peers = [direct(40), direct(40)];
    let len = 64 * KIB;
    let a = heap.alloc(len, 4 * KIB).unwrap();
    let sum = fill(a, len, 5);
    for p in &mut peers {
        p.attach(hs, he - hs, heap.fd()).unwrap();
        p.map_range(a, len, Prot::ReadWrite).unwrap();
        assert_eq!(p.sum_u64(a, len).unwrap(), sum);
    }
    let r0: Vec<u64> = peers.iter().map(|p| p.requests()).collect();
    for p in &mut peers {
        p.send_invalidate_unmap(&[(a, len)]).unwrap();
        assert!(p.in_flight());
    }
    // Refused while in flight, and nothing sent.
    assert!(matches!(
        peers[0].sum_u64(a, 8),
        Err(PeerError::InvalidArgument { .. })
    ));
    assert!(matches!(
        peers[0].send_invalidate_unmap(&[(a, len)]),
        Err(PeerError::InvalidArgument { .. })
    ));
    assert!(matches!(
        peers[0].own_maps(),
        Err(PeerError::InvalidArgument { .. })
    ));
    for (i, p) in peers.iter_mut().enumerate() {
        assert_eq!(p.requests(), r0[i] + 1);
        let seq = p.finish_invalidate_unmap().unwrap();
        assert!(!p.in_flight());
        assert_eq!(p.device_stats().unwrap().last_seq, seq);
        assert_unmapped(p, a);
    }
    // Nothing in flight: finishing is refused.
    assert!(matches!(
        peers[1].finish_invalidate_unmap(),
        Err(PeerError::InvalidArgument { .. })
    ));
}
