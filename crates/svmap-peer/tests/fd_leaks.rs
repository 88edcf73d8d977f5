//! Failing operations close every descriptor they opened. One test in its
//! own binary, so no other test thread opens descriptors meanwhile.

use std::process::Command;

use svmap_linux::heap::Heap;
use svmap_peer::{Peer, PeerConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn failing_operations_leak_no_descriptors() {
    let before = open_fds();
    for _ in 0..4 {
        // exec fails: the socketpair (both ends) is closed again.
        assert!(Peer::spawn(
            Command::new("/nonexistent/svmap-peer"),
            &PeerConfig::new(40, 1 << 20)
        )
        .is_err());
        // The child runs but is no peer: the handshake fails and the child
        // is reaped, its socket closed.
        assert!(Peer::spawn(Command::new("true"), &PeerConfig::new(40, 1 << 20)).is_err());
        // A bad configuration fails before anything is opened.
        assert!(Peer::spawn(Command::new("true"), &PeerConfig::new(70, 1 << 20)).is_err());
    }
    assert_eq!(
        open_fds(),
        before,
        "a failed Peer::spawn leaked descriptors"
    );

    let mut heap = Heap::below_bits(40, 1 << 20).unwrap();
    let before = open_fds();
    for _ in 0..8 {
        assert!(heap.alloc(2 << 20, 1).is_err()); // no room
        assert!(heap.alloc(u64::MAX, 1).is_err()); // overflows
        let p = heap.alloc(4096, 1).unwrap();
        assert_eq!(open_fds(), before + 1, "one memfd per live buffer");
        heap.free(p).unwrap();
        assert!(heap.free(p).is_err()); // a second free is refused
    }
    assert_eq!(open_fds(), before, "heap failures leaked descriptors");
    drop(heap);
}
