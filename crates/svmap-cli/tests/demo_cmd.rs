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
    for needle in [
        "identical addresses",
        "checksum",
        "= CPU's: match",
        "faulted: unmapped",
        "refused",
        "lies above the limit",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(dir.join("pic.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
