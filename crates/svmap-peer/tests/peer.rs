//! Two processes at identical addresses: the device peer.
//!
//! The peer is this test binary itself, re-executed to run only
//! `peer_role`, which serves the socket it inherited when `SVMAP_PEER_FD`
//! is set (and does nothing in a normal test run).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use svmap_linux::maps::{self, Kind, Target};
use svmap_peer::{
    checksum_step, device, DeviceAccess, Peer, PeerConfig, PeerError, SvmBuf, CHECKSUM_INIT,
    FAILPOINT_ENV, NODE_NEXT, NODE_SIZE, NODE_VALUE, PEER_FD_ENV,
};
use svmap_svm::Fault;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const VA_BITS: u32 = 40;

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

fn config() -> PeerConfig {
    PeerConfig::new(VA_BITS, 256 * MIB)
}

fn start(failpoint: Option<&str>) -> Peer {
    start_with(failpoint, &config())
}

fn start_with(failpoint: Option<&str>, cfg: &PeerConfig) -> Peer {
    let p = Peer::spawn(peer_command(failpoint), cfg).expect("start the peer");
    let (s, e) = p.window();
    assert!(e <= 1 << cfg.va_bits && s < e, "window [{s:#x}, {e:#x})");
    p
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Builds a list of `n` nodes with raw pointers: node `i` lives in buffer
/// `i % bufs.len()`, so consecutive nodes are in different buffers. Returns
/// the head and the checksum computed while building.
#[allow(unsafe_code)]
fn build_list(bufs: &[SvmBuf], n: u64, seed: u64) -> (u64, u64) {
    let k = bufs.len() as u64;
    let addr = |i: u64| {
        let b = &bufs[(i % k) as usize];
        let a = b.addr + (i / k) * NODE_SIZE;
        assert!(a + NODE_SIZE <= b.end(), "buffers too small for {n} nodes");
        a
    };
    let mut s = seed;
    let mut h = CHECKSUM_INIT;
    for i in 0..n {
        let node = addr(i) as *mut u64;
        let next = if i + 1 < n { addr(i + 1) } else { 0 };
        let value = splitmix(&mut s);
        h = checksum_step(h, value);
        // SAFETY: `node` is 16-aligned inside a live SVM buffer (checked by
        // `addr`), mapped read-write in this process while `bufs` are live.
        unsafe {
            node.add((NODE_NEXT / 8) as usize).write(next);
            node.add((NODE_VALUE / 8) as usize).write(value);
        }
    }
    (if n == 0 { 0 } else { addr(0) }, h)
}

/// Walks the list on the CPU side with raw pointers.
#[allow(unsafe_code)]
fn walk_locally(head: u64) -> (u64, u64) {
    let (mut node, mut count, mut h) = (head, 0u64, CHECKSUM_INIT);
    while node != 0 {
        let p = node as *const u64;
        // SAFETY: every node was written by `build_list` into a live buffer.
        let (next, value) = unsafe { (p.read(), p.add(1).read()) };
        h = checksum_step(h, value);
        count += 1;
        node = next;
    }
    (count, h)
}

fn assert_fault(r: Result<impl std::fmt::Debug, PeerError>, fault: Fault, addr: u64) {
    match r {
        Err(PeerError::DeviceFault {
            fault: f, addr: a, ..
        }) if f == fault && a == addr => {}
        other => panic!("expected a {fault} fault at {addr:#x}, got {other:?}"),
    }
}

fn assert_killed(r: Result<impl std::fmt::Debug, PeerError>) {
    match r {
        Err(PeerError::PeerExited { status, .. }) if status.signal == Some(9) => {}
        other => panic!("expected the peer killed by SIGKILL, got {other:?}"),
    }
}

#[test]
fn linked_list_of_120k_nodes_walked_by_the_peer() {
    let t0 = Instant::now();
    let mut peer = start(None);
    let spawn = t0.elapsed();
    // Eight buffers of 512 KiB: room for 262144 nodes; consecutive nodes
    // are in different buffers.
    let t = Instant::now();
    let bufs: Vec<SvmBuf> = (0..8).map(|_| peer.alloc(512 * KIB).unwrap()).collect();
    let per_alloc = t.elapsed() / 8;
    let (ws, we) = peer.window();
    for b in &bufs {
        assert!(b.addr >= ws && b.end() <= we && b.end() <= 1 << VA_BITS);
    }
    // The peer maps every buffer at the identical address, from a memfd.
    let pv = maps::read_view(Target::Pid(peer.pid())).unwrap();
    for b in &bufs {
        let e = pv.entry_at(b.addr).expect("mapped in the peer");
        assert_eq!((e.start, e.end), (b.addr, b.end()));
        assert_eq!(e.kind(), Kind::File);
        assert!(e.name_lossy().contains("memfd:svmap-svm"), "{e:?}");
        assert!(e.perms.shared && e.perms.read && e.perms.write);
    }

    let n = 120_000;
    let (head, built) = build_list(&bufs, n, 42);
    assert_eq!(walk_locally(head), (n, built));
    let t = Instant::now();
    let got = peer.walk_list(head, u64::MAX).unwrap();
    let walk = t.elapsed();
    assert_eq!((got.count, got.checksum), (n, built));

    // A node limit is reported, not a wrong count.
    match peer.walk_list(head, 1000) {
        Err(PeerError::WalkLimit { nodes: 1000 }) => {}
        other => panic!("{other:?}"),
    }
    // The CPU changes the list; the device sees the change at once.
    peer.write_u64(head + NODE_VALUE, 7).unwrap();
    let got = peer.walk_list(head, u64::MAX).unwrap();
    assert_eq!((got.count, got.checksum), walk_locally(head));

    let st = peer.device_stats().unwrap();
    assert_eq!(st.live_buffers, 8);
    assert!(st.installs >= 8 * 128, "{st:?}");
    assert!(st.tlb_hits + st.walks >= 2 * n, "{st:?}");

    // Per-allocation cost with the peer: alloc (memfd + map here, pass,
    // map there, PTEs) and free (invalidate there, then free here).
    let t = Instant::now();
    let more: Vec<SvmBuf> = (0..64).map(|_| peer.alloc(64 * KIB).unwrap()).collect();
    let alloc64 = t.elapsed() / 64;
    let t = Instant::now();
    for b in more {
        peer.free(b).unwrap();
    }
    let free64 = t.elapsed() / 64;
    eprintln!(
        "peer timings: spawn + window agreement {spawn:?} ({} rounds), alloc {per_alloc:?}/buffer \
         (first 8), alloc {alloc64:?} and free {free64:?} per 64 KiB buffer, walk of {n} nodes \
         {walk:?} ({:?}/node); device {st:?}",
        peer.tries(),
        walk / n as u32
    );
    let status = peer.shutdown();
    assert_eq!(status.code, Some(0), "{status}");
}

#[test]
fn sum_and_copy_round_trip() {
    let mut peer = start(None);
    let a = peer.alloc(64 * KIB).unwrap();
    let b = peer.alloc(64 * KIB).unwrap();
    let mut expect = 0u64;
    for i in 0..a.len / 8 {
        let v = i.wrapping_mul(0x9e37_79b9) ^ 0x5555;
        peer.write_u64(a.addr + 8 * i, v).unwrap();
        expect = expect.wrapping_add(v);
    }
    assert_eq!(peer.sum_u64(a.addr, a.len).unwrap(), expect);
    assert_eq!(
        peer.sum_u64(b.addr, b.len).unwrap(),
        0,
        "fresh memfd is zero"
    );

    // Whole-buffer copy by the device, checked by the CPU.
    peer.copy(b.addr, a.addr, a.len).unwrap();
    for i in 0..a.len / 8 {
        assert_eq!(
            peer.read_u64(b.addr + 8 * i).unwrap(),
            peer.read_u64(a.addr + 8 * i).unwrap()
        );
    }
    assert_eq!(peer.sum_u64(b.addr, b.len).unwrap(), expect);
    // Unaligned, crossing a page boundary, between buffers.
    peer.write_u64(a.addr + 4096 - 8, 0x1111_2222_3333_4444)
        .unwrap();
    peer.write_u64(a.addr + 4096, 0x5555_6666_7777_8888)
        .unwrap();
    peer.copy(b.addr + 3, a.addr + 4096 - 8, 16).unwrap();
    assert_eq!(peer.read_u64(b.addr + 3).unwrap(), 0x1111_2222_3333_4444);
    assert_eq!(peer.read_u64(b.addr + 11).unwrap(), 0x5555_6666_7777_8888);
    // Overlapping copy is a memmove.
    for i in 0..4 {
        peer.write_u64(a.addr + 8 * i, i + 1).unwrap();
    }
    peer.copy(a.addr + 8, a.addr, 24).unwrap();
    let got: Vec<u64> = (0..4)
        .map(|i| peer.read_u64(a.addr + 8 * i).unwrap())
        .collect();
    assert_eq!(got, [1, 1, 2, 3]);

    // A buffer the device may only read: reads work, writes fault.
    let ro = peer.alloc_with(16 * KIB, DeviceAccess::ReadOnly).unwrap();
    peer.write_u64(ro.addr, 9).unwrap();
    assert_eq!(peer.sum_u64(ro.addr, ro.len).unwrap(), 9);
    peer.copy(a.addr, ro.addr, 8).unwrap();
    assert_eq!(peer.read_u64(a.addr).unwrap(), 9);
    match peer.copy(ro.addr + 4096, a.addr, 8) {
        Err(PeerError::DeviceFault {
            fault: Fault::Protection,
            addr,
            write: true,
        }) if addr == ro.addr + 4096 => {}
        other => panic!("{other:?}"),
    }
    // A bad request is the peer's typed refusal, and the peer keeps serving.
    assert!(matches!(
        peer.sum_u64(a.addr + 4, 8),
        Err(PeerError::Remote { .. })
    ));
    assert_eq!(peer.sum_u64(ro.addr, 8).unwrap(), 9);
}

#[test]
fn freed_buffer_faults_in_the_peer_and_its_range_is_reused() {
    let mut peer = start(None);
    let a = peer.alloc(64 * KIB).unwrap();
    let b = peer.alloc(64 * KIB).unwrap();
    let c = peer.alloc(64 * KIB).unwrap();
    // A list through a, b and c.
    let (head, sum) = build_list(&[a, b, c], 3000, 7);
    assert_eq!(peer.walk_list(head, u64::MAX).unwrap().checksum, sum);
    for i in 0..b.len / 8 {
        peer.write_u64(b.addr + 8 * i, 1).unwrap();
    }
    assert_eq!(peer.sum_u64(b.addr, b.len).unwrap(), b.len / 8);

    peer.free(b).unwrap();
    let st = peer.device_stats().unwrap();
    assert_eq!((st.last_seq, st.live_buffers), (1, 2), "{st:?}");
    assert!(st.invalidations >= 1);
    // Every device access to the freed range faults, from the TLB's point
    // of view too (the walk above filled it with b's pages).
    assert_fault(peer.sum_u64(b.addr, 8), Fault::Unmapped, b.addr);
    assert_fault(peer.sum_u64(b.end() - 8, 8), Fault::Unmapped, b.end() - 8);
    // The list's second node is in b.
    assert_fault(peer.walk_list(head, u64::MAX), Fault::Unmapped, b.addr);
    assert_fault(peer.copy(a.addr, b.addr, 8), Fault::Unmapped, b.addr);
    // In the peer the range is PROT_NONE reservation again.
    let pv = maps::read_view(Target::Pid(peer.pid())).unwrap();
    let e = pv.entry_at(b.addr).unwrap();
    assert!(
        !e.perms.read && !e.perms.write && e.kind() == Kind::Anonymous,
        "{e:?}"
    );
    // The CPU side no longer knows it either.
    assert!(matches!(
        peer.read_u64(b.addr),
        Err(PeerError::NotMapped { .. })
    ));
    assert!(matches!(peer.free(b), Err(PeerError::NotMapped { .. })));

    // The range is reused for a new buffer, which the device sees fresh.
    let b2 = peer.alloc(64 * KIB).unwrap();
    assert_eq!(b2.addr, b.addr);
    assert_ne!(b2.id, b.id);
    assert_eq!(peer.sum_u64(b2.addr, b2.len).unwrap(), 0);
    for i in 0..b2.len / 8 {
        peer.write_u64(b2.addr + 8 * i, 3).unwrap();
    }
    assert_eq!(peer.sum_u64(b2.addr, b2.len).unwrap(), 3 * (b2.len / 8));
    let (head, sum) = build_list(&[a, b2, c], 3000, 8);
    let w = peer.walk_list(head, u64::MAX).unwrap();
    assert_eq!((w.count, w.checksum), (3000, sum));
    peer.free(b2).unwrap();
    assert_eq!(peer.device_stats().unwrap().last_seq, 2);
}

#[test]
fn addresses_outside_the_device_fault() {
    let mut peer = start(None);
    let a = peer.alloc(16 * KIB).unwrap();
    let limit = 1u64 << VA_BITS;
    assert_fault(peer.sum_u64(limit, 8), Fault::OutOfRange, limit);
    assert_fault(peer.sum_u64(1 << 46, 8), Fault::OutOfRange, 1 << 46);
    // A list whose third node lies above the device's limit.
    peer.write_u64(a.addr, a.addr + 16).unwrap();
    peer.write_u64(a.addr + 16, limit + 0x1000).unwrap();
    assert_fault(
        peer.walk_list(a.addr, 10),
        Fault::OutOfRange,
        limit + 0x1000,
    );
    // Inside the window but in no buffer; and null-ish addresses.
    let (ws, we) = peer.window();
    let hole = if a.addr > ws { ws } else { we - 4096 };
    assert_fault(peer.sum_u64(hole, 8), Fault::Unmapped, hole);
    assert_fault(peer.walk_list(0x1000, 1), Fault::Unmapped, 0x1000);
    // A copy whose tail crosses into the device's limit faults there.
    assert_fault(peer.copy(a.addr, limit - 8, 16), Fault::Unmapped, limit - 8);
}

#[test]
fn peer_killed_mid_walk_leaves_the_cpu_side_intact() {
    let mut peer = start(Some("die-walk:50000"));
    let bufs: Vec<SvmBuf> = (0..4).map(|_| peer.alloc(512 * KIB).unwrap()).collect();
    let (head, sum) = build_list(&bufs, 100_000, 3);
    assert_killed(peer.walk_list(head, u64::MAX));
    assert_eq!(peer.exit_status().unwrap().signal, Some(9));
    // The CPU's memory and structure are intact and usable.
    assert_eq!(walk_locally(head), (100_000, sum));
    peer.write_u64(bufs[0].addr, peer.read_u64(bufs[0].addr).unwrap())
        .unwrap();
    // Device operations report the dead peer; no hang.
    assert_killed(peer.sum_u64(bufs[1].addr, 8));
    assert_killed(peer.alloc(4096));
    // Freeing needs no invalidation any more: the device is gone.
    peer.free(bufs[3]).unwrap();
    assert_eq!(peer.buffers().count(), 3);
    assert!(peer.read_u64(bufs[3].addr).is_err());
    assert_ne!(peer.read_u64(bufs[2].addr + NODE_VALUE).unwrap(), 0);
}

#[test]
fn peer_killed_while_mapping_a_buffer() {
    let mut peer = start(Some("die-map:3"));
    let a = peer.alloc(64 * KIB).unwrap();
    let b = peer.alloc(64 * KIB).unwrap();
    peer.write_u64(a.addr, 11).unwrap();
    peer.write_u64(b.addr + 8, 22).unwrap();
    // The third map: the peer maps it and dies before answering.
    assert_killed(peer.alloc(64 * KIB));
    assert_eq!(peer.buffers().collect::<Vec<_>>(), [a, b]);
    assert_eq!(peer.read_u64(a.addr).unwrap(), 11);
    assert_eq!(peer.read_u64(b.addr + 8).unwrap(), 22);
    peer.free(a).unwrap();
    peer.free(b).unwrap();
}

#[test]
fn peer_killed_from_outside() {
    let mut peer = start(None);
    let a = peer.alloc(64 * KIB).unwrap();
    peer.write_u64(a.addr, 5).unwrap();
    assert_eq!(peer.sum_u64(a.addr, 8).unwrap(), 5);
    let st = Command::new("kill")
        .args(["-KILL", &peer.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_killed(peer.sum_u64(a.addr, 8));
    assert_eq!(peer.read_u64(a.addr).unwrap(), 5);
    peer.free(a).unwrap();
}

#[test]
fn a_hung_peer_times_out_and_is_killed() {
    // The timeout bounds every wait on the peer (its start, the alloc and
    // the write below too), so it is short enough to keep the test quick
    // but long enough for a loaded machine to answer the calls that do not
    // hang.
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(2);
    let mut peer = start_with(Some("hang-walk"), &cfg);
    let a = peer.alloc(64 * KIB).unwrap();
    peer.write_u64(a.addr + 8, 1).unwrap();
    let t = Instant::now();
    match peer.walk_list(a.addr, 10) {
        Err(PeerError::Timeout { after, .. }) => assert_eq!(after, cfg.timeout),
        other => panic!("{other:?}"),
    }
    // A guard against a wait that never ends, not a speed check.
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(peer.exit_status().unwrap().signal, Some(9));
    assert_eq!(peer.read_u64(a.addr + 8).unwrap(), 1);
    assert_killed(peer.sum_u64(a.addr, 8));
}

#[test]
fn a_malformed_answer_is_a_typed_error() {
    let mut peer = start(Some("garbage-sum"));
    let a = peer.alloc(64 * KIB).unwrap();
    peer.write_u64(a.addr, 77).unwrap();
    match peer.sum_u64(a.addr, 8) {
        Err(PeerError::Malformed { reason, .. }) => assert!(reason.contains("header"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(peer.exit_status().is_some());
    assert_eq!(peer.read_u64(a.addr).unwrap(), 77);
}

#[test]
fn device_with_large_pages_and_a_bad_config() {
    // 64 KiB device pages: buffers are rounded to whole device pages.
    let mut cfg = config();
    cfg.page_size = 64 * KIB;
    let mut peer = start_with(None, &cfg);
    let a = peer.alloc(4096).unwrap();
    assert_eq!((a.len, a.addr % (64 * KIB)), (64 * KIB, 0));
    peer.write_u64(a.addr + 64 * KIB - 8, 3).unwrap();
    assert_eq!(peer.sum_u64(a.addr, a.len).unwrap(), 3);
    drop(peer);

    let mut bad = config();
    bad.page_size = 3000;
    assert!(matches!(
        Peer::spawn(peer_command(None), &bad),
        Err(PeerError::InvalidArgument { .. })
    ));
    // A window that cannot exist in both: more than the device can address.
    let mut big = config();
    big.va_bits = 30;
    big.window_len = 2 << 30;
    assert!(matches!(
        Peer::spawn(peer_command(None), &big),
        Err(PeerError::NoCommonWindow { .. })
    ));
}

#[test]
fn a_lost_race_leads_to_a_new_round() {
    // The peer loses round 1 to a mapping that appears at the agreed
    // address; both sides agree on another window in round 2.
    let mut peer = start(Some("steal-window"));
    assert_eq!(peer.tries(), 2);
    let (ws, we) = peer.window();
    let pv = maps::read_view(Target::Pid(peer.pid())).unwrap();
    // The window is reserved in the peer, and the canary is intact next to
    // it (adjacent PROT_NONE anonymous mappings merge into one VMA) or
    // elsewhere.
    let w = pv.entry_at(ws).unwrap();
    assert!(w.start <= ws && w.end >= we && !w.perms.read, "{w:?}");
    let canary = pv.entry_at(we).is_some_and(|e| !e.perms.read)
        || pv
            .entries
            .iter()
            .any(|e| e.len() == 4096 && !e.perms.read && e.end <= 1 << VA_BITS);
    assert!(canary, "no canary page in the peer");
    let a = peer.alloc(4096).unwrap();
    peer.write_u64(a.addr, 1).unwrap();
    assert_eq!(peer.sum_u64(a.addr, 8).unwrap(), 1);
}
