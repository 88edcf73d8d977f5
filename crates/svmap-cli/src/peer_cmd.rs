//! `svmap device-peer` (hidden): the device peer process.
//!
//! Started by [`svmap_linux::peer::Peer::spawn`] (via
//! [`svmap_linux::peer::device_peer_command`]) with its end of a Unix
//! socketpair inherited and named in `SVMAP_PEER_FD`; it agrees on a window
//! with the CPU side, maps the SVM buffers it is sent at the same
//! addresses and serves device operations through its device MMU until the
//! CPU side shuts it down or goes away. Not meant to be run by hand.

/// Runs the peer; `args` are the arguments after `device-peer`.
pub fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        None => svmap_linux::peer::device::serve_from_env(),
        Some("-h" | "--help") => {
            println!(
                "Usage: svmap device-peer\n\n\
                 The device peer of `svmap demo` (internal): serves the socket named in \
                 {} and exits when the CPU side shuts it down or goes away.\n\n\
                 Example: started by `svmap demo`, or by svmap_linux::peer::Peer::spawn.\n\n\
                 Exit status: 0 shut down or the CPU side went away, 1 failure, 2 not started \
                 by svmap.",
                svmap_linux::peer::PEER_FD_ENV
            );
            0
        }
        Some(other) => {
            eprintln!("svmap device-peer: unexpected argument {other:?} (this command takes none)");
            2
        }
    }
}
