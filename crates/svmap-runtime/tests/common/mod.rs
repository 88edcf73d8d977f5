//! What the test binaries with device processes share: the device process
//! is the test binary itself, re-executed to run only `common::peer_role`,
//! which serves the socket it inherited when `SVMAP_PEER_FD` is set (and
//! does nothing in a normal test run).

#![allow(dead_code)]

use std::process::{Command, Stdio};

use svmap_peer::{device, FAILPOINT_ENV, PEER_FD_ENV};

#[test]
fn peer_role() {
    if std::env::var_os(PEER_FD_ENV).is_some() {
        std::process::exit(device::serve_from_env());
    }
}

/// The command that starts a device process: this binary running only
/// [`peer_role`], with `failpoint` (see `svmap_peer::FAILPOINT_ENV`) if
/// given.
pub fn peer_command(failpoint: Option<&str>) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "common::peer_role",
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

/// One engine at a time: a window takes every free address below 2^40 of
/// this process, which the other tests' engines need too.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
