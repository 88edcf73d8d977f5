//! A device peer at its own address-space limit: the peer runs under
//! `ulimit -v`, cannot reserve the agreed window, and the CPU side's error
//! names the peer's `RLIMIT_AS` with the peer's numbers (not a bare
//! "Cannot allocate memory").
//!
//! The peer is this test binary itself, re-executed through `sh -c 'ulimit
//! -v KIB && exec ...'` to run only `peer_role`.

use std::process::{Command, Stdio};

use svmap_linux::error::Error;
use svmap_peer::{device, Peer, PeerConfig, PeerError, FAILPOINT_ENV, PEER_FD_ENV};

const GIB: u64 = 1 << 30;
/// The peer's `ulimit -v`, in KiB: 4 GiB, far above what the test binary
/// maps and far below the window.
const PEER_AS_KIB: u64 = 4 << 20;
/// The window: 16 GiB, which cannot fit under the peer's limit.
const WINDOW: u64 = 16 * GIB;

#[test]
fn peer_role() {
    if std::env::var_os(PEER_FD_ENV).is_some() {
        std::process::exit(device::serve_from_env());
    }
}

/// This binary as a peer under `ulimit -v kib`. `sh` execs it, so the
/// peer keeps the pid `Peer::spawn` saw and the socket it inherited.
fn peer_under_as_limit(kib: u64) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(std::env::current_exe().expect("the test binary's path"))
        .args([
            "--exact",
            "peer_role",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .stdout(Stdio::null())
        .env_remove(FAILPOINT_ENV);
    c
}

#[test]
fn the_peers_address_space_limit_reaches_the_cpu_side_with_its_numbers() {
    let cfg = PeerConfig::new(40, WINDOW);
    let err = match Peer::spawn(peer_under_as_limit(PEER_AS_KIB), &cfg) {
        Ok(p) => panic!(
            "a {WINDOW:#x}-byte window was agreed with a peer under ulimit -v {PEER_AS_KIB}: {:#x?}",
            p.window()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    let limit = PEER_AS_KIB * 1024;
    match &err {
        PeerError::PeerLimit {
            len,
            source:
                Error::AddressSpaceLimit {
                    len: grows,
                    vm_size,
                    limit: lim,
                    ..
                },
            ..
        } => {
            assert_eq!(*len, WINDOW, "{msg}");
            assert_eq!(*grows, WINDOW, "{msg}");
            assert_eq!(*lim, limit, "the peer's RLIMIT_AS: {msg}");
            assert!(
                *vm_size > 0 && *vm_size < limit && vm_size + grows > limit,
                "{msg}"
            );
        }
        other => panic!("not the peer's address-space limit: {other:?}"),
    }
    assert!(
        msg.contains("device peer")
            && msg.contains("RLIMIT_AS")
            && msg.contains(&format!("{limit:#x}")),
        "{msg}"
    );
    assert!(!msg.contains("Cannot allocate memory"), "{msg}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the limit is the source: {msg}"
    );
}

/// Under a limit the window fits in, the same peer agrees on a window: the
/// limit error above is not a side effect of starting it through `sh`.
#[test]
fn a_window_under_the_peers_limit_is_agreed() {
    let cfg = PeerConfig::new(40, 256 << 20);
    let p = Peer::spawn(peer_under_as_limit(PEER_AS_KIB), &cfg).expect("a 256 MiB window");
    let (s, e) = p.window();
    assert_eq!(e - s, 256 << 20);
    let status = p.shutdown();
    assert_eq!(status.code, Some(0), "{status}");
}
