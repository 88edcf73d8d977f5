//! `svmap demo` under an address-space limit (`ulimit -v`): every failure
//! is a reported failed step, with the step, the cause and exit status 1,
//! never an abort. A limit below 64 MiB fails the allocation of step (g),
//! made first; a generous limit runs every step, with both device
//! processes (which inherit the limit).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

/// Runs `svmap demo ARGS` under `ulimit -v kib` in a scratch directory.
fn demo_under(kib: u64, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("svmap-demo-limit-{}-{kib}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" demo \"$@\""))
        .arg(env!("CARGO_BIN_EXE_svmap"))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run sh");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn describe(kib: u64, out: &Output) -> String {
    format!(
        "ulimit -v {kib}: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_small_address_space_limit_fails_a_step_and_names_it() {
    // 40 MiB: the 64 MiB allocation cannot fit whatever the binary maps.
    let (kib, step) = (
        40 << 10,
        "(g) allocate memory before the devices are set up",
    );
    let out = demo_under(kib, &[]);
    let all = describe(kib, &out);
    assert_eq!(out.status.signal(), None, "killed by a signal: {all}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("demo step {step} failed")),
        "{all}"
    );
    // The cause: the limit, with its size.
    assert!(
        stderr.contains("RLIMIT_AS") && stderr.contains(&format!("{} MiB", kib >> 10)),
        "{all}"
    );
    assert!(!stderr.contains("panicked"), "{all}");
    // The JSON form names the step too.
    let out = demo_under(kib, &["--json"]);
    let all = describe(kib, &out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert_eq!(v["ok"], false, "{all}");
    assert_eq!(v["failed_step"], step, "{all}");
}

#[test]
fn a_generous_address_space_limit_runs_every_step() {
    let kib = 2 << 20;
    let out = demo_under(kib, &["--json"]);
    let all = describe(kib, &out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert_eq!(v["ok"], true, "{all}");
}
