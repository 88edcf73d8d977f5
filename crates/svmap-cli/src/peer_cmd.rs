//! `svmap device-peer` (hidden): the device peer process.
//!
//! Started by [`svmap_peer::Peer::spawn`] (via
//! [`svmap_peer::device_peer_command`]) with its end of a Unix
//! socketpair inherited and named in `SVMAP_PEER_FD`; it agrees on a window
//! with the CPU side, maps the SVM buffers it is sent at the same
//! addresses and serves device operations through its device MMU until the
//! CPU side shuts it down or goes away. Not meant to be run by hand.

use std::ffi::OsString;

use crate::args::{self, Arg};

/// Runs the peer; `args` are the arguments after `device-peer`.
pub fn run(args: &[OsString]) -> i32 {
    let mut p = args::parser(args);
    match p.next() {
        Ok(None) => svmap_peer::device::serve_from_env(),
        Ok(Some(Arg::Short('h') | Arg::Long("help"))) => {
            println!(
                "Usage: svmap device-peer\n\n\
                 The device peer of `svmap demo` (internal): serves the socket named in \
                 {} and exits when the CPU side shuts it down or goes away.\n\n\
                 Example: started by `svmap demo`, or by svmap_peer::Peer::spawn.\n\n\
                 Exit status: 0 shut down or the CPU side went away, 1 failure, 2 not started \
                 by svmap.",
                svmap_peer::PEER_FD_ENV
            );
            0
        }
        Ok(Some(other)) => {
            let m = args::message(other.unexpected());
            eprintln!("svmap device-peer: {m} (this command takes none)");
            2
        }
        Err(e) => {
            eprintln!(
                "svmap device-peer: {} (this command takes none)",
                args::message(e)
            );
            2
        }
    }
}
