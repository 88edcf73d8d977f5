//! `svmap demo`, the main job, end to end through the binary: the peer is
//! `svmap device-peer`, found next to the executable.

use std::process::Command;
use std::time::Instant;

#[test]
fn demo_runs_every_step_from_another_directory() {
    let dir = std::env::temp_dir().join(format!("svmap-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args(["demo", "--json"])
        .current_dir(&dir)
        .output()
        .expect("run svmap demo");
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["ok"], true, "{v}");
    // Both device processes are `svmap device-peer`, and they are gone.
    let devs = v["devices"]["list"].as_array().expect("devices");
    assert_eq!(devs.len(), 2, "{v}");
    for d in devs {
        let pid = d["pid"].as_u64().expect("a pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !cmdline.windows(11).any(|w| w == b"device-peer"),
            "device process {pid} still runs"
        );
    }
    // A hang guard, not a speed check: 20 times the 5 s of a loaded run.
    assert!(took.as_secs() < 100, "the demo took {took:?}");
    // The picture went to the working directory by default.
    let svg = std::fs::read_to_string(dir.join("svmap-demo.svg")).expect("svmap-demo.svg");
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "not an SVG"
    );
    assert!(svg.contains("buffer"), "the picture names no buffer");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_text_tells_the_story() {
    let dir = std::env::temp_dir().join(format!("svmap-demo-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args(["demo", "--svg"])
        .arg(dir.join("pic.svg"))
        .output()
        .expect("run svmap demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("= CPU's: match").count(), 2, "{text}");
    for needle in [
        "devices of 40 and 44 bits at identical addresses",
        "gpu0 (40-bit",
        "gpu1 (44-bit",
        "both devices read the same sum",
        "gpu0 walked 100000 nodes",
        "gpu1 walked 100000 nodes",
        "a forked child's CPU read: killed by SIGSEGV",
        "the CPU reads zeros",
        "a forked child's CPU write: killed by SIGSEGV",
        "gpu0 faulted: unmapped",
        "gpu1 faulted: unmapped",
        "refused",
        "lies above the limit",
        "all steps as expected",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(dir.join("pic.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that goes away before the report is written: exit status 1
/// and a message, no panic.
#[test]
fn demo_report_to_a_closed_pipe() {
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("svmap-demo-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_svmap"))
        .args(["demo", "--json"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run svmap demo");
    drop(child.stdout.take()); // the reader is gone before anything is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing the report"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
